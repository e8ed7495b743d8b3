"""The simulator's GitHub behaviour over real HTTP: anchors and 422, pagination, branches,
reactions, auth, the rate budget, the admin API, persistence and the CLI entry point."""

from __future__ import annotations

import base64
import json
import re
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from click.testing import CliRunner
from ghsim_data import PATCH_A, REPO, TOKEN, make_seed

from bot.diff import parse_diff
from bot.errors import DataError
from revbot.dev.github_sim import GitHubSimulator, SimulatorError, github_sim_command, serve_forever

H = {"Authorization": f"token {TOKEN}"}


def api(sim: GitHubSimulator, path: str) -> str:
    return f"{sim.url}/repos/{REPO}{path}"


def head_sha(sim: GitHubSimulator, number: int = 1) -> str:
    return requests.get(api(sim, f"/pulls/{number}"), headers=H).json()["head"]["sha"]


def counts(sim: GitHubSimulator) -> tuple[int, int]:
    state = sim.state["repos"][REPO]
    return len(state["review_comments"]), len(state["reviews"])


# ----------------------------------------------------------------- reviews and anchors


def test_review_with_a_line_outside_the_diff_is_refused_and_creates_nothing(sim):
    before = counts(sim)
    answer = requests.post(
        api(sim, "/pulls/1/reviews"),
        headers=H,
        json={
            "commit_id": head_sha(sim),
            "event": "COMMENT",
            "body": "two comments",
            "comments": [
                {"path": "a.py", "line": 3, "body": "fine"},
                {"path": "a.py", "line": 40, "side": "RIGHT", "body": "not in the diff"},
                {"path": "nope.py", "line": 1, "body": "no such file"},
            ],
        },
    )
    assert answer.status_code == 422
    body = answer.json()
    assert body["message"] == "Unprocessable Entity" and body["documentation_url"].startswith("https://docs.github.com")
    assert [(e["index"], e["path"], e.get("line"), e["message"]) for e in body["errors"]] == [
        (1, "a.py", 40, "Pull request review thread line must be part of the diff"),
        (2, "nope.py", None, "Path could not be resolved"),
    ]
    assert counts(sim) == before


@pytest.mark.parametrize(
    "comment, message",
    [
        ({"path": "a.py", "line": 5, "side": "LEFT", "body": "old file has 4 lines"}, "must be part of the diff"),
        ({"path": "b.py", "line": 21, "start_line": 2, "body": "spans two hunks"}, "same hunk"),
        ({"path": "b.py", "line": 20, "start_line": 21, "body": "backwards"}, "precede"),
        ({"path": "a.py", "line": 3, "side": "UP", "body": "bad side"}, "LEFT or RIGHT"),
        ({"path": "a.py", "line": 3}, "Body can't be blank"),
    ],
)
def test_each_kind_of_bad_inline_comment_gets_a_422(sim, comment, message):
    answer = requests.post(
        api(sim, "/pulls/1/reviews"), headers=H, json={"event": "COMMENT", "body": "x", "comments": [comment]}
    )
    assert answer.status_code == 422
    assert any(message in e["message"] for e in answer.json()["errors"])


def test_good_review_creates_its_comments_with_github_fields(sim):
    sha = head_sha(sim)
    answer = requests.post(
        api(sim, "/pulls/1/reviews"),
        headers=H,
        json={
            "commit_id": sha,
            "event": "COMMENT",
            "body": "summary",
            "comments": [
                {"path": "a.py", "line": 3, "side": "RIGHT", "body": "y?"},
                {"path": "a.py", "line": 2, "side": "LEFT", "body": "old x"},
                {"path": "b.py", "line": 22, "start_line": 20, "body": "range"},
                {"path": "b.py", "position": 6, "body": "legacy position"},
            ],
        },
    )
    assert answer.status_code == 200, answer.text
    review = answer.json()
    assert review["state"] == "COMMENTED" and review["commit_id"] == sha and review["body"] == "summary"
    assert review["user"]["login"] == "revbot-sim"
    made = [
        c
        for c in requests.get(api(sim, "/pulls/1/comments"), headers=H).json()
        if c["pull_request_review_id"] == review["id"]
    ]
    assert [(c["path"], c["line"], c["side"], c["start_line"]) for c in made] == [
        ("a.py", 3, "RIGHT", None),
        ("a.py", 2, "LEFT", None),
        ("b.py", 22, "RIGHT", 20),
        ("b.py", 20, "RIGHT", None),
    ]
    first = made[0]
    assert first["diff_hunk"] == "@@ -1,4 +1,5 @@\n import os\n-x = 1\n+x = 2\n+y = 3"
    assert first["position"] == 4 and first["original_line"] == 3 and first["commit_id"] == sha
    assert first["html_url"].endswith(f"/acme/widgets/pull/1#discussion_r{first['id']}")
    assert first["reactions"]["total_count"] == 0 and first["subject_type"] == "line"
    assert made[2]["diff_hunk"].startswith("@@ -20,3 +20,4 @@ def g():") and made[2]["start_side"] == "RIGHT"
    assert made[3]["position"] == 6  # second hunk: its header counts as a diff line
    listed = requests.get(api(sim, "/pulls/1/reviews"), headers=H).json()
    assert review["id"] in [r["id"] for r in listed]


