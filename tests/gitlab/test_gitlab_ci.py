"""The CI path on GitLab: the job template users `include:` (valid against GitLab's published CI
schema, running real `revbot review` options), the Code Quality report (`--format codeclimate`,
checked against GitLab's documented field list), and `--post GROUP/PROJECT!IID`."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from gitlab_kit import PROJECT

from adapters.gitlab import GitLabClient
from adapters.publish import parse_target, post_review
from bot.diff import parse_diff
from bot.errors import UsageError
from bot.formats import CODECLIMATE_SEVERITIES, to_codeclimate_data
from bot.review import review_diff

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "ci" / "gitlab" / "revbot-review.gitlab-ci.yml"


@pytest.fixture
def review(glsim):
    from webhook_kit import ScriptedBackend

    gl = GitLabClient("t", url=glsim.url)
    return review_diff(parse_diff(gl.pull_diff(PROJECT, 1)), ScriptedBackend())


def test_the_template_is_valid_gitlab_ci(tmp_path):
    exe = Path(sys.executable).parent / "check-jsonschema"
    tool = str(exe) if exe.exists() else shutil.which("check-jsonschema")
    assert tool, "check-jsonschema is a test dependency"
    done = subprocess.run(
        [tool, "--builtin-schema", "vendor.gitlab-ci", str(TEMPLATE)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_template_runs_real_review_options_and_reports_code_quality():
    from revbot.review_cli import review as review_command

    job = yaml.safe_load(TEMPLATE.read_text())["revbot-review"]
    assert job["rules"] == [{"if": '$CI_PIPELINE_SOURCE == "merge_request_event"'}]
    assert job["artifacts"]["reports"]["codequality"] == "gl-code-quality-report.json"
    script = "\n".join(job["script"])
    line = next(ln for ln in script.splitlines() if ln.strip().startswith("revbot review"))
    words = shlex.split(line)[2:]
    known = {opt for param in review_command.params for opt in param.opts}
    used = {w for w in words if re.match(r"^--?[a-z]", w)}
    assert used and used <= known, used - known
    assert "--format codeclimate -o gl-code-quality-report.json" in line and "${post[@]}" in line
    assert '--post "$CI_PROJECT_PATH!$CI_MERGE_REQUEST_IID"' in script  # only with $GITLAB_TOKEN
    assert job["variables"]["REVBOT_GITLAB_URL"] == "$CI_SERVER_URL"


def test_the_code_quality_report_has_gitlabs_documented_fields(review):
    issues = json.loads(json.dumps(to_codeclimate_data(review)))
    assert len(issues) == len(review.comments) + len(review.unanchored) >= 2
    for issue in issues:  # GitLab's Code Quality field list: all required by its widget
        assert isinstance(issue["description"], str) and issue["description"]
        assert isinstance(issue["check_name"], str) and issue["check_name"]
        assert isinstance(issue["fingerprint"], str) and re.fullmatch(r"[0-9a-f]{8,64}", issue["fingerprint"])
        assert issue["severity"] in CODECLIMATE_SEVERITIES
        location = issue["location"]
        assert isinstance(location["path"], str) and not location["path"].startswith("/")
        assert isinstance(location["lines"]["begin"], int) and location["lines"]["begin"] >= 1
    assert len({i["fingerprint"] for i in issues}) == len(issues)
    assert {(i["location"]["path"], i["location"]["lines"]["begin"]) for i in issues} >= {("a.py", 5), ("c.py", 1)}


def test_post_on_a_merge_request_once_per_head(glsim, review):
    assert parse_target(f"{PROJECT}!1") == (PROJECT, 1) and parse_target("acme/widgets#3") == ("acme/widgets", 3)
    with pytest.raises(UsageError):
        parse_target("acme!x")
    gl = GitLabClient("t", url=glsim.url)
    posted = post_review(gl, PROJECT, 1, review)
    assert posted.skipped is None and posted.inline == 2
    assert len([p for p in glsim.posted if p.get("position")]) == 2
    again = post_review(gl, PROJECT, 1, review)
    assert again.skipped and "already has a revbot review" in again.skipped
