"""What the team did with the bot's own comments, read as evidence for or against each comment.

Sources (rows of the store's ``bot_feedback``, written by harvest, the webhook worker and its
recorder) and what they count as:

  ======================  ========  ======  =============================================
  source                  polarity  weight  from
  ======================  ========  ======  =============================================
  ``reaction:+1``         +1        people  👍 ❤️ 🎉 🚀 on the comment
  ``reaction:-1``         -1        people  👎 😕 on the comment
  ``reply:fixed``         +1        2       a person's reply such as "fixed", "good catch"
  ``reply:wont-fix``      -1        2       "won't fix", "false positive", "by design"...
  ``resolved:changed``    +1        1       the thread was resolved after a push changed its lines
  ``resolved:unchanged``  -1        1       a person resolved it and the code stayed as it was
  ======================  ========  ======  =============================================

A comment's verdict is the sign of the weighted sum (0: no verdict). Evidence carries the
comment's text, place, hunk and the model version that wrote it (``bot_posts``, else the stored
comment harvest read), so `revbot retrain` can learn from it (``harvest.feedback``) and `revbot
eval` can report acceptance by version, without another lookup.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Iterable

from bot.formats import FINGERPRINT_RE, ZWSP, extract_fingerprints
from bot.json_types import JSON
from bot.ports import FeedbackStore
from bot.records import BotPost, Evidence, Feedback

POSITIVE_REACTIONS = ("+1", "heart", "hooray", "rocket")
NEGATIVE_REACTIONS = ("-1", "confused")
REPLY_WEIGHT = 2

_WONT_FIX = re.compile(
    r"\b(?:won'?t|will not|not going to|no need to|don'?t need to|shouldn'?t)\s+(?:fix|change|do|bother)\b"
    r"|\bwont\s*fix\b|\bfalse (?:positive|alarm)\b|\bnot (?:an? )?(?:issue|problem|bug|concern)\b"
    r"|\b(?:intentional(?:ly)?|by design|on purpose|as intended)\b|\b(?:i )?disagree\b"
    r"|\bnot (?:needed|necessary|applicable|relevant)\b|\bignore (?:this|it|that)\b|\bwrong\b|^\s*(?:nope|no)\b",
    re.IGNORECASE,
)
_FIXED = re.compile(
    r"\b(?:fixed|done|good (?:catch|point|call)|nice catch|addressed|updated|changed (?:it|that)|will do|agreed)\b"
    r"|^\s*(?:thanks?|thank you|\+1|yes)\b",
    re.IGNORECASE,
)
_MARKER = re.compile(r"<!--.*?-->", re.DOTALL)


def habit_key(body: str) -> str:
    """A comment's text with markers, mentions' zero-width spaces, case and spacing normalised: two
    comments saying the same thing have the same key (the "habit" the team reacts to)."""
    text = _MARKER.sub("", FINGERPRINT_RE.sub("", body or "")).replace(ZWSP, "")
    text = text.split("*[comment truncated by revbot]*")[0]
    return " ".join(text.split()).casefold().rstrip(" .!")


def classify_reply(text: str) -> int:
    """+1 for a reply that accepts the comment, -1 for one that rejects it, 0 when it says neither.
    Rejection wins ("thanks, but this is by design")."""
    if _WONT_FIX.search(text or ""):
        return -1
    if _FIXED.search(text or ""):
        return 1
    return 0


def _resolution(row: Feedback) -> tuple[bool, bool, str]:
    try:
        data = json.loads(row.content)
    except ValueError:
        return False, False, ""
    return bool(data.get("resolved")), bool(data.get("changed")), str(data.get("by") or "")


# (row, source, polarity, weight, author): one piece of evidence before it is summed up
_Item = tuple[Feedback, str, int, int, str]


def evidence_from(rows: Iterable[Feedback]) -> list[_Item]:
    """(row, source, polarity, weight, author) for every row that says something."""
    out: list[_Item] = []
    for row in rows:
        if row.kind == "reactions":
            counts = row.counts()
            up = sum(int(counts.get(k, 0) or 0) for k in POSITIVE_REACTIONS)
            down = sum(int(counts.get(k, 0) or 0) for k in NEGATIVE_REACTIONS)
            if up:
                out.append((row, "reaction:+1", 1, up, ""))
            if down:
                out.append((row, "reaction:-1", -1, down, ""))
        elif row.kind == "reaction":
            if row.content in POSITIVE_REACTIONS:
                out.append((row, "reaction:+1", 1, 1, row.author))
            elif row.content in NEGATIVE_REACTIONS:
                out.append((row, "reaction:-1", -1, 1, row.author))
        elif row.kind == "reply":
            polarity = classify_reply(row.content)
            if polarity:
                out.append(
                    (row, "reply:fixed" if polarity > 0 else "reply:wont-fix", polarity, REPLY_WEIGHT, row.author)
                )
        elif row.kind == "resolved":
            resolved, changed, by = _resolution(row)
            if resolved:
                out.append((row, "resolved:changed" if changed else "resolved:unchanged", 1 if changed else -1, 1, by))
    return out


def _subject(
    store: FeedbackStore,
    repo: str,
    comment_id: int,
    posts: dict[tuple[str, int], BotPost],
    by_fp: dict[tuple[str, int, str], BotPost],
    pr: int,
    forge: str = "github",
) -> dict[str, JSON]:
    """The commented text, place, hunk and version of one of the bot's comments."""
    post = posts.get((repo, comment_id))
    if post is not None:
        return {
            "fingerprint": post.fingerprint,
            "model_version": post.model_version,
            "path": post.path,
            "line": post.line,
            "side": post.side,
            "body": post.body,
            "hunk": post.hunk,
        }
    stored = store.get_comment(comment_id, forge)
    if stored is None:
        return {}
    fps = extract_fingerprints(stored.body)
    by_print = by_fp.get((repo, pr, fps[0])) if fps else None
    return {
        "fingerprint": fps[0] if fps else None,
        "model_version": by_print.model_version if by_print else None,
        "path": stored.path,
        "line": stored.original_line or stored.line,
        "side": stored.side,
        "body": stored.body,
        "hunk": by_print.hunk if by_print and by_print.hunk else stored.diff_hunk,
    }


