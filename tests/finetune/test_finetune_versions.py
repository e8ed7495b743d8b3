"""The model registry: atomic publication of versions, the current pointer, rollback, decisions."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from adapters.versions import DECISIONS_FILE, POINTER_FILE, ModelRegistry, default_models_dir
from bot.errors import ModelError
from bot.prompt import PROMPT_FORMAT_VERSION


def publish(registry: ModelRegistry, **meta) -> str:
    with registry.new_version() as pending:
        body = {"base_model": "/models/base", "prompt_format_version": PROMPT_FORMAT_VERSION, **meta}
        (pending.path / "revbot.json").write_text(json.dumps(body))
        (pending.path / "adapter_model.safetensors").write_bytes(b"weights")
    return pending.version.name


def test_versions_are_numbered_and_listed_in_order(tmp_path):
    registry = ModelRegistry(tmp_path / "models")
    assert registry.list() == []
    names = [publish(registry, created_at=f"2025-01-0{i}T00:00:00Z") for i in range(1, 4)]
    assert names == ["v1", "v2", "v3"]
    assert [v.name for v in registry.list()] == names
    assert registry.get("v2").meta["created_at"] == "2025-01-02T00:00:00Z"
    assert registry.latest().name == "v3"
    # v10 sorts after v9, numerically
    for _ in range(7):
        publish(registry)
    assert registry.names()[-2:] == ["v9", "v10"]


def test_failed_version_is_removed_and_never_listed(tmp_path):
    registry = ModelRegistry(tmp_path)
    with pytest.raises(RuntimeError):
        with registry.new_version() as pending:
            (pending.path / "revbot.json").write_text("{}")
            assert pending.path.name.startswith(".incoming-")
            raise RuntimeError("crash while writing")
    assert registry.list() == [] and registry.incoming() == []
    assert not any(p.name.startswith("v") for p in tmp_path.iterdir())


def test_version_without_metadata_is_not_published(tmp_path):
    registry = ModelRegistry(tmp_path)
    with pytest.raises(ModelError, match="revbot.json"):
        with registry.new_version() as pending:
            (pending.path / "adapter_model.safetensors").write_bytes(b"x")
    assert registry.list() == [] and registry.incoming() == []


def test_half_written_directory_of_a_killed_run_is_ignored(tmp_path):
    registry = ModelRegistry(tmp_path)
    (tmp_path / ".incoming-abc").mkdir()
    (tmp_path / ".incoming-abc" / "revbot.json").write_text("{}")
    (tmp_path / "v7").mkdir()  # a vN without revbot.json is not a version either
    publish(registry)
    assert registry.names() == ["v8"]
    assert [p.name for p in registry.incoming()] == [".incoming-abc"]


def test_promote_rollback_and_history(tmp_path):
    registry = ModelRegistry(tmp_path)
    for _ in range(3):
        publish(registry)
    assert registry.current() is None
    with pytest.raises(ModelError, match="no model version is current"):
        registry.resolve("current")
    with pytest.raises(ModelError, match="nothing to roll back"):
        registry.rollback()
    registry.promote("v1")
    registry.promote("v3")
    registry.promote("v3")  # promoting the current version again changes nothing
    assert registry.current().name == "v3"
    assert registry.history() == ["v1", "v3"]
    assert registry.rollback().name == "v1"
    assert registry.current_name() == "v1"
    with pytest.raises(ModelError, match="only v1 was ever promoted"):
        registry.rollback()
    pointer = json.loads((tmp_path / POINTER_FILE).read_text())
    assert pointer["current"] == "v1"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # no temp file left behind


def test_rollback_skips_deleted_versions(tmp_path):
    import shutil

    registry = ModelRegistry(tmp_path)
    for _ in range(3):
        publish(registry)
    for name in ("v1", "v2", "v3"):
        registry.promote(name)
    shutil.rmtree(tmp_path / "v2")
    assert registry.rollback().name == "v1"


def test_promote_refuses_unknown_and_incompatible_versions(tmp_path):
    registry = ModelRegistry(tmp_path)
    publish(registry)
    publish(registry, prompt_format_version=PROMPT_FORMAT_VERSION + 1)
    with pytest.raises(ModelError, match=r"no model version 'v9'.*available: v1, v2"):
        registry.promote("v9")
    with pytest.raises(ModelError, match="prompt format version"):
        registry.promote("v2")
    assert registry.current_name() is None


def test_resolve_accepts_names_paths_and_aliases(tmp_path):
    registry = ModelRegistry(tmp_path / "m")
    publish(registry)
    publish(registry)
    registry.promote("v1")
    assert registry.resolve(None).name == "v1"
    assert registry.resolve("current").name == "v1"
    assert registry.resolve("latest").name == "v2"
    assert registry.resolve("v2").path == tmp_path / "m" / "v2"
    by_path = registry.resolve(str(tmp_path / "m" / "v2"))
    assert by_path.name == "v2" and by_path.meta["base_model"] == "/models/base"
    with pytest.raises(ModelError, match="neither"):
        registry.resolve("nonsense")


def test_corrupt_pointer_is_a_clear_error(tmp_path):
    registry = ModelRegistry(tmp_path)
    publish(registry)
    (tmp_path / POINTER_FILE).write_text("{not json")
    with pytest.raises(ModelError, match="promote a version again"):
        registry.current()
    registry.promote("v1")  # ...and promoting rewrites it
    assert registry.current_name() == "v1"


def test_decisions_are_appended_and_read_back(tmp_path):
    registry = ModelRegistry(tmp_path)
    registry.record_decision("v2", "v1", "bleu4_no_stop", {"v2": 7.5, "v1": 6.0}, True, "better by 1.5")
    registry.record_decision("v3", "v2", "bleu4_no_stop", {"v3": 7.0, "v2": 7.5}, False, "worse")
    with open(tmp_path / DECISIONS_FILE, "a") as fh:
        fh.write("garbage\n")
    got = registry.decisions()
    assert [(d["candidate"], d["promoted"]) for d in got] == [("v2", True), ("v3", False)]
    assert got[0]["values"] == {"v2": 7.5, "v1": 6.0} and got[1]["reason"] == "worse"


def test_models_dir_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("REVBOT_MODELS_DIR", str(tmp_path / "elsewhere"))
    assert default_models_dir() == tmp_path / "elsewhere"
    assert ModelRegistry().root == tmp_path / "elsewhere"
    monkeypatch.setenv("REVBOT_MODELS_DIR", "rel")
    monkeypatch.setenv("REVBOT_HOME", str(tmp_path))
    assert default_models_dir() == tmp_path / "rel"
    monkeypatch.delenv("REVBOT_MODELS_DIR")
    monkeypatch.delenv("REVBOT_HOME")
    assert default_models_dir() == Path("models")


def test_registry_does_not_import_torch():
    code = "import sys, adapters.versions as v; v.ModelRegistry('x').list(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
