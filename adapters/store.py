"""The dataset store: one SQLite file that harvest, dataset import and the webhook worker all write.

Why SQLite: concurrent writers on one machine (a harvest and the webhook worker) are safe with WAL
and a busy timeout, a re-harvest is idempotent because comments are keyed by (forge, the forge's
comment id): a GitHub comment and a GitLab note may carry the same number,
and every write is its own short transaction, so a killed harvest keeps everything it had fetched.

Location: ``Store(path)``; without a path the settings' ``REVBOT_DB`` (relative to ``REVBOT_HOME``
like every data path), else ``revbot.db`` there (DEFAULT_DB_NAME). Parent directories are created.

Tables (schema versioned by an ordered list of named migrations, recorded in ``migrations``):
  comments       one row per review comment (StoredComment) of GitHub or GitLab, keyed by
                 (forge, id), secrets already scrubbed
  prs            pull-request metadata (author, head sha) and whether its file list is cached
  pr_files       the per-file ``patch`` strings of a PR, so examples rebuild without refetching
  examples       training examples (bot.examples.Example), positive and negative
  harvest_state  per-repository key/value state: the high-water mark, resume cursors
  harvest_sources  per repository, the GitHub API root its last harvest ran against (what
                 `revbot retrain` harvests it from again unless told otherwise)
  pending_prs    PRs whose comments changed and whose examples still need (re)building
  bot_feedback   reactions, replies and thread resolutions on the bot's own comments (with the
                 forge whose ids they name)
  bot_posts      what the webhook service posted: each comment's fingerprint, the hunk it was
                 about and the model version that wrote it (so feedback can be traced to a version)
  feedback_evidence  feedback turned into evidence for or against one of the bot's comments, with
                 its source (``bot.feedback``): what `revbot retrain` learns from and `revbot eval`
                 reports as acceptance by version
  pr_ignores     ``/revbot ignore <glob>`` commands: paths later reviews of that PR leave out
  deleted_comments  (forge, id) of comments the forge reported deleted: it never reuses an id, so
                 a late or replayed event for one must not bring it back
  reviews        one row per review the service posted (repo, PR, head sha, version, comments,
                 skipped files, seconds taken): the operator pages' Reviews list
  operator_actions  what people did through the operator pages (promote, roll back, re-queue), by whom

Connections: one per thread (and per process: a forked worker opens its own), so the store object
can be shared by threads without locking (``adapters.sqlite``, shared with the job table).
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from adapters.sqlite import ThreadConnections
from bot.errors import DataError
from bot.examples import Example
from bot.records import (  # noqa: F401 - the records live in the domain; re-exported for old import paths
    BotPost,
    Evidence,
    Feedback,
    ReviewRecord,
    StoredComment,
    is_bot_login,
    utc_timestamp,
)
from bot.secrets import scrub_text

DEFAULT_DB_NAME = "revbot.db"
BUSY_TIMEOUT_S = 30.0

REACTION_KEYS = ("+1", "-1", "laugh", "hooray", "confused", "heart", "rocket", "eyes")


def default_db_path() -> Path:
    """``$REVBOT_DB`` when set, else ``revbot.db``; a relative path lives in ``$REVBOT_HOME``."""
    from adapters.settings import Settings

    return Settings.from_env(only=("home", "db")).db


def now_stamp() -> str:
    """The clock of ``stored_at`` columns (microseconds, so "stored before this run" is exact)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


_COMMENT_COLUMNS = [f.name for f in fields(StoredComment)]


@dataclass(frozen=True)
class PullRequestInfo:
    repo: str
    number: int
    author: str | None = None
    head_sha: str | None = None
    state: str | None = None
    created_at: str | None = None
    updated_at: str | None = None
    title: str | None = None


@dataclass(frozen=True)
class CachedFile:
    """One entry of a PR's file list (the PR files API), patch already scrubbed."""

    path: str
    status: str = "modified"
    patch: str | None = None
    old_path: str | None = None


# --------------------------------------------------------------------------- migrations

# Rows stored before comments were keyed by forge: a repository is GitLab's when a harvest recorded
# it so, or when its path is nested (GROUP/SUB/PROJECT: GitHub's are OWNER/NAME); all else is GitHub's.
_GITLAB_REPO = (
    "(repo LIKE '%/%/%' OR repo IN (SELECT repo FROM harvest_state WHERE key = 'forge' AND value = '\"gitlab\"'))"
)

_KEPT_COLUMNS = (  # the comments table's columns before 0010, copied as they are
    "id, repo, pr, path, diff_hunk, line, side, start_line, start_side, original_line, original_start_line, "
    "commit_id, original_commit_id, author, author_type, pr_author, body, created_at, updated_at, "
    "in_reply_to_id, reactions, html_url, source, is_bot, digest, stored_at"
)

