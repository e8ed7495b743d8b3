"""Fixtures of the finetune tests: small example sets (synthetic and real crc-py reviews) and one
trained version shared by the tests of a module (training is the slow part)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from bot.examples import Example, write_examples
from tests.finetune.helpers import synthetic_examples


@pytest.fixture
def examples() -> list[Example]:
    return synthetic_examples()


@pytest.fixture(scope="module")
def examples_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "examples.jsonl"
    write_examples(path, synthetic_examples())
    return path


@pytest.fixture(scope="session")
def crc_path(shared_dir) -> Path:
    path = shared_dir / "data" / "crc-py" / "reviews.jsonl"
    if not path.is_file():
        pytest.skip(f"{path} is missing")
    return path


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    """Run `revbot ARGS` in this process through the real entry point; (exit code, stdout, stderr)."""
    from revbot.cli import main

    code = 0
    try:
        main(args)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="session")
def trained(tmp_path_factory, tiny_llama):
    """One version trained by `revbot train` (4-bit QLoRA, a few steps) on the synthetic examples, for
    the tests that inspect, evaluate, list, promote and export it. Returns (models_dir, stdout)."""
    from revbot.cli import main

    root = tmp_path_factory.mktemp("trained")
    data = root / "examples.jsonl"
    write_examples(data, synthetic_examples())
    models = root / "models"
    args = ["train", "--data", str(data), "--base-model", str(tiny_llama), "--models-dir", str(models),
            "--max-steps", "4", "--batch-size", "2", "--max-length", "512", "--eval-every", "2", "--quiet"]
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            main(args)
        except SystemExit as exc:
            assert not exc.code, f"revbot train failed with exit code {exc.code}"
    return models, out.getvalue()
