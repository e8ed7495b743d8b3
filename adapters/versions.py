"""The model registry: trained versions in ``models/vN/``, which one is ``current``, and why.

Training, the CLI, the webhook service and retraining all go through this one module, so the rules
live in one place:

* A version is a directory ``vN`` holding an adapter and its ``revbot.json``. Training writes into a
  hidden temporary directory and renames it to ``vN`` only when everything is written
  (``new_version``); a crashed run leaves a ``.incoming-*`` directory that is never listed.
* ``current.json`` names the version to serve plus the history of promotions (for ``rollback``).
  It is replaced atomically (``adapters.files``: a temporary file, then ``os.replace``), so a
  reader never sees a half-written pointer, and read-modify-write cycles hold a lock (``file_lock``)
  so two promoters cannot interleave.
* ``read_meta`` is the one reader of ``revbot.json`` (the model loader checks adapters through it).
* ``decisions.jsonl`` is an append-only log of promotion decisions (candidate, incumbent, metric,
  values, promoted or not, and the reason), for people auditing why a model is live.
* ``events.jsonl`` is an append-only log of every promotion and rollback (when, which version,
  the one it replaced, who or what did it), so the history survives a rollback.
* A version's own evaluation (its held-out split, or the store it was trained from) is
  ``revbot.json``'s ``evaluation`` and ``eval/report.md``. An evaluation on other data is kept
  beside it in ``evals/<dataset>-<sha256[:12]>/`` (report, metrics, ``dataset.json``), so another
  dataset's scores are never shown as the version's own.

Deliberately free of torch and transformers: the service reads it on every reload.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from adapters.files import atomic_write_json, file_lock
from bot.errors import ModelError
from bot.prompt import SUPPORTED_PROMPT_FORMATS

log = logging.getLogger(__name__)

DEFAULT_MODELS_DIR = "models"
META_FILE = "revbot.json"
POINTER_FILE = "current.json"
DECISIONS_FILE = "decisions.jsonl"
EVENTS_FILE = "events.jsonl"
EVAL_DIR = "eval"  # the version's own evaluation report (finetune.evaluate writes it)
OTHER_EVALS_DIR = "evals"  # evaluations on other datasets, one folder each
DATASET_FILE = "dataset.json"
LOCK_FILE = ".lock"
INCOMING_PREFIX = ".incoming-"
_VERSION_NAME = re.compile(r"^v(\d+)$")


def now_iso() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def default_models_dir() -> Path:
    """$REVBOT_MODELS_DIR (relative to $REVBOT_HOME), else ``models/``: the settings' ``models_dir``."""
    from adapters.settings import Settings

    return Settings.from_env(only=("home", "models_dir")).models_dir


@dataclass(frozen=True)
class ModelVersion:
    """A finished version: ``meta`` is its revbot.json (base model, prompt format, metrics...)."""

    name: str
    path: Path
    meta: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    created_at: str = ""

    @property
    def number(self) -> int | None:
        match = _VERSION_NAME.match(self.name)
        return int(match.group(1)) if match else None

    @property
    def base_model(self) -> str | None:
        return self.meta.get("base_model")

    @property
    def metrics(self) -> dict[str, Any]:
        value = self.meta.get("metrics")
        return value if isinstance(value, dict) else {}


@dataclass
class PendingVersion:
    """What ``new_version()`` yields: write into ``path``; ``version`` is set once it is published."""

    path: Path
    version: ModelVersion | None = None


def read_meta(directory: str | os.PathLike[str], *, what: str = "a model version", hint: str = "") -> dict[str, Any]:
    """The ``revbot.json`` in ``directory`` (a version, or any adapter), as a JSON object. Errors are
    ModelErrors naming the file (and the line): missing (``directory`` is not ``what``; ``hint``
    says how to get one), unreadable, not JSON, not an object. Checking the fields is the caller's."""
    directory = Path(directory)
    meta_path = directory / META_FILE
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ModelError(f"{directory} is not {what}: {META_FILE} is missing{hint}") from exc
    except json.JSONDecodeError as exc:
        raise ModelError(f"{meta_path}:{exc.lineno}: not valid JSON: {exc.msg}") from exc
    except OSError as exc:
        raise ModelError(f"cannot read {meta_path}: {exc.strerror or exc}") from exc
    if not isinstance(meta, dict):
        raise ModelError(f"{meta_path}:1: expected a JSON object")
    return meta


