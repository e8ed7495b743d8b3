"""The exemplar index on disk: saved with a model version (``models/vN/exemplars/``), hashed in its
``revbot.json``, and loaded with the adapter, so a served model and the past reviews it reads travel
together. A version without an index (v1/v2 adapters) is served without exemplars, as before.

Layout: ``reviews.jsonl`` (one ``bot.exemplars.IndexedReview`` a line) and bm25s's own saved index
files beside it. The meta entry is ``{"dir", "k", "documents", "sha256", "token_budget"}``; the hash
covers every file of the folder, and a mismatch refuses to load (an index edited or swapped after
training would show the model exemplars it was not evaluated with).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from adapters.files import write_jsonl
from bot.errors import ModelError
from bot.exemplars import DEFAULT_K, EXEMPLAR_TOKEN_BUDGET, ExemplarIndex, IndexedReview, quiet_bm25s

INDEX_DIR = "exemplars"
REVIEWS_FILE = "reviews.jsonl"


def folder_hash(directory: Path) -> str:
    """sha256 over the folder's files (names and bytes, in name order)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(directory)).encode() + b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()


def save_index(
    index: ExemplarIndex, version_dir: Path, k: int = DEFAULT_K, max_length: int | None = None
) -> dict[str, Any]:
    """Write ``index`` into ``version_dir/exemplars`` and return the revbot.json entry describing it;
    ``max_length``: the row length training fitted the exemplars to (review holds prompts to it too)."""
    target = version_dir / INDEX_DIR
    target.mkdir(parents=True, exist_ok=True)
    write_jsonl(target / REVIEWS_FILE, (r.to_dict() for r in index.reviews))
    if len(index):
        index.bm25.save(str(target / "bm25"), show_progress=False)
    return {
        "dir": INDEX_DIR,
        "k": k,
        "documents": len(index),
        "token_budget": EXEMPLAR_TOKEN_BUDGET,
        "max_length": max_length,
        "sha256": folder_hash(target),
    }


def load_index(version_dir: Path, entry: Any) -> ExemplarIndex | None:
    """The index a version's revbot.json names (``entry``), checked against its hash; None when the
    version has none (trained before prompt format v3, or with k = 0)."""
    if not isinstance(entry, dict) or not entry.get("dir"):
        return None
    target = version_dir / str(entry["dir"])
    if not (target / REVIEWS_FILE).is_file():
        raise ModelError(f"{version_dir}: its exemplar index {target} is missing; retrain or restore the version")
    if folder_hash(target) != entry.get("sha256"):
        raise ModelError(
            f"{target}: the exemplar index does not match the hash in revbot.json (edited after training?); "
            "retrain the version"
        )
    import bm25s

    quiet_bm25s()
    try:
        rows = [json.loads(line) for line in (target / REVIEWS_FILE).read_text(encoding="utf-8").splitlines() if line]
        reviews = [IndexedReview.from_dict(r) for r in rows]
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelError(f"{target / REVIEWS_FILE}: unreadable exemplar index ({exc})") from exc
    bm25 = bm25s.BM25.load(str(target / "bm25"), show_progress=False) if reviews else None
    return ExemplarIndex(reviews, bm25=bm25) if reviews else ExemplarIndex([])
