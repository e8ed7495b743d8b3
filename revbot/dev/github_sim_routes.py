"""The GitHub simulator's REST endpoints and the route table that maps method and path to them."""

from __future__ import annotations

import base64
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from bot.diff import LEFT, RIGHT, Diff, parse_patch
from revbot.dev.github_sim_base import (
    DOCS,
    REACTIONS,
    Answer,
    Context,
    HTTPError,
    blob_sha,
    diff_status,
    digest,
    fake_sha,
    iso,
    node_id,
    not_found,
    now,
    parse_time,
    unprocessable,
)


class SimRoutes:
    """The REST endpoints of ``GitHubSimulator``, which mixes this class in; its
    methods share the simulator's state and lock."""

    # ----------------------------------------------------------------- GitHub endpoints

    def _get_repo(self, ctx: Context, owner: str, repo: str) -> Answer:
        return Answer(200, self._render_repo(ctx, self._repo(f"{owner}/{repo}")))

    def _list_pulls(self, ctx: Context, owner: str, repo: str) -> Answer:
        record = self._repo(f"{owner}/{repo}")
        state = ctx.query.get("state", "open")
        if state not in ("open", "closed", "all"):
            raise HTTPError(422, f"Invalid value for state: {state!r}")
        pulls = [p for p in record["pulls"].values() if state == "all" or p["state"] == state]
        if "base" in ctx.query:
            pulls = [p for p in pulls if p["base"] == ctx.query["base"]]
        if "head" in ctx.query:
            pulls = [p for p in pulls if f"{record['owner']}:{p['head']}" == ctx.query["head"]]
        sort = ctx.query.get("sort", "created")
        key = {"created": "created_at", "updated": "updated_at"}.get(sort, "created_at")
        pulls.sort(key=lambda p: (p[key], p["number"]), reverse=ctx.query.get("direction", "desc") == "desc")
        return self._page(ctx, pulls, lambda p: self._render_pull(ctx, record, p, listing=True))

    def _get_pull(self, ctx: Context, owner: str, repo: str, number: str) -> Answer:
        full = f"{owner}/{repo}"
        record = self._repo(full)
        pull = self._pull(record, number)
        accept = (ctx.headers.get("Accept") or "").lower()
        if "diff" in accept or "patch" in accept:
            diffs = self._file_diffs(full, pull)
            text = Diff(files=[diffs[f["filename"]] for f in pull["files"]], source=full).text()
            return Answer(200, text, content_type="text/plain; charset=utf-8")
        return Answer(200, self._render_pull(ctx, record, pull))

    def _pull_files(self, ctx: Context, owner: str, repo: str, number: str) -> Answer:
        record = self._repo(f"{owner}/{repo}")
        pull = self._pull(record, number)
        return self._page(ctx, pull["files"], lambda f: self._render_file(ctx, record, pull, f))

    def _sorted_comments(self, ctx: Context, comments: list[dict], default_sort: str = "created") -> list[dict]:
        since = ctx.query.get("since")
        if since:
            floor = parse_time(since, "since")
            comments = [c for c in comments if parse_time(c["updated_at"], "updated_at") >= floor]
        sort = ctx.query.get("sort", default_sort)
        if sort not in ("created", "updated"):
            raise HTTPError(422, f"Invalid value for sort: {sort!r}")
        key = "created_at" if sort == "created" else "updated_at"
        direction = ctx.query.get("direction", "asc")
        if direction not in ("asc", "desc"):
            raise HTTPError(422, f"Invalid value for direction: {direction!r}")
        return sorted(comments, key=lambda c: (c[key], c["id"]), reverse=direction == "desc")

    def _repo_comments(self, ctx: Context, owner: str, repo: str) -> Answer:
        record = self._repo(f"{owner}/{repo}")
        pending = {r["id"] for r in record["reviews"].values() if r["state"] == "PENDING"}
        comments = [c for c in record["review_comments"].values() if c["review_id"] not in pending]
        ordered = self._sorted_comments(ctx, comments)
        return self._page(ctx, ordered, lambda c: self._render_review_comment(ctx, record, c))

    def _get_comment(self, ctx: Context, owner: str, repo: str, comment_id: str) -> Answer:
        record = self._repo(f"{owner}/{repo}")
        comment = record["review_comments"].get(comment_id)
        if comment is None:
            raise not_found()
        return Answer(200, self._render_review_comment(ctx, record, comment))

    def _pull_comments(self, ctx: Context, owner: str, repo: str, number: str) -> Answer:
        record = self._repo(f"{owner}/{repo}")
        pull = self._pull(record, number)
        ordered = self._sorted_comments(ctx, self._visible_comments(record, pull["number"]))
        return self._page(ctx, ordered, lambda c: self._render_review_comment(ctx, record, c))

    def _validate_inline(self, full: str, pull: dict, spec: Any, index: int | None) -> tuple[dict, list[dict]]:
        """Check one inline comment against the PR's diff like GitHub does; returns (normalised, errors)."""

        def error(field_name: str, message: str, code: str = "custom", **where: Any) -> dict:
            return _inline_error(index, field_name, message, code, **where)

        if not isinstance(spec, dict):
            return {}, [error("comment", f"{_label(index)} must be an object", code="invalid")]
        errors = []
        body, path = spec.get("body"), spec.get("path")
        if not isinstance(body, str) or not body:
            errors.append(error("body", "Body can't be blank", code="missing_field"))
        if not isinstance(path, str) or not path:
            errors.append(error("path", "Path can't be blank", code="missing_field"))
            return {}, errors
        fd = self._file_diffs(full, pull).get(path)
        where: dict[str, Any] = {"path": path}
        if fd is None:
            return {}, [*errors, error("path", "Path could not be resolved", **where)]
        if spec.get("subject_type") == "file":
            return {"path": path, "body": body, "line": None, "side": RIGHT, "subject_type": "file"}, errors
        line, side = spec.get("line"), spec.get("side") or RIGHT
        if line is None and spec.get("position") is not None:
            resolved = self._position_to_line(full, pull, path, int(spec["position"]))
            if resolved is None:
                message = "Pull request review thread position could not be resolved"
                return {}, [*errors, error("position", message, **where, position=spec["position"])]
            line, side = resolved
        if side not in (LEFT, RIGHT):
            return {}, [*errors, error("side", f"side must be LEFT or RIGHT, got {side!r}", code="invalid", **where)]
        if not isinstance(line, int) or isinstance(line, bool):
            return {}, [*errors, error("line", "Line could not be resolved", code="invalid", **where, line=line)]
        where.update(line=line, side=side)
        if not fd.is_commentable(line, side):
            return {}, [*errors, error("line", "Pull request review thread line must be part of the diff", **where)]
        start_line = spec.get("start_line")
        start_side = spec.get("start_side") or side
        if start_line is not None:
            wrong = _start_line_problem(fd, line, side, start_line, start_side)
            if wrong is not None:
                code = "invalid" if wrong.startswith("start_line") else "custom"
                errors.append(error("start_line", wrong, code=code, **where, start_line=start_line))
        return {
            "path": path,
            "body": body,
            "line": line,
            "side": side,
            "start_line": start_line,
            "start_side": start_side if start_line is not None else None,
        }, errors

    def _identity_user(self, ctx: Context) -> dict:
        if ctx.identity is None:
            raise HTTPError(401, "Requires authentication")
        return self._user({"login": ctx.identity["login"], "type": ctx.identity.get("type", "User")})

    def _create_comment(self, ctx: Context, owner: str, repo: str, number: str) -> Answer:
        full = f"{owner}/{repo}"
        record = self._repo(full)
        pull = self._pull(record, number)
        body = ctx.body if isinstance(ctx.body, dict) else {}
        user = self._identity_user(ctx)
        if body.get("in_reply_to") is not None:
            return self._reply(ctx, record, pull, body.get("in_reply_to"), body.get("body"), user)
        commit_id = body.get("commit_id")
        if not commit_id:
            raise HTTPError(422, 'Invalid request.\n\n"commit_id" wasn\'t supplied.')
        if commit_id not in pull["shas"]:
            raise unprocessable("PullRequestReviewComment", "commit_id", "commit_id is not part of the pull request")
        spec, errors = self._validate_inline(full, pull, body, None)
        if errors:
            raise HTTPError(
                422,
                "Unprocessable Entity",
                errors,
                doc=f"{DOCS}/pulls/comments#create-a-review-comment-for-a-pull-request",
            )
        spec.update(commit_id=commit_id)
        comment = self._add_review_comment(record, pull, spec, "comment", identity=user)
        self._touch(pull)
        return Answer(201, self._render_review_comment(ctx, record, comment))

    def _reply(self, ctx: Context, record: dict, pull: dict, parent_id: Any, text: Any, user: dict) -> Answer:
        parent = record["review_comments"].get(str(parent_id))
        if parent is None or parent["pull"] != pull["number"]:
            raise HTTPError(404, "Not Found")
        if not isinstance(text, str) or not text:
            raise unprocessable("PullRequestReviewComment", "body", code="missing_field")
        comment = self._add_review_comment(
            record,
            pull,
            {"body": text, "in_reply_to_id": parent["id"], "commit_id": pull["head_sha"]},
            "reply",
            identity=user,
        )
        self._touch(pull)
        return Answer(201, self._render_review_comment(ctx, record, comment))

    def _create_reply(self, ctx: Context, owner: str, repo: str, number: str, comment_id: str) -> Answer:
        record = self._repo(f"{owner}/{repo}")
        pull = self._pull(record, number)
        body = ctx.body if isinstance(ctx.body, dict) else {}
        return self._reply(ctx, record, pull, comment_id, body.get("body"), self._identity_user(ctx))

    def _list_reviews(self, ctx: Context, owner: str, repo: str, number: str) -> Answer:
        record = self._repo(f"{owner}/{repo}")
        pull = self._pull(record, number)
        reviews = [r for r in record["reviews"].values() if r["pull"] == pull["number"]]
        return self._page(ctx, reviews, lambda r: self._render_review(ctx, record, r))

    def _get_review(self, ctx: Context, owner: str, repo: str, number: str, review_id: str) -> Answer:
        record = self._repo(f"{owner}/{repo}")
        pull = self._pull(record, number)
        review = record["reviews"].get(review_id)
        if review is None or review["pull"] != pull["number"]:
            raise not_found()
        return Answer(200, self._render_review(ctx, record, review))

    def _create_review(self, ctx: Context, owner: str, repo: str, number: str) -> Answer:
        """All or nothing, like GitHub: one bad inline comment fails the review with 422."""
        full = f"{owner}/{repo}"
        record = self._repo(full)
        pull = self._pull(record, number)
        doc = f"{DOCS}/pulls/reviews#create-a-review-for-a-pull-request"
        body = ctx.body if ctx.body is not None else {}
        if not isinstance(body, dict):
            raise HTTPError(400, "Problems parsing JSON")
        user = self._identity_user(ctx)
        event = body.get("event")
        states = {
            "APPROVE": "APPROVED",
            "REQUEST_CHANGES": "CHANGES_REQUESTED",
            "COMMENT": "COMMENTED",
            None: "PENDING",
        }
        if event not in states:
            raise unprocessable("PullRequestReview", "event", f"Invalid event {event!r}", doc=doc)
        commit_id = body.get("commit_id") or pull["head_sha"]
        if commit_id not in pull["shas"]:
            raise HTTPError(422, "Unprocessable Entity", ["Commit could not be resolved"], doc=doc)
        comments = body.get("comments") or []
        if not isinstance(comments, list):
            raise unprocessable("PullRequestReview", "comments", "comments must be a list", doc=doc)
        text = body.get("body") or ""
        if event == "REQUEST_CHANGES" and not text:
            raise HTTPError(422, "Unprocessable Entity", ["Review Body can't be blank"], doc=doc)
        if event == "COMMENT" and not text and not comments:
            raise HTTPError(422, "Unprocessable Entity", ["Review Body can't be blank"], doc=doc)
        normalised, errors = [], []
        for index, spec in enumerate(comments):
            norm, errs = self._validate_inline(full, pull, spec, index)
            normalised.append(norm)
            errors += errs
        if errors:
            raise HTTPError(422, "Unprocessable Entity", errors, doc=doc)
        review = self._add_review(record, pull, user, text, states[event], commit_id)
        for index, norm in enumerate(normalised):
            self._add_review_comment(
                record,
                pull,
                dict(norm, commit_id=commit_id),
                f"comments[{index}]",
                review_id=review["id"],
                identity=user,
            )
        self._touch(pull)
        return Answer(200, self._render_review(ctx, record, review))

    def _touch(self, pull: dict) -> None:
        pull["updated_at"] = iso(now())
        self._save()

    def _issue_comments(self, ctx: Context, owner: str, repo: str, number: str) -> Answer:
        record = self._repo(f"{owner}/{repo}")
        pull = self._pull(record, number)
        comments = [c for c in record["issue_comments"].values() if c["issue"] == pull["number"]]
        if ctx.query.get("since"):
            floor = parse_time(ctx.query["since"], "since")
            comments = [c for c in comments if parse_time(c["updated_at"], "updated_at") >= floor]
        return self._page(ctx, comments, lambda c: self._render_issue_comment(ctx, record, c))

    def _create_issue_comment(self, ctx: Context, owner: str, repo: str, number: str) -> Answer:
        record = self._repo(f"{owner}/{repo}")
        pull = self._pull(record, number)
        body = ctx.body if isinstance(ctx.body, dict) else {}
        if not isinstance(body.get("body"), str) or not body["body"]:
            raise unprocessable("IssueComment", "body", code="missing_field")
        comment = self._add_issue_comment(record, pull, self._identity_user(ctx), body["body"])
        self._touch(pull)
        return Answer(201, self._render_issue_comment(ctx, record, comment))

    def _comment_for_reactions(self, owner: str, repo: str, comment_id: str) -> tuple[dict, dict]:
        record = self._repo(f"{owner}/{repo}")
        comment = record["review_comments"].get(comment_id)
        if comment is None:
            raise not_found()
        return record, comment

    def _list_reactions(self, ctx: Context, owner: str, repo: str, comment_id: str) -> Answer:
        _, comment = self._comment_for_reactions(owner, repo, comment_id)
        reactions = comment["reactions"]
        if ctx.query.get("content"):
            reactions = [r for r in reactions if r["content"] == ctx.query["content"]]
        return self._page(ctx, reactions, lambda r: self._render_reaction(ctx, r))

    def _add_reaction(self, ctx: Context, owner: str, repo: str, comment_id: str) -> Answer:
        _, comment = self._comment_for_reactions(owner, repo, comment_id)
        return self._react(ctx, comment, (ctx.body or {}).get("content") if isinstance(ctx.body, dict) else None)

    def _issue_comment_for_reactions(self, owner: str, repo: str, comment_id: str) -> dict:
        comment = self._repo(f"{owner}/{repo}")["issue_comments"].get(comment_id)
        if comment is None:
            raise not_found()
        comment.setdefault("reactions", [])
        return comment

    def _list_issue_reactions(self, ctx: Context, owner: str, repo: str, comment_id: str) -> Answer:
        reactions = self._issue_comment_for_reactions(owner, repo, comment_id)["reactions"]
        if ctx.query.get("content"):
            reactions = [r for r in reactions if r["content"] == ctx.query["content"]]
        return self._page(ctx, reactions, lambda r: self._render_reaction(ctx, r))

    def _add_issue_reaction(self, ctx: Context, owner: str, repo: str, comment_id: str) -> Answer:
        comment = self._issue_comment_for_reactions(owner, repo, comment_id)
        return self._react(ctx, comment, (ctx.body or {}).get("content") if isinstance(ctx.body, dict) else None)

    def _react(self, ctx: Context, comment: dict, content: Any) -> Answer:
        if content not in REACTIONS:
            raise unprocessable("Reaction", "content", f"content must be one of {', '.join(REACTIONS)}")
        user = self._identity_user(ctx)
        for existing in comment["reactions"]:
            if existing["content"] == content and existing["user"]["login"] == user["login"]:
                return Answer(200, self._render_reaction(ctx, existing))
        reaction = {"id": self._new_id(), "content": content, "user": user, "created_at": iso(now())}
        comment["reactions"].append(reaction)
        self._save()
        return Answer(201, self._render_reaction(ctx, reaction))

    def _compare(self, ctx: Context, owner: str, repo: str, basehead: str) -> Answer:
        """``GET /repos/{o}/{r}/compare/{base}...{head}`` between two heads of one pull request (or
        its base and a head): ``status`` ahead/behind/identical and the files that differ. A sha no
        pull request still has (a force-push dropped it) answers 404, as GitHub does for a commit
        it cannot find."""
        full = f"{owner}/{repo}"
        record = self._repo(full)
        base, sep, head = basehead.partition("...")
        if not sep or not base or not head:
            raise not_found()
        for pull in record["pulls"].values():
            snapshots = pull.get("snapshots") or {}
            order = [pull["base_sha"], *snapshots]
            if head not in snapshots or base not in order:
                continue
            i, j = order.index(base), order.index(head)
            ahead, behind = max(j - i, 0), max(i - j, 0)
            if i == 0:
                files = []
                for f in snapshots[head]:
                    fd = parse_patch(f["patch"], f["filename"], status=diff_status(f["status"]))
                    files.append(
                        {
                            "filename": f["filename"],
                            "status": f["status"],
                            "patch": f["patch"],
                            "additions": fd.added,
                            "deletions": fd.removed,
                            "changes": fd.added + fd.removed,
                        }
                    )
            else:
                files = self._compare_files(full, pull, base, head)
            status = "identical" if ahead == behind == 0 else "ahead" if behind == 0 else "behind"
            api = f"{ctx.api}/repos/{full}"
            out = {
                "url": f"{api}/compare/{base}...{head}",
                "html_url": f"{ctx.web}/{full}/compare/{base}...{head}",
                "base_commit": {"sha": base, "url": f"{api}/commits/{base}"},
                "merge_base_commit": {"sha": order[min(i, j)], "url": f"{api}/commits/{order[min(i, j)]}"},
                "status": status,
                "ahead_by": ahead,
                "behind_by": behind,
                "total_commits": ahead,
                "commits": [
                    {"sha": sha, "url": f"{api}/commits/{sha}", "commit": {"message": f"commit {sha[:7]}"}}
                    for sha in order[i + 1 : j + 1]
                ],
                "files": [
                    dict(
                        f,
                        sha=fake_sha(full, head, f["filename"]),
                        blob_url=f"{ctx.web}/{full}/blob/{head}/{quote(f['filename'])}",
                    )
                    for f in files
                ],
            }
            return Answer(200, out)
        raise not_found()

    def _permission(self, ctx: Context, owner: str, repo: str, username: str) -> Answer:
        """A collaborator's permission: seeded ``collaborators``, the owner is admin, anyone else
        reads a public repository (``none`` on a private one); an unknown login is 404."""
        record = self._repo(f"{owner}/{repo}")
        if username not in self._state["users"]:
            raise HTTPError(404, f"{username} is not a user")
        permission = (record.get("collaborators") or {}).get(username)
        if permission is None:
            permission = "admin" if username == record["owner"] else ("none" if record["private"] else "read")
        legacy = {"maintain": "write", "triage": "read"}.get(permission, permission)
        user = self._render_user(ctx, {"login": username})
        user["permissions"] = {
            "admin": legacy == "admin",
            "maintain": permission in ("admin", "maintain"),
            "push": legacy in ("admin", "write"),
            "triage": legacy != "none",
            "pull": legacy != "none",
        }
        user["role_name"] = permission
        return Answer(200, {"permission": legacy, "role_name": permission, "user": user})

    def _graphql(self, ctx: Context) -> Answer:
        from revbot.dev.github_sim_graphql import execute

        if ctx.identity is None:
            raise HTTPError(401, "This endpoint requires you to be authenticated.")
        if ctx.identity.get("graphql") is False:
            raise HTTPError(403, "Resource not accessible by personal access token")
        return Answer(200, execute(self, ctx.identity, ctx.web, ctx.body))

    def _branch_of(self, record: dict, ref: str) -> tuple[str, dict | None]:
        """(branch, PR whose head it is) for a branch name or a known commit sha."""
        for pull in record["pulls"].values():
            if ref == pull["head"] or ref in pull["shas"]:
                return pull["head"], pull
            if ref == pull["base_sha"]:
                return pull["base"], None
        return ref, None

    def _get_contents(self, ctx: Context, owner: str, repo: str, path: str) -> Answer:
        full = f"{owner}/{repo}"
        record = self._repo(full)
        ref = ctx.query.get("ref") or record["default_branch"]
        branch, pull = self._branch_of(record, ref)
        known = (
            branch in record["files"]
            or branch == record["default_branch"]
            or pull is not None
            or any(p["base"] == branch for p in record["pulls"].values())
        )
        if not known:
            raise HTTPError(404, f"No commit found for the ref {ref}")
        content = record["files"].get(branch, {}).get(path)
        if content is None and pull is not None:
            deleted = any(f["filename"] == path and f["status"] == "removed" for f in pull["files"])
            if not deleted:
                content = record["files"].get(pull["base"], {}).get(path)
        if content is None:
            raise not_found()
        accept = (ctx.headers.get("Accept") or "").lower()
        if "raw" in accept:
            return Answer(200, content, content_type="text/plain; charset=utf-8")
        encoded = base64.b64encode(content.encode()).decode()
        api = f"{ctx.api}/repos/{full}/contents/{quote(path)}?ref={quote(ref)}"
        sha = blob_sha(content)
        html = f"{ctx.web}/{full}/blob/{quote(ref)}/{quote(path)}"
        return Answer(
            200,
            {
                "type": "file",
                "encoding": "base64",
                "size": len(content.encode()),
                "name": path.rsplit("/", 1)[-1],
                "path": path,
                "content": "\n".join(encoded[i : i + 60] for i in range(0, len(encoded), 60)) + "\n",
                "sha": sha,
                "url": api,
                "git_url": f"{ctx.api}/repos/{full}/git/blobs/{sha}",
                "html_url": html,
                "download_url": f"{ctx.web}/{full}/raw/{quote(ref)}/{quote(path)}",
                "_links": {"self": api, "git": f"{ctx.api}/repos/{full}/git/blobs/{sha}", "html": html},
            },
        )

    def _get_rate_limit(self, ctx: Context) -> Answer:
        self._roll_rate_window()
        core = self._rate_view()
        other = {"limit": 30, "remaining": 30, "reset": core["reset"], "used": 0}
        return Answer(
            200,
            {
                "resources": {
                    "core": core,
                    "search": dict(other, resource="search"),
                    "graphql": dict(core, resource="graphql"),
                },
                "rate": core,
            },
        )

    def _get_user(self, ctx: Context) -> Answer:
        if ctx.identity is None:
            raise HTTPError(401, "Requires authentication")
        if ctx.identity.get("installation"):
            raise HTTPError(403, "Resource not accessible by integration")
        user = self._identity_user(ctx)
        out = self._render_user(ctx, user)
        out.update(
            {
                "name": None,
                "company": None,
                "blog": "",
                "location": None,
                "email": None,
                "hireable": None,
                "bio": None,
                "twitter_username": None,
                "public_repos": 0,
                "public_gists": 0,
                "followers": 0,
                "following": 0,
                "created_at": "2020-01-01T00:00:00Z",
                "updated_at": "2020-01-01T00:00:00Z",
            }
        )
        return Answer(200, out)

    def _get_app(self, ctx: Context) -> Answer:
        app = ctx.identity["app"]  # type: ignore[index]
        return Answer(
            200,
            {
                "id": app["id"],
                "slug": app["slug"],
                "node_id": node_id("Integration", app["id"]),
                "name": app["slug"],
                "description": "",
                "external_url": ctx.web,
                "html_url": f"{ctx.web}/apps/{app['slug']}",
                "created_at": "2020-01-01T00:00:00Z",
                "updated_at": "2020-01-01T00:00:00Z",
                "permissions": {"pull_requests": "write", "contents": "read", "metadata": "read"},
                "events": ["pull_request"],
                "owner": self._render_user(ctx, self._user(app["slug"] + "-owner")),
            },
        )

    def _access_token(self, ctx: Context, installation_id: str) -> Answer:
        app = ctx.identity["app"]  # type: ignore[index]
        if app["installations"] and int(installation_id) not in app["installations"]:
            raise not_found()
        token = "ghs_" + secrets.token_urlsafe(27).replace("-", "a").replace("_", "b")[:36]
        expires = time.time() + app.get("token_ttl", 3600)
        bot = self._user({"login": f"{app['slug']}[bot]", "type": "Bot"})
        self._state["tokens"][digest(token)] = {
            "login": bot["login"],
            "type": "Bot",
            "permission": "write",
            "installation": int(installation_id),
            "expires_at": expires,
        }
        self._stats["tokens_issued"] += 1
        self._save()
        return Answer(
            201,
            {
                "token": token,
                "expires_at": iso(datetime.fromtimestamp(int(expires), UTC)),
                "permissions": {"pull_requests": "write", "contents": "read", "metadata": "read"},
                "repository_selection": "all",
            },
        )


