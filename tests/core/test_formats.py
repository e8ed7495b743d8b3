"""Output formats: text, JSON, SARIF 2.1.0 (loaded by sarif-pydantic), rdjson, GitHub's review body."""

from __future__ import annotations

import json

import pytest

from bot import formats
from bot.diff import LEFT, RIGHT
from bot.errors import UsageError
from bot.formats import (
    MAX_COMMENT_CHARS,
    cap_length,
    comment_fingerprint,
    extract_fingerprints,
    fingerprint,
    github_review_payload,
    neutralize_mentions,
)
from bot.review import Review, ReviewComment, Skipped


def sample_review() -> Review:
    return Review(
        comments=[
            ReviewComment(
                "src/app.py",
                12,
                RIGHT,
                "Strip in the parser.\n```suggestion\ndata = fh.read()\n```",
                None,
                "    data = fh.read().strip()",
                12,
            ),
            ReviewComment("src/app.py", 15, RIGHT, "Range comment, ask @alice.", 13, "    return data", 15),
            ReviewComment("src/old name.py", 7, LEFT, "Why was this removed?", None, "x = 1", 6),
        ],
        unanchored=[ReviewComment("src/app.py", 99, RIGHT, "Somewhere else @bob")],
        skipped=[
            Skipped("logo.png", "binary file"),
            Skipped("big.py", "token budget of 100 tokens spent", ("@@ -1 +1 @@",), 40),
        ],
        source="change.diff",
        model={"kind": "local", "model": "tiny"},
        files_total=4,
        files_reviewed=2,
        hunks_total=4,
        hunks_reviewed=3,
        prompts=3,
    )


def test_text_is_file_line_body():
    out = formats.to_text(sample_review())
    assert out.splitlines()[:6] == [
        "src/app.py:12: Strip in the parser.",
        "    ```suggestion",
        "    data = fh.read()",
        "    ```",
        "src/app.py:13-15: Range comment, ask @alice.",
        "src/old name.py:7 (old): Why was this removed?",
    ]
    assert "Not on a changed line:\n  src/app.py:99: Somewhere else @bob" in out
    assert "Not reviewed:\n  logo.png: binary file\n  big.py (1 hunk): token budget of 100 tokens spent" in out
    assert out.rstrip().splitlines()[-1] == sample_review().summary
    assert formats.to_text(Review()) == "Nothing to review.\n"


def test_json_is_the_review_as_data():
    data = json.loads(formats.to_json(sample_review()))
    assert data["format"] == "revbot-review" and data["tool"]["name"] == "revbot"
    assert [(c["path"], c["line"], c["side"], c["start_line"]) for c in data["comments"]] == [
        ("src/app.py", 12, "RIGHT", None),
        ("src/app.py", 15, "RIGHT", 13),
        ("src/old name.py", 7, "LEFT", None),
    ]
    assert data["comments"][0]["fingerprint"] == comment_fingerprint(sample_review().comments[0])
    assert data["unanchored"][0]["line"] == 99 and data["skipped"][1]["hunks"] == ["@@ -1 +1 @@"]
    assert data["stats"]["hunks_reviewed"] == 3 and data["summary"] == sample_review().summary


def test_review_round_trips_through_its_json():
    review = sample_review()
    assert Review.from_dict(json.loads(formats.to_json(review))) == review
    assert Review.from_dict(review.to_dict()).summary == review.summary


