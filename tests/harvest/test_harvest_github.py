"""`revbot harvest github` end to end: real HTTP to the GitHub simulator, real SQLite."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from harvest_kit import REPO, SECRET_AWS, SECRET_TOKEN, comment, hunk_patch, many_comments_seed, pull, stamp

from adapters.store import Store
from bot.errors import GitHubError
from bot.examples import fingerprint
from harvest.mine import HarvestInterrupted, HarvestOptions, harvest_github


def _filters_seed() -> dict:
    bot = {"login": "dependabot[bot]", "type": "Bot"}
    pr1 = pull(
        1,
        "alice",
        files={"src/app.py": hunk_patch(3, "_1")},
        comments=[
            comment(1, 2, "Please rename this variable to something clearer."),
            {
                "id": 10_002,
                "in_reply_to_id": 10_001,
                "body": "Done, renamed it.",
                "user": "alice",
                "created_at": stamp(1002),
            },
            comment(3, 42, "Bump this dependency to the patched release.", user=bot),
            comment(4, 43, "Note to self: revisit this later.", user="alice"),
            comment(5, 82, "LGTM", user="carol"),
            comment(6, 83, "This breaks the build on Windows.", user="dave", reactions={"-1": 2}),
            comment(
                7,
                3,
                "Is this thread-safe at all?",
                user="erin",
                created_at="2023-06-01T00:00:00Z",
                updated_at=stamp(1007),
            ),
        ],
    )
    pr2 = pull(
        2,
        "bob",
        files={"lib/x.py": hunk_patch(2, "_2")},
        comments=[
            comment(8, 2, "Consider caching this lookup.", user="carol", path="lib/x.py"),
            comment(
                9,
                None,
                "This was outdated by a later push.",
                user="carol",
                path="lib/x.py",
                original_line=3,
                diff_hunk="@@ -1,4 +1,5 @@ def f0_2():\n a0 = 1\n-b0 = 2\n+b0 = 3_2\n+c0 = 4",
            ),
        ],
    )
    pr3 = pull(3, "carol")  # no comments: never fetched
    return {"repos": [{"owner": "acme", "name": "widgets", "pulls": [pr1, pr2, pr3]}]}


def test_harvest_counts_every_filter_attaches_replies_and_is_idempotent(sim_factory, client_for, store):
    sim = sim_factory(_filters_seed())
    client = client_for(sim)
    first = harvest_github(client, store, REPO, HarvestOptions(since="2024-01-01"))
    d = first.to_dict()
    assert d["comments_fetched"] == 9 and d["comments_inserted"] == 9 and d["prs"] == 2
    assert d["dropped"] == {
        "no_diff_hunk": 0,
        "outside_window": 1,
        "not_in_authors": 0,
        "bot": 1,
        "bot_text": 0,
        "template": 0,
        "self_comment": 1,
        "downvoted": 1,
        "trivial": 1,
        "bad_diff_hunk": 0,
    }
    assert d["kept"] == 3 and d["replies"] == 1 and d["comments_considered"] == 9
    assert d["positive"] == 3 and d["from_pr_hunk"] == 2 and d["from_diff_hunk"] == 1
    assert d["negative"] == 1  # PR 1's three hunks all had comments; PR 2 has one hunk nobody touched
    # requests: 1 comment page, 1 page of the PR list for both authors (cheaper than 2 reads), 2 file lists
    assert d["requests_by_kind"] == {"comments": 1, "authors": 1, "files": 2}
    assert d["author_lookup"] == "bulk"
    assert d["rate_limit_remaining"] is not None
    examples = list(store.iter_examples(REPO))
    rename = next(e for e in examples if e.comments and "rename" in e.comments[0].body)
    assert rename.meta["replies"] == 1 and [c.body for c in rename.comments] == [
        "Please rename this variable to something clearer."
    ]
    assert store.get_comment(10_002).in_reply_to_id == 10_001  # the reply is stored
    assert "Change 3" not in json.dumps(sim.stats())  # sanity: stats are counts, not bodies

    served = sim.stats()["total"]
    again = harvest_github(client, store, REPO, HarvestOptions(since="2024-01-01"))
    assert (again.inserted, again.updated, again.prs_built) == (0, 0, 0)
    assert again.requests["comments"] == 1 and sim.stats()["total"] - served == 1
    assert fingerprint(store.iter_examples(REPO)) == fingerprint(examples)

    full = harvest_github(client, store, REPO, HarvestOptions(full=True, since="2024-01-01"))
    assert full.prs_built == 2 and full.files_cached == 2 and full.files_fetched == 0
    assert fingerprint(store.iter_examples(REPO)) == fingerprint(examples)


def test_a_full_reharvest_drops_comments_deleted_on_github(sim_factory, client_for, store):
    harvest_github(client_for(sim_factory(_filters_seed())), store, REPO)
    assert any("caching" in c.body for e in store.iter_examples(REPO) for c in e.comments)
    after = _filters_seed()  # the same repository once comment 10008 was deleted on GitHub
    after["repos"][0]["pulls"][1]["comments"] = [
        c for c in after["repos"][0]["pulls"][1]["comments"] if c["id"] != 10_008
    ]
    client = client_for(sim_factory(after))
    incremental = harvest_github(client, store, REPO)
    assert incremental.deleted == 0 and store.get_comment(10_008) is not None  # a listing cannot show deletions
    full = harvest_github(client, store, REPO, HarvestOptions(full=True))
    assert full.deleted == 1 and store.get_comment(10_008) is None
    assert not any("caching" in c.body for e in store.iter_examples(REPO) for c in e.comments)


def test_incremental_harvest_reads_only_new_comments(sim_factory, client_for, store):
    sim = sim_factory(many_comments_seed(prs=5, per_pr=50))
    client = client_for(sim)
    first = harvest_github(client, store, REPO)
    assert first.comments_fetched == 250 and first.requests["comments"] == 3
    sim.add_comments(
        REPO,
        2,
        [
            comment(900 + k, 42, f"Later remark number {k} on this.", created_at=f"2025-01-01T00:00:0{k}Z")
            for k in range(3)
        ],
    )
    second = harvest_github(client, store, REPO)
    assert second.requests["comments"] == 1
    assert second.inserted == 3 and second.prs_built == 1  # only PR 2 is rebuilt
    assert second.requests["files"] == 0 and second.files_cached == 1  # same head: files from the store
    assert len(list(store.iter_comments(REPO))) == 253


def test_an_interrupted_harvest_resumes_and_loses_nothing(sim_factory, client_for, tmp_path):
    sim = sim_factory(many_comments_seed(prs=5, per_pr=50))
    reference = Store(tmp_path / "reference.db")
    harvest_github(client_for(sim), reference, REPO)

    store = Store(tmp_path / "interrupted.db")

    def kill_after_two(page: int) -> None:
        if page == 2:
            raise KeyboardInterrupt

    with pytest.raises(HarvestInterrupted) as caught:
        harvest_github(client_for(sim), store, REPO, on_page=kill_after_two)
    assert caught.value.exit_code == 130 and "resume" in str(caught.value)
    assert len(list(store.iter_comments(REPO))) == 200  # both committed pages are kept
    assert store.high_water_mark(REPO)["updated_at"] == stamp(1200)
    assert list(store.iter_examples()) == []

    resumed = harvest_github(client_for(sim), store, REPO)
    assert resumed.requests["comments"] == 1  # from the high-water mark: one page, not three
    assert len(list(store.iter_comments(REPO))) == 250
    assert fingerprint(store.iter_examples()) == fingerprint(reference.iter_examples())


class _DiesOnSecondFiles:
    """A client that is killed while building: after the first PR's files."""

    def __init__(self, inner):
        self.inner, self.calls = inner, 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def pull_files(self, repo, number):
        self.calls += 1
        if self.calls == 2:
            raise KeyboardInterrupt
        return self.inner.pull_files(repo, number)