def derive_evidence(store: FeedbackStore, repo: str | None = None, pr: int | None = None) -> list[Evidence]:
    """Evidence for the bot's comments from the store's feedback rows (one repo or PR, or all)."""
    posts: dict[tuple[str, int], BotPost] = {}
    by_fp: dict[tuple[str, int, str], BotPost] = {}
    for post in store.iter_posts(repo, pr):
        by_fp[(post.repo, post.pr, post.fingerprint)] = post
        if post.comment_id is not None:
            posts[(post.repo, post.comment_id)] = post
    grouped: dict[tuple[str, int, str], list[_Item]] = defaultdict(list)
    for row in store.iter_feedback(repo):
        if pr is not None and row.pr != pr:
            continue
        for item in evidence_from([row]):
            grouped[(row.repo, row.comment_id, item[1])].append(item)
    out: list[Evidence] = []
    subjects: dict[tuple[str, int], dict[str, JSON]] = {}
    for (r, comment_id, source), items in sorted(grouped.items()):
        row = items[0][0]
        key = (r, comment_id)
        if key not in subjects:
            subjects[key] = _subject(store, r, comment_id, posts, by_fp, row.pr, row.forge)
        subject = subjects[key]
        authors = sorted({i[4] for i in items if i[4]})
        weight = sum(i[3] for i in items)
        created = max((i[0].created_at or "" for i in items), default="") or None
        out.append(
            Evidence(
                r, row.pr, comment_id, source, items[0][2], weight, ",".join(authors), created_at=created, **subject
            )
        )
    return out


def refresh_evidence(store: FeedbackStore, repo: str | None = None, pr: int | None = None) -> int:
    """Re-derive and store the evidence of one PR, one repo, or everything; how many rows."""
    return store.replace_evidence(derive_evidence(store, repo, pr), repo=repo, pr=pr)


def verdicts(evidence: Iterable[Evidence]) -> dict[tuple[str, int], int]:
    """(repo, comment id) -> +1 accepted, -1 rejected (the weighted sum's sign; ties say nothing)."""
    total: dict[tuple[str, int], int] = defaultdict(int)
    for e in evidence:
        total[(e.repo, e.comment_id)] += e.polarity * e.weight
    return {k: (1 if v > 0 else -1) for k, v in total.items() if v}


def acceptance_by_version(evidence: Iterable[Evidence]) -> dict[str, dict[str, float]]:
    """Per model version: comments with a verdict, how many were accepted and rejected, and the
    acceptance rate (accepted / judged). Comments whose version is unknown (posted by another tool
    run, or before versions were recorded) are under "unknown"."""
    items = list(evidence)
    version = {(e.repo, e.comment_id): e.model_version or "unknown" for e in items}
    out: dict[str, dict[str, float]] = {}  # judged, accepted, rejected (counts) and acceptance_rate
    for key, verdict in verdicts(items).items():
        entry = out.setdefault(version[key], {"judged": 0, "accepted": 0, "rejected": 0})
        entry["judged"] += 1
        entry["accepted" if verdict > 0 else "rejected"] += 1
    for entry in out.values():
        entry["acceptance_rate"] = entry["accepted"] / entry["judged"]
    return dict(sorted(out.items()))
