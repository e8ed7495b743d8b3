"""Stored comments + a PR's file patches -> training examples (pure: no network, no store).

Positive examples: one per commented hunk. When a comment still applies to the PR's current diff
(its ``line``/``side`` sits in a hunk of the file's patch and that line's text is the one its
``diff_hunk`` ends on), the example is the FULL hunk with every kept comment on it, which is what
the review pipeline will show the model. Otherwise (outdated comment, file patch missing) the
example is the comment's own ``diff_hunk``, which GitHub cuts off at the commented line.

Negative examples: hunks of the same PRs that nobody commented on, ``negatives_ratio`` per
positive, sampled deterministically from ``seed``, the repo and the PR number, so rebuilding one
PR never changes another's and a re-run writes the same set.

Hunks longer than ``max_hunk_lines`` are cut into pieces with ``Hunk.split`` (as a long hunk
would be cut for a prompt); a comment goes with the piece that holds its line.
"""

from __future__ import annotations

import json
import math
import random
from collections import Counter
from dataclasses import dataclass, field

from adapters.store import CachedFile, Feedback, StoredComment
from bot.diff import LEFT, RIGHT, FileDiff, Hunk, parse_hunk, parse_patch
from bot.errors import DiffError
from bot.examples import Example, ExampleComment, example_id
from bot.prompt import canonical
from harvest.filters import FilterConfig

DEFAULT_MAX_HUNK_LINES = 200
# How the bot's own comments are recognised (for feedback rows): its login, or the hidden marker
# the webhook service puts in every comment it posts.
DEFAULT_OWN_LOGINS = frozenset({"revbot", "revbot[bot]"})
OWN_MARKER = "<!-- revbot"


@dataclass(frozen=True)
class BuildConfig:
    negatives_ratio: float = 1.0
    seed: int = 0
    max_hunk_lines: int = DEFAULT_MAX_HUNK_LINES
    own_logins: frozenset[str] = DEFAULT_OWN_LOGINS


@dataclass
class PRBuild:
    """The outcome for one PR: its examples, feedback on the bot's comments, and counts."""

    examples: list[Example] = field(default_factory=list)
    feedback: list[Feedback] = field(default_factory=list)
    verdicts: dict[int, str | None] = field(default_factory=dict)  # root comment id -> drop reason or None
    counts: Counter = field(default_factory=Counter)

    @property
    def positives(self) -> int:
        return sum(1 for e in self.examples if not e.is_negative)

    @property
    def negatives(self) -> int:
        return sum(1 for e in self.examples if e.is_negative)


def split_threads(
    comments: list[StoredComment],
) -> tuple[list[StoredComment], dict[int, list[StoredComment]], list[StoredComment]]:
    """(roots, replies by root id, orphan replies whose root is not stored). Reply chains are
    followed to their root; GitHub points replies at the root, but do not rely on it."""
    by_id = {c.id: c for c in comments}
    roots = [c for c in comments if c.in_reply_to_id is None]
    replies: dict[int, list[StoredComment]] = {}
    orphans = []
    for c in comments:
        if c.in_reply_to_id is None:
            continue
        seen, parent = {c.id}, by_id.get(c.in_reply_to_id)
        while parent is not None and parent.in_reply_to_id is not None and parent.id not in seen:
            seen.add(parent.id)
            parent = by_id.get(parent.in_reply_to_id)
        if parent is None or parent.in_reply_to_id is not None:
            orphans.append(c)
        else:
            replies.setdefault(parent.id, []).append(c)
    for thread in replies.values():
        thread.sort(key=lambda r: (r.created_at or "", r.id))
    return sorted(roots, key=lambda r: r.id), replies, orphans


def is_own(c: StoredComment, own_logins: frozenset[str]) -> bool:
    login = (c.author or "").lower()
    return login in own_logins or login.removesuffix("[bot]") in own_logins or OWN_MARKER in (c.body or "")