def test_single_comment_and_replies(sim):
    sha = head_sha(sim)
    new = requests.post(
        api(sim, "/pulls/1/comments"),
        headers=H,
        json={"body": "hm", "commit_id": sha, "path": "c.txt", "line": 2, "side": "RIGHT"},
    )
    assert new.status_code == 201 and new.json()["line"] == 2 and "in_reply_to_id" not in new.json()
    bad = requests.post(
        api(sim, "/pulls/1/comments"), headers=H, json={"body": "hm", "commit_id": sha, "path": "c.txt", "line": 9}
    )
    assert bad.status_code == 422
    no_commit = requests.post(api(sim, "/pulls/1/comments"), headers=H, json={"body": "hm", "path": "c.txt", "line": 2})
    assert no_commit.status_code == 422
    reply = requests.post(api(sim, "/pulls/1/comments"), headers=H, json={"body": "ok", "in_reply_to": 501}).json()
    assert reply["in_reply_to_id"] == 501 and (reply["path"], reply["line"]) == ("a.py", 3)
    reply2 = requests.post(api(sim, "/pulls/1/comments/501/replies"), headers=H, json={"body": "again"})
    assert reply2.status_code == 201 and reply2.json()["in_reply_to_id"] == 501
    assert requests.post(api(sim, "/pulls/1/comments/999/replies"), headers=H, json={"body": "x"}).status_code == 404


def test_review_needs_a_known_commit_and_a_body_when_requesting_changes(sim):
    assert (
        requests.post(
            api(sim, "/pulls/1/reviews"), headers=H, json={"commit_id": "0" * 40, "event": "COMMENT", "body": "x"}
        ).status_code
        == 422
    )
    answer = requests.post(api(sim, "/pulls/1/reviews"), headers=H, json={"event": "REQUEST_CHANGES", "body": ""})
    assert answer.status_code == 422 and answer.json()["errors"] == ["Review Body can't be blank"]
    approve = requests.post(api(sim, "/pulls/1/reviews"), headers=H, json={"event": "APPROVE"})
    assert approve.json()["state"] == "APPROVED"


# ----------------------------------------------------------------- reads


def test_pagination_link_headers_on_250_comments(sim):
    sim.add_comments(REPO, 1, count=248)  # + the 2 seeded = 250
    pages, url = [], api(sim, "/pulls/1/comments?per_page=100")
    links = []
    while url:
        answer = requests.get(url, headers=H)
        pages.append(answer.json())
        rels = {rel: target for target, rel in re.findall(r'<([^>]+)>; rel="(\w+)"', answer.headers.get("Link", ""))}
        links.append(rels)
        url = rels.get("next")
    assert [len(p) for p in pages] == [100, 100, 50]
    assert [sorted(r) for r in links] == [["last", "next"], ["first", "last", "next", "prev"], ["first", "prev"]]
    assert all(t.startswith(sim.url + "/repos/acme/widgets/pulls/1/comments?") for r in links for t in r.values())
    assert "page=3" in links[0]["last"] and "per_page=100" in links[0]["next"]
    ids = [c["id"] for p in pages for c in p]
    assert len(set(ids)) == 250
    default = requests.get(api(sim, "/pulls/1/comments"), headers=H)
    assert len(default.json()) == 30 and 'page=9>; rel="last"' in default.headers["Link"]
    over = requests.get(api(sim, "/pulls/1/comments?per_page=500"), headers=H)
    assert len(over.json()) == 100