def test_sarif_loads_in_a_sarif_library_and_has_what_code_scanning_needs():
    from sarif_pydantic import Sarif

    text = formats.to_sarif(sample_review())
    log = Sarif.model_validate_json(text)
    assert log.version == "2.1.0" and len(log.runs) == 1
    run = log.runs[0]
    assert run.tool.driver.name == "revbot" and run.tool.driver.version
    rule_ids = [r.id for r in run.tool.driver.rules]
    assert len(set(rule_ids)) == len(rule_ids)
    assert len(run.results) == 4
    for result in run.results:
        assert result.rule_id in rule_ids and rule_ids[result.rule_index] == result.rule_id
        assert result.message.text
        loc = result.locations[0].physical_location
        assert loc.artifact_location.uri and not loc.artifact_location.uri.startswith("/")
        assert loc.region.start_line >= 1
        assert result.partial_fingerprints
    regions = [
        (
            r.locations[0].physical_location.artifact_location.uri,
            r.locations[0].physical_location.region.start_line,
            r.locations[0].physical_location.region.end_line,
        )
        for r in run.results[:3]
    ]
    # ranges span start..end; a comment on a deleted line shows where the deletion is in the new file
    assert regions == [("src/app.py", 12, 12), ("src/app.py", 13, 15), ("src/old%20name.py", 6, 6)]
    assert "deleted line 7" in run.results[2].message.text
    raw = json.loads(text)
    assert (
        raw["$schema"].endswith("sarif-2.1.0.json")
        and raw["runs"][0]["results"][0]["ruleId"] == "revbot/review-comment"
    )


def test_rdjson_diagnostics():
    data = json.loads(formats.to_rdjson(sample_review()))
    assert data["source"]["name"] == "revbot"
    first = data["diagnostics"][1]
    assert first["location"] == {"path": "src/app.py", "range": {"start": {"line": 13}, "end": {"line": 15}}}
    assert first["severity"] == "INFO" and first["source"]["name"] == "revbot" and first["message"].startswith("Range")
    assert len(data["diagnostics"]) == 3


def _check_schema(value, schema, where="$"):
    """The subset of JSON Schema the create-review request body uses (jsonschema is not installed)."""
    kind = schema.get("type")
    types = {"object": dict, "array": list, "string": str, "integer": int}
    if kind:
        assert isinstance(value, types[kind]) and not (kind == "integer" and isinstance(value, bool)), where
    if "enum" in schema:
        assert value in schema["enum"], where
    if kind == "object":
        for key in schema.get("required", []):
            assert key in value, f"{where}.{key} is required"
        for key, item in value.items():
            assert key in schema["properties"], f"{where}.{key} is not in the schema"
            _check_schema(item, schema["properties"][key], f"{where}.{key}")
    if kind == "array":
        for i, item in enumerate(value):
            _check_schema(item, schema["items"], f"{where}[{i}]")


def test_github_payload_matches_the_create_review_schema(shared_dir):
    spec = json.loads((shared_dir / "fixtures/github/openapi/paths.pulls-create-review.requestBody.json").read_text())
    schema = spec["requestBody"]["content"]["application/json"]["schema"]
    payload = github_review_payload(sample_review(), "a" * 40)
    _check_schema(payload, schema)
    assert payload["commit_id"] == "a" * 40 and payload["event"] == "COMMENT"
    assert [
        (c["path"], c["line"], c["side"], c.get("start_line"), c.get("start_side")) for c in payload["comments"]
    ] == [
        ("src/app.py", 12, "RIGHT", None, None),
        ("src/app.py", 15, "RIGHT", 13, "RIGHT"),
        ("src/old name.py", 7, "LEFT", None, None),
    ]
    for c, original in zip(payload["comments"], sample_review().comments):
        assert extract_fingerprints(c["body"]) == [comment_fingerprint(original)]
    assert "@\u200balice" in payload["comments"][1]["body"] and "@alice" not in payload["comments"][1]["body"]
    body = payload["body"]
    assert "`src/app.py` line 99" in body and "@\u200bbob" in body  # unanchored comments go to the body
    assert "`logo.png`: binary file" in body and "`big.py` (1 hunk): token budget" in body
    assert extract_fingerprints(body) == [comment_fingerprint(sample_review().unanchored[0])]
    assert json.loads(formats.to_github(sample_review(), "b" * 40))["commit_id"] == "b" * 40


def test_known_fingerprints_are_not_posted_again_and_overflow_goes_to_the_body():
    review = sample_review()
    known = [comment_fingerprint(review.comments[0]), comment_fingerprint(review.unanchored[0])]
    payload = github_review_payload(review, known_fingerprints=known, max_inline=1)
    assert [c["line"] for c in payload["comments"]] == [15]
    assert "line 7 (old file)" in payload["body"] and "line 99" not in payload["body"]
    assert "commit_id" not in payload