def kept_roots(comments: list[StoredComment], pr_author: str | None, filters: FilterConfig) -> list[StoredComment]:
    """Roots that pass every filter: the PRs with any need their files fetched."""
    roots, _, _ = split_threads(comments)
    return [c for c in roots if filters.verdict(c, pr_author) is None]


def _parse_files(files: list[CachedFile] | None, counts: Counter) -> dict[str, FileDiff]:
    out: dict[str, FileDiff] = {}
    for f in files or []:
        if not f.patch:
            continue  # binary or too large: GitHub sends no patch
        try:
            out[f.path] = parse_patch(f.patch, f.path, f.old_path, f.status, strict=False)
        except DiffError:
            counts["bad_patch"] += 1
    return out


def _chunk_of(hunk: Hunk, line: int, side: str, max_lines: int) -> tuple[int, Hunk] | None:
    for k, piece in enumerate(hunk.split(max_lines)):
        if piece.is_commentable(line, side):
            return k, piece
    return None


def _last_line_text(c: StoredComment) -> str | None:
    try:
        hunk = parse_hunk(c.diff_hunk or "")
    except DiffError:
        return None
    return hunk.lines[-1].text.rstrip() if hunk.lines else None


def _diff_hunk_example_parts(c: StoredComment, max_lines: int) -> tuple[Hunk, int, str, int | None] | None:
    """The comment's own diff_hunk as a hunk whose header matches its lines (GitHub's is the
    full hunk's, but the text stops at the comment), anchored on its last line."""
    try:
        hunk = parse_hunk(c.diff_hunk or "", source=f"comment {c.id} diff_hunk")
    except DiffError:
        return None
    if not hunk.lines:
        return None
    n = len(hunk.lines)
    hunk = hunk.sub_hunk(max(0, n - max_lines), n)
    last = hunk.lines[-1]
    if last.kind == "-":
        side = LEFT
    elif last.kind == "+":
        side = RIGHT
    else:
        side = LEFT if c.side == LEFT else RIGHT
    line = last.old_no if side == LEFT else last.new_no
    if line is None:
        return None
    start = c.original_start_line
    if start is None or start >= line or (c.start_side or side) != side or not hunk.is_commentable(start, side):
        start = None
    return hunk, line, side, start


def _example(
    repo: str,
    pr: int,
    path: str,
    hunk: Hunk,
    anchored: list[tuple[StoredComment, int, str, int | None]],
    replies: dict[int, list[StoredComment]],
    origin: str,
    source: str,
    extra_id: str = "",
) -> Example:
    items = sorted(anchored, key=lambda a: (a[1], a[2], a[0].id))
    comments = [
        ExampleComment(pc.line, pc.side, pc.body, pc.start_line)
        for pc in canonical([ExampleComment(line, side, c.body, start) for c, line, side, start in items])
    ]
    roots = [a[0] for a in items]
    reactions = Counter()
    for c in roots:
        reactions["+1"] += c.thumbs_up
        reactions["-1"] += c.thumbs_down
    meta = {
        "from": origin,
        "comment_ids": [c.id for c in roots],
        "authors": sorted({c.author for c in roots if c.author}),
        "replies": sum(len(replies.get(c.id, [])) for c in roots),
    }
    if reactions["+1"] or reactions["-1"]:
        meta["reactions"] = {k: v for k, v in reactions.items() if v}
    return Example(
        id=example_id(repo, pr, path, hunk.header, extra_id),
        repo=repo,
        pr=pr,
        path=path,
        hunk=hunk.text(),
        comments=comments,
        created_at=min((c.created_at or "" for c in roots), default=""),
        source=source,
        meta=meta,
    )


def _negative_count(ratio: float, positives: int, key: str) -> int:
    """ratio * positives, rounded up or down at random (seeded by ``key``) so a fractional ratio
    is right on average over many PRs while each PR's count stays fixed."""
    want = max(0.0, ratio) * positives
    whole = math.floor(want)
    return whole + (1 if random.Random(key + "|round").random() < want - whole else 0)


