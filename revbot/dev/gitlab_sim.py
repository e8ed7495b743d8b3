"""A GitLab REST v4 simulator on loopback, so tests and the demo talk real HTTP to something that
answers like GitLab: the recorded fields and types (``../shared/fixtures/gitlab``, checked by
tests/gitlab/test_sim_shapes.py), offset pagination (``Link``, ``x-page``, ``x-next-page``,
``x-total``...), ``RateLimit-*`` headers on every answer, 429 with ``Retry-After`` when asked to,
and 400 with GitLab's message for a discussion whose position is not a row of the diff.

    with GitLabSimulator() as sim:                       # port 0 -> a free port
        sim.add_project("acme/widgets", members={"dev": 30}, files={"a.py": "x = 1\\n"})
        mr = sim.add_merge_request("acme/widgets", {"a.py": "x = 2\\n"}, author="dev")
        client = GitLabClient("t", url=sim.url)

Commits are file snapshots with a parent, so diffs, versions, compare and merge bases are real
(difflib). Endpoints, all under ``/api/v4``: ``GET /user``; under ``/projects/:id`` (the URL-encoded
path): ``GET merge_requests`` (state, order_by, sort, updated_after), ``GET merge_requests/:iid``,
``.../diffs``, ``.../versions``, ``.../versions/:id``, ``GET|POST .../discussions``, ``GET|PUT
.../discussions/:id`` (resolved), ``POST .../discussions/:id/notes``, ``GET|POST .../notes``,
``GET|POST .../notes/:id/award_emoji``, ``GET repository/files/:path/raw``, ``GET
repository/compare``, ``GET repository/merge_base``, ``GET members/all``.
The webhook payloads it builds (``merge_request_hook``, ``note_hook``, ``emoji_hook``) have the
recorded payloads' shapes too.
"""

from __future__ import annotations

import difflib
import hashlib
import itertools
import json
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from bot.diff import parse_patch