def test_an_interrupted_build_resumes_without_refetching_comments(sim_factory, client_for, tmp_path):
    sim = sim_factory(many_comments_seed(prs=3, per_pr=4))
    store = Store(tmp_path / "s.db")
    with pytest.raises(HarvestInterrupted):
        harvest_github(_DiesOnSecondFiles(client_for(sim)), store, REPO)
    assert store.pending_prs(REPO) == [2, 3]  # PR 1 done, the rest still queued
    resumed = harvest_github(client_for(sim), store, REPO)
    assert resumed.prs_built == 2 and resumed.requests["files"] == 2 and resumed.inserted == 0
    assert store.pending_prs(REPO) == []
    assert {e.pr for e in store.iter_examples()} == {1, 2, 3}


def test_secrets_in_bodies_hunks_and_patches_never_reach_the_db_file(sim_factory, client_for, store):
    leaky = {"src/app.py": hunk_patch(1) + f"\n@@ -50,2 +51,3 @@\n x\n+aws_key = '{SECRET_AWS}'\n y"}
    seed = {
        "repos": [
            {
                "owner": "acme",
                "name": "widgets",
                "pulls": [
                    pull(
                        1,
                        "alice",
                        files=leaky,
                        comments=[
                            comment(1, 52, f"Never commit keys like this, and revoke {SECRET_TOKEN} too."),
                            comment(
                                2,
                                2,
                                "Also this one is suspicious, please check.",
                                diff_hunk=f"@@ -1,4 +1,5 @@\n a0 = 1\n-b0 = 2\n+b0 = '{SECRET_TOKEN}'",
                            ),
                        ],
                    )
                ],
            }
        ]
    }
    summary = harvest_github(client_for(sim_factory(seed)), store, REPO)
    assert summary.positives == 2
    store.close()
    blob = b"".join(p.read_bytes() for p in store.path.parent.glob(store.path.name + "*"))
    assert SECRET_TOKEN.encode() not in blob and SECRET_AWS.encode() not in blob
    assert blob.count(b"<REDACTED>") >= 3


