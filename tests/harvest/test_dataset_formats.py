"""`revbot dataset import/export/stats`: crc-py, CodeReviewer, alpaca/sharegpt/openai, field-mapped JSONL."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from click.testing import CliRunner
from harvest_kit import hunk_patch

from adapters.files import read_dataset
from adapters.store import CachedFile, StoredComment
from bot.datasets import EXPORT_FORMATS, parse_field_map
from bot.diff import parse_hunk
from bot.errors import DataError, UsageError
from bot.examples import Example, ExampleComment
from harvest.build import BuildConfig, build_pr
from harvest.datasets import export_examples, import_dataset

CRC = "data/crc-py/reviews.jsonl"


@pytest.fixture(scope="module")
def crc(shared_dir):
    return read_dataset(shared_dir / CRC, "crc")


def test_crc_yields_766_examples_and_says_exactly_why_not_823(crc, shared_dir):
    assert crc.records == 823 and len(crc.examples) == 766 and not crc.skipped
    # four rows repeat a comment (same comment_id, same hunk and text) of an earlier row
    assert crc.notes["duplicate record (same example as an earlier line): dropped"] == 4
    assert sorted(int(d.split(":")[1]) for d in crc.duplicates) == [546, 618, 744, 795]
    # 53 are written by AI review tools: Gemini Code Assist's priority badges, Korbit's category badges
    assert dict(crc.tool_comments) == {"gemini-code-assist": 48, "korbit": 5}
    assert crc.notes["hunk line breaks restored from 'enriched'"] == 187
    assert crc.notes["doubled '@@ @@' header prefix removed"] == 9
    assert "766 example(s)" in crc.text() and "53 AI-review-tool, 4 duplicate(s)" in crc.text()
    assert len(read_dataset(shared_dir / CRC, "crc", keep_tool_comments=True).examples) == 819


def test_crc_anchors_sit_on_the_hunks_last_line_on_the_right_side(crc):
    sides = Counter()
    for ex in crc.examples:
        hunk = parse_hunk(ex.hunk, strict=True)  # headers recounted: strict parsing holds
        (c,) = ex.comments
        last = hunk.lines[-1]
        assert hunk.is_commentable(c.line, c.side)
        assert c.line == (last.old_no if c.side == "LEFT" else last.new_no)
        sides[c.side] += 1
    assert sides["LEFT"] >= 16  # deleted last lines are commented on the old side


def test_crc_restores_original_comment_text_and_ids(crc):
    first = crc.examples[0]
    assert first.comments[0].body.startswith(
        "This actually fixes a bug"
    )  # lower-cased in `comment`, original in `enriched`
    assert first.repo == "paperless-ngx/paperless-ngx" and first.pr == 10846
    assert first.created_at == "2025-09-13T18:39:16Z" and first.source == "import:crc"
    suggestion = [e for e in crc.examples if "```suggestion" in e.comments[0].body]
    assert suggestion  # suggestion blocks the dataset cut off come back from `enriched`
    assert len({c.id for c in crc.comments}) == 766  # AI review tool comments are not stored either


def test_cli_imports_crc_into_the_store(shared_dir, tmp_path):
    from harvest.cli import dataset

    db = tmp_path / "d.db"
    runner = CliRunner()
    out = runner.invoke(dataset, ["import", str(shared_dir / CRC), "--input-format", "crc", "--db", str(db)])
    assert out.exit_code == 0, out.output
    assert (
        "823 record(s)" in out.output
        and "766 example(s)" in out.output
        and ":546: same example as line 543" in out.output
    )
    stats = json.loads(runner.invoke(dataset, ["stats", "--db", str(db), "--format", "json"]).output)
    assert stats["positive"] == 766 and stats["negative"] == 0 and stats["comments"] == 766
    subset = tmp_path / "first100.jsonl"
    subset.write_text("".join((shared_dir / CRC).read_text().splitlines(keepends=True)[:100]))
    again = json.loads(
        runner.invoke(
            dataset, ["import", str(subset), "--input-format", "crc", "--db", str(db), "--format", "json"]
        ).output
    )
    humans = 100 - sum(again["review_tool_comments_dropped"].values())
    assert humans == 78  # the first 100 rows hold 22 AI review tool comments
    assert (again["inserted"], again["updated"]) == (0, humans)  # idempotent: keyed by id, nothing new


def _varied_examples(crc) -> list[Example]:
    files = [CachedFile("src/app.py", "modified", hunk_patch(3))]
    comments = [
        StoredComment(
            "acme/widgets",
            4,
            1,
            "src/app.py",
            "@@ -1,4 +1,5 @@\n a0 = 1\n-b0 = 2\n+b0 = 3\n+c0 = 4",
            3,
            "RIGHT",
            start_line=2,
            start_side="RIGHT",
            author="bob",
            body="Both of these.\n\n```suggestion\nb0 = 4\nc0 = 5\n```",
            created_at="2024-02-01T00:00:00Z",
        ),
        StoredComment(
            "acme/widgets",
            4,
            2,
            "src/app.py",
            "@@ -1,4 +1,5 @@\n a0 = 1\n-b0 = 2",
            2,
            "LEFT",
            author="carol",
            body="Why was this removed?",
            created_at="2024-02-01T00:00:01Z",
        ),
    ]
    built = build_pr("acme/widgets", 4, comments, files, config=BuildConfig(negatives_ratio=2.0)).examples
    no_newline = Example(
        "x#1:nn",
        "x/y",
        1,
        "a.txt",
        "@@ -1 +1 @@\n-old\n\\ No newline at end of file\n+new\n\\ No newline at end of file",
        [ExampleComment(1, "RIGHT", "Add the newline back.")],
        "2024-01-01T00:00:00Z",
        "github",
    )
    return built + [no_newline] + crc.examples[:40]


@pytest.mark.parametrize("fmt", EXPORT_FORMATS)
def test_export_then_import_gives_back_the_same_examples(fmt, crc, tmp_path):
    examples = _varied_examples(crc)
    assert any(e.is_negative for e in examples) and any(len(e.comments) == 2 for e in examples)
    out = tmp_path / f"out.{fmt}.jsonl"
    assert export_examples(examples, out, fmt) == len(examples)
    back = read_dataset(out, "jsonl" if fmt == "jsonl" else fmt)
    assert back.examples == examples
    record = json.loads(out.read_text().split("\n")[0])
    if fmt == "alpaca":
        assert set(record) == {"instruction", "input", "output", "revbot"} and record["output"].endswith("</review>")
    elif fmt == "sharegpt":
        assert [t["from"] for t in record["conversations"]] == ["system", "human", "gpt"]
    elif fmt == "openai":
        assert [m["role"] for m in record["messages"]] == ["system", "user", "assistant"]


def test_export_without_meta_still_imports_as_the_same_prompts_and_answers(crc, tmp_path):
    examples = crc.examples[:20]
    out = tmp_path / "plain.jsonl"
    export_examples(examples, out, "openai", meta=False)
    assert "revbot" not in json.loads(out.read_text().split("\n")[0])
    back = read_dataset(out, "openai", repo="team/repo").examples
    assert [(b.prompt_input(), b.answer()) for b in back] == [(e.prompt_input(), e.answer()) for e in examples]
    assert {b.repo for b in back} == {"team/repo"}


def _write(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_malformed_line_names_file_and_line_and_stores_nothing(tmp_path, store):
    good = json.dumps(
        {
            "code": "@@ -1,2 +1,2 @@\n a\n-b\n+c",
            "comment": "Why c?",
            "line_number": 2,
            "file_path": "a.py",
            "pr_number": 1,
            "repo": "r",
            "owner": "o",
            "comment_id": 1,
            "comment_created_at": "2024-01-01T00:00:00Z",
        }
    )
    path = _write(tmp_path / "bad.jsonl", [good, "", "{not json", good.replace('"comment_id": 1', '"comment_id": 2')])
    with pytest.raises(DataError) as caught:
        import_dataset(store, path, "crc")
    assert str(caught.value).startswith(f"{path}:3: invalid JSON")
    assert list(store.iter_examples()) == []  # all or nothing
    result = import_dataset(store, path, "crc", skip_bad=True)
    assert len(result.examples) == 2 and result.skipped == {"invalid JSON": 1}
    assert result.errors[0].startswith(f"{path}:3:")
    assert store.count_examples() == (2, 0)


def test_a_truncated_file_is_reported_as_such(tmp_path):
    path = tmp_path / "cut.jsonl"
    path.write_text('{"patch": "@@ -1 +1 @@\\n-a\\n+b", "msg": "ok then"}\n{"patch": "@@ -1 +1 @@\\n-a\\n+b", "ms')
    with pytest.raises(DataError, match=r"cut\.jsonl:2: invalid JSON .*truncated"):
        read_dataset(path, "codereviewer")
    arr = tmp_path / "cut.json"
    arr.write_text('[\n {"instruction": "x", "input": "@@ -1 +1 @@\\n-a\\n+b", "output": "Fine."},\n {"instruction": ')
    with pytest.raises(DataError, match=r"cut\.json:3: invalid JSON"):
        read_dataset(arr, "alpaca")


def test_missing_fields_and_bad_hunks_name_the_line(tmp_path):
    path = _write(tmp_path / "x.jsonl", [json.dumps({"code": "no header here", "comment": "x", "line_number": 1})])
    with pytest.raises(DataError, match=r"x\.jsonl:1: the hunk has no '@@"):
        read_dataset(path, "crc")
    ours = _write(
        tmp_path / "ours.jsonl",
        [
            json.dumps({"id": "1", "repo": "r", "pr": 1, "path": "a", "hunk": "@@ -1 +1 @@\n-a\n+b"}),
            json.dumps({"code": "@@ -1 +1 @@\n-a\n+b", "comment": "hi"}),
        ],
    )
    with pytest.raises(DataError, match=r"ours\.jsonl:2: .*--field-map"):
        read_dataset(ours, "jsonl")


def test_field_mapped_jsonl(tmp_path):
    rows = [
        {
            "d": {"hunk": "@@ -10,3 +10,4 @@ def f():\n x\n+y\n z\n w"},
            "msg": "Why y?",
            "file": "m.py",
            "ln": 11,
            "n": 7,
            "when": "2024-03-01",
            "proj": "o/r",
        },
        {
            "d": {"hunk": "@@ -10,3 +10,4 @@ def f():\n x\n+y\n z\n w"},
            "msg": "Out of range line.",
            "file": "m.py",
            "ln": 99,
            "n": 7,
        },
        {"d": {"hunk": "@@ -1 +1 @@\n-a\n+b"}, "msg": "", "file": "n.py", "n": 8},
    ]
    path = _write(tmp_path / "m.jsonl", [json.dumps(r) for r in rows])
    fmap = parse_field_map("hunk=d.hunk,comment=msg,path=file,line=ln,pr=n,time=when,repo=proj")
    result = read_dataset(path, "jsonl", field_map=fmap, repo="fallback/repo")
    a, b, c = result.examples
    assert (a.repo, a.pr, a.path, a.created_at) == ("o/r", 7, "m.py", "2024-03-01T00:00:00Z")
    assert [(x.line, x.side, x.body) for x in a.comments] == [(11, "RIGHT", "Why y?")]
    assert [(x.line, x.side) for x in b.comments] == [(13, "RIGHT")] and b.repo == "fallback/repo"
    assert result.notes["line not in the hunk (anchored on the last line)"] == 1
    assert c.is_negative
    with pytest.raises(UsageError, match="unknown key 'code'"):
        parse_field_map("code=x")
    with pytest.raises(UsageError, match="hunk"):
        parse_field_map("comment=x")


def test_codereviewer_msg_records(tmp_path):
    rows = [
        {
            "patch": "@@ -5,4 +5,5 @@ class A:\n     a = 1\n-    b = 2\n+    b = 3\n+    c = 4\n     d = 5",
            "msg": "Why add c?",
            "id": 17,
            "y": 1,
            "lang": "py",
            "proj": "team/app",
            "oldf": "...",
        },
        {"patch": "@@ -1,2 +1,2 @@\n x\n-y\n+z", "msg": "", "id": 18, "y": 0},
        {"patch": " x\n-y\n+z", "msg": "No header in this one.", "id": 19},
    ]
    result = read_dataset(_write(tmp_path / "msg-test.jsonl", [json.dumps(r) for r in rows]), "codereviewer")
    a, b, c = result.examples
    assert a.repo == "team/app" and a.path == "unknown.py" and [(x.line, x.side) for x in a.comments] == [(7, "RIGHT")]
    assert b.is_negative and b.source == "import:codereviewer"
    assert c.hunk.startswith("@@ -1,2 +1,2 @@") and result.notes["hunk header synthesised (patch had none)"] == 1


def test_third_party_alpaca_with_plain_hunks_and_free_text(tmp_path):
    rows = [{"instruction": "Review this.", "input": "@@ -1,2 +1,3 @@\n a\n+b\n c", "output": "b needs a docstring."}]
    path = tmp_path / "a.json"
    path.write_text(json.dumps(rows, indent=1))  # a JSON array file, as alpaca sets often are
    result = read_dataset(path, "alpaca", repo="t/r")
    (ex,) = result.examples
    assert [(c.line, c.side, c.body) for c in ex.comments] == [(2, "RIGHT", "b needs a docstring.")]
    assert result.notes["free-text answer anchored on the hunk's last changed line"] == 1


def test_an_answer_naming_lines_outside_the_hunk_is_refused(tmp_path):
    ex = Example("i", "r/r", 1, "a.py", "@@ -1 +1 @@\n-a\n+b", [ExampleComment(1, "RIGHT", "Hm, why?")])
    out = tmp_path / "o.jsonl"
    export_examples([ex], out, "alpaca")
    record = json.loads(out.read_text())
    record["output"] = "R40: not in the hunk\n</review>"
    out.write_text(json.dumps(record) + "\n")
    with pytest.raises(DataError, match=r"o\.jsonl:1: .*not in the hunk: RIGHT 40"):
        read_dataset(out, "alpaca")


def test_cli_export_stats_and_errors(shared_dir, tmp_path):
    from harvest.cli import dataset

    db = tmp_path / "c.db"
    runner = CliRunner()
    subset = tmp_path / "first200.jsonl"
    subset.write_text("".join((shared_dir / CRC).read_text().splitlines(keepends=True)[:200]))
    imported = read_dataset(subset, "crc").examples
    django = sum(1 for e in imported if e.repo == "django/django")
    runner.invoke(dataset, ["import", str(subset), "--input-format", "crc", "--db", str(db)])
    out = tmp_path / "e.jsonl"
    exported = runner.invoke(
        dataset, ["export", "--format", "sharegpt", "-o", str(out), "--db", str(db), "--repo", "django/django"]
    )
    assert exported.exit_code == 0 and f"wrote {django} example(s)" in exported.output and django > 5
    assert len(out.read_text().splitlines()) == django
    text = runner.invoke(dataset, ["stats", "--db", str(db)])
    assert f"examples: {len(imported)} positive, 0 negative" in text.output and "django/django" in text.output
    bad = tmp_path / "bad.jsonl"
    bad.write_text("[1, 2\n")
    failed = runner.invoke(dataset, ["import", str(bad), "--input-format", "alpaca", "--db", str(db)])
    assert failed.exit_code == 1 and f"{bad}:1:" in failed.output and "Traceback" not in failed.output
    missing = runner.invoke(dataset, ["stats", "--db", str(tmp_path / "none.db")])
    assert missing.exit_code == 2 and "no such store" in missing.output
    wrong = runner.invoke(
        dataset, ["import", str(bad), "--input-format", "crc", "--field-map", "hunk=x", "--db", str(db)]
    )
    assert wrong.exit_code == 2 and "--input-format jsonl only" in wrong.output
