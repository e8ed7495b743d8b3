"""`revbot review` end to end, in process, through the real entry point (revbot.cli.main): diff files,
stdin, git, a real tiny model, an OpenAI-compatible server on loopback, and every kind of bad input."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from adapters.sources import GitSource
from bot.diff import RIGHT, parse_diff
from tests.core.conftest import prompt_anchors, prompt_path


def diff_path(shared_dir: Path, name: str) -> str:
    return str(shared_dir / "fixtures" / "diffs" / name)


def anchored_answer(inp):
    """A model that comments on the first line it is shown and on a line that is not in the hunk."""
    return f"{prompt_anchors(inp)[0]}: look at {prompt_path(inp)}\nR999: far away\n"


def test_help_explains_options_with_examples(revbot):
    code, out, _ = revbot("review", "--help")
    assert code == 0
    for option in (
        "--git",
        "--staged",
        "--repo-dir",
        "--model",
        "--adapter",
        "--backend",
        "--base-url",
        "--api-model",
        "--format",
        "--max-comments",
        "--max-comments-per-file",
        "--ignore",
        "--config",
        "-o, --output",
    ):
        assert option in out
    assert "main...HEAD" in out and "revbot dev init-model" in out and "Examples:" in out


def test_empty_diff_is_nothing_to_review(revbot, tmp_path):
    code, out, _ = revbot("review", "-", stdin=b"")
    assert (code, out) == (0, "Nothing to review.\n")
    (tmp_path / "empty.diff").write_text("")
    code, out, _ = revbot("review", str(tmp_path / "empty.diff"), "--format", "json")
    assert code == 0 and json.loads(out)["summary"] == "Nothing to review."


def test_malformed_diff_is_a_clear_error(revbot, shared_dir):
    code, out, err = revbot("review", diff_path(shared_dir, "sample7.diff"))
    assert code == 1 and out == ""
    assert err.startswith(f"revbot: error: {diff_path(shared_dir, 'sample7.diff')}:29: diff ends inside a hunk")
    assert "#2 of /path/to/new" in err


@pytest.mark.parametrize(
    "name, text, words",
    [
        ("README.md", "# widgets\n\nA small library.\n", "README.md:1: not a unified diff"),
        (
            "bad-header.diff",
            "diff --git a/x.py b/x.py\n--- a/x.py\n+++ b/x.py\n@@ -1,3 +1,4 @\n a\n+b\n c\n d\n",
            "bad-header.diff:4: malformed hunk header of x.py",
        ),
        ("octal.diff", '--- "a/x.py"\n+++ "b/x\\777.py"\n@@ -1 +1 @@\n-a\n+b\n', "octal.diff:2: bad escape \\777"),
    ],
)
def test_input_that_is_not_a_usable_diff_exits_non_zero(revbot, tmp_path, name, text, words):
    path = tmp_path / name
    path.write_text(text)
    code, out, err = revbot("review", str(path))
    assert code == 1 and out == "" and "Nothing to review" not in out + err
    assert err.startswith(f"revbot: error: {tmp_path}/") and words in err
    code, out, err = revbot("review", "-", stdin=text.encode())
    assert code == 1 and "<stdin>:" in err


@pytest.mark.parametrize("name", ["binary.diff", "sample8.diff"])
def test_a_diff_of_binary_or_empty_files_is_still_nothing_to_review(revbot, shared_dir, name):
    code, out, err = revbot("review", diff_path(shared_dir, name))
    assert code == 0 and "binary file" in out and "\nNothing to review (" in out


@pytest.mark.parametrize(
    "args, code, words",
    [
        (["--model", "./no/such/model"], 1, "no model at ./no/such/model"),
        (
            ["--model", "someorg/some-model"],
            1,
            "could not load someorg/some-model: not a local directory and the hub is unreachable",
        ),
        (["--adapter", "/nonexistent/adapter"], 1, "no adapter at /nonexistent/adapter"),
        (["--backend", "openai"], 2, "--backend openai needs --base-url"),
        (["--version", "v7"], 1, "no model version 'v7'"),
        (["--max-comments", "-1"], 2, "must be 0 or more"),
    ],
)
def test_model_and_usage_errors(revbot, shared_dir, args, code, words):
    got, out, err = revbot("review", diff_path(shared_dir, "git.diff"), *args)
    assert got == code and out == ""
    assert words in err


def test_adapter_with_another_prompt_format_version(revbot, shared_dir, tmp_path, tiny_llama):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "revbot.json").write_text(json.dumps({"base_model": str(tiny_llama), "prompt_format_version": 99}))
    code, _, err = revbot("review", diff_path(shared_dir, "git.diff"), "--adapter", str(adapter))
    assert code == 1 and "trained with prompt format version 99" in err and "renders versions 1, 2" in err


def test_tiny_model_end_to_end_json(revbot, shared_dir, tiny_llama):
    """The issue's "done when": every (path, line, side) in the JSON is commentable in the diff."""
    path = diff_path(shared_dir, "git.diff")
    code, out, err = revbot("review", path, "--model", str(tiny_llama), "--format", "json", "--max-new-tokens", "8")
    assert code == 0, err
    data = json.loads(out)
    diff = parse_diff(Path(path).read_bytes())
    for c in data["comments"]:
        assert diff.is_commentable(c["path"], c["line"], c["side"])
    stats = data["stats"]
    assert (stats["hunks_total"], stats["hunks_reviewed"], stats["prompts"]) == (2, 2, 2)
    # an untrained model may stay silent everywhere (constrained anchors: silence outweighs commenting)
    assert stats["prompt_tokens"] > 0 and data["model"]["kind"] == "local"
    assert [s["path"] for s in data["skipped"]] == ["removed_file"]