def test_diff_media_type_is_a_git_diff_of_the_pr_files(sim):
    answer = requests.get(api(sim, "/pulls/1"), headers=dict(H, Accept="application/vnd.github.v3.diff"))
    assert answer.status_code == 200 and answer.headers["Content-Type"].startswith("text/plain")
    diff = parse_diff(answer.text, "pr1.diff")
    assert [(f.path, f.status) for f in diff.files] == [
        ("a.py", "modified"),
        ("b.py", "modified"),
        ("c.txt", "added"),
        ("new.py", "renamed"),
        ("gone.py", "deleted"),
    ]
    assert diff.files[3].old_path == "old.py"
    assert diff.is_commentable("a.py", 3, "RIGHT") and not diff.is_commentable("a.py", 9, "RIGHT")
    assert "diff --git a/a.py b/a.py" in answer.text


def test_files_endpoint_counts_and_renames(sim):
    files = requests.get(api(sim, "/pulls/1/files"), headers=H).json()
    by_name = {f["filename"]: f for f in files}
    assert (by_name["a.py"]["additions"], by_name["a.py"]["deletions"], by_name["a.py"]["changes"]) == (2, 1, 3)
    assert by_name["a.py"]["patch"] == PATCH_A
    assert by_name["new.py"]["previous_filename"] == "old.py" and "patch" not in by_name["new.py"]
    assert by_name["gone.py"]["status"] == "removed"
    pull = requests.get(api(sim, "/pulls/1"), headers=H).json()
    assert (pull["additions"], pull["deletions"], pull["changed_files"]) == (6, 3, 5)


def test_contents_per_branch_with_head_falling_back_to_base(sim):
    def text(path: str, ref: str | None) -> tuple[int, str | None]:
        answer = requests.get(api(sim, f"/contents/{path}") + (f"?ref={ref}" if ref else ""), headers=H)
        if answer.status_code != 200:
            return answer.status_code, None
        body = answer.json()
        assert body["encoding"] == "base64" and body["type"] == "file"
        return 200, base64.b64decode(body["content"]).decode()

    assert text(".revbot.yml", None) == (200, "max_comments: 3\n")
    assert text(".revbot.yml", "main") == (200, "max_comments: 3\n")
    assert text(".revbot.yml", "feature-1") == (200, "max_comments: 99\n")
    assert text(".revbot.yml", head_sha(sim)) == (200, "max_comments: 99\n")
    assert text("gone.py", "main") == (200, "z\n")
    assert text("gone.py", "feature-1") == (404, None)  # deleted by the PR
    assert text("missing.txt", "main") == (404, None)
    assert (
        requests.get(api(sim, "/contents/a.py?ref=no-such-branch"), headers=H)
        .json()["message"]
        .startswith("No commit found for the ref")
    )


def test_pull_lists_filter_and_sort(sim):
    def numbers(query: str) -> list[int]:
        return [p["number"] for p in requests.get(api(sim, f"/pulls{query}"), headers=H).json()]

    assert numbers("") == [1]
    assert numbers("?state=closed") == [2]
    assert numbers("?state=all") == [1, 2]
    assert numbers("?state=all&direction=asc") == [2, 1]
    listed = requests.get(api(sim, "/pulls?state=all"), headers=H).json()[0]
    assert "mergeable" not in listed and "merged" not in listed  # detail-only fields, as on GitHub
    assert requests.get(api(sim, "/pulls?state=weird"), headers=H).status_code == 422


def test_repo_wide_comments_sort_direction_and_since(sim):
    sim.add_comments(
        REPO, 2, [{"path": "a.py", "line": 2, "body": "late", "user": "dave", "created_at": "2024-03-01T00:00:00Z"}]
    )

    def ids(query: str) -> list[int]:
        return [c["id"] for c in requests.get(api(sim, f"/pulls/comments{query}"), headers=H).json()]

    oldest_first = ids("?sort=created&direction=asc")
    assert oldest_first[:2] == [501, 502] and len(oldest_first) == 3
    assert ids("?sort=created&direction=desc") == oldest_first[::-1]
    assert ids("?since=2024-01-03T00:00:00Z") == oldest_first[1:]
    assert requests.get(api(sim, "/pulls/comments?since=yesterday"), headers=H).status_code == 422


