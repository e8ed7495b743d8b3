"""Assembly: settings -> queue, model holder, GitHub clients, job handlers, worker pool. The CLI and
the tests build the service through these functions, so both run the same wiring."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from bot.errors import ModelError
from bot.forge import Forges
from webhooks.jobs import COMMAND, COMMENT, REACTION, REVIEW, THREAD
from webhooks.metrics import Metrics
from webhooks.queue import JobQueue, open_queue
from webhooks.settings import ServiceConfig
from webhooks.worker import ModelHolder, WorkerPool

log = logging.getLogger(__name__)


def default_loader(cfg: ServiceConfig) -> Callable[[Any], Any]:
    """How a model version (or, with none promoted, the configured model) becomes a Backend."""

    def load(version: Any) -> Any:
        from adapters.model import BackendOptions, load_backend

        s = cfg.settings
        options = BackendOptions(quantize=s.quantize, batch_size=s.batch_size)
        if s.backend == "openai":
            name = s.openai_model or (version.name if version is not None else s.model)
            return load_backend(
                options.replace(kind="openai", model=s.model, base_url=s.openai_base_url, api_model=name)
            )
        if version is not None:
            return load_backend(options.replace(adapter=str(version.path)))
        if not s.model and not s.adapter:
            raise ModelError(
                f"no model to serve: promote a version in {s.models_dir} (`revbot models promote vN`) "
                "or pass --model / set REVBOT_MODEL"
            )
        return load_backend(options.replace(model=s.model, adapter=s.adapter))

    return load


def build_models(
    cfg: ServiceConfig, loader: Callable[[Any], Any] | None = None, metrics: Metrics | None = None
) -> ModelHolder:
    """The model holder. An explicit ``--adapter`` pins the model (no reloads); otherwise the
    registry's ``current`` version is served and followed, falling back to ``--model``."""
    registry = None
    if not cfg.settings.adapter:
        from adapters.versions import ModelRegistry

        registry = ModelRegistry(cfg.settings.models_dir)
    return ModelHolder(loader or default_loader(cfg), registry, check_every=cfg.reload_check_s, metrics=metrics)


def build_pool(
    cfg: ServiceConfig,
    *,
    queue: JobQueue | None = None,
    loader: Callable[[Any], Any] | None = None,
    forges: Forges | None = None,
    store: Any = None,
    workers: int | None = None,
    metrics: Metrics | None = None,
) -> WorkerPool:
    """A worker pool for ``cfg`` (not started). ``forges``: where jobs get their forge clients
    (default: ``adapters.forges.ForgeClients`` from the settings, with ``cfg``'s client options);
    ``store``: the dataset Store (default: ``cfg.settings.db``); ``metrics``: share the web app's
    when both run in one process, so its /metrics shows the workers' counts."""
    from adapters.forges import ForgeClients
    from webhooks.commands import CommandHandler
    from webhooks.poster import ReviewPoster
    from webhooks.recorder import CommentRecorder, ReactionRecorder, ThreadRecorder

    queue = queue or open_queue(cfg.settings.queue, cfg.settings.home, retention_s=cfg.retention_s)
    metrics = metrics or Metrics()
    models = build_models(cfg, loader, metrics)
    if forges is None:
        forges = ForgeClients(cfg.settings, github_options=cfg.github_options, gitlab_options=cfg.gitlab_options)
    if store is None:
        lock = threading.Lock()
        opened: list[Any] = []

        def open_store() -> Any:
            from adapters.store import Store

            with lock:
                if not opened:
                    opened.append(Store(cfg.settings.db))
                return opened[0]

        store = open_store
    store_factory = store if callable(store) else (lambda: store)
    handlers = {
        REVIEW: ReviewPoster(cfg, forges, models, metrics, store_factory),
        COMMENT: CommentRecorder(store, forges),
        REACTION: ReactionRecorder(store, forges),
        COMMAND: CommandHandler(forges, store_factory),
        THREAD: ThreadRecorder(store, cfg.own_logins()),
    }
    return WorkerPool(
        queue,
        handlers,
        workers=cfg.workers if workers is None else workers,
        models=models,
        metrics=metrics,
        lease_s=cfg.settings.worker_lease,
        max_attempts=cfg.settings.job_attempts,
        retry_delay_s=cfg.retry_delay_s,
        reap_interval_s=cfg.reap_interval_s,
        retention_s=cfg.retention_s,
    )
