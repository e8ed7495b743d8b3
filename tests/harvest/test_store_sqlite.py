"""The dataset store: schema, idempotent upserts, concurrent writers, scrubbing, state, examples."""

from __future__ import annotations

import json
import multiprocessing
import sqlite3
import threading
from pathlib import Path

import pytest
from harvest_kit import SECRET_AWS, SECRET_TOKEN

from adapters.store import MIGRATIONS, CachedFile, Feedback, PullRequestInfo, Store, StoredComment, utc_timestamp
from bot.errors import DataError
from bot.examples import Example, ExampleComment


def _raw(n: int, pr: int = 1, **extra) -> dict:
    base = {
        "id": n,
        "pull_request_url": f"https://api.github.com/repos/acme/widgets/pulls/{pr}",
        "path": "a.py",
        "diff_hunk": "@@ -1,2 +1,3 @@\n a\n+b",
        "line": 2,
        "side": "RIGHT",
        "original_line": 2,
        "user": {"login": "bob", "type": "User"},
        "body": f"comment {n}",
        "created_at": "2024-01-01T00:00:00Z",
        "updated_at": "2024-01-01T00:00:00Z",
    }
    base.update(extra)
    return base


def test_migrations_are_recorded_in_order_and_reopening_is_a_no_op(tmp_path):
    path = tmp_path / "sub" / "dir" / "revbot.db"  # directories are created
    Store(path)
    again = Store(path)
    con = sqlite3.connect(path)
    names = [r[0] for r in con.execute("SELECT name FROM migrations ORDER BY id")]
    assert names == [name for name, _ in MIGRATIONS]
    assert again.schema_version == len(MIGRATIONS)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_store_from_a_newer_revbot_is_refused(tmp_path):
    path = tmp_path / "revbot.db"
    Store(path)
    con = sqlite3.connect(path)
    con.execute("INSERT INTO migrations (id, name, applied_at) VALUES (99, '0099_future', 'x')")
    con.commit()
    con.close()
    with pytest.raises(DataError, match="newer revbot.*0099_future"):
        Store(path)


def test_a_file_that_is_not_a_database_is_a_clear_error(tmp_path):
    path = tmp_path / "revbot.db"
    path.write_text("this is not sqlite\n" * 100)
    with pytest.raises(DataError, match=str(path)):
        Store(path)


def test_default_path_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("REVBOT_DB", str(tmp_path / "env.db"))
    assert Store().path == tmp_path / "env.db"
    monkeypatch.delenv("REVBOT_DB")
    monkeypatch.chdir(tmp_path)
    assert Store().path == Path("revbot.db")


def test_from_github_reads_the_webhook_comment_object(shared_dir):
    payload = json.loads(
        (shared_dir / "fixtures/github/webhooks/pull_request_review_comment__created.payload.json").read_text()
    )
    c = StoredComment.from_github(
        payload["comment"], "Codertocat/Hello-World", pr_author=payload["pull_request"]["user"]["login"]
    )
    assert (c.id, c.pr, c.path, c.line, c.side) == (284312630, 2, "README.md", 265, "RIGHT")
    assert c.author == "Codertocat" and c.author_type == "User" and c.pr_author == "Codertocat"
    assert c.diff_hunk == "@@ -1 +1 @@\n-# Hello-World"
    assert c.created_at == "2019-05-15T15:20:37Z" and c.updated_at == "2019-05-15T15:20:38Z"
    assert c.reactions["+1"] == 0 and "url" not in c.reactions
    assert not c.is_bot and not c.is_reply


def _replay_bodies(path: Path) -> list:
    """Response bodies of a recorded exchange file (11 lines per exchange, body on the 10th)."""
    lines = path.read_text().split("\n")
    return [json.loads(lines[k + 9]) for k in range(0, len(lines) - 10, 11) if lines[k + 9].strip()]


def test_a_2012_comment_without_diff_hunk_line_or_side_is_stored_not_a_crash(shared_dir, store):
    raw = _replay_bodies(shared_dir / "fixtures/github/replay/Repository.testGetPullsComments.txt")[0][0]
    assert "diff_hunk" not in raw and "line" not in raw
    c = StoredComment.from_github(raw, "PyGithub/PyGithub")
    assert (c.pr, c.diff_hunk, c.line, c.side) == (31, None, None, None)
    assert store.upsert_comments([c]) == (1, 0)
    assert store.get_comment(1580134).body == "Review comment created for PyGithub"