def _label(index: int | None) -> str:
    return f"comments[{index}]" if index is not None else "comment"


def _inline_error(index: int | None, field_name: str, message: str, code: str = "custom", **where: Any) -> dict:
    """GitHub's error item for one inline comment of a review (``index``) or a single comment."""
    out = {
        "resource": "PullRequestReviewComment",
        "code": code,
        "field": f"{_label(index)}.{field_name}" if index is not None else field_name,
        "message": message,
    }
    if index is not None:
        out["index"] = index
    out.update(where)
    return out


def _start_line_problem(fd: Any, line: int, side: str, start_line: Any, start_side: str) -> str | None:
    """What is wrong with a multi-line comment's start, as GitHub words it, or None."""
    if not isinstance(start_line, int) or start_line >= line and start_side == side:
        return "start_line must precede the end line"
    if not fd.is_commentable(start_line, start_side) or fd.hunk_for(start_line, start_side) is not fd.hunk_for(
        line, side
    ):
        return "Pull request review thread start line must be part of the same hunk as the line"
    return None


# --------------------------------------------------------------------------- routing


@dataclass(frozen=True)
class Route:
    method: str
    template: str
    pattern: re.Pattern[str]
    handler: Callable[..., Answer]
    write: bool = False
    jwt: bool = False
    spends: bool = True