def _feedback(
    repo: str, pr: int, root: StoredComment, replies: list[StoredComment], own: frozenset[str]
) -> list[Feedback]:
    forge = {"source": root.forge, "forge": root.forge}  # whose ids these are, and where they were read
    counts = {k: v for k, v in root.reactions.items() if k != "total_count" and v}
    reactions = json.dumps(counts, sort_keys=True)
    out = [Feedback(repo, pr, root.id, "reactions", "", reactions, None, root.updated_at, **forge)]
    for r in replies:
        if not is_own(r, own):
            out.append(Feedback(repo, pr, root.id, "reply", r.author or "", r.body, r.id, r.created_at, **forge))
    return out


def build_pr(
    repo: str,
    pr: int,
    comments: list[StoredComment],
    files: list[CachedFile] | None,
    *,
    pr_author: str | None = None,
    filters: FilterConfig | None = None,
    config: BuildConfig | None = None,
    source: str = "github",
) -> PRBuild:
    """All examples of one PR. ``files`` is its file list (None: not fetched, diff_hunks only):
    judge each thread's first comment, anchor the kept ones on the PR's hunks (or their own
    diff_hunk), make one example per commented hunk, then sample negatives among the rest."""
    filters = filters or FilterConfig()
    config = config or BuildConfig()
    out = PRBuild()
    roots, replies, orphans = split_threads(comments)
    out.counts["considered"] += len(comments)
    out.counts["replies"] += sum(len(v) for v in replies.values())
    out.counts["orphan_replies"] += len(orphans)
    kept = _judge(repo, pr, roots, replies, pr_author, filters, config, out)
    file_diffs = _parse_files(files, out.counts)
    groups = _group_by_hunk(kept, file_diffs, config, out)
    for key, (path, hunk, anchored) in sorted(groups.items(), key=lambda kv: str(kv[0])):
        extra = "" if key[0] == "pr" else f"diff_hunk:{min(a[0].id for a in anchored)}"
        kind = "pr_hunk" if key[0] == "pr" else "diff_hunk"
        out.examples.append(_example(repo, pr, path, hunk, anchored, replies, kind, source, extra))
    positives = len(out.examples)
    if positives and config.negatives_ratio > 0:
        used = _commented_pieces(roots + [r for thread in replies.values() for r in thread], file_diffs, config)
        out.examples += _negatives(repo, pr, comments, file_diffs, used, positives, config, source, out.counts)
    out.counts["positives"] += positives
    out.counts["negatives"] += len(out.examples) - positives
    return out


def _judge(
    repo: str,
    pr: int,
    roots: list[StoredComment],
    replies: dict[int, list[StoredComment]],
    pr_author: str | None,
    filters: FilterConfig,
    config: BuildConfig,
    out: PRBuild,
) -> list[StoredComment]:
    """The thread roots the filters keep (each verdict recorded and counted); feedback on the bot's
    own comments is collected on the way."""
    kept = []
    for c in roots:
        reason = filters.verdict(c, pr_author)
        out.verdicts[c.id] = reason
        if reason is None:
            kept.append(c)
            out.counts["kept"] += 1
        else:
            out.counts[f"dropped:{reason}"] += 1
        if is_own(c, config.own_logins):
            out.feedback += _feedback(repo, pr, c, replies.get(c.id, []), config.own_logins)
    return kept


def _commented_pieces(
    comments: list[StoredComment], file_diffs: dict[str, FileDiff], config: BuildConfig
) -> set[tuple[str, int, int]]:
    """(path, hunk index, piece index) of every piece of the PR's diff that any comment sits on."""
    used: set[tuple[str, int, int]] = set()
    for c in comments:
        fd = file_diffs.get(c.path or "")
        if fd is None or c.line is None or c.side not in (LEFT, RIGHT):
            continue
        for h_index, hunk in enumerate(fd.hunks):
            found = _chunk_of(hunk, c.line, c.side, config.max_hunk_lines)
            if found:
                used.add((fd.path, h_index, found[0]))
                break
    return used


