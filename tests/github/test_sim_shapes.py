"""The simulator answers with GitHub's shapes: every key of the recorded real exchanges
(../shared/fixtures/github/replay) is in the simulator's JSON for the same endpoint, recursively,
and review comments satisfy GitHub's OpenAPI schema."""

from __future__ import annotations

import ast
import json
import re
import time
from pathlib import Path

import pytest
import requests
from ghsim_data import OPENAPI, REPLAY, REPO, TOKEN
from github.Requester import Requester

from revbot.dev.github_sim import GitHubSimulator

# Keys GitHub sends that the simulator leaves out on purpose: its repositories are never forks.
OMITTED = {"repo": {"parent", "source"}}


def read_exchanges(path: Path) -> list[dict]:
    """The replay format: 11 lines per exchange (protocol, verb, host, port, path, request headers,
    request body, status, response headers, response body, blank)."""
    lines = path.read_text(encoding="utf-8").split("\n")
    out = []
    i = 0
    while i + 9 < len(lines):
        if not lines[i].strip():
            i += 1
            continue
        proto, verb, host, _port, target, req_headers, req_body, status, resp_headers, resp_body = lines[i : i + 10]
        assert proto in ("http", "https"), f"{path.name}:{i + 1}: not an exchange start: {proto!r}"
        out.append(
            {
                "file": path.name,
                "line": i + 1,
                "verb": verb,
                "host": host,
                "path": target,
                "request_headers": ast.literal_eval(req_headers),
                "request_body": None if req_body == "None" else json.loads(req_body),
                "status": int(status),
                "headers": ast.literal_eval(resp_headers),
                "body": json.loads(resp_body) if resp_body.strip() else None,
            }
        )
        i += 11
    return out


ALL = [ex for f in sorted(REPLAY.glob("*.txt")) for ex in read_exchanges(f)]

# recorded (verb, path) -> the kind of answer; the simulator request for each kind is below
KINDS = [
    ("GET", r"/repos/[^/]+/[^/]+", "repo"),
    ("GET", r"/repos/[^/]+/[^/]+/pulls", "pulls"),
    ("GET", r"/repos/[^/]+/[^/]+/pulls/\d+", "pull"),
    ("GET", r"/repos/[^/]+/[^/]+/pulls/\d+/files", "files"),
    ("GET", r"/repos/[^/]+/[^/]+/pulls/\d+/comments", "pull_comments"),
    ("POST", r"/repos/[^/]+/[^/]+/pulls/\d+/comments", "create_comment"),
    ("POST", r"/repos/[^/]+/[^/]+/pulls/\d+/comments/\d+/replies", "reply"),
    ("GET", r"/repos/[^/]+/[^/]+/pulls/comments", "repo_comments"),
    ("GET", r"/repos/[^/]+/[^/]+/pulls/comments/\d+", "comment"),
    ("GET", r"/repos/[^/]+/[^/]+/pulls/\d+/reviews", "reviews"),
    ("GET", r"/repos/[^/]+/[^/]+/pulls/\d+/reviews/\d+", "review"),
    ("POST", r"/repos/[^/]+/[^/]+/pulls/\d+/reviews", "create_review"),
    ("GET", r"/repos/[^/]+/[^/]+/issues/\d+/comments", "issue_comments"),
    ("POST", r"/repos/[^/]+/[^/]+/issues/\d+/comments", "create_issue_comment"),
]


def kind_of(verb: str, target: str) -> str | None:
    path = target.split("?", 1)[0]
    for k_verb, pattern, kind in KINDS:
        if verb == k_verb and re.fullmatch(pattern, path):
            return kind
    return None


def sim_answer(sim: GitHubSimulator, kind: str, recorded: dict) -> requests.Response:
    """Ask the simulator the equivalent question about its seeded repository."""
    h = {"Authorization": f"token {TOKEN}"}
    base = f"{sim.url}/repos/{REPO}"
    head = requests.get(f"{base}/pulls/1", headers=h).json()["head"]["sha"]
    if kind == "create_comment":
        body = (
            {"body": "reply", "in_reply_to": 501}
            if (recorded["request_body"] or {}).get("in_reply_to")
            else {"body": "new", "commit_id": head, "path": "a.py", "line": 3}
        )
        return requests.post(f"{base}/pulls/1/comments", headers=h, json=body)
    if kind == "reply":
        return requests.post(f"{base}/pulls/1/comments/501/replies", headers=h, json={"body": "ok"})
    if kind == "create_review":
        return requests.post(
            f"{base}/pulls/1/reviews",
            headers=h,
            json={"commit_id": head, "event": "APPROVE", "body": "", "comments": []},
        )
    if kind == "create_issue_comment":
        return requests.post(f"{base}/issues/1/comments", headers=h, json={"body": "hi"})
    if kind == "review":
        rid = requests.get(f"{base}/pulls/1/reviews", headers=h).json()[0]["id"]
        return requests.get(f"{base}/pulls/1/reviews/{rid}", headers=h)
    path = {
        "repo": "",
        "pulls": "/pulls?state=all",
        "pull": "/pulls/1",
        "files": "/pulls/1/files",
        "pull_comments": "/pulls/1/comments",
        "repo_comments": "/pulls/comments",
        "comment": "/pulls/comments/501",
        "reviews": "/pulls/1/reviews",
        "issue_comments": "/issues/1/comments",
    }[kind]
    return requests.get(base + path, headers=h)


