"""GitLab end to end over real HTTP: the GitLab simulator, the webhook service with its worker, the
dataset store. A merge request opens -> its review is posted as positioned discussions and one
summary note -> a redelivery posts nothing -> the team reacts with award emoji -> a fix push is
reviewed incrementally and resolves the thread it fixed -> the reactions are in what `revbot
retrain` learns from."""

from __future__ import annotations

import requests
from gitlab_kit import BASE, PROJECT, deliver, gitlab_service

from adapters.gitlab import GitLabClient
from adapters.store import Store
from bot.formats import REVIEW_MARK, extract_fingerprints
from harvest.feedback import apply_feedback
from harvest.mine import HarvestOptions, harvest_github


def test_review_fix_push_and_reactions_on_gitlab(tmp_path, glsim):
    svc = gitlab_service(tmp_path, glsim)
    try:
        first = deliver(svc, "Merge Request Hook", glsim.merge_request_hook(PROJECT, 1, "open"))
        assert first.status_code == 202 and first.json()["outcome"] == "queued"
        svc.wait_idle()
        positioned = [p for p in glsim.posted if p.get("position")]
        # the scripted model comments on the first added line of each hunk: a.py:5 and c.py:1
        assert sorted((p["position"]["new_path"], p["position"]["new_line"]) for p in positioned) == [
            ("a.py", 5),
            ("c.py", 1),
        ]
        head = glsim.projects[PROJECT]["mrs"][1]["versions"][-1]["head"]
        assert all(p["position"]["head_sha"] == head for p in positioned)
        summary = glsim.posted[-1]
        assert "position" not in summary and f"{REVIEW_MARK}{head} -->" in summary["body"]

        # a redelivery (GitLab's retry after a timeout: same Idempotency-Key) and a second event for the same head
        again = deliver(svc, "Merge Request Hook", glsim.merge_request_hook(PROJECT, 1, "reopen"))
        assert again.json()["outcome"] == "duplicate"
        svc.wait_idle()
        assert len(glsim.posted) == 3

        # the team reacts: 👎 on the c.py comment (an Emoji Hook), a human review comment to learn from
        gl = GitLabClient("t", url=glsim.url)
        bot_notes = {c["path"]: c for c in gl.pull_review_comments(PROJECT, 1) if extract_fingerprints(c["body"])}
        award = glsim.award(PROJECT, 1, bot_notes["c.py"]["id"], "thumbsdown", user="rep")
        reacted = deliver(svc, "Emoji Hook", glsim.emoji_hook(PROJECT, 1, bot_notes["c.py"]["id"], award))
        assert reacted.json()["outcome"] == "queued"
        svc.wait_idle()

        # a teammate answers the bot's c.py comment in its thread (a Note Hook): feedback on that comment
        reply = glsim.add_note(
            PROJECT,
            1,
            "Won't fix: this print is the CLI's output.",
            author="rep",
            reply_to=bot_notes["c.py"]["discussion_id"],
        )
        answered = deliver(svc, "Note Hook", glsim.note_hook(PROJECT, 1, reply["id"]))
        assert answered.json()["outcome"] == "queued"
        svc.wait_idle()
        replies = [f for f in Store(tmp_path / "revbot.db").iter_feedback(PROJECT) if f.kind == "reply"]
        assert [(f.comment_id, f.author) for f in replies] == [(bot_notes["c.py"]["id"], "rep")]

        # a fix push: a.py back as it was, so the a.py thread is outdated and no longer raised
        old = glsim.push(PROJECT, 1, {"a.py": BASE})
        pushed = deliver(svc, "Merge Request Hook", glsim.merge_request_hook(PROJECT, 1, "update", oldrev=old))
        assert pushed.json()["outcome"] == "queued"
        svc.wait_idle()
        threads = {
            t["path"]: t
            for t in gl.review_threads(PROJECT, 1)
            if extract_fingerprints(t["comments"]["nodes"][0]["body"])
        }
        assert threads["a.py"]["isResolved"] and threads["a.py"]["resolvedBy"]["login"] == "revbot"
        assert not threads["c.py"]["isResolved"]
        assert len([p for p in glsim.posted if p.get("position")]) == 2  # nothing posted twice
        fix_summary = glsim.posted[-1]["body"]
        assert "Fixed by this push" in fix_summary and "only the changes since the last review" in fix_summary

        # what retrain reads: the harvest of the project, then the team's verdicts applied
        store = Store(tmp_path / "revbot.db")
        harvest_github(gl, store, PROJECT, HarvestOptions())
        reactions = [f for f in store.iter_feedback(PROJECT) if f.kind == "reactions"]
        assert any(f.comment_id == bot_notes["c.py"]["id"] and '"-1": 1' in f.content for f in reactions)
        used = apply_feedback(list(store.iter_examples(PROJECT)), store.iter_evidence(PROJECT))
        # 👎 on the c.py comment: its hunk becomes a negative example, its text a rejected habit;
        # the a.py comment a push fixed counts as accepted: a positive example with the bot's words
        assert used.negatives_added == 1 and used.positives_added == 1
        assert any("print(1)" in h for h in used.habits)
        [negative] = [e for e in used.examples if e.path == "c.py"]
        assert "+print(1)" in negative.hunk and negative.comments == []
    finally:
        svc.close()