def test_faults_are_survived(sim_factory, client_for, store):
    sim = sim_factory(many_comments_seed(prs=3, per_pr=40))
    sim.inject("error", count=2, path=r"/pulls/comments$")  # two 500s on the comment listing
    sim.inject("secondary", count=1, path=r"/files$", retry_after=7)  # a secondary limit on PR files
    sim.inject("429", count=1, path=r"/pulls$", retry_after=3)  # on the PR list (authors)
    client = client_for(sim)
    summary = harvest_github(client, store, REPO)
    assert summary.comments_fetched == 120 and summary.prs_built == 3 and summary.positives > 0
    assert summary.requests["comments"] == 4  # two pages + two retried 500s
    assert 7 in client.waits or 7.0 in client.waits  # Retry-After honoured
    assert sim.stats()["faults_served"] == 4


def test_an_exhausted_rate_limit_stops_with_a_message_then_resumes(sim_factory, client_for, store):
    sim = sim_factory(many_comments_seed(prs=2, per_pr=10))
    sim.set_rate_limit(remaining=0, reset_in=3600)
    with pytest.raises(GitHubError, match="rate limit"):
        harvest_github(client_for(sim, max_rate_wait=60), store, REPO)
    sim.set_rate_limit(remaining=5000)
    summary = harvest_github(client_for(sim), store, REPO)
    assert summary.comments_fetched == 20 and summary.prs_built == 2


