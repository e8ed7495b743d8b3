"""detect-secrets (1.5.0, every plugin at its default settings) used as a scrubber, so that its recall
can be measured on the same corpus as ``bot.secrets``: each value it reports on a line is replaced
in that line, and a sample counts as caught when none of its secrets is left, as for revbot's own.

A plugin that reports only that a secret is there, not its value (the private-key detector reports
the BEGIN line), does not remove the secret: it counts as missed, as it would for a scrubber."""

from __future__ import annotations

from collections.abc import Iterable

from detect_secrets.core.scan import scan_line
from detect_secrets.settings import default_settings

from bot.secrets import PLACEHOLDER
from tests.core.secret_corpus import Sample


def _scrub_line(line: str) -> str:
    for finding in scan_line(line):
        value = finding.secret_value
        if value:
            line = line.replace(value, PLACEHOLDER)
    return line


def oracle_recall(corpus: Iterable[Sample]) -> dict[str, tuple[int, int]]:
    """Per kind: (samples whose every secret detect-secrets' findings remove, samples)."""
    table: dict[str, tuple[int, int]] = {}
    with default_settings():
        for sample in corpus:
            out = "\n".join(_scrub_line(line) for line in sample.text.split("\n"))
            hit, total = table.get(sample.kind, (0, 0))
            table[sample.kind] = (hit + all(s not in out for s in sample.secrets), total + 1)
    return table
