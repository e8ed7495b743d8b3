"""Service metrics in the Prometheus text format, written by hand (no client library).

Counters are buffered in memory and added to the job store's counter table at most once a second
(and at every scrape), so the web processes and the workers of one deployment all report the same
totals, and a burst of deliveries costs one write, not one per request. Gauges (jobs by state,
queue depth, model) are read live at scrape time.
"""
from __future__ import annotations

import atexit
import math
import threading
import time
from typing import Any, Callable, Iterable, Mapping

# name -> (type, help)
FAMILIES: dict[str, tuple[str, str]] = {
    "revbot_webhook_deliveries_total": ("counter", "Webhook deliveries by event and outcome."),
    "revbot_jobs": ("gauge", "Jobs in the job table by state."),
    "revbot_queue_depth": ("gauge", "Messages waiting in the transport queue."),
    "revbot_jobs_finished_total": ("counter", "Jobs finished by kind and outcome."),
    "revbot_job_retries_total": ("counter", "Job runs given back for a retry after a transient error."),
    "revbot_review_latency_seconds": ("histogram", "Seconds from a review job's delivery to its review being posted."),
    "revbot_comments_posted_total": ("counter", "Inline review comments posted."),
    "revbot_comments_moved_to_body_total": ("counter", "Comments put in the review body because they could not be anchored."),
    "revbot_comments_skipped_duplicate_total": ("counter", "Comments not posted because their fingerprint was already on the PR."),
    "revbot_reviews_posted_total": ("counter", "Create-review calls that succeeded."),
    "revbot_github_api_errors_total": ("counter", "GitHub API errors seen by the worker, by HTTP status."),
    "revbot_model_reloads_total": ("counter", "Model versions loaded without a restart."),
    "revbot_model_loaded": ("gauge", "1 when the worker holds a loaded model."),
    "revbot_up": ("gauge", "1 while the process answers."),
}
LATENCY_BUCKETS = (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)