def test_from_github_rejects_what_it_cannot_key():
    with pytest.raises(DataError, match="no integer 'id'"):
        StoredComment.from_github({"body": "x"}, "a/b")
    with pytest.raises(DataError, match="names no pull request"):
        StoredComment.from_github({"id": 5, "body": "x"}, "a/b")


def test_bots_are_recognised_by_type_or_login():
    assert StoredComment.from_github(_raw(1, user={"login": "ci", "type": "Bot"}), "a/b").is_bot
    assert StoredComment.from_github(_raw(2, user={"login": "dependabot[bot]", "type": "User"}), "a/b").is_bot
    assert not StoredComment.from_github(_raw(3), "a/b").is_bot


def test_upserts_are_idempotent_and_count_only_real_changes(store):
    comments = [StoredComment.from_github(_raw(n), "acme/widgets") for n in range(1, 6)]
    assert store.upsert_comments(comments) == (5, 0)
    assert store.upsert_comments(comments) == (0, 0)
    edited = StoredComment.from_github(_raw(3, body="edited", updated_at="2024-02-01T00:00:00Z"), "acme/widgets")
    assert store.upsert_comments([edited]) == (0, 1)
    assert store.get_comment(3).body == "edited"
    assert [c.id for c in store.iter_comments("acme/widgets")] == [1, 2, 3, 4, 5]
    assert list(store.iter_comments("other/repo")) == []


def test_a_known_pr_author_is_not_erased_by_a_harvest_that_does_not_know_it(store):
    store.upsert_comments([StoredComment.from_github(_raw(1), "acme/widgets", pr_author="alice", source="webhook")])
    store.upsert_comments([StoredComment.from_github(_raw(1), "acme/widgets")])
    assert store.get_comment(1).pr_author == "alice"
    assert store.pull_authors("acme/widgets") == {1: "alice"}
    store.upsert_pulls([PullRequestInfo("acme/widgets", 1, author="carol")])
    assert store.get_comment(1).pr_author == "carol"
    assert store.pull_authors("acme/widgets") == {1: "carol"}


def test_upsert_with_mark_pending_queues_only_changed_prs(store):
    a = StoredComment.from_github(_raw(1, pr=7), "acme/widgets")
    store.upsert_comments([a], mark_pending=True)
    assert store.pending_prs("acme/widgets") == [7]
    store.replace_examples("acme/widgets", [], pr=7)
    assert store.pending_prs("acme/widgets") == []
    store.upsert_comments([a], mark_pending=True)  # unchanged: nothing to rebuild
    assert store.pending_prs("acme/widgets") == []


def test_delete_comment_removes_it_and_marks_its_pr(store):
    store.upsert_comments([StoredComment.from_github(_raw(1, pr=4), "acme/widgets")])
    assert store.delete_comment(1) is True
    assert store.get_comment(1) is None
    assert store.pending_prs("acme/widgets") == [4]
    assert store.delete_comment(1) is False


def test_harvest_state_round_trips_and_clears(store):
    assert store.high_water_mark("acme/widgets") is None
    store.set_state("acme/widgets", "high_water", {"updated_at": "2024-01-01T00:00:00Z", "from": None})
    assert store.get_state("acme/widgets", "high_water")["updated_at"] == "2024-01-01T00:00:00Z"
    store.set_high_water_mark("acme/widgets", None)
    assert store.high_water_mark("acme/widgets") is None


def test_pr_file_cache_round_trips_with_its_commit(store):
    assert store.cached_pr_files("acme/widgets", 3) is None
    store.cache_pr_files("acme/widgets", 3, [], commit="abc")
    assert store.cached_pr_files("acme/widgets", 3) == ([], "abc")  # an empty list is cached too
    files = [CachedFile("a.py", "modified", "@@ -1 +1 @@\n-a\n+b"), CachedFile("new.py", "renamed", None, "old.py")]
    store.cache_pr_files("acme/widgets", 3, files, commit="def")
    assert store.cached_pr_files("acme/widgets", 3) == (files, "def")


def _example(n: int, pr: int = 1, negative: bool = False, created: str = "2024-01-01T00:00:00Z") -> Example:
    comments = [] if negative else [ExampleComment(2, "RIGHT", f"note {n}")]
    return Example(
        f"acme/widgets#{pr}:{n}", "acme/widgets", pr, "a.py", "@@ -1,2 +1,3 @@\n a\n+b\n c", comments, created, "github"
    )


