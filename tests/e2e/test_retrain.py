"""`revbot retrain`: the gate metric, and the whole loop against the simulator with real training of
a tiny model — a better candidate is promoted, a deliberately worse one is refused, every decision
is recorded and shown by `revbot models list`."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from bot.examples import Example, ExampleComment
from bot.prompt import PromptComment
from revbot.retrain import METRICS, RetrainBusy, at_least_as_good, metric_value, retrain_lock, review_scores

from e2e_kit import BOT, REPO, TOKEN

HUNK = "@@ -1,2 +1,4 @@\n def f():\n+    print(x)\n+    y = 1\n     return y"
PRINT = "Use the module logger instead of print."


def _example(id_: str, comments: list[tuple[int, str]]) -> Example:
    return Example(id_, REPO, 1, "a.py", HUNK, [ExampleComment(line, "RIGHT", body) for line, body in comments])


def _prediction(id_: str, comments: list[tuple[int, str]]) -> SimpleNamespace:
    return SimpleNamespace(example_id=id_, comments=[PromptComment(line, "RIGHT", body) for line, body in comments])


# --------------------------------------------------------------------------- the gate metric


def test_review_f1_rewards_the_right_words_on_the_right_line_only():
    examples = [_example("pos", [(2, PRINT)]), _example("neg", [])]
    perfect = review_scores(examples, [_prediction("pos", [(2, PRINT)]), _prediction("neg", [])])
    assert perfect == {"review_precision": 1.0, "review_recall": 1.0, "review_f1": 1.0}

    wrong_line = review_scores(examples, [_prediction("pos", [(3, PRINT)]), _prediction("neg", [])])
    assert wrong_line["review_f1"] == 0.0

    silent = review_scores(examples, [_prediction("pos", []), _prediction("neg", [])])
    assert silent["review_recall"] == 0.0 and silent["review_precision"] is None and silent["review_f1"] == 0.0

    noisy = review_scores(examples, [_prediction("pos", [(2, PRINT)]), _prediction("neg", [(2, "Rename this.")])])
    assert noisy["review_recall"] == 1.0 and noisy["review_precision"] == 0.5
    assert 0.6 < noisy["review_f1"] < 0.7

    paraphrase = review_scores(examples, [_prediction("pos", [(2, "Use a logger, not print.")]), _prediction("neg", [])])
    assert 0.0 < paraphrase["review_f1"] < 1.0


def test_the_gate_promotes_ties_and_knows_which_way_is_better():
    assert at_least_as_good(0.5, 0.5, "review_f1")
    assert at_least_as_good(0.6, 0.5, "review_f1") and not at_least_as_good(0.4, 0.5, "review_f1")
    assert at_least_as_good(1.2, 2.0, "answer_loss") and not at_least_as_good(2.5, 2.0, "answer_loss")
    assert not at_least_as_good(0.2, 0.1, "parse_failure_rate")
    assert not at_least_as_good(None, 0.1, "review_f1")  # nothing measured never beats something
    assert at_least_as_good(0.0, None, "review_f1")


def test_metric_value_reads_eval_metrics_and_derives_line_f1():
    report = SimpleNamespace(metric=lambda system, name: {"line_precision": 0.5, "line_recall": 1.0, "bleu4": 12.0}[name])
    assert metric_value(report, "tuned", "bleu4") == 12.0
    assert metric_value(report, "tuned", "line_f1") == pytest.approx(2 / 3)
    assert "review_f1" in METRICS and "answer_loss" in METRICS


def test_a_second_retrain_on_the_same_models_folder_is_refused(tmp_path):
    with retrain_lock(tmp_path):
        with pytest.raises(RetrainBusy, match="another `revbot retrain` is running"):
            with retrain_lock(tmp_path):
                pass


# --------------------------------------------------------------------------- the loop, for real


def _cli(args: list[str], env: dict[str, str]) -> tuple[int, str]:
    from revbot.cli import cli

    result = CliRunner().invoke(cli, args, env=env, catch_exceptions=False)
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def loop(sample_sim, tiny_llama, tmp_path_factory):
    """Environment of a team running revbot against the simulator: store, models folder, token."""
    home = tmp_path_factory.mktemp("retrain")
    env = {
        "REVBOT_DB": str(home / "revbot.db"), "REVBOT_MODELS_DIR": str(home / "models"),
        "REVBOT_GITHUB_TOKEN": TOKEN, "REVBOT_GITHUB_API_URL": sample_sim.url, "GITHUB_TOKEN": "",
    }
    return SimpleNamespace(home=home, env=env, sim=sample_sim, base=str(tiny_llama))


# A candidate that learns: a high learning rate and the output layer adapted (the tiny base is random).
GOOD = ["--max-steps", "30", "--lr", "1e-2", "--batch-size", "2", "--max-length", "1024",
        "--target-modules", "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj,lm_head"]
# A deliberately worse candidate: one step at a negligible learning rate, i.e. the untrained base.
WORSE = ["--max-steps", "1", "--lr", "1e-7", "--batch-size", "2", "--max-length", "1024"]
FAST_EVAL = ["--max-new-tokens", "12", "--quiet"]


def _decisions(loop) -> list[dict]:
    code, out = _cli(["models", "list", "--json"], loop.env)
    assert code == 0, out
    return json.loads(out)["decisions"]


@pytest.mark.slow
def test_retrain_promotes_a_better_candidate_and_refuses_a_worse_one(loop):
    # 1. first run: harvests the repository, trains, nothing is current -> promoted, default gate metric
    code, out = _cli(["retrain", REPO, "--base-model", loop.base, *WORSE, *FAST_EVAL, "--json"], loop.env)
    assert code == 0, out
    first = json.loads(out)
    assert first["promoted"] and first["candidate"] == "v1" and first["incumbent"] is None
    assert first["metric"] == "review_f1" and first["harvests"][0]["kept"] > 50

    # 2. new team reviews arrive: one on GitHub (harvested incrementally), one recorded by the service
    #    from its webhook; both must reach the store before the candidate is trained
    from bot.store import Store
    from webhooks.jobs import Job
    from webhooks.recorder import CommentRecorder

    added = loop.sim.add_comments(REPO, 3, [{"path": _first_path(loop.sim, 3), "line": _first_line(loop.sim, 3),
                                             "body": "Prefer f-strings.", "user": "maria-k"}])
    recorded = loop.sim.add_comments(REPO, 5, [{"path": _first_path(loop.sim, 5), "line": _first_line(loop.sim, 5),
                                                "body": "Use the module logger instead of print.", "user": "devon-r"}])
    store = Store(loop.env["REVBOT_DB"])
    hook = dict(recorded["webhooks"][0], pr_author="someone-else")
    CommentRecorder(store)(Job(1, "comment", "k", REPO, 5, None, "running", hook))
    assert store.get_comment(recorded["comments"][0]["id"]).source == "webhook"
    assert 5 in store.pending_prs(REPO)

    # 3. a better candidate (trained for real) against the untrained v1 -> promoted
    code, out = _cli(["retrain", *GOOD, "--metric", "answer_loss", *FAST_EVAL, "--json"], loop.env)
    assert code == 0, out
    second = json.loads(out)
    assert second["harvests"][0]["comments_fetched"] >= 1  # incremental: only what is new
    assert second["harvests"][0]["comments_fetched"] < 10
    assert store.get_comment(added["comments"][0]["id"]) is not None
    assert 5 not in store.pending_prs(REPO)  # the webhook-recorded comment's PR was rebuilt
    assert second["candidate"] == "v2" and second["incumbent"] == "v1"
    assert second["candidate_value"] < second["incumbent_value"]
    assert second["promoted"], second["reason"]
    store.close()

    # 4. a deliberately worse candidate against v2 -> refused, v2 stays current
    code, out = _cli(["retrain", "--no-harvest", *WORSE, "--metric", "answer_loss", *FAST_EVAL, "--json"], loop.env)
    assert code == 0, out
    third = json.loads(out)
    assert third["candidate"] == "v3" and third["incumbent"] == "v2"
    assert not third["promoted"] and "worse than v2" in third["reason"]
    assert second["test_examples"] == third["test_examples"]  # judged on the same held-out PRs

    code, out = _cli(["models", "list"], loop.env)
    assert code == 0
    assert "current: v2" in out
    assert "v2 vs v1 on answer_loss: promoted" in out and "v3 vs v2 on answer_loss: kept v2" in out
    decisions = _decisions(loop)
    assert [d["promoted"] for d in decisions] == [True, True, False]
    assert decisions[-1]["values"]["candidate"] > decisions[-1]["values"]["incumbent"]


def _first_path(sim, number: int) -> str:
    return sim.state["repos"][REPO]["pulls"][str(number)]["files"][0]["filename"]


def _first_line(sim, number: int) -> int:
    from bot.diff import parse_patch

    f = sim.state["repos"][REPO]["pulls"][str(number)]["files"][0]
    fd = parse_patch(f["patch"], f["filename"])
    return next(ln.new_no for h in fd.hunks for ln in h.lines if ln.kind == "+")


def test_retrain_without_a_base_model_or_data_says_what_to_do(tmp_path):
    env = {"REVBOT_DB": str(tmp_path / "empty.db"), "REVBOT_MODELS_DIR": str(tmp_path / "models"), "REVBOT_MODEL": ""}
    code, out = _cli(["retrain", "--no-harvest", "--quiet"], env)
    assert code != 0
    assert "holds no examples" in out and "revbot harvest github" in out
    assert "Traceback" not in out
