"""Comments filled in from one template across many PRs are recognised by their shape (bot.templates)
and kept out of training data on import and harvest, counted, unless --keep-templates; a person's
repeated phrasing is not a template."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from harvest_kit import REPO, comment, hunk_patch, pull

from adapters.files import read_dataset
from bot.templates import TemplateConfig, find_templates, tokenize
from harvest.mine import HarvestOptions, harvest_github

CRC = "data/crc-py/reviews.jsonl"
TOOL_LINES = (
    "Please provide return type hint for the function: `{}`",
    "Please provide descriptive name for the parameter: `{}`",
    "Class names should follow the [CamelCase](https://en.wikipedia.org/wiki/Camel_case) naming convention",
)


@pytest.fixture(scope="module")
def crc_pair(shared_dir):
    return read_dataset(shared_dir / CRC, "crc"), read_dataset(shared_dir / CRC, "crc", keep_templates=True)


def test_crc_templates_are_the_review_tools_lines_of_one_repository(crc_pair):
    dropped, kept = crc_pair
    assert len(kept.examples) - len(dropped.examples) == 139 == sum(dropped.templated.values())
    gone_ids = {e.id for e in kept.examples} - {e.id for e in dropped.examples}
    gone = [e for e in kept.examples if e.id in gone_ids]
    assert {e.repo for e in gone} == {"TheAlgorithms/Python"}  # no other repository loses a comment
    bodies = [e.comments[0].body.lower() for e in gone]
    for start in ("please provide return type hint", "please provide descriptive name", "class names should follow"):
        assert any(b.startswith(start) for b in bodies), start
    # every dropped comment is made of the tool's lines only; the skeletons name them with slots
    skeletons = " | ".join(dropped.templated)
    assert "for the parameter: …" in skeletons and "(…)" in skeletons
    assert "templated comments dropped 139" in dropped.text() and "--keep-templates" in dropped.text()
    assert dropped.to_dict()["templated_comments_dropped"] == dict(dropped.templated)
    assert len({c.id for c in dropped.comments}) == len(dropped.examples)  # not stored as comments either


def test_crc_human_comments_of_the_same_repository_stay(crc_pair):
    dropped, _ = crc_pair
    python = [e for e in dropped.examples if e.repo == "TheAlgorithms/Python"]
    assert len(python) >= 200  # the repository's people are still heard
    assert not any(e.comments[0].body.lower().startswith("please provide type hint") for e in python)


def _rows(bodies: list[str], prs: list[int] | None = None) -> list[tuple[tuple[str, int], str]]:
    return [(("acme/x", pr), body) for pr, body in zip(prs or range(1, len(bodies) + 1), bodies)]


NAMES = ["load_config", "parse_row", "fetchAll", "x", "n", "build_index", "run", "self.cache", "to_json()", "main"]


@pytest.mark.parametrize("line", TOOL_LINES[:2])
def test_a_line_filled_with_another_name_on_each_pr_is_a_template(line):
    bodies = [line.format(name) for name in NAMES[:6]]
    report = find_templates(_rows(bodies))
    assert all(report.verdicts) and len(report.templates) == 1
    assert report.templates[0].prs == 6 and "…" in report.templates[0].skeleton


def test_plain_word_slots_are_found_by_alignment_not_by_their_shape():
    bodies = [f"Please update the following name accordingly: {w}" for w in ("node", "cell", "tree", "graph", "edge")]
    assert all(find_templates(_rows(bodies)).verdicts)


def test_four_prs_are_not_enough():
    bodies = [TOOL_LINES[0].format(name) for name in NAMES[:4]]
    assert not any(find_templates(_rows(bodies)).verdicts)
    # the same four comments and one more PR of it: five PRs make it a template
    assert all(find_templates(_rows([*bodies, TOOL_LINES[0].format("other")])).verdicts)


def test_many_comments_in_one_pr_do_not_make_a_template():
    bodies = [TOOL_LINES[0].format(name) for name in NAMES]
    assert not any(find_templates(_rows(bodies, prs=[7] * len(bodies))).verdicts)


@pytest.mark.parametrize(
    "bodies",
    [
        # a reviewer's verbatim habit: short, nothing filled in
        ["Can you add a test for this?"] * 10,
        # the same habit with the few fills people use
        ["Can we add a test for this case?", "Can we add a test for that case?"] * 5,
        # the same opening, then the reviewer's own words
        [
            "I think we should use a context manager here so the file is closed.",
            "I think we should use a dataclass here instead of a dict.",
            "I think we should use pathlib here, os.path is harder to read.",
            "I think we should use the logger instead of print in this module.",
            "I think we should use a set for the lookups below, the list is long.",
            "I think we should use an enum for these states.",
        ],
        # short remarks that differ only in a name: fewer than five fixed words
        [f"Typo: `{name}`" for name in NAMES],
    ],
)
def test_a_persons_repeated_phrasing_is_not_a_template(bodies):
    assert not any(find_templates(_rows(bodies)).verdicts)


def test_a_long_canned_paragraph_on_many_prs_is_caught():
    canned = (
        "Thanks for the contribution! Before we can merge this, please make sure the changelog has an entry, "
        "the docs are updated and every commit is signed off as the contributing guide explains."
    )
    report = find_templates(_rows([canned] * 6))
    assert all(report.verdicts) and report.templates[0].canned


def test_a_persons_note_after_a_tool_line_keeps_the_comment():
    bodies = [TOOL_LINES[0].format(name) for name in NAMES[:6]]
    note = (
        "\n\nAlso, this loop re-reads the whole file on every iteration; read it once above the loop and keep "
        "the rows in a dict keyed by id, it is called for every request."
    )
    bodies[2] += note
    verdicts = find_templates(_rows(bodies)).verdicts
    assert verdicts[2] is None and sum(v is not None for v in verdicts) == 5


def test_tokens_hide_what_a_tool_fills_in():
    p = tokenize("Rename `fooBar` in src/app.py (see https://x.test/a) to snake_case, line 12, 'name'")
    assert p.shape == (
        "rename", "<code>", "in", "<path>", "(", "see", "<url>", ")", "to", "<id>", ",", "line", "<num>", ",", "<str>",
    )  # fmt: skip
    assert p.values[1] == "`fooBar`" and p.values[3] == "src/app.py"


def test_thresholds_are_configurable():
    bodies = [TOOL_LINES[0].format(name) for name in NAMES[:3]]
    assert all(find_templates(_rows(bodies), TemplateConfig(min_prs=3)).verdicts)


PEOPLE = [
    "Why swallow the error here? The caller cannot tell a timeout from a bad row.",
    "This duplicates the retry loop in client.py; reuse that one.",
    "Nit: the log line should say which file failed.",
    "Can this block? We call it from the request thread.",
    "I would keep the old name, the CLI documents it.",
    "Does this still hold when the list is empty?",
]


def _tool_seed(prs: int) -> dict:
    """``prs`` PRs, each with one tool line (another function name each time) and one person's comment."""
    pulls = []
    for number in range(1, prs + 1):
        pulls.append(
            pull(
                number,
                comments=[
                    comment(2 * number, 2, TOOL_LINES[0].format(f"handler_{number}"), user="dave"),
                    comment(2 * number + 1, 42, PEOPLE[number - 1], user="bob"),
                ],
            )
        )
    return {"repos": [{"owner": "acme", "name": "widgets", "pulls": pulls}]}


