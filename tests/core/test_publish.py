"""`revbot review --post`: the CI path's one review per head, over real HTTP to the GitHub simulator
(a model answering through an OpenAI-compatible server on loopback)."""

from __future__ import annotations

import io
import logging
import sys

import pytest

from adapters.github import GitHubClient
from adapters.publish import parse_target
from bot.errors import UsageError
from bot.formats import extract_fingerprints, review_marker
from revbot.dev.github_sim import GitHubSimulator
from tests.core.conftest import prompt_anchors, prompt_path

TOKEN = "ghp_" + "Ci7oken" * 5 + "x"
REPO = "acme/widgets"
PATCH = "@@ -1,4 +1,5 @@\n import os\n-x = 1\n+x = 2\n+y = 3\n def f():\n     return x\n"
DIFF = "diff --git a/a.py b/a.py\nindex 1111111..2222222 100644\n--- a/a.py\n+++ b/a.py\n" + PATCH
EXTRA = (
    "diff --git a/extra.py b/extra.py\nnew file mode 100644\n--- /dev/null\n+++ b/extra.py\n"
    "@@ -0,0 +1,2 @@\n+import sys\n+print(sys.argv)\n"
)


def seed() -> dict:
    return {
        "tokens": [TOKEN, {"token": "read-only-token", "login": "forker", "permission": "read"}],
        "repos": [
            {
                "owner": "acme",
                "name": "widgets",
                "default_branch": "main",
                "pulls": [
                    {
                        "number": 7,
                        "title": "Tune x",
                        "user": "alice",
                        "head": "feature",
                        "files": [{"filename": "a.py", "status": "modified", "patch": PATCH.rstrip("\n")}],
                    }
                ],
            }
        ],
    }


def answer(inp):
    """Comments on the second line shown (x = 2 in a.py) and on a line that is not in the diff."""
    anchors = prompt_anchors(inp)
    return f"{anchors[min(2, len(anchors) - 1)]}: name {prompt_path(inp)} better\nR999: far away\n"


@pytest.fixture
def sim():
    with GitHubSimulator(seed()) as simulator:
        yield simulator


@pytest.fixture
def revbot(monkeypatch, capsys, tmp_path, sim, openai_server):
    """`revbot review DIFF --post ...` in process, against the simulator and a scripted model server."""
    monkeypatch.chdir(tmp_path)
    # the entry point installs a log handler on the stderr of the moment: let it, for this test only
    monkeypatch.setattr(logging.getLogger(), "handlers", [])
    monkeypatch.setenv("REVBOT_MODELS_DIR", str(tmp_path / "no-models"))
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    monkeypatch.delenv("REVBOT_GITHUB_TOKEN", raising=False)
    monkeypatch.setenv("GITHUB_API_URL", sim.url)
    server = openai_server(answer)
    (tmp_path / "pr.diff").write_text(DIFF)
    (tmp_path / "pr-extra.diff").write_text(DIFF + EXTRA)

    def run(*args: str, diff: str = "pr.diff"):
        from revbot.cli import main

        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"")))
        capsys.readouterr()
        try:
            main(["review", diff, "--backend", "openai", "--base-url", server.url, "--api-model", "m", *args])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        out, err = capsys.readouterr()
        assert "Traceback" not in err and TOKEN not in out + err
        return code, out, err

    return run


def api(sim) -> GitHubClient:
    return GitHubClient(TOKEN, api_url=sim.url, min_write_interval=0)


def reviews(sim) -> list[dict]:
    with api(sim) as gh:
        return gh.list_reviews(REPO, 7)


def comments(sim) -> list[dict]:
    with api(sim) as gh:
        return gh.pull_review_comments(REPO, 7)


def head_of(sim) -> str:
    with api(sim) as gh:
        return gh.get_pull(REPO, 7)["head"]["sha"]


def test_posts_one_review_once_per_head(revbot, sim):
    head = head_of(sim)
    code, out, err = revbot("--post", f"{REPO}#7", "--commit-id", head)
    assert code == 0, err
    assert "a.py:2: name a.py better" in out  # the chosen format still goes to stdout
    assert "posted review" in err and "1 inline comment, 1 in the body" in err
    [posted] = reviews(sim)
    assert review_marker(head) in posted["body"] and "far away" in posted["body"]  # the unanchored note
    [inline] = comments(sim)
    assert (inline["path"], inline["line"], inline["side"]) == ("a.py", 2, "RIGHT") and extract_fingerprints(
        inline["body"]
    )

    # the job re-run for the same head posts nothing
    code, _, err = revbot("--post", f"{REPO}#7", "--commit-id", head)
    assert code == 0 and "already has a revbot review" in err and len(reviews(sim)) == 1

    # a push: the same findings are not repeated on the new head
    sim.add_pull(REPO, number=7, files=[{"filename": "a.py", "status": "modified", "patch": PATCH.rstrip("\n")}])
    new_head = head_of(sim)
    assert new_head != head
    code, _, err = revbot("--post", f"{REPO}#7", "--commit-id", new_head)
    assert code == 0 and "nothing new since the last revbot review" in err and len(reviews(sim)) == 1

    # a run for an older head than the pull request's posts nothing
    code, _, err = revbot("--post", f"{REPO}#7", "--commit-id", head)
    assert code == 0 and "head moved on" in err and len(reviews(sim)) == 1


def test_a_comment_github_refuses_goes_into_the_body(revbot, sim):
    # the local diff has a file the pull request does not: GitHub answers 422 for its comment
    code, _, err = revbot("--post", f"{REPO}#7", diff="pr-extra.diff")
    assert code == 0, err
    assert "1 refused by GitHub and moved there" in err
    [posted] = reviews(sim)
    assert "- `extra.py` line 2:\n  name extra.py better" in posted["body"]
    assert review_marker(head_of(sim)) in posted["body"]
    assert [c["path"] for c in comments(sim)] == ["a.py"]


def test_a_read_only_token_says_what_to_do(revbot, sim, monkeypatch):
    monkeypatch.setenv("GITHUB_TOKEN", "read-only-token")
    code, _, err = revbot("--post", f"{REPO}#7")
    assert code == 1 and "read-only GITHUB_TOKEN" in err and "pull-requests: write" in err
    assert reviews(sim) == []


def test_post_needs_a_target_and_a_token(revbot, monkeypatch):
    code, _, err = revbot("--post", "acme/widgets")
    assert code == 2 and "OWNER/REPO#NUMBER" in err
    monkeypatch.delenv("GITHUB_TOKEN")
    code, _, err = revbot("--post", f"{REPO}#7")
    assert code == 2 and "needs a GitHub token" in err


@pytest.mark.parametrize("text", ["acme#1", "acme/widgets#", "acme/widgets#0", "a/b/c#1", "/w#2", "acme/widgets#x"])
def test_parse_target_rejects(text):
    with pytest.raises(UsageError, match="OWNER/REPO#NUMBER"):
        parse_target(text)


def test_parse_target():
    assert parse_target(" acme/widgets#12 ") == ("acme/widgets", 12)
