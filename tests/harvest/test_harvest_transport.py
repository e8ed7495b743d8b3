"""Harvest over a transport that breaks answers (issue 11, item 5): a 200 whose JSON is cut short
and a body cut off mid-transfer are asked for again; when that keeps happening the harvest stops
with a GitHubError that says so (the CLI prints it), never a JSONDecodeError traceback, and what
was stored stays for the next run."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from harvest_kit import REPO, many_comments_seed

from bot.errors import GitHubError
from harvest.mine import harvest_github

COMMENTS = r"/pulls/comments$"
ROUTE = "GET /repos/{owner}/{repo}/pulls/comments"


@pytest.mark.parametrize("fault", ["truncated", "cutoff"])
def test_a_broken_answer_is_asked_again_and_the_harvest_matches_a_clean_one(
    sim_factory, client_for, store, tmp_path, fault
):
    from adapters.store import Store

    seed = many_comments_seed(prs=3, per_pr=2)
    clean_sim, broken_sim = sim_factory(seed), sim_factory(seed)
    clean = harvest_github(client_for(clean_sim), Store(tmp_path / "clean.db"), REPO)
    broken_sim.inject(fault, method="GET", path=COMMENTS, count=2)
    client = client_for(broken_sim)
    summary = harvest_github(client, store, REPO)
    assert broken_sim.stats()["faults_served"] == 2
    assert broken_sim.stats()["by_route"][ROUTE] == 3  # asked twice more
    assert client.waits[:2] == [0.01, 0.02]  # backoff between the attempts
    assert (summary.comments_fetched, summary.examples_written) == (clean.comments_fetched, clean.examples_written)
    assert summary.requests["comments"] == 3


def test_answers_that_stay_broken_end_in_a_clear_error_and_keep_what_was_stored(sim_factory, client_for, store):
    sim = sim_factory(many_comments_seed(prs=2, per_pr=1))
    sim.inject("truncated", method="GET", path=COMMENTS, count=100)
    with pytest.raises(GitHubError) as caught:
        harvest_github(client_for(sim, max_retries=2), store, REPO)
    message = str(caught.value)
    assert "arrived broken 3 times in a row" in message and "JSON body is incomplete" in message
    assert "listing review comments of acme/widgets" in message and sim.url in message
    assert sim.stats()["by_route"][ROUTE] == 3
    sim.clear_faults()
    assert harvest_github(client_for(sim), store, REPO).comments_fetched == 2  # the next run just works


def test_cli_reports_a_broken_transport_without_a_traceback(sim_factory, tmp_path, monkeypatch):
    from harvest.cli import harvest

    sim = sim_factory(many_comments_seed(prs=1, per_pr=1))
    sim.inject("cutoff", method="GET", path=r"/pulls/\d+/files$", count=1)  # one broken answer: retried
    monkeypatch.delenv("GITHUB_TOKEN", raising=False)
    result = CliRunner().invoke(
        harvest,
        ["github", REPO, "--db", str(tmp_path / "h.db"), "--api-url", sim.url, "--token", "t", "--format", "json"],
    )
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output and sim.stats()["faults_served"] == 1
