"""Application shell: assembles the `revbot` command from the four packages, and runs the demo.

bot/ is the core; harvest/, finetune/ and webhooks/ build on it and never import each other.
Work that spans them (the command line, retraining, the demo) lives here.
"""

__version__ = "0.1.0"