def _on_pr_hunk(
    c: StoredComment, file_diffs: dict[str, FileDiff], max_hunk_lines: int
) -> tuple[tuple, str, Hunk, tuple] | None:
    """(group key, path, piece, anchor) of the PR hunk piece a kept comment sits on, or None when it
    is not on one or the line there no longer says what the comment saw."""
    fd = file_diffs.get(c.path or "")
    if fd is None or c.line is None or c.side not in (LEFT, RIGHT):
        return None
    for h_index, hunk in enumerate(fd.hunks):
        found = _chunk_of(hunk, c.line, c.side, max_hunk_lines)
        if not found:
            continue
        piece_index, piece = found
        current = piece.line_at(c.line, c.side)
        expected = _last_line_text(c)
        if current is not None and expected is not None and current.text.rstrip() != expected:
            return None  # the line moved or the data disagree: trust the comment's own hunk
        start = c.start_line
        if (
            start is None
            or start >= c.line
            or (c.start_side or c.side) != c.side
            or not piece.is_commentable(start, c.side)
        ):
            start = None
        return ("pr", fd.path, h_index, piece_index), fd.path, piece, (c, c.line, c.side, start)
    return None


def _group_by_hunk(
    kept: list[StoredComment], file_diffs: dict[str, FileDiff], config: BuildConfig, out: PRBuild
) -> dict[tuple, tuple[str, Hunk, list]]:
    """Kept comments grouped by the hunk their example shows: a piece of the PR's diff where they
    sit on one, else the comment's own diff_hunk (one that cannot be read drops the comment)."""
    groups: dict[tuple, tuple[str, Hunk, list]] = {}
    for c in kept:
        placed = _on_pr_hunk(c, file_diffs, config.max_hunk_lines)
        if placed is not None:
            key, path, piece, anchor = placed
            groups.setdefault(key, (path, piece, []))[2].append(anchor)
            out.counts["from_pr_hunk"] += 1
            continue
        parts = _diff_hunk_example_parts(c, config.max_hunk_lines)
        if parts is None:
            out.counts["dropped:bad_diff_hunk"] += 1
            out.counts["kept"] -= 1
            out.verdicts[c.id] = "bad_diff_hunk"
            continue
        hunk, line, side, start = parts
        groups.setdefault(("dh", c.path, hunk.text()), (c.path or "", hunk, []))[2].append((c, line, side, start))
        out.counts["from_diff_hunk"] += 1
    return groups


def _negatives(
    repo: str,
    pr: int,
    comments: list[StoredComment],
    file_diffs: dict[str, FileDiff],
    used: set[tuple[str, int, int]],
    positives: int,
    config: BuildConfig,
    source: str,
    counts: Counter[str],
) -> list[Example]:
    """Hunk pieces of the PR nobody commented on, ``negatives_ratio`` per positive, sampled with a
    seed of the repository and PR so a rebuild picks the same ones."""
    candidates = []
    for path in sorted(file_diffs):
        for h_index, hunk in enumerate(file_diffs[path].hunks):
            for piece_index, piece in enumerate(hunk.split(config.max_hunk_lines)):
                if (path, h_index, piece_index) not in used and piece.lines:
                    candidates.append((path, piece))
    counts["negative_candidates"] += len(candidates)
    rng_key = f"{config.seed}|{repo}|{pr}"
    k = min(len(candidates), _negative_count(config.negatives_ratio, positives, rng_key))
    created = min((c.created_at or "" for c in comments), default="")
    return [
        Example(
            example_id(repo, pr, path, piece.header, "negative"),
            repo,
            pr,
            path,
            piece.text(),
            [],
            created,
            source,
            {"from": "pr_hunk"},
        )
        for path, piece in random.Random(rng_key).sample(candidates, k)
    ]
