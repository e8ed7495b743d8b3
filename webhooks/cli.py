"""``revbot serve`` (gunicorn web processes + a queue-worker process on one machine, see
``webhooks.server``) and ``revbot worker`` (queue workers alone, e.g. on other machines sharing a
Redis queue). Both parse options, build a ServiceConfig on top of the REVBOT_* environment and call
the library.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

import click

from adapters.cli_options import add_global_flags, configure_logging_for, error_line, fail, info, warn
from bot.errors import RevbotError

log = logging.getLogger(__name__)


def _model_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--model", help="Model (hub id or local path) when no version is promoted. [REVBOT_MODEL]"),
        click.option(
            "--adapter",
            type=click.Path(file_okay=False),
            help="Serve this adapter directory (pins the model: no hot reload). [REVBOT_ADAPTER]",
        ),
        click.option("--backend", type=click.Choice(["local", "openai"]), help="Model backend. [REVBOT_BACKEND]"),
        click.option("--base-url", help="OpenAI-compatible server URL (--backend openai). [REVBOT_OPENAI_BASE_URL]"),
        click.option("--api-model", help="Model name on that server. [REVBOT_OPENAI_MODEL]"),
        click.option(
            "--models-dir",
            type=click.Path(file_okay=False),
            help="Model versions folder whose `current` is served and followed. [REVBOT_MODELS_DIR]",
        ),
        click.option(
            "--api-url", help="GitHub API root (GitHub Enterprise: https://HOST/api/v3). [REVBOT_GITHUB_API_URL]"
        ),
        click.option(
            "--queue",
            "queue_url",
            help="Job queue: a SQLite file, sqlite:///PATH or redis://HOST:PORT/DB. [REVBOT_QUEUE]",
        ),
        click.option(
            "--workers",
            type=click.IntRange(min=0),
            default=1,
            show_default=True,
            help="Queue worker threads (serve: 0 runs the web part alone).",
        ),
        click.option("--dry-run", is_flag=True, help="Log the review that would be posted instead of posting it."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _config(**opts: Any) -> Any:
    from webhooks.settings import ServiceConfig

    overrides = {
        "model": opts.get("model"),
        "adapter": opts.get("adapter"),
        "backend": opts.get("backend"),
        "openai_base_url": opts.get("base_url"),
        "openai_model": opts.get("api_model"),
        "models_dir": opts.get("models_dir"),
        "github_api_url": opts.get("api_url"),
        "queue": opts.get("queue_url"),
        "workers": opts.get("workers"),
        "dry_run": opts.get("dry_run") or None,
        "insecure_no_signature": opts.get("insecure_no_signature") or None,
        "web_workers": opts.get("web_workers"),
        "web_threads": opts.get("web_threads"),
        "read_timeout": opts.get("read_timeout_s"),
        "worker_timeout": opts.get("worker_timeout_s"),
    }
    return ServiceConfig.from_env(**{k: v for k, v in overrides.items() if v is not None})


def _wait_for_signal(on_stop: Callable[[], None]) -> threading.Event:
    """SIGINT/SIGTERM set the returned event (and call ``on_stop``) instead of raising mid-job."""
    stopped = threading.Event()

    def handle(signum: int, _frame: Any) -> None:
        if not stopped.is_set():
            log.warning("received %s, stopping", signal.Signals(signum).name)
            stopped.set()
            on_stop()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, handle)
    return stopped


def _warn_without_credentials(cfg: Any) -> None:
    if not cfg.has_github_credentials and not cfg.dry_run:
        warn("no GitHub credentials (REVBOT_GITHUB_TOKEN or REVBOT_GITHUB_APP_ID): reviews cannot be posted")


@click.command("serve", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True, help="Port (0: any free port).")
@click.option(
    "--insecure-no-signature",
    is_flag=True,
    help="Accept unsigned deliveries (local experiments only: refused unless --host is a loopback address).",
)
@click.option(
    "--web-workers", type=click.IntRange(min=1), help="gunicorn web processes (default 2). [REVBOT_WEB_WORKERS]"
)
@click.option(
    "--web-threads",
    type=click.IntRange(min=1),
    help="Threads per web process with REVBOT_WEB_WORKER_CLASS=gthread (default 8). [REVBOT_WEB_THREADS]",
)
@click.option(
    "--read-timeout",
    type=click.FloatRange(min=0.1),
    help="Seconds a client may stay silent mid-request before it is disconnected (default 10). [REVBOT_READ_TIMEOUT]",
)
@click.option(
    "--worker-timeout",
    type=click.IntRange(min=1),
    help="Seconds before an unresponsive web process is replaced; also the grace period on stop "
    "(default 30). [REVBOT_WORKER_TIMEOUT]",
)
@_model_options
def serve(
    host: str,
    port: int,
    insecure_no_signature: bool,
    web_workers: int | None,
    web_threads: int | None,
    read_timeout: float | None,
    worker_timeout: int | None,
    **opts: Any,
) -> None:
    """Run the webhook service on gunicorn: web processes plus one queue-worker process.

    \b
    Endpoints: POST /webhook (GitHub), POST /webhook/gitlab, GET /healthz, GET /metrics.
    The webhook secret comes from REVBOT_WEBHOOK_SECRET (GitLab: REVBOT_GITLAB_WEBHOOK_SECRET);
    the service refuses to start without one.
    Workers on other machines: `revbot worker` with the same REVBOT_QUEUE (Redis).
    """
    import os
    import shutil
    import tempfile

    try:
        cfg = _config(
            insecure_no_signature=insecure_no_signature,
            web_workers=web_workers,
            web_threads=web_threads,
            read_timeout_s=read_timeout,
            worker_timeout_s=worker_timeout,
            **opts,
        )
        cfg.check()
        cfg.check_bind(host)
        _warn_without_credentials(cfg)
    except RevbotError as exc:
        fail(exc)
    # Every process of the service counts into one folder that /metrics reads; prometheus_client
    # picks the mode when it is first imported, so this comes before anything imports it.
    metrics_dir = tempfile.mkdtemp(prefix="revbot-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    try:
        _serve(cfg, host, port)
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


def _serve(cfg: Any, host: str, port: int) -> None:
    from webhooks.queue import open_queue
    from webhooks.server import ServeApplication, listen

    try:
        queue = open_queue(
            cfg.settings.queue, cfg.settings.home, retention_s=cfg.retention_s
        )  # fail here, not in every process
        queue.ping()
        spec = queue.spec.describe()
        queue.close()
        sock = listen(host, port, cfg.settings.read_timeout)
    except RevbotError as exc:
        fail(exc)
    except OSError as exc:
        click.echo(error_line(f"cannot listen on {host}:{port}: {exc.strerror or exc}"), err=True)
        sys.exit(1)
    level = "info" if logging.getLogger().getEffectiveLevel() <= logging.INFO else "warning"
    mode = " (dry run: reviews are logged, not posted)" if cfg.dry_run else ""
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    s = cfg.settings
    if s.web_worker_class == "gthread":
        web = f"{s.web_workers} web process(es) x {s.web_threads} thread(s)"
    else:
        web = f"{s.web_workers} gevent web process(es) (headers within {s.header_timeout:g}s, bodies within {s.body_timeout:g}s)"
    info(f"revbot serving on http://{shown}:{bound} with {web} and {cfg.workers} queue worker(s), queue {spec}{mode}")
    ServeApplication(cfg, sock, log_level=level).run()  # gunicorn owns the socket from here and closes it


@click.command("worker", context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--metrics-port",
    type=click.IntRange(1, 65535),
    help="Serve this process's counters for Prometheus on 127.0.0.1:PORT (workers on machines "
    "other than the web part's; `revbot serve` shows its own workers' counts at /metrics).",
)
@_model_options
def worker(metrics_port: int | None, **opts: Any) -> None:
    """Run queue workers alone (the web part runs elsewhere, e.g. `revbot serve --workers 0`).

    Workers take review jobs from the queue (REVBOT_QUEUE), post one review per head commit, record
    human review comments, and reload the model when a new version is promoted.
    """
    from webhooks.runtime import build_pool

    try:
        cfg = _config(**opts)
        if cfg.workers < 1:
            raise RevbotError("--workers must be at least 1 for `revbot worker`")
        _warn_without_credentials(cfg)
        pool = build_pool(cfg)
    except RevbotError as exc:
        fail(exc)
    if metrics_port:
        from prometheus_client import start_http_server

        try:
            start_http_server(metrics_port, addr="127.0.0.1", registry=pool.metrics.registry)
        except OSError as exc:
            click.echo(error_line(f"cannot serve metrics on 127.0.0.1:{metrics_port}: {exc.strerror or exc}"), err=True)
            sys.exit(1)
    stopped = _wait_for_signal(lambda: None)
    pool.start()
    info(
        f"revbot worker: {cfg.workers} worker(s) on queue {pool.workers[0].queue.spec.describe()}"
        + (" (dry run)" if cfg.dry_run else "")
    )
    while not stopped.wait(1.0):
        pass
    pool.stop()


@click.group()
@click.pass_context
def main(ctx: click.Context) -> None:
    """Run `serve` or `worker` directly (``python -m webhooks.cli``)."""
    configure_logging_for(ctx)


main.add_command(serve)
main.add_command(worker)
add_global_flags(main)

if __name__ == "__main__":
    main()
