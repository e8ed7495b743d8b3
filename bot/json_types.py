"""The JSON value types the domain reads and writes, in a module of their own so that every module
of ``bot/`` can name them without importing another's (``bot.ports`` imports the records and the
prompt types; they import only this)."""

from __future__ import annotations

from typing import Any, TypeAlias

JSON: TypeAlias = Any
"""An arbitrary JSON value, what ``json.loads`` returns (a dict, list, str, int, float, bool or None):
code that reads one checks what it got, as the data comes from files and servers."""

JSONObject: TypeAlias = dict[str, JSON]
"""A JSON object: what ``to_dict`` methods return and ``from_dict`` methods read."""