def missing_keys(recorded, simulated, kind: str, where: str = "") -> list[str]:
    """Keys of ``recorded`` absent from ``simulated``, recursing where both hold objects (lists: first items)."""
    if isinstance(recorded, list) and isinstance(simulated, list):
        if recorded and simulated:
            return missing_keys(recorded[0], simulated[0], kind, where + "[0]")
        return []
    if not (isinstance(recorded, dict) and isinstance(simulated, dict)):
        return []
    out = []
    for key, value in recorded.items():
        if key not in simulated:
            if not (key in OMITTED.get(kind, set()) and where == ""):
                out.append(f"{where}.{key}")
            continue
        out += missing_keys(value, simulated[key], kind, f"{where}.{key}")
    return out


COVERED = [ex for ex in ALL if 200 <= ex["status"] < 300 and ex["body"] and kind_of(ex["verb"], ex["path"])]


def test_replay_parser_reads_every_exchange():
    total_lines = sum(len(f.read_text(encoding="utf-8").rstrip("\n").split("\n")) for f in REPLAY.glob("*.txt"))
    assert len(ALL) >= total_lines // 11
    assert {ex["verb"] for ex in ALL} >= {"GET", "POST"}
    assert all(isinstance(ex["headers"], list) for ex in ALL)
    # the recordings cover the simulator's main endpoints
    assert {kind_of(ex["verb"], ex["path"]) for ex in COVERED} >= {
        "repo",
        "pulls",
        "pull",
        "files",
        "pull_comments",
        "repo_comments",
        "comment",
        "reviews",
        "create_review",
        "create_comment",
        "reply",
        "issue_comments",
        "create_issue_comment",
    }


@pytest.mark.parametrize("exchange", COVERED, ids=lambda ex: f"{ex['file']}:{ex['line']}")
def test_simulator_json_has_every_recorded_key(sim, exchange):
    kind = kind_of(exchange["verb"], exchange["path"])
    answer = sim_answer(sim, kind, exchange)
    assert answer.status_code == exchange["status"], answer.text
    assert missing_keys(exchange["body"], answer.json(), kind) == []


@pytest.mark.parametrize("exchange", COVERED, ids=lambda ex: f"{ex['file']}:{ex['line']}")
def test_simulator_sends_recorded_api_headers(sim, exchange):
    wanted = {
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
        "x-ratelimit-reset",
        "x-ratelimit-used",
        "x-ratelimit-resource",
        "x-github-request-id",
        "etag",
        "content-type",
        "x-github-media-type",
    }
    recorded = {name.lower() for name, _ in exchange["headers"]} & wanted
    answer = sim_answer(sim, kind_of(exchange["verb"], exchange["path"]), exchange)
    assert recorded - {k.lower() for k in answer.headers} == set()
    assert answer.headers["Content-Type"] == "application/json; charset=utf-8"


