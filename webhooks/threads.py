"""The bot's own review threads on a pull request: which ones a push fixed (resolved through the
forge's thread API, or answered "addressed in <sha>" where the credentials may not resolve them),
and what people did with them (feedback for retraining). Only the forge port is used: each adapter
reads and resolves threads its own way (GitHub over GraphQL, GitLab's discussions) and says
``bot.errors.ThreadsUnavailable`` when these credentials may not.

A thread is the bot's when its first comment was written by the bot's login (configured, or the
login the credentials act as) AND carries a revbot fingerprint: a human's thread is never touched,
whatever it quotes. A thread counts as fixed when it is not resolved yet, a push changed the lines
it sat on (the forge marks it outdated) and the new review does not raise the same thing again on
that file.

Without the thread API (``ThreadsUnavailable`` from ``review_threads``) threads are rebuilt from
the list of review comments (``in_reply_to_id``), outdated is ``line: null``, and a fixed thread
gets one reply instead (its hidden marker keeps it from being sent twice); so does every fixed
thread after ``resolve_review_thread`` says the credentials may not resolve.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from adapters.store import Feedback
from bot.errors import ThreadsUnavailable
from bot.feedback import habit_key
from bot.forge import Forge
from bot.formats import extract_fingerprints, fingerprint_marker
from bot.review import Review

log = logging.getLogger(__name__)

ADDRESSED_MARK = "<!-- revbot:addressed sha="


@dataclass
class Thread:
    root_id: int
    path: str
    body: str
    author: str
    outdated: bool
    resolved: bool = False
    resolved_by: str | None = None
    node_id: str | None = None  # the forge's thread id (None: threads rebuilt from the comments)
    replies: list[dict] = field(default_factory=list)  # {"id", "author", "body"}

    @property
    def fingerprint(self) -> str | None:
        found = extract_fingerprints(self.body)
        return found[0] if found else None


@dataclass
class ThreadState:
    threads: list[Thread]
    thread_api: bool  # read through the forge's thread API (resolvable); False: rebuilt from comments
    own: frozenset[str]

    def own_threads(self) -> list[Thread]:
        return [t for t in self.threads if t.author.lower() in self.own and t.fingerprint]


def own_logins(gh: Forge, configured: Iterable[str]) -> frozenset[str]:
    """The logins the bot posts as: the configured ones and the one these credentials act as."""
    logins = {login.lower() for login in configured}
    viewer = gh.viewer_login()
    if viewer:
        logins.add(viewer.lower())
    return frozenset(logins)


def _comment_threads(comments: list[dict]) -> list[Thread]:
    by_root: dict[int, Thread] = {}
    for c in sorted(comments, key=lambda c: int(c.get("id") or 0)):
        author = str((c.get("user") or {}).get("login") or "")
        if c.get("in_reply_to_id") is None:
            outdated = c.get("line") is None and c.get("subject_type") != "file"
            by_root[int(c["id"])] = Thread(
                int(c["id"]), str(c.get("path") or ""), str(c.get("body") or ""), author, outdated
            )
        elif int(c["in_reply_to_id"]) in by_root:
            by_root[int(c["in_reply_to_id"])].replies.append(
                {"id": int(c["id"]), "author": author, "body": str(c.get("body") or "")}
            )
    return list(by_root.values())


def _forge_threads(nodes: list[dict]) -> list[Thread]:
    out = []
    for t in nodes:
        comments = (t.get("comments") or {}).get("nodes") or []
        if not comments or not str(comments[0].get("fullDatabaseId") or "").isdigit():
            continue
        root = comments[0]
        out.append(
            Thread(
                int(root["fullDatabaseId"]),
                str(t.get("path") or ""),
                str(root.get("body") or ""),
                str((root.get("author") or {}).get("login") or ""),
                bool(t.get("isOutdated")),
                bool(t.get("isResolved")),
                (t.get("resolvedBy") or {}).get("login"),
                t.get("id"),
                [
                    {
                        "id": int(c.get("fullDatabaseId") or 0),
                        "author": str((c.get("author") or {}).get("login") or ""),
                        "body": str(c.get("body") or ""),
                    }
                    for c in comments[1:]
                ],
            )
        )
    return out


def read_threads(gh: Forge, repo: str, number: int, comments: list[dict], own: frozenset[str]) -> ThreadState:
    """The PR's review threads, through the forge's thread API when the credentials may use it,
    else rebuilt from ``comments``."""
    try:
        return ThreadState(_forge_threads(gh.review_threads(repo, number)), True, own)
    except ThreadsUnavailable as exc:
        log.info("%s#%s: review threads not readable (%s); rebuilding them from the comments", repo, number, exc)
    return ThreadState(_comment_threads(comments), False, own)


def fixed_threads(state: ThreadState, review: Review) -> list[Thread]:
    """The bot's open threads a push changed and the new review no longer raises."""
    raised = {(c.path, habit_key(c.body)) for c in [*review.comments, *review.unanchored]}
    out = []
    for t in state.own_threads():
        if t.resolved or not t.outdated or (t.path, habit_key(t.body)) in raised:
            continue
        if any(ADDRESSED_MARK in r["body"] for r in t.replies):
            continue  # answered "addressed" before (it could not be resolved)
        out.append(t)
    return out