def test_openai_backend_end_to_end_places_comments_only_on_the_diff(revbot, shared_dir, openai_server, tmp_path):
    server = openai_server(anchored_answer)
    path = diff_path(shared_dir, "sample0.diff")
    out_file = tmp_path / "review.json"
    code, out, err = revbot(
        "review",
        path,
        "--backend",
        "openai",
        "--base-url",
        server.url,
        "--api-model",
        "team-v1",
        "--format",
        "json",
        "-o",
        str(out_file),
    )
    assert code == 0 and out == "" and "Wrote json to" in err
    data = json.loads(out_file.read_text())
    diff = parse_diff(Path(path).read_bytes())
    assert len(data["comments"]) == 4  # the first line of each of the 4 reviewed hunks
    for c in data["comments"]:
        assert diff.is_commentable(c["path"], c["line"], c["side"])
    assert {c["line"] for c in data["unanchored"]} == {999}
    assert {r["body"]["model"] for r in server.requests} == {"team-v1"} and len(server.requests) == 4


def test_sarif_and_github_formats_from_the_cli(revbot, shared_dir, openai_server):
    from sarif_pydantic import Sarif

    server = openai_server(anchored_answer)
    common = [diff_path(shared_dir, "git.diff"), "--backend", "openai", "--base-url", server.url, "--api-model", "m"]
    code, out, _ = revbot("review", *common, "--format", "sarif")
    assert code == 0
    run = Sarif.model_validate_json(out).runs[0]
    assert run.tool.driver.name == "revbot" and {r.rule_id for r in run.results} <= {
        r.id for r in run.tool.driver.rules
    }
    code, out, _ = revbot("review", *common, "--format", "github", "--commit-id", "c" * 40, "--max-comments", "1")
    payload = json.loads(out)
    assert code == 0 and payload["commit_id"] == "c" * 40 and len(payload["comments"]) == 1
    assert "revbot:fp=" in payload["comments"][0]["body"]


def test_non_utf8_diff_is_decoded_and_noted(revbot, openai_server):
    server = openai_server(anchored_answer)
    data = b"diff --git a/x.py b/x.py\n--- a/x.py\n+++ b/x.py\n@@ -1 +1 @@\n-a = 'caf\xe9'\n+a = 'cafe'\n"
    code, out, err = revbot(
        "review", "-", "--backend", "openai", "--base-url", server.url, "--api-model", "m", stdin=data
    )
    assert code == 0 and "revbot: warning: <stdin>: not valid UTF-8" in err
    assert out.startswith("x.py:1 (old): look at x.py")


def test_fifty_thousand_line_diff_is_bounded_and_reports_the_rest(revbot, openai_server, tmp_path):
    server = openai_server(anchored_answer)
    chunks = []
    for k in range(500):
        body = "".join(f"+value_{i} = {i}\n" for i in range(100))
        chunks.append(
            f"diff --git a/m{k}.py b/m{k}.py\nnew file mode 100644\n--- /dev/null\n+++ b/m{k}.py\n@@ -0,0 +1,100 @@\n{body}"
        )
    (tmp_path / "huge.diff").write_text("".join(chunks))
    start = time.perf_counter()
    code, out, err = revbot(
        "review",
        str(tmp_path / "huge.diff"),
        "--backend",
        "openai",
        "--base-url",
        server.url,
        "--api-model",
        "m",
        "--format",
        "json",
        "--token-budget",
        "8000",
    )
    assert code == 0 and time.perf_counter() - start < 30
    data = json.loads(out)
    reviewed = data["stats"]["hunks_reviewed"]
    assert 0 < reviewed < 20 and len(server.requests) == data["stats"]["prompts"]
    budget = [s for s in data["skipped"] if s["reason"] == "token budget of 8000 tokens spent (source)"]
    whole = [s for s in budget if not s["hunks"]]  # the last reviewed hunk may be cut: its rest is listed too
    assert len(whole) == 500 - reviewed and len(budget) - len(whole) <= 1
    assert f"Reviewed {reviewed} of 500 hunks" in data["summary"]