def test_examples_replace_per_pr_and_stats_count_them(store):
    store.upsert_examples([_example(1, pr=1), _example(2, pr=1, negative=True), _example(3, pr=2)])
    store.replace_examples("acme/widgets", [_example(4, pr=1)], pr=1)
    ids = sorted(e.id for e in store.iter_examples("acme/widgets"))
    assert ids == ["acme/widgets#1:4", "acme/widgets#2:3"]
    assert store.count_examples() == (2, 0)
    store.upsert_comments([StoredComment.from_github(_raw(1), "acme/widgets")])
    stats = store.stats()
    assert stats["comments"] == 1 and stats["positive"] == 2 and stats["negative"] == 0
    assert stats["repos"]["acme/widgets"]["prs"] == 1
    assert stats["schema_version"] == len(MIGRATIONS)


def test_examples_come_back_oldest_first_and_equal(store):
    late, early = _example(1, created="2024-05-01T00:00:00Z"), _example(2, created="2023-05-01T00:00:00Z")
    assert store.upsert_examples([late, early]) == (2, 0)
    assert store.upsert_examples([late]) == (0, 1)
    assert list(store.iter_examples()) == [early, late]


def test_feedback_is_upserted_by_identity(store):
    reactions = Feedback("acme/widgets", 1, 99, "reactions", "", json.dumps({"+1": 1}))
    reply = Feedback("acme/widgets", 1, 99, "reply", "bob", "thanks, fixed", ref_id=100)
    store.record_feedback([reactions, reply, reply])
    store.record_feedback([Feedback("acme/widgets", 1, 99, "reactions", "", json.dumps({"+1": 1, "-1": 2}))])
    rows = list(store.iter_feedback("acme/widgets", 99))
    assert len(rows) == 2
    assert rows[0].counts() == {"+1": 1, "-1": 2}
    assert rows[1].content == "thanks, fixed"


def test_secrets_never_reach_the_database_file(store):
    raw = _raw(1, body=f"use token {SECRET_TOKEN} here", diff_hunk=f"@@ -1,2 +1,3 @@\n a\n+key = '{SECRET_AWS}'")
    store.upsert_comments([StoredComment.from_github(raw, "acme/widgets")])
    direct = StoredComment("acme/widgets", 1, 2, body=f"again {SECRET_TOKEN}", diff_hunk=None)  # not via from_github
    store.upsert_comments([direct])
    store.cache_pr_files(
        "acme/widgets", 1, [CachedFile("a.py", "modified", f"@@ -1 +1 @@\n-x\n+token = '{SECRET_TOKEN}'")]
    )
    ex = Example(
        "e1",
        "acme/widgets",
        1,
        "a.py",
        f"@@ -1 +1 @@\n-x\n+k = '{SECRET_AWS}'",
        [ExampleComment(1, "RIGHT", SECRET_TOKEN)],
    )
    store.upsert_examples([ex])
    store.record_feedback([Feedback("acme/widgets", 1, 5, "reply", "bob", f"leaked {SECRET_TOKEN}", ref_id=6)])
    store.close()
    blob = b"".join(p.read_bytes() for p in store.path.parent.glob(store.path.name + "*"))
    assert SECRET_TOKEN.encode() not in blob and SECRET_AWS.encode() not in blob
    assert b"<REDACTED>" in blob


def test_utc_timestamp_normalises_and_refuses_garbage():
    assert utc_timestamp("2024-01-02") == "2024-01-02T00:00:00Z"
    assert utc_timestamp("2024-01-02T03:04:05+02:00") == "2024-01-02T01:04:05Z"
    assert utc_timestamp(None) is None
    with pytest.raises(DataError, match="ISO-8601"):
        utc_timestamp("yesterday")


def _writer(path: str, start: int, count: int) -> None:
    store = Store(path)
    for n in range(start, start + count):  # one transaction each, like a webhook worker
        store.upsert_comments([StoredComment.from_github(_raw(n, pr=n % 7), "acme/widgets")], mark_pending=True)


def test_concurrent_writers_in_threads_and_processes_lose_nothing(store):
    ctx = multiprocessing.get_context("fork")  # a forked child must open its own connection
    procs = [ctx.Process(target=_writer, args=(str(store.path), 1 + k * 150, 150)) for k in range(2)]
    threads = [threading.Thread(target=_writer, args=(str(store.path), 1000 + k * 100, 100)) for k in range(2)]
    for w in procs + threads:
        w.start()
    store.upsert_examples([_example(n) for n in range(50)])
    for w in procs + threads:
        w.join(60)
    assert all(p.exitcode == 0 for p in procs)
    assert len(list(store.iter_comments())) == 500
    assert store.pending_prs("acme/widgets") == list(range(7))
    assert store.count_examples() == (50, 0)


