"""One BackendOptions value travels from the command line to load_backend: what `revbot review`
resolves from its options, its settings and the registry."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

import adapters.model as model_module
from adapters.embedded import DEFAULT_BASE_MODEL
from adapters.model import BackendOptions
from revbot.review_cli import _load_backend


@pytest.fixture
def loaded(monkeypatch):
    seen: list[BackendOptions] = []
    monkeypatch.setattr(model_module, "load_backend", lambda options: seen.append(options) or "backend")
    return seen


def _settings(tmp_path, **values):
    base = dict(openai_base_url=None, openai_model=None, models_dir=tmp_path / "models", model=None, adapter=None)
    return SimpleNamespace(**{**base, **values})


NO_CONFIG = SimpleNamespace(model_version=None)


def test_openai_takes_the_url_and_name_from_the_settings(loaded, tmp_path):
    settings = _settings(tmp_path, openai_base_url="http://127.0.0.1:9/v1", openai_model="lora-v3")
    asked = BackendOptions(kind="openai", batch_size=3, quantize="4bit")
    assert _load_backend(asked, settings, NO_CONFIG, model_version=None) == "backend"
    assert loaded == [
        BackendOptions(kind="openai", base_url="http://127.0.0.1:9/v1", api_model="lora-v3", batch_size=3)
    ]


def test_local_options_reach_the_loader_whole(loaded, tmp_path):
    asked = BackendOptions("some/model", adapter="adapters/v2", quantize="none", batch_size=2)
    _load_backend(asked, _settings(tmp_path), NO_CONFIG, model_version=None)
    _load_backend(
        BackendOptions(quantize="none", batch_size=2), _settings(tmp_path, model="m"), NO_CONFIG, model_version=None
    )
    _load_backend(BackendOptions(quantize="none", batch_size=2), _settings(tmp_path), NO_CONFIG, model_version=None)
    assert loaded == [
        asked,
        BackendOptions("m", quantize="none", batch_size=2),
        BackendOptions(DEFAULT_BASE_MODEL, quantize="none", batch_size=2),
    ]


def test_replace_changes_only_what_it_names():
    options = BackendOptions("m", quantize="4bit", batch_size=4)
    assert options.replace(adapter="a") == BackendOptions("m", adapter="a", quantize="4bit", batch_size=4)
    assert options.adapter is None
