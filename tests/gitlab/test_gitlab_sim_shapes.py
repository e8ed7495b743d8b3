"""The GitLab simulator answers with the recorded responses' fields and types: every key of a
recorded object (``../shared/fixtures/gitlab/rest``) is in the simulator's answer to the same
request, with a value of the same JSON type wherever both are set."""

from __future__ import annotations

import requests
from gitlab_kit import PROJECT, load

OPTIONAL = {"line_range"}  # only on a multi-line note


def mismatches(recorded, served, where="$") -> list[str]:
    """Where ``served`` lacks a key of ``recorded`` or holds another JSON type."""
    if recorded is None or served is None:
        return []
    if isinstance(recorded, dict):
        if not isinstance(served, dict):
            return [f"{where}: object expected, got {type(served).__name__}"]
        out = [f"{where}.{k}: missing" for k in recorded if k not in served and k not in OPTIONAL]
        for k in recorded:
            if k in served:
                out += mismatches(recorded[k], served[k], f"{where}.{k}")
        return out
    if isinstance(recorded, list):
        if not isinstance(served, list):
            return [f"{where}: array expected"]
        return mismatches(recorded[0], served[0], f"{where}[0]") if recorded and served else []
    if isinstance(recorded, bool) or isinstance(served, bool):
        return [] if type(recorded) is type(served) else [f"{where}: {type(served).__name__} for a bool"]
    if isinstance(recorded, (int, float)) != isinstance(served, (int, float)) or isinstance(
        recorded, str
    ) != isinstance(served, str):
        return [f"{where}: {type(served).__name__} where GitLab sends {type(recorded).__name__}"]
    return []


def test_the_comparison_itself_catches_a_missing_field_and_a_wrong_type():
    assert sorted(mismatches({"a": 1, "b": {"c": "x"}}, {"a": "1", "b": {}})) == [
        "$.a: str where GitLab sends int",
        "$.b.c: missing",
    ]


def test_rest_answers_have_the_recorded_fields_and_types(glsim, gitlab_fixtures):
    note = glsim.add_note(PROJECT, 1, "why?", author="rep", file="a.py", line=5)
    glsim.award(PROJECT, 1, note["id"], "thumbsup", user="dev")
    api = f"{glsim.url}/api/v4/projects/{PROJECT.replace('/', '%2F')}"
    mr = f"{api}/merge_requests/1"
    session = requests.Session()
    session.headers["PRIVATE-TOKEN"] = "t"

    def get(url: str, **params):
        answer = session.get(url, params=params, timeout=10)
        assert answer.status_code == 200, (url, answer.text)
        return answer

    rest = gitlab_fixtures / "rest"
    versions = get(f"{mr}/versions").json()
    pairs = {
        "merge_requests/get.gitlab-com-recorded.go-gitlab.json": get(mr).json(),
        "merge_requests/get_minimal_with_diff_refs.go-scm.json": get(mr).json(),
        "merge_requests/versions.gitlab-docs.json": versions,
        "merge_requests/version_single.gitlab-docs.json": get(f"{mr}/versions/{versions[0]['id']}").json(),
        "merge_requests/diffs_page1.go-scm.json": get(f"{mr}/diffs").json(),
        "merge_requests/diffs.go-gitlab.json": get(f"{mr}/diffs").json(),
        "discussions/list_mr_discussions_diffnote.gitlab-docs.json": get(f"{mr}/discussions").json(),
    }
    for name, served in pairs.items():
        assert mismatches(load(rest / name), served) == [], name

    created = session.post(
        f"{mr}/discussions",
        json={"body": "b", "position": {**{k: v for k, v in note["position"].items() if v is not None}}},
        timeout=10,
    )
    assert created.status_code == 201
    assert mismatches(load(rest / "discussions/create_response_minimal.go-scm.json"), created.json()) == []
    refused = session.post(
        f"{mr}/discussions", json={"body": "b", "position": {**note["position"], "new_line": 19}}, timeout=10
    )
    assert refused.status_code == 400 and refused.json() == load(
        rest / "errors/discussion_invalid_position_400.body.json"
    )

    paged = get(f"{mr}/notes", per_page=1)
    recorded = load(rest / "headers/pagination_offset.gitlab-docs.json")["headers"]
    for name in ("link", "x-next-page", "x-page", "x-per-page", "x-prev-page", "x-total", "x-total-pages"):
        assert name in {k.lower() for k in paged.headers}, name
    assert 'rel="next"' in paged.headers["link"] and 'rel="next"' in recorded["link"]
    limits = load(rest / "headers/rate_limit_and_link.go-scm.json")["mockHeaders"]
    for name in limits:
        if name.startswith("RateLimit"):
            assert paged.headers.get(name), name

    glsim.inject_429(1, retry_after=7)
    throttled = session.get(mr, timeout=10)
    documented = load(rest / "headers/rate_limit_429.gitlab-docs.json")
    assert throttled.status_code == documented["status"] and throttled.headers["Retry-After"] == "7"
    for name in documented["headers"]:
        if name != "RateLimit-Name":
            assert throttled.headers.get(name) is not None, name