def test_reactions_rollup_and_adding(sim):
    rollup = requests.get(api(sim, "/pulls/comments/501"), headers=H).json()["reactions"]
    assert (rollup["+1"], rollup["-1"], rollup["total_count"]) == (2, 1, 3)
    listed = requests.get(api(sim, "/pulls/comments/501/reactions"), headers=H).json()
    assert sorted(r["content"] for r in listed) == ["+1", "+1", "-1"]
    first = requests.post(api(sim, "/pulls/comments/501/reactions"), headers=H, json={"content": "heart"})
    again = requests.post(api(sim, "/pulls/comments/501/reactions"), headers=H, json={"content": "heart"})
    assert (first.status_code, again.status_code) == (201, 200) and first.json()["id"] == again.json()["id"]
    assert requests.get(api(sim, "/pulls/comments/501"), headers=H).json()["reactions"]["heart"] == 1
    assert (
        requests.post(api(sim, "/pulls/comments/501/reactions"), headers=H, json={"content": "love"}).status_code == 422
    )


def test_issue_comments(sim):
    made = requests.post(api(sim, "/issues/1/comments"), headers=H, json={"body": "Review skipped: too big"})
    assert made.status_code == 201 and made.json()["user"]["login"] == "revbot-sim"
    bodies = [c["body"] for c in requests.get(api(sim, "/issues/1/comments"), headers=H).json()]
    assert bodies == ["Thanks!", "Review skipped: too big"]


# ----------------------------------------------------------------- auth and limits


