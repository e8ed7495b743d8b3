"""The shell on top: the `revbot` command (cli.py: a lazy table of the commands of harvest, finetune
and webhooks, and review_cli.py), retrain orchestration (retrain.py), and dev/ (the GitHub simulator,
tiny models, the offline demo). The floor above harvest, finetune and webhooks, which never import
each other."""

__version__ = "0.1.0"