BAD_POSITION = '400 Bad request - Note {:line_code=>["can\'t be blank", "must be a valid line code"]}'


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _moment(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _sha(*parts: Any) -> str:
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def file_diff(old: str | None, new: str | None, old_path: str, new_path: str) -> dict[str, Any]:
    """One ``diffs`` entry between two versions of a file (None: absent)."""
    a, b = (old or "").splitlines(keepends=True), (new or "").splitlines(keepends=True)
    text = "".join(ln if ln.endswith("\n") else ln + "\n" for ln in list(difflib.unified_diff(a, b, n=3))[2:])
    return {
        "diff": text,
        "new_path": new_path,
        "old_path": old_path,
        "a_mode": "0" if old is None else "100644",
        "b_mode": "0" if new is None else "100644",
        "new_file": old is None,
        "renamed_file": False,
        "deleted_file": new is None,
        "generated_file": False,
    }


class _Answer(Exception):
    def __init__(self, status: int, body: Any, headers: dict[str, str] | None = None):
        super().__init__(status)
        self.status, self.body, self.headers = status, body, headers or {}


class GitLabSimulator:
    """State plus a threaded HTTP server; the admin methods (``add_*``, ``push``, ``award``) change
    the state directly, as people on the instance would."""

    def __init__(
        self, *, host: str = "127.0.0.1", port: int = 0, tokens: dict[str, str] | None = None, per_page_max: int = 100
    ):
        self.host, self.port, self.per_page_max = host, port, per_page_max
        self.tokens = dict(tokens or {"t": "revbot"})  # token -> username
        self.users: dict[str, dict[str, Any]] = {}
        self.projects: dict[str, dict[str, Any]] = {}
        self.commits: dict[str, dict[str, Any]] = {}
        self.requests: list[tuple[str, str]] = []
        self.posted: list[dict[str, Any]] = []  # bodies of POSTed discussions and notes, in order
        self.faults: list[dict[str, Any]] = []
        self.write_faults: list[dict[str, Any]] = []
        self.rate_limit = 2000
        self.cannot_resolve: set[str] = set()  # users GitLab answers 403 when they resolve a thread
        self.refuse_positions = 0  # the next N positions answered 400, as when a push races the post
        self._ids = itertools.count(1000)
        self._lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        for name in set(self.tokens.values()):
            self.user(name)

    # ------------------------------------------------------------------ life cycle

    @property
    def url(self) -> str:
        assert self._server is not None, "start() the simulator first"
        return f"http://{self.host}:{self._server.server_address[1]}"

    def start(self) -> GitLabSimulator:
        sim = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out at once: no delayed-ACK stall per request

            def log_message(self, *args: Any) -> None:
                pass

            def _serve(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                status, body, headers = sim.handle(method, self.path, dict(self.headers.items()), raw)
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                ctype = "text/plain" if isinstance(body, bytes) else "application/json"
                for k, v in {"Content-Type": ctype, "Content-Length": str(len(data)), **headers}.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._serve("GET")

            def do_POST(self) -> None:
                self._serve("POST")

            def do_PUT(self) -> None:
                self._serve("PUT")

        self._server = ThreadingHTTPServer((self.host, self.port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name="gitlab-sim", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> GitLabSimulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ admin: state

    def user(self, username: str, *, bot: bool = False) -> dict[str, Any]:
        if username not in self.users:
            uid = next(self._ids)
            self.users[username] = {
                "id": uid,
                "username": username,
                "name": username.title(),
                "state": "active",
                "avatar_url": f"https://gitlab.example.com/uploads/{uid}.png",
                "web_url": f"https://gitlab.example.com/{username}",
                "bot": bot,
            }
        return self.users[username]

    def _commit(self, files: dict[str, str], parent: str | None, message: str) -> str:
        sha = _sha(files, parent, message, next(self._ids))
        self.commits[sha] = {"files": dict(files), "parent": parent, "message": message, "at": _now()}
        return sha

    def add_project(
        self, path: str, *, files: dict[str, str] | None = None, members: dict[str, int] | None = None
    ) -> dict[str, Any]:
        with self._lock:
            main = self._commit(dict(files or {}), None, "initial")
            project = {
                "id": next(self._ids),
                "path": path,
                "branches": {"main": main},
                "members": {name: level for name, level in (members or {}).items()},
                "mrs": {},
                "next_iid": 1,
            }
            for name in project["members"]:
                self.user(name)
            self.projects[path] = project
            return project

    def add_merge_request(
        self,
        path: str,
        files: dict[str, str | None],
        *,
        author: str = "dev",
        title: str = "Change",
        draft: bool = False,
        created_at: str | None = None,
    ) -> dict[str, Any]:
        """A merge request from a branch that changes ``files`` (None deletes one) on main."""
        with self._lock:
            project = self.projects[path]
            base = project["branches"]["main"]
            iid = project["next_iid"]
            project["next_iid"] += 1
            self.user(author)
            mr = {
                "id": next(self._ids),
                "iid": iid,
                "title": title,
                "description": "",
                "author": author,
                "state": "opened",
                "draft": draft,
                "source_branch": f"feature-{iid}",
                "target_branch": "main",
                "created_at": created_at or _now(),
                "updated_at": created_at or _now(),
                "versions": [],
                "notes": {},
                "discussions": {},
            }
            project["mrs"][iid] = mr
            self._push(project, mr, base, files)
            return mr

    def add_merge_request_from_patches(
        self,
        path: str,
        files: list[dict[str, Any]],
        *,
        author: str,
        title: str,
        created_at: str | None = None,
        state: str = "opened",
    ) -> dict[str, Any]:
        """A merge request given by its files' patches (``filename``, ``status``, ``patch``), as the
        GitHub simulator's seeds give them, instead of by file contents."""
        with self._lock:
            project = self.projects[path]
            base = project["branches"]["main"]
            mr = self.add_merge_request(path, {}, author=author, title=title, created_at=created_at)
            head = self._commit(dict(self.commits[base]["files"]), base, title)
            self.commits[head]["patches"] = [
                {
                    **file_diff("", "", f["filename"], f["filename"]),
                    "diff": f["patch"] if f["patch"].endswith("\n") else f["patch"] + "\n",
                    "new_file": f.get("status") == "added",
                    "deleted_file": f.get("status") == "removed",
                    "a_mode": "0" if f.get("status") == "added" else "100644",
                }
                for f in files
            ]
            mr["versions"] = [
                {"id": next(self._ids), "base": base, "start": base, "head": head, "at": mr["created_at"]}
            ]
            mr["state"] = state
            return mr

    def push(self, path: str, iid: int, files: dict[str, str | None]) -> str:
        """A new commit on the merge request's branch; returns the old head (``oldrev``)."""
        with self._lock:
            project = self.projects[path]
            mr = project["mrs"][iid]
            old = mr["versions"][-1]["head"]
            self._push(project, mr, old, files)
            return old

    def _push(self, project: dict, mr: dict, parent: str, files: dict[str, str | None]) -> None:
        snapshot = dict(self.commits[parent]["files"])
        for name, text in files.items():
            if text is None:
                snapshot.pop(name, None)
            else:
                snapshot[name] = text
        head = self._commit(snapshot, parent, mr["title"])
        base = project["branches"]["main"]
        mr["versions"].append({"id": next(self._ids), "base": base, "start": base, "head": head, "at": _now()})
        mr["updated_at"] = _now()

    def add_note(
        self,
        path: str,
        iid: int,
        body: str,
        *,
        author: str,
        line: int | None = None,
        file: str | None = None,
        side: str = "new",
        reply_to: str | None = None,
        created_at: str | None = None,
    ) -> dict[str, Any]:
        """A person's note: plain, positioned on (file, line) of the latest version (an unchanged
        line gets both numbers, as GitLab stores it), or a reply."""
        with self._lock:
            mr = self.projects[path]["mrs"][iid]
            position = None
            if file is not None and line is not None:
                v = mr["versions"][-1]
                position = {"base_sha": v["base"], "start_sha": v["start"], "head_sha": v["head"]}
                position.update({"position_type": "text", "old_path": file, "new_path": file})
                position.update(self._line_numbers(v, file, line, side))
            note = self._add_note(mr, body, author, position, reply_to)
            if created_at is not None:
                note["created_at"] = note["updated_at"] = created_at
            return note

    def _line_numbers(self, version: dict, file: str, line: int, side: str) -> dict[str, int | None]:
        entry = next((d for d in self._diffs(version["base"], version["head"]) if d["new_path"] == file), None)
        if entry is not None:
            for hunk in parse_patch(entry["diff"], file, strict=False).hunks:
                for ln in hunk.lines:
                    if ln.kind == " " and (ln.new_no if side == "new" else ln.old_no) == line:
                        return {"old_line": ln.old_no, "new_line": ln.new_no}
        return {"new_line": line, "old_line": None} if side == "new" else {"old_line": line, "new_line": None}

    def _add_note(self, mr: dict, body: str, author: str, position: dict | None, reply_to: str | None) -> dict:
        if reply_to is not None:
            discussion = mr["discussions"][reply_to]
            kind = mr["notes"][discussion["notes"][0]]["type"]
            position = mr["notes"][discussion["notes"][0]]["position"]
        else:
            discussion = {"id": _sha("discussion", next(self._ids)), "notes": [], "individual_note": position is None}
            mr["discussions"][discussion["id"]] = discussion
            kind = "DiffNote" if position else None
        note = {
            "id": next(self._ids),
            "type": kind,
            "body": body,
            "author": author,
            "created_at": _now(),
            "updated_at": _now(),
            "system": False,
            "position": position,
            "resolvable": kind == "DiffNote",
            "resolved": False,
            "resolved_by": None,
            "awards": [],
            "discussion": discussion["id"],
        }
        mr["notes"][note["id"]] = note
        discussion["notes"].append(note["id"])
        mr["updated_at"] = _now()
        return note

    def delete_note(self, path: str, iid: int, note_id: int) -> None:
        """Someone deletes a note in the UI: it leaves its thread (an emptied thread goes too)."""
        with self._lock:
            mr = self.projects[path]["mrs"][iid]
            note = mr["notes"].pop(note_id)
            discussion = mr["discussions"][note["discussion"]]
            discussion["notes"].remove(note_id)
            if not discussion["notes"]:
                del mr["discussions"][discussion["id"]]

    def award(self, path: str, iid: int, note_id: int, name: str, *, user: str) -> dict[str, Any]:
        with self._lock:
            note = self.projects[path]["mrs"][iid]["notes"][note_id]
            award = {"id": next(self._ids), "name": name, "user": user, "created_at": _now(), "updated_at": _now()}
            note["awards"].append(award)
            return award

    def resolve(self, path: str, iid: int, discussion: str, *, user: str) -> None:
        with self._lock:
            mr = self.projects[path]["mrs"][iid]
            for nid in mr["discussions"][discussion]["notes"]:
                mr["notes"][nid].update(resolved=True, resolved_by=user)

    def inject_429(self, count: int = 1, retry_after: int = 1) -> None:
        """The next ``count`` requests are answered 429 with ``Retry-After``."""
        self.faults += [{"status": 429, "retry_after": retry_after}] * count

    def fail_after_write(self, path_part: str, *, after: int = 0, status: int = 500) -> None:
        """The write to a path holding ``path_part`` after the next ``after`` such writes is APPLIED
        and then answered ``status``, as a crash or a lost answer after GitLab committed it."""
        self.write_faults.append({"part": path_part, "after": after, "status": status})

    # ------------------------------------------------------------------ HTTP

    def _rate_headers(self) -> dict[str, str]:
        used = len(self.requests)
        reset = int(time.time()) + 60
        return {
            "RateLimit-Limit": str(self.rate_limit),
            "RateLimit-Observed": str(used),
            "RateLimit-Remaining": str(max(self.rate_limit - used, 0)),
            "RateLimit-Reset": str(reset),
            "RateLimit-ResetTime": datetime.fromtimestamp(reset, UTC).strftime("%a, %d %b %Y %H:%M:%S GMT"),
        }

    def handle(
        self, method: str, raw_path: str, headers: dict[str, str], raw: bytes
    ) -> tuple[int, Any, dict[str, str]]:
        with self._lock:
            self.requests.append((method, raw_path))
            rate = self._rate_headers()
            if self.faults:
                fault = self.faults.pop(0)
                return (
                    fault["status"],
                    {"message": "429 Too Many Requests"},
                    {**rate, "Retry-After": str(fault["retry_after"]), "RateLimit-Remaining": "0"},
                )
            try:
                user = self._authenticate(headers)
                parts = urlsplit(raw_path)
                query = {k: v if k.endswith("[]") else v[-1] for k, v in parse_qs(parts.query).items()}
                ctype = next((v for k, v in headers.items() if k.lower() == "content-type"), "")
                body = json.loads(raw) if raw and ctype.startswith("application/json") else {}
                if raw and not body:
                    body = {k: v[-1] for k, v in parse_qs(raw.decode()).items()}
                status, answer, extra = self._route(method, parts.path, query, body, user)
                if method != "GET" and status < 300:
                    status, answer = self._write_fault(parts.path, status, answer)
            except _Answer as exc:
                status, answer, extra = exc.status, exc.body, exc.headers
            return status, answer, {**rate, **extra}

    def _write_fault(self, path: str, status: int, answer: Any) -> tuple[int, Any]:
        for fault in self.write_faults:
            if fault["part"] in path:
                if fault["after"] > 0:
                    fault["after"] -= 1
                    return status, answer
                self.write_faults.remove(fault)
                return fault["status"], {"message": f"{fault['status']} Internal Server Error"}
        return status, answer

    def _authenticate(self, headers: dict[str, str]) -> str:
        token = next((v for k, v in headers.items() if k.lower() == "private-token"), None)
        if token is None:
            auth = next((v for k, v in headers.items() if k.lower() == "authorization"), "")
            token = auth.split(" ", 1)[1] if auth.lower().startswith("bearer ") else None
        if token not in self.tokens:
            raise _Answer(401, {"message": "401 Unauthorized"})
        return self.tokens[token]

    def _route(self, method: str, path: str, query: dict, body: dict, user: str) -> tuple[int, Any, dict[str, str]]:
        if not path.startswith("/api/v4/"):
            raise _Answer(404, {"message": "404 Not Found"})
        rest = path[len("/api/v4") :]
        if rest == "/user" and method == "GET":
            return 200, self._render_user(user), {}
        if not rest.startswith("/projects/"):
            raise _Answer(404, {"message": "404 Not Found"})
        encoded, _, tail = rest[len("/projects/") :].partition("/")
        project = self.projects.get(unquote(encoded))
        if project is None:
            raise _Answer(404, {"message": "404 Project Not Found"})
        return self._project_route(method, project, tail.split("/") if tail else [], query, body, user)

    def _project_route(
        self, method: str, project: dict, seg: list[str], query: dict, body: dict, user: str
    ) -> tuple[int, Any, dict[str, str]]:
        if seg[:1] == ["repository"]:
            return self._repository(project, seg[1:], query)
        if seg == ["members", "all"]:
            members = [
                self._member(project, n, lvl) for n, lvl in project["members"].items() if query.get("query", n) in n
            ]
            return self._page(members, query)
        if seg[:1] != ["merge_requests"]:
            raise _Answer(404, {"message": "404 Not Found"})
        if len(seg) == 1:
            return self._page(self._list_mrs(project, query), query)
        mr = project["mrs"].get(int(seg[1])) if seg[1].isdigit() else None
        if mr is None:
            raise _Answer(404, {"message": "404 Not found"})
        return self._mr_route(method, project, mr, seg[2:], query, body, user)

    def _mr_route(
        self, method: str, project: dict, mr: dict, seg: list[str], query: dict, body: dict, user: str
    ) -> tuple[int, Any, dict[str, str]]:
        if not seg:
            return 200, self._render_mr(project, mr), {}
        if seg == ["diffs"]:
            v = mr["versions"][-1]
            return self._page(self._diffs(v["base"], v["head"]), query)
        if seg == ["versions"]:
            return 200, [self._render_version(mr, v) for v in reversed(mr["versions"])], {}
        if seg[0] == "versions" and len(seg) == 2:
            v = next((v for v in mr["versions"] if str(v["id"]) == seg[1]), None)
            if v is None:
                raise _Answer(404, {"message": "404 Not found"})
            return 200, self._render_version(mr, v, full=True), {}
        if seg == ["discussions"]:
            if method == "POST":
                return 201, self._create_discussion(project, mr, body, user), {}
            return self._page([self._render_discussion(project, mr, d) for d in mr["discussions"].values()], query)
        if seg[0] == "discussions" and len(seg) >= 2:
            discussion = mr["discussions"].get(seg[1])
            if discussion is None:
                raise _Answer(404, {"message": "404 Discussion Not Found"})
            if len(seg) == 2 and method == "GET":
                return 200, self._render_discussion(project, mr, discussion), {}
            if len(seg) == 2 and method == "PUT":
                if user in self.cannot_resolve:
                    raise _Answer(403, {"message": "403 Forbidden"})
                if str(body.get("resolved")).lower() == "true":
                    self.resolve(project["path"], mr["iid"], seg[1], user=user)
                return 200, self._render_discussion(project, mr, discussion), {}
            if seg[2:] == ["notes"] and method == "POST":
                note = self._add_note(mr, str(body.get("body") or ""), user, None, seg[1])
                self.posted.append({"reply_to": seg[1], "body": note["body"]})
                return 201, self._render_note(project, mr, note), {}
        if seg == ["notes"]:
            if method == "POST":
                note = self._add_note(mr, str(body.get("body") or ""), user, None, None)
                self.posted.append({"note": True, "body": note["body"]})
                return 201, self._render_note(project, mr, note), {}
            notes = sorted(mr["notes"].values(), key=lambda n: n["id"], reverse=query.get("sort") != "asc")
            return self._page([self._render_note(project, mr, n) for n in notes], query)
        if seg[0] == "notes" and seg[2:] == ["award_emoji"] and seg[1].isdigit():
            note = mr["notes"].get(int(seg[1]))
            if note is None:
                raise _Answer(404, {"message": "404 Note Not Found"})
            if method == "POST":
                if any(a["name"] == body.get("name") and a["user"] == user for a in note["awards"]):
                    raise _Answer(404, {"message": "404 Award Emoji Name has already been taken"})
                award = self.award(project["path"], mr["iid"], note["id"], str(body.get("name")), user=user)
                return 201, self._render_award(note, award), {}
            return self._page([self._render_award(note, a) for a in note["awards"]], query)
        raise _Answer(404, {"message": "404 Not Found"})

    def _repository(self, project: dict, seg: list[str], query: dict) -> tuple[int, Any, dict[str, str]]:
        if len(seg) == 3 and seg[0] == "files" and seg[2] == "raw":
            ref = query.get("ref") or "main"
            sha = project["branches"].get(ref, ref if ref != "HEAD" else project["branches"]["main"])
            text = (self.commits.get(sha) or {}).get("files", {}).get(unquote(seg[1]))
            if text is None:
                raise _Answer(404, {"message": "404 File Not Found"})
            return 200, text.encode(), {}
        if seg == ["compare"]:
            a, b = query.get("from"), query.get("to")
            if a not in self.commits or b not in self.commits:
                raise _Answer(404, {"message": "404 Ref Not Found"})
            start = a if str(query.get("straight")).lower() == "true" else self._merge_base(a, b)
            diffs = self._diffs(start, b) if start else []
            return (
                200,
                {
                    "commit": self._render_commit(b),
                    "commits": [],
                    "diffs": diffs,
                    "compare_timeout": False,
                    "compare_same_ref": a == b,
                    "web_url": "",
                },
                {},
            )
        if seg == ["merge_base"]:
            refs = query.get("refs[]") or []
            if len(refs) != 2 or any(r not in self.commits for r in refs):
                raise _Answer(404, {"message": "404 Commit Not Found"})
            found = self._merge_base(refs[0], refs[1])
            if found is None:
                raise _Answer(404, {"message": "404 Merge Base Not Found"})
            return 200, self._render_commit(found), {}
        raise _Answer(404, {"message": "404 Not Found"})

    def _ancestors(self, sha: str | None) -> list[str]:
        out = []
        while sha:
            out.append(sha)
            sha = self.commits[sha]["parent"]
        return out

    def _merge_base(self, a: str, b: str) -> str | None:
        seen = set(self._ancestors(a))
        return next((s for s in self._ancestors(b) if s in seen), None)

    def _diffs(self, base: str, head: str) -> list[dict[str, Any]]:
        if self.commits[head].get("patches") is not None and self.commits[head]["parent"] == base:
            return [dict(p) for p in self.commits[head]["patches"]]
        old, new = self.commits[base]["files"], self.commits[head]["files"]
        out = []
        for name in sorted(set(old) | set(new)):
            if old.get(name) != new.get(name):
                out.append(file_diff(old.get(name), new.get(name), name, name))
        return out

    def _page(self, items: list[Any], query: dict) -> tuple[int, Any, dict[str, str]]:
        per_page = max(1, min(int(query.get("per_page") or 20), self.per_page_max))
        page = max(1, int(query.get("page") or 1))
        pages = max(1, -(-len(items) // per_page))
        chunk = items[(page - 1) * per_page : page * per_page]
        headers = {
            "x-page": str(page),
            "x-per-page": str(per_page),
            "x-total": str(len(items)),
            "x-total-pages": str(pages),
            "x-next-page": str(page + 1) if page < pages else "",
            "x-prev-page": str(page - 1) if page > 1 else "",
        }
        base = {k: v for k, v in query.items() if k not in ("page",)}
        base["per_page"] = str(per_page)
        path = self._current_path

        def link(n: int, rel: str) -> str:
            q = "&".join(
                f"{quote(k)}={quote(str(x))}"
                for k, v in {**base, "page": str(n)}.items()
                for x in (v if isinstance(v, list) else [v])
            )
            return f'<{self.url}{path}?{q}>; rel="{rel}"'

        links = ([link(page - 1, "prev")] if page > 1 else []) + ([link(page + 1, "next")] if page < pages else [])
        headers["Link"] = ", ".join([*links, link(1, "first"), link(pages, "last")])
        return 200, chunk, headers

    @property
    def _current_path(self) -> str:
        return urlsplit(self.requests[-1][1]).path

    def _list_mrs(self, project: dict, query: dict) -> list[dict]:
        state = query.get("state", "all")
        mrs = [m for m in project["mrs"].values() if state in ("all", m["state"])]
        if query.get("updated_after"):
            after = _moment(query["updated_after"])
            mrs = [m for m in mrs if _moment(m["updated_at"]) >= after]
        key = "updated_at" if query.get("order_by") == "updated_at" else "created_at"
        mrs.sort(key=lambda m: (m[key], m["iid"]), reverse=query.get("sort", "desc") == "desc")
        return [self._render_mr(project, m) for m in mrs]

    # ------------------------------------------------------------------ positions

    def _create_discussion(self, project: dict, mr: dict, body: dict, user: str) -> dict:
        position = body.get("position")
        if position is not None:
            if self.refuse_positions > 0:
                self.refuse_positions -= 1
                raise _Answer(400, {"message": BAD_POSITION})
            if not isinstance(position, dict) or not self._valid_position(mr, position):
                raise _Answer(400, {"message": BAD_POSITION})
            position = {
                "base_sha": position["base_sha"],
                "start_sha": position["start_sha"],
                "head_sha": position["head_sha"],
                "old_path": position["old_path"],
                "new_path": position["new_path"],
                "position_type": "text",
                "old_line": position.get("old_line"),
                "new_line": position.get("new_line"),
                **({"line_range": position["line_range"]} if position.get("line_range") else {}),
            }
        note = self._add_note(mr, str(body.get("body") or ""), user, position, None)
        self.posted.append({"position": position, "body": note["body"]})
        return self._render_discussion(project, mr, mr["discussions"][note["discussion"]])

    def _valid_position(self, mr: dict, p: dict) -> bool:
        """The position names a row of one version's diff: added (new_line), removed (old_line) or
        unchanged (both), with that version's three SHAs."""
        v = next(
            (
                v
                for v in mr["versions"]
                if (v["base"], v["start"], v["head"]) == (p.get("base_sha"), p.get("start_sha"), p.get("head_sha"))
            ),
            None,
        )
        if v is None or p.get("position_type") != "text":
            return False
        entry = next((d for d in self._diffs(v["base"], v["head"]) if d["new_path"] == p.get("new_path")), None)
        if entry is None:
            return False
        fd = parse_patch(entry["diff"], entry["new_path"], strict=False)
        old, new = p.get("old_line"), p.get("new_line")
        for hunk in fd.hunks:
            for ln in hunk.lines:
                if ln.kind == "+" and new is not None and old is None and ln.new_no == new:
                    return True
                if ln.kind == "-" and old is not None and new is None and ln.old_no == old:
                    return True
                if ln.kind == " " and ln.old_no == old and ln.new_no == new:
                    return True
        return False

    # ------------------------------------------------------------------ rendering (recorded shapes)

    def _render_user(self, name: str) -> dict[str, Any]:
        u = self.user(name)
        return {k: u[k] for k in ("id", "username", "name", "state", "avatar_url", "web_url")}

    def _member(self, project: dict, name: str, level: int) -> dict[str, Any]:
        return {**self._render_user(name), "access_level": level, "expires_at": None}

    def _render_commit(self, sha: str) -> dict[str, Any]:
        c = self.commits[sha]
        return {
            "id": sha,
            "short_id": sha[:8],
            "parent_ids": [c["parent"]] if c["parent"] else [],
            "title": c["message"],
            "author_name": "Dev",
            "author_email": "dev@example.com",
            "authored_date": c["at"],
            "committer_name": "Dev",
            "committer_email": "dev@example.com",
            "committed_date": c["at"],
            "created_at": c["at"],
            "message": c["message"],
            "trailers": {},
            "extended_trailers": {},
            "web_url": f"https://gitlab.example.com/-/commit/{sha}",
        }

    def _render_version(self, mr: dict, v: dict, full: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": v["id"],
            "head_commit_sha": v["head"],
            "base_commit_sha": v["base"],
            "start_commit_sha": v["start"],
            "created_at": v["at"],
            "merge_request_id": mr["id"],
            "state": "collected",
            "real_size": str(len(self._diffs(v["base"], v["head"]))),
            "patch_id_sha": _sha("patch", v["head"]),
        }
        if full:
            out["commits"] = [self._render_commit(v["head"])]
            out["diffs"] = self._diffs(v["base"], v["head"])
        return out

    def _render_mr(self, project: dict, mr: dict) -> dict[str, Any]:
        v = mr["versions"][-1]
        author = self._render_user(mr["author"])
        refs = {"base_sha": v["base"], "head_sha": v["head"], "start_sha": v["start"]}
        user_notes = sum(1 for n in mr["notes"].values() if not n["system"])
        return {
            "id": mr["id"],
            "iid": mr["iid"],
            "project_id": project["id"],
            "title": mr["title"],
            "description": mr["description"],
            "state": mr["state"],
            "created_at": mr["created_at"],
            "updated_at": mr["updated_at"],
            "merged_by": None,
            "merged_at": None,
            "closed_by": None,
            "closed_at": None,
            "target_branch": mr["target_branch"],
            "source_branch": mr["source_branch"],
            "user_notes_count": user_notes,
            "upvotes": 0,
            "downvotes": 0,
            "assignee": None,
            "author": author,
            "assignees": [],
            "reviewers": [],
            "source_project_id": project["id"],
            "target_project_id": project["id"],
            "labels": [],
            "work_in_progress": mr["draft"],
            "milestone": None,
            "merge_when_pipeline_succeeds": False,
            "detailed_merge_status": "mergeable",
            "merge_status": "can_be_merged",
            "sha": v["head"],
            "merge_commit_sha": None,
            "discussion_locked": None,
            "should_remove_source_branch": None,
            "force_remove_source_branch": False,
            "reference": f"!{mr['iid']}",
            "web_url": f"https://gitlab.example.com/{project['path']}/-/merge_requests/{mr['iid']}",
            "time_stats": {
                "time_estimate": 0,
                "total_time_spent": 0,
                "human_time_estimate": None,
                "human_total_time_spent": None,
            },
            "squash": False,
            "task_completion_status": {"count": 0, "completed_count": 0},
            "subscribed": False,
            "changes_count": str(len(self._diffs(v["base"], v["head"]))),
            "latest_build_started_at": None,
            "latest_build_finished_at": None,
            "first_deployed_to_production_at": None,
            "pipeline": None,
            "head_pipeline": None,
            "diff_refs": refs,
            "merge_error": None,
            "user": {"can_merge": False},
            "first_contribution": False,
            "approvals_before_merge": None,
            "has_conflicts": False,
            "draft": mr["draft"],
        }

    def _render_note(self, project: dict, mr: dict, note: dict) -> dict[str, Any]:
        out = {
            "id": note["id"],
            "type": note["type"],
            "body": note["body"],
            "attachment": None,
            "author": self._render_user(note["author"]),
            "created_at": note["created_at"],
            "updated_at": note["updated_at"],
            "system": note["system"],
            "noteable_id": mr["id"],
            "noteable_type": "MergeRequest",
            "project_id": project["id"],
            "noteable_iid": mr["iid"],
            "resolvable": note["resolvable"],
        }
        if note["type"] == "DiffNote":
            out.update(
                commit_id=note["position"]["head_sha"],
                position=note["position"],
                resolved=note["resolved"],
                resolved_by=self._render_user(note["resolved_by"]) if note["resolved_by"] else None,
                suggestions=[],
            )
        return out

    def _render_discussion(self, project: dict, mr: dict, d: dict) -> dict[str, Any]:
        notes = [self._render_note(project, mr, mr["notes"][nid]) for nid in d["notes"]]
        return {"id": d["id"], "individual_note": d["individual_note"], "notes": notes}

    def _render_award(self, note: dict, award: dict) -> dict[str, Any]:
        return {
            "id": award["id"],
            "name": award["name"],
            "user": self._render_user(award["user"]),
            "created_at": award["created_at"],
            "updated_at": award["updated_at"],
            "awardable_id": note["id"],
            "awardable_type": "Note",
        }

    # ------------------------------------------------------------------ webhook payloads

    def _hook_project(self, project: dict) -> dict[str, Any]:
        name = project["path"].rsplit("/", 1)[-1]
        return {
            "id": project["id"],
            "name": name,
            "description": "",
            "web_url": f"https://gitlab.example.com/{project['path']}",
            "avatar_url": None,
            "git_ssh_url": f"git@gitlab.example.com:{project['path']}.git",
            "git_http_url": f"https://gitlab.example.com/{project['path']}.git",
            "namespace": project["path"].rsplit("/", 1)[0],
            "visibility_level": 0,
            "path_with_namespace": project["path"],
            "default_branch": "main",
            "homepage": f"https://gitlab.example.com/{project['path']}",
            "url": f"git@gitlab.example.com:{project['path']}.git",
            "ssh_url": f"git@gitlab.example.com:{project['path']}.git",
            "http_url": f"https://gitlab.example.com/{project['path']}.git",
        }

    def _hook_user(self, name: str) -> dict[str, Any]:
        u = self.user(name)
        return {
            "id": u["id"],
            "name": u["name"],
            "username": name,
            "avatar_url": u["avatar_url"],
            "email": "[REDACTED]",
        }

    def merge_request_hook(
        self, path: str, iid: int, action: str, *, oldrev: str | None = None, user: str | None = None
    ) -> dict[str, Any]:
        """A Merge Request Hook payload as GitLab sends it for this merge request now."""
        project = self.projects[path]
        mr = project["mrs"][iid]
        v = mr["versions"][-1]
        attrs = {
            "id": mr["id"],
            "iid": iid,
            "target_branch": mr["target_branch"],
            "source_branch": mr["source_branch"],
            "source_project_id": project["id"],
            "target_project_id": project["id"],
            "author_id": self.user(mr["author"])["id"],
            "title": mr["title"],
            "description": mr["description"],
            "created_at": mr["created_at"].replace("T", " ").replace("Z", " UTC"),
            "updated_at": mr["updated_at"].replace("T", " ").replace("Z", " UTC"),
            "state": mr["state"],
            "draft": mr["draft"],
            "work_in_progress": mr["draft"],
            "merge_status": "can_be_merged",
            "url": self._render_mr(project, mr)["web_url"],
            "last_commit": {
                "id": v["head"],
                "message": mr["title"],
                "title": mr["title"],
                "timestamp": mr["updated_at"],
                "url": "",
                "author": {"name": "Dev", "email": "dev@example.com"},
            },
            "action": action,
            "source": self._hook_project(project),
            "target": self._hook_project(project),
        }
        if oldrev is not None:
            attrs["oldrev"] = oldrev
        return {
            "object_kind": "merge_request",
            "event_type": "merge_request",
            "user": self._hook_user(user or mr["author"]),
            "project": self._hook_project(project),
            "object_attributes": attrs,
            "labels": [],
            "changes": {},
            "repository": {"name": project["path"].rsplit("/", 1)[-1], "url": "", "description": "", "homepage": ""},
        }

    def note_hook(self, path: str, iid: int, note_id: int) -> dict[str, Any]:
        """A Note Hook payload for one note of a merge request."""
        project = self.projects[path]
        mr = project["mrs"][iid]
        note = mr["notes"][note_id]
        hook_mr = self.merge_request_hook(path, iid, "update")["object_attributes"]
        hook_mr.pop("action", None)
        attrs = {
            "id": note["id"],
            "note": note["body"],
            "noteable_type": "MergeRequest",
            "author_id": self.user(note["author"])["id"],
            "created_at": note["created_at"],
            "updated_at": note["updated_at"],
            "project_id": project["id"],
            "attachment": None,
            "line_code": None,
            "commit_id": "",
            "noteable_id": mr["id"],
            "system": False,
            "st_diff": None,
            "url": f"{hook_mr['url']}#note_{note['id']}",
            "type": note["type"],
            "position": note["position"],
            "original_position": note["position"],
            "discussion_id": note["discussion"],
            "action": "create",
        }
        return {
            "object_kind": "note",
            "event_type": "note",
            "user": self._hook_user(note["author"]),
            "project_id": project["id"],
            "project": self._hook_project(project),
            "object_attributes": attrs,
            "repository": {"name": project["path"].rsplit("/", 1)[-1], "url": "", "description": "", "homepage": ""},
            "merge_request": hook_mr,
        }

    def emoji_hook(self, path: str, iid: int, note_id: int, award: dict[str, Any]) -> dict[str, Any]:
        """An Emoji Hook payload: ``award`` (from :meth:`award`) on a note of a merge request."""
        project = self.projects[path]
        hook_mr = self.merge_request_hook(path, iid, "update")["object_attributes"]
        hook_mr.pop("action", None)
        note = project["mrs"][iid]["notes"][note_id]
        return {
            "object_kind": "emoji",
            "event_type": "award",
            "user": self._hook_user(award["user"]),
            "project_id": project["id"],
            "project": self._hook_project(project),
            "object_attributes": {
                "user_id": self.user(award["user"])["id"],
                "created_at": award["created_at"],
                "id": award["id"],
                "name": award["name"],
                "awardable_type": "Note",
                "awardable_id": note_id,
                "updated_at": award["updated_at"],
            },
            "note": {
                "id": note_id,
                "note": note["body"],
                "noteable_type": "MergeRequest",
                "discussion_id": note["discussion"],
            },
            "merge_request": hook_mr,
        }
