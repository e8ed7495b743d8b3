"""`revbot eval --data OTHER` keeps a version's own numbers its own (issue 20): the evaluation on other
data goes beside them, named by the dataset and its hash, and `revbot models list` is unchanged."""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import replace

from adapters.files import write_examples
from adapters.versions import ModelRegistry, other_evaluations
from tests.finetune.helpers import run_cli, synthetic_examples


def test_an_evaluation_on_other_data_is_kept_beside_the_versions_own(trained, capsys, tmp_path):
    models = tmp_path / "models"
    shutil.copytree(trained[0], models)
    args = ["--models-dir", str(models), "--max-new-tokens", "4", "--no-base", "--limit", "3", "--quiet"]
    assert run_cli(["eval", *args], capsys)[0] == 0  # v1's own evaluation (its saved test split)
    v1 = ModelRegistry(models).get("v1")
    own_meta = json.loads((v1.path / "revbot.json").read_text())
    own_report = (v1.path / "eval" / "report.md").read_text()
    listed = run_cli(["models", "list", "--models-dir", str(models)], capsys)[1]

    other = tmp_path / "other data.jsonl"
    write_examples(other, [replace(e, id=f"other-{e.id}") for e in synthetic_examples(n_prs=6, start_year=2030)])
    code, out, err = run_cli(["eval", *args, "--data", str(other)], capsys)
    assert code == 0, err
    digest = hashlib.sha256(other.read_bytes()).hexdigest()
    folder = v1.path / "evals" / f"other_data.jsonl-{digest[:12]}"
    assert f"report: {folder / 'report.md'}" in out.splitlines()
    assert json.loads((v1.path / "revbot.json").read_text()) == own_meta  # v1's own numbers untouched
    assert (v1.path / "eval" / "report.md").read_text() == own_report
    assert run_cli(["models", "list", "--models-dir", str(models)], capsys)[1] == listed
    [entry] = other_evaluations(ModelRegistry(models).get("v1"))
    assert entry["name"] == "other data.jsonl" and entry["sha256"] == digest and entry["key"] == folder.name
    assert set(entry["systems"]) >= {"tuned", "retrieval"} and "review_f1" in entry["systems"]["tuned"]
