"""Errors a user can act on. The CLI prints ``str(error)`` and exits with ``exit_code``; no traceback."""

from __future__ import annotations


class RevbotError(Exception):
    exit_code = 1


class UsageError(RevbotError):
    exit_code = 2


class DiffError(RevbotError):
    """A diff that cannot be parsed; the message names the source, the hunk and the line."""

    def __init__(self, message: str, source: str = "<diff>", line: int | None = None, hunk: str | None = None):
        self.source, self.line, self.hunk = source, line, hunk
        where = source + (f":{line}" if line is not None else "")
        detail = f" (hunk {hunk})" if hunk else ""
        super().__init__(f"{where}: {message}{detail}")


class DataError(RevbotError):
    """Bad input data: a malformed JSONL line, a missing field. Names file:line."""

    def __init__(self, message: str, source: str | None = None, line: int | None = None):
        self.source, self.line = source, line
        prefix = f"{source}:{line}: " if source and line is not None else (f"{source}: " if source else "")
        super().__init__(prefix + message)


class ModelError(RevbotError):
    """A model or adapter that cannot be loaded or used, with what to do instead."""


class ForgeError(RevbotError):
    """A forge (GitHub, GitLab) API failure after retries, with the HTTP status when there was one;
    never carries a token. The use cases catch this; each adapter raises its own subclass."""

    def __init__(self, message: str, status: int | None = None):
        self.status = status
        super().__init__(message)


class InvalidPositionError(ForgeError):
    """The forge refused positioned comments because it does not take their anchors in its diff
    (GitHub: a review answered 422; GitLab: a discussion's position answered 400). Each adapter
    raises a subclass of its own, so callers handle it without asking which forge it is.

    ``failed_indexes``: the positions, in the comments as sent, of those the forge named; None
    when it did not say which (then all of them count as refused). The caller posts the refused
    comments as text instead: a comment is never lost to a bad anchor."""

    def __init__(self, message: str, status: int | None = None, failed_indexes: list[int] | None = None):
        super().__init__(message, status)
        self.failed_indexes = failed_indexes


class ThreadsUnavailable(ForgeError):
    """The credentials may not read or resolve review threads through the forge's thread API
    (GitHub: GraphQL refused or forbidden; GitLab: resolving a discussion refused). The caller
    rebuilds threads from the review comments and answers a fixed one instead of resolving it."""


class GitHubError(ForgeError):
    """A GitHub API failure after retries; never carries a token."""


class GitLabError(ForgeError):
    """A GitLab API failure after retries; never carries a token."""
