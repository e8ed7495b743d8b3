"""Training options come from TrainConfig's fields: one name, type, default and help per knob, shared by
`revbot train` and `revbot retrain`, and a TrainConfig made from them in one place."""

from __future__ import annotations

from dataclasses import fields

import click
import pytest

from finetune.cli import train
from finetune.config import TrainConfig
from finetune.options import pop_train_config
from revbot.retrain import retrain_cmd


def _options(command: click.Command) -> dict[str, click.Option]:
    return {opt: p for p in command.params if isinstance(p, click.Option) and not p.hidden for opt in p.opts}


def _parse(command: click.Command, *args: str) -> dict:
    # make_context applies the command's context settings: a bare click.Context would make the command
    # cache a help option without ``-h`` for every later caller (the generated docs then differ)
    with command.make_context(command.name, list(args)) as ctx:
        return dict(ctx.params)


OPTION_FIELDS = [f for f in fields(TrainConfig) if "help" in f.metadata]


@pytest.mark.parametrize("command", [train, retrain_cmd], ids=["train", "retrain"])
def test_every_option_field_is_an_option_with_the_fields_default_and_help(command):
    options = _options(command)
    assert len(OPTION_FIELDS) >= 20
    for f in OPTION_FIELDS:
        name = f.metadata["flag"] or "--" + f.name.replace("_", "-")
        option = options[name]
        assert f.metadata["help"] in option.help, name
        if not option.is_flag and f.metadata["kind"] is None:
            assert option.default == f.default, name
    assert isinstance(options["--lora-alpha"].type, click.IntRange)  # one type: TrainConfig's int
    assert list(options["--precision"].type.choices) == ["auto", "bf16", "fp32"]
    # library-only knobs stay off the command line
    assert "--warmup-ratio" not in options and "--save-every" not in options


@pytest.mark.parametrize("command", [train, retrain_cmd], ids=["train", "retrain"])
def test_no_training_option_given_is_the_default_config(command):
    params = _parse(command)
    assert pop_train_config(params) == TrainConfig()
    assert not any(f.name in params for f in OPTION_FIELDS) and "no_packing" not in params


def test_given_options_become_the_config_and_leave_the_commands_own_arguments():
    params = _parse(
        retrain_cmd,
        "--no-harvest",
        "--epochs",
        "1.5",
        "--lora-alpha",
        "8",
        "--target-modules",
        "q_proj, v_proj",
        "--quantize",
        "none",
        "--no-packing",
        "--resume",
        "--lora-layers",
        "0",
    )
    config = pop_train_config(params)
    assert config == TrainConfig(
        epochs=1.5,
        lora_alpha=8,
        target_modules=["q_proj", "v_proj"],
        quantize="none",
        packing=False,
        resume=True,
        lora_layers=0,
    )
    assert params["no_harvest"] is True and "epochs" not in params
    with pytest.raises(click.BadParameter):
        _parse(train, "--lora-alpha", "0")
