"""Harvest: GitHub review comments and imported datasets -> the store (adapters.store) -> training
examples (bot.examples). Imports only ``bot``.

  filters.py  which comments become training targets, and why the others do not
  build.py    stored comments + PR patches -> positive and negative examples (pure)
  mine.py     `revbot harvest github`: the request-frugal, resumable harvest
  formats.py  `revbot dataset import/export`: crc, codereviewer, alpaca, sharegpt, openai, jsonl
  cli.py      the click commands
"""
