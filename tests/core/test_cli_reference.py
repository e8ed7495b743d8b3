"""README.md's CLI reference is what the commands' `--help` says today (scripts/cli_reference.py
writes it); regenerate it with `python scripts/cli_reference.py` after changing an option."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _script():
    spec = importlib.util.spec_from_file_location("cli_reference", ROOT / "scripts" / "cli_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_cli_reference_is_generated_from_help_and_fresh():
    script = _script()
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert script.update(readme) == readme, "README.md's CLI reference is stale: run python scripts/cli_reference.py"
    generated = readme[readme.index(script.START) : readme.index(script.END)]
    for heading in ("### `revbot review`", "### `revbot harvest github`", "### `revbot models promote`"):
        assert heading in generated
    assert "--fail-on" in generated and "--input-format" in generated
    for old in ("--base-model", "--model-version", "--no-progress", "--store"):
        assert old not in generated.split("still work", 1)[1]  # only the note naming the old spellings has them


def test_readme_still_opens_with_the_two_commands():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    block = lines[lines.index("```") + 1 : lines.index("```") + 3]
    assert block[0].startswith("make demo ") and block[1].startswith("make test ")
