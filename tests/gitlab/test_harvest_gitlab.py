"""`revbot harvest gitlab` end to end: real HTTP to the GitLab simulator, real SQLite. The same
filters as GitHub's harvest, hunks rebuilt at the note's SHAs, replies attached, secrets scrubbed,
incremental and resumable, 429 waited out, the API root and forge recorded for retrain."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from gitlab_kit import BASE, PROJECT

from adapters.gitlab import GitLabClient
from adapters.store import Store
from harvest import mine as harvest_mine
from harvest.mine import HarvestInterrupted, HarvestOptions, harvest_github
from revbot.cli import cli

SECRET = "glpat-" + "Z9y8X7w6V5u4T3s2R1q0"


def _history(sim) -> None:
    """MR 1 (by dev): a kept comment with a reply, a bot's, the author's own, a trivial one, a 👎-heavy one."""
    bot = "project_7_bot_3f2a"  # the user of a project access token
    keep = sim.add_note(
        PROJECT, 1, f"Please rename this; and never commit {SECRET}.", author="rep", file="a.py", line=5
    )
    sim.add_note(PROJECT, 1, "Done, renamed it.", author="dev", reply_to=keep["discussion"])
    sim.add_note(PROJECT, 1, "Consider a named constant here.", author=bot, file="a.py", line=5)
    sim.add_note(PROJECT, 1, "Note to self: revisit this later.", author="dev", file="c.py", line=1)
    sim.add_note(PROJECT, 1, "LGTM", author="rep", file="a.py", line=15, side="old")
    bad = sim.add_note(PROJECT, 1, "This breaks the build on Windows.", author="lead", file="a.py", line=5)
    sim.award(PROJECT, 1, bad["id"], "thumbsdown", user="dev")
    sim.award(PROJECT, 1, bad["id"], "thumbsdown", user="rep")
    sim.add_note(PROJECT, 1, "Thanks for the review, all addressed.", author="dev")  # not on a diff line


def test_cli_harvest_applies_the_filters_and_records_where_it_came_from(glsim, tmp_path, monkeypatch):
    _history(glsim)
    monkeypatch.setenv("GITLAB_TOKEN", "t")
    db = tmp_path / "revbot.db"
    result = CliRunner().invoke(
        cli, ["harvest", "gitlab", PROJECT, "--url", glsim.url, "--db", str(db), "--format", "json"]
    )
    assert result.exit_code == 0, result.output
    d = json.loads(result.output)
    assert d["comments_fetched"] == 6 and d["prs"] == 1
    assert d["dropped"]["bot"] == 1 and d["dropped"]["self_comment"] == 1
    assert d["dropped"]["trivial"] == 1 and d["dropped"]["downvoted"] == 1
    assert d["kept"] == 1 and d["replies"] == 1 and d["positive"] == 1
    store = Store(db)
    [example] = [e for e in store.iter_examples(PROJECT) if e.comments]
    assert example.path == "a.py" and example.comments[0].line == 5 and example.comments[0].side == "RIGHT"
    assert "+line five" in example.hunk and example.source == "gitlab"
    assert (
        SECRET not in json.dumps([c.body for c in store.iter_comments(PROJECT)])
        and "<REDACTED>" in example.comments[0].body
    )
    assert example.meta["replies"] == 1
    assert store.api_url(PROJECT) == f"{glsim.url}/api/v4" and store.get_state(PROJECT, "forge") == "gitlab"


def test_a_second_run_reads_only_what_changed_and_a_killed_run_resumes(glsim, tmp_path, monkeypatch):
    _history(glsim)
    store = Store(tmp_path / "revbot.db")
    client = GitLabClient("t", url=glsim.url)
    monkeypatch.setattr(harvest_mine, "PAGE_SIZE", 2)

    def kill(page: int) -> None:
        if page == 2:
            raise KeyboardInterrupt

    with pytest.raises(HarvestInterrupted):
        harvest_github(client, store, PROJECT, HarvestOptions(), on_page=kill)
    assert len(list(store.iter_comments(PROJECT))) == 4  # two pages committed before the kill
    resumed = harvest_github(client, store, PROJECT, HarvestOptions())
    assert resumed.counts["kept"] == 1 and len(list(store.iter_comments(PROJECT))) == 6

    glsim.add_merge_request(PROJECT, {"b.py": "x = 2\ny = 3\n"}, author="lead", title="Two")
    glsim.add_note(PROJECT, 2, "Why a second variable here?", author="rep", file="b.py", line=2)
    glsim.inject_429(1, retry_after=1)
    again = harvest_github(client, store, PROJECT, HarvestOptions())
    assert again.inserted == 1 and again.prs_built == 1  # MR 1's notes are not new
    assert {e.pr for e in store.iter_examples(PROJECT) if e.comments} == {1, 2}


def test_harvest_without_a_token_says_which_variable_to_set(glsim, tmp_path, monkeypatch):
    monkeypatch.delenv("GITLAB_TOKEN", raising=False)
    monkeypatch.delenv("REVBOT_GITLAB_TOKEN", raising=False)
    result = CliRunner().invoke(cli, ["harvest", "gitlab", PROJECT, "--url", glsim.url, "--db", str(tmp_path / "x.db")])
    assert result.exit_code == 2 and "GITLAB_TOKEN" in result.output


def test_base_is_untouched_by_harvest(glsim):
    assert glsim.commits[glsim.projects[PROJECT]["branches"]["main"]]["files"]["a.py"] == BASE


def test_retrain_harvests_a_gitlab_project_again_from_its_recorded_instance(glsim, tmp_path, monkeypatch):
    from adapters.github import GitHubClient
    from revbot.retrain import GitHubClients

    monkeypatch.setenv("REVBOT_GITLAB_TOKEN", "t")
    store = Store(tmp_path / "revbot.db")
    harvest_github(GitLabClient("t", url=glsim.url), store, PROJECT, HarvestOptions())
    store.set_api_url("acme/gh", "http://127.0.0.1:9")
    clients = GitHubClients(store, None, None, None)
    again = clients(PROJECT)
    assert isinstance(again, GitLabClient) and again.api_url == f"{glsim.url}/api/v4"
    assert again.get_pull(PROJECT, 1)["number"] == 1  # the recorded root and the token from the settings work
    assert isinstance(clients("acme/gh"), GitHubClient)
    clients.close()


def test_the_demo_project_harvests_into_the_same_examples_from_gitlab_as_from_github(tmp_path):
    """Parity: the demo's sample history served as merge requests with DiffNote threads gives the same
    comments, filters, examples and feedback as served as pull requests (only the requests differ)."""
    from adapters.github import GitHubClient
    from revbot.dev.demo_data.sample import build_sample_project, to_seed
    from revbot.dev.demo_gitlab import GitLabDemoForge
    from revbot.dev.github_sim import GitHubSimulator

    project = build_sample_project()
    on_github, on_gitlab = Store(tmp_path / "github.db"), Store(tmp_path / "gitlab.db")
    with GitHubSimulator(to_seed(project, tokens=[{"token": "t", "login": "x"}])) as sim:
        github = harvest_github(GitHubClient("t", api_url=sim.url), on_github, project.repo, HarvestOptions())
    forge = GitLabDemoForge("t", "s").start(project)
    try:
        gitlab = harvest_github(forge.client(), on_gitlab, project.repo, HarvestOptions())
    finally:
        forge.stop()
    skip = {"requests", "requests_by_kind", "rate_limit_remaining", "rate_limit"}
    a, b = github.to_dict(), gitlab.to_dict()
    assert {k: a[k] for k in a if k not in skip} == {k: b[k] for k in b if k not in skip}
    assert a["kept"] > 50 and a["dropped"]["bot"] and a["dropped"]["downvoted"] and a["replies"]

    def content(store: Store) -> dict:
        """Each example but for where it came from (source) and the forge's own comment ids."""
        out = {}
        for e in store.iter_examples(project.repo):
            d = e.to_dict()
            d.pop("source")
            d["meta"].pop("comment_ids", None)
            out[e.id] = d
        return out

    assert {e.source for e in on_gitlab.iter_examples(project.repo)} == {"gitlab"}
    assert len(content(on_github)) > 100 and content(on_github) == content(on_gitlab)


