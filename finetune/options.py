"""The command-line options `revbot train`, `revbot eval` and `revbot retrain` share, built from the
dataclass fields that hold their defaults (``finetune.config``), and the one place a ``TrainConfig``
is made from them. Commands of any floor above finetune import them from here, never from another
command's module."""

from __future__ import annotations

import types
import typing
from collections.abc import Callable, MutableMapping
from dataclasses import MISSING, Field, fields
from typing import Any, TypeVar

import click

from adapters.cli_options import quantize_option
from bot.config import DEFAULT_BATCH_SIZE, DEFAULT_MAX_NEW_TOKENS
from finetune.config import TrainConfig

F = TypeVar("F", bound=Callable[..., Any])


def _option_fields() -> list[Field[Any]]:
    return [f for f in fields(TrainConfig) if "help" in f.metadata]


def _param_name(f: Field[Any]) -> str:
    """The command's parameter for a field: the field's name, or the off-switch's (``no_packing``)."""
    flag = f.metadata["flag"]
    return flag.lstrip("-").replace("-", "_") if flag else f.name


def _base_type(annotation: Any) -> Any:
    """``int | None`` -> int; ``list[str]`` -> list."""
    if isinstance(annotation, types.UnionType):
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    return typing.get_origin(annotation) or annotation


def _click_option(f: Field[Any], annotation: Any) -> Callable[[F], F]:
    meta, default = f.metadata, f.default if f.default is not MISSING else None
    if meta["kind"] == "quantize":
        return quantize_option(meta["help"])
    name = "--" + f.name.replace("_", "-")
    kind = _base_type(annotation)
    if meta["flag"]:
        return click.option(meta["flag"], is_flag=True, help=meta["help"])
    if kind is bool:
        return click.option(name, is_flag=True, help=meta["help"])
    settings: dict[str, Any] = {"default": default, "show_default": default is not None, "help": meta["help"]}
    if meta["choices"]:
        settings["type"] = click.Choice(meta["choices"])
    elif kind is int:
        settings["type"] = click.IntRange(min=meta["min"]) if meta["min"] is not None else int
    elif kind is float:
        settings["type"] = float
    elif kind is list:
        settings["metavar"] = meta["metavar"]
    else:
        raise TypeError(f"TrainConfig.{f.name}: no command-line option for a {annotation!r}")
    return click.option(name, **settings)


def training_options(f: F) -> F:
    """Every TrainConfig field that has ``metadata=option(...)`` as an option of the command, with the
    field's default and help; the command hands them to ``pop_train_config``."""
    hints = typing.get_type_hints(TrainConfig)
    for fld in reversed(_option_fields()):
        f = _click_option(fld, hints[fld.name])(f)
    return f


def pop_train_config(params: MutableMapping[str, Any]) -> TrainConfig:
    """The TrainConfig the training options in ``params`` (a command's keyword arguments) describe;
    they are taken out of ``params``, the command's other arguments are left in."""
    hints = typing.get_type_hints(TrainConfig)
    values: dict[str, Any] = {}
    for fld in _option_fields():
        value = params.pop(_param_name(fld))
        if fld.metadata["flag"]:
            value = False if value else fld.default
        elif _base_type(hints[fld.name]) is list and value is not None:  # A,B,... -> [A, B, ...]
            value = [name.strip() for name in value.split(",") if name.strip()]
        values[fld.name] = value
    return TrainConfig(**values)


def generation_options(dest: str) -> Callable[[F], F]:
    """How an evaluation generates (`revbot eval`, `revbot retrain`'s gate): one spelling, help and
    default for both. ``dest``: the command's parameter for --gen-batch-size."""

    def decorate(f: F) -> F:
        f = click.option(
            "--gen-batch-size",
            dest,
            type=click.IntRange(min=1),
            default=DEFAULT_BATCH_SIZE,
            show_default=True,
            help="Prompts generated together during the evaluation.",
        )(f)
        return click.option(
            "--max-new-tokens",
            type=click.IntRange(min=1),
            default=DEFAULT_MAX_NEW_TOKENS,
            show_default=True,
            help="Longest answer per hunk during the evaluation, in tokens.",
        )(f)

    return decorate
