"""The GitHub simulator's GraphQL endpoint (``POST /graphql``): the part of GitHub's schema revbot
uses, executed by graphql-core, so a query is validated and answered field by field as GitHub
would (unknown fields are errors, only what was asked is returned).

Covered: ``viewer { login }``; ``repository(owner, name) { pullRequest(number) { reviewThreads }}``
with each thread's ``id``, ``isResolved``, ``isOutdated``, ``path``, ``line``, ``originalLine``,
``diffSide``, ``resolvedBy { login }`` and ``comments { nodes { id databaseId fullDatabaseId body
author { login } createdAt url } }`` (``databaseId`` is a 32-bit Int, so, as on GitHub, ids past
2**31 - 1 are an error there and ``fullDatabaseId``, a BigInt string, is the one to ask for) (connections take ``first``/``after`` and answer ``pageInfo``); the mutations
``resolveReviewThread`` and ``unresolveReviewThread``. A thread is a root review comment and its
replies; it is outdated when the push moved the code out from under its root (``line`` is null).

Errors are answered like GitHub: HTTP 200 with ``errors`` (each with a ``type`` such as
``NOT_FOUND`` or ``FORBIDDEN``) and ``data`` null where a field failed. A token seeded with
``"permission": "read"`` cannot resolve threads (FORBIDDEN), and one seeded with ``"graphql": false``
gets 403 from the endpoint itself, as a fine-grained token without GraphQL access would.
"""

from __future__ import annotations

import base64
from typing import Any

from graphql import GraphQLError, build_schema, graphql_sync

SDL = """
scalar BigInt
interface Actor { login: String! }
type User implements Actor { login: String! }
type Bot implements Actor { login: String! }
enum DiffSide { LEFT RIGHT }
type PageInfo { hasNextPage: Boolean! endCursor: String }
type PullRequestReviewComment {
  id: ID!
  databaseId: Int
  fullDatabaseId: BigInt
  body: String!
  author: Actor
  createdAt: String!
  url: String!
}
type PullRequestReviewCommentConnection {
  nodes: [PullRequestReviewComment]
  pageInfo: PageInfo!
  totalCount: Int!
}
type PullRequestReviewThread {
  id: ID!
  isResolved: Boolean!
  isOutdated: Boolean!
  path: String!
  line: Int
  originalLine: Int
  diffSide: DiffSide!
  resolvedBy: User
  comments(first: Int, after: String): PullRequestReviewCommentConnection!
}
type PullRequestReviewThreadConnection {
  nodes: [PullRequestReviewThread]
  pageInfo: PageInfo!
  totalCount: Int!
}
type PullRequest {
  id: ID!
  number: Int!
  reviewThreads(first: Int, after: String): PullRequestReviewThreadConnection!
}
type Repository {
  id: ID!
  name: String!
  nameWithOwner: String!
  pullRequest(number: Int!): PullRequest
}
type Query {
  viewer: User!
  repository(owner: String!, name: String!): Repository
}
input ResolveReviewThreadInput { threadId: ID! clientMutationId: String }
input UnresolveReviewThreadInput { threadId: ID! clientMutationId: String }
type ResolveReviewThreadPayload { thread: PullRequestReviewThread clientMutationId: String }
type UnresolveReviewThreadPayload { thread: PullRequestReviewThread clientMutationId: String }
type Mutation {
  resolveReviewThread(input: ResolveReviewThreadInput!): ResolveReviewThreadPayload
  unresolveReviewThread(input: UnresolveReviewThreadInput!): UnresolveReviewThreadPayload
}
"""

SCHEMA = build_schema(SDL)
THREAD_KIND = "PullRequestReviewThread"
MAX_PAGE = 100


class _Failure(GraphQLError):
    """A field error with GitHub's ``type`` (NOT_FOUND, FORBIDDEN...)."""

    def __init__(self, kind: str, message: str):
        super().__init__(message, extensions={"type": kind})


def thread_id(root_id: int) -> str:
    return base64.b64encode(f"0{len(THREAD_KIND)}:{THREAD_KIND}{root_id}".encode()).decode()


def root_of(node_id: str) -> int | None:
    """The root comment id a thread id names, or None when it names no thread."""
    try:
        text = base64.b64decode(node_id.encode(), validate=True).decode()
    except (ValueError, UnicodeDecodeError):
        return None
    prefix = f"0{len(THREAD_KIND)}:{THREAD_KIND}"
    rest = text[len(prefix) :] if text.startswith(prefix) else ""
    return int(rest) if rest.isdigit() else None


