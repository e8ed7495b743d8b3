"""Examples -> a LoRA/QLoRA adapter (train.py, with its knobs in config.py and their command-line
options in options.py); evaluation against baselines (evaluate.py, metrics.py, report.py); the
promotion gate (gate.py); export (export.py); the commands (cli.py). Import the module you need, e.g.
``from finetune.train import train``: heavy libraries (torch, transformers, peft) load inside the
functions, so importing a module is cheap."""