def test_auth_answers(sim):
    assert requests.get(api(sim, ""), headers={"Authorization": "token wrong"}).json()["message"] == "Bad credentials"
    assert requests.get(api(sim, ""), headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert requests.get(api(sim, "")).status_code == 401
    read_only = {"Authorization": "token read-only-token"}
    assert requests.get(api(sim, ""), headers=read_only).status_code == 200
    refused = requests.post(api(sim, "/issues/1/comments"), headers=read_only, json={"body": "x"})
    assert refused.status_code == 403 and "not accessible" in refused.json()["message"]
    assert requests.get(f"{sim.url}/repos/acme/nothing", headers=H).json()["message"] == "Not Found"
    assert requests.get(f"{sim.url}/user", headers=H).json()["login"] == "revbot-sim"


def test_open_simulator_accepts_any_token():
    with GitHubSimulator({"repos": [{"owner": "o", "name": "r"}]}) as sim:
        assert requests.get(f"{sim.url}/repos/o/r", headers={"Authorization": "token anything"}).status_code == 200
        assert requests.get(f"{sim.url}/repos/o/r").status_code == 200


def test_primary_budget_counts_down_and_runs_out(sim):
    sim.set_rate_limit(limit=10, remaining=3, reset_in=600)
    seen = [requests.get(api(sim, ""), headers=H) for _ in range(4)]
    assert [r.status_code for r in seen] == [200, 200, 200, 403]
    assert [r.headers["X-RateLimit-Remaining"] for r in seen[:3]] == ["2", "1", "0"]
    assert seen[3].json()["message"].startswith("API rate limit exceeded for user ID")
    assert seen[0].headers["X-RateLimit-Limit"] == "10" and seen[0].headers["X-RateLimit-Resource"] == "core"
    limit = requests.get(f"{sim.url}/rate_limit", headers=H).json()  # free, like GitHub's
    assert limit["resources"]["core"]["remaining"] == 0 and limit["rate"]["limit"] == 10


def test_faults_match_method_and_path_and_run_out(sim):
    sim.inject("error", count=2, status=502, method="POST", path=r"/reviews$")
    assert requests.get(api(sim, "/pulls/1/reviews"), headers=H).status_code == 200
    codes = [
        requests.post(api(sim, "/pulls/1/reviews"), headers=H, json={"event": "APPROVE"}).status_code for _ in range(3)
    ]
    assert codes == [502, 502, 200]
    sim.inject("429", retry_after=3)
    answer = requests.get(api(sim, ""), headers=H)
    assert answer.status_code == 429 and answer.headers["Retry-After"] == "3"
    sim.inject("disconnect")
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(api(sim, ""), headers=H)
    with pytest.raises(SimulatorError, match="unknown fault kind"):
        sim.inject("explode")
    assert sim.stats()["faults_served"] == 4


def test_transfer_faults_break_a_real_answer(sim):
    import http.client
    import time

    whole = requests.get(api(sim, ""), headers=H).content
    host, port = sim.url.removeprefix("http://").split(":")

    def raw_get() -> tuple[int, int, bytes]:
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        conn.request("GET", f"/repos/{REPO}", headers=H)
        answer = conn.getresponse()
        announced = int(answer.getheader("Content-Length"))
        try:
            body = answer.read()
        except http.client.IncompleteRead as exc:
            body = exc.partial
        conn.close()
        return answer.status, announced, body

    sim.inject("truncated")
    status, announced, body = raw_get()  # a 200 whose JSON stops halfway, length and all
    assert status == 200 and announced == len(body) == len(whole) // 2 and whole.startswith(body)
    sim.inject("cutoff")
    status, announced, body = raw_get()  # the whole length announced, half of it sent
    assert status == 200 and announced == len(whole) and len(body) == len(whole) // 2
    created = sim.inject("slow", method="POST", delay=0.3)
    assert created["delay"] == 0.3
    started = time.monotonic()
    posted = requests.post(api(sim, "/issues/1/comments"), headers=H, json={"body": "late answer"})
    assert posted.status_code == 201 and time.monotonic() - started >= 0.3
    assert sim.stats()["faults_served"] == 3


# ----------------------------------------------------------------- admin API, state, CLI


def test_admin_api_over_http(sim):
    opened = requests.post(
        f"{sim.url}/_sim/pulls",
        json={
            "repo": REPO,
            "title": "New work",
            "user": "erin",
            "head": "feat-x",
            "files": [{"filename": "a.py", "patch": PATCH_A}],
            "head_files": {"a.py": "import os\nx = 2\ny = 3\n"},
        },
    )
    assert opened.status_code == 201, opened.text
    hook = opened.json()["webhook"]
    assert hook["action"] == "opened" and hook["number"] == 3
    assert {"action", "number", "pull_request", "repository", "sender"} <= set(hook)
    assert hook["pull_request"]["head"]["ref"] == "feat-x" and hook["sender"]["login"] == "erin"
    assert requests.get(api(sim, "/pulls/3"), headers=H).json()["title"] == "New work"

    pushed = requests.post(
        f"{sim.url}/_sim/pulls",
        json={
            "repo": REPO,
            "number": 3,
            "files": [{"filename": "c.txt", "status": "added", "patch": "@@ -0,0 +1 @@\n+hi"}],
        },
    ).json()["webhook"]
    assert pushed["action"] == "synchronize" and pushed["before"] != pushed["after"]
    assert pushed["after"] == pushed["pull_request"]["head"]["sha"]

    added = requests.post(f"{sim.url}/_sim/comments", json={"repo": REPO, "pull": 3, "count": 50}).json()
    assert len(added["comments"]) == 50 and added["webhooks"][0]["action"] == "created"
    assert len(list(requests.get(api(sim, "/pulls/3/comments?per_page=100"), headers=H).json())) == 50

    requests.post(f"{sim.url}/_sim/reset-stats")
    requests.post(f"{sim.url}/_sim/faults", json={"kind": "error", "count": 1})
    assert requests.get(api(sim, ""), headers=H).status_code == 500
    requests.get(api(sim, "/pulls/3"), headers=H)
    stats = requests.get(f"{sim.url}/_sim/stats").json()
    assert stats["by_route"] == {"GET /repos/{owner}/{repo}": 1, "GET /repos/{owner}/{repo}/pulls/{pull_number}": 1}
    assert stats["total"] == 2 and stats["faults_served"] == 1
    bad = requests.post(f"{sim.url}/_sim/pulls", json={"repo": "nobody/here", "files": []})
    assert bad.status_code == 422 and "unknown repository" in bad.json()["message"]
    assert requests.post(f"{sim.url}/_sim/seed", data=b"{nope").status_code == 400


def test_installation_appears_in_webhooks_when_an_app_is_configured():
    with GitHubSimulator(make_seed(apps=[{"id": 9, "installations": [77]}])) as sim:
        hook = sim.add_pull(REPO, files=[{"filename": "a.py", "patch": PATCH_A}])["webhook"]
        assert hook["installation"]["id"] == 77


def test_bad_seed_changes_nothing(sim):
    before = sim.state
    with pytest.raises(SimulatorError, match=r"repos\[1\]: a repo needs"):
        sim.seed({"tokens": ["late-token"], "repos": [{"owner": "new", "name": "one"}, {"owner": "x"}]})
    assert sim.state == before
    with pytest.raises(SimulatorError, match="bad seed description"):
        sim.seed({"rate_limit": {"limit": "lots"}})
    assert sim.state == before


def test_bad_seed_is_refused_with_its_location():
    with pytest.raises(SimulatorError, match=r"repos\[0\]: a repo needs 'owner' and 'name'"):
        GitHubSimulator({"repos": [{"name": "x"}]})
    with pytest.raises(SimulatorError, match=r"repos\[0\]\.pulls\[0\]\.files\[0\]: bad patch"):
        GitHubSimulator(
            {
                "repos": [
                    {
                        "owner": "o",
                        "name": "r",
                        "pulls": [{"files": [{"filename": "a.py", "patch": "@@ -1,2 +1,2 @@\n-only one line"}]}],
                    }
                ]
            }
        )


def test_state_file_survives_a_restart_and_holds_no_token(tmp_path):
    state = tmp_path / "sim-state.json"
    with GitHubSimulator(make_seed(), state_path=state) as sim:
        made = requests.post(
            api(sim, "/pulls/1/reviews"),
            headers=H,
            json={"event": "COMMENT", "body": "kept", "comments": [{"path": "a.py", "line": 3, "body": "persisted"}]},
        )
        assert made.status_code == 200
    text = state.read_text()
    assert TOKEN not in text and "read-only-token" not in text
    assert [p.name for p in tmp_path.iterdir()] == [state.name]  # temp files renamed into place
    with GitHubSimulator(state_path=state) as again:
        bodies = [c["body"] for c in requests.get(api(again, "/pulls/1/comments"), headers=H).json()]
        assert "persisted" in bodies
        assert requests.get(api(again, ""), headers={"Authorization": "token wrong"}).status_code == 401


def test_concurrent_reviews_get_distinct_ids(sim):
    def post(i: int) -> int:
        answer = requests.post(
            api(sim, "/pulls/1/reviews"),
            headers=H,
            json={"event": "COMMENT", "body": f"r{i}", "comments": [{"path": "c.txt", "line": 1, "body": f"c{i}"}]},
        )
        return answer.json()["id"]

    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(post, range(24)))
    assert len(set(ids)) == 24
    comments = requests.get(api(sim, "/pulls/1/comments?per_page=100"), headers=H).json()
    assert len(comments) == 2 + 24 and len({c["id"] for c in comments}) == 26