MIGRATIONS: list[tuple[str, str]] = [
    (
        "0001_comments",
        """
        CREATE TABLE comments (
            id INTEGER PRIMARY KEY,
            repo TEXT NOT NULL,
            pr INTEGER NOT NULL,
            path TEXT,
            diff_hunk TEXT,
            line INTEGER,
            side TEXT,
            start_line INTEGER,
            start_side TEXT,
            original_line INTEGER,
            original_start_line INTEGER,
            commit_id TEXT,
            original_commit_id TEXT,
            author TEXT,
            author_type TEXT,
            pr_author TEXT,
            body TEXT NOT NULL DEFAULT '',
            created_at TEXT,
            updated_at TEXT,
            in_reply_to_id INTEGER,
            reactions TEXT NOT NULL DEFAULT '{}',
            html_url TEXT,
            source TEXT NOT NULL DEFAULT 'github',
            is_bot INTEGER NOT NULL DEFAULT 0,
            digest TEXT NOT NULL,
            stored_at TEXT NOT NULL
        );
        CREATE INDEX comments_repo_pr ON comments(repo, pr);
        CREATE INDEX comments_reply ON comments(in_reply_to_id);
        """,
    ),
    (
        "0002_harvest_state",
        """
        CREATE TABLE harvest_state (
            repo TEXT NOT NULL,
            key TEXT NOT NULL,
            value TEXT,
            updated_at TEXT NOT NULL,
            PRIMARY KEY (repo, key)
        );
        CREATE TABLE pending_prs (
            repo TEXT NOT NULL,
            pr INTEGER NOT NULL,
            marked_at TEXT NOT NULL,
            PRIMARY KEY (repo, pr)
        );
        """,
    ),
    (
        "0003_prs_and_files",
        """
        CREATE TABLE prs (
            repo TEXT NOT NULL,
            number INTEGER NOT NULL,
            author TEXT,
            head_sha TEXT,
            state TEXT,
            created_at TEXT,
            updated_at TEXT,
            title TEXT,
            files_commit TEXT,
            files_fetched_at TEXT,
            PRIMARY KEY (repo, number)
        );
        CREATE TABLE pr_files (
            repo TEXT NOT NULL,
            pr INTEGER NOT NULL,
            position INTEGER NOT NULL,
            path TEXT NOT NULL,
            old_path TEXT,
            status TEXT NOT NULL,
            patch TEXT,
            PRIMARY KEY (repo, pr, position)
        );
        """,
    ),
    (
        "0004_examples",
        """
        CREATE TABLE examples (
            id TEXT PRIMARY KEY,
            repo TEXT NOT NULL,
            pr INTEGER NOT NULL,
            path TEXT NOT NULL,
            hunk TEXT NOT NULL,
            comments TEXT NOT NULL,
            is_negative INTEGER NOT NULL,
            created_at TEXT NOT NULL DEFAULT '',
            source TEXT NOT NULL,
            meta TEXT NOT NULL DEFAULT '{}',
            stored_at TEXT NOT NULL
        );
        CREATE INDEX examples_repo_pr ON examples(repo, pr);
        """,
    ),
    (
        "0005_bot_feedback",
        """
        CREATE TABLE bot_feedback (
            key TEXT PRIMARY KEY,
            repo TEXT NOT NULL,
            pr INTEGER NOT NULL,
            comment_id INTEGER NOT NULL,
            kind TEXT NOT NULL,
            author TEXT NOT NULL,
            content TEXT NOT NULL,
            ref_id INTEGER,
            created_at TEXT,
            source TEXT NOT NULL,
            stored_at TEXT NOT NULL
        );
        CREATE INDEX bot_feedback_comment ON bot_feedback(repo, comment_id);
        """,
    ),
    (
        "0006_deleted_comments",
        """
        CREATE TABLE deleted_comments (
            id INTEGER PRIMARY KEY,
            deleted_at TEXT NOT NULL
        );
        """,
    ),
    (
        "0007_feedback_evidence",
        """
        CREATE TABLE bot_posts (
            repo TEXT NOT NULL,
            pr INTEGER NOT NULL,
            fingerprint TEXT NOT NULL,
            path TEXT NOT NULL,
            line INTEGER,
            side TEXT,
            body TEXT NOT NULL,
            hunk TEXT,
            head_sha TEXT,
            model_version TEXT,
            comment_id INTEGER,
            posted_at TEXT NOT NULL,
            PRIMARY KEY (repo, pr, fingerprint)
        );
        CREATE INDEX bot_posts_comment ON bot_posts(repo, comment_id);
        CREATE TABLE feedback_evidence (
            key TEXT PRIMARY KEY,
            repo TEXT NOT NULL,
            pr INTEGER NOT NULL,
            comment_id INTEGER NOT NULL,
            source TEXT NOT NULL,
            polarity INTEGER NOT NULL,
            weight INTEGER NOT NULL DEFAULT 1,
            author TEXT NOT NULL DEFAULT '',
            fingerprint TEXT,
            model_version TEXT,
            path TEXT,
            line INTEGER,
            side TEXT,
            body TEXT NOT NULL DEFAULT '',
            hunk TEXT,
            created_at TEXT,
            stored_at TEXT NOT NULL
        );
        CREATE INDEX feedback_evidence_pr ON feedback_evidence(repo, pr);
        CREATE TABLE pr_ignores (
            repo TEXT NOT NULL,
            pr INTEGER NOT NULL,
            glob TEXT NOT NULL,
            author TEXT,
            comment_id INTEGER,
            created_at TEXT NOT NULL,
            PRIMARY KEY (repo, pr, glob)
        );
        """,
    ),
    (
        "0008_harvest_sources",
        """
        CREATE TABLE harvest_sources (
            repo TEXT PRIMARY KEY,
            api_url TEXT NOT NULL,
            updated_at TEXT NOT NULL
        );
        """,
    ),
    (
        "0009_reviews_and_operator_actions",
        """
        CREATE TABLE reviews (
            repo TEXT NOT NULL,
            pr INTEGER NOT NULL,
            head_sha TEXT NOT NULL,
            model_version TEXT,
            comments INTEGER NOT NULL DEFAULT 0,
            in_body INTEGER NOT NULL DEFAULT 0,
            skipped_files TEXT NOT NULL DEFAULT '[]',
            seconds REAL,
            review_id INTEGER,
            posted_at TEXT NOT NULL,
            PRIMARY KEY (repo, pr, head_sha)
        );
        CREATE INDEX reviews_by_time ON reviews(posted_at);
        CREATE TABLE operator_actions (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            at TEXT NOT NULL,
            actor TEXT NOT NULL,
            action TEXT NOT NULL,
            target TEXT NOT NULL,
            outcome TEXT NOT NULL,
            detail TEXT NOT NULL DEFAULT ''
        );
        """,
    ),
    (
        "0010_forge_keys",
        f"""
        CREATE TABLE comments_by_forge (
            forge TEXT NOT NULL DEFAULT 'github',
            id INTEGER NOT NULL,
            repo TEXT NOT NULL,
            pr INTEGER NOT NULL,
            path TEXT,
            diff_hunk TEXT,
            line INTEGER,
            side TEXT,
            start_line INTEGER,
            start_side TEXT,
            original_line INTEGER,
            original_start_line INTEGER,
            commit_id TEXT,
            original_commit_id TEXT,
            author TEXT,
            author_type TEXT,
            pr_author TEXT,
            body TEXT NOT NULL DEFAULT '',
            created_at TEXT,
            updated_at TEXT,
            in_reply_to_id INTEGER,
            reactions TEXT NOT NULL DEFAULT '{{}}',
            html_url TEXT,
            source TEXT NOT NULL DEFAULT 'github',
            is_bot INTEGER NOT NULL DEFAULT 0,
            digest TEXT NOT NULL,
            stored_at TEXT NOT NULL,
            PRIMARY KEY (forge, id)
        );
        INSERT INTO comments_by_forge (forge, {_KEPT_COLUMNS})
            SELECT CASE WHEN source = 'gitlab' OR {_GITLAB_REPO} THEN 'gitlab' ELSE 'github' END, {_KEPT_COLUMNS}
            FROM comments;
        DROP TABLE comments;
        ALTER TABLE comments_by_forge RENAME TO comments;
        CREATE INDEX comments_repo_pr ON comments(repo, pr);
        CREATE INDEX comments_reply ON comments(in_reply_to_id);
        CREATE TABLE deleted_by_forge (
            forge TEXT NOT NULL DEFAULT 'github',
            id INTEGER NOT NULL,
            deleted_at TEXT NOT NULL,
            PRIMARY KEY (forge, id)
        );
        INSERT INTO deleted_by_forge (forge, id, deleted_at) SELECT 'github', id, deleted_at FROM deleted_comments;
        DROP TABLE deleted_comments;
        ALTER TABLE deleted_by_forge RENAME TO deleted_comments;
        ALTER TABLE bot_feedback ADD COLUMN forge TEXT NOT NULL DEFAULT 'github';
        UPDATE bot_feedback SET forge = 'gitlab', key = 'gitlab:' || key WHERE {_GITLAB_REPO};
        """,
    ),
]