def check_prompt_format(version: int, what: str) -> None:
    """Refuse to serve a model trained on a prompt format this revbot cannot render."""
    if version not in SUPPORTED_PROMPT_FORMATS:
        supported = ", ".join(str(v) for v in SUPPORTED_PROMPT_FORMATS)
        raise ModelError(
            f"{what} was trained with prompt format version {version}, but this revbot renders versions "
            f"{supported}; retrain the adapter with this revbot (`revbot train`), or use a revbot "
            f"release that supports version {version}"
        )


def _version_from_dir(directory: Path, name: str | None = None) -> ModelVersion:
    meta = read_meta(directory)
    created = meta.get("created_at")
    if not isinstance(created, str) or not created:
        created = datetime.fromtimestamp(directory.stat().st_mtime, UTC).replace(microsecond=0).isoformat()
    return ModelVersion(name or directory.name, directory, meta, created)


class ModelRegistry:
    """Model versions under ``models_dir`` (default: $REVBOT_MODELS_DIR, else ``models/``)."""

    def __init__(self, models_dir: str | os.PathLike[str] | None = None):
        self.root = Path(models_dir) if models_dir is not None else default_models_dir()

    def __repr__(self) -> str:
        return f"ModelRegistry({str(self.root)!r})"

    # -- reading

    def list(self) -> list[ModelVersion]:
        """Finished versions, oldest first. Temporary and unreadable directories are skipped."""
        if not self.root.is_dir():
            return []
        found = []
        for entry in self.root.iterdir():
            match = _VERSION_NAME.match(entry.name)
            if not match or not entry.is_dir():
                continue
            try:
                found.append((int(match.group(1)), _version_from_dir(entry)))
            except ModelError as exc:
                log.warning("skipping %s: %s", entry, exc)
        return [v for _, v in sorted(found, key=lambda item: item[0])]

    def names(self) -> list[str]:
        return [v.name for v in self.list()]

    def get(self, name: str) -> ModelVersion:
        directory = self.root / name
        if not _VERSION_NAME.match(name) or not directory.is_dir():
            available = ", ".join(self.names()) or "none yet (train one with `revbot train`)"
            raise ModelError(f"no model version {name!r} in {self.root}; available: {available}")
        return _version_from_dir(directory)

    def incoming(self) -> list[Path]:
        """Temporary directories of runs in progress or that crashed (never taken as versions)."""
        if not self.root.is_dir():
            return []
        return sorted(p for p in self.root.iterdir() if p.name.startswith(INCOMING_PREFIX) and p.is_dir())

    def _pointer(self, strict: bool = True) -> dict[str, Any]:
        """The pointer file; a damaged one is an error, or with ``strict=False`` (promote, which
        rewrites it) an empty history."""
        path = self.root / POINTER_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(data, dict):
                raise ValueError("expected a JSON object")
        except FileNotFoundError:
            return {"current": None, "history": []}
        except (OSError, ValueError) as exc:
            if not strict:
                log.warning("rewriting the damaged current-version pointer %s (%s)", path, exc)
                return {"current": None, "history": []}
            raise ModelError(
                f"cannot read the current-version pointer {path}: {exc}; "
                f"promote a version again (`revbot models promote vN`) to rewrite it"
            ) from exc
        history = data.get("history")
        return {"current": data.get("current"), "history": list(history) if isinstance(history, list) else []}

    def current_name(self) -> str | None:
        return self._pointer()["current"]

    def current(self) -> ModelVersion | None:
        """The promoted version, or None when nothing has been promoted yet."""
        name = self.current_name()
        if name is None:
            return None
        try:
            return self.get(name)
        except ModelError as exc:
            raise ModelError(
                f"the current version {name!r} named in {self.root / POINTER_FILE} is missing; "
                f"promote another one (`revbot models promote vN`)"
            ) from exc

    def history(self) -> list[str]:
        """Promoted versions in promotion order; the last one is current."""
        return self._pointer()["history"]

    def latest(self) -> ModelVersion | None:
        versions = self.list()
        return versions[-1] if versions else None

    def resolve(self, spec: str | os.PathLike[str] | None = None) -> ModelVersion:
        """``"current"`` (or None), ``"latest"``, ``"vN"``, or the path of a version directory."""
        text = str(spec) if spec is not None else "current"
        if text == "current":
            version = self.current()
            if version is None:
                raise ModelError(
                    f"no model version is current in {self.root}: train one (`revbot train`) or promote one "
                    f"(`revbot models promote vN`)"
                )
            return version
        if text == "latest":
            version = self.latest()
            if version is None:
                raise ModelError(f"no model versions in {self.root} yet; train one with `revbot train`")
            return version
        path = Path(text).expanduser()
        if _VERSION_NAME.match(text) and ((self.root / text).is_dir() or not path.is_dir()):
            return self.get(text)
        if path.is_dir():
            return _version_from_dir(path.resolve())
        raise ModelError(f"{text!r} is neither 'current', 'latest', a version name (v1, v2...) nor a version directory")

    # -- writing

    @contextmanager
    def _locked(self) -> Iterator[None]:
        with file_lock(self.root / LOCK_FILE):
            yield

    def _check_servable(self, version: ModelVersion) -> None:
        if not version.base_model:
            raise ModelError(f"{version.path / META_FILE} does not name its base model; it cannot be served")
        prompt_version = version.meta.get("prompt_format_version")
        if not isinstance(prompt_version, int):
            raise ModelError(f"{version.path / META_FILE} has no integer prompt_format_version")
        check_prompt_format(prompt_version, f"version {version.name}")

    def promote(self, name: str, *, by: str | None = None) -> ModelVersion:
        """Make ``name`` current, atomically. Refuses versions this revbot could not serve. ``by``:
        who or what promoted it, for the events log."""
        version = self.get(name)
        self._check_servable(version)
        with self._locked():
            pointer = self._pointer(strict=False)
            if pointer["current"] == version.name:
                return version
            history = [n for n in pointer["history"] if n != version.name] + [version.name]
            atomic_write_json(
                self.root / POINTER_FILE,
                {
                    "current": version.name,
                    "history": history,
                    "updated_at": now_iso(),
                },
            )
            self._event("promote", version.name, pointer["current"], by)
        log.info("promoted %s in %s", version.name, self.root)
        return version

    def rollback(self, *, by: str | None = None) -> ModelVersion:
        """Make the previously promoted version current again (and forget the current one's promotion)."""
        with self._locked():
            pointer = self._pointer()
            history = list(pointer["history"])
            if pointer["current"] is None or len(history) < 2:
                raise ModelError(
                    f"nothing to roll back to in {self.root}: "
                    + (f"only {history[-1]} was ever promoted" if history else "no version was ever promoted")
                )
            history.pop()
            while history and not (self.root / history[-1] / META_FILE).is_file():
                log.warning("skipping %s in the promotion history: it no longer exists", history[-1])
                history.pop()
            if not history:
                raise ModelError(f"nothing to roll back to in {self.root}: earlier versions were deleted")
            target = history[-1]
            atomic_write_json(
                self.root / POINTER_FILE,
                {
                    "current": target,
                    "history": history,
                    "updated_at": now_iso(),
                },
            )
            self._event("rollback", target, pointer["current"], by)
        log.info("rolled back to %s in %s", target, self.root)
        return self.get(target)

    @contextmanager
    def new_version(self) -> Iterator[PendingVersion]:
        """A temporary directory that becomes the next ``vN`` when the block succeeds, and is removed
        when it fails. The block must write ``revbot.json`` into it."""
        self.root.mkdir(parents=True, exist_ok=True)
        pending = PendingVersion(Path(tempfile.mkdtemp(prefix=INCOMING_PREFIX, dir=self.root)))
        try:
            yield pending
            if not (pending.path / META_FILE).is_file():
                raise ModelError(f"the new version has no {META_FILE}; not publishing it")
            pending.version = self._publish(pending.path)
        except BaseException:
            shutil.rmtree(pending.path, ignore_errors=True)
            raise

    def _publish(self, tmp: Path) -> ModelVersion:
        with self._locked():
            taken = [int(m.group(1)) for p in self.root.iterdir() if (m := _VERSION_NAME.match(p.name))]
            number = max(taken, default=0) + 1
            while True:
                target = self.root / f"v{number}"
                if not target.exists():
                    try:
                        os.rename(tmp, target)  # atomic; fails rather than merging into an existing dir
                        break
                    except OSError:
                        if not target.exists():
                            raise
                number += 1
        log.info("published model version %s", target)
        return _version_from_dir(target)

    def update_meta(self, name: str, **fields: Any) -> ModelVersion:
        """Merge ``fields`` into a version's revbot.json (atomically), e.g. evaluation results."""
        version = self.get(name)
        meta = dict(version.meta)
        meta.update(fields)
        atomic_write_json(version.path / META_FILE, meta)
        return _version_from_dir(version.path)

    # -- decisions

    def record_decision(
        self,
        candidate: str,
        incumbent: str | None,
        metric: str,
        values: dict[str, Any],
        promoted: bool,
        reason: str,
    ) -> dict[str, Any]:
        """Append one promotion decision to the log and return it."""
        entry = {
            "at": now_iso(),
            "candidate": candidate,
            "incumbent": incumbent,
            "metric": metric,
            "values": values,
            "promoted": bool(promoted),
            "reason": reason,
        }
        self.root.mkdir(parents=True, exist_ok=True)
        line = json.dumps(entry, sort_keys=True, ensure_ascii=False) + "\n"
        with self._locked(), open(self.root / DECISIONS_FILE, "a", encoding="utf-8") as fh:
            fh.write(line)
        return entry

    def decisions(self) -> list[dict[str, Any]]:
        """The decision log, oldest first; unreadable lines are reported and skipped."""
        return _read_jsonl(self.root / DECISIONS_FILE)

    def _event(self, action: str, version: str, previous: str | None, by: str | None) -> None:
        """Append a promotion or rollback to the events log (the caller holds the lock)."""
        entry = {"at": now_iso(), "action": action, "version": version, "previous": previous, "by": by or "unknown"}
        with open(self.root / EVENTS_FILE, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry, sort_keys=True, ensure_ascii=False) + "\n")

    def events(self) -> list[dict[str, Any]]:
        """Every promotion and rollback, oldest first (since this log exists)."""
        return _read_jsonl(self.root / EVENTS_FILE)


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of a log file, oldest first; unreadable lines are reported and skipped."""
    if not path.is_file():
        return []
    out = []
    for number, text in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not text.strip():
            continue
        try:
            entry = json.loads(text)
        except json.JSONDecodeError:
            log.warning("%s:%d: skipping a line that is not JSON", path, number)
            continue
        if isinstance(entry, dict):
            out.append(entry)
    return out


# --------------------------------------------------------------------------- evaluations on other data


def dataset_digest(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a dataset file's bytes: two evaluations on the same name but other data differ."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def is_own_dataset(version: ModelVersion, data: str | os.PathLike[str] | None) -> bool:
    """Whether evaluating on ``data`` gives the version's own numbers: no data (its saved test
    split) or the very store it was trained from (its split re-made); any other file is other data."""
    if data is None:
        return True
    source = (version.meta.get("data") or {}).get("source")
    if not source:
        return False
    try:
        return Path(source).resolve() == Path(data).resolve()
    except OSError:
        return False


def other_eval_dir(version: ModelVersion, data: str | os.PathLike[str]) -> Path:
    """Where an evaluation of ``version`` on ``data`` (not its own) is kept: named by the file and its hash."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(data).name)[:60].strip("._") or "dataset"
    return version.path / OTHER_EVALS_DIR / f"{stem}-{dataset_digest(data)[:12]}"