def test_unknown_repository_and_bad_token_are_clear_errors(sim_factory, client_for, store):
    sim = sim_factory({"tokens": ["good-token"], **many_comments_seed(prs=1, per_pr=1)})
    with pytest.raises(GitHubError, match="acme/nope not found"):
        harvest_github(client_for(sim, token="good-token"), store, "acme/nope")
    with pytest.raises(GitHubError, match="401") as caught:
        harvest_github(client_for(sim, token=SECRET_TOKEN), store, REPO)
    assert SECRET_TOKEN not in str(caught.value)


def test_pr_authors_are_listed_in_bulk_when_that_is_fewer_requests(sim_factory, client_for, store):
    sim = sim_factory(many_comments_seed(prs=40, per_pr=1, start_pr=31, total_prs=120))
    summary = harvest_github(client_for(sim), store, REPO)
    assert summary.author_lookup == "bulk" and summary.requests["authors"] == 1  # PRs 31-70: one page, not 40 requests
    assert set(range(31, 71)) <= set(store.pull_authors(REPO))
    assert summary.requests["files"] == 40

    store2 = Store(store.path.parent / "few.db")
    few = sim_factory(many_comments_seed(prs=2, per_pr=1, start_pr=250, total_prs=300))
    summary = harvest_github(client_for(few), store2, REPO)
    assert summary.author_lookup == "per-pr" and summary.requests["authors"] == 2  # 2 reads beat 3 pages


def test_a_2012_comment_without_a_diff_hunk_is_skipped_and_counted(shared_dir, store):
    lines = (shared_dir / "fixtures/github/replay/Repository.testGetPullsComments.txt").read_text().split("\n")
    old = json.loads(lines[9])[0]

    class Recorded:  # serves the recorded answer; the shape is the point here, not the transport
        request_count = 0

        def iter_review_comments(self, repo, **kw):
            self.request_count += 1
            yield old

        def get_pull(self, repo, number):
            self.request_count += 1
            return {"number": number, "user": {"login": "jacquev6"}, "head": {"sha": "8a4f306d"}}

        def pull_files(self, repo, number):
            raise AssertionError("no kept comment: files must not be fetched")

        rate_limiting = (4961, 5000)

    summary = harvest_github(Recorded(), store, "PyGithub/PyGithub")
    assert summary.dropped["no_diff_hunk"] == 1 and summary.examples_written == 0
    assert store.get_comment(1580134) is not None


def test_cli_harvest_github_prints_a_summary_and_never_the_token(sim_factory, tmp_path, monkeypatch):
    from harvest.cli import harvest

    sim = sim_factory({"tokens": [SECRET_TOKEN], **_filters_seed()})
    db = tmp_path / "cli.db"
    monkeypatch.setenv("GITHUB_TOKEN", SECRET_TOKEN)
    runner = CliRunner()
    ok = runner.invoke(
        harvest,
        [
            "github",
            REPO,
            "--db",
            str(db),
            "--api-url",
            sim.url,
            "--format",
            "json",
            "--since",
            "2024-01-01",
            "--deny-bots",
            "carol",
            "--negatives-ratio",
            "0",
        ],
    )
    assert ok.exit_code == 0, ok.output
    data = json.loads(ok.output)
    assert data["dropped"]["bot"] == 4 and data["negative"] == 0 and data["positive"] == 1  # carol denied as a bot
    text = runner.invoke(harvest, ["github", REPO, "--db", str(db), "--api-url", sim.url])
    assert "comments fetched" in text.output and "rate limit left" in text.output
    bad = runner.invoke(harvest, ["github", REPO, "--db", str(db), "--api-url", sim.url, "--token", "ghp_" + "x" * 36])
    assert bad.exit_code == 1 and "401" in bad.output and "x" * 36 not in bad.output and "Traceback" not in bad.output
    assert SECRET_TOKEN not in ok.output + text.output + bad.output
    badrepo = runner.invoke(harvest, ["github", "not-a-repo", "--db", str(db), "--api-url", sim.url])
    assert badrepo.exit_code == 2 and "OWNER/REPO" in badrepo.output
