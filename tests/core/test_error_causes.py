"""An error's cause is kept (raise ... from exc) and shown at -vv: the error line stays one line, the
debug log carries the traceback and the chain of causes, scrubbed of secrets."""

from __future__ import annotations

import logging

import pytest

from adapters.logs import RedactingFilter
from revbot.cli import main


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    # a handler an earlier in-process run installed may write to a closed capture: start without one
    root.handlers[:] = [h for h in root.handlers if not any(isinstance(f, RedactingFilter) for f in h.filters)]
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def _run(*args: str) -> int:
    with pytest.raises(SystemExit) as ended:
        main(list(args))
    return ended.value.code


def _cause_records(caplog):
    return [r for r in caplog.records if r.name == "adapters.cli_options" and r.exc_info]


def test_debug_logs_the_cause_chain_of_an_error(tmp_path, caplog, capsys, restore_logging):
    missing = tmp_path / "missing.diff"
    assert _run("-vv", "review", str(missing)) == 2
    assert capsys.readouterr().err.count("revbot: error: cannot read diff file") == 1
    (record,) = _cause_records(caplog)
    error = record.exc_info[1]
    assert isinstance(error.__cause__, FileNotFoundError)  # the OSError under the usage error
    text = logging.Formatter().format(record)
    assert "The above exception was the direct cause" in text and "FileNotFoundError" in text


def test_without_debug_the_error_is_one_line(tmp_path, caplog, capsys, restore_logging):
    assert _run("review", str(tmp_path / "missing.diff")) == 2
    assert _cause_records(caplog) == []
    assert "Traceback" not in capsys.readouterr().err