def record_other_evaluation(
    directory: str | os.PathLike[str], data: str | os.PathLike[str], fmt: str | None, at: str
) -> dict[str, Any]:
    """Write ``dataset.json`` beside a report in ``other_eval_dir``: which data it was measured on."""
    entry = {"name": Path(data).name, "path": str(data), "sha256": dataset_digest(data), "format": fmt, "at": at}
    atomic_write_json(Path(directory) / DATASET_FILE, entry)
    return entry


def other_evaluations(version: ModelVersion) -> list[dict[str, Any]]:
    """Evaluations of ``version`` on other datasets, newest first: ``dataset.json`` plus ``key`` (the
    folder's name) and ``systems`` (each system's metrics, from the report's metrics.json)."""
    root = version.path / OTHER_EVALS_DIR
    if not root.is_dir():
        return []
    out = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        try:
            entry = json.loads((folder / DATASET_FILE).read_text(encoding="utf-8"))
            metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            log.warning("skipping the evaluation in %s: %s", folder, exc)
            continue
        systems = metrics.get("systems") if isinstance(metrics, dict) else None
        entry.update(key=folder.name, systems={k: v.get("metrics", {}) for k, v in (systems or {}).items()})
        out.append(entry)
    return sorted(out, key=lambda e: str(e.get("at") or ""), reverse=True)