def test_enterprise_style_prefix_is_served(sim):
    answer = requests.get(f"{sim.url}/api/v3/repos/{REPO}/pulls/1/files?per_page=2", headers=H)
    assert answer.status_code == 200 and len(answer.json()) == 2
    assert f'<{sim.url}/api/v3/repos/{REPO}/pulls/1/files?per_page=2&page=2>; rel="next"' in answer.headers["Link"]
    assert answer.json()[0]["contents_url"].startswith(f"{sim.url}/api/v3/")


def test_serve_forever_and_cli(tmp_path):
    seed = tmp_path / "seed.json"
    seed.write_text(json.dumps(make_seed()))
    started: list[GitHubSimulator] = []
    stop = threading.Event()
    ready = threading.Event()
    thread = threading.Thread(
        target=serve_forever,
        kwargs=dict(
            host="127.0.0.1",
            port=0,
            seed_path=str(seed),
            state_path=None,
            tokens=("extra-token",),
            ready=lambda s: (started.append(s), ready.set()),
            stop=stop,
        ),
    )
    thread.start()
    try:
        assert ready.wait(10)
        url = started[0].url
        assert requests.get(f"{url}/repos/{REPO}", headers={"Authorization": "token extra-token"}).status_code == 200
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive()

    broken = tmp_path / "broken.json"
    broken.write_text('{\n  "repos": [\n    {"owner": "o",,}\n  ]\n}\n')
    with pytest.raises(DataError, match=r"broken\.json:3: seed is not valid JSON"):
        serve_forever(port=0, seed_path=str(broken))
    result = CliRunner().invoke(github_sim_command, ["--help"])
    assert (
        result.exit_code == 0
        and "--seed-file" in result.output
        and "--accept-token" in result.output
        and "--state" in result.output
    )


def test_adding_comments_to_an_unknown_repository_or_pull_request_is_a_clear_error(sim):
    before = counts(sim)
    with pytest.raises(SimulatorError, match=r"unknown repository 'nobody/nothing'; seed it first"):
        sim.add_comments("nobody/nothing", 1, count=1)
    with pytest.raises(SimulatorError, match=rf"unknown pull request {REPO}#999"):
        sim.add_comments(REPO, 999, count=1)
    assert counts(sim) == before
