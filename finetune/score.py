"""`revbot score`'s library side: score any line-aligned predictions against references with revbot's
text metrics, so a team can put revbot's numbers next to a paper's (or score another tool's output).

Line N of the prediction file is the prediction for line N of the reference file, as in the
CodeReviewer evaluator's input files. Lines end with LF, CRLF or CR; a final line break is optional.
"""

from __future__ import annotations

import os
from typing import Any

from bot.errors import DataError
from finetune.metrics import text_metrics


def read_lines(path: str | os.PathLike[str]) -> list[str]:
    """The lines of a UTF-8 text file (an empty file has none), or a DataError naming file and line."""
    try:
        data = open(path, "rb").read()
    except OSError as exc:
        raise DataError(f"cannot read: {exc.strerror or exc}", str(path)) from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DataError("not UTF-8 text", str(path), line) from exc
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if text.endswith("\n"):
        text = text[:-1]
    return text.split("\n") if data else []


def score_files(predictions_path: str | os.PathLike[str], references_path: str | os.PathLike[str]) -> dict[str, Any]:
    """BLEU-4 (both variants), ROUGE-L and exact match of two line-aligned files."""
    predictions, references = read_lines(predictions_path), read_lines(references_path)
    if len(predictions) != len(references):
        raise DataError(
            f"the files must pair up line by line, but {predictions_path} has {len(predictions)} "
            f"line(s) and {references_path} has {len(references)}"
        )
    if not references:
        raise DataError("nothing to score: the files are empty", str(references_path))
    return {
        "pairs": len(references),
        "predictions": str(predictions_path),
        "references": str(references_path),
        **text_metrics(predictions, references),
    }
