"""The demo's sample project: deterministic, self-consistent, one team style, and something for
every harvest filter to do. Harvested here over real HTTP from the simulator."""

from __future__ import annotations

import json
import re

from e2e_kit import TOKEN

from bot.diff import parse_patch
from revbot.dev.demo_data.sample import (
    CI_BOT,
    SECRET_LINE,
    build_demo_pull,
    build_sample_project,
    habits_in,
    pull_files_seed,
    to_seed,
)
from revbot.dev.demo_data.templates import STYLE

# what each habit looks like in code: the line a style comment sits on must show it
HABIT_CODE = {
    "print": re.compile(r"\bprint\("),
    "except": re.compile(r"^\s*except:\s*$"),
    "none": re.compile(r"[!=]= None\b"),
    "mutdef": re.compile(r"=(\[\]|\{\})[,)]"),
    "todo": re.compile(r"# TODO: "),
    "sleep": re.compile(r"\btime\.sleep\("),
    "percent": re.compile(r'" % '),
}


def _line_text(patch: str, path: str, line: int) -> str:
    fd = parse_patch(patch, path)
    hunk = fd.hunk_for(line, "RIGHT")
    assert hunk is not None, f"{path}:{line} is not in the diff"
    return hunk.line_at(line, "RIGHT").text


def test_the_generator_is_deterministic():
    a = json.dumps(to_seed(build_sample_project()), sort_keys=True)
    b = json.dumps(to_seed(build_sample_project()), sort_keys=True)
    assert a == b
    assert a != json.dumps(to_seed(build_sample_project(seed=8)), sort_keys=True)


def test_history_size_and_style_are_what_the_demo_needs(sample_project):
    counts = sample_project.counts()
    assert 40 <= counts["pulls"] <= 60
    for habit in STYLE:
        assert counts.get(f"habit:{habit}", 0) >= 10, f"too few {habit} examples to learn from"
    for pull in sample_project.pulls:
        assert 1 <= len(pull.files) <= 5
        for f in pull.files:
            for hunk in f.hunks:
                assert 3 <= len(hunk.lines) <= 12, hunk.header


def test_every_style_comment_sits_on_a_line_showing_its_habit(sample_project):
    body_to_habit = {body: habit for habit, body in STYLE.items()}
    seen = 0
    for pull in sample_project.pulls:
        patches = {f.filename: f.patch for f in pull.files}
        for c in pull.comments:
            text = _line_text(patches[c.path], c.path, c.line)  # every comment is on a commentable line
            if c.kind == "style":
                assert HABIT_CODE[body_to_habit[c.body]].search(text), (pull.number, c.body, text)
                seen += 1
    assert seen > 100


def test_clean_hunks_show_no_habit(sample_project):
    """Negative examples must really be clean, or the model learns noise."""
    clean = 0
    for pull in sample_project.pulls:
        for f in pull.files:
            for hunk in f.hunks:
                if hunk.habits:
                    continue
                added = [text for kind, text in hunk.lines if kind == "+"]
                for text in added:
                    assert not any(p.search(text) for p in HABIT_CODE.values()), (pull.number, text)
                clean += 1
    assert clean > 50


def test_noise_for_every_harvest_filter_is_present(sample_project):
    counts = sample_project.counts()
    for kind in ("bot", "self", "trivial", "reply", "disliked", "secret"):
        assert counts.get(f"kind:{kind}", 0) >= 1, kind
    bots = [c for c in sample_project.comments() if c.kind == "bot"]
    assert all(c.user == CI_BOT and c.user_type == "Bot" for c in bots)
    selfs = [(p, c) for p in sample_project.pulls for c in p.comments if c.kind == "self"]
    assert all(c.user == p.author for p, c in selfs)
    assert all(
        c.reactions.get("-1", 0) > c.reactions.get("+1", 0) for c in sample_project.comments() if c.kind == "disliked"
    )


def test_demo_pull_has_habits_and_clean_code_and_parses(sample_project):
    pull = build_demo_pull(sample_project)
    assert pull.number == len(sample_project.pulls) + 1
    expected = habits_in(pull)
    assert len(expected) >= 4 and len({h for _, _, h in expected}) >= 4
    hunks = [h for f in pull.files for h in f.hunks]
    assert any(not h.habits for h in hunks)
    for f in pull.files:
        for line, habit in [(ln, h) for p, ln, h in expected if p == f.filename]:
            assert HABIT_CODE[habit].search(_line_text(f.patch, f.filename, line))


def test_revbot_yml_on_the_base_branch_is_valid(sample_project):
    from bot.config import RepoConfig

    config = RepoConfig.from_yaml(sample_project.base_files[".revbot.yml"])
    assert config.enabled and config.max_comments == 10 and "docs/**" in config.ignore_paths


def test_the_simulator_serves_the_history_and_opens_the_demo_pull(sample_sim, sample_project):
    import requests

    headers = {"Authorization": f"token {TOKEN}"}
    repo = requests.get(f"{sample_sim.url}/repos/acme/stockroom", headers=headers, timeout=10)
    assert repo.status_code == 200 and repo.json()["default_branch"] == "main"
    assert (
        requests.get(
            f"{sample_sim.url}/repos/acme/stockroom", headers={"Authorization": "token nope"}, timeout=10
        ).status_code
        == 401
    )
    comments = requests.get(
        f"{sample_sim.url}/repos/acme/stockroom/pulls/comments?per_page=100", headers=headers, timeout=10
    )
    assert 'rel="next"' in comments.headers["Link"]
    assert len(comments.json()) == 100


def test_harvest_drops_every_kind_of_noise_and_scrubs_the_secret(sample_sim, sample_project, tmp_path):
    from adapters.github import GitHubClient
    from adapters.store import Store
    from harvest.mine import harvest_github

    db = tmp_path / "store.db"
    store = Store(db)
    client = GitHubClient(TOKEN, api_url=sample_sim.url)
    try:
        summary = harvest_github(client, store, "acme/stockroom")
    finally:
        client.close()
    dropped = summary.dropped
    for reason in ("bot", "self_comment", "trivial", "downvoted"):
        assert dropped[reason] >= 1, reason
    counts = sample_project.counts()
    assert summary.counts["kept"] == counts["kind:style"] + counts["kind:secret"]
    assert summary.counts["replies"] >= 1
    examples = list(store.iter_examples(repo="acme/stockroom"))
    positives = [e for e in examples if e.comments]
    assert positives and any(not e.comments for e in examples)
    bodies = {c.body for e in positives for c in e.comments}
    assert set(STYLE.values()) <= bodies  # the team's phrases are the training targets
    assert not bodies & {c.body for c in sample_project.comments() if c.kind in ("bot", "trivial", "self", "disliked")}
    store.close()
    secret = SECRET_LINE.split('"')[1]
    assert secret.encode() not in db.read_bytes()
    assert any("<REDACTED>" in e.hunk for e in positives)


def test_demo_pull_files_are_accepted_by_the_simulator(sample_project):
    from revbot.dev.github_sim import GitHubSimulator

    with GitHubSimulator(to_seed(sample_project)) as sim:
        pull = build_demo_pull(sample_project)
        opened = sim.add_pull("acme/stockroom", files=pull_files_seed(pull), title=pull.title, user=pull.author)
    assert opened["pull"]["number"] == pull.number
    assert opened["webhook"]["action"] == "opened"
    assert opened["webhook"]["pull_request"]["head"]["sha"]