def label_string(labels: Mapping[str, Any] | None) -> str:
    if not labels:
        return ""
    return ",".join(f'{k}="{_escape(str(v))}"' for k, v in sorted(labels.items()))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _fmt(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return str(int(value)) if float(value).is_integer() else repr(float(value))


class Metrics:
    """Counters and histograms buffered for a shared ``sink`` (a job store), or kept locally."""

    def __init__(self, sink: Any = None, flush_interval: float = 1.0):
        self.sink = sink
        self.flush_interval = flush_interval
        self._lock = threading.Lock()
        self._pending: dict[tuple[str, str], float] = {}
        self._local: dict[tuple[str, str], float] = {}  # totals when there is no sink
        self._last_flush = time.monotonic()
        self._flusher: threading.Thread | None = None
        self._flusher_lock = threading.Lock()

    def _ensure_flusher(self) -> None:
        """A background flush, so counts of a process that went quiet still reach the shared totals."""
        with self._flusher_lock:
            if self._flusher is not None or self.sink is None:
                return
            self._flusher = threading.Thread(target=self._flush_loop, name="revbot-metrics", daemon=True)
            self._flusher.start()
        atexit.register(self._flush_quietly)

    def _flush_loop(self) -> None:
        while True:
            time.sleep(self.flush_interval)
            self._flush_quietly()

    def _flush_quietly(self) -> None:
        try:
            self.flush()
        except Exception:
            pass  # kept pending; the next flush tries again

    def inc(self, name: str, labels: Mapping[str, Any] | None = None, value: float = 1.0) -> None:
        key = (name, label_string(labels))
        with self._lock:
            self._pending[key] = self._pending.get(key, 0.0) + value
            due = time.monotonic() - self._last_flush >= self.flush_interval
            start_flusher = self._flusher is None
        if start_flusher:
            self._ensure_flusher()
        if due:
            self._flush_quietly()

    def observe(self, name: str, value: float, labels: Mapping[str, Any] | None = None,
                buckets: Iterable[float] = LATENCY_BUCKETS) -> None:
        base = dict(labels or {})
        for bound in buckets:
            if value <= bound:
                self.inc(name + "_bucket", {**base, "le": _fmt(bound)})
        self.inc(name + "_bucket", {**base, "le": "+Inf"})
        self.inc(name + "_sum", base, value)
        self.inc(name + "_count", base)

    def flush(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, {}
            self._last_flush = time.monotonic()
        if not pending:
            return
        if self.sink is None:
            with self._lock:
                for key, value in pending.items():
                    self._local[key] = self._local.get(key, 0.0) + value
            return
        try:
            self.sink.add_counters([(name, labels, value) for (name, labels), value in pending.items()])
        except Exception:
            with self._lock:  # keep them for the next flush rather than lose them
                for key, value in pending.items():
                    self._pending[key] = self._pending.get(key, 0.0) + value
            raise

    def totals(self) -> dict[tuple[str, str], float]:
        """Every counter's total: the shared ones plus what this process has not flushed yet."""
        try:
            self.flush()
        except Exception:
            pass
        out: dict[tuple[str, str], float] = dict(self._local)
        if self.sink is not None:
            try:
                out.update(self.sink.read_counters())
            except Exception:
                pass
        with self._lock:
            for key, value in self._pending.items():
                out[key] = out.get(key, 0.0) + value
        return out

    def value(self, name: str, labels: Mapping[str, Any] | None = None) -> float:
        return self.totals().get((name, label_string(labels)), 0.0)

    def render(self, gauges: Callable[[], Iterable[tuple[str, Mapping[str, Any] | None, float]]] | None = None) -> str:
        """The Prometheus exposition text: counters from the totals, gauges from ``gauges()``."""
        samples: dict[str, list[tuple[str, str, float]]] = {}
        for (name, labels), value in self.totals().items():
            samples.setdefault(_family(name), []).append((name, labels, value))
        for name, labels, value in (gauges() if gauges else []):
            samples.setdefault(_family(name), []).append((name, label_string(labels), value))
        for family, rows in samples.items():
            if FAMILIES.get(family, ("",))[0] == "histogram":
                _fill_buckets(family, rows)
        lines = []
        for family in sorted(samples):
            kind, help_text = FAMILIES.get(family, ("untyped", family))
            lines.append(f"# HELP {family} {help_text}")
            lines.append(f"# TYPE {family} {kind}")
            for name, labels, value in sorted(samples[family], key=_sample_order):
                lines.append(f"{name}{{{labels}}} {_fmt(value)}" if labels else f"{name} {_fmt(value)}")
        return "\n".join(lines) + "\n"


def _fill_buckets(family: str, rows: list[tuple[str, str, float]]) -> None:
    """Prometheus wants every bucket of a histogram, also the empty ones (stored counters skip zeros)."""
    present = {(name, labels) for name, labels, _ in rows}
    for name, labels, _ in list(rows):
        if name != family + "_count":
            continue
        for bound in [*(_fmt(b) for b in LATENCY_BUCKETS), "+Inf"]:
            le = f'le="{bound}"'
            full = f"{labels},{le}" if labels else le
            full = ",".join(sorted(full.split(","), key=lambda part: part.split("=", 1)[0]))
            if (family + "_bucket", full) not in present:
                rows.append((family + "_bucket", full, 0.0))


def _family(name: str) -> str:
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix) and name[: -len(suffix)] in FAMILIES:
            return name[: -len(suffix)]
    return name


def _sample_order(sample: tuple[str, str, float]) -> tuple[str, str, float]:
    name, labels, _ = sample
    le = 0.0
    if 'le="' in labels:
        raw = labels.split('le="', 1)[1].split('"', 1)[0]
        le = math.inf if raw == "+Inf" else float(raw)
    return (name, labels.split('le="')[0], le)
