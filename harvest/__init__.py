"""Harvest: GitHub review comments and imported datasets -> the store (adapters.store) -> training
examples (bot.examples). Imports ``bot`` and ``adapters``, never finetune or webhooks.

  filters.py   which comments become training targets, and why the others do not
  build.py     stored comments + PR patches -> positive and negative examples (pure)
  mine.py      `revbot harvest github`: the request-frugal, resumable harvest
  datasets.py  `revbot dataset import/export`: crc, codereviewer, alpaca, sharegpt, openai, jsonl
  feedback.py  the team's verdicts on the bot's own comments applied to the examples (retrain)
  cli.py       the click commands
"""
