"""Which stored review comments become training targets, and why the others do not.

Every root comment of a thread gets exactly one verdict: kept, or dropped for the FIRST reason
in REASONS order, so the summary's counts add up to the comments considered. Replies are never
targets (the root is); they stay in the store and are counted as replies.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from adapters.store import StoredComment, is_bot_login
from bot.review_tools import review_tool_stamp

# Checked in this order; a comment is counted under the first that applies.
NO_DIFF_HUNK = "no_diff_hunk"  # 2012-era comments without diff_hunk/path: nothing to anchor to
OUTSIDE_WINDOW = "outside_window"  # created before --since or after --until
NOT_IN_AUTHORS = "not_in_authors"  # --authors given and the author is not on it
BOT = "bot"  # type Bot, a [bot] login, or a --deny-bots login
BOT_TEXT = "bot_text"  # written by an AI review tool under a human-looking account (its badges, footers)
SELF_COMMENT = "self_comment"  # the PR author commenting on their own PR
DOWNVOTED = "downvoted"  # more 👎 than 👍
TRIVIAL = "trivial"  # LGTM, +1, thanks, emoji only, shorter than --min-length
REASONS = (NO_DIFF_HUNK, OUTSIDE_WINDOW, NOT_IN_AUTHORS, BOT, BOT_TEXT, SELF_COMMENT, DOWNVOTED, TRIVIAL)

DEFAULT_MIN_LENGTH = 8

# Words that, when they are all a comment says, say nothing a model should learn.
_TRIVIAL_WORDS = frozenset(
    """lgtm +1 -1 thanks thank thx ty tyvm you nice great cool awesome perfect done ok okay k sgtm
    ack looks look good to me agreed agree ditto same here fixed yes yep yeah sure will do np
    approved ship it lg much very catch nit""".split()
)
_SUGGESTION = re.compile(r"```\s*suggestion\b", re.I)
_SHORTCODE = re.compile(r":[a-z0-9_+\-]+:")
_MARKUP = re.compile(r"[`*_~>#\[\]()!]")


def has_suggestion(body: str) -> bool:
    """A ```suggestion block is a concrete proposed change: never trivial, kept intact."""
    return bool(_SUGGESTION.search(body or ""))


def is_trivial(body: str, min_length: int = DEFAULT_MIN_LENGTH) -> bool:
    """True for bodies that carry no review content: empty, emoji or shortcodes only, only
    courtesy words ("LGTM", "+1", "thanks!"), or shorter than ``min_length`` characters of text."""
    if has_suggestion(body):
        return False
    text = _SHORTCODE.sub(" ", body or "")
    if not any(ch.isalnum() for ch in text):
        return True  # empty, punctuation or emoji only
    words = re.findall(r"[+\-]1|[\w']+", text.lower())
    if words and all(w.strip("'") in _TRIVIAL_WORDS for w in words):
        return True
    plain = " ".join(_MARKUP.sub(" ", text).split())
    return len(plain) < min_length


@dataclass(frozen=True)
class FilterConfig:
    """Harvest filters. Logins compare case-insensitively.

    ``authors``: allow list (None: everyone). An allowed login is kept even if it is a bot, so a
    team can choose to learn from a bot's accepted comments; 👎 > 👍 still drops it.
    ``deny``: logins treated as bots (CI accounts that are not GitHub Apps).
    ``since``/``until``: window on ``created_at`` (UTC ``YYYY-MM-DDTHH:MM:SSZ`` strings).
    """

    authors: frozenset[str] | None = None
    deny: frozenset[str] = field(default_factory=frozenset)
    min_length: int = DEFAULT_MIN_LENGTH
    since: str | None = None
    until: str | None = None

    def __post_init__(self) -> None:
        if self.authors is not None:
            object.__setattr__(self, "authors", frozenset(a.lower() for a in self.authors))
        object.__setattr__(self, "deny", frozenset(d.lower() for d in self.deny))

    def is_bot(self, c: StoredComment) -> bool:
        return c.is_bot or is_bot_login(c.author, c.author_type) or (c.author or "").lower() in self.deny

    def verdict(self, c: StoredComment, pr_author: str | None = None) -> str | None:
        """None to keep the comment as a training target, else the reason it is dropped."""
        if not c.diff_hunk or not c.path:
            return NO_DIFF_HUNK
        created = c.created_at or ""
        if (self.since and created < self.since) or (self.until and created > self.until):
            return OUTSIDE_WINDOW
        login = (c.author or "").lower()
        if self.authors is not None:
            if login not in self.authors:
                return NOT_IN_AUTHORS
        elif self.is_bot(c):
            return BOT
        if self.authors is None and review_tool_stamp(c.body):
            return BOT_TEXT
        author = pr_author if pr_author is not None else c.pr_author
        if author and login == author.lower():
            return SELF_COMMENT
        if c.thumbs_down > c.thumbs_up:
            return DOWNVOTED
        if is_trivial(c.body, self.min_length):
            return TRIVIAL
        return None
