"""The domain (bot/) depends on ports, never on adapters; the adapters offer what the ports ask."""

from __future__ import annotations

import ast
from pathlib import Path

import bot
from adapters.model import OpenAIBackend
from adapters.store import Evidence, Feedback, Store
from bot.ports import Backend, FeedbackStore

OUTER_PACKAGES = ("revbot", "webhooks", "harvest", "finetune")


def _imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def test_domain_imports_no_outer_package():
    offenders = {
        f"{path.name}: {module}"
        for path in Path(bot.__file__).parent.glob("*.py")
        for module in _imported_modules(path)
        if module.split(".")[0] in OUTER_PACKAGES
    }
    assert offenders == set()


def test_store_is_a_feedback_store(tmp_path):
    store = Store(tmp_path / "revbot.db")
    try:
        assert isinstance(store, FeedbackStore)
    finally:
        store.close()


def test_records_keep_their_old_import_path():
    from bot import records

    assert Evidence is records.Evidence and Feedback is records.Feedback


def test_openai_backend_is_a_backend():
    backend = OpenAIBackend("http://127.0.0.1:9/v1", "served-model")
    assert isinstance(backend, Backend)


def test_a_double_without_describe_is_not_a_backend():
    class Half:
        max_context = 512

        def generate(self, inputs, *, max_new_tokens=256):
            return []

        def count_tokens(self, text):
            return len(text)

    assert not isinstance(Half(), Backend)
