"""The team's verdicts on the bot's own comments, applied to the training examples.

How feedback is used (the choice `revbot retrain` makes; docs/workflow.md, "Learning from reactions"):

* as examples, not as loss weights: a comment the team rejected (its evidence sums below zero,
  ``bot.feedback``) makes its hunk a NEGATIVE example (the right answer there was silence), one
  the team accepted makes a positive example with the bot's own comment as the target. Examples
  change what the model is shown, which works with any trainer and shows in the data.
* a habit: when the bot's comments with one text (``bot.feedback.habit_key``) are rejected more
  than accepted overall, that text is taken out of every example, human-written ones included (the
  model learnt it there); an example left without comments becomes a negative one. So the next
  version's training data no longer holds the comment the team keeps voting down.
* humans' words win: no feedback example is added for a hunk that has a human-written example.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from adapters.store import Evidence
from bot.diff import LEFT, RIGHT, parse_hunk
from bot.errors import DiffError
from bot.examples import Example, ExampleComment, example_id
from bot.feedback import habit_key, verdicts
from bot.formats import FINGERPRINT_RE, ZWSP

SOURCE = "feedback"
_MARKER = re.compile(r"<!--.*?-->", re.DOTALL)


@dataclass
class FeedbackUse:
    """The examples after feedback, and what feedback changed (``revbot retrain`` prints it)."""

    examples: list[Example]
    negatives_added: int = 0
    positives_added: int = 0
    comments_removed: int = 0
    turned_negative: int = 0
    skipped: int = 0  # judged comments without a usable hunk
    habits: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, int | list[str]]:
        return {
            "negatives_added": self.negatives_added,
            "positives_added": self.positives_added,
            "comments_removed": self.comments_removed,
            "turned_negative": self.turned_negative,
            "skipped": self.skipped,
            "habits": list(self.habits),
        }


def clean_body(body: str) -> str:
    """The bot's comment as a training target: no hidden markers, no zero-width spaces."""
    text = _MARKER.sub("", FINGERPRINT_RE.sub("", body or "")).replace(ZWSP, "")
    return text.split("*[comment truncated by revbot]*")[0].strip()


def _header(hunk: str) -> str:
    return hunk.split("\n", 1)[0].strip()


def apply_feedback(examples: Iterable[Example], evidence: Iterable[Evidence]) -> FeedbackUse:
    """``examples`` with the team's verdicts on the bot's comments applied (module docstring)."""
    items = list(evidence)
    judged = verdicts(items)
    subject: dict[tuple[str, int], Evidence] = {}
    sources: dict[tuple[str, int], list[str]] = defaultdict(list)
    for e in items:
        subject.setdefault((e.repo, e.comment_id), e)
        sources[(e.repo, e.comment_id)].append(e.source)
    net: dict[str, int] = defaultdict(int)
    for key, verdict in judged.items():
        net[habit_key(subject[key].body)] += verdict
    disliked = {h for h, n in net.items() if h and n < 0}
    use = FeedbackUse([], habits=sorted(disliked))

    for ex in examples:
        kept = [c for c in ex.comments if habit_key(c.body) not in disliked]
        if len(kept) != len(ex.comments):
            use.comments_removed += len(ex.comments) - len(kept)
            use.turned_negative += 0 if kept else 1
            ex = replace(ex, comments=kept, meta={**ex.meta, "feedback_removed": len(ex.comments) - len(kept)})
        use.examples.append(ex)
    spoken = {(ex.repo, ex.pr, ex.path, _header(ex.hunk)) for ex in use.examples if ex.comments}
    taken = {ex.id for ex in use.examples}

    for key, verdict in sorted(judged.items()):
        e = subject[key]
        try:
            hunk = parse_hunk(e.hunk or "")
        except DiffError:
            use.skipped += 1
            continue
        if not e.path or not hunk.lines or (e.repo, e.pr, e.path, hunk.header) in spoken:
            use.skipped += 1
            continue
        meta = {
            "from": SOURCE,
            "comment_id": e.comment_id,
            "evidence": sorted(sources[key]),
            "model_version": e.model_version,
        }
        if verdict < 0:
            comments: list[ExampleComment] = []
        else:
            body, side = clean_body(e.body), e.side if e.side in (LEFT, RIGHT) else RIGHT
            if habit_key(body) in disliked or not body or e.line is None or not hunk.is_commentable(e.line, side):
                use.skipped += 1
                continue
            comments = [ExampleComment(e.line, side, body)]
        ident = example_id(e.repo, e.pr, e.path, hunk.header, f"{SOURCE}:{e.comment_id}")
        if ident in taken:
            continue
        taken.add(ident)
        use.examples.append(
            Example(ident, e.repo, e.pr, e.path, hunk.text(), comments, e.created_at or "", SOURCE, meta)
        )
        if comments:
            use.positives_added += 1
        else:
            use.negatives_added += 1
    return use
