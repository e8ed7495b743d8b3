"""The dataset-format registry (bot.datasets): one explicit table of formats, each read and written
record by record, and a clear error for a name it does not hold."""

from __future__ import annotations

import io
import json

import pytest

from bot.datasets import (
    EXPORT_FORMATS,
    FORMATS,
    IMPORT_FORMATS,
    DatasetFormat,
    ReadContext,
    export_record,
    get_format,
    parse_dataset,
)
from bot.errors import DataError, UsageError
from bot.examples import Example, ExampleComment, parse_examples

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


class _Pipe(io.RawIOBase):
    """A stream that cannot seek and hands out at most 1000 bytes a read, like a pipe."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        chunk = self._data.read(min(len(buffer), 1000))
        buffer[: len(chunk)] = chunk
        return len(chunk)


def _pipe(data: bytes) -> io.BufferedReader:
    return io.BufferedReader(_Pipe(data))


def test_parse_dataset_reads_an_open_stream_a_line_at_a_time_without_seeking():
    record = export_record(_example(), "alpaca")
    long = dict(record, output=record["output"].replace("Why 2?", "Why 2? " + "x" * 5000))
    long["revbot"] = dict(record["revbot"], id="team/repo#4:long")
    lines = [json.dumps(long), "", json.dumps(record), "{not json", "   "]
    data = ("\n".join(lines) + "\n").encode()
    with pytest.raises(OSError):
        _pipe(data).seek(0)  # what the reader must not need
    result = parse_dataset(_pipe(data), "piped.jsonl", "alpaca", skip_bad=True)
    # the first line is longer than the first 4096 bytes read to tell JSONL from a JSON array
    assert (result.path, result.records) == ("piped.jsonl", 3)
    assert [e.id for e in result.examples] == ["team/repo#4:long", _example().id]
    assert result.examples[0].comments[0].body.startswith("Why 2? xxx") and result.examples[1] == _example()
    assert result.skipped == {"invalid JSON": 1} and result.errors[0].startswith("piped.jsonl:4: invalid JSON")
    with pytest.raises(DataError, match=r"^piped\.jsonl:4: invalid JSON"):
        parse_dataset(_pipe(data), "piped.jsonl", "alpaca")
    array = json.dumps([long, record], indent=1).encode()
    assert parse_dataset(_pipe(array), "a.json", "alpaca").examples == result.examples


def test_parse_examples_reads_lines_and_names_them_in_errors():
    good = json.dumps(_example().to_dict())
    assert list(parse_examples([good + "\n", "\n", good], "memory")) == [_example(), _example()]
    with pytest.raises(DataError, match=r"^memory:2: invalid JSON"):
        list(parse_examples([good, "{", good], "memory"))
    errors: list[str] = []
    assert len(list(parse_examples([good, "{", good], "memory", skip_bad=True, errors=errors))) == 2
    assert errors == ["memory:2: invalid JSON (Expecting property name enclosed in double quotes at column 2)"]