def test_fingerprint_survives_line_shifts_but_not_other_code_or_words():
    a = ReviewComment("a.py", 10, RIGHT, "Use a context manager.", None, "    fh = open(p)", 10)
    moved = ReviewComment("a.py", 14, RIGHT, "Use a  context manager.\n", None, "fh = open(p)   ", 14)
    assert comment_fingerprint(a) == comment_fingerprint(moved)
    assert comment_fingerprint(a) != fingerprint("a.py", "fh = open(q)", a.body)
    assert comment_fingerprint(a) != fingerprint("b.py", a.code, a.body)
    assert comment_fingerprint(a) != fingerprint("a.py", a.code, "Use a with block.")
    posted = formats.github_comment_body(a)
    assert fingerprint("a.py", a.code, posted) == comment_fingerprint(a)  # the posted text maps back to it
    assert extract_fingerprints("x <!-- revbot:fp=0123abcd4567ef89 --> y <!--revbot:fp=0123abcd4567ef89-->") == [
        "0123abcd4567ef89"
    ]
    assert extract_fingerprints(None) == [] and extract_fingerprints("<!-- revbot:fp=XYZ -->") == []


@pytest.mark.parametrize(
    "text, expected",
    [
        ("ask @alice", "ask @\u200balice"),
        ("cc @org/team-a, @bob.", "cc @\u200borg/team-a, @\u200bbob."),
        ("(@carol)", "(@\u200bcarol)"),
        ("mail me at dev@example.com", "mail me at dev@example.com"),
        ("use `@property` here", "use `@property` here"),
        (
            "```python\n@dataclass\nclass A: ...\n```\nthen @dave",
            "```python\n@dataclass\nclass A: ...\n```\nthen @\u200bdave",
        ),
        ("@@ -1 +1 @@ is a hunk header", "@@ -1 +1 @@ is a hunk header"),
    ],
)
def test_mentions_are_neutralised_outside_code(text, expected):
    assert neutralize_mentions(text) == expected


def test_long_bodies_are_capped_with_a_marker_and_closed_fences():
    body = "intro\n```suggestion\n" + "x = 1\n" * 5000
    out = cap_length(body)
    assert len(out) <= MAX_COMMENT_CHARS and out.endswith(formats.TRUNCATION_MARKER)
    assert out.count("```") % 2 == 0  # the open suggestion block is closed
    assert cap_length("short") == "short"
    posted = formats.github_comment_body(ReviewComment("a.py", 1, RIGHT, "y" * 100_000, None, "x"))
    assert len(posted) <= MAX_COMMENT_CHARS and extract_fingerprints(posted)
    review = Review(
        skipped=[Skipped(f"f{i}.py", "token budget of 1 tokens spent") for i in range(5000)],
        files_total=5000,
        hunks_total=5000,
    )
    assert len(github_review_payload(review)["body"]) <= formats.MAX_REVIEW_BODY_CHARS


def test_render_dispatch_and_sink():
    import io

    for fmt in formats.FORMATS:
        assert formats.render(sample_review(), fmt)
    with pytest.raises(UsageError, match="unknown format 'xml'"):
        formats.render(sample_review(), "xml")
    stream = io.StringIO()
    formats.StreamSink("json", stream).write(sample_review())
    assert json.loads(stream.getvalue())["source"] == "change.diff"


def test_text_indents_a_body_s_further_lines_under_its_comment_and_keeps_blank_lines_blank():
    review = Review(
        comments=[ReviewComment("a.py", 1, RIGHT, "One.\n\ntwo")],
        unanchored=[ReviewComment("a.py", 30, RIGHT, "Elsewhere.\n\nsecond")],
    )
    assert formats.to_text(review).splitlines()[:8] == [
        "a.py:1: One.",
        "",
        "    two",
        "",
        "Not on a changed line:",
        "  a.py:30: Elsewhere.",
        "",
        "      second",
    ]
