"""Service metrics on prometheus_client.

Counters and the latency histogram are prometheus_client metrics, counted the moment something
happens. Under ``revbot serve`` (gunicorn: several web processes plus the job-worker process)
``PROMETHEUS_MULTIPROC_DIR`` is set before anything imports prometheus_client, every process writes
its counts to that folder, and ``/metrics`` in any web process adds them all up
(``MultiProcessCollector``). Gauges (jobs by state, queue depth, model loaded) are read from the
job store when scraped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics, generate_latest, values
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.multiprocess import MultiProcessCollector

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_LATEST
LATENCY_BUCKETS = (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)

# name -> (help, label names); the names are what dashboards already use
COUNTERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "revbot_webhook_deliveries_total": ("Webhook deliveries by event and outcome.", ("event", "outcome")),
    "revbot_jobs_finished_total": ("Jobs finished by kind and outcome.", ("kind", "outcome")),
    "revbot_job_retries_total": ("Job runs given back for a retry after a transient error.", ("kind",)),
    "revbot_comments_posted_total": ("Inline review comments posted.", ()),
    "revbot_comments_moved_to_body_total": ("Comments put in the review body because they could not be anchored.", ()),
    "revbot_comments_skipped_duplicate_total": (
        "Comments not posted because their fingerprint was already on the PR.",
        (),
    ),
    "revbot_reviews_posted_total": ("Create-review calls that succeeded.", ()),
    "revbot_forge_api_errors_total": (
        "Forge API errors seen by the worker, by forge (github, gitlab) and HTTP status.",
        ("forge", "status"),
    ),
    "revbot_model_reloads_total": ("Model versions loaded without a restart.", ()),
}
HISTOGRAMS: dict[str, tuple[str, tuple[str, ...]]] = {
    "revbot_review_latency_seconds": ("Seconds from a review job's delivery to its review being posted.", ()),
}
GAUGES = {
    "revbot_jobs": "Jobs in the job table by state.",
    "revbot_queue_depth": "Jobs waiting for a worker.",
    "revbot_model_loaded": "1 when a worker holds a loaded model.",
    "revbot_up": "1 while the job store answers the scrape.",
}

disable_created_metrics()  # no *_created samples: the names stay the ones listed above

Gauges = Callable[[], Iterable[tuple[str, Mapping[str, Any] | None, float]]]


def multiprocess_dir() -> str | None:
    from adapters.settings import Settings

    return Settings.from_env(only=("prometheus_multiproc_dir",)).prometheus_multiproc_dir


class _LiveGauges:
    """A collector that reads the gauges when scraped (``gauges()`` yields name, labels, value)."""

    def __init__(self, gauges: Gauges):
        self.gauges = gauges

    def collect(self) -> Iterable[GaugeMetricFamily]:
        families: dict[str, GaugeMetricFamily] = {}
        for name, labels, value in self.gauges():
            labels = {k: str(v) for k, v in (labels or {}).items()}
            family = families.get(name)
            if family is None:
                family = families[name] = GaugeMetricFamily(name, GAUGES.get(name, name), labels=sorted(labels))
            family.add_metric([labels[k] for k in sorted(labels)], value)
        return list(families.values())


class Metrics:
    """One process's counters, and the registry ``/metrics`` renders.

    Each instance has registries of its own, so tests can run several services in one process.
    In multiprocess mode the counts also go to ``PROMETHEUS_MULTIPROC_DIR`` and ``render`` reads
    every process's files there instead of this instance's counters."""

    def __init__(self, gauges: Gauges | None = None):
        self._own = CollectorRegistry()
        self._counters = {
            name: Counter(name, help_text, labels, registry=self._own) for name, (help_text, labels) in COUNTERS.items()
        }
        self._histograms = {
            name: Histogram(name, help_text, labels, buckets=LATENCY_BUCKETS, registry=self._own)
            for name, (help_text, labels) in HISTOGRAMS.items()
        }
        self.multiprocess = multiprocess_dir()
        if self.multiprocess:
            if values.ValueClass is values.MutexValue:
                raise RuntimeError(
                    f"{MULTIPROC_ENV} was set after prometheus_client was imported: this process's "
                    "counts would never reach /metrics; set it before anything imports it"
                )
            self.registry = CollectorRegistry()
            MultiProcessCollector(self.registry, path=self.multiprocess)
        else:
            self.registry = self._own
        if gauges is not None:
            self.add_gauges(gauges)

    def add_gauges(self, gauges: Gauges) -> None:
        self.registry.register(_LiveGauges(gauges))

    def _metric(self, table: Mapping[str, Any], name: str, labels: Mapping[str, Any] | None) -> Any:
        try:
            metric = table[name]
        except KeyError as exc:
            raise ValueError(f"unknown metric {name!r}; known: {', '.join(sorted(table))}") from exc
        return metric.labels(**{k: str(v) for k, v in labels.items()}) if labels else metric

    def inc(self, name: str, labels: Mapping[str, Any] | None = None, value: float = 1.0) -> None:
        if value:
            self._metric(self._counters, name, labels).inc(value)

    def observe(self, name: str, value: float, labels: Mapping[str, Any] | None = None) -> None:
        self._metric(self._histograms, name, labels).observe(value)

    def render(self) -> bytes:
        """The Prometheus exposition text of every counter, histogram and gauge."""
        return generate_latest(self.registry)