def test_a_gitlab_note_and_a_github_comment_with_one_id_share_a_store_and_deletions_stay_per_forge(glsim, tmp_path):
    """GitLab's note ids and GitHub's comment ids are counted apart: a note and a comment with the
    same number are two comments, and a note deleted on GitLab is reported as such and removes
    only the note."""
    from adapters.github import GitHubClient
    from revbot.dev.github_sim import GitHubSimulator

    _history(glsim)
    store = Store(tmp_path / "revbot.db")
    gl = GitLabClient("t", url=glsim.url)
    harvest_github(gl, store, PROJECT, HarvestOptions())
    [note] = [c for c in store.iter_comments(PROJECT) if "named constant" in c.body]
    on_github = {
        "id": note.id,
        "path": "a.py",
        "line": 2,
        "side": "RIGHT",
        "body": "The GitHub comment that has this number.",
        "user": "bob",
        "created_at": "2024-01-02T00:00:00Z",
    }
    seed = {
        "tokens": [{"token": "gh", "login": "x"}],
        "repos": [
            {
                "owner": "acme",
                "name": "gh",
                "pulls": [
                    {
                        "number": 1,
                        "user": "alice",
                        "files": [{"filename": "a.py", "status": "modified", "patch": "@@ -1,2 +1,2 @@\n a\n-b\n+B"}],
                        "comments": [on_github],
                    }
                ],
            }
        ],
    }
    with GitHubSimulator(seed) as sim:
        github = harvest_github(GitHubClient("gh", api_url=sim.url), store, "acme/gh", HarvestOptions())
    assert github.inserted == 1
    assert store.get_comment(note.id, "gitlab").body == note.body
    assert store.get_comment(note.id).body == on_github["body"] and store.get_comment(note.id).repo == "acme/gh"

    glsim.delete_note(PROJECT, 1, note.id)
    full = harvest_github(gl, store, PROJECT, HarvestOptions(full=True))
    assert full.deleted == 1 and "1 deleted on GitLab" in full.text() and "GitHub" not in full.text()
    assert store.get_comment(note.id, "gitlab") is None and store.get_comment(note.id) is not None
