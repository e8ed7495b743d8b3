"""The GitLab adapter: GitLab's REST API v4 through python-gitlab's public client (``Gitlab.http_get``,
``http_list``, ``http_post``, ``http_put``), answering in the forge port's shapes (``bot.forge``) so
harvest and the webhook worker run on a merge request as on a pull request.

What it translates:

* a merge request is a "pull" (``iid`` -> ``number``, ``opened`` -> ``open``, ``sha``/``diff_refs``
  -> ``head``/``base``); its file list and unified diff come from ``/diffs`` (the latest version);
* a DiffNote discussion is a review thread; its notes become review comments whose ``diff_hunk`` is
  rebuilt from the merge request's diff at the note's own SHAs (GitLab notes carry no hunk): the
  version whose ``head_commit_sha``/``base_commit_sha`` match the note's position, or the
  repository compare between those commits;
* a review is posted as one positioned discussion per comment (``new_line`` for an added line,
  ``old_line`` for a removed one, both for context; ``line_range`` with GitLab's line codes for a
  range), anchored with the latest version's SHAs, then one summary note. A position GitLab refuses
  (400) becomes a plain note naming the file and line: never lost. The summary goes last, so a
  crash half-way leaves no review marker and the rerun posts only what is missing;
* award emoji are reactions (``thumbsup`` -> ``+1``); a member's access level is the permission
  (Developer and above may command the bot).

Transport: python-gitlab obeys 429 + ``Retry-After`` (and ``RateLimit-Reset``) itself and retries
5xx for reads only (a write is never re-sent: GitLab may have applied it). Note creation is paced
to ``notes_per_minute`` (GitLab.com: 60). Requests are counted and the last ``RateLimit-*``
headers kept through a ``requests`` response hook. No token appears in a repr, a log or an error.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import gitlab
import requests
from gitlab.exceptions import GitlabAuthenticationError, GitlabError, GitlabHttpError

from bot.diff import FileDiff, Hunk, parse_patch
from bot.errors import DiffError, GitLabError, InvalidPositionError, ThreadsUnavailable, UsageError
from bot.formats import extract_fingerprints
from bot.secrets import scrub_text

log = logging.getLogger(__name__)

DEFAULT_URL = "https://gitlab.com"
_PROJECT = re.compile(r"[A-Za-z0-9_.-]+(?:/[A-Za-z0-9_.-]+)+")
_BAD_POSITION = ("line_code", "position", "valid line code", "is incomplete")
EMOJI_TO_REACTION = {"thumbsup": "+1", "thumbsdown": "-1", "tada": "hooray", "heart": "heart", "eyes": "eyes"}
REACTION_TO_EMOJI = {
    "+1": "thumbsup",
    "-1": "thumbsdown",
    "hooray": "tada",
    "laugh": "laughing",
    "confused": "confused",
}
ACCESS = ((40, "admin"), (30, "write"), (10, "read"))  # Maintainer/Owner, Developer, Reporter/Guest


class PositionRefused(GitLabError, InvalidPositionError):
    """GitLab refused a discussion's position (400 naming the line code or position): the forge
    port's ``InvalidPositionError`` as GitLab gives it."""


class ResolveRefused(GitLabError, ThreadsUnavailable):
    """GitLab refused to resolve a discussion for these credentials (401/403): the port's
    ``ThreadsUnavailable``, so the worker answers the thread instead."""