def test_rate_limit_answers_are_classified_like_the_recorded_ones(sim):
    """PyGithub (and GitHub's docs) tell the limits apart by message; ours must read the same."""
    recorded = {ex["file"]: ex for ex in ALL if ex["status"] == 403}
    secondary = recorded["SpecificExceptions.testAuthenticatedRateLimitExceeded.txt"]
    primary = recorded["SpecificExceptions.testRateLimitExceeded.txt"]
    assert Requester.isSecondaryRateLimitError(secondary["body"]["message"])
    assert Requester.isPrimaryRateLimitError(primary["body"]["message"])
    h = {"Authorization": f"token {TOKEN}"}

    sim.inject("secondary", retry_after=60)
    answer = requests.get(f"{sim.url}/repos/{REPO}", headers=h)
    assert answer.status_code == 403 and answer.headers["Retry-After"] == "60"
    assert Requester.isSecondaryRateLimitError(answer.json()["message"])
    assert set(secondary["body"]) <= set(answer.json())

    sim.inject("primary", reset_in=120)
    answer = requests.get(f"{sim.url}/repos/{REPO}", headers=h)
    assert answer.status_code == 403 and answer.headers["X-RateLimit-Remaining"] == "0"
    assert int(answer.headers["X-RateLimit-Reset"]) >= time.time() + 100
    assert Requester.isPrimaryRateLimitError(answer.json()["message"])
    assert answer.json()["message"].startswith("API rate limit exceeded for ")

    retry = [ex for ex in ALL if ex["file"] == "Retry.testReturnsRepoAfter1Retry.txt"]
    assert [ex["status"] for ex in retry] == [500, 200]
    sim.inject("error")
    assert requests.get(f"{sim.url}/repos/{REPO}", headers=h).status_code == 500
    assert requests.get(f"{sim.url}/repos/{REPO}", headers=h).status_code == 200


def _schema() -> tuple[dict, list[str]]:
    doc = json.loads((OPENAPI / "components.schemas.pull-request-review-comment.json").read_text())
    schema = doc["pull-request-review-comment"]
    return schema["properties"], schema["required"]


def check_against_schema(comment: dict) -> list[str]:
    properties, required = _schema()
    problems = [f"missing {k}" for k in required if k not in comment]
    py = {"integer": int, "string": str, "object": dict, "boolean": bool, "array": list}
    for key, spec in properties.items():
        if key not in comment:
            continue
        value = comment[key]
        if "$ref" in spec:  # user, author_association, reactions: objects except the enum string
            expected = str if spec["$ref"].endswith("author-association") else dict
            nullable = spec["$ref"].endswith("nullable-simple-user")
            if not (isinstance(value, expected) or (nullable and value is None)):
                problems.append(f"{key}: {type(value).__name__} is not {expected.__name__}")
            continue
        if value is None:
            if not spec.get("nullable") and key not in ("line", "original_line", "position", "original_position"):
                problems.append(f"{key}: null but not nullable")
            continue
        wrong_type = spec.get("type") and not isinstance(value, py[spec["type"]])
        if wrong_type or (isinstance(value, bool) and spec.get("type") == "integer"):
            problems.append(f"{key}: {type(value).__name__} is not {spec['type']}")
        if "enum" in spec and value not in spec["enum"]:
            problems.append(f"{key}: {value!r} not in {spec['enum']}")
        if key == "_links":
            for link in spec["required"]:
                if not isinstance(value.get(link, {}).get("href"), str):
                    problems.append(f"_links.{link}.href missing")
    return problems


def test_review_comments_match_the_openapi_schema(sim):
    h = {"Authorization": f"token {TOKEN}"}
    head = requests.get(f"{sim.url}/repos/{REPO}/pulls/1", headers=h).json()["head"]["sha"]
    created = requests.post(
        f"{sim.url}/repos/{REPO}/pulls/1/reviews",
        headers=h,
        json={
            "commit_id": head,
            "event": "COMMENT",
            "body": "see inline",
            "comments": [
                {"path": "b.py", "line": 22, "side": "RIGHT", "body": "range", "start_line": 20},
                {"path": "a.py", "line": 2, "side": "LEFT", "body": "old line"},
            ],
        },
    )
    assert created.status_code == 200, created.text
    comments = requests.get(f"{sim.url}/repos/{REPO}/pulls/comments?per_page=100", headers=h).json()
    assert len(comments) == 4
    for comment in comments:
        assert check_against_schema(comment) == [], comment["id"]
    single = requests.get(f"{sim.url}/repos/{REPO}/pulls/comments/501", headers=h).json()
    assert check_against_schema(single) == []
    # the checker itself catches a wrong shape
    broken = dict(single, side="MIDDLE", id="501")
    del broken["diff_hunk"]
    assert len(check_against_schema(broken)) == 3


def test_key_comparison_notices_a_missing_nested_key(sim):
    """Guard the guard: the recursive comparison reports what a simulator answer lacks."""
    recorded = next(ex for ex in COVERED if kind_of(ex["verb"], ex["path"]) == "comment")
    answer = sim_answer(sim, "comment", recorded).json()
    del answer["diff_hunk"]
    del answer["user"]["login"]
    del answer["_links"]["html"]
    assert missing_keys(recorded["body"], answer, "comment") == [".diff_hunk", ".user.login", "._links.html"]
