"""One CLI vocabulary: the same option names in every command, one spelling each (the old spellings
of 0.1.0's development are gone), -v/-q before or after the command, one error prefix, `review --fail-on`
exit codes, the demo's Ctrl-C, and `retrain` harvesting each repository from the API root its
harvest used. Everything runs in process through the real entry point (revbot.cli.main)."""

from __future__ import annotations

import importlib
import io
import json
import logging
import re
import sys
from pathlib import Path

import click
import pytest

from bot.errors import RevbotError
from tests.core.conftest import prompt_anchors, prompt_path

OLD_SPELLINGS = (
    "--base-model",
    "--model-version",
    "--store",
    "--no-progress",
    "--json",
    "--eval-batch-size",
    "--no-quantize",
)
# (command, an old spelling it took during 0.1.0's development): now a usage error like any unknown option
GONE = [
    (["review", "-"], "--model-version"),
    (["review", "-"], "--repo"),
    (["review", "-"], "--batch-size"),
    (["train"], "--base-model"),
    (["train"], "--no-quantize"),
    (["eval"], "--model"),
    (["eval"], "--store"),
    (["eval"], "--batch-size"),
    (["export", "v1", "--merged", "out"], "--base-model"),
    (["retrain", "--no-harvest"], "--base-model"),
    (["retrain", "--no-harvest"], "--eval-batch-size"),
    (["harvest", "github", "acme/widgets"], "--no-progress"),
    (["dataset", "stats"], "--json"),
]


class Stop(RevbotError):
    """Raised by the fakes below once they have seen what the command handed them."""


def all_commands() -> list[list[str]]:
    from revbot.cli import cli

    paths: list[list[str]] = []

    def walk(group: click.Group, path: list[str], ctx: click.Context) -> None:
        for name in group.list_commands(ctx):
            command = group.get_command(ctx, name)
            paths.append([*path, name])
            if isinstance(command, click.Group):
                walk(command, [*path, name], click.Context(command, info_name=name, parent=ctx))

    walk(cli, [], click.Context(cli, info_name="revbot"))
    return paths


# --------------------------------------------------------------------------- one vocabulary


def test_every_command_takes_the_global_flags_and_no_help_shows_an_old_spelling(revbot):
    paths = all_commands()
    assert ["harvest", "github"] in paths and ["models", "promote"] in paths and ["dev", "init-model"] in paths
    for path in [[], *paths]:
        code, out, _ = revbot(*path, "--help")
        assert code == 0, path
        assert "-v, --verbose" in out and "-q, --quiet" in out, path
        for old in OLD_SPELLINGS:
            assert old not in out, (path, old)
    for path in (["eval"], ["dataset", "import"]):  # input formats are --input-format, --format is the output
        out = revbot(*path, "--help")[1]
        assert "--input-format" in out and "--format [text|json]" in out
    assert "--version" in revbot("review", "--help")[1] and "--version" in revbot("eval", "--help")[1]
    for path in (["train"], ["retrain"], ["export"], ["review"], ["serve"], ["worker"]):
        assert "--model " in revbot(*path, "--help")[1], path


def test_the_root_version_flag_still_prints_the_program_version(revbot):
    code, out, _ = revbot("--version")
    assert code == 0 and out.startswith("revbot ")


def _capture(monkeypatch, target: str, seen: dict):
    """Replace the function ``module.name`` by one that records its arguments in ``seen`` and stops."""

    def fake(*args, **kwargs):
        seen.update(kwargs, args=args)
        raise Stop("stopped by the test")

    module, name = target.rsplit(".", 1)
    # by module object: a package may export a function under a submodule's name (finetune.train)
    monkeypatch.setattr(importlib.import_module(module), name, fake)


class FakeRegistry:
    root = Path("models")

    def resolve(self, spec):
        return f"version<{spec}>"

    def current(self):
        return "version<current>"

    latest = current


@pytest.mark.parametrize("command, old", GONE, ids=[f"{' '.join(c[:2])} {o}" for c, o in GONE])
def test_an_old_spelling_is_an_unknown_option(revbot, command, old):
    value = [] if old in ("--no-progress", "--json", "--no-quantize") else ["x"]
    code, out, err = revbot(*command, old, *value)
    assert (code, out) == (2, "") and re.search(rf"revbot: error: No such option:? '?{old}\b", err), err


