"""The documentation: a README that fits on a few screens and opens with the two commands, generated
pages (docs/cli.md from --help, the variable table of docs/configuration.md from the settings model)
that are fresh, every page reachable, and every relative link (file and #anchor) resolving."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", ROOT / "ARCHITECTURE.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")


def _script():
    spec = importlib.util.spec_from_file_location("cli_reference", ROOT / "scripts" / "cli_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def prose(text: str) -> str:
    """The text without fenced code blocks (a link in an example is not a link)."""
    return re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)


def anchors(path: Path) -> set[str]:
    """GitHub's ids of the headings: lower case, punctuation dropped, spaces to hyphens."""
    ids = set()
    for line in prose(path.read_text(encoding="utf-8")).splitlines():
        if m := re.match(r"^#{1,6} (.*)", line):
            ids.add(re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-"))
    return ids


def broken_links(path: Path, root: Path = ROOT) -> list[str]:
    wrong = []
    for target in LINK.findall(prose(path.read_text(encoding="utf-8"))):
        if re.match(r"^[a-z]+:", target):  # http:, https:, mailto:
            continue
        file, _, anchor = target.partition("#")
        linked = (path.parent / file).resolve() if file else path
        if not linked.exists():
            wrong.append(f"{path.relative_to(root)}: {target} (no such file)")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            wrong.append(f"{path.relative_to(root)}: {target} (no such heading)")
    return wrong


def test_the_link_checker_finds_missing_files_and_headings(tmp_path):
    (tmp_path / "a.md").write_text("# A page\n\n## Step 2. Train (on a GPU)\n")
    page = tmp_path / "b.md"
    page.write_text(
        "[ok](a.md) [ok](a.md#step-2-train-on-a-gpu) [web](https://x.example) [gone](c.md) [no](a.md#nothing)\n"
        "```\n[in code](d.md)\n```\n"
    )
    assert broken_links(page, tmp_path) == ["b.md: c.md (no such file)", "b.md: a.md#nothing (no such heading)"]


def test_every_relative_link_resolves():
    assert len(PAGES) >= 8
    wrong = [w for page in PAGES for w in broken_links(page)]
    assert not wrong, "broken links:\n" + "\n".join(wrong)


def test_every_docs_page_is_linked_from_the_index_or_the_readme():
    linked = {
        (page.parent / target.partition("#")[0]).resolve()
        for page in (ROOT / "README.md", ROOT / "docs" / "index.md")
        for target in LINK.findall(page.read_text(encoding="utf-8"))
    }
    orphans = [p.name for p in (ROOT / "docs").glob("*.md") if p.name != "index.md" and p.resolve() not in linked]
    assert not orphans, f"docs pages no one links to (add them to docs/index.md): {orphans}"


def test_the_readme_fits_on_a_few_screens_and_opens_with_the_two_commands():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 300, len(lines)
    block = lines[lines.index("```") + 1 : lines.index("```") + 3]
    assert block[0].startswith("make demo ") and block[1].startswith("make test ")
    assert "## The workflow" in lines and "## Documentation" in lines


def test_ci_runs_the_test_command_the_readme_shows():
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert "make test" in ci and "make lint" in ci
    assert re.search(r"^test: .*\n\t\$\(PY\) -m pytest -q tests$", makefile, re.M)


def test_the_generated_pages_are_fresh():
    script = _script()
    assert script.stale() == [], "stale generated docs: run python scripts/cli_reference.py"
    cli = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    for heading in ("## `revbot review`", "## `revbot harvest github`", "## `revbot models promote`"):
        assert heading in cli
    assert "--fail-on" in cli and "--input-format" in cli


def test_the_configuration_table_lists_every_variable_the_settings_read():
    from adapters.settings import ENV_VARS

    page = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    table = page.split("settings-table:start", 1)[1].split("settings-table:end", 1)[0]
    documented = set(re.findall(r"`([A-Z][A-Z0-9_]+)`", table))
    assert set(ENV_VARS) <= documented, set(ENV_VARS) - documented