class GitLabClient:
    """One GitLab instance (``url``: its root, e.g. https://gitlab.example.com) with one token."""

    forge = "gitlab"

    def __init__(
        self,
        token: str | None = None,
        *,
        url: str | None = None,
        environ: Mapping[str, str] | None = None,
        timeout: float = 30.0,
        max_retries: int = 5,
        per_page: int = 100,
        notes_per_minute: int = 60,
        sleep: Callable[[float], Any] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ):
        if token is None or url is None:
            from adapters.settings import Settings

            env = Settings.from_env(environ, only=("gitlab_token", "gitlab_url"))
            token = token if token is not None else env.secret("gitlab_token")
            url = url or env.gitlab_url
        if token is not None and not token.strip():
            raise UsageError("the GitLab token is empty")
        if not re.match(r"https?://[^/]+", url or ""):
            raise UsageError(f"a GitLab URL starts with http:// or https://, got {url!r}")
        self.url = str(url).rstrip("/")
        self.max_retries, self.per_page = max_retries, per_page
        self._notes_per_minute = max(int(notes_per_minute), 1)
        self._sleep, self._clock = sleep, clock
        self._lock = threading.Lock()
        self._count = 0
        self._rate: tuple[int, int] | None = None
        self._note_times: deque[float] = deque()
        self._discussion_of: dict[tuple[str, int, int], str] = {}
        self._hunks: dict[tuple[str, int, str, str], dict[str, FileDiff]] = {}
        self._viewer: str | None = None
        session = requests.Session()
        session.hooks["response"].append(self._seen)
        self._auth_label = "token" if token else "anonymous"
        self._gl = gitlab.Gitlab(self.url, private_token=token or None, timeout=timeout, session=session)

    @property
    def anonymous(self) -> bool:
        return self._auth_label == "anonymous"

    @property
    def api_url(self) -> str:
        return f"{self.url}/api/v4"

    def __repr__(self) -> str:
        return f"GitLabClient(url={self.url!r}, auth={self._auth_label!r})"

    def close(self) -> None:
        self._gl.session.close()

    def __enter__(self) -> GitLabClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------- transport

    def _seen(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        """Every answer (retries included): counted, and its rate-limit headers kept."""
        with self._lock:
            self._count += 1
            remaining, limit = response.headers.get("RateLimit-Remaining"), response.headers.get("RateLimit-Limit")
            if remaining and limit and remaining.isdigit() and limit.isdigit():
                self._rate = (int(remaining), int(limit))

    @property
    def request_count(self) -> int:
        return self._count

    @property
    def rate_limiting(self) -> tuple[int, int]:
        """(remaining, limit) from the last answer's ``RateLimit-*`` headers."""
        if self._rate is None:
            raise GitLabError(f"{self.url} sent no RateLimit headers")
        return self._rate

    def _call(self, fn: Callable[[], Any], what: str, *, not_found: str | None = None) -> Any:
        try:
            return fn()
        except GitlabAuthenticationError as exc:
            raise GitLabError(
                f"GitLab rejected the credentials ({self._auth_label}) at {self.url}: 401; check the token", 401
            ) from exc
        except GitlabHttpError as exc:
            status = exc.response_code
            message = scrub_text(str(exc.error_message)[:300]) or ""
            if status == 404:
                raise GitLabError(not_found or f"not found while {what} (404)", 404) from exc
            if status == 403:
                raise GitLabError(
                    f"no permission for {what}: 403 {message}; the token needs the api scope", 403
                ) from exc
            if status == 429:
                raise GitLabError(f"GitLab rate limit while {what} (retries spent): {message}", 429) from exc
            raise GitLabError(f"GitLab API error {status} while {what}: {message}", status) from exc
        except GitlabError as exc:
            raise GitLabError(f"GitLab answer while {what} unreadable: {scrub_text(str(exc)[:200])}") from exc
        except requests.exceptions.RequestException as exc:
            raise GitLabError(f"cannot reach {self.url} while {what}: {type(exc).__name__}") from exc

    def _get(self, path: str, query: dict[str, Any] | None = None, *, what: str, not_found: str | None = None) -> Any:
        return self._call(
            lambda: self._gl.http_get(
                path, query_data=query or {}, retry_transient_errors=True, max_retries=self.max_retries
            ),
            what,
            not_found=not_found,
        )

    def _list(self, path: str, query: dict[str, Any] | None = None, *, what: str) -> Iterator[dict]:
        """Every item of a paged list, following ``Link: rel="next"`` (python-gitlab's GitlabList)."""
        items = self._call(
            lambda: self._gl.http_list(
                path,
                query_data=dict(query or {}, per_page=self.per_page),
                iterator=True,
                retry_transient_errors=True,
                max_retries=self.max_retries,
            ),
            what,
        )
        while True:
            item = self._call(lambda: next(items, None), what)
            if item is None:
                return
            yield item

    def _write(self, method: str, path: str, body: dict[str, Any], *, what: str, not_found: str | None = None) -> Any:
        send = self._gl.http_post if method == "POST" else self._gl.http_put
        return self._call(
            lambda: send(path, post_data=body, retry_transient_errors=False, max_retries=self.max_retries),
            what,
            not_found=not_found,
        )

    def _pace_note(self) -> None:
        """Wait so that at most ``notes_per_minute`` notes are created in any 60 s."""
        now = self._clock()
        while self._note_times and now - self._note_times[0] >= 60.0:
            self._note_times.popleft()
        if len(self._note_times) >= self._notes_per_minute:
            self._sleep(60.0 - (now - self._note_times[0]))
            self._note_times.popleft()
        self._note_times.append(self._clock())

    @staticmethod
    def _project(repo: str) -> str:
        if not isinstance(repo, str) or not _PROJECT.fullmatch(repo):
            raise UsageError(f"a GitLab project is written GROUP/PROJECT (subgroups allowed), got {repo!r}")
        return "/projects/" + quote(repo, safe="")

    def _mr(self, repo: str, number: int) -> str:
        return f"{self._project(repo)}/merge_requests/{int(number)}"

    @staticmethod
    def _missing(repo: str, number: int) -> str:
        return f"merge request {repo}!{number} not found (or project {repo} not visible to this token)"

    # ----------------------------------------------------------------- merge requests

    def get_pull(self, repo: str, number: int) -> dict:
        mr = self._get(self._mr(repo, number), what=f"reading {repo}!{number}", not_found=self._missing(repo, number))
        return pull_from_mr(mr)

    def iter_pulls(
        self, repo: str, state: str = "all", *, sort: str = "created", direction: str = "asc"
    ) -> Iterator[dict]:
        query = {"state": {"open": "opened"}.get(state, state), "order_by": f"{sort}_at", "sort": direction}
        for mr in self._list(f"{self._project(repo)}/merge_requests", query, what=f"listing merge requests of {repo}"):
            yield pull_from_mr(mr)

    def _diffs(self, repo: str, number: int) -> list[dict]:
        return list(self._list(f"{self._mr(repo, number)}/diffs", what=f"listing the diffs of {repo}!{number}"))

    def pull_files(self, repo: str, number: int) -> list[dict]:
        return [file_from_diff(d) for d in self._diffs(repo, number)]

    def pull_diff(self, repo: str, number: int) -> str:
        return "".join(unified_section(d) for d in self._diffs(repo, number))

    def diff_refs(self, repo: str, number: int) -> dict[str, str]:
        """base/start/head SHAs of the latest version (GitLab's first ``versions`` item)."""
        versions = self._get(f"{self._mr(repo, number)}/versions", what=f"listing versions of {repo}!{number}")
        if isinstance(versions, list) and versions:
            v = versions[0]
            refs = {"base_sha": v.get("base_commit_sha"), "start_sha": v.get("start_commit_sha")}
            refs["head_sha"] = v.get("head_commit_sha")
        else:
            refs = (self._get(self._mr(repo, number), what=f"reading {repo}!{number}") or {}).get("diff_refs") or {}
        if not all(refs.get(k) for k in ("base_sha", "start_sha", "head_sha")):
            # right after a merge request opens GitLab has not computed them yet: worth a retry
            raise GitLabError(f"{repo}!{number} has no diff_refs yet (GitLab is still preparing its diff)")
        return {k: str(refs[k]) for k in ("base_sha", "start_sha", "head_sha")}

    def compare(self, repo: str, base: str, head: str) -> dict:
        """``status`` from the merge base of the two commits, ``files`` from GitLab's compare."""
        project = self._project(repo)
        what = f"comparing {base[:12]}...{head[:12]} in {repo}"
        gone = f"{repo} has no commit {base[:12]} or {head[:12]} (force-pushed away?)"
        merge_base = self._get(f"{project}/repository/merge_base", {"refs[]": [base, head]}, what=what, not_found=gone)
        found = str((merge_base or {}).get("id") or "")
        status = (
            "identical" if base == head else "ahead" if found == base else "behind" if found == head else "diverged"
        )
        data = self._get(f"{project}/repository/compare", {"from": base, "to": head}, what=what, not_found=gone)
        return {"status": status, "files": [file_from_diff(d) for d in (data or {}).get("diffs") or []]}

    def get_file_text(self, repo: str, path: str, ref: str | None = None) -> str | None:
        url = f"{self._project(repo)}/repository/files/{quote(path.lstrip('/'), safe='')}/raw"
        query = {"ref": ref or "HEAD"}
        try:
            answer = self._call(
                lambda: self._gl.http_get(url, query_data=query, raw=True, retry_transient_errors=True),
                f"reading {path} at {ref or 'the default branch'} of {repo}",
            )
        except GitLabError as exc:
            if exc.status == 404:
                return None
            raise
        if isinstance(answer, requests.Response):
            return answer.content.decode("utf-8", errors="replace")
        return str(answer)

    # ----------------------------------------------------------------- notes and discussions

    def _discussions(self, repo: str, number: int) -> list[dict]:
        out = list(self._list(f"{self._mr(repo, number)}/discussions", what=f"listing discussions of {repo}!{number}"))
        for d in out:
            for note in d.get("notes") or []:
                self._discussion_of[(repo, int(number), int(note["id"]))] = str(d["id"])
        return out

    def list_reviews(self, repo: str, number: int) -> list[dict]:
        """The merge request's plain notes (where the bot's summary and fallback notes are)."""
        return [
            {"id": n["id"], "body": n.get("body") or "", "user": _user(n), "submitted_at": n.get("created_at")}
            for n in self._plain_notes(repo, number)
        ]

    def _plain_notes(self, repo: str, number: int) -> list[dict]:
        notes = self._list(f"{self._mr(repo, number)}/notes", {"sort": "asc"}, what=f"listing notes of {repo}!{number}")
        return [n for n in notes if not n.get("system") and n.get("type") != "DiffNote"]

    def issue_comments(self, repo: str, number: int) -> list[dict]:
        return [{"id": n["id"], "body": n.get("body") or "", "user": _user(n)} for n in self._plain_notes(repo, number)]

    def create_issue_comment(self, repo: str, number: int, body: str) -> dict:
        self._pace_note()
        note = self._write(
            "POST", f"{self._mr(repo, number)}/notes", {"body": body}, what=f"commenting on {repo}!{number}"
        )
        return {"id": note.get("id"), "body": note.get("body"), "user": _user(note)}

    def pull_review_comments(self, repo: str, number: int) -> list[dict]:
        """Every note of the merge request's DiffNote threads, as review comments (no hunk:
        the worker does not need it; the harvest's ``iter_review_comments`` has it)."""
        head = self.get_pull(repo, number)["head"]["sha"]
        out: list[dict] = []
        for d in self._discussions(repo, number):
            comments = comments_of_discussion(d, repo, number, head, None)
            if comments and extract_fingerprints(comments[0]["body"]):  # the bot's: its reactions are feedback
                comments[0]["reactions"] = self._reaction_counts(repo, number, int(comments[0]["id"]))
            out += comments
        return out

    def discussion_comments(self, repo: str, number: int, discussion_id: str) -> list[dict]:
        """One DiffNote thread's notes as review comments, with the hunk at the first note's SHAs."""
        head = self.get_pull(repo, number)["head"]["sha"]
        d = self._get(
            f"{self._mr(repo, number)}/discussions/{quote(discussion_id, safe='')}",
            what=f"reading a thread of {repo}!{number}",
            not_found=f"thread {discussion_id} not found on {repo}!{number}",
        )
        notes = (d or {}).get("notes") or []
        position = notes[0].get("position") if notes else None
        hunks = self._hunks_at(repo, number, position) if position else None
        return comments_of_discussion(d or {}, repo, number, head, hunks)

    def review_threads(self, repo: str, number: int) -> list[dict]:
        """DiffNote discussions as threads; outdated when a push since the note changed its lines."""
        head = self.get_pull(repo, number)["head"]["sha"]
        out = []
        for d in self._discussions(repo, number):
            notes = d.get("notes") or []
            root = notes[0] if notes else {}
            position = root.get("position") or {}
            if root.get("type") != "DiffNote" or not position:
                continue
            out.append(
                {
                    "id": f"{repo}!{int(number)}!{d['id']}",
                    "isResolved": bool(root.get("resolved")),
                    "isOutdated": self._outdated(repo, position, head),
                    "path": position.get("new_path") or position.get("old_path"),
                    "line": position.get("new_line") or position.get("old_line"),
                    "resolvedBy": {"login": (root.get("resolved_by") or {}).get("username")}
                    if root.get("resolved_by")
                    else None,
                    "comments": {
                        "nodes": [
                            {
                                "fullDatabaseId": str(n["id"]),
                                "body": n.get("body") or "",
                                "createdAt": n.get("created_at"),
                                "author": {"login": _user(n)["login"]},
                            }
                            for n in notes
                        ]
                    },
                }
            )
        return out

    def _outdated(self, repo: str, position: dict, head: str) -> bool:
        """Whether the lines a note sits on changed between the note's head and ``head``."""
        since = str(position.get("head_sha") or "")
        if not since or since == head:
            return False
        try:
            files = self.compare(repo, since, head)["files"]
        except GitLabError as exc:
            if exc.status == 404:
                return True  # its commit is gone: force-pushed away
            raise
        path = position.get("new_path") or position.get("old_path")
        line = position.get("new_line") or position.get("old_line")
        for f in files:
            if path not in (f.get("filename"), f.get("previous_filename")):
                continue
            if f.get("status") in ("removed", "renamed") or line is None:
                return True
            if position.get("new_line") is None:
                continue  # a removed line's number is the base's: a push to the branch does not move it
            try:
                fd = parse_patch(f.get("patch"), str(path), strict=False)
            except DiffError:
                return True
            if any(ln.kind == "-" and ln.old_no == int(line) for h in fd.hunks for ln in h.lines):
                return True
        return False

    def resolve_review_thread(self, thread_id: str) -> bool:
        parts = thread_id.rsplit("!", 2)
        if len(parts) != 3 or not parts[1].isdigit():
            raise UsageError(f"not a GitLab thread id: {thread_id!r}")
        repo, number, discussion = parts[0], int(parts[1]), parts[2]
        try:
            answer = self._write(
                "PUT",
                f"{self._mr(repo, number)}/discussions/{quote(discussion, safe='')}",
                {"resolved": True},
                what=f"resolving a thread on {repo}!{number}",
            )
        except GitLabError as exc:
            if exc.status in (401, 403):
                raise ResolveRefused(str(exc), exc.status) from exc
            raise
        notes = (answer or {}).get("notes") or []
        return bool(notes and notes[0].get("resolved"))

    def reply_to_review_comment(self, repo: str, number: int, comment_id: int, body: str) -> dict:
        key = (repo, int(number), int(comment_id))
        if key not in self._discussion_of:
            self._discussions(repo, number)
        discussion = self._discussion_of.get(key)
        if discussion is None:
            raise GitLabError(f"note {comment_id} not found on {repo}!{number}", 404)
        self._pace_note()
        note = self._write(
            "POST",
            f"{self._mr(repo, number)}/discussions/{quote(discussion, safe='')}/notes",
            {"body": body},
            what=f"replying to note {comment_id} on {repo}!{number}",
        )
        return {"id": note.get("id"), "body": note.get("body"), "in_reply_to_id": int(comment_id)}

    # ----------------------------------------------------------------- reviews

    def create_review(
        self,
        repo: str,
        number: int,
        *,
        commit_id: str,
        body: str,
        event: str = "COMMENT",
        comments: list[dict] | tuple = (),
    ) -> dict:
        """One positioned discussion per comment, then the summary note (see the module docstring).
        ``commit_id`` must be the latest version's head: a review of an older head is refused."""
        refs = self.diff_refs(repo, number)
        if commit_id and commit_id != refs["head_sha"]:
            raise GitLabError(
                f"{repo}!{number} moved on to {refs['head_sha'][:12]}; not posting a review of {commit_id[:12]}", 409
            )
        files = {}
        for d in self._diffs(repo, number):
            f = file_from_diff(d)
            try:
                files[f["filename"]] = parse_patch(
                    f.get("patch"), f["filename"], f.get("previous_filename"), f["status"], strict=False
                )
            except DiffError:
                continue
        positioned = fallback = 0
        for c in comments:
            if self._positioned(repo, number, position_for(refs, files.get(str(c.get("path"))), c), c):
                positioned += 1
                continue
            self.create_issue_comment(repo, number, fallback_note(c))
            fallback += 1
        summary = self.create_issue_comment(repo, number, body)
        return {"id": summary["id"], "body": body, "positioned": positioned, "fallback": fallback}

    def _positioned(self, repo: str, number: int, position: dict | None, comment: Mapping[str, Any]) -> bool:
        """Whether ``comment`` went out as a positioned discussion; False when it has no position in
        the latest version or GitLab refused the one it has (the port's ``InvalidPositionError``)."""
        if position is None:
            return False
        try:
            self._discussion(repo, number, str(comment.get("body") or ""), position)
        except InvalidPositionError as exc:
            log.warning("%s!%s: %s", repo, number, exc)
            return False
        return True

    def _discussion(self, repo: str, number: int, body: str, position: dict) -> None:
        """Post one positioned discussion; a position GitLab refuses (400) raises ``PositionRefused``.
        Discussions go out one by one, so ``create_review`` handles a refusal comment by comment
        (a fallback note) instead of passing it to the caller, who would post the others twice."""
        self._pace_note()
        try:
            self._write(
                "POST",
                f"{self._mr(repo, number)}/discussions",
                {"body": body, "position": position},
                what=f"starting a thread on {repo}!{number}",
            )
        except GitLabError as exc:
            if exc.status == 400 and any(word in str(exc) for word in _BAD_POSITION):
                raise PositionRefused(f"GitLab refused the position {position}: {exc}", 400) from exc
            raise

    # ----------------------------------------------------------------- reactions, people

    def comment_reactions(self, repo: str, comment_id: int, *, number: int | None = None) -> list[dict]:
        if number is None:
            raise UsageError("GitLab addresses a note's award emoji through its merge request: pass number=")
        awards = self._list(
            f"{self._mr(repo, number)}/notes/{int(comment_id)}/award_emoji",
            what=f"listing award emoji of note {comment_id} on {repo}!{number}",
        )
        return [{"content": EMOJI_TO_REACTION.get(a.get("name"), a.get("name")), "user": _user(a)} for a in awards]

    def react_to_issue_comment(self, repo: str, comment_id: int, content: str, *, number: int | None = None) -> dict:
        if number is None:
            raise UsageError("GitLab addresses a note's award emoji through its merge request: pass number=")
        name = REACTION_TO_EMOJI.get(content, content)
        return self._write(
            "POST",
            f"{self._mr(repo, number)}/notes/{int(comment_id)}/award_emoji",
            {"name": name},
            what=f"awarding {name} to note {comment_id} on {repo}!{number}",
        )

    def viewer_login(self) -> str | None:
        if self._viewer is None:
            try:
                self._viewer = str((self._get("/user", what="reading the token's user") or {}).get("username") or "")
            except GitLabError:
                self._viewer = ""
        return self._viewer or None

    def collaborator_permission(self, repo: str, login: str) -> str:
        """From the member's access level, inherited ones included: Developer (30) -> ``write``."""
        members = self._list(
            f"{self._project(repo)}/members/all", {"query": login}, what=f"reading {login}'s access to {repo}"
        )
        level = max((int(m.get("access_level") or 0) for m in members if m.get("username") == login), default=0)
        return next((name for floor, name in ACCESS if level >= floor), "none")

    # ----------------------------------------------------------------- history (harvest)

    def iter_review_comments(
        self, repo: str, since: datetime | str | None = None, sort: str = "updated", direction: str = "asc"
    ) -> Iterator[dict]:
        """Every DiffNote (and reply) of the project's merge requests updated since ``since``, with
        its hunk rebuilt from the merge request's diff at the note's SHAs and its award emoji."""
        query: dict[str, Any] = {"state": "all", "order_by": f"{sort}_at", "sort": direction}
        if since is not None:
            query["updated_after"] = _iso(since)
        for mr in self._list(f"{self._project(repo)}/merge_requests", query, what=f"listing merge requests of {repo}"):
            number = int(mr["iid"])
            head = str(mr.get("sha") or (mr.get("diff_refs") or {}).get("head_sha") or "")
            for d in self._discussions(repo, number):
                notes = d.get("notes") or []
                if not notes or notes[0].get("type") != "DiffNote" or not notes[0].get("position"):
                    continue
                hunks = self._hunks_at(repo, number, notes[0]["position"])
                comments = comments_of_discussion(d, repo, number, head, hunks)
                if comments:
                    comments[0]["reactions"] = self._reaction_counts(repo, number, int(comments[0]["id"]))
                yield from comments

    def _reaction_counts(self, repo: str, number: int, note_id: int) -> dict[str, int]:
        counts: dict[str, int] = {}
        for r in self.comment_reactions(repo, note_id, number=number):
            counts[str(r["content"])] = counts.get(str(r["content"]), 0) + 1
        return counts

    def _hunks_at(self, repo: str, number: int, position: dict) -> dict[str, FileDiff]:
        """The merge request's files as they were at a note's SHAs (cached per SHA pair)."""
        base, head = str(position.get("base_sha") or ""), str(position.get("head_sha") or "")
        key = (repo, int(number), base, head)
        if key not in self._hunks:
            diffs = self._version_diffs(repo, number, base, head)
            files = {}
            for d in diffs:
                f = file_from_diff(d)
                try:
                    files[f["filename"]] = parse_patch(
                        f.get("patch"), f["filename"], f.get("previous_filename"), f["status"], strict=False
                    )
                except DiffError:
                    continue
            self._hunks[key] = files
        return self._hunks[key]

    def _version_diffs(self, repo: str, number: int, base: str, head: str) -> list[dict]:
        versions = self._get(f"{self._mr(repo, number)}/versions", what=f"listing versions of {repo}!{number}") or []
        for v in versions:
            if v.get("head_commit_sha") == head and v.get("base_commit_sha") in (base, None, ""):
                full = self._get(
                    f"{self._mr(repo, number)}/versions/{int(v['id'])}", what=f"reading a version of {repo}!{number}"
                )
                return list((full or {}).get("diffs") or [])
        try:  # a version GitLab no longer lists: the same two commits through the repository
            data = self._get(
                f"{self._project(repo)}/repository/compare",
                {"from": base, "to": head, "straight": "true"},
                what=f"comparing {base[:12]}..{head[:12]}",
            )
        except GitLabError as exc:
            if exc.status == 404:
                return []
            raise
        return list((data or {}).get("diffs") or [])


# --------------------------------------------------------------------------- shape translation


def _iso(value: datetime | str) -> str:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return str(value)


_BOT_USER = re.compile(r"(?:project|group)_\d+_bot\w*|.*\[bot\]|ghost")  # access-token bots, GitHub-style names


def _user(item: Mapping[str, Any]) -> dict[str, Any]:
    """The port's ``user``: GitLab's access-token bots (``project_7_bot_...``) count as type Bot."""
    author = item.get("author") or item.get("user") or {}
    login = author.get("username") if isinstance(author, Mapping) else None
    bot = isinstance(author, Mapping) and (author.get("bot") is True or bool(_BOT_USER.fullmatch(str(login or ""))))
    return {"login": login, "type": "Bot" if bot else "User"}


def pull_from_mr(mr: Mapping[str, Any]) -> dict[str, Any]:
    """A merge request in the port's pull shape."""
    refs = mr.get("diff_refs") or {}
    state = mr.get("state")
    return {
        "number": int(mr["iid"]),
        "id": mr.get("id"),
        "state": "open" if state == "opened" else "closed",
        "merged": state == "merged",
        "draft": bool(mr.get("draft") or mr.get("work_in_progress")),
        "title": mr.get("title"),
        "head": {"sha": mr.get("sha") or refs.get("head_sha"), "ref": mr.get("source_branch")},
        "base": {"sha": refs.get("base_sha"), "ref": mr.get("target_branch")},
        "user": _user(mr),
        "created_at": mr.get("created_at"),
        "updated_at": mr.get("updated_at"),
        "diff_refs": refs,
        "html_url": mr.get("web_url"),
    }


def _hunks_only(text: str | None) -> str:
    """A GitLab ``diff`` string from its first ``@@`` on (some copies carry ``---``/``+++`` lines)."""
    text = text or ""
    at = text.find("@@")
    return text[at:] if at > 0 else text


def file_from_diff(d: Mapping[str, Any]) -> dict[str, Any]:
    """One entry of ``/diffs`` (or a version's ``diffs``) in the port's file shape."""
    status = (
        "added"
        if d.get("new_file")
        else "removed"
        if d.get("deleted_file")
        else "renamed"
        if d.get("renamed_file")
        else "modified"
    )
    new, old = d.get("new_path") or d.get("old_path") or "", d.get("old_path")
    return {
        "filename": new,
        "previous_filename": old if status == "renamed" else None,
        "status": status,
        "patch": _hunks_only(d.get("diff")) or None,
    }


def unified_section(d: Mapping[str, Any]) -> str:
    """One file of a merge request as a ``diff --git`` section bot.diff parses."""
    f = file_from_diff(d)
    old, new = d.get("old_path") or f["filename"], f["filename"]
    lines = [f"diff --git a/{old} b/{new}"]
    if f["status"] == "added":
        lines.append(f"new file mode {d.get('b_mode') or '100644'}")
    elif f["status"] == "removed":
        lines.append(f"deleted file mode {d.get('a_mode') or '100644'}")
    elif f["status"] == "renamed":
        lines += [f"rename from {old}", f"rename to {new}"]
    patch = _tolerant(f["patch"], new)
    if patch:
        lines.append("--- /dev/null" if f["status"] == "added" else f"--- a/{old}")
        lines.append("+++ /dev/null" if f["status"] == "removed" else f"+++ b/{new}")
        lines.append(patch.rstrip("\n"))
    return "\n".join(lines) + "\n"


def _tolerant(patch: str | None, path: str) -> str:
    """A file's hunks as far as they parse: GitLab cuts over-large diffs off, and some copies of its
    answers lost their newlines; what cannot be read is left out rather than failing the whole diff."""
    try:
        fd = parse_patch(patch, path, strict=False)
    except DiffError:
        return ""
    return "\n".join(h.text().rstrip("\n") for h in fd.hunks if h.lines)


def _hunk_upto(fd: FileDiff | None, line: int | None, side: str) -> str | None:
    """The hunk holding (line, side), cut after that line, as GitHub's ``diff_hunk`` reads."""
    if fd is None or line is None:
        return None
    hunk = fd.hunk_for(line, side)
    if hunk is None:
        return None
    target = hunk.line_at(line, side)
    kept = []
    for ln in hunk.lines:
        kept.append(ln)
        if ln is target:
            break
    olds = [ln for ln in kept if ln.kind != "+"]
    news = [ln for ln in kept if ln.kind != "-"]
    cut = Hunk(hunk.old_start, len(olds), hunk.new_start, len(news), hunk.section, kept)
    return cut.text()


def comments_of_discussion(
    d: Mapping[str, Any], repo: str, number: int, head: str, files: dict[str, FileDiff] | None
) -> list[dict[str, Any]]:
    """A DiffNote discussion as review comments: the first note, then its replies (``in_reply_to_id``)."""
    notes = [n for n in d.get("notes") or [] if not n.get("system")]
    if not notes or notes[0].get("type") != "DiffNote" or not notes[0].get("position"):
        return []
    position = notes[0]["position"]
    new_line, old_line = position.get("new_line"), position.get("old_line")
    side = "RIGHT" if new_line is not None else "LEFT"
    line = new_line if new_line is not None else old_line
    path = position.get("new_path") if new_line is not None else position.get("old_path") or position.get("new_path")
    start = ((position.get("line_range") or {}).get("start")) or {}
    start_line = start.get("new_line") if side == "RIGHT" else start.get("old_line")
    if start_line == line:
        start_line = None
    current = position.get("head_sha") == head
    hunk = _hunk_upto((files or {}).get(str(path)), line, side) if files is not None else None
    root_id = int(notes[0]["id"])
    out = []
    for i, n in enumerate(notes):
        out.append(
            {
                "id": int(n["id"]),
                "pr": int(number),
                "discussion_id": d.get("id"),
                "path": path,
                "diff_hunk": hunk,
                "line": line if current else None,
                "side": side,
                "start_line": start_line if current else None,
                "start_side": side if start_line is not None else None,
                "original_line": line,
                "original_start_line": start_line,
                "commit_id": position.get("head_sha"),
                "original_commit_id": position.get("head_sha"),
                "user": _user(n),
                "body": n.get("body") or "",
                "created_at": n.get("created_at"),
                "updated_at": n.get("updated_at") or n.get("created_at"),
                "in_reply_to_id": root_id if i else None,
                "resolved": bool(n.get("resolved")),
            }
        )
    return out


def line_code(path: str, old: int, new: int) -> str:
    """GitLab's id of a diff row: sha1(path) and its running old/new counters."""
    return f"{hashlib.sha1(path.encode('utf-8')).hexdigest()}_{old}_{new}"


def _rows(hunk: Hunk) -> list[tuple[Any, int, int]]:
    """(line, old counter, new counter) for each row of ``hunk`` as GitLab counts them."""
    old = hunk.old_start if hunk.old_len == 0 else hunk.old_start - 1
    new = hunk.new_start if hunk.new_len == 0 else hunk.new_start - 1
    rows = []
    for ln in hunk.lines:
        if ln.kind != "+":
            old += 1
        if ln.kind != "-":
            new += 1
        rows.append((ln, old, new))
    return rows


def _row_of(fd: FileDiff, line: int, side: str) -> tuple[Any, int, int] | None:
    hunk = fd.hunk_for(line, side)
    target = hunk.line_at(line, side) if hunk else None
    if hunk is None or target is None:
        return None
    return next((row for row in _rows(hunk) if row[0] is target), None)


def position_for(refs: Mapping[str, str], fd: FileDiff | None, comment: Mapping[str, Any]) -> dict[str, Any] | None:
    """The ``position`` of a positioned discussion for a port comment (``path``, ``line``, ``side``,
    ``start_line``), or None when the line is not a row of the merge request's diff."""
    line, side = comment.get("line"), str(comment.get("side") or "RIGHT")
    if fd is None or not isinstance(line, int):
        return None
    end = _row_of(fd, line, side)
    if end is None:
        return None
    position: dict[str, Any] = {
        "position_type": "text",
        "base_sha": refs["base_sha"],
        "start_sha": refs["start_sha"],
        "head_sha": refs["head_sha"],
        "old_path": fd.old_path or fd.path,
        "new_path": fd.path,
        **_line_fields(end),
    }
    start_line = comment.get("start_line")
    if isinstance(start_line, int) and start_line < line:
        start = _row_of(fd, start_line, str(comment.get("start_side") or side))
        if start is not None:
            position["line_range"] = {"start": _range_end(fd.path, start), "end": _range_end(fd.path, end)}
    return position


def _line_fields(row: tuple[Any, int, int]) -> dict[str, int]:
    ln, old, new = row
    if ln.kind == "+":
        return {"new_line": new}
    if ln.kind == "-":
        return {"old_line": old}
    return {"old_line": old, "new_line": new}


def _range_end(path: str, row: tuple[Any, int, int]) -> dict[str, Any]:
    ln, old, new = row
    fields = _line_fields(row)
    return {
        "line_code": line_code(path, old, new),
        "type": "new" if ln.kind == "+" else "old",
        "old_line": fields.get("old_line"),
        "new_line": fields.get("new_line"),
    }


def fallback_note(comment: Mapping[str, Any]) -> str:
    """A comment GitLab would not anchor, as a plain note that names where it belongs."""
    side = "old" if str(comment.get("side") or "RIGHT") == "LEFT" else "new"
    return f"**`{comment.get('path')}` line {comment.get('line')}** ({side} file):\n\n{comment.get('body') or ''}"