def test_train_model_reaches_the_trainer_and_db_and_data_exclude_each_other(revbot, monkeypatch, tmp_path):
    seen: dict = {}
    monkeypatch.setattr("finetune.data.load_examples", lambda path: ["an example"])
    _capture(monkeypatch, "finetune.train.train", seen)
    code, _, err = revbot(
        "train", "--data", str(tmp_path / "x.jsonl"), "--models-dir", str(tmp_path / "m"), "--model", "some/base"
    )
    assert code == 1 and "stopped by the test" in err and seen["args"][1] == "some/base"
    code, _, err = revbot("train", "--db", "a.db", "--data", "b.jsonl")
    assert code == 2 and "not both" in err


def test_retrain_model_reaches_the_retrain(revbot, monkeypatch, tmp_path):
    seen: dict = {}
    _capture(monkeypatch, "revbot.retrain.retrain", seen)
    code, _, err = revbot("retrain", "--no-harvest", "--db", str(tmp_path / "r.db"), "--model", "some/base")
    assert code == 1 and seen["base_model"] == "some/base", err


def test_dataset_import_needs_its_input_format(revbot, tmp_path):
    data = tmp_path / "in.jsonl"
    data.write_text("{}\n")
    code, _, err = revbot("dataset", "import", str(data), "--db", str(tmp_path / "d.db"))
    assert code == 2 and "revbot: error: Missing option '--input-format'" in err


# --------------------------------------------------------------------------- global flags, errors


def test_quiet_and_verbose_work_before_and_after_the_command(revbot, tmp_path):
    out_file = str(tmp_path / "review.txt")
    code, _, err = revbot("review", "-", "-o", out_file)
    assert code == 0 and "Wrote text to" in err
    for args in (("-q", "review", "-", "-o", out_file), ("review", "-", "-o", out_file, "--quiet")):
        code, _, err = revbot(*args)
        assert (code, err) == (0, ""), args
    root = logging.getLogger()
    for args, level in (
        (("review", "-"), logging.WARNING),
        (("review", "-", "-v"), logging.INFO),
        (("-v", "review", "-"), logging.INFO),
        (("-v", "review", "-", "-v"), logging.DEBUG),
        (("review", "-vv", "-"), logging.DEBUG),
    ):
        assert revbot(*args)[0] == 0
        assert root.level == level, args


def test_every_error_has_the_one_prefix_and_usage_errors_exit_2(revbot, tmp_path):
    code, out, err = revbot("review", "--no-such-option")
    assert code == 2 and out == ""
    assert "Usage: revbot review" in err and "revbot: error: No such option" in err and "--no-such-option" in err
    assert not any(line.startswith("Error:") for line in err.splitlines())
    code, _, err = revbot("no-such-command")
    assert code == 2 and "revbot: error: No such command 'no-such-command'" in err
    code, _, err = revbot("review", "-", "--fail-on", "sometimes")
    assert code == 2 and "revbot: error: Invalid value for '--fail-on'" in err
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    code, _, err = revbot("dev", "init-model", str(tmp_path / "full"))  # a click.UsageError raised by a command
    assert code == 2 and "revbot: error: " in err and "is not empty" in err
    code, _, err = revbot("dataset", "stats", "--db", str(tmp_path / "none.db"))  # a RevbotError inside a command
    assert code == 2 and err.startswith("revbot: error: ") and "no such store" in err


# --------------------------------------------------------------------------- review --fail-on


def inline_and_far(inp):
    return f"{prompt_anchors(inp)[0]}: look at {prompt_path(inp)}\nR999: far away\n"


def far_only(inp):
    return "R999: far away\n"


def nothing(inp):
    return "NO COMMENT\n"


