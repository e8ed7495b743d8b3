"""Budget on code first: the ranking rules, .gitattributes as git reads it, and the review pipeline
spending its token budget on source before tests before docs, generated and lock files last."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from adapters.sources import GitSource
from bot.diff import Diff, parse_diff, parse_patch
from bot.formats import review_body, to_text
from bot.prompt import render_input
from bot.ranking import DOCUMENTATION, LAST, OTHER, SOURCE, TEST, GitAttributes, Linguist, classify, rank
from bot.review import ReviewOptions, review_diff, run
from tests.core.conftest import first_line_comment, prompt_path

# --------------------------------------------------------------------------- the rules


@pytest.mark.parametrize(
    "path, kind",
    [
        ("src/flask/ctx.py", "source"),
        ("django/test/runner.py", "source"),  # a framework's own test tooling is code
        ("numpy/testing/_private/utils.py", "source"),
        ("cmd/server/main.go", "source"),
        ("web/src/App.tsx", "source"),
        ("Dockerfile", "source"),
        ("Dockerfile.dev", "source"),
        ("src/flask/templates/base.html", "source"),
        ("tests/test_appctx.py", "test"),
        ("sklearn/linear_model/tests/test_ridge.py", "test"),
        ("test/unit/parser.spec.ts", "test"),
        ("pkg/store/store_test.go", "test"),
        ("app/src/test/java/AppTest.java", "test"),
        ("conftest.py", "test"),
        ("web/src/App.test.jsx", "test"),
        ("pyproject.toml", "other"),
        (".github/workflows/ci.yml", "other"),
        ("requirements/dev.txt", "other"),
        ("docs/api.rst", "documentation"),
        ("docs/conf.py", "documentation"),  # linguist counts everything under docs/ as documentation
        ("examples/tutorial/flaskr/db.py", "documentation"),
        ("README.md", "documentation"),
        ("CHANGES.rst", "documentation"),
        ("LICENSE.txt", "documentation"),
        ("uv.lock", "lock file"),
        ("poetry.lock", "lock file"),
        ("web/package-lock.json", "lock file"),
        ("go.sum", "lock file"),
        ("api/v1/service.pb.go", "generated"),
        ("proto/user_pb2.py", "generated"),
        ("static/app.min.js", "generated"),
        ("dist/bundle.js", "generated"),
        ("ui/__snapshots__/Button.test.js.snap", "generated"),
        ("vendor/github.com/pkg/errors/errors.go", "vendored"),
        ("web/node_modules/left-pad/index.js", "vendored"),
        ("third_party/zlib/inflate.c", "vendored"),
    ],
)
def test_classify_by_path(path, kind):
    assert classify(path).kind == kind


def test_tiers_and_reasons():
    assert [classify(p).tier for p in ("a.py", "tests/t.py", "setup.cfg", "docs/x.md", "uv.lock")] == [
        SOURCE,
        TEST,
        OTHER,
        DOCUMENTATION,
        LAST,
    ]
    assert classify("docs/api.rst").label == "documentation, matches 'docs/'"
    assert classify("uv.lock").label == "lock file, matches 'uv.lock'"
    assert classify("src/app.py").label == "source"


def test_a_script_without_extension_is_code_by_its_shebang():
    assert classify("bin/release").kind == "other"
    assert classify("bin/release", first_line="#!/usr/bin/env python3").kind == "source"
    assert classify("bin/release", first_line="release notes").kind == "other"


def test_gitattributes_win_over_the_built_in_rules():
    assert classify("src/api/schema.py", Linguist(generated=True)).label == (
        "generated, linguist-generated in .gitattributes"
    )
    assert classify("lib/jquery.js", Linguist(vendored=True)).kind == "vendored"
    assert classify("guide/intro.py", Linguist(documentation=True)).tier == DOCUMENTATION
    # unset: the team says these are their own, so the rule that matched no longer does
    assert classify("docs/conf.py", Linguist(documentation=False)).kind == "source"
    assert classify("vendor/ours/lib.go", Linguist(vendored=False)).kind == "source"
    assert classify("build/gen.py", Linguist(generated=False)).kind == "source"


def test_rank_is_by_tier_then_diff_order():
    paths = ["docs/b.rst", "uv.lock", "tests/test_x.py", "src/a.py", "docs/a.rst", "pyproject.toml", "src/b.py"]
    assert [paths[i] for i, _ in rank(paths)] == [
        "src/a.py",
        "src/b.py",
        "tests/test_x.py",
        "pyproject.toml",
        "docs/b.rst",
        "docs/a.rst",
        "uv.lock",
    ]
    marked = rank(paths, {"src/b.py": Linguist(generated=True)})
    assert [paths[i] for i, _ in marked][-1] == "src/b.py"


# --------------------------------------------------------------------------- .gitattributes


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


ATTRIBUTES = """\
# generated and vendored code
*.pb.go linguist-generated=true
api/gen/** linguist-generated
/schema.json linguist-generated
vendor/** linguist-vendored
vendor/ours/** -linguist-vendored
third_party/ linguist-vendored
docs/**/*.py linguist-documentation
docs/conf.py !linguist-documentation
guide/*  linguist-documentation=true   linguist-generated=false
"with space/*.txt" linguist-generated
*.dat gen
*.keep -gen
[attr]gen linguist-generated -linguist-vendored
!neg.py linguist-generated
*.md\tlinguist-documentation=false
tools/**/build.py  binary linguist-vendored
"""

PATHS = [
    "x/y/service.pb.go",
    "api/gen/client.py",
    "api/gen/deep/er/t.py",
    "api/general.py",
    "schema.json",
    "sub/schema.json",
    "vendor/lib/a.go",
    "vendor/ours/b.go",
    "third_party/z/inflate.c",
    "docs/a/b/ex.py",
    "docs/ex.py",
    "docs/conf.py",
    "guide/intro.rst",
    "guide/deep/x.rst",
    "with space/a.txt",
    "data/x.dat",
    "neg.py",
    "README.md",
    "docs/x.md",
    "old.keep",
    "tools/a/b/build.py",
    "tools/build.py",
    "src/app.py",
]


def test_gitattributes_text_reads_like_git_check_attr(tmp_path):
    """The parser (for the GitHub API path, where there is no checkout) against git itself."""
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / ".gitattributes").write_text(ATTRIBUTES)
    fields = git(
        repo, "check-attr", "-z", "linguist-generated", "linguist-vendored", "linguist-documentation", "--", *PATHS
    ).split("\0")
    by_git: dict[str, dict[str, str]] = {}
    for path, name, value in zip(fields[0::3], fields[1::3], fields[2::3]):
        by_git.setdefault(path, {})[name] = value
    parsed = GitAttributes.parse(ATTRIBUTES)
    expected = {path: Linguist.from_values(by_git[path]) for path in PATHS}
    assert {path: parsed.linguist(path) for path in PATHS} == expected
    # and the answers are not all empty: the file does say things
    assert expected["api/gen/deep/er/t.py"] == Linguist(generated=True)
    assert expected["vendor/ours/b.go"] == Linguist(vendored=False)
    assert expected["guide/intro.rst"] == Linguist(generated=False, documentation=True)
    assert expected["third_party/z/inflate.c"] == Linguist()  # "dir/" never matches a file
    assert expected["data/x.dat"] == Linguist(generated=True, vendored=False)  # a macro, defined below its use


def test_gitattributes_parser_skips_what_it_cannot_read():
    parsed = GitAttributes.parse(
        b'"unterminated linguist-generated\n\n   \n*.py\n' + b"x" * 3000 + b" linguist-vendored\n"
    )
    assert parsed.rules == ()
    assert GitAttributes.parse(None).for_paths(["a.py"]) == {}
    assert GitAttributes.parse("*.gen.py linguist-generated\n").for_paths(["a.py", "b.gen.py"]) == {
        "b.gen.py": Linguist(generated=True)
    }


# --------------------------------------------------------------------------- a flask-sized pull request

DOCS = [
    "api",
    "appcontext",
    "async-await",
    "blueprints",
    "cli",
    "config",
    "debugging",
    "design",
    "errorhandling",
    "extensiondev",
    "installation",
    "lifecycle",
    "logging",
    "quickstart",
    "reqcontext",
    "server",
    "shell",
    "signals",
    "templating",
    "testing",
]


def modified(path: str, hunks: list[tuple[int, list[str], list[str], list[str]]]) -> str:
    """A git diff of ``path`` with one hunk per (line, context before, removed, added)."""
    out = [f"diff --git a/{path} b/{path}\nindex 3f2a1c9..8b7d0e4 100644\n--- a/{path}\n+++ b/{path}\n"]
    shift = 0
    for start, context, removed, added in hunks:
        old_len, new_len = len(context) + len(removed), len(context) + len(added)
        out.append(f"@@ -{start},{old_len} +{start + shift},{new_len} @@\n")
        out += [f" {ln}\n" for ln in context] + [f"-{ln}\n" for ln in removed] + [f"+{ln}\n" for ln in added]
        shift += new_len - old_len
    return "".join(out)


def doc_hunks(name: str) -> list:
    title = name.replace("-", " ").title()
    return [
        (
            10 + 40 * k,
            [f"{title}", "=" * len(title), ""],
            [f"The :data:`.g` proxy is bound to the request context (section {k})."],
            [
                f"The :data:`.g` proxy is bound to the application context, not the request (section {k}).",
                "See :doc:`/appcontext` for when a context is pushed and popped.",
            ],
        )
        for k in range(3)
    ]


def code_hunks(module: str, n: int) -> list:
    return [
        (
            20 + 60 * k,
            [f"class _{module.title()}Context{k}:", f"    def push_{k}(self) -> None:"],
            [f"        _cv_{module}.set(self)"],
            [
                f"        self._cv_tokens.append(_cv_{module}.set(self))",
                f"        if self._cv_tokens[-1] is None:  # pushed twice in branch {k}",
                "            raise RuntimeError('context pushed twice')",
            ],
        )
        for k in range(n)
    ]


def test_hunks(name: str, n: int) -> list:
    return [
        (
            5 + 30 * k,
            [f"def test_{name}_{k}(app):", "    with app.app_context():"],
            ["        assert flask.g is not None"],
            [f"        flask.g.value_{k} = {k}", f"        assert flask.g.value_{k} == {k}"],
        )
        for k in range(n)
    ]


test_hunks.__test__ = False  # a fixture builder, not a test


def flask_pr() -> str:
    """92 hunks in diff order as GitHub shows them: 20 docs/*.rst first (60 hunks), then the code
    (src/flask: 16), the tests (10), the changelog, pyproject.toml and the lock file."""
    parts = [modified(f"docs/{name}.rst", doc_hunks(name)) for name in DOCS]
    parts += [
        modified("src/flask/app.py", code_hunks("app", 4)),
        modified("src/flask/ctx.py", code_hunks("ctx", 9)),
        modified("src/flask/globals.py", code_hunks("globals", 3)),
    ]
    parts += [
        modified("tests/test_appctx.py", test_hunks("appctx", 6)),
        modified("tests/test_reqctx.py", test_hunks("reqctx", 4)),
    ]
    parts += [
        modified(
            "CHANGES.rst",
            [
                (
                    1,
                    ["Version 3.2.0", "-------------", ""],
                    [],
                    ["-   ``g`` is bound to the app context only. :issue:`5500`"],
                )
            ]
            * 1
            + [(40, ["Version 3.1.1"], ["Unreleased"], ["Released 2025-05-13"])],
        ),
        modified("pyproject.toml", [(3, ['name = "Flask"'], ['version = "3.1.1"'], ['version = "3.2.0.dev"'])]),
        modified(
            "uv.lock", [(30 * k + 1, ["[[package]]"], [f'name = "old{k}"'], [f'name = "new{k}"']) for k in range(3)]
        ),
    ]
    return "".join(parts)


def cost_of(diff: Diff, backend, paths, max_new_tokens: int) -> int:
    return sum(
        backend.count_tokens(render_input(f.path, h).plain_text()) + 16 + max_new_tokens
        for f in diff.files
        if f.path in paths
        for h in f.hunks
    )


def test_flask_sized_pull_request_spends_the_budget_on_code_first(scripted):
    diff = parse_diff(flask_pr(), "pallets/flask#5500")
    assert sum(len(f.hunks) for f in diff.files) == 92 and diff.files[0].path == "docs/api.rst"
    backend = scripted(first_line_comment)
    code = {"src/flask/app.py", "src/flask/ctx.py", "src/flask/globals.py"}
    tests = {"tests/test_appctx.py", "tests/test_reqctx.py"}
    docs = {f"docs/{name}.rst" for name in DOCS}
    # the budget pays for the code and half the tests, and is less than the docs alone cost: in
    # diff order it would all have gone to docs/*.rst and no code would have been reviewed
    budget = cost_of(diff, backend, code, 64) + cost_of(diff, backend, tests, 64) // 2
    assert budget < cost_of(diff, backend, docs, 64)
    options = ReviewOptions(token_budget=budget, max_new_tokens=64, max_comments=50, max_comments_per_file=50)
    review = review_diff(diff, backend, options)

    order = [prompt_path(p) for p in backend.prompts]
    assert order[:16] == ["src/flask/app.py"] * 4 + ["src/flask/ctx.py"] * 9 + ["src/flask/globals.py"] * 3
    assert set(order[16:]) == {"tests/test_appctx.py"} and 1 <= len(order[16:]) <= 6
    assert not docs & set(order)
    reasons = {s.path: s.reason for s in review.skipped if not s.hunks}
    spent = f"token budget of {budget} tokens spent"
    for name in docs:
        assert reasons[name] == f"{spent} (documentation, matches 'docs/')"
    assert reasons["tests/test_reqctx.py"] == f"{spent} (test, matches 'tests/')"
    assert reasons["CHANGES.rst"] == f"{spent} (documentation, matches '*.rst')"
    assert reasons["pyproject.toml"] == f"{spent} (other, configuration or data)"
    assert reasons["uv.lock"] == "vendored or generated (matches '*.lock')"  # never reviewed by default
    # comments come in the order the budget was spent, code first
    assert [c.path for c in review.comments][:3] == ["src/flask/app.py"] * 3

    # what was skipped and why, in the review body a pull request shows and in the terminal
    body = review_body(review, [])
    assert f"- `docs/api.rst`: {spent} (documentation, matches 'docs/')" in body
    assert "- `uv.lock`: vendored or generated (matches '*.lock')" in body
    assert f"Skipped: 24 files (vendored or generated: 1, {spent}: 23)" in review.summary
    assert f"  tests/test_reqctx.py: {spent} (test, matches 'tests/')" in to_text(review)


def test_lock_and_generated_files_come_last_when_they_are_reviewed(scripted):
    diff = parse_diff(flask_pr())
    attributes = {"src/flask/globals.py": Linguist(generated=True)}
    backend = scripted(first_line_comment)
    review = review_diff(diff, backend, ReviewOptions(default_ignores=False, max_new_tokens=64), attributes=attributes)
    order = [prompt_path(p) for p in backend.prompts]
    assert len(order) == 92 and review.skipped == []
    firsts = list(dict.fromkeys(order))
    assert firsts[:4] == ["src/flask/app.py", "src/flask/ctx.py", "tests/test_appctx.py", "tests/test_reqctx.py"]
    assert firsts[4] == "pyproject.toml" and firsts[5:25] == [f"docs/{name}.rst" for name in DOCS]
    assert firsts[25:] == ["CHANGES.rst", "src/flask/globals.py", "uv.lock"]  # generated and lock files last

    # with the default ignores, a file .gitattributes marks generated is skipped like *_pb2.py
    review = review_diff(diff, scripted(first_line_comment), ReviewOptions(max_new_tokens=64), attributes=attributes)
    reasons = {s.path: s.reason for s in review.skipped}
    assert reasons == {
        "src/flask/globals.py": "vendored or generated (linguist-generated in .gitattributes)",
        "uv.lock": "vendored or generated (matches '*.lock')",
    }


def test_a_path_the_team_marks_as_its_own_is_reviewed_despite_the_default_ignores(scripted):
    text = modified("vendor/ours/client.go", [(1, ["package ours"], ["var x = 1"], ["var x = 2"])])
    backend = scripted(first_line_comment)
    skipped = review_diff(parse_diff(text), backend).skipped
    assert [s.reason for s in skipped] == ["vendored or generated (matches 'vendor/')"]
    review = review_diff(parse_diff(text), backend, attributes={"vendor/ours/client.go": Linguist(vendored=False)})
    assert review.skipped == [] and [prompt_path(p) for p in backend.prompts] == ["vendor/ours/client.go"]


def test_the_last_hunk_the_budget_reaches_is_cut_not_dropped(scripted):
    big = [(1, [], [], [f"value_{i} = compute({i}, scale=2)" for i in range(200)])]
    text = modified("src/small.py", [(1, ["a = 1"], ["b = 2"], ["b = 3"])]) + modified("src/big.py", big)
    diff = parse_diff(text)
    backend = scripted(first_line_comment)
    whole = cost_of(diff, backend, {"src/small.py", "src/big.py"}, 32)
    review = review_diff(diff, backend, ReviewOptions(token_budget=whole // 2, max_new_tokens=32))
    assert [prompt_path(p) for p in backend.prompts] == ["src/small.py", "src/big.py"]
    piece = backend.prompts[1]
    assert 50 < piece.user.count("\nR") < 200  # a leading part of the 200-line hunk
    (rest,) = review.skipped
    assert rest.path == "src/big.py" and rest.hunks == (diff.files[1].hunks[0].header,)
    assert rest.lines == 200 - piece.user.count("\nR") and rest.reason.endswith("(source)")
    assert review.hunks_reviewed == 2 and review.prompt_tokens <= whole // 2


def test_comment_caps_keep_comments_on_code_over_docs(scripted):
    text = modified("docs/guide.rst", doc_hunks("guide")) + modified("src/app.py", code_hunks("app", 3))
    review = review_diff(parse_diff(text), scripted(first_line_comment), ReviewOptions(max_comments=3))
    assert [c.path for c in review.comments] == ["src/app.py"] * 3 and review.over_cap_dropped == 3


# --------------------------------------------------------------------------- a local repository


def test_git_source_reads_gitattributes_and_ranks_with_them(tmp_path, scripted):
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.email", "dev@example.com")
    git(repo, "config", "user.name", "Dev")
    (repo / ".gitattributes").write_text("api/gen/** linguist-generated\nguide/** linguist-documentation\n")
    git(repo, "add", ".gitattributes")
    git(repo, "commit", "-qm", "attributes")
    git(repo, "checkout", "-qb", "feature")
    for path, text in {
        "api/gen/client.py": "X = 1\n",
        "guide/setup.py": "print('setup')\n",
        "app/main.py": "def main():\n    return 0\n",
        "api/gen/sub/types.py": "Y = 2\n",
    }.items():
        (repo / path).parent.mkdir(parents=True, exist_ok=True)
        (repo / path).write_text(text)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "feature")

    source = GitSource(repo, "main...feature")
    assert source.attributes(["api/gen/client.py", "guide/setup.py", "app/main.py"]) == {
        "api/gen/client.py": Linguist(generated=True),
        "guide/setup.py": Linguist(documentation=True),
    }
    backend = scripted(first_line_comment)
    review = run(source, backend)
    assert [prompt_path(p) for p in backend.prompts] == ["app/main.py", "guide/setup.py"]
    assert {s.path: s.reason for s in review.skipped} == {
        "api/gen/client.py": "vendored or generated (linguist-generated in .gitattributes)",
        "api/gen/sub/types.py": "vendored or generated (linguist-generated in .gitattributes)",
    }
    assert GitSource(tmp_path / "nowhere").attributes(["a.py"]) == {}


# --------------------------------------------------------------------------- real hunks


def test_real_review_hunks_in_the_worst_order_still_spend_the_budget_on_code(shared_dir, scripted):
    """crc-py's real diff hunks (CPython, django, keras, pandas...), one per file, laid out docs
    first and code last: whatever the budget reaches is code, and nothing of lower rank is
    reviewed while anything ranked above it was skipped."""
    files, seen = [], set()
    for line in (shared_dir / "data" / "crc-py" / "reviews.jsonl").read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        if row["file_path"] in seen:
            continue
        seen.add(row["file_path"])
        files.append(parse_patch(row["code"], row["file_path"], strict=False))
    files = [f for f in files if f.hunks]
    files.sort(key=lambda f: -classify(f.path).tier)  # docs and tests ahead of code, as a diff might list them
    diff = Diff(files, "crc-py")
    kinds = {f.path: classify(f.path).kind for f in files}
    assert {"documentation", "test", "other", "source"} <= set(kinds.values()) and len(files) > 300

    backend = scripted(lambda inp: "NO COMMENT")
    source_cost = cost_of(diff, backend, {p for p, k in kinds.items() if k == "source"}, 32)
    review = review_diff(diff, backend, ReviewOptions(token_budget=source_cost // 3, max_new_tokens=32))
    reviewed = [prompt_path(p) for p in backend.prompts]
    assert len(set(reviewed)) > 20 and {kinds[p] for p in reviewed} == {"source"}
    ranked = [files[i].path for i, _ in rank([f.path for f in files])]
    assert list(dict.fromkeys(reviewed)) == ranked[: len(set(reviewed))]  # a prefix of the ranking
    skipped_kinds = {s.reason.rsplit("(", 1)[-1].split(",")[0].rstrip(")") for s in review.skipped}
    assert {"documentation", "test", "other", "source"} <= skipped_kinds
