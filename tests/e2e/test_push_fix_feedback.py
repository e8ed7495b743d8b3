"""Issue 14 end to end on the demo's sample project, over real HTTP (GitHub simulator, the webhook
service with its worker, the dataset store, the model registry, `revbot retrain` with a tiny model):

1. a push that fixes one of the flagged lines of a reviewed pull request is reviewed only where it
   changed, the fixed comment's thread is resolved, nothing is posted twice;
2. the team votes the bot's "Prefer f-strings." down: the next version's training data no longer
   holds that comment (its hunks are negatives), the next version's review does not say it, and
   `revbot eval`'s feedback summary shows the acceptance rate of v1's comments;
3. ``/revbot review`` from a maintainer is answered with 👀 and a full review.

v1's reviews are played by a stand-in that writes exactly the team's comment on each habit line
(what a well-trained v1 says on this data; a tiny model trained for seconds cannot), so that the
team has something to react to; v2 is the real tiny model `revbot retrain` trained, served by the
service's own loader after the hot reload.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from pathlib import Path

import pytest
import requests
from e2e_kit import BOT, REPO, TOKEN

from adapters.model import Backend, Generation
from bot.prompt import PROMPT_FORMAT_VERSION, PromptInput

SECRET = "e2e-feedback-secret"
F_STRINGS = "Prefer f-strings."
_ADDED = re.compile(r"^R(\d+) \+(.*)$")
HABIT_CODE = [  # the habit forms of revbot.dev.demo_data.templates.render_slot -> STYLE key
    (re.compile(r"\bprint\(f\""), "print"),
    (re.compile(r"^\s*except:\s*$"), "except"),
    (re.compile(r"[!=]= None\b"), "none"),
    (re.compile(r"=(\[\]|\{\})[,)]"), "mutdef"),
    (re.compile(r"# TODO: "), "todo"),
    (re.compile(r"\btime\.sleep\("), "sleep"),
    (re.compile(r"\" % "), "percent"),
]


class TeamStyleStandIn(Backend):
    """v1 as the team's perfect pupil: the team's comment on every habit line, through the prompt
    contract (``R<line>: <comment>``); remembers which files it was shown."""

    name = "team-style-stand-in"
    prompt_format_version = PROMPT_FORMAT_VERSION
    max_context = 4096

    def __init__(self, seen: list[str]):
        from revbot.dev.demo_data.templates import STYLE

        self.style, self.seen = STYLE, seen

    def generate(self, inputs: list[PromptInput], *, max_new_tokens: int = 256) -> list[Generation]:
        out = []
        for inp in inputs:
            lines = inp.user.split("\n")
            self.seen.append(lines[0].removeprefix("File: "))
            said = [
                f"R{m.group(1)}: {self.style[habit]}"
                for m in (_ADDED.match(x) for x in lines)
                if m
                for pattern, habit in HABIT_CODE
                if pattern.search(m.group(2))
            ]
            out.append(Generation("\n".join(said) or "NO COMMENT", 10, 10, "stop"))
        return out

    def count_tokens(self, text: str) -> int:
        return len(text) // 4 + 1

    def describe(self) -> dict:
        return {"name": self.name}


class Running:
    """The webhook app on a loopback port and its worker pool, as `revbot serve` wires them."""

    def __init__(self, home: Path, sim_url: str, loader):
        from werkzeug.serving import make_server

        from webhooks.app import create_app
        from webhooks.queue import open_queue
        from webhooks.runtime import build_pool
        from webhooks.settings import ServiceConfig

        self.cfg = ServiceConfig.from_env(
            {},
            webhook_secret=SECRET,
            home=home,
            queue=str(home / "queue.db"),
            db=home / "revbot.db",
            models_dir=home / "models",
            github_api_url=sim_url,
            github_token=TOKEN,
            bot_logins=(BOT,),
            max_new_tokens=8,
            github_options={"min_write_interval": 0, "backoff_factor": 0.01, "max_retries": 2},
            worker_lease=30.0,
            reap_interval_s=0.1,
            retry_delay_s=0.05,
            reload_check_s=0.05,
            workers=1,
        )
        self.queue = open_queue(self.cfg.settings.queue, home)
        self.app = create_app(self.cfg, queue=self.queue)
        self.server = make_server("127.0.0.1", 0, self.app, threaded=True)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/webhook"
        self.pool = build_pool(self.cfg, queue=self.queue, loader=loader).start()

    def deliver(self, event: str, payload: dict) -> dict:
        from webhooks.signature import sign

        body = json.dumps(payload).encode()
        answer = requests.post(
            self.url,
            data=body,
            timeout=10,
            headers={
                "X-GitHub-Event": event,
                "X-GitHub-Delivery": str(uuid.uuid4()),
                "Content-Type": "application/json",
                "X-Hub-Signature-256": sign(body, SECRET),
            },
        )
        assert answer.status_code < 300, answer.text
        self.wait_idle()
        return answer.json()

    def wait_idle(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            counts = self.queue.store.counts()
            if not counts["queued"] and not counts["running"] and not any(w.busy.is_set() for w in self.pool.workers):
                return
            assert time.monotonic() < deadline, f"jobs still pending: {counts}"
            time.sleep(0.05)

    def close(self) -> None:
        self.pool.stop(timeout=10)
        self.server.shutdown()
        self.server.server_close()
        self.queue.close()


def _dump(version_dir: Path) -> list[dict]:
    """Every example a version was trained, validated and tested on (its ``data/*.jsonl``)."""
    files = sorted((version_dir / "data").glob("*.jsonl"))
    assert files, f"no data in {version_dir}"
    return [json.loads(line) for f in files for line in f.read_text().splitlines() if line.strip()]


def _bodies(examples: list[dict]) -> list[str]:
    return [c["body"] for e in examples for c in e["comments"]]


@pytest.mark.slow
def test_a_fix_push_then_the_teams_thumbs_down_fade_a_habit_from_the_next_version(tmp_path, tiny_llama):
    from adapters.github import GitHubClient
    from adapters.store import Store
    from adapters.versions import ModelRegistry
    from finetune.evaluate import store_feedback
    from finetune.results import EvalReport, acceptance_lines
    from finetune.train import TrainConfig
    from revbot.dev.demo_data.sample import build_demo_pull, build_sample_project, habits_in, pull_files_seed, to_seed
    from revbot.dev.demo_data.templates import STYLE
    from revbot.dev.github_sim import GitHubSimulator
    from revbot.retrain import retrain
    from webhooks.runtime import default_loader

    project = build_sample_project()
    seed = to_seed(project, tokens=[{"token": TOKEN, "login": BOT, "type": "Bot"}])
    seed["repos"][0]["collaborators"] = {"maria-k": "maintain", "devon-r": "write", "priya-s": "write"}
    home = tmp_path
    store = Store(home / "revbot.db")
    config = TrainConfig(max_steps=2, batch_size=2, max_length=512, quantize="none", lr=1e-2, lora_r=4, lora_alpha=8)
    with GitHubSimulator(seed) as sim:
        gh = GitHubClient(TOKEN, api_url=sim.url, min_write_interval=0)

        # v1: harvested and trained for real; its training data holds the habit
        first = retrain(
            store=store,
            models_dir=home / "models",
            repos=[REPO],
            client=gh,
            base_model=str(tiny_llama),
            config=config,
            max_new_tokens=8,
        )
        assert first.promoted and first.candidate == "v1"
        registry = ModelRegistry(home / "models")
        assert _bodies(_dump(registry.get("v1").path)).count(F_STRINGS) >= 5

        seen: list[str] = []
        service = Running(
            home,
            sim.url,
            lambda v: TeamStyleStandIn(seen) if v is not None and v.name == "v1" else default_loader(service.cfg)(v),
        )
        try:
            demo = build_demo_pull(project)
            opened = sim.add_pull(REPO, files=pull_files_seed(demo), title=demo.title, user=demo.author)
            number = opened["pull"]["number"]
            service.deliver("pull_request", opened["webhook"])
            posted = {(c["path"], c["line"]): c for c in gh.pull_review_comments(REPO, number)}
            assert {(p, n, STYLE[h]) for p, n, h in habits_in(demo)} == {
                (p, n, c["body"].split("\n")[0]) for (p, n), c in posted.items()
            }

            # 1. the author fixes the print() line only; the push is reviewed where it changed
            files = pull_files_seed(demo)
            returns = next(f for f in files if f["filename"] == "stockroom/returns.py")
            returns["patch"] = returns["patch"].replace(
                'print(f"created return_request: {return_request.id}")',
                'logger.info("created return_request", extra={"id": return_request.id})',
            )
            seen.clear()
            pushed = sim.add_pull(REPO, number=number, files=files)
            service.deliver("pull_request", pushed["webhook"])
            assert seen == ["stockroom/returns.py"]  # one hunk changed since the last review: only it
            review = next(r for r in gh.list_reviews(REPO, number) if r["commit_id"] == pushed["pull"]["head"]["sha"])
            assert (
                "only the changes since the last review" in review["body"]
                and "1 of the pull request's 6 hunks" in review["body"]
            )
            threads = {int(t["comments"]["nodes"][0]["fullDatabaseId"]): t for t in gh.review_threads(REPO, number)}
            fixed = posted[("stockroom/returns.py", 7)]["id"]
            assert threads[fixed]["isResolved"] and threads[fixed]["resolvedBy"]["login"] == BOT
            assert [k for k, t in threads.items() if t["isResolved"]] == [fixed]  # the mutdef one on line 4 stays
            after = gh.pull_review_comments(REPO, number)
            fps = [m for c in after for m in re.findall(r"revbot:fp=([0-9a-f]+)", c["body"])]
            assert len(after) == len(posted) and len(fps) == len(set(fps))  # nothing new, nothing twice

            # 2. the team: two thumbs down on "Prefer f-strings.", a thumbs up on the bare-except one
            f_strings = posted[("stockroom/pricing.py", 2)]["id"]
            sim.react(REPO, f_strings, "-1", user="maria-k")
            sim.react(REPO, f_strings, "-1", user="devon-r")
            sim.react(REPO, posted[("stockroom/billing.py", 5)]["id"], "+1", user="priya-s")

            second = retrain(
                store=store, models_dir=home / "models", repos=[REPO], client=gh, config=config, max_new_tokens=8
            )
            assert second.candidate == "v2" and second.feedback["habits"] == ["prefer f-strings"]
            assert second.feedback["negatives_added"] == 1 and second.feedback["comments_removed"] >= 5
            v2_data = _dump(registry.get("v2").path)
            assert F_STRINGS not in _bodies(v2_data)
            voted_down = [e for e in v2_data if e["source"] == "feedback" and not e["comments"]]
            assert [(e["path"], e["meta"]["comment_id"], e["meta"]["model_version"]) for e in voted_down] == [
                ("stockroom/pricing.py", f_strings, "v1")
            ]
            assert '+    subject = "Voucher %s is ready" % voucher.id' in voted_down[0]["hunk"]

            acceptance = store_feedback(home / "revbot.db")["by_version"]
            # v1: the fixed print() (resolved after a change) and the bare except (👍) accepted, f-strings rejected
            assert acceptance == {"v1": {"judged": 3, "accepted": 2, "rejected": 1, "acceptance_rate": 2 / 3}}

            # 3. v2 goes live (the operator's `revbot models promote`; the gate is not what this tests), the
            #    service reloads it between jobs, and a maintainer asks for a full review
            registry.promote("v2")
            asked = sim.add_issue_comment(REPO, number, "/revbot review", user="maria-k")
            service.deliver("issue_comment", asked["webhook"])
            [listed] = [c for c in gh.issue_comments(REPO, number) if c["id"] == asked["comment"]["id"]]
            assert listed["reactions"]["eyes"] == 1
            full = next(
                r for r in gh.list_reviews(REPO, number) if f"revbot:request id={asked['comment']['id']}" in r["body"]
            )
            [job] = [j for j in service.queue.store.find(repo=REPO) if j.plan and j.payload.get("request")]
            assert job.plan["model_version"] == "v2" and "asked for with `/revbot review` by maria-k" in full["body"]
            newest = [c for c in gh.pull_review_comments(REPO, number) if c["id"] not in {x["id"] for x in after}]
            assert all(F_STRINGS not in c["body"] for c in newest) and F_STRINGS not in full["body"]
            text = "\n".join(acceptance_lines(EvalReport("v2", None, [], [], feedback={"by_version": acceptance})))
            assert "v1: 67% accepted (2 of 3 judged, 1 rejected)" in text
        finally:
            service.close()
            gh.close()
