"""Hot reload: a version promoted while the service runs is picked up between jobs, without a
restart, without dropping a job and without posting anything twice."""

from __future__ import annotations

import json
import time

import requests
from webhook_kit import PATCH_A, PATCH_B, REPO, ScriptedBackend, Service, hook_payload, make_seed

from adapters.versions import ModelRegistry
from bot.prompt import PROMPT_FORMAT_VERSION
from revbot.dev.github_sim import GitHubSimulator


def add_version(registry: ModelRegistry, name: str) -> None:
    path = registry.root / name
    path.mkdir(parents=True)
    (path / "revbot.json").write_text(
        json.dumps({"base_model": "tiny", "prompt_format_version": PROMPT_FORMAT_VERSION})
    )


def test_promoted_version_is_served_from_the_next_job_on(tmp_path):
    registry = ModelRegistry(tmp_path / "models")
    add_version(registry, "v1")
    add_version(registry, "v2")
    registry.promote("v1")
    loads: list[str] = []

    def loader(version):
        loads.append(version.name)
        # v1 is generating when v2 gets promoted: the running job must finish with v1
        hook = (lambda: registry.promote("v2")) if version.name == "v1" else None
        return ScriptedBackend(version.name, delay=0.3 if version.name == "v1" else 0.0, on_generate=hook)

    with GitHubSimulator(make_seed()) as sim:
        second = sim.add_pull(
            REPO,
            files=[{"filename": "b.py", "status": "modified", "patch": PATCH_B}],
            title="Second",
            user="carol",
            head="feature-2",
        )
        svc = Service(tmp_path, sim, backend_factory=loader, models_dir=tmp_path / "models")
        try:
            assert _wait(lambda: requests.get(svc.url + "/healthz", timeout=5).json()["model"]["version"] == "v1")
            svc.deliver("pull_request", hook_payload("pull_request__opened.payload.json", svc.pull(1)))
            _wait(lambda: svc.store.counts()["running"] == 1)
            svc.deliver("pull_request", hook_payload("pull_request__opened.payload.json", second["pull"]))
            counts = svc.wait_idle()
            assert counts["done"] == 2 and counts["failed"] == 0
            first_comments = svc.review_comments(1)
            second_comments = svc.review_comments(second["pull"]["number"])
            assert first_comments and all("[v1]" in c["body"] for c in first_comments)
            assert second_comments and all("[v2]" in c["body"] for c in second_comments)
            assert len(svc.reviews(1)) == 1 and len(svc.reviews(second["pull"]["number"])) == 1
            assert loads == ["v1", "v2"]  # each loaded once, no restart
            health = requests.get(svc.url + "/healthz", timeout=5).json()
            assert _wait(lambda: requests.get(svc.url + "/healthz", timeout=5).json()["model"]["version"] == "v2")
            assert health["model"]["loaded"] is True
            assert "revbot_model_reloads_total 1" in requests.get(svc.url + "/metrics", timeout=5).text
        finally:
            svc.close()


def test_a_version_that_fails_to_load_keeps_the_old_one_serving(tmp_path):
    registry = ModelRegistry(tmp_path / "models")
    add_version(registry, "v1")
    add_version(registry, "v2")
    registry.promote("v1")

    def loader(version):
        if version.name == "v2":
            raise RuntimeError("weights are corrupt")
        return ScriptedBackend(version.name)

    with GitHubSimulator(make_seed(files=[{"filename": "a.py", "status": "modified", "patch": PATCH_A}])) as sim:
        svc = Service(tmp_path, sim, backend_factory=loader, models_dir=tmp_path / "models")
        try:
            registry.promote("v2")
            time.sleep(0.3)
            svc.deliver("pull_request", hook_payload("pull_request__opened.payload.json", svc.pull(1)))
            assert svc.wait_idle()["done"] == 1
            [comment] = svc.review_comments()
            assert "[v1]" in comment["body"]
            assert _wait(lambda: "weights are corrupt" in (svc.store.workers(max_age=30)[0]["model_error"] or ""))
            assert svc.store.workers(max_age=30)[0]["model_version"] == "v1"
        finally:
            svc.close()


def _wait(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


def test_a_job_queued_after_a_promote_is_reviewed_by_the_promoted_version(tmp_path):
    """The race issue 11's load runs hit: the idle loop had looked at the registry moments before the
    promote, then sat waiting for a job; the job that arrived was reviewed by the old version. A
    worker now checks the promoted version as it starts each job, however recently it last looked."""
    from webhooks.jobs import NewJob
    from webhooks.queue import open_queue
    from webhooks.worker import JobResult, ModelHolder, Worker

    registry = ModelRegistry(tmp_path / "models")
    add_version(registry, "v1")
    add_version(registry, "v2")
    registry.promote("v1")
    holder = ModelHolder(lambda version: version.name, registry, check_every=3600.0)  # the idle loop never re-checks
    served: list[str | None] = []

    def handler(job, ctx):
        served.append(ctx.worker.models.get()[1])
        return JobResult()

    queue = open_queue(tmp_path / "q.db", tmp_path)
    try:
        worker = Worker(queue, {"review": handler}, models=holder, lease_s=30.0)
        assert worker.step(wait=0.0) is None and holder.version == "v1"  # loaded, looked, found no job
        registry.promote("v2")
        queue.submit("d-1", "pull_request", "opened", NewJob("review", "o/r#1", "o/r", 1, "a" * 40))
        assert worker.step(wait=0.0) == "done"
        assert served == ["v2"]
    finally:
        queue.close()


def test_a_version_that_just_failed_to_load_is_not_retried_for_every_job(tmp_path):
    from webhooks.worker import ModelHolder

    registry = ModelRegistry(tmp_path / "models")
    add_version(registry, "v1")
    add_version(registry, "v2")
    registry.promote("v1")
    attempts: list[str] = []
    now = [0.0]

    def loader(version):
        attempts.append(version.name)
        if version.name == "v2":
            raise RuntimeError("weights are corrupt")
        return version.name

    holder = ModelHolder(loader, registry, check_every=5.0, clock=lambda: now[0])
    holder.refresh(force=True)
    registry.promote("v2")
    for _ in range(3):  # three jobs in a row
        assert holder.refresh(force=True) is False
    assert attempts == ["v1", "v2"] and holder.get() == ("v1", "v1")
    now[0] = 6.0  # the next periodic check tries again
    holder.refresh()
    assert attempts == ["v1", "v2", "v2"]