def test_revbot_yml_is_honoured_and_its_errors_are_clear(revbot, shared_dir, tmp_path, openai_server):
    server = openai_server(anchored_answer)
    repo = tmp_path / "repo"
    repo.mkdir()
    args = [
        diff_path(shared_dir, "sample0.diff"),
        "--repo-dir",
        str(repo),
        "--backend",
        "openai",
        "--base-url",
        server.url,
        "--api-model",
        "m",
        "--format",
        "json",
    ]
    (repo / ".revbot.yml").write_text("max_comments: 1\nignore_paths: ['/path/to/another_new']\n")
    code, out, _ = revbot("review", *args)
    data = json.loads(out)
    assert code == 0 and len(data["comments"]) == 1
    assert {
        "path": "/path/to/another_new",
        "reason": "ignored by configuration (matches '/path/to/another_new')",
        "hunks": [],
        "lines": 9,
    } in data["skipped"]
    code, out, _ = revbot("review", *args, "--max-comments", "3", "--ignore", "**/new")
    assert code == 0 and len(json.loads(out)["comments"]) == 0  # everything left is ignored now
    (repo / ".revbot.yml").write_text("max_comments: 1\nmax_coments: 2\n")
    code, out, err = revbot("review", *args)
    assert code == 1 and err.startswith(f"revbot: error: {repo / '.revbot.yml'}:2: unknown key 'max_coments'")
    (repo / ".revbot.yml").write_text("enabled: false\n")
    code, out, err = revbot("review", *args)
    assert code == 0 and out == "" and "review disabled by" in err and server.requests


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


@pytest.fixture
def git_repo(tmp_path):
    """main: a.py; branch feature (checked out): b.py added; then main moves on (c.py) after the fork."""
    repo = tmp_path / "git"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.email", "dev@example.com")
    git(repo, "config", "user.name", "Dev")
    (repo / "a.py").write_text("x = 1\n")
    git(repo, "add", "a.py")
    git(repo, "commit", "-qm", "a")
    git(repo, "checkout", "-qb", "feature")
    (repo / "b.py").write_text("y = 2\n")
    git(repo, "add", "b.py")
    git(repo, "commit", "-qm", "b")
    git(repo, "checkout", "-q", "main")
    (repo / "c.py").write_text("z = 3\n")
    git(repo, "add", "c.py")
    git(repo, "commit", "-qm", "c")
    git(repo, "checkout", "-q", "feature")
    return repo


def test_git_sources(git_repo):
    paths = lambda src: [f.path for f in src.read()]  # noqa: E731
    assert paths(GitSource(git_repo, "main...feature")) == ["b.py"]  # what the PR adds, not main's c.py
    assert sorted(paths(GitSource(git_repo, "main..feature"))) == ["b.py", "c.py"]
    assert paths(GitSource(git_repo)) == []
    (git_repo / "a.py").write_text("x = 10\n")
    (git_repo / "d.py").write_text("w = 4\n")
    git(git_repo, "add", "d.py")
    assert paths(GitSource(git_repo, staged=True)) == ["d.py"]
    assert sorted(paths(GitSource(git_repo))) == ["a.py", "d.py"]  # HEAD against the working tree
    diff = GitSource(git_repo).read()
    assert diff.is_commentable("a.py", 1, RIGHT) and diff.source.startswith("git diff")
    from bot.errors import UsageError

    with pytest.raises(UsageError, match="bad revision|unknown revision"):
        GitSource(git_repo, "nope...feature").read()
    with pytest.raises(UsageError, match="invalid revision range"):
        GitSource(git_repo, "--output=/tmp/x").read()
    with pytest.raises(UsageError, match="not inside a git repository"):
        GitSource(git_repo.parent / "elsewhere").read()


def test_git_on_a_repository_without_commits(tmp_path):
    repo = tmp_path / "fresh"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / "new.py").write_text("print(1)\n")
    git(repo, "add", "new.py")
    assert [f.path for f in GitSource(repo, staged=True).read()] == ["new.py"]


def test_review_git_from_the_cli(revbot, git_repo, openai_server):
    server = openai_server(anchored_answer)
    code, out, err = revbot(
        "review",
        "--git",
        "main...feature",
        "--repo-dir",
        str(git_repo),
        "--backend",
        "openai",
        "--base-url",
        server.url,
        "--api-model",
        "m",
    )
    assert code == 0, err
    assert out.startswith("b.py:1: look at b.py\n")
    code, _, err = revbot("review", "x.diff", "--git", "--repo-dir", str(git_repo))
    assert code == 2 and "not both" in err
    code, _, err = revbot("review", "--git", "nope...feature", "--repo-dir", str(git_repo))
    assert code == 2 and "git could not compute the diff for nope...feature" in err


def test_developer_commands_live_under_revbot_dev(revbot, tmp_path):
    from revbot.cli import COMMANDS

    assert "init-model" not in COMMANDS and "github-sim" not in COMMANDS
    code, out, err = revbot("dev", "--help")
    assert code == 0 and "init-model" in out and "github-sim" in out
    code, out, err = revbot("dev", "init-model", str(tmp_path / "tiny"))
    assert code == 0, err
    assert (tmp_path / "tiny" / "config.json").exists()