def _page(items: list[Any], first: int | None, after: str | None) -> dict:
    if first is not None and not 1 <= first <= MAX_PAGE:
        raise _Failure("INVALID_ARGUMENTS", f"`first` must be between 1 and {MAX_PAGE}")
    start = 0
    if after:
        try:
            start = int(base64.b64decode(after).decode().removeprefix("cursor:"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise _Failure("INVALID_CURSOR_ARGUMENTS", f"`{after}` does not appear to be a valid cursor.") from exc
    size = first or MAX_PAGE
    chunk = items[start : start + size]
    end = start + len(chunk)
    cursor = base64.b64encode(f"cursor:{end}".encode()).decode() if chunk else None
    return {
        "nodes": chunk,
        "pageInfo": {"hasNextPage": end < len(items), "endCursor": cursor},
        "totalCount": len(items),
    }


class GraphQLView:
    """One request's view of the simulator state (the caller holds the simulator's lock)."""

    def __init__(self, sim: Any, identity: dict, web: str):
        self.sim, self.identity, self.web = sim, identity, web

    def _actor(self, user: dict | None) -> dict | None:
        if not user:
            return None
        kind = user.get("type") or self.sim._state["users"].get(user["login"], {}).get("type", "User")
        return {"__typename": "Bot" if kind == "Bot" else "User", "login": user["login"]}

    def _comment(self, full: str, c: dict) -> dict:
        return {
            "id": base64.b64encode(f"PRRC_{c['id']}".encode()).decode(),
            "databaseId": c["id"],
            "fullDatabaseId": str(c["id"]),
            "body": c["body"],
            "author": self._actor(c["user"]),
            "createdAt": c["created_at"],
            "url": f"{self.web}/{full}/pull/{c['pull']}#discussion_r{c['id']}",
        }

    def _thread(self, full: str, repo: dict, root: dict) -> dict:
        replies = sorted(
            (c for c in repo["review_comments"].values() if c["in_reply_to_id"] == root["id"]),
            key=lambda c: (c["created_at"], c["id"]),
        )
        comments = [root, *replies]

        def thread_comments(_info: Any, first: int | None = None, after: str | None = None) -> dict:
            return _page([self._comment(full, c) for c in comments], first, after)

        resolver = root.get("resolved_by")
        return {
            "id": thread_id(root["id"]),
            "isResolved": bool(root.get("resolved")),
            "isOutdated": root["line"] is None and root.get("subject_type") != "file",
            "path": root["path"],
            "line": root["line"],
            "originalLine": root.get("original_line"),
            "diffSide": root["side"],
            "resolvedBy": self._actor(resolver) if resolver else None,
            "comments": thread_comments,
        }

    def _pull(self, full: str, repo: dict, pull: dict) -> dict:
        def review_threads(_info: Any, first: int | None = None, after: str | None = None) -> dict:
            roots = sorted(
                (c for c in self.sim._visible_comments(repo, pull["number"]) if c["in_reply_to_id"] is None),
                key=lambda c: c["id"],
            )
            return _page([self._thread(full, repo, r) for r in roots], first, after)

        return {
            "id": base64.b64encode(f"PR_{pull['id']}".encode()).decode(),
            "number": pull["number"],
            "reviewThreads": review_threads,
        }

    # ------------------------------------------------------------------ root fields

    def viewer(self, _info: Any) -> dict:
        return {"login": self.identity["login"]}

    def repository(self, _info: Any, owner: str, name: str) -> dict:
        full = f"{owner}/{name}"
        repo = self.sim._state["repos"].get(full)
        if repo is None:
            raise _Failure("NOT_FOUND", f"Could not resolve to a Repository with the name '{full}'.")

        def pull_request(_info: Any, number: int) -> dict:
            pull = repo["pulls"].get(str(number))
            if pull is None:
                raise _Failure("NOT_FOUND", f"Could not resolve to a PullRequest with the number of {number}.")
            return self._pull(full, repo, pull)

        return {
            "id": base64.b64encode(f"R_{repo['id']}".encode()).decode(),
            "name": name,
            "nameWithOwner": full,
            "pullRequest": pull_request,
        }

    def _set_resolved(self, input: dict, resolved: bool) -> dict:
        root_id = root_of(str(input.get("threadId") or ""))
        found = None
        for full, repo in self.sim._state["repos"].items():
            comment = repo["review_comments"].get(str(root_id)) if root_id is not None else None
            if comment is not None and comment["in_reply_to_id"] is None:
                found = (full, repo, comment)
        if found is None:
            raise _Failure("NOT_FOUND", f"Could not resolve to a node with the global id of '{input.get('threadId')}'")
        if self.identity.get("permission") == "read" or self.identity.get("graphql") == "read":
            raise _Failure("FORBIDDEN", "Resource not accessible by integration")
        full, repo, root = found
        root["resolved"] = resolved
        root["resolved_by"] = (
            {"login": self.identity["login"], "type": self.identity.get("type", "User")} if resolved else None
        )
        self.sim._save()
        return {"thread": self._thread(full, repo, root), "clientMutationId": input.get("clientMutationId")}

    def resolveReviewThread(self, _info: Any, input: dict) -> dict:
        return self._set_resolved(input, True)

    def unresolveReviewThread(self, _info: Any, input: dict) -> dict:
        return self._set_resolved(input, False)


def execute(sim: Any, identity: dict, web: str, body: Any) -> dict:
    """Run one GraphQL request body (``{"query", "variables"}``); the answer's JSON."""
    if not isinstance(body, dict) or not isinstance(body.get("query"), str):
        return {"errors": [{"message": "A query attribute must be specified and must be a string."}]}
    variables = body.get("variables")
    if variables is not None and not isinstance(variables, dict):
        return {"errors": [{"message": "Variables are invalid JSON."}]}
    view = GraphQLView(sim, identity, web)
    result = graphql_sync(
        SCHEMA, body["query"], root_value=view, variable_values=variables, operation_name=body.get("operationName")
    )
    out: dict[str, Any] = {}
    if result.errors:
        errors = []
        for err in result.errors:
            item: dict[str, Any] = {"message": err.message}
            if err.path:
                item["path"] = list(err.path)
            if err.locations:
                item["locations"] = [{"line": loc.line, "column": loc.column} for loc in err.locations]
            kind = (err.extensions or {}).get("type")
            if kind:
                item["type"] = kind
            errors.append(item)
        if result.data is not None:
            out["data"] = result.data
        out["errors"] = errors
        return out
    return {"data": result.data}