@pytest.mark.parametrize(
    "answer, codes",
    [
        (inline_and_far, {"none": 0, "any": 1, "inline": 1}),
        (far_only, {"none": 0, "any": 1, "inline": 0}),  # a note outside the changed lines ranks lower
        (nothing, {"none": 0, "any": 0, "inline": 0}),
    ],
)
def test_fail_on_exit_codes(revbot, shared_dir, openai_server, answer, codes):
    server = openai_server(answer)
    diff = str(shared_dir / "fixtures" / "diffs" / "git.diff")
    common = ["review", diff, "--backend", "openai", "--base-url", server.url, "--api-model", "m", "--format", "json"]
    default = revbot(*common)
    assert default[0] == 0
    for level, expected in codes.items():
        code, out, err = revbot(*common, "--fail-on", level)
        assert code == expected, (level, err)
        printed, expected_review = json.loads(out), json.loads(default[1])  # still printed, no error line
        assert printed["comments"] == expected_review["comments"] and "revbot: error" not in err


def test_fail_on_keeps_error_codes_and_is_documented(revbot, shared_dir):
    assert revbot("review", "-", "--fail-on", "any")[0] == 0  # nothing to review
    code, _, err = revbot("review", str(shared_dir / "fixtures" / "diffs" / "git.diff"), "--version", "v9")
    assert code == 1 and "revbot: error:" in err
    code, out, _ = revbot("review", "--help")
    assert "Exit codes:" in out and "--fail-on [none|any|inline]" in out


def test_fails_reads_comments_and_notes():
    from bot.review import Review, ReviewComment
    from revbot.review_cli import fails

    comment = ReviewComment("a.py", 1, "RIGHT", "x")
    assert [fails(Review(comments=[comment]), level) for level in ("none", "any", "inline")] == [False, True, True]
    assert [fails(Review(unanchored=[comment]), level) for level in ("none", "any", "inline")] == [False, True, False]
    assert not any(fails(Review(), level) for level in ("none", "any", "inline"))


# --------------------------------------------------------------------------- retrain's API root


def test_retrain_harvests_each_repository_from_the_api_root_its_harvest_used(revbot, monkeypatch, tmp_path):
    from adapters.store import Store

    db = tmp_path / "r.db"
    Store(db).set_api_url("acme/widgets", "http://ghe.example/api/v3")
    monkeypatch.setenv("GITHUB_TOKEN", "t")
    monkeypatch.delenv("REVBOT_GITHUB_TOKEN", raising=False)
    monkeypatch.delenv("REVBOT_GITHUB_API_URL", raising=False)
    monkeypatch.setenv("GITHUB_API_URL", "http://env.example/api")
    used: dict[str, str] = {}

    def fake_retrain(*, repos, client_for, **_):
        used.update({repo: client_for(repo).api_url for repo in repos})
        raise Stop("stopped by the test")

    monkeypatch.setattr("revbot.retrain.retrain", fake_retrain)
    code, _, err = revbot("retrain", "acme/widgets", "acme/never-harvested", "--db", str(db))
    assert code == 1 and "stopped by the test" in err
    assert used == {"acme/widgets": "http://ghe.example/api/v3", "acme/never-harvested": "http://env.example/api"}
    used.clear()
    code, _, err = revbot(
        "retrain", "acme/widgets", "acme/never-harvested", "--db", str(db), "--api-url", "http://x.example"
    )
    assert code == 1 and used == {"acme/widgets": "http://x.example", "acme/never-harvested": "http://x.example"}


# --------------------------------------------------------------------------- demo


@pytest.mark.parametrize(
    "interruption",
    [
        KeyboardInterrupt(),
        type("TrainingStopped", (RevbotError,), {"exit_code": 130})(
            "interrupted at step 3 of 60; checkpoint in x/checkpoint-3. Run the same command with --resume to continue"
        ),
    ],
)
def test_demo_ctrl_c_says_what_happens_and_suggests_no_resume(revbot, monkeypatch, tmp_path, interruption):
    def fake_run_demo(*args, **kwargs):
        raise interruption

    monkeypatch.setattr("revbot.dev.demo.run_demo", fake_run_demo)
    workdir = tmp_path / "demo"
    code, _, err = revbot("demo", "--workdir", str(workdir), "-q")
    assert code == 130
    assert "--resume" not in err and "resume" in err and "run `revbot demo` again" in err and str(workdir) in err


def _options(path: list[str]) -> dict[str, click.Option]:
    from revbot.cli import cli

    ctx, command = None, cli
    for name in path:
        ctx = click.Context(command, info_name=name, parent=ctx)
        command = command.get_command(ctx, name)
    return {opt: p for p in command.params if isinstance(p, click.Option) and not p.hidden for opt in p.opts}