def addressed_reply(head: str, thread: Thread) -> str:
    fp = thread.fingerprint
    return (
        f"Addressed in {head[:12]}: this push changed these lines and revbot no longer raises this.\n\n"
        f"{ADDRESSED_MARK}{head} -->" + (f" {fingerprint_marker(fp)}" if fp else "")
    )


def settle(gh: Forge, repo: str, number: int, head: str, threads: list[Thread], thread_api: bool) -> dict[str, int]:
    """Resolve ``threads`` (the forge's thread API), or reply "addressed in <sha>" where resolving
    is refused."""
    done = {"resolved": 0, "replied": 0}
    resolving = thread_api
    for t in threads:
        if resolving and t.node_id:
            try:
                if gh.resolve_review_thread(t.node_id):
                    done["resolved"] += 1
                    continue
            except ThreadsUnavailable:
                resolving = False
            log.info("%s#%s: not allowed to resolve review threads; replying instead", repo, number)
        gh.reply_to_review_comment(repo, number, t.root_id, addressed_reply(head, t))
        done["replied"] += 1
    return done


def feedback_rows(
    repo: str,
    number: int,
    state: ThreadState,
    comments: list[dict],
    settled: Iterable[Thread] = (),
    bot: str = "revbot",
    forge: str = "github",
) -> list[Feedback]:
    """What people did with the bot's threads, as store rows: reaction counts, replies by people,
    and each thread's resolution (with whether a push had changed its lines). ``forge``: whose
    comment ids these are."""
    reactions = {int(c["id"]): c.get("reactions") for c in comments if c.get("id") is not None}
    done = {t.root_id for t in settled}
    out: list[Feedback] = []

    def row(t: Thread, kind: str, author: str, content: str, ref_id: int | None = None) -> None:
        out.append(Feedback(repo, number, t.root_id, kind, author, content, ref_id, source=forge, forge=forge))

    for t in state.own_threads():
        counts = reactions.get(t.root_id)
        if isinstance(counts, dict):
            clean = {
                k: int(v)
                for k, v in counts.items()
                if k not in ("url", "total_count") and isinstance(v, int) and not isinstance(v, bool) and v
            }
            row(t, "reactions", "", json.dumps(clean, sort_keys=True))
        for r in t.replies:
            if r["author"].lower() not in state.own and not extract_fingerprints(r["body"]):
                row(t, "reply", r["author"], r["body"], int(r["id"] or 0) or None)
        if t.root_id in done:
            row(t, "resolved", bot, json.dumps({"resolved": True, "by": bot, "changed": True}))
        elif t.resolved and state.thread_api:
            by = t.resolved_by
            row(t, "resolved", by or "", json.dumps({"resolved": True, "by": by, "changed": t.outdated}))
    return out


def thread_summary(count: int, thread_api: bool) -> str | None:
    """The review-body line about the threads this push fixed."""
    if not count:
        return None
    what = "their threads are resolved" if thread_api else 'each got an "addressed" reply'
    return (
        f"**Fixed by this push:** {count} earlier revbot comment{'s' if count != 1 else ''} on lines it changed "
        f"{'are' if count != 1 else 'is'} no longer raised; {what}."
    )
