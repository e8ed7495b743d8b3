"""The GitHub simulator's renderers: records in GitHub's JSON shapes, with paging `Link` headers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlencode

from revbot.dev.github_sim_base import (
    REACTIONS,
    Answer,
    Context,
    HTTPError,
    fake_sha,
    node_id,
)


class SimRenderer:
    """Records in GitHub's JSON shapes of ``GitHubSimulator``, which mixes this class in; its
    methods share the simulator's state and lock."""

    def _page(self, ctx: Context, items: list, render: Callable[[Any], Any]) -> Answer:
        """GitHub paging: per_page (default 30, at most 100), page, Link with first/prev/next/last."""
        try:
            per_page = min(max(int(ctx.query.get("per_page", 30)), 1), 100)
            page = max(int(ctx.query.get("page", 1)), 1)
        except ValueError as exc:
            raise HTTPError(422, "Invalid page or per_page parameter") from exc
        last = max((len(items) + per_page - 1) // per_page, 1)
        chunk = items[(page - 1) * per_page : page * per_page]
        links = []

        def link(n: int, rel: str) -> str:
            query = dict(ctx.query, per_page=str(per_page), page=str(n))
            return f'<{ctx.api}{quote(ctx.path)}?{urlencode(query)}>; rel="{rel}"'

        if page > 1:
            links.append(link(min(page - 1, last), "prev"))
        if page < last:
            links += [link(page + 1, "next"), link(last, "last")]
        if page > 1:
            links.append(link(1, "first"))
        headers = {"Link": ", ".join(links)} if links else {}
        return Answer(200, [render(x) for x in chunk], headers)

    # ----------------------------------------------------------------- renderers (GitHub's shapes)

    def _render_user(self, ctx: Context, user: dict) -> dict:
        login = user["login"]
        uid = self._state["users"].get(login, {}).get("id", 1)
        base = f"{ctx.api}/users/{login}"
        kind = user.get("type") or self._state["users"].get(login, {}).get("type", "User")
        return {
            "login": login,
            "id": uid,
            "node_id": node_id("Bot" if kind == "Bot" else "User", uid),
            "avatar_url": f"{ctx.web}/_avatars/u/{uid}",
            "gravatar_id": "",
            "url": base,
            "html_url": f"{ctx.web}/{login}",
            "followers_url": f"{base}/followers",
            "following_url": f"{base}/following{{/other_user}}",
            "gists_url": f"{base}/gists{{/gist_id}}",
            "starred_url": f"{base}/starred{{/owner}}{{/repo}}",
            "subscriptions_url": f"{base}/subscriptions",
            "organizations_url": f"{base}/orgs",
            "repos_url": f"{base}/repos",
            "events_url": f"{base}/events{{/privacy}}",
            "received_events_url": f"{base}/received_events",
            "type": kind,
            "user_view_type": "public",
            "site_admin": False,
        }

    def _render_repo(self, ctx: Context, repo: dict) -> dict:
        full = f"{repo['owner']}/{repo['name']}"
        api = f"{ctx.api}/repos/{full}"
        owner = self._render_user(ctx, {"login": repo["owner"]})
        n_open = sum(1 for p in repo["pulls"].values() if p["state"] == "open")
        out: dict[str, Any] = {
            "id": repo["id"],
            "node_id": node_id("Repository", repo["id"]),
            "name": repo["name"],
            "full_name": full,
            "private": repo["private"],
            "owner": owner,
            "html_url": f"{ctx.web}/{full}",
            "description": repo["description"],
            "fork": False,
            "url": api,
        }
        for key, suffix in _REPO_URLS:
            out[key] = api + suffix
        out.update(
            {
                "created_at": repo["created_at"],
                "updated_at": repo["created_at"],
                "pushed_at": repo["created_at"],
                "git_url": f"git://127.0.0.1/{full}.git",
                "ssh_url": f"git@127.0.0.1:{full}.git",
                "clone_url": f"{ctx.web}/{full}.git",
                "svn_url": f"{ctx.web}/{full}",
            }
        )
        # the settings every simulated repository shares; the placeholders are filled in here
        out.update(
            _REPO_SETTINGS,
            open_issues_count=n_open,
            visibility="private" if repo["private"] else "public",
            open_issues=n_open,
            default_branch=repo["default_branch"],
            permissions=dict(_REPO_SETTINGS["permissions"]),
            security_and_analysis={k: dict(v) for k, v in _REPO_SETTINGS["security_and_analysis"].items()},
            topics=[],
            custom_properties={},
        )
        if self._state["users"].get(repo["owner"], {}).get("type") == "Organization":
            out["organization"] = owner
        return out

    def _association(self, repo: dict, login: str) -> str:
        if login == repo["owner"]:
            return "OWNER"
        if any(p["user"]["login"] == login for p in repo["pulls"].values()):
            return "CONTRIBUTOR"
        return "NONE"

    def _render_pull(self, ctx: Context, repo: dict, pull: dict, listing: bool = False) -> dict:
        full = f"{repo['owner']}/{repo['name']}"
        api = f"{ctx.api}/repos/{full}"
        n = pull["number"]
        html = f"{ctx.web}/{full}/pull/{n}"
        repo_json = self._render_repo(ctx, repo)
        owner = self._render_user(ctx, {"login": repo["owner"]})

        def ref(branch: str, sha: str) -> dict:
            return {"label": f"{repo['owner']}:{branch}", "ref": branch, "sha": sha, "user": owner, "repo": repo_json}

        out = {
            "url": f"{api}/pulls/{n}",
            "id": pull["id"],
            "node_id": node_id("PullRequest", pull["id"]),
            "html_url": html,
            "diff_url": f"{html}.diff",
            "patch_url": f"{html}.patch",
            "issue_url": f"{api}/issues/{n}",
            "number": n,
            "state": pull["state"],
            "locked": pull["locked"],
            "title": pull["title"],
            "user": self._render_user(ctx, pull["user"]),
            "body": pull["body"],
            "created_at": pull["created_at"],
            "updated_at": pull["updated_at"],
            "closed_at": pull["closed_at"],
            "merged_at": pull["merged_at"],
            "merge_commit_sha": fake_sha(full, n, "merge", pull["head_sha"]),
            "assignee": None,
            "assignees": [],
            "requested_reviewers": [],
            "requested_teams": [],
            "labels": [],
            "milestone": None,
            "draft": pull["draft"],
            "commits_url": f"{api}/pulls/{n}/commits",
            "review_comments_url": f"{api}/pulls/{n}/comments",
            "review_comment_url": f"{api}/pulls/comments{{/number}}",
            "comments_url": f"{api}/issues/{n}/comments",
            "statuses_url": f"{api}/statuses/{pull['head_sha']}",
            "head": ref(pull["head"], pull["head_sha"]),
            "base": ref(pull["base"], pull["base_sha"]),
            "_links": {
                "self": {"href": f"{api}/pulls/{n}"},
                "html": {"href": html},
                "issue": {"href": f"{api}/issues/{n}"},
                "comments": {"href": f"{api}/issues/{n}/comments"},
                "review_comments": {"href": f"{api}/pulls/{n}/comments"},
                "review_comment": {"href": f"{api}/pulls/comments{{/number}}"},
                "commits": {"href": f"{api}/pulls/{n}/commits"},
                "statuses": {"href": f"{api}/statuses/{pull['head_sha']}"},
            },
            "author_association": self._association(repo, pull["user"]["login"]),
            "auto_merge": None,
            "active_lock_reason": None,
        }
        if listing:  # GitHub's list items stop here; the counts below cost a pass over the comments
            return out
        diffs = self._file_diffs(full, pull)
        closed = pull["state"] == "closed"
        out.update(
            {
                "merged": pull["merged"],
                "mergeable": None if closed else True,
                "rebaseable": None if closed else True,
                "mergeable_state": "unknown" if closed else "clean",
                "merged_by": None,
                "comments": sum(1 for c in repo["issue_comments"].values() if c["issue"] == n),
                "review_comments": len(self._visible_comments(repo, n)),
                "maintainer_can_modify": False,
                "commits": len(pull["shas"]),
                "additions": sum(fd.added for fd in diffs.values()),
                "deletions": sum(fd.removed for fd in diffs.values()),
                "changed_files": len(pull["files"]),
            }
        )
        return out

    def _render_file(self, ctx: Context, repo: dict, pull: dict, entry: dict) -> dict:
        full = f"{repo['owner']}/{repo['name']}"
        fd = self._file_diffs(full, pull)[entry["filename"]]
        sha = pull["head_sha"]
        path = quote(entry["filename"])
        out = {
            "sha": fake_sha(full, sha, entry["filename"]),
            "filename": entry["filename"],
            "status": entry["status"],
            "additions": fd.added,
            "deletions": fd.removed,
            "changes": fd.added + fd.removed,
            "blob_url": f"{ctx.web}/{full}/blob/{sha}/{path}",
            "raw_url": f"{ctx.web}/{full}/raw/{sha}/{path}",
            "contents_url": f"{ctx.api}/repos/{full}/contents/{path}?ref={sha}",
        }
        if entry["patch"] is not None:
            out["patch"] = entry["patch"]
        if entry["previous_filename"]:
            out["previous_filename"] = entry["previous_filename"]
        return out

    def _render_review_comment(self, ctx: Context, repo: dict, c: dict) -> dict:
        full = f"{repo['owner']}/{repo['name']}"
        api = f"{ctx.api}/repos/{full}"
        html = f"{ctx.web}/{full}/pull/{c['pull']}#discussion_r{c['id']}"
        out = {
            "url": f"{api}/pulls/comments/{c['id']}",
            "pull_request_review_id": c["review_id"],
            "id": c["id"],
            "node_id": node_id("PullRequestReviewComment", c["id"]),
            "diff_hunk": c["diff_hunk"],
            "path": c["path"],
            "commit_id": c["commit_id"],
            "original_commit_id": c["original_commit_id"],
            "user": self._render_user(ctx, c["user"]),
            "body": c["body"],
            "created_at": c["created_at"],
            "updated_at": c["updated_at"],
            "html_url": html,
            "pull_request_url": f"{api}/pulls/{c['pull']}",
            "author_association": c["author_association"] or self._association(repo, c["user"]["login"]),
            "_links": {
                "self": {"href": f"{api}/pulls/comments/{c['id']}"},
                "html": {"href": html},
                "pull_request": {"href": f"{api}/pulls/{c['pull']}"},
            },
            "reactions": self._rollup(f"{api}/pulls/comments/{c['id']}/reactions", c["reactions"]),
            "start_line": c["start_line"],
            "original_start_line": c["original_start_line"],
            "start_side": c["start_side"],
            "line": c["line"],
            "original_line": c["original_line"],
            "side": c["side"],
            "original_position": c["position"],
            "position": c["position"],
            "subject_type": c["subject_type"],
        }
        if c["in_reply_to_id"] is not None:
            out["in_reply_to_id"] = c["in_reply_to_id"]
        return out

    @staticmethod
    def _rollup(url: str, reactions: list[dict]) -> dict:
        out: dict[str, Any] = {"url": url, "total_count": len(reactions)}
        for content in REACTIONS:
            out[content] = sum(1 for r in reactions if r["content"] == content)
        return out

    def _render_review(self, ctx: Context, repo: dict, r: dict) -> dict:
        full = f"{repo['owner']}/{repo['name']}"
        html = f"{ctx.web}/{full}/pull/{r['pull']}#pullrequestreview-{r['id']}"
        pr_url = f"{ctx.api}/repos/{full}/pulls/{r['pull']}"
        out = {
            "id": r["id"],
            "node_id": node_id("PullRequestReview", r["id"]),
            "user": self._render_user(ctx, r["user"]),
            "body": r["body"],
            "state": r["state"],
            "html_url": html,
            "pull_request_url": pr_url,
            "author_association": self._association(repo, r["user"]["login"]),
            "_links": {"html": {"href": html}, "pull_request": {"href": pr_url}},
            "commit_id": r["commit_id"],
        }
        if r["submitted_at"]:
            out["submitted_at"] = r["submitted_at"]
        return out

    def _render_issue_comment(self, ctx: Context, repo: dict, c: dict) -> dict:
        full = f"{repo['owner']}/{repo['name']}"
        api = f"{ctx.api}/repos/{full}"
        return {
            "url": f"{api}/issues/comments/{c['id']}",
            "html_url": f"{ctx.web}/{full}/pull/{c['issue']}#issuecomment-{c['id']}",
            "issue_url": f"{api}/issues/{c['issue']}",
            "id": c["id"],
            "node_id": node_id("IssueComment", c["id"]),
            "user": self._render_user(ctx, c["user"]),
            "created_at": c["created_at"],
            "updated_at": c["updated_at"],
            "author_association": self._association(repo, c["user"]["login"]),
            "body": c["body"],
            "reactions": self._rollup(f"{api}/issues/comments/{c['id']}/reactions", c.get("reactions") or []),
            "performed_via_github_app": None,
        }

    def _render_reaction(self, ctx: Context, r: dict) -> dict:
        return {
            "id": r["id"],
            "node_id": node_id("Reaction", r["id"]),
            "user": self._render_user(ctx, r["user"]),
            "content": r["content"],
            "created_at": r["created_at"],
        }

    def _visible_comments(self, repo: dict, number: int) -> list[dict]:
        pending = {r["id"] for r in repo["reviews"].values() if r["state"] == "PENDING"}
        return [c for c in repo["review_comments"].values() if c["pull"] == number and c["review_id"] not in pending]


_REPO_URLS = [
    ("forks_url", "/forks"),
    ("keys_url", "/keys{/key_id}"),
    ("collaborators_url", "/collaborators{/collaborator}"),
    ("teams_url", "/teams"),
    ("hooks_url", "/hooks"),
    ("issue_events_url", "/issues/events{/number}"),
    ("events_url", "/events"),
    ("assignees_url", "/assignees{/user}"),
    ("branches_url", "/branches{/branch}"),
    ("tags_url", "/tags"),
    ("blobs_url", "/git/blobs{/sha}"),
    ("git_tags_url", "/git/tags{/sha}"),
    ("git_refs_url", "/git/refs{/sha}"),
    ("trees_url", "/git/trees{/sha}"),
    ("statuses_url", "/statuses/{sha}"),
    ("languages_url", "/languages"),
    ("stargazers_url", "/stargazers"),
    ("contributors_url", "/contributors"),
    ("subscribers_url", "/subscribers"),
    ("subscription_url", "/subscription"),
    ("commits_url", "/commits{/sha}"),
    ("git_commits_url", "/git/commits{/sha}"),
    ("comments_url", "/comments{/number}"),
    ("issue_comment_url", "/issues/comments{/number}"),
    ("contents_url", "/contents/{+path}"),
    ("compare_url", "/compare/{base}...{head}"),
    ("merges_url", "/merges"),
    ("archive_url", "/{archive_format}{/ref}"),
    ("downloads_url", "/downloads"),
    ("issues_url", "/issues{/number}"),
    ("pulls_url", "/pulls{/number}"),
    ("milestones_url", "/milestones{/number}"),
    ("notifications_url", "/notifications{?since,all,participating}"),
    ("labels_url", "/labels{/name}"),
    ("releases_url", "/releases{/id}"),
    ("deployments_url", "/deployments"),
]


_REPO_SETTINGS: dict[str, Any] = {
    "homepage": None,
    "size": 0,
    "stargazers_count": 0,
    "watchers_count": 0,
    "language": None,
    "has_issues": True,
    "has_projects": True,
    "has_downloads": True,
    "has_wiki": True,
    "has_pages": False,
    "has_discussions": False,
    "forks_count": 0,
    "mirror_url": None,
    "archived": False,
    "disabled": False,
    "open_issues_count": None,  # filled in per repository
    "license": None,
    "allow_forking": True,
    "is_template": False,
    "web_commit_signoff_required": False,
    "topics": [],
    "visibility": None,  # filled in per repository
    "forks": 0,
    "open_issues": None,  # filled in per repository
    "watchers": 0,
    "default_branch": None,  # filled in per repository
    "permissions": {"admin": False, "maintain": False, "push": True, "triage": True, "pull": True},
    "temp_clone_token": "",
    "allow_squash_merge": True,
    "allow_merge_commit": True,
    "allow_rebase_merge": True,
    "allow_auto_merge": False,
    "delete_branch_on_merge": False,
    "allow_update_branch": False,
    "use_squash_pr_title_as_default": False,
    "squash_merge_commit_message": "COMMIT_MESSAGES",
    "squash_merge_commit_title": "COMMIT_OR_PR_TITLE",
    "merge_commit_message": "PR_TITLE",
    "merge_commit_title": "MERGE_MESSAGE",
    "custom_properties": {},
    "security_and_analysis": {
        k: {"status": "disabled"}
        for k in (
            "secret_scanning",
            "secret_scanning_push_protection",
            "dependabot_security_updates",
            "secret_scanning_non_provider_patterns",
            "secret_scanning_validity_checks",
        )
    },
    "network_count": 0,
    "subscribers_count": 0,
}