def test_quantize_is_one_option_with_one_spelling_wherever_a_model_is_loaded_or_trained():
    for path in (["review"], ["train"], ["eval"], ["retrain"]):
        option = _options(path)["--quantize"]
        assert list(option.type.choices) == ["4bit", "none"] and not option.secondary_opts, path


def test_train_quantize_values(revbot, monkeypatch, tmp_path):
    seen: dict = {}
    monkeypatch.setattr("finetune.data.load_examples", lambda path: ["an example"])
    _capture(monkeypatch, "finetune.train.train", seen)
    common = ["train", "--data", str(tmp_path / "x.jsonl"), "--models-dir", str(tmp_path / "m")]
    for given, quantize in (
        ([], None),
        (["--quantize"], "4bit"),  # bare: 4bit
        (["--quantize", "4bit"], "4bit"),
        (["--quantize", "none"], "none"),
    ):
        seen.clear()
        code, _, err = revbot(*common, *given)
        assert code == 1 and "stopped by the test" in err, (given, err)
        assert seen["args"][3].quantize == quantize, given


def test_review_repo_dir_names_the_checkout(revbot, tmp_path):
    assert "--repo-dir" in _options(["review"]) and "--repo" not in _options(["review"])
    assert "--repo" in _options(["dataset", "export"])  # --repo is an OWNER/NAME everywhere else
    code, _, err = revbot("review", "--git", "--repo-dir", str(tmp_path / "no-such-checkout"))
    assert code == 2 and "no-such-checkout" in err, err


def test_batch_size_is_training_rows_and_gen_batch_size_is_prompts_generated_together():
    for path in (["train"], ["retrain"]):
        assert "Training rows per optimiser step" in _options(path)["--batch-size"].help, path
    for path in (["review"], ["eval"], ["retrain"]):
        assert "Prompts generated together" in _options(path)["--gen-batch-size"].help, path
    assert "--batch-size" not in _options(["review"]) and "--batch-size" not in _options(["eval"])
    # train and retrain share their training options (built from TrainConfig): the same names, helps, defaults
    train, retrain = _options(["train"]), _options(["retrain"])
    training = {name for name, option in train.items() if name not in ("--db", "--data", "--promote", "--no-promote")}
    training -= {"--model", "--models-dir", "--verbose", "-v", "--quiet", "-q", "--help", "-h"}
    assert {"--epochs", "--lora-alpha", "--no-packing", "--resume", "--quantize"} <= training
    for name in training:
        assert (train[name].help, train[name].default) == (retrain[name].help, retrain[name].default), name
    # and eval and retrain's gate generate the same way
    evaluate = _options(["eval"])
    for name in ("--max-new-tokens", "--gen-batch-size"):
        assert (evaluate[name].help, evaluate[name].default) == (retrain[name].help, retrain[name].default), name


def test_summaries_take_format_json(revbot, tmp_path):
    from adapters.store import Store

    db = str(tmp_path / "s.db")
    Store(db).close()
    code, out, err = revbot("dataset", "stats", "--db", db, "--format", "json")
    assert code == 0 and isinstance(json.loads(out), dict), err
    code, out, _ = revbot("dataset", "stats", "--db", db)
    assert code == 0 and not out.lstrip().startswith("{")
    code, _, err = revbot("dataset", "stats", "--db", db, "--format", "yaml")
    assert code == 2 and "Invalid value for '--format'" in err


def test_logging_follows_stderr_when_it_is_swapped(monkeypatch):
    """Set up while stderr was one stream, logging writes to the stream stderr is now: a command run
    in a test runner (or a daemon that swapped stderr) must not log into a closed stream."""
    from adapters.logs import configure_logging

    first, second = io.StringIO(), io.StringIO()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        monkeypatch.setattr(sys, "stderr", first)
        configure_logging(logging.WARNING)
        first.close()
        monkeypatch.setattr(sys, "stderr", second)
        logging.getLogger("revbot.test").warning("token ghp_%s seen", "a" * 36)
        assert "WARNING revbot.test: token" in second.getvalue() and "ghp_" + "a" * 36 not in second.getvalue()
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(level)