# --------------------------------------------------------------------------- the store


class Store:
    """The dataset store. Cheap to create; connections open lazily, one per thread."""

    def __init__(self, path: str | os.PathLike[str] | None = None, *, timeout: float = BUSY_TIMEOUT_S):
        self.path = Path(path) if path is not None else default_db_path()
        self.timeout = timeout
        self._db = ThreadConnections(self.path, timeout=timeout, on_error=self._db_error)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DataError(
                f"cannot create the directory for the store: {exc.strerror}", str(self.path.parent)
            ) from exc
        self._migrate()

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r})"

    # ---- connections and transactions

    def _db_error(self, what: str, exc: sqlite3.Error) -> DataError:
        if what == "open":
            return DataError(f"cannot open the store: {exc}", str(self.path))
        return DataError(f"the store is busy or locked: {exc}", str(self.path))

    def _conn(self) -> sqlite3.Connection:
        return self._db.connection()

    def transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE: takes the write lock up front, so two writers
        wait for each other instead of failing on a lock upgrade). Nested uses join the outer one."""
        return self._db.transaction()

    def _read(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        return self._conn().execute(sql, tuple(params)).fetchall()

    def _select(self, table: str, order: str, **equal: Any) -> list[sqlite3.Row]:
        """Rows of ``table`` whose columns equal the given values (None: no condition), in ``order``.
        Table and column names come from this module only, never from callers' data."""
        conditions = {column: value for column, value in equal.items() if value is not None}
        where = " WHERE " + " AND ".join(f"{column} = ?" for column in conditions) if conditions else ""
        return self._read(f"SELECT * FROM {table}{where} ORDER BY {order}", conditions.values())

    def close(self) -> None:
        """Close this thread's connection (others close when their thread ends)."""
        self._db.close()

    def _migrate(self) -> None:
        try:
            with self.transaction() as con:
                con.execute(
                    "CREATE TABLE IF NOT EXISTS migrations (id INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL, applied_at TEXT NOT NULL)"
                )
                applied = [r["name"] for r in con.execute("SELECT name FROM migrations ORDER BY id")]
                known = [name for name, _ in MIGRATIONS]
                unknown = [name for name in applied if name not in known]
                if unknown:
                    raise DataError(
                        f"the store was written by a newer revbot (unknown migrations: {', '.join(unknown)}); upgrade revbot",
                        str(self.path),
                    )
                for number, (name, sql) in enumerate(MIGRATIONS, start=1):
                    if name in applied:
                        continue
                    for statement in sql.split(";"):
                        if statement.strip():
                            con.execute(statement)
                    con.execute(
                        "INSERT INTO migrations (id, name, applied_at) VALUES (?, ?, ?)", (number, name, now_stamp())
                    )
        except sqlite3.DatabaseError as exc:
            raise DataError(f"not a usable revbot store: {exc}", str(self.path)) from exc

    @property
    def schema_version(self) -> int:
        return int(self._read("SELECT COUNT(*) FROM migrations")[0][0])

    # ---- comments

    def upsert_comments(self, comments: Iterable[StoredComment], *, mark_pending: bool = False) -> tuple[int, int]:
        """Insert or update by (forge, comment id), in one transaction. Returns (inserted, updated); a
        comment whose content did not change counts as neither, so a re-harvest reports (0, 0).
        With ``mark_pending`` the PRs of changed comments are queued for an example rebuild in the
        same transaction (the webhook worker does this, so the next harvest picks them up).

        Webhook events arrive out of order and can be replayed: a version older (``updated_at``)
        than the stored one, or any version of a comment deleted on its forge, is skipped."""
        inserted = updated = 0
        stamp = now_stamp()
        changed_prs: set[tuple[str, int]] = set()
        with self.transaction() as con:
            for c in comments:
                c = replace(c, body=scrub_text(c.body) or "", diff_hunk=scrub_text(c.diff_hunk))
                row = {k: getattr(c, k) for k in _COMMENT_COLUMNS}
                row["reactions"] = json.dumps(c.reactions, sort_keys=True)
                row["is_bot"] = int(bool(c.is_bot))
                row["digest"] = c.digest()
                row["stored_at"] = stamp
                key = (c.forge, c.id)
                existing = con.execute(
                    "SELECT digest, pr_author, updated_at FROM comments WHERE forge = ? AND id = ?", key
                ).fetchone()
                if existing is None:
                    if con.execute("SELECT 1 FROM deleted_comments WHERE forge = ? AND id = ?", key).fetchone():
                        continue
                    cols = _COMMENT_COLUMNS + ["digest", "stored_at"]
                    con.execute(
                        f"INSERT INTO comments ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                        [row[k] for k in cols],
                    )
                    inserted += 1
                    changed_prs.add((c.repo, c.pr))
                    continue
                if c.updated_at and existing["updated_at"] and c.updated_at < existing["updated_at"]:
                    continue
                if c.pr_author and existing["pr_author"] != c.pr_author:
                    con.execute("UPDATE comments SET pr_author = ? WHERE forge = ? AND id = ?", (c.pr_author, *key))
                if existing["digest"] != row["digest"]:
                    cols = [k for k in _COMMENT_COLUMNS if k not in ("id", "forge", "source", "pr_author")] + [
                        "digest",
                        "stored_at",
                    ]
                    con.execute(
                        f"UPDATE comments SET {', '.join(f'{k} = ?' for k in cols)} WHERE forge = ? AND id = ?",
                        [row[k] for k in cols] + list(key),
                    )
                    updated += 1
                    changed_prs.add((c.repo, c.pr))
            if mark_pending:
                con.executemany(
                    "INSERT OR IGNORE INTO pending_prs (repo, pr, marked_at) VALUES (?, ?, ?)",
                    [(repo, pr, stamp) for repo, pr in sorted(changed_prs)],
                )
        return inserted, updated

    def delete_comment(self, comment_id: int, forge: str = "github") -> bool:
        """Remove a comment (its forge deleted it) and remember (forge, id), so that a later
        ``created`` or ``edited`` event for it (late or replayed) is ignored; marks its PR for an
        example rebuild."""
        key = (forge, int(comment_id))
        with self.transaction() as con:
            con.execute(
                "INSERT OR IGNORE INTO deleted_comments (forge, id, deleted_at) VALUES (?, ?, ?)", (*key, now_stamp())
            )
            row = con.execute("SELECT repo, pr FROM comments WHERE forge = ? AND id = ?", key).fetchone()
            if row is None:
                return False
            con.execute("DELETE FROM comments WHERE forge = ? AND id = ?", key)
            self.mark_pending(row["repo"], [row["pr"]])
            return True

    def prune_comments(self, repo: str, keep: set[int], before: str, forge: str = "github") -> int:
        """Delete ``repo``'s comments of ``forge`` (harvested from it, or recorded by the webhook
        worker) that a complete re-read did not return (deleted on the forge), except those stored
        at or after ``before`` (written meanwhile, e.g. by the webhook worker). Their PRs are marked
        for an example rebuild. Returns how many were deleted."""
        with self.transaction() as con:
            rows = con.execute(
                "SELECT id, pr FROM comments WHERE repo = ? AND forge = ? AND source IN (?, 'webhook') AND stored_at < ?",
                (repo, forge, forge, before),
            ).fetchall()
            gone = [(r["id"], r["pr"]) for r in rows if r["id"] not in keep]
            con.executemany("DELETE FROM comments WHERE forge = ? AND id = ?", [(forge, cid) for cid, _ in gone])
            self.mark_pending(repo, sorted({pr for _, pr in gone}))
        return len(gone)

    def get_comment(self, comment_id: int, forge: str = "github") -> StoredComment | None:
        """The stored comment ``comment_id`` of ``forge`` (ids are per forge)."""
        rows = self._read("SELECT * FROM comments WHERE forge = ? AND id = ?", (forge, int(comment_id)))
        return _comment_from_row(rows[0]) if rows else None

    def iter_comments(self, repo: str | None = None, pr: int | None = None) -> Iterator[StoredComment]:
        """Comments in id order (a forge's ids grow with time), optionally of one repo or PR."""
        sql, params = "SELECT * FROM comments", []
        where = []
        if repo is not None:
            where.append("repo = ?")
            params.append(repo)
        if pr is not None:
            where.append("pr = ?")
            params.append(int(pr))
        if where:
            sql += " WHERE " + " AND ".join(where)
        for row in self._read(sql + " ORDER BY id, forge", params):
            yield _comment_from_row(row)

    def comment_prs(self, repo: str) -> list[int]:
        """Numbers of the PRs that have stored comments."""
        return [r[0] for r in self._read("SELECT DISTINCT pr FROM comments WHERE repo = ? ORDER BY pr", (repo,))]

    def set_pr_author(self, repo: str, pr: int, author: str | None) -> None:
        """Record a PR's author on the PR and on its stored comments."""
        with self.transaction() as con:
            con.execute(
                "INSERT INTO prs (repo, number, author) VALUES (?, ?, ?) "
                "ON CONFLICT(repo, number) DO UPDATE SET author = excluded.author",
                (repo, int(pr), author),
            )
            con.execute("UPDATE comments SET pr_author = ? WHERE repo = ? AND pr = ?", (author, repo, int(pr)))

    # ---- pull requests and their cached file lists

    def upsert_pulls(self, pulls: Iterable[PullRequestInfo]) -> int:
        """Store PR metadata (from a bulk PR listing or a webhook); also fills comments' pr_author."""
        count = 0
        with self.transaction() as con:
            for p in pulls:
                con.execute(
                    "INSERT INTO prs (repo, number, author, head_sha, state, created_at, updated_at, title) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(repo, number) DO UPDATE SET "
                    "author = COALESCE(excluded.author, author), head_sha = COALESCE(excluded.head_sha, head_sha), "
                    "state = COALESCE(excluded.state, state), created_at = COALESCE(excluded.created_at, created_at), "
                    "updated_at = COALESCE(excluded.updated_at, updated_at), title = COALESCE(excluded.title, title)",
                    (p.repo, int(p.number), p.author, p.head_sha, p.state, p.created_at, p.updated_at, p.title),
                )
                if p.author:
                    con.execute(
                        "UPDATE comments SET pr_author = ? WHERE repo = ? AND pr = ? AND pr_author IS NOT ?",
                        (p.author, p.repo, int(p.number), p.author),
                    )
                count += 1
        return count

    def get_pull(self, repo: str, number: int) -> PullRequestInfo | None:
        rows = self._read("SELECT * FROM prs WHERE repo = ? AND number = ?", (repo, int(number)))
        if not rows:
            return None
        r = rows[0]
        return PullRequestInfo(
            repo, r["number"], r["author"], r["head_sha"], r["state"], r["created_at"], r["updated_at"], r["title"]
        )

    def pull_authors(self, repo: str) -> dict[int, str]:
        """PR number -> author for every PR whose author is known: from PR metadata, else from
        comments that arrived with it (a webhook payload names the PR's author)."""
        out = {
            r["pr"]: r["pr_author"]
            for r in self._read(
                "SELECT DISTINCT pr, pr_author FROM comments WHERE repo = ? AND pr_author IS NOT NULL", (repo,)
            )
        }
        out.update(
            {
                r["number"]: r["author"]
                for r in self._read("SELECT number, author FROM prs WHERE repo = ? AND author IS NOT NULL", (repo,))
            }
        )
        return out

    def cache_pr_files(self, repo: str, pr: int, files: Iterable[CachedFile], commit: str | None = None) -> None:
        """Replace the cached file list of a PR (patches scrubbed). ``commit`` is the head it was read at."""
        with self.transaction() as con:
            con.execute("DELETE FROM pr_files WHERE repo = ? AND pr = ?", (repo, int(pr)))
            for position, f in enumerate(files):
                con.execute(
                    "INSERT INTO pr_files (repo, pr, position, path, old_path, status, patch) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (repo, int(pr), position, f.path, f.old_path, f.status, scrub_text(f.patch)),
                )
            con.execute(
                "INSERT INTO prs (repo, number, files_commit, files_fetched_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(repo, number) DO UPDATE SET files_commit = excluded.files_commit, files_fetched_at = excluded.files_fetched_at",
                (repo, int(pr), commit, now_stamp()),
            )

    def cached_pr_files(self, repo: str, pr: int) -> tuple[list[CachedFile], str | None] | None:
        """(files, commit they were read at), or None when this PR's files were never cached."""
        meta = self._read(
            "SELECT files_fetched_at, files_commit FROM prs WHERE repo = ? AND number = ?", (repo, int(pr))
        )
        if not meta or meta[0]["files_fetched_at"] is None:
            return None
        rows = self._read("SELECT * FROM pr_files WHERE repo = ? AND pr = ? ORDER BY position", (repo, int(pr)))
        return [CachedFile(r["path"], r["status"], r["patch"], r["old_path"]) for r in rows], meta[0]["files_commit"]

    # ---- harvest state

    def get_state(self, repo: str, key: str, default: Any = None) -> Any:
        rows = self._read("SELECT value FROM harvest_state WHERE repo = ? AND key = ?", (repo, key))
        if not rows or rows[0]["value"] is None:
            return default
        return json.loads(rows[0]["value"])

    def set_state(self, repo: str, key: str, value: Any) -> None:
        """Set (or with None, clear) one piece of per-repo harvest state."""
        with self.transaction() as con:
            if value is None:
                con.execute("DELETE FROM harvest_state WHERE repo = ? AND key = ?", (repo, key))
            else:
                con.execute(
                    "INSERT INTO harvest_state (repo, key, value, updated_at) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT(repo, key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                    (repo, key, json.dumps(value), now_stamp()),
                )

    def high_water_mark(self, repo: str) -> str | None:
        """The ``updated_at`` up to which this repo's review comments have been read."""
        return self.get_state(repo, "high_water")

    def set_high_water_mark(self, repo: str, value: str | None) -> None:
        self.set_state(repo, "high_water", value)

    def set_api_url(self, repo: str, api_url: str) -> None:
        """Record the GitHub API root ``repo`` is harvested from (GitHub, an Enterprise host, the simulator)."""
        with self.transaction() as con:
            con.execute(
                "INSERT INTO harvest_sources (repo, api_url, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT(repo) DO UPDATE SET api_url = excluded.api_url, updated_at = excluded.updated_at",
                (repo, api_url, now_stamp()),
            )

    def api_url(self, repo: str) -> str | None:
        """The GitHub API root ``repo`` was last harvested from; None if it never was (or before 0008)."""
        rows = self._read("SELECT api_url FROM harvest_sources WHERE repo = ?", (repo,))
        return rows[0]["api_url"] if rows else None

    def mark_pending(self, repo: str, prs: Iterable[int]) -> None:
        """PRs whose examples must be rebuilt; cleared by replace_examples(..., pr=N)."""
        stamp = now_stamp()
        with self.transaction() as con:
            con.executemany(
                "INSERT OR IGNORE INTO pending_prs (repo, pr, marked_at) VALUES (?, ?, ?)",
                [(repo, int(p), stamp) for p in prs],
            )

    def pending_prs(self, repo: str) -> list[int]:
        return [r["pr"] for r in self._read("SELECT pr FROM pending_prs WHERE repo = ? ORDER BY pr", (repo,))]

    def clear_pending(self, repo: str, pr: int) -> None:
        with self.transaction() as con:
            con.execute("DELETE FROM pending_prs WHERE repo = ? AND pr = ?", (repo, int(pr)))

    # ---- examples

    def upsert_examples(self, examples: Iterable[Example]) -> tuple[int, int]:
        """Insert or replace by example id. Returns (inserted, updated)."""
        inserted = updated = 0
        with self.transaction() as con:
            for ex in examples:
                existed = con.execute("SELECT 1 FROM examples WHERE id = ?", (ex.id,)).fetchone() is not None
                self._put_example(con, ex)
                if existed:
                    updated += 1
                else:
                    inserted += 1
        return inserted, updated

    def replace_examples(
        self, repo: str, examples: Iterable[Example], *, pr: int | None = None, source: str | None = None
    ) -> int:
        """Atomically replace a repo's examples (or one PR's, or one source's) with ``examples``.
        Replacing one PR also clears it from the pending list: its rebuild is done."""
        count = 0
        with self.transaction() as con:
            sql, params = "DELETE FROM examples WHERE repo = ?", [repo]
            if pr is not None:
                sql += " AND pr = ?"
                params.append(int(pr))
            if source is not None:
                sql += " AND source = ?"
                params.append(source)
            con.execute(sql, params)
            for ex in examples:
                self._put_example(con, ex)
                count += 1
            if pr is not None:
                con.execute("DELETE FROM pending_prs WHERE repo = ? AND pr = ?", (repo, int(pr)))
        return count

    @staticmethod
    def _put_example(con: sqlite3.Connection, ex: Example) -> None:
        data = ex.to_dict()
        con.execute(
            "INSERT OR REPLACE INTO examples (id, repo, pr, path, hunk, comments, is_negative, created_at, source, meta, stored_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                ex.id,
                ex.repo,
                int(ex.pr),
                ex.path,
                scrub_text(ex.hunk),
                json.dumps([{**c, "body": scrub_text(c["body"])} for c in data["comments"]], ensure_ascii=False),
                int(ex.is_negative),
                ex.created_at or "",
                ex.source,
                json.dumps(ex.meta or {}, ensure_ascii=False, sort_keys=True),
                now_stamp(),
            ),
        )

    def iter_examples(
        self, repo: str | None = None, *, source: str | None = None, negative: bool | None = None
    ) -> Iterator[Example]:
        """Examples ordered by (created_at, id): stable, and oldest first for time-based splits."""
        rows = self._select(
            "examples",
            "created_at, id",
            repo=repo,
            source=source,
            is_negative=None if negative is None else int(negative),
        )
        for row in rows:
            yield _example_from_row(row)

    def count_examples(self, repo: str | None = None) -> tuple[int, int]:
        """(positive, negative)."""
        sql = (
            "SELECT is_negative, COUNT(*) FROM examples" + (" WHERE repo = ?" if repo else "") + " GROUP BY is_negative"
        )
        counts = {r[0]: r[1] for r in self._read(sql, (repo,) if repo else ())}
        return counts.get(0, 0), counts.get(1, 0)

    # ---- feedback on the bot's own comments

    def record_feedback(self, items: Iterable[Feedback]) -> int:
        """Store feedback on the bot's comments (upsert by Feedback.key). Returns rows written."""
        count = 0
        stamp = now_stamp()
        with self.transaction() as con:
            for f in items:
                con.execute(
                    "INSERT INTO bot_feedback (key, repo, pr, comment_id, kind, author, content, ref_id, created_at, source, "
                    "forge, stored_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(key) DO UPDATE SET content = excluded.content, "
                    "created_at = COALESCE(excluded.created_at, created_at), stored_at = excluded.stored_at "
                    "WHERE content IS NOT excluded.content",
                    (
                        f.key,
                        f.repo,
                        int(f.pr),
                        int(f.comment_id),
                        f.kind,
                        f.author,
                        scrub_text(f.content) or "",
                        f.ref_id,
                        f.created_at,
                        f.source,
                        f.forge,
                        stamp,
                    ),
                )
                count += 1
        return count

    def iter_feedback(self, repo: str | None = None, comment_id: int | None = None) -> Iterator[Feedback]:
        rows = self._select(
            "bot_feedback",
            "comment_id, kind, key",
            repo=repo,
            comment_id=None if comment_id is None else int(comment_id),
        )
        for r in rows:
            yield Feedback(
                r["repo"],
                r["pr"],
                r["comment_id"],
                r["kind"],
                r["author"],
                r["content"],
                r["ref_id"],
                r["created_at"],
                r["source"],
                r["forge"],
            )

    # ---- what the webhook service posted, evidence, per-PR ignores

    def record_posts(self, posts: Iterable[BotPost]) -> int:
        """Remember comments the service posted (by repo, PR and fingerprint; a repost keeps the
        first record's version and time, and learns the comment id once it is known)."""
        count = 0
        stamp = now_stamp()
        with self.transaction() as con:
            for p in posts:
                con.execute(
                    "INSERT INTO bot_posts (repo, pr, fingerprint, path, line, side, body, hunk, head_sha, model_version, "
                    "comment_id, posted_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT(repo, pr, fingerprint) DO UPDATE SET comment_id = COALESCE(comment_id, excluded.comment_id)",
                    (
                        p.repo,
                        int(p.pr),
                        p.fingerprint,
                        p.path,
                        p.line,
                        p.side,
                        scrub_text(p.body) or "",
                        scrub_text(p.hunk),
                        p.head_sha,
                        p.model_version,
                        p.comment_id,
                        p.posted_at or stamp,
                    ),
                )
                count += 1
        return count

    def link_post(self, repo: str, pr: int, fingerprint: str, comment_id: int) -> bool:
        """Tie a posted comment to its GitHub id (seen when the service next reads the PR)."""
        with self.transaction() as con:
            cur = con.execute(
                "UPDATE bot_posts SET comment_id = ? WHERE repo = ? AND pr = ? AND fingerprint = ? "
                "AND comment_id IS NOT ?",
                (int(comment_id), repo, int(pr), fingerprint, int(comment_id)),
            )
            return cur.rowcount > 0

    def iter_posts(self, repo: str | None = None, pr: int | None = None) -> Iterator[BotPost]:
        rows = self._select(
            "bot_posts", "posted_at, repo, pr, fingerprint", repo=repo, pr=None if pr is None else int(pr)
        )
        for r in rows:
            yield BotPost(
                r["repo"],
                r["pr"],
                r["fingerprint"],
                r["path"],
                r["line"],
                r["side"],
                r["body"],
                r["hunk"],
                r["head_sha"],
                r["model_version"],
                r["comment_id"],
                r["posted_at"],
            )

    def replace_evidence(self, items: Iterable[Evidence], *, repo: str | None = None, pr: int | None = None) -> int:
        """Replace the stored evidence (all of it, one repo's, or one PR's) with ``items``."""
        count = 0
        stamp = now_stamp()
        with self.transaction() as con:
            sql, params = "DELETE FROM feedback_evidence", []
            if repo is not None:
                sql += " WHERE repo = ?" + (" AND pr = ?" if pr is not None else "")
                params = [repo] + ([int(pr)] if pr is not None else [])
            con.execute(sql, params)
            for e in items:
                con.execute(
                    "INSERT OR REPLACE INTO feedback_evidence (key, repo, pr, comment_id, source, polarity, weight, author, "
                    "fingerprint, model_version, path, line, side, body, hunk, created_at, stored_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        e.key,
                        e.repo,
                        int(e.pr),
                        int(e.comment_id),
                        e.source,
                        int(e.polarity),
                        int(e.weight),
                        e.author,
                        e.fingerprint,
                        e.model_version,
                        e.path,
                        e.line,
                        e.side,
                        scrub_text(e.body) or "",
                        scrub_text(e.hunk),
                        e.created_at,
                        stamp,
                    ),
                )
                count += 1
        return count

    def iter_evidence(self, repo: str | None = None) -> Iterator[Evidence]:
        sql, params = "SELECT * FROM feedback_evidence", []
        if repo is not None:
            sql, params = sql + " WHERE repo = ?", [repo]
        for r in self._read(sql + " ORDER BY repo, comment_id, source", params):
            yield Evidence(
                r["repo"],
                r["pr"],
                r["comment_id"],
                r["source"],
                r["polarity"],
                r["weight"],
                r["author"],
                r["fingerprint"],
                r["model_version"],
                r["path"],
                r["line"],
                r["side"],
                r["body"],
                r["hunk"],
                r["created_at"],
            )

    def add_pr_ignore(
        self, repo: str, pr: int, glob: str, author: str | None = None, comment_id: int | None = None
    ) -> bool:
        """Record an ignore glob for one PR; False when it was recorded before."""
        with self.transaction() as con:
            cur = con.execute(
                "INSERT OR IGNORE INTO pr_ignores (repo, pr, glob, author, comment_id, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (repo, int(pr), glob, author, comment_id, now_stamp()),
            )
            return cur.rowcount > 0

    def pr_ignores(self, repo: str, pr: int) -> list[str]:
        return [
            r["glob"]
            for r in self._read(
                "SELECT glob FROM pr_ignores WHERE repo = ? AND pr = ? ORDER BY created_at, glob", (repo, int(pr))
            )
        ]

    # ---- reviews the service posted, and what operators did

    def record_review(self, review: ReviewRecord) -> None:
        """Remember a posted review (one per repo, PR and head; a rerun that posted again replaces it)."""
        skipped = [{"path": str(f.get("path", "")), "reason": str(f.get("reason", ""))} for f in review.skipped_files]
        with self.transaction() as con:
            con.execute(
                "INSERT OR REPLACE INTO reviews (repo, pr, head_sha, model_version, comments, in_body, skipped_files, "
                "seconds, review_id, posted_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    review.repo,
                    int(review.pr),
                    review.head_sha,
                    review.model_version,
                    int(review.comments),
                    int(review.in_body),
                    json.dumps(skipped, ensure_ascii=False),
                    review.seconds,
                    review.review_id,
                    review.posted_at or now_stamp(),
                ),
            )

    def recent_reviews(self, repo: str | None = None, limit: int = 100) -> list[ReviewRecord]:
        """The newest reviews first (of one repository, or all)."""
        where, params = ("WHERE repo = ? ", [repo]) if repo else ("", [])
        rows = self._read(f"SELECT * FROM reviews {where}ORDER BY posted_at DESC, pr DESC LIMIT ?", [*params, limit])
        return [
            ReviewRecord(
                r["repo"],
                r["pr"],
                r["head_sha"],
                r["model_version"],
                r["comments"],
                r["in_body"],
                tuple(json.loads(r["skipped_files"] or "[]")),
                r["seconds"],
                r["review_id"],
                r["posted_at"],
            )
            for r in rows
        ]

    def review_repos(self) -> list[str]:
        return [r[0] for r in self._read("SELECT DISTINCT repo FROM reviews ORDER BY repo")]

    def record_action(self, actor: str, action: str, target: str, outcome: str, detail: str = "") -> None:
        """Append one operator action (who, what, on what, how it ended) to the audit log."""
        with self.transaction() as con:
            con.execute(
                "INSERT INTO operator_actions (at, actor, action, target, outcome, detail) VALUES (?, ?, ?, ?, ?, ?)",
                (now_stamp(), actor, action, target, outcome, scrub_text(detail) or ""),
            )

    def recent_actions(self, limit: int = 50) -> list[dict[str, Any]]:
        rows = self._read("SELECT * FROM operator_actions ORDER BY id DESC LIMIT ?", (limit,))
        return [dict(r) for r in rows]

    def harvest_overview(self) -> list[dict[str, Any]]:
        """Per harvested repository: its state (high-water mark, last run...) as harvest wrote it."""
        out: dict[str, dict[str, Any]] = {}
        for r in self._read("SELECT repo, key, value, updated_at FROM harvest_state ORDER BY repo, key"):
            entry = out.setdefault(r["repo"], {"repo": r["repo"], "updated_at": r["updated_at"], "state": {}})
            entry["state"][r["key"]] = json.loads(r["value"]) if r["value"] is not None else None
            entry["updated_at"] = max(entry["updated_at"], r["updated_at"])
        for r in self._read("SELECT repo, COUNT(*) AS n FROM comments GROUP BY repo"):
            out.setdefault(r["repo"], {"repo": r["repo"], "updated_at": None, "state": {}})["comments"] = r["n"]
        return [out[k] for k in sorted(out)]

    # ---- summary

    def stats(self) -> dict[str, Any]:
        """Counts for `revbot dataset stats`: stored comments, examples by polarity, per repo."""
        repos: dict[str, dict[str, Any]] = {}

        def entry(repo: str) -> dict[str, Any]:
            return repos.setdefault(
                repo,
                {
                    "comments": 0,
                    "replies": 0,
                    "bot_comments": 0,
                    "prs": 0,
                    "positive": 0,
                    "negative": 0,
                    "high_water": None,
                    "pending_prs": 0,
                },
            )

        for r in self._read(
            "SELECT repo, COUNT(*) AS n, SUM(in_reply_to_id IS NOT NULL) AS replies, SUM(is_bot) AS bots, COUNT(DISTINCT pr) AS prs "
            "FROM comments GROUP BY repo"
        ):
            e = entry(r["repo"])
            e.update(comments=r["n"], replies=r["replies"] or 0, bot_comments=r["bots"] or 0, prs=r["prs"])
        for r in self._read("SELECT repo, is_negative, COUNT(*) AS n FROM examples GROUP BY repo, is_negative"):
            entry(r["repo"])["negative" if r["is_negative"] else "positive"] = r["n"]
        for r in self._read("SELECT repo, value FROM harvest_state WHERE key = 'high_water'"):
            entry(r["repo"])["high_water"] = json.loads(r["value"])
        for r in self._read("SELECT repo, COUNT(*) AS n FROM pending_prs GROUP BY repo"):
            entry(r["repo"])["pending_prs"] = r["n"]
        sources = {
            r["source"]: r["n"] for r in self._read("SELECT source, COUNT(*) AS n FROM examples GROUP BY source")
        }
        feedback = self._read("SELECT COUNT(*) FROM bot_feedback")[0][0]
        return {
            "path": str(self.path),
            "schema_version": self.schema_version,
            "comments": sum(e["comments"] for e in repos.values()),
            "positive": sum(e["positive"] for e in repos.values()),
            "negative": sum(e["negative"] for e in repos.values()),
            "examples_by_source": dict(sorted(sources.items())),
            "bot_feedback": feedback,
            "repos": dict(sorted(repos.items())),
        }


def _comment_from_row(row: sqlite3.Row) -> StoredComment:
    data = {k: row[k] for k in _COMMENT_COLUMNS}
    data["reactions"] = json.loads(data["reactions"] or "{}")
    data["is_bot"] = bool(data["is_bot"])
    return StoredComment(**data)


def _example_from_row(row: sqlite3.Row) -> Example:
    data = {
        "id": row["id"],
        "repo": row["repo"],
        "pr": row["pr"],
        "path": row["path"],
        "hunk": row["hunk"],
        "comments": json.loads(row["comments"]),
        "created_at": row["created_at"],
        "source": row["source"],
        "meta": json.loads(row["meta"] or "{}"),
    }
    return Example.from_dict(data, f"store example {row['id']}")
