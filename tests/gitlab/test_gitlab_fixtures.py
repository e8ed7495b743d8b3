"""Every recorded GitLab REST answer (``../shared/fixtures/gitlab/rest``, CONSTRUCTED ones aside)
goes through the adapter's translation into the forge port's shapes, and the request bodies the
adapter builds are the recorded ones."""

from __future__ import annotations

import pytest
from gitlab_kit import load

from adapters.gitlab import comments_of_discussion, file_from_diff, position_for, pull_from_mr, unified_section
from bot.diff import parse_diff, parse_patch


def test_every_recorded_rest_file_is_covered(gitlab_fixtures):
    covered = {
        "merge_requests/get.gitlab-com-recorded.go-gitlab.json",
        "merge_requests/get_minimal_with_diff_refs.go-scm.json",
        "merge_requests/versions.gitlab-docs.json",
        "merge_requests/version_single.gitlab-docs.json",
        "merge_requests/diffs_page1.go-scm.json",
        "merge_requests/diffs_page2.go-scm.json",
        "merge_requests/diffs.go-gitlab.json",
        "merge_requests/changes_deprecated.go-scm.json",
        "discussions/list_mr_discussions_diffnote.gitlab-docs.json",
        "discussions/create_response_minimal.go-scm.json",
        "discussions/create_request_bodies.go-scm.json",
        "errors/discussion_invalid_position_400.body.json",
        "errors/discussion_invalid_position_400.variants.json",
        "headers/pagination_offset.gitlab-docs.json",
        "headers/rate_limit_429.gitlab-docs.json",
        "headers/rate_limit_and_link.go-scm.json",
    }
    present = {
        str(p.relative_to(gitlab_fixtures / "rest"))
        for p in (gitlab_fixtures / "rest").rglob("*.json")
        if "CONSTRUCTED" not in p.name
    }
    assert present <= covered, present - covered


@pytest.mark.parametrize("name", ["get.gitlab-com-recorded.go-gitlab.json", "get_minimal_with_diff_refs.go-scm.json"])
def test_recorded_merge_requests_read_as_pulls(gitlab_fixtures, name):
    mr = load(gitlab_fixtures / "rest/merge_requests" / name)
    pull = pull_from_mr(mr)
    assert pull["number"] == mr["iid"] and pull["head"]["sha"] == (mr.get("sha") or mr["diff_refs"]["head_sha"])
    assert pull["base"]["sha"] == mr["diff_refs"]["base_sha"] and pull["state"] in ("open", "closed")
    if "draft" in mr:
        assert pull["draft"] is mr["draft"]


def test_recorded_diffs_become_files_and_a_parseable_unified_diff(gitlab_fixtures):
    folder = gitlab_fixtures / "rest/merge_requests"
    entries = [
        *load(folder / "diffs_page1.go-scm.json"),
        *load(folder / "diffs_page2.go-scm.json"),
        *load(folder / "version_single.gitlab-docs.json")["diffs"],
        *load(folder / "changes_deprecated.go-scm.json")["changes"],
        *load(folder / "diffs.go-gitlab.json"),
    ]
    diff = parse_diff("".join(unified_section(d) for d in entries))
    assert len(diff.files) == len(entries)
    for entry in entries:
        f = file_from_diff(entry)
        assert f["filename"] == entry["new_path"]
        assert f["status"] == (
            "added"
            if entry["new_file"]
            else "removed"
            if entry["deleted_file"]
            else "renamed"
            if entry["renamed_file"]
            else "modified"
        )
    licence = next(f for f in diff if f.path == "LICENSE")  # the version's new file, @@ -0,0 +1,21 @@
    assert licence.status == "added" and sum(len(h.lines) for h in licence.hunks) == 21
    versions = load(folder / "versions.gitlab-docs.json")
    assert versions[0]["id"] > versions[1]["id"]  # latest first: the adapter anchors on versions[0]


def test_the_recorded_diffnote_discussion_reads_as_a_review_comment(gitlab_fixtures):
    discussion = load(gitlab_fixtures / "rest/discussions/list_mr_discussions_diffnote.gitlab-docs.json")[0]
    note = discussion["notes"][0]
    comments = comments_of_discussion(discussion, "g/p", 3, note["position"]["head_sha"], None)
    assert len(comments) == 1
    c = comments[0]
    assert (c["id"], c["path"], c["line"], c["side"], c["start_line"]) == (1128, "package.json", 27, "RIGHT", 10)
    assert c["commit_id"] == note["position"]["head_sha"] and c["user"]["login"] == "root"
    minimal = load(gitlab_fixtures / "rest/discussions/create_response_minimal.go-scm.json")
    assert comments_of_discussion(minimal, "g/p", 1, "x", None) == []  # no position: not a diff thread


def test_position_bodies_are_the_recorded_ones(gitlab_fixtures):
    recorded = load(gitlab_fixtures / "rest/discussions/create_request_bodies.go-scm.json")
    refs = load(gitlab_fixtures / "rest/merge_requests/get_minimal_with_diff_refs.go-scm.json")["diff_refs"]
    rows = [f" o{i}\n" for i in range(1, 13)]
    rows[9] = "-o10\n"  # old line 10 removed
    rows.insert(4, "+n5\n")  # new line 5 added
    patch = "@@ -1,12 +1,12 @@\n" + "".join(rows)
    fd = parse_patch(patch, "README.md")
    added = recorded["added_line_right_side"]
    removed = recorded["removed_line_left_side"]
    assert position_for(refs, fd, {"path": "README.md", "line": 5, "side": "RIGHT"}) == added["position"]
    assert position_for(refs, fd, {"path": "README.md", "line": 10, "side": "LEFT"}) == removed["position"]
    assert position_for(refs, fd, {"path": "README.md", "line": 40, "side": "RIGHT"}) is None


def test_the_recorded_400_bodies_are_recognised_as_a_refused_position(gitlab_fixtures):
    from adapters.gitlab import _BAD_POSITION

    variants = load(gitlab_fixtures / "rest/errors/discussion_invalid_position_400.variants.json")["variants"]
    bodies = [v["body"]["message"] for v in variants]
    bodies.append(load(gitlab_fixtures / "rest/errors/discussion_invalid_position_400.body.json")["message"])
    for message in bodies:
        assert any(word in message for word in _BAD_POSITION)


def test_recorded_rate_limit_and_page_headers_are_what_the_client_reads(gitlab_fixtures):
    throttled = load(gitlab_fixtures / "rest/headers/rate_limit_429.gitlab-docs.json")["headers"]
    assert int(throttled["Retry-After"]) == 30  # python-gitlab waits this long on a 429
    informational = load(gitlab_fixtures / "rest/headers/rate_limit_and_link.go-scm.json")["mockHeaders"]
    assert informational["RateLimit-Remaining"].isdigit() and informational["RateLimit-Limit"].isdigit()
    paged = load(gitlab_fixtures / "rest/headers/pagination_offset.gitlab-docs.json")["headers"]
    assert 'rel="next"' in paged["link"]
