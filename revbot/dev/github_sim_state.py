"""The GitHub simulator's state and how it grows: the state file, seeding, and the Python admin API
(open or push a pull request, add comments, react, resolve a thread) that tests and the demo drive."""

from __future__ import annotations

import copy
import json
from typing import Any

from adapters.files import atomic_write_json
from bot.diff import LEFT, RIGHT, FileDiff, parse_patch
from bot.errors import DataError, DiffError
from revbot.dev.github_sim_base import (
    DEFAULT_LOGIN,
    PERMISSIONS,
    REACTIONS,
    Context,
    SimulatorError,
    diff_status,
    digest,
    fake_sha,
    iso,
    node_id,
    not_found,
    now,
)
from revbot.dev.github_sim_heads import compare_patch, moved_line


class SimState:
    """State, seeding and the Python admin API of ``GitHubSimulator``, which mixes this class in; its
    methods share the simulator's state and lock."""

    # ----------------------------------------------------------------- state

    @staticmethod
    def _empty_state() -> dict:
        return {
            "next_id": 1000,
            "tokens": {},  # sha256(token) -> {"login", "type", "permission", "expires_at"?}
            "apps": {},  # str(app id) -> {"id", "slug", "installations", "public_key", "token_ttl"}
            "rate": {"limit": 5000, "window": 3600, "used": 0, "reset": 0},
            "users": {},  # login -> {"id", "type"}
            "repos": {},  # "owner/name" -> repo record
        }

    @staticmethod
    def _empty_stats() -> dict:
        return {"total": 0, "by_route": {}, "by_status": {}, "faults_served": 0, "tokens_issued": 0}

    @property
    def state(self) -> dict:
        """A deep copy of the whole state (what a state file holds)."""
        with self._lock:
            return copy.deepcopy(self._state)

    def _load_state(self, path: str) -> None:
        try:
            with open(path, encoding="utf-8") as fh:
                loaded = json.load(fh)
        except json.JSONDecodeError as exc:
            raise DataError(f"state file is not valid JSON: {exc.msg}", path, exc.lineno) from exc
        except OSError as exc:
            raise DataError(f"cannot read state file: {exc.strerror}", path) from exc
        if not isinstance(loaded, dict) or "repos" not in loaded:
            raise DataError("not a GitHub simulator state file (no 'repos')", path)
        base = self._empty_state()
        base.update(loaded)
        self._state = base

    def _save(self) -> None:
        """Write the state atomically (the project's one atomic writer) so a crash never leaves half a file."""
        if self.state_path:
            atomic_write_json(self.state_path, self._state, indent=None, sort_keys=False)

    def _new_id(self) -> int:
        self._state["next_id"] += 1
        return self._state["next_id"]

    def _user(self, spec: Any, default_type: str = "User") -> dict:
        """Register a user given as a login or {"login", "type"}; returns {"login", "type"}."""
        if isinstance(spec, dict):
            login, kind = spec.get("login"), spec.get("type") or default_type
        else:
            login, kind = spec, default_type
        if not isinstance(login, str) or not login:
            raise SimulatorError(f"a user must be a login or an object with 'login', got {spec!r}")
        users = self._state["users"]
        if login not in users:
            users[login] = {"id": self._new_id(), "type": kind}
        elif isinstance(spec, dict) and spec.get("type"):
            users[login]["type"] = spec["type"]
        return {"login": login, "type": users[login]["type"]}

    def _repo(self, full_name: str) -> dict:
        repo = self._state["repos"].get(full_name)
        if repo is None:
            raise not_found()
        return repo

    def _pull(self, repo: dict, number: Any) -> dict:
        pull = repo["pulls"].get(str(number))
        if pull is None:
            raise not_found()
        return pull

    # ----------------------------------------------------------------- seeding

    def seed(self, description: dict) -> None:
        """Load or merge a seed description (schema in the module docstring)."""
        if not isinstance(description, dict):
            raise SimulatorError("a seed description must be a JSON object")
        with self._lock:
            backup = copy.deepcopy(self._state)
            try:
                self._merge_seed(description)
            except (TypeError, ValueError, KeyError, AttributeError) as exc:
                self._state = backup
                raise SimulatorError(f"bad seed description: {type(exc).__name__}: {exc}") from exc
            except SimulatorError:
                self._state = backup  # all or nothing
                raise
            finally:
                self._diff_cache.clear()
            self._save()

    def _merge_seed(self, description: dict) -> None:
        for i, tok in enumerate(description.get("tokens") or []):
            self._seed_token(tok, f"tokens[{i}]")
        if "rate_limit" in description:
            rate = description["rate_limit"] or {}
            self._state["rate"].update({k: int(rate[k]) for k in ("limit", "window") if k in rate}, used=0, reset=0)
        for i, app in enumerate(description.get("apps") or []):
            if not isinstance(app, dict) or "id" not in app:
                raise SimulatorError(f"apps[{i}]: an app needs an 'id'")
            self._state["apps"][str(app["id"])] = {
                "id": int(app["id"]),
                "slug": app.get("slug") or f"app-{app['id']}",
                "installations": [int(x) for x in app.get("installations") or []],
                "public_key": app.get("public_key"),
                "token_ttl": int(app.get("token_ttl", 3600)),
            }
        for i, repo in enumerate(description.get("repos") or []):
            self._seed_repo(repo, f"repos[{i}]")

    def _seed_token(self, tok: Any, where: str) -> None:
        if isinstance(tok, str):
            tok = {"token": tok}
        if not isinstance(tok, dict) or not isinstance(tok.get("token"), str) or not tok["token"]:
            raise SimulatorError(f"{where}: a token is a string or an object with a 'token' string")
        user = self._user({"login": tok.get("login") or DEFAULT_LOGIN, "type": tok.get("type") or "User"})
        self._state["tokens"][digest(tok["token"])] = {
            "login": user["login"],
            "type": user["type"],
            "permission": tok.get("permission", "write"),
            "graphql": tok.get("graphql", True) if tok.get("graphql") == "read" else bool(tok.get("graphql", True)),
        }

    def _seed_repo(self, spec: Any, where: str) -> None:
        if not isinstance(spec, dict) or not spec.get("owner") or not spec.get("name"):
            raise SimulatorError(f"{where}: a repo needs 'owner' and 'name'")
        full = f"{spec['owner']}/{spec['name']}"
        repo = self._state["repos"].get(full)
        if repo is None:
            owner = self._user({"login": spec["owner"], "type": spec.get("owner_type", "User")})
            repo = {
                "id": self._new_id(),
                "owner": owner["login"],
                "name": spec["name"],
                "default_branch": spec.get("default_branch", "main"),
                "private": bool(spec.get("private", False)),
                "description": spec.get("description"),
                "created_at": spec.get("created_at") or iso(now()),
                "files": {},
                "pulls": {},
                "review_comments": {},
                "reviews": {},
                "issue_comments": {},
                "collaborators": {},
            }
            self._state["repos"][full] = repo
        else:
            for key in ("default_branch", "private", "description"):
                if key in spec:
                    repo[key] = spec[key]
        for login, permission in (spec.get("collaborators") or {}).items():
            if permission not in PERMISSIONS:
                raise SimulatorError(
                    f"{where}.collaborators.{login}: permission must be one of {', '.join(PERMISSIONS)}"
                )
            self._user(login)
            repo.setdefault("collaborators", {})[login] = permission
        for branch, files in (spec.get("files") or {}).items():
            if not isinstance(files, dict):
                raise SimulatorError(f"{where}.files.{branch}: expected an object of path -> content")
            repo["files"].setdefault(branch, {}).update({str(k): str(v) for k, v in files.items()})
        for j, pull in enumerate(spec.get("pulls") or []):
            self._seed_pull(repo, pull, f"{where}.pulls[{j}]")

    def _seed_pull(self, repo: dict, spec: Any, where: str) -> dict:
        if not isinstance(spec, dict):
            raise SimulatorError(f"{where}: a pull request must be an object")
        number = spec.get("number") or (max((int(n) for n in repo["pulls"]), default=0) + 1)
        full = f"{repo['owner']}/{repo['name']}"
        created = spec.get("created_at") or iso(now())
        state = spec.get("state", "open")
        if state not in ("open", "closed"):
            raise SimulatorError(f"{where}: state must be 'open' or 'closed', got {state!r}")
        merged = bool(spec.get("merged", False))
        closed_at = spec.get("closed_at") or (spec.get("updated_at") or created if state == "closed" else None)
        pull = {
            "number": int(number),
            "id": self._new_id(),
            "title": spec.get("title", f"Pull request {number}"),
            "body": spec.get("body", ""),
            "user": self._user(spec.get("user") or "octocat"),
            "state": state,
            "draft": bool(spec.get("draft", False)),
            "locked": False,
            "merged": merged,
            "base": spec.get("base") or repo["default_branch"],
            "head": spec.get("head") or f"pr-{number}",
            "head_sha": spec.get("head_sha") or fake_sha(full, number, "head", created),
            "base_sha": spec.get("base_sha") or fake_sha(full, number, "base", created),
            "created_at": created,
            "updated_at": spec.get("updated_at") or created,
            "closed_at": closed_at,
            "merged_at": spec.get("merged_at") or (closed_at if merged else None),
            "files": [],
            "shas": [],
        }
        pull["shas"].append(pull["head_sha"])
        pull["files"] = self._check_files(spec.get("files") or [], f"{where}.files", full, number)
        pull["snapshots"] = {pull["head_sha"]: copy.deepcopy(pull["files"])}
        repo["pulls"][str(pull["number"])] = pull
        for k, comment in enumerate(spec.get("comments") or []):
            self._add_review_comment(repo, pull, comment, f"{where}.comments[{k}]")
        for k, comment in enumerate(spec.get("issue_comments") or []):
            if not isinstance(comment, dict) or "body" not in comment:
                raise SimulatorError(f"{where}.issue_comments[{k}]: needs a 'body'")
            self._add_issue_comment(
                repo, pull, comment.get("user") or "octocat", comment["body"], comment.get("created_at")
            )
        for k, review in enumerate(spec.get("reviews") or []):
            if not isinstance(review, dict):
                raise SimulatorError(f"{where}.reviews[{k}]: a review must be an object")
            self._add_review(
                repo,
                pull,
                self._user(review.get("user") or "octocat"),
                review.get("body", ""),
                review.get("state", "COMMENTED"),
                review.get("commit_id") or pull["head_sha"],
                review.get("submitted_at"),
                review.get("id"),
            )
        return pull

    def _check_files(self, files: Any, where: str, full: str, number: Any) -> list[dict]:
        if not isinstance(files, list):
            raise SimulatorError(f"{where}: expected a list of files")
        out = []
        for k, f in enumerate(files):
            if not isinstance(f, dict) or not f.get("filename"):
                raise SimulatorError(f"{where}[{k}]: a file needs a 'filename'")
            status = f.get("status", "modified")
            entry = {
                "filename": f["filename"],
                "status": status,
                "patch": f.get("patch"),
                "previous_filename": f.get("previous_filename"),
                "binary": bool(f.get("binary", False)),
            }
            try:  # refuse a broken patch now, not on the first request that needs it
                parse_patch(
                    entry["patch"],
                    entry["filename"],
                    entry["previous_filename"],
                    diff_status(status),
                    source=f"{full}#{number} {entry['filename']}",
                )
            except DiffError as exc:
                raise SimulatorError(f"{where}[{k}]: bad patch: {exc}") from exc
            out.append(entry)
        return out

    # ----------------------------------------------------------------- mutations used by seed, admin and API

    def _file_diffs(self, full: str, pull: dict) -> dict[str, FileDiff]:
        key = (full, pull["number"], pull["head_sha"], len(pull["files"]))
        cached = self._diff_cache.get(key)
        if cached is None:
            cached = {}
            for f in pull["files"]:
                fd = parse_patch(
                    f["patch"],
                    f["filename"],
                    f["previous_filename"],
                    diff_status(f["status"]),
                    source=f"{full}#{pull['number']} {f['filename']}",
                )
                fd.is_binary = f["binary"]
                cached[f["filename"]] = fd
            self._diff_cache[key] = cached
        return cached

    def _anchor(self, full: str, pull: dict, path: str, line: int | None, side: str) -> tuple[str, int | None]:
        """GitHub's diff_hunk (hunk header down to the commented line) and diff position, or ("", None)."""
        fd = self._file_diffs(full, pull).get(path)
        if fd is None or line is None:
            return "", None
        position = 0
        for h_index, hunk in enumerate(fd.hunks):
            if h_index:
                position += 1  # later hunk headers count as diff lines
            for l_index, ln in enumerate(hunk.lines):
                position += 1
                hit = (side == RIGHT and ln.kind in "+ " and ln.new_no == line) or (
                    side == LEFT and ln.kind in "- " and ln.old_no == line
                )
                if hit:
                    return "\n".join([hunk.header, *(x.render() for x in hunk.lines[: l_index + 1])]), position
                if ln.no_newline:
                    position += 1
        return "", None

    def _position_to_line(self, full: str, pull: dict, path: str, position: int) -> tuple[int, str] | None:
        fd = self._file_diffs(full, pull).get(path)
        if fd is None:
            return None
        count = 0
        for h_index, hunk in enumerate(fd.hunks):
            if h_index:
                count += 1
            for ln in hunk.lines:
                count += 1
                if count == position:
                    return (ln.old_no, LEFT) if ln.kind == "-" else (ln.new_no, RIGHT)  # type: ignore[return-value]
                if ln.no_newline:
                    count += 1
        return None

    def _add_review(
        self,
        repo: dict,
        pull: dict,
        user: dict,
        body: str,
        state: str,
        commit_id: str,
        submitted_at: str | None = None,
        review_id: int | None = None,
    ) -> dict:
        rid = int(review_id) if review_id else self._new_id()
        self._state["next_id"] = max(self._state["next_id"], rid)
        review = {
            "id": rid,
            "pull": pull["number"],
            "user": user,
            "body": body or "",
            "state": state,
            "commit_id": commit_id,
            "submitted_at": None if state == "PENDING" else (submitted_at or iso(now())),
        }
        repo["reviews"][str(rid)] = review
        return review

    def _add_review_comment(
        self, repo: dict, pull: dict, spec: dict, where: str, review_id: int | None = None, identity: dict | None = None
    ) -> dict:
        """Store a review comment as given (seeds may hold lines outside the diff, as real data does)."""
        if not isinstance(spec, dict) or "body" not in spec:
            raise SimulatorError(f"{where}: a review comment needs a 'body'")
        full = f"{repo['owner']}/{repo['name']}"
        user = identity or self._user(spec.get("user") or "octocat")
        parent = None
        if spec.get("in_reply_to_id") is not None:
            parent = repo["review_comments"].get(str(spec["in_reply_to_id"]))
            if parent is None:
                raise SimulatorError(f"{where}: in_reply_to_id {spec['in_reply_to_id']} is not a comment of {full}")
        path = parent["path"] if parent else spec.get("path")
        if not path:
            raise SimulatorError(f"{where}: a review comment needs a 'path'")
        side = parent["side"] if parent else (spec.get("side") or RIGHT)
        line = parent["line"] if parent else spec.get("line")
        start_line = parent["start_line"] if parent else spec.get("start_line")
        diff_hunk, position = self._anchor(full, pull, path, line, side)
        created = spec.get("created_at") or iso(now())
        cid = int(spec["id"]) if spec.get("id") else self._new_id()
        self._state["next_id"] = max(self._state["next_id"], cid)
        if review_id is None:
            review_id = spec.get("pull_request_review_id")
            if review_id is None or str(review_id) not in repo["reviews"]:
                review_id = self._add_review(
                    repo, pull, user, "", "COMMENTED", spec.get("commit_id") or pull["head_sha"], created, review_id
                )["id"]
        comment = {
            "id": cid,
            "pull": pull["number"],
            "review_id": int(review_id),
            "path": path,
            "diff_hunk": spec.get("diff_hunk") or (parent["diff_hunk"] if parent else diff_hunk),
            "position": position,
            "line": line,
            "side": side,
            "start_line": start_line,
            "start_side": (spec.get("start_side") or side) if start_line is not None else None,
            "original_line": spec.get("original_line", line),
            "original_start_line": spec.get("original_start_line", start_line),
            "commit_id": spec.get("commit_id") or pull["head_sha"],
            "original_commit_id": spec.get("original_commit_id") or spec.get("commit_id") or pull["head_sha"],
            "user": user,
            "body": spec["body"],
            "created_at": created,
            "updated_at": spec.get("updated_at") or created,
            "in_reply_to_id": parent["id"] if parent else None,
            "subject_type": spec.get("subject_type") or ("file" if line is None else "line"),
            "author_association": spec.get("author_association"),
            "reactions": [],
        }
        for content, n in (spec.get("reactions") or {}).items():
            if content in REACTIONS:
                for k in range(int(n)):
                    comment["reactions"].append(
                        {
                            "id": self._new_id(),
                            "content": content,
                            "created_at": created,
                            "user": self._user(f"reactor-{k + 1}"),
                        }
                    )
        repo["review_comments"][str(cid)] = comment
        return comment

    def _add_issue_comment(self, repo: dict, pull: dict, user: Any, body: str, created: str | None = None) -> dict:
        created = created or iso(now())
        cid = self._new_id()
        comment = {
            "id": cid,
            "issue": pull["number"],
            "user": self._user(user),
            "body": body,
            "created_at": created,
            "updated_at": created,
            "reactions": [],
        }
        repo["issue_comments"][str(cid)] = comment
        return comment

    def _move_comments(self, repo: dict, pull: dict, old_diffs: dict[str, FileDiff]) -> None:
        """After a push: comments on lines the push left alone follow them to their new number;
        the others become outdated (no ``line``/``position``; ``original_*`` and ``diff_hunk`` stay)."""
        full = f"{repo['owner']}/{repo['name']}"
        new_diffs = self._file_diffs(full, pull)
        changes: dict[str, FileDiff | None] = {}
        for c in repo["review_comments"].values():
            if c["pull"] != pull["number"] or c["line"] is None or c["in_reply_to_id"] is not None:
                continue
            path = c["path"]
            if path not in changes:
                patch = compare_patch(old_diffs.get(path), new_diffs.get(path))
                changes[path] = parse_patch(patch, path) if patch else None
            line = moved_line(changes[path], c["line"], c["start_line"]) if c["side"] == RIGHT else c["line"]
            fd = new_diffs.get(path)
            if line is None or fd is None or not fd.is_commentable(line, c["side"]):
                c.update(line=None, start_line=None, position=None)
            else:
                shift = line - c["line"]
                _, position = self._anchor(full, pull, path, line, c["side"])
                c.update(
                    line=line,
                    position=position,
                    commit_id=pull["head_sha"],
                    start_line=c["start_line"] + shift if c["start_line"] is not None else None,
                )
            for reply in repo["review_comments"].values():
                if reply["in_reply_to_id"] == c["id"]:
                    reply.update(line=c["line"], start_line=c["start_line"], position=c["position"])

    def _compare_files(self, full: str, pull: dict, old_sha: str, new_sha: str) -> list[dict]:
        """The files that differ between two heads of ``pull`` (each a snapshot of its patches)."""
        snapshots = pull.get("snapshots") or {}

        def diffs(sha: str) -> dict[str, FileDiff]:
            return {
                f["filename"]: parse_patch(
                    f["patch"],
                    f["filename"],
                    f["previous_filename"],
                    diff_status(f["status"]),
                    source=f"{full} {sha[:12]} {f['filename']}",
                )
                for f in snapshots[sha]
                if f["patch"] is not None
            }

        old, new = diffs(old_sha), diffs(new_sha)
        out = []
        for path in sorted(set(old) | set(new)):
            patch = compare_patch(old.get(path), new.get(path))
            if not patch:
                continue
            if path not in new and old[path].status == "added":
                status = "removed"
            elif path not in old and new[path].status == "added":
                status = "added"
            else:
                status = "modified"
            fd = parse_patch(patch, path, status=diff_status(status))
            out.append(
                {
                    "filename": path,
                    "status": status,
                    "patch": patch,
                    "additions": fd.added,
                    "deletions": fd.removed,
                    "changes": fd.added + fd.removed,
                }
            )
        return out

    # ----------------------------------------------------------------- Python admin API

    def add_pull(
        self,
        repo: str,
        *,
        files: list[dict],
        number: int | None = None,
        title: str | None = None,
        body: str = "",
        user: Any = "octocat",
        head: str | None = None,
        base: str | None = None,
        head_sha: str | None = None,
        draft: bool = False,
        head_files: dict[str, str] | None = None,
        api_url: str | None = None,
        force: bool = False,
    ) -> dict:
        """Open a PR (or push new files to PR ``number`` if it exists, a ``synchronize``).

        ``files`` is the PR's whole diff against its base after the push, as GitHub lists it. A push
        moves the review comments whose lines it did not touch, and makes the others outdated
        (``line``/``position`` null), as GitHub does. ``force=True`` is a force-push that rewrote
        history: the earlier heads are no longer ancestors, so comparing with them answers 404.

        Returns ``{"pull": PR JSON, "webhook": pull_request payload}`` (payload ready to sign and POST).
        """
        with self._lock:
            record = self._state["repos"].get(repo)
            if record is None:
                raise SimulatorError(f"unknown repository {repo!r}; seed it first")
            api = api_url or (self.url if self._server else "http://127.0.0.1")
            existing = record["pulls"].get(str(number)) if number is not None else None
            if existing is not None:
                before = existing["head_sha"]
                old_diffs = self._file_diffs(repo, existing)
                existing["files"] = self._check_files(files, "files", repo, number)
                existing["head_sha"] = head_sha or fake_sha(repo, number, "push", len(existing["shas"]), now())
                existing["shas"].append(existing["head_sha"])
                existing["updated_at"] = iso(now())
                snapshots = existing.setdefault("snapshots", {})
                if force:
                    snapshots.clear()
                snapshots[existing["head_sha"]] = copy.deepcopy(existing["files"])
                self._diff_cache.clear()
                self._move_comments(record, existing, old_diffs)
                pull, action, extra = existing, "synchronize", {"before": before, "after": existing["head_sha"]}
            else:
                spec = {
                    "number": number,
                    "title": title,
                    "body": body,
                    "user": user,
                    "head": head,
                    "base": base,
                    "head_sha": head_sha,
                    "draft": draft,
                    "files": files,
                }
                pull = self._seed_pull(record, {k: v for k, v in spec.items() if v is not None}, "pull")
                action, extra = "opened", {}
            if head_files:
                record["files"].setdefault(pull["head"], {}).update(head_files)
            self._diff_cache.clear()
            self._save()
            ctx = Context("GET", "", {}, {}, None, api, api)
            pull_json = self._render_pull(ctx, record, pull)
            payload = {
                "action": action,
                "number": pull["number"],
                **extra,
                "pull_request": pull_json,
                "repository": self._render_repo(ctx, record),
                "sender": self._render_user(ctx, pull["user"]),
            }
            installation = self._first_installation()
            if installation is not None:
                payload["installation"] = {"id": installation, "node_id": node_id("Installation", installation)}
            return {"pull": pull_json, "webhook": payload}

    def add_comments(
        self,
        repo: str,
        number: int,
        comments: list[dict] | None = None,
        *,
        count: int | None = None,
        user: Any = "reviewer",
        api_url: str | None = None,
    ) -> dict:
        """Add human review comments (given, or ``count`` generated on commentable lines).

        Returns ``{"comments": [comment JSON], "webhooks": [pull_request_review_comment payloads]}``.
        """
        with self._lock:
            record, pull = self._admin_pull(repo, number)
            specs = list(comments or [])
            if count:
                anchors = sorted(
                    (fd.path, ln, side)
                    for fd in self._file_diffs(repo, pull).values()
                    for (ln, side) in fd.anchors
                    if side == RIGHT
                )
                if not anchors:
                    raise SimulatorError(f"{repo}#{number} has no commentable line to generate comments on")
                for k in range(int(count)):
                    path, line, side = anchors[k % len(anchors)]
                    specs.append(
                        {
                            "path": path,
                            "line": line,
                            "side": side,
                            "user": user,
                            "body": f"Human review comment {k + 1} on {path}:{line}",
                        }
                    )
            made = [self._add_review_comment(record, pull, spec, f"comments[{k}]") for k, spec in enumerate(specs)]
            self._save()
            api = api_url or (self.url if self._server else "http://127.0.0.1")
            ctx = Context("GET", "", {}, {}, None, api, api)
            rendered = [self._render_review_comment(ctx, record, c) for c in made]
            pull_json = self._render_pull(ctx, record, pull, listing=True)
            repo_json = self._render_repo(ctx, record)
            hooks = [
                {
                    "action": "created",
                    "comment": c,
                    "pull_request": pull_json,
                    "repository": repo_json,
                    "sender": c["user"],
                }
                for c in rendered
            ]
            return {"comments": rendered, "webhooks": hooks}

    def add_issue_comment(
        self, repo: str, number: int, body: str, *, user: Any = "octocat", api_url: str | None = None
    ) -> dict:
        """A conversation comment on PR ``number`` (e.g. ``/revbot review``), as ``user`` writes it.

        Returns ``{"comment": comment JSON, "webhook": issue_comment payload}``."""
        with self._lock:
            record, pull = self._admin_pull(repo, number)
            comment = self._add_issue_comment(record, pull, user, body)
            self._save()
            ctx = self._admin_ctx(api_url)
            rendered = self._render_issue_comment(ctx, record, comment)
            pull_json = self._render_pull(ctx, record, pull, listing=True)
            issue = {
                "number": pull["number"],
                "title": pull["title"],
                "state": pull["state"],
                "user": pull_json["user"],
                "body": pull["body"],
                "html_url": pull_json["html_url"],
                "pull_request": {
                    "url": pull_json["url"],
                    "html_url": pull_json["html_url"],
                    "diff_url": pull_json["diff_url"],
                    "patch_url": pull_json["patch_url"],
                },
            }
            hook = {
                "action": "created",
                "issue": issue,
                "comment": rendered,
                "repository": self._render_repo(ctx, record),
                "sender": rendered["user"],
            }
            self._with_installation(hook)
            return {"comment": rendered, "webhook": hook}

    def react(self, repo: str, comment_id: int, content: str, *, user: Any = "octocat", issue: bool = False) -> dict:
        """``user`` reacts to a review comment (or, ``issue=True``, a conversation comment)."""
        if content not in REACTIONS:
            raise SimulatorError(f"unknown reaction {content!r}; expected one of {', '.join(REACTIONS)}")
        with self._lock:
            record = self._state["repos"].get(repo)
            if record is None:
                raise SimulatorError(f"unknown repository {repo!r}; seed it first")
            comment = record["issue_comments" if issue else "review_comments"].get(str(comment_id))
            if comment is None:
                raise SimulatorError(f"no {'issue' if issue else 'review'} comment {comment_id} in {repo}")
            who = self._user(user)
            reaction = {"id": self._new_id(), "content": content, "user": who, "created_at": iso(now())}
            comment.setdefault("reactions", []).append(reaction)
            self._save()
            return dict(reaction)

    def resolve_thread(
        self, repo: str, comment_id: int, *, user: Any = "octocat", resolved: bool = True, api_url: str | None = None
    ) -> dict:
        """``user`` resolves (or unresolves) the thread of review comment ``comment_id`` in GitHub's
        UI. Returns ``{"webhook": pull_request_review_thread payload}``."""
        from revbot.dev.github_sim_graphql import thread_id

        with self._lock:
            record = self._state["repos"].get(repo)
            if record is None:
                raise SimulatorError(f"unknown repository {repo!r}; seed it first")
            root = record["review_comments"].get(str(comment_id))
            while root is not None and root["in_reply_to_id"] is not None:
                root = record["review_comments"].get(str(root["in_reply_to_id"]))
            if root is None:
                raise SimulatorError(f"no review comment {comment_id} in {repo}")
            who = self._user(user)
            root["resolved"], root["resolved_by"] = resolved, (who if resolved else None)
            self._save()
            ctx = self._admin_ctx(api_url)
            pull = record["pulls"][str(root["pull"])]
            thread = [root] + sorted(
                (c for c in record["review_comments"].values() if c["in_reply_to_id"] == root["id"]),
                key=lambda c: c["id"],
            )
            hook = {
                "action": "resolved" if resolved else "unresolved",
                "thread": {
                    "node_id": thread_id(root["id"]),
                    "comments": [self._render_review_comment(ctx, record, c) for c in thread],
                },
                "pull_request": self._render_pull(ctx, record, pull, listing=True),
                "repository": self._render_repo(ctx, record),
                "sender": self._render_user(ctx, who),
            }
            self._with_installation(hook)
            return {"webhook": hook}

    def _admin_pull(self, repo: str, number: Any) -> tuple[dict, dict]:
        record = self._state["repos"].get(repo)
        if record is None:
            raise SimulatorError(f"unknown repository {repo!r}; seed it first")
        pull = record["pulls"].get(str(number))
        if pull is None:
            raise SimulatorError(f"unknown pull request {repo}#{number}")
        return record, pull

    def _admin_ctx(self, api_url: str | None) -> Context:
        api = api_url or (self.url if self._server else "http://127.0.0.1")
        return Context("GET", "", {}, {}, None, api, api)

    def _with_installation(self, payload: dict) -> None:
        installation = self._first_installation()
        if installation is not None:
            payload["installation"] = {"id": installation, "node_id": node_id("Installation", installation)}