def test_harvest_drops_templated_comments_counted_and_keeps_them_on_request(sim_factory, client_for, store, tmp_path):
    sim = sim_factory(_tool_seed(6))
    summary = harvest_github(client_for(sim), store, REPO)
    assert summary.dropped["template"] == 6 and summary.counts["kept"] == 6
    assert "template 6" in summary.text()
    bodies = [c.body for e in store.iter_examples(REPO) for c in e.comments]
    assert len(bodies) == 6 and not any(b.startswith("Please provide") for b in bodies)

    kept = harvest_github(client_for(sim), store, REPO, HarvestOptions(rebuild=True, keep_templates=True))
    assert kept.dropped["template"] == 0 and kept.counts["kept"] == 12


def test_a_template_found_later_rebuilds_the_prs_harvested_before(sim_factory, client_for, store):
    sim = sim_factory(_tool_seed(4))  # four PRs: not yet a template
    first = harvest_github(client_for(sim), store, REPO)
    assert first.dropped["template"] == 0 and first.counts["kept"] == 8
    sim.add_pull(REPO, number=5, files=[{"filename": "src/app.py", "status": "modified", "patch": hunk_patch(1, "_5")}])
    sim.add_comments(REPO, 5, [{"path": "src/app.py", "line": 2, "body": TOOL_LINES[0].format("late"), "user": "dave"}])
    second = harvest_github(client_for(sim), store, REPO)
    assert second.prs_built == 5  # the four earlier PRs are rebuilt with the new verdict
    assert second.dropped["template"] == 5
    bodies = [c.body for e in store.iter_examples(REPO) for c in e.comments]
    assert not any(b.startswith("Please provide") for b in bodies) and len(bodies) == 4


def test_cli_import_says_what_it_dropped_and_keeps_on_request(shared_dir, tmp_path):
    from harvest.cli import dataset

    runner = CliRunner()
    args = ["import", str(shared_dir / CRC), "--input-format", "crc", "--format", "json"]
    out = runner.invoke(dataset, [*args, "--db", str(tmp_path / "a.db")])
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert sum(data["templated_comments_dropped"].values()) == 139 and data["examples"] == 627
    kept = json.loads(runner.invoke(dataset, [*args, "--keep-templates", "--db", str(tmp_path / "b.db")]).output)
    assert kept["templated_comments_dropped"] == {} and kept["examples"] == 766
    assert kept.keys() == data.keys()


def test_import_takes_the_templated_comment_out_of_an_example_and_keeps_the_persons(tmp_path):
    from bot.examples import Example, ExampleComment

    path = tmp_path / "examples.jsonl"
    rows = []
    for pr, name in enumerate(NAMES[:6], start=1):
        comments = [ExampleComment(2, "RIGHT", TOOL_LINES[0].format(name))]
        if pr == 3:
            comments.append(ExampleComment(1, "RIGHT", PEOPLE[0]))
        hunk = f"@@ -1,1 +1,2 @@\n a = {pr}\n+b = {pr}"
        rows.append(Example(f"x#{pr}", "acme/x", pr, "a.py", hunk, comments, f"2024-01-0{pr}T00:00:00Z").to_dict())
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = read_dataset(path, "jsonl")
    assert [(e.pr, [c.body for c in e.comments]) for e in result.examples] == [(3, [PEOPLE[0]])]
    assert sum(result.templated.values()) == 6
    assert len(read_dataset(path, "jsonl", keep_templates=True).examples) == 6
