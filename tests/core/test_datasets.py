"""The dataset-format registry (bot.datasets): one explicit table of formats, each read and written
record by record, and a clear error for a name it does not hold."""

from __future__ import annotations

import pytest

from bot.datasets import (
    EXPORT_FORMATS,
    FORMATS,
    IMPORT_FORMATS,
    DatasetFormat,
    ReadContext,
    export_record,
    get_format,
)
from bot.errors import UsageError
from bot.examples import Example, ExampleComment

HUNK = "@@ -1,3 +1,3 @@\n import os\n-x = 1\n+x = 2\n print(x)"


def _example() -> Example:
    return Example(
        id="team/repo#4:abc",
        repo="team/repo",
        pr=4,
        path="src/m.py",
        hunk=HUNK,
        comments=[ExampleComment(2, "RIGHT", "Why 2?")],
        created_at="2025-01-02T03:04:05Z",
        source="github",
    )


def test_the_registry_lists_every_format_once_in_the_command_line_order():
    assert IMPORT_FORMATS == ("crc", "codereviewer", "alpaca", "sharegpt", "openai", "jsonl")
    assert EXPORT_FORMATS == ("alpaca", "sharegpt", "openai", "jsonl")
    assert all(isinstance(f, DatasetFormat) and f.name == name for name, f in FORMATS.items())
    with pytest.raises(TypeError):
        FORMATS["mine"] = FORMATS["jsonl"]  # type: ignore[index]  # read-only: no patching


def test_get_format_names_the_known_formats():
    assert get_format("crc").read is not None and get_format("crc").write is None
    with pytest.raises(UsageError, match="unknown dataset format 'xml'; choose one of crc, codereviewer, alpaca"):
        get_format("xml")
    with pytest.raises(UsageError, match="unknown export format 'crc'; choose one of alpaca, sharegpt, openai, jsonl"):
        get_format("crc", "export")
    with pytest.raises(UsageError, match="unknown export format 'crc'"):
        export_record(_example(), "crc")


@pytest.mark.parametrize("name", EXPORT_FORMATS)
def test_each_written_record_reads_back_as_the_same_example(name):
    fmt = get_format(name)
    assert fmt.read is not None and fmt.write is not None
    ex = _example()
    record = fmt.write(ex, True)
    assert record == export_record(ex, name)
    assert fmt.read(record, ReadContext("memory", line=1)) == ex


def test_chat_records_without_their_block_get_the_default_repo_and_a_content_id():
    ctx = ReadContext("memory", default_repo="fallback/repo", line=1)
    read = get_format("openai").read
    assert read is not None
    back = read(export_record(_example(), "openai", meta=False), ctx)
    assert (back.repo, back.pr, back.source) == ("fallback/repo", 0, "import:openai")
    assert back.hunk == HUNK and back.comments == _example().comments
    assert back.id.startswith("fallback/repo#0:")
