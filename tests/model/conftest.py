"""Fixtures for the model tests: backends over the session's tiny models, and prompts of varied length."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.diff import parse_hunk
from bot.prompt import PromptInput, render_input

HUNKS = [
    ("setup.py", "@@ -1,2 +1,3 @@\n import os\n+import re\n import sys\n"),
    (
        "src/app.py",
        "@@ -10,7 +10,8 @@ def load_config(path):\n     with open(path) as handle:\n-        return json.load(handle)\n"
        "+        data = json.load(handle)\n+        return validate(data)\n \n \n def main(argv=None):\n",
    ),
    (
        "web/user.js",
        "@@ -3,3 +3,2 @@ function fetchUser(id) {\n-  var res = fetch('/api/users/' + id);\n-  return res.json();\n"
        "+  return fetch(`/api/users/${id}`).then((res) => res.json());\n",
    ),
    (
        "pkg/cache.py",
        "@@ -40,9 +40,12 @@ class Cache:\n     def get(self, key, default=None):\n-        return self.items[key]\n"
        "+        if key not in self.items:\n+            return default\n+        return self.items[key]\n \n"
        "     def put(self, key, value):\n-        self.items[key] = value\n+        if len(self.items) >= self.size:\n"
        "+            self.items.pop(next(iter(self.items)))\n+        self.items[key] = value\n",
    ),
    ("README.md", "@@ -1 +1 @@\n-# Old\n+# New\n"),
]


@pytest.fixture(scope="session")
def prompts() -> list[PromptInput]:
    """Five prompts of clearly different lengths, in no particular length order."""
    return [render_input(path, parse_hunk(text)) for path, text in HUNKS]


# tiny_llama and tiny_qwen (built once per session) come from tests/conftest.py.
@pytest.fixture(scope="session")
def tiny_qwen2(tiny_qwen) -> Path:
    return tiny_qwen


@pytest.fixture(scope="session")
def llama_backend(tiny_llama):
    from adapters.model import BackendOptions, LocalBackend

    # few_shot off: these tests are about generation mechanics on bare prompts (tests/model/test_embedded.py
    # covers the worked examples an untuned model gets by default)
    return LocalBackend.load(
        BackendOptions(str(tiny_llama), quantize="none", device="cpu", batch_size=2, few_shot=False)
    )


@pytest.fixture(scope="session")
def qwen2_backend(tiny_qwen2):
    from adapters.model import BackendOptions, LocalBackend

    return LocalBackend.load(
        BackendOptions(str(tiny_qwen2), quantize="none", device="cpu", batch_size=2, few_shot=False)
    )
