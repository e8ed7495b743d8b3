"""Fixtures of the finetune tests: the real crc-py reviews, and one version trained by `revbot train`
that the tests inspecting, evaluating, listing and exporting a version share (training is the slow
part). Torch runs on one thread here: see helpers.one_torch_thread."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest

from adapters.files import write_examples
from tests.finetune.helpers import one_torch_thread, synthetic_examples
from tests.needs import lacking


@pytest.fixture(autouse=True)
def _one_torch_thread():
    with one_torch_thread():
        yield


@pytest.fixture(scope="session")
def crc_path(shared_dir) -> Path:
    path = shared_dir / "data" / "crc-py" / "reviews.jsonl"
    if not path.is_file():
        lacking("shared", f"{path} is missing")
    return path


@pytest.fixture(scope="session")
def codereviewer_bleu(shared_dir):
    """The CodeReviewer evaluator's own module (``bleu_fromstr``), imported by path from ../shared: the
    oracle revbot's BLEU is tested against. The product never imports it."""
    import importlib.util

    if importlib.util.find_spec("nltk") is None:
        lacking("nltk", "nltk is not installed (the CodeReviewer evaluator imports it)")
    path = shared_dir / "reference" / "codereviewer-bleu" / "smooth_bleu.py"
    if not path.is_file():
        lacking("shared", f"{path} is missing")
    spec = importlib.util.spec_from_file_location("codereviewer_smooth_bleu", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def trained(tmp_path_factory, tiny_llama):
    """One version trained by `revbot train` (4-bit QLoRA, a few steps) on the synthetic examples, for
    the tests that inspect, evaluate, list, promote and export it. Returns (models_dir, stdout)."""
    from revbot.cli import main

    root = tmp_path_factory.mktemp("trained")
    data = root / "examples.jsonl"
    write_examples(data, synthetic_examples())
    models = root / "models"
    args = [
        "train",
        "--data",
        str(data),
        "--model",
        str(tiny_llama),
        "--models-dir",
        str(models),
        "--max-steps",
        "4",
        "--batch-size",
        "2",
        "--max-length",
        "512",
        "--eval-every",
        "2",
        "--quiet",
    ]
    out = io.StringIO()
    with contextlib.redirect_stdout(out), one_torch_thread():
        try:
            main(args)
        except SystemExit as exc:
            assert not exc.code, f"revbot train failed with exit code {exc.code}"
    return models, out.getvalue()
