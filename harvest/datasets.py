"""Datasets in and out of the store: `revbot dataset import` and `revbot dataset export`. The formats
themselves (reading and writing records) are bot.datasets; this module adds the store, the input
file (adapters.files.read_dataset) and the output file."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable

from adapters.files import read_dataset, write_jsonl
from adapters.store import Store
from bot.datasets import ImportResult, export_records
from bot.examples import Example


def import_dataset(
    store: Store,
    path: str | os.PathLike[str],
    fmt: str,
    *,
    field_map: dict[str, str] | None = None,
    skip_bad: bool = False,
    repo: str | None = None,
    keep_tool_comments: bool = False,
) -> ImportResult:
    """Read a dataset and write it to the store in one transaction: a bad file stores nothing."""
    result = read_dataset(
        path, fmt, field_map=field_map, skip_bad=skip_bad, repo=repo, keep_tool_comments=keep_tool_comments
    )
    with store.transaction():
        result.written = store.upsert_examples(result.examples)
        if result.comments:
            store.upsert_comments(result.comments)
    return result


def export_examples(examples: Iterable[Example], out: str | os.PathLike[str], fmt: str, *, meta: bool = True) -> int:
    """Write examples as JSONL in ``fmt`` to ``out`` ("-" for stdout), atomically for files."""
    records = export_records(examples, fmt, meta=meta)  # an unknown format is refused before anything is written
    if str(out) == "-":
        count = 0
        for record in records:
            sys.stdout.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
        return count
    return write_jsonl(out, records)
