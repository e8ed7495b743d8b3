"""`revbot demo` with a tiny budget: every step runs for real (simulator, harvest over HTTP, QLoRA
training, evaluation, `revbot serve` in a child process, a signed webhook, the posted review); then
the running service picks up a newly promoted version without a restart."""

from __future__ import annotations

import re
import shutil
import time

import pytest
import requests

from adapters.versions import META_FILE, ModelRegistry
from bot.errors import UsageError
from revbot.dev.demo import BOT_LOGIN, MARKER, QUICK, prepare_workdir, run_demo, signed_delivery, stop_kept

LAST_LINE = re.compile(r"^demo: review posted on acme/stockroom#(\d+) with (\d+) inline comments$")


def _get(url: str, token: str) -> list | dict:
    answer = requests.get(url, headers={"Authorization": f"token {token}"}, timeout=10)
    answer.raise_for_status()
    return answer.json()


def _wait(predicate, timeout: float = 90.0, every: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError("timed out waiting")


@pytest.mark.slow
def test_quick_demo_posts_a_review_and_the_service_hot_reloads(tmp_path):
    lines: list[str] = []
    workdir = prepare_workdir(tmp_path / "demo")
    result = run_demo(workdir, QUICK, keep=True, echo=lines.append, progress=False)
    try:
        out = "\n".join(lines)
        for n in range(1, 9):  # every step is announced and timed
            assert f"[{n}/8] " in out
        assert out.count("done in ") == 8
        assert "timings: simulator" in out and "total" in out
        assert "tiny RANDOM" in out  # the stand-in model is named as such
        assert re.search(r"^\s+tuned\s", out, re.M) and re.search(r"^\s+base\s", out, re.M)
        assert re.search(r"^\s+retrieval\s", out, re.M)
        assert "revbot train --model Qwen/Qwen2.5-Coder-1.5B-Instruct" in out
        assert "dropped: " in out and "bot " in out  # the harvest summary with its filters

        match = LAST_LINE.match(result.last_line())
        assert match and int(match.group(1)) == result.number and int(match.group(2)) == len(result.comments)

        # what the demo printed is what GitHub (the simulator) holds
        api = f"{result.sim_url}/repos/acme/stockroom/pulls/{result.number}"
        reviews = _get(api + "/reviews", result.token)
        assert [r["user"]["login"] for r in reviews] == [BOT_LOGIN]
        posted = [c for c in _get(api + "/comments", result.token) if c["pull_request_review_id"] == reviews[0]["id"]]
        assert len(posted) == len(result.comments)
        assert "<!-- revbot:fp=" not in "".join(c["body"] for c in result.comments)  # printed without markers
        for path in ("serve.log", "revbot.db", "models/v1/revbot.json", "models/v1/eval"):
            assert (workdir / path).exists(), path

        # hot reload: promote a new version while the service runs; the next PR is reviewed with it
        registry = ModelRegistry(workdir / "models")
        with registry.new_version() as pending:
            for item in (workdir / "models" / "v1").iterdir():
                if item.is_file():
                    shutil.copy2(item, pending.path / item.name)
                elif item.name == "exemplars":  # the exemplar index travels with its version (hashed in revbot.json)
                    shutil.copytree(item, pending.path / item.name)
        assert pending.version is not None and pending.version.name == "v2"
        assert (pending.version.path / META_FILE).is_file()
        registry.promote("v2")

        from revbot.dev.demo_data.sample import build_demo_pull, build_sample_project, pull_files_seed
        from revbot.dev.github_sim import GitHubSimulator  # noqa: F401  (the demo's simulator is reached over HTTP)

        second = build_demo_pull(build_sample_project(), seed=3)
        opened = requests.post(
            f"{result.sim_url}/_sim/pulls",
            json={
                "repo": "acme/stockroom",
                "files": pull_files_seed(second),
                "title": "Second change",
                "user": "sam-o",
                "head": "second-change",
            },
            timeout=10,
        )
        assert opened.status_code in (200, 201), opened.text
        payload = opened.json()
        number = payload["pull"]["number"]
        answer = signed_delivery(result.service_url + "/webhook", "pull_request", payload["webhook"], result.secret)
        assert answer.status_code == 202
        _wait(lambda: _get(f"{result.sim_url}/repos/acme/stockroom/pulls/{number}/reviews", result.token))
        health = _wait(
            lambda: (
                (h := requests.get(result.service_url + "/healthz", timeout=5).json())
                and h["model"]["version"] == "v2"
                and h
            )
        )
        assert health["model"]["loaded"] is True
        assert "revbot_model_reloads_total 1" in requests.get(result.service_url + "/metrics", timeout=5).text
        assert len(_get(f"{result.sim_url}/repos/acme/stockroom/pulls/{number}/reviews", result.token)) == 1
        assert len(_get(api + "/reviews", result.token)) == 1  # the first PR was not reviewed again

        # a forged delivery changes nothing
        forged = signed_delivery(result.service_url + "/webhook", "pull_request", payload["webhook"], "wrong-secret")
        assert forged.status_code == 401

        # the operator's pages (issue 20): this run's token logs in; Reviews lists the reviews posted
        pages = requests.Session()
        form = pages.get(result.service_url + "/ui/login", timeout=10).text
        csrf = form.split('name="csrf_token" value="')[1].split('"')[0]
        login = {"csrf_token": csrf, "name": "demo", "token": result.ui_token}
        assert pages.post(result.service_url + "/ui/login", data=login, timeout=10).url.endswith("/ui/")
        listed = pages.get(result.service_url + "/ui/reviews", timeout=10).text
        assert f">#{result.number}</a>" in listed and f">#{number}</a>" in listed
    finally:
        stop_kept()


def test_workdir_of_a_previous_demo_is_wiped_anything_else_is_refused(tmp_path):
    previous = prepare_workdir(tmp_path / "demo")
    (previous / "models").mkdir()
    again = prepare_workdir(tmp_path / "demo")
    assert (again / MARKER).exists() and not (again / "models").exists()

    precious = tmp_path / "mine"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    with pytest.raises(UsageError, match="not made by `revbot demo`"):
        prepare_workdir(precious)
    assert (precious / "notes.txt").read_text() == "keep me"


def test_demo_help_states_what_it_does():
    from click.testing import CliRunner

    from revbot.cli import cli

    result = CliRunner().invoke(cli, ["demo", "--help"])
    assert result.exit_code == 0
    assert "demo: review posted on OWNER/REPO#N with K inline comments" in result.output
    assert "--keep" in result.output and "--quick" in result.output
