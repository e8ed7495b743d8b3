"""Examples -> QLoRA adapter; evaluation against baselines; model versions; export.

Library API (the CLI in finetune/cli.py and `revbot retrain` call these):
    split_examples(examples, seed, ...) -> Splits
    train(examples, base_model, models_dir, config) -> ModelVersion   (publishes vN, never promotes)
    evaluate(version_or_backend, test_examples, train_examples, ...) -> EvalReport
    export_merged(version, out_dir) -> Path
Heavy imports (torch, transformers, peft) happen inside the functions, so importing this package is cheap.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "Splits",
    "TrainConfig",
    "EvalReport",
    "split_examples",
    "load_examples",
    "train",
    "evaluate",
    "export_merged",
]

_LAZY = {
    "Splits": "finetune.data",
    "split_examples": "finetune.data",
    "load_examples": "finetune.data",
    "TrainConfig": "finetune.train",
    "train": "finetune.train",
    "EvalReport": "finetune.evaluate",
    "evaluate": "finetune.evaluate",
    "export_merged": "finetune.export",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'finetune' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