def route(method: str, template: str, handler: Callable[..., Answer], **flags: bool) -> Route:
    regex = "^" + re.sub(r"\\\{(\w+)\\\}", lambda m: f"(?P<{m.group(1)}>[^/]+)", re.escape(template)) + "$"
    for numeric in ("pull_number", "issue_number", "comment_id", "review_id", "installation_id"):
        regex = regex.replace(f"(?P<{numeric}>[^/]+)", rf"(?P<{numeric}>\d+)")
    regex = regex.replace("(?P<path>[^/]+)", "(?P<path>.+)")
    return Route(method, template, re.compile(regex), handler, **flags)


_R = "/repos/{owner}/{repo}"
ROUTES = [
    route("GET", _R + "/pulls/comments", SimRoutes._repo_comments),
    route("GET", _R + "/pulls/comments/{comment_id}", SimRoutes._get_comment),
    route("GET", _R + "/pulls/comments/{comment_id}/reactions", SimRoutes._list_reactions),
    route("POST", _R + "/pulls/comments/{comment_id}/reactions", SimRoutes._add_reaction, write=True),
    route("GET", _R, SimRoutes._get_repo),
    route("GET", _R + "/pulls", SimRoutes._list_pulls),
    route("GET", _R + "/pulls/{pull_number}", SimRoutes._get_pull),
    route("GET", _R + "/pulls/{pull_number}/files", SimRoutes._pull_files),
    route("GET", _R + "/pulls/{pull_number}/comments", SimRoutes._pull_comments),
    route("POST", _R + "/pulls/{pull_number}/comments", SimRoutes._create_comment, write=True),
    route("POST", _R + "/pulls/{pull_number}/comments/{comment_id}/replies", SimRoutes._create_reply, write=True),
    route("GET", _R + "/pulls/{pull_number}/reviews", SimRoutes._list_reviews),
    route("POST", _R + "/pulls/{pull_number}/reviews", SimRoutes._create_review, write=True),
    route("GET", _R + "/pulls/{pull_number}/reviews/{review_id}", SimRoutes._get_review),
    route("GET", _R + "/issues/{issue_number}/comments", SimRoutes._issue_comments),
    route("POST", _R + "/issues/{issue_number}/comments", SimRoutes._create_issue_comment, write=True),
    route("GET", _R + "/issues/comments/{comment_id}/reactions", SimRoutes._list_issue_reactions),
    route("POST", _R + "/issues/comments/{comment_id}/reactions", SimRoutes._add_issue_reaction, write=True),
    route("GET", _R + "/compare/{basehead}", SimRoutes._compare),
    route("GET", _R + "/collaborators/{username}/permission", SimRoutes._permission),
    route("POST", "/graphql", SimRoutes._graphql, spends=False),
    route("GET", _R + "/contents/{path}", SimRoutes._get_contents),
    route("GET", "/rate_limit", SimRoutes._get_rate_limit, spends=False),
    route("GET", "/user", SimRoutes._get_user),
    route("GET", "/app", SimRoutes._get_app, jwt=True, spends=False),
    route(
        "POST",
        "/app/installations/{installation_id}/access_tokens",
        SimRoutes._access_token,
        jwt=True,
        spends=False,
    ),
]


def match_route(method: str, path: str) -> tuple[Route | None, dict]:
    for route in ROUTES:
        if route.method == method:
            m = route.pattern.match(path)
            if m:
                params = m.groupdict()
                if "pull_number" in params:
                    params["number"] = params.pop("pull_number")
                if "issue_number" in params:
                    params["number"] = params.pop("issue_number")
                return route, params
    return None, {}