def test_a_github_comment_and_a_gitlab_note_with_the_same_id_both_survive(tmp_path):
    """Each forge numbers its comments itself: the store keys them by (forge, id)."""
    store = Store(tmp_path / "revbot.db")
    github = StoredComment.from_github(_raw(4242, body="from GitHub"), "acme/widgets")
    note = dict(_raw(4242, body="from GitLab"), pr=3)
    gitlab = StoredComment.from_github(note, "acme/tools/widgets", source="gitlab", forge="gitlab")
    assert store.upsert_comments([github, gitlab]) == (2, 0)
    assert store.get_comment(4242).body == "from GitHub"
    assert store.get_comment(4242, "gitlab").body == "from GitLab"
    assert sorted((c.forge, c.repo) for c in store.iter_comments()) == [
        ("github", "acme/widgets"),
        ("gitlab", "acme/tools/widgets"),
    ]
    edited = StoredComment.from_github(
        dict(note, body="edited on GitLab", updated_at="2024-02-01T00:00:00Z"), "acme/tools/widgets", forge="gitlab"
    )
    assert store.upsert_comments([edited]) == (0, 1)
    assert store.get_comment(4242).body == "from GitHub"  # the GitHub comment is not the one edited
    assert store.delete_comment(4242, "gitlab") is True
    assert store.get_comment(4242).body == "from GitHub" and store.get_comment(4242, "gitlab") is None
    assert store.upsert_comments([github]) == (0, 0)  # the GitLab deletion does not block GitHub's id
    store.record_feedback(
        [
            Feedback("acme/widgets", 1, 4242, "reactions", "", '{"+1": 1}'),
            Feedback("acme/tools/widgets", 3, 4242, "reactions", "", '{"-1": 2}', forge="gitlab"),
        ]
    )
    rows = sorted((f.forge, f.repo, f.content) for f in store.iter_feedback())
    assert rows == [("github", "acme/widgets", '{"+1": 1}'), ("gitlab", "acme/tools/widgets", '{"-1": 2}')]


def test_a_store_from_before_forge_keys_is_migrated_and_its_github_rows_stay_valid(tmp_path):
    path = tmp_path / "revbot.db"
    old = [(name, sql) for name, sql in MIGRATIONS if name < "0010"]
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE migrations (id INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL, applied_at TEXT NOT NULL)")
    for number, (name, sql) in enumerate(old, start=1):
        con.executescript(sql)
        con.execute("INSERT INTO migrations VALUES (?, ?, 'then')", (number, name))
    github = StoredComment.from_github(_raw(7, body="kept"), "acme/widgets")
    columns = [k for k in vars(github) if k != "forge"]
    rows = [
        {**vars(github)},
        {**vars(github), "id": 8, "repo": "acme/tools/widgets", "source": "webhook"},  # a nested path: GitLab's
        {**vars(github), "id": 9, "repo": "team/app", "source": "gitlab"},
    ]
    for row in rows:
        values = [json.dumps(row["reactions"]) if k == "reactions" else row[k] for k in columns]
        con.execute(
            f"INSERT INTO comments ({', '.join(columns)}, digest, stored_at) VALUES ({', '.join('?' * len(columns))}, ?, 'then')",
            [*values, github.digest()],
        )
    con.execute("INSERT INTO deleted_comments (id, deleted_at) VALUES (5, 'then')")
    con.execute(
        "INSERT INTO bot_feedback (key, repo, pr, comment_id, kind, author, content, source, stored_at) "
        "VALUES ('reactions:8', 'acme/tools/widgets', 1, 8, 'reactions', '', '{}', 'webhook', 'then'), "
        "('reactions:7', 'acme/widgets', 1, 7, 'reactions', '', '{}', 'github', 'then')"
    )
    con.commit()
    con.close()

    store = Store(path)
    assert store.schema_version == len(MIGRATIONS)
    assert store.get_comment(7).body == "kept" and store.get_comment(7).forge == "github"
    assert store.get_comment(8) is None and store.get_comment(8, "gitlab").repo == "acme/tools/widgets"
    assert store.get_comment(9, "gitlab") is not None
    assert store.upsert_comments([github]) == (0, 0)  # the old GitHub row is the same comment, unchanged
    assert store.upsert_comments([StoredComment.from_github(_raw(5), "acme/widgets")]) == (0, 0)  # still deleted
    assert sorted((f.forge, f.key) for f in store.iter_feedback()) == [
        ("github", "reactions:7"),
        ("gitlab", "gitlab:reactions:8"),
    ]
