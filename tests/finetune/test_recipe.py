"""The recipe bench_quality validates is the one `revbot train` ships: one set of defaults."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from finetune.train import TrainConfig

ROOT = Path(__file__).resolve().parents[2]


def bench_defaults() -> dict[str, object]:
    spec = importlib.util.spec_from_file_location("bench_quality", ROOT / "tests" / "bench" / "bench_quality.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    argv, sys.argv = sys.argv, ["bench_quality.py"]
    try:
        return vars(module.parse_args())
    finally:
        sys.argv = argv


def cli_defaults() -> dict[str, object]:
    from finetune.cli import train

    return {p.name: p.default for p in train.params}


def test_the_benchmark_runs_revbot_trains_defaults_and_the_cli_shows_them():
    config, bench, cli = TrainConfig(), bench_defaults(), cli_defaults()
    for name in ("epochs", "lr", "decision_weight", "exemplars", "max_length", "batch_size", "patience"):
        assert bench[name] == getattr(config, name), name
    for name in (
        "epochs",
        "lr",
        "decision_weight",
        "exemplars",
        "max_length",
        "batch_size",
        "patience",
        "min_precision",
    ):
        assert cli[name] == getattr(config, name), name
    assert bench["steps"] == 0 and bench["eval_every"] == 0  # no overrides unless told