def test_a_review_cut_off_half_way_is_finished_by_the_retry_without_doubles(tmp_path, glsim):
    """GitLab applied the second discussion but its answer was lost (500): the job is retried, and
    the retry posts only what is missing, the summary last."""
    glsim.fail_after_write("/discussions", after=1)
    svc = gitlab_service(tmp_path, glsim)
    try:
        deliver(svc, "Merge Request Hook", glsim.merge_request_hook(PROJECT, 1, "open"))
        counts = svc.wait_idle()
        assert counts["done"] == 1 and counts["failed"] == 0 and glsim.write_faults == []  # the 500 was served
        positioned = [p for p in glsim.posted if p.get("position")]
        assert len(positioned) == 2  # a.py:5 and c.py:1, each once
        fps = [fp for p in glsim.posted for fp in extract_fingerprints(p["body"]) if p.get("position")]
        assert len(fps) == len(set(fps)) == 2
        assert REVIEW_MARK in glsim.posted[-1]["body"] and sum(REVIEW_MARK in p["body"] for p in glsim.posted) == 1
        # the lost answer is counted as GitLab's, not GitHub's
        text = requests.get(svc.url + "/metrics", timeout=5).text
        assert 'revbot_forge_api_errors_total{forge="gitlab",status="500"} 1.0' in text
        assert 'forge="github"' not in text
    finally:
        svc.close()


def test_commands_need_developer_access_and_drafts_wait_until_asked(tmp_path, glsim):
    draft = glsim.add_merge_request(PROJECT, {"b.py": "x = 1\ny = 2\n"}, author="dev", title="Draft: more", draft=True)
    svc = gitlab_service(tmp_path, glsim)
    try:
        deliver(svc, "Merge Request Hook", glsim.merge_request_hook(PROJECT, draft["iid"], "open"))
        svc.wait_idle()
        assert glsim.posted == []  # a draft: skipped (skip_drafts is the default)
        refused = glsim.add_note(PROJECT, draft["iid"], "/revbot review", author="rep")  # Reporter
        asked = glsim.add_note(PROJECT, draft["iid"], "/revbot review", author="dev")  # Developer
        for note in (refused, asked):
            deliver(svc, "Note Hook", glsim.note_hook(PROJECT, draft["iid"], note["id"]))
            svc.wait_idle()
        notes = glsim.projects[PROJECT]["mrs"][draft["iid"]]["notes"]
        assert [a["name"] for a in notes[refused["id"]]["awards"]] == ["confused"]
        assert [a["name"] for a in notes[asked["id"]]["awards"]] == ["eyes"]
        positioned = [p for p in glsim.posted if p.get("position")]
        assert [(p["position"]["new_path"], p["position"]["new_line"]) for p in positioned] == [("b.py", 2)]
        assert "asked for with `/revbot review` by dev" in glsim.posted[-1]["body"]
    finally:
        svc.close()
