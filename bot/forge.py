"""What the use cases need from a forge (GitHub, GitLab), as one structural type.

harvest/ and webhooks/ are handed a ``Forge`` and never ask which one it is. The vocabulary is the
one the code grew up with (a "pull" is a pull or merge request, ``number`` its number or iid, a
"review" the bot's summary, a "review comment" a positioned comment), and answers are plain JSON
objects in one shape, whatever the forge:

* a change (``get_pull``, ``iter_pulls``): ``number``, ``state`` (``open``/``closed``), ``draft``,
  ``head.sha``, ``base.sha``/``base.ref``, ``user.login``, ``created_at``, ``updated_at``, ``title``;
* a file of a change (``pull_files``): ``filename``, ``previous_filename``, ``status``
  (added/removed/renamed/modified), ``patch`` (its hunks);
* a review comment (``iter_review_comments``, ``pull_review_comments``): ``id``, ``pull_request_url``
  or ``pr``, ``path``, ``diff_hunk`` (the hunk the comment sits on, ending at its line), ``line``
  (None when outdated), ``side`` (RIGHT/LEFT), ``start_line``, ``original_line``, ``commit_id``,
  ``original_commit_id``, ``user.login``/``user.type``, ``body``, ``created_at``, ``updated_at``,
  ``in_reply_to_id`` (the thread's first comment), ``reactions`` (``{"+1": n, "-1": n, ...}``);
* a thread (``review_threads``): ``id``, ``isResolved``, ``isOutdated``, ``path``, ``resolvedBy.login``,
  ``comments.nodes[]`` of ``fullDatabaseId``/``body``/``author.login``/``createdAt``.

``adapters.github.GitHubClient`` and ``adapters.gitlab.GitLabClient`` both satisfy it (a test checks
the method names and signatures). Failures are ``bot.errors.ForgeError`` with the HTTP status; two
kinds the use cases act on are forge-neutral: ``InvalidPositionError`` (an anchor the forge refuses)
and ``ThreadsUnavailable`` (threads these credentials may not read or resolve).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Protocol, runtime_checkable

from bot.json_types import JSONObject

GITHUB, GITLAB = "github", "gitlab"
FORGE_NAMES = {GITHUB: "GitHub", GITLAB: "GitLab"}


def forge_name(forge: str | None) -> str:
    """How a forge is named to people (``"github"`` -> ``"GitHub"``); no forge given means GitHub,
    the forge of everything stored before there were two."""
    key = forge or GITHUB
    return FORGE_NAMES.get(key, key)


@runtime_checkable
class Forge(Protocol):
    """A forge's API as the use cases call it (see the module docstring for the answer shapes)."""

    @property
    def forge(self) -> str:
        """``"github"`` or ``"gitlab"``: whose ids this client's answers carry (stored comments are
        keyed by forge and id)."""
        ...

    @property
    def api_url(self) -> str:
        """The API root this client talks to: what ``revbot retrain`` harvests from again."""
        ...

    @property
    def request_count(self) -> int:
        """HTTP attempts made so far, retries included."""
        ...

    @property
    def rate_limiting(self) -> tuple[int, int]:
        """(remaining, limit) of the request budget, as the last answer's headers gave it."""
        ...

    # -------------------------------------------------- history (harvest)

    def iter_review_comments(
        self, repo: str, since: datetime | str | None = None, sort: str = "updated", direction: str = "asc"
    ) -> Iterator[JSONObject]:
        """Every positioned review comment of the project, with its hunk, oldest change first."""
        ...

    def iter_pulls(
        self, repo: str, state: str = "all", *, sort: str = "created", direction: str = "asc"
    ) -> Iterator[JSONObject]: ...

    def get_pull(self, repo: str, number: int) -> JSONObject: ...

    def pull_files(self, repo: str, number: int) -> list[JSONObject]:
        """The change's files with their hunks, at its latest head."""
        ...

    def pull_diff(self, repo: str, number: int) -> str:
        """The change's unified diff at its latest head (``diff --git`` sections)."""
        ...

    def compare(self, repo: str, base: str, head: str) -> JSONObject:
        """Two commits: ``status`` (ahead, behind, diverged, identical) and ``files`` as ``pull_files``."""
        ...

    def get_file_text(self, repo: str, path: str, ref: str | None = None) -> str | None: ...

    # -------------------------------------------------- the bot's reviews

    def list_reviews(self, repo: str, number: int) -> list[JSONObject]:
        """Summary texts on the change (``id``, ``body``, ``user``, ``submitted_at``): where the bot's
        hidden review markers and fingerprints are looked for."""
        ...

    def pull_review_comments(self, repo: str, number: int) -> list[JSONObject]: ...

    def create_review(
        self,
        repo: str,
        number: int,
        *,
        commit_id: str,
        body: str,
        event: str = "COMMENT",
        comments: list[JSONObject] | tuple[JSONObject, ...] = (),
    ) -> JSONObject:
        """Post a summary and positioned comments (``path``, ``line``, ``side``, ``start_line``,
        ``body``); the answer's ``id`` names the summary. An anchor the forge refuses raises
        ``bot.errors.InvalidPositionError`` (with ``failed_indexes``) where the post is all or
        nothing (GitHub: the caller moves those comments into the body and posts again); where
        comments go out one by one (GitLab) the adapter posts a refused one as a note naming its
        file and line instead."""
        ...

    def review_threads(self, repo: str, number: int) -> list[JSONObject]:
        """The change's review threads; raises ``bot.errors.ThreadsUnavailable`` when these
        credentials may not read them (the caller rebuilds them from ``pull_review_comments``)."""
        ...

    def resolve_review_thread(self, thread_id: str) -> bool:
        """Resolve a thread (``id`` from ``review_threads``); whether it is resolved now. Raises
        ``bot.errors.ThreadsUnavailable`` when these credentials may not resolve threads."""
        ...

    def reply_to_review_comment(self, repo: str, number: int, comment_id: int, body: str) -> JSONObject: ...

    def comment_reactions(self, repo: str, comment_id: int, *, number: int | None = None) -> list[JSONObject]:
        """Reactions to a review comment: ``content`` (``+1``, ``-1``, ...) and ``user.login``."""
        ...

    # -------------------------------------------------- commands

    def viewer_login(self) -> str | None:
        """The login these credentials act as (the bot's own account)."""
        ...

    def collaborator_permission(self, repo: str, login: str) -> str:
        """``admin``, ``write``, ``read`` or ``none``: whether ``login`` may command the bot."""
        ...

    def issue_comments(self, repo: str, number: int) -> list[JSONObject]: ...

    def create_issue_comment(self, repo: str, number: int, body: str) -> JSONObject: ...

    def react_to_issue_comment(
        self, repo: str, comment_id: int, content: str, *, number: int | None = None
    ) -> JSONObject:
        """``number``: the change the comment is on (GitLab addresses notes through it)."""
        ...


class Forges(Protocol):
    """Where the webhook worker gets a job's forge client: ``forge`` is the job's (``"gitlab"``,
    else GitHub), ``installation_id`` a GitHub App installation (None for a token)."""

    def client(self, installation_id: int | None, forge: str | None = None) -> Forge: ...
