"""Review jobs: one pull request head -> at most one review on its forge, never lost, never doubled.

The poster sees only the forge port (``bot.forge``): the job's client comes from the ``Forges``
it is given (``adapters.forges.ForgeClients``, built in ``webhooks.runtime``), and the forge's
refusals come as the port's error kinds. For a job (repo, PR, head sha) the poster

1. reads the PR; a closed PR, a draft (when drafts are skipped) or a head that moved on is
   skipped (for a moved head the job of the new head is queued, in case its event is late);
2. reads ``.revbot.yml`` from the BASE commit, never the head: a PR cannot reconfigure its own
   review. An invalid one does not stop the review: it is done with the default settings and its
   body starts with a short note saying what is wrong (file, line, reason), so the team sees it on
   the PR instead of a review that silently never comes;
3. looks for a review of this head it already posted (a hidden ``revbot:review`` marker in the
   review body): a rerun after a crash or after a 5xx that the forge had in fact applied stops here;
4. decides the range (``webhooks.scope``): after a push to a reviewed PR only the PR's hunks that
   changed since the last reviewed head, the whole diff on the first review, on ``/revbot
   review`` or when a force-push dropped the last reviewed head; globs recorded with ``/revbot
   ignore`` are left out. It reviews that (``bot.review``) once and saves the result as the job's
   plan, so any rerun posts the same comments even if the model was reloaded meanwhile;
5. leaves out every comment whose fingerprint is already on the PR, and posts ONE review (event
   COMMENT) with at most 30 inline comments; the rest, the comments that could not be anchored
   and the files not reviewed go into its body, with the range reviewed and the threads fixed;
6. when the forge refuses anchors (``InvalidPositionError``: GitHub's 422) moves the comments it
   names (all, if it names none) into the body and posts again, so the review itself is never
   lost (GitLab posts comment by comment and turns a refused one into a note itself);
7. settles the bot's threads the push fixed (``webhooks.threads``: resolved through the forge's
   thread API, or an "addressed in <sha>" reply where the credentials may not), and records in the dataset store what it posted (fingerprint,
   hunk, model version) and what people did with its earlier comments (``bot.feedback``).

A push that changes nothing reviewed and fixes no thread posts nothing.

``--dry-run`` logs the review instead of posting it.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from adapters.model import OpenAIBackend
from adapters.store import BotPost, ReviewRecord, Store
from bot.config import CONFIG_NAMES, RepoConfig
from bot.diff import Diff, FileDiff, parse_diff, parse_patch
from bot.errors import DataError, ForgeError, InvalidPositionError
from bot.feedback import refresh_evidence
from bot.forge import Forge, Forges, forge_name
from bot.formats import comment_fingerprint, extract_fingerprints, github_review_payload
from bot.review import Review, ReviewComment, ReviewOptions, review_diff
from bot.secrets import scrub_text
from webhooks.jobs import DONE, REVIEW, SKIPPED, Job, NewJob, review_key
from webhooks.metrics import Metrics
from webhooks.scope import choose_scope
from webhooks.settings import ServiceConfig
from webhooks.threads import feedback_rows, fixed_threads, own_logins, read_threads, settle, thread_summary
from webhooks.worker import JobContext, JobResult, ModelHolder, TransientError

log = logging.getLogger(__name__)

MAX_INLINE = 30  # inline comments per create-review call
MAX_REFUSED_ROUNDS = 3
HEADER = "**revbot review**"


REVIEW_MARK = "<!-- revbot:review sha="


def review_marker(head_sha: str) -> str:
    """Hidden in every review body: says which head this review covers."""
    return f"{REVIEW_MARK}{head_sha} -->"


CONFIG_NOTE = "**Note:** `.revbot.yml` on the base branch is invalid, so this review used the default settings."


def request_marker(comment_id: Any) -> str:
    """Hidden in a review posted for a ``/revbot review`` command: which comment asked for it."""
    return f"<!-- revbot:request id={int(comment_id)} -->"


def plan_info(plan: dict) -> dict[str, Any]:
    """What a job's result says about the range it reviewed."""
    return {
        "incremental": bool(plan.get("incremental")),
        "since": plan.get("since"),
        "hunks_in_scope": plan.get("hunks_in_scope"),
        "scope_reason": plan.get("scope_reason"),
    }


def config_notice(error: str) -> str:
    """The review-body note for an invalid base ``.revbot.yml``. The error quotes text from that
    file (attacker-controlled): it is shown in a code span (no markdown, links or @mentions) and
    cannot carry a hidden revbot marker that would make a later review look already posted."""
    text = " ".join(error.split())[:400].replace("<!--", "<!\u200b--")
    fence = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    return f"{CONFIG_NOTE}\n{fence} {text} {fence}"


_FILE_STATUS = {"removed": "deleted", "changed": "modified", "unchanged": "modified"}


def read_pull_diff(gh: Forge, repo: str, number: int, source: str) -> Diff:
    """The PR's diff; when the forge will not render it (406: too large), rebuilt from the per-file
    patches of the files API, where files without a patch (binary, or too large) have no hunks and
    are reported as not reviewed."""
    try:
        return parse_diff(gh.pull_diff(repo, number), source)
    except ForgeError as exc:
        if exc.status != 406:
            raise
    log.info("%s: diff too large to render, using the files API", source)
    files = []
    for f in gh.pull_files(repo, number):
        status = _FILE_STATUS.get(f.get("status") or "modified", f.get("status") or "modified")
        fd = parse_patch(
            f.get("patch"),
            f["filename"],
            f.get("previous_filename"),
            status,
            source=f"{source} {f['filename']}",
            strict=False,
        )
        fd.is_binary = not f.get("patch") and status not in ("renamed", "copied", "deleted") and not f.get("changes")
        files.append(fd)
    return Diff(files, source)


class ReviewPoster:
    """Job handler for ``review`` jobs."""

    def __init__(
        self,
        cfg: ServiceConfig,
        forges: Forges,
        models: ModelHolder,
        metrics: Metrics,
        store: Callable[[], Store] | None = None,
    ):
        self.cfg, self.forges, self.models, self.metrics = cfg, forges, models, metrics
        self.store = store  # opens the dataset store: /revbot ignore globs, posted comments, feedback
        self._generate_lock = threading.Lock()  # one local generation at a time: a model is not re-entrant

    def __call__(self, job: Job, ctx: JobContext) -> JobResult:
        started = time.monotonic()
        gh = self.forges.client(job.payload.get("installation_id"), job.forge)
        repo, number, head = job.repo, job.pr, job.head_sha or ""
        pr = gh.get_pull(repo, number)
        if pr.get("state") != "open":
            return JobResult(SKIPPED, {"reason": f"pull request is {pr.get('state')}"})
        current = (pr.get("head") or {}).get("sha")
        if current and current != head:
            seen, sent = str(pr.get("updated_at") or ""), str(job.payload.get("updated_at") or "")
            if seen and sent and seen < sent:  # GitHub's API has not caught up with the push yet
                raise TransientError(
                    f"{repo}#{number}: the API still shows head {current[:12]}, older than the event's {head[:12]}"
                )
            return self._moved_on(job, ctx, current)
        base = pr.get("base") or {}
        config, notice = self._repo_config(gh, repo, base.get("sha") or base.get("ref") or job.payload.get("base_sha"))
        if not config.enabled:
            return JobResult(SKIPPED, {"reason": f"disabled by {config.source}"})
        if pr.get("draft") and config.skip_drafts and not job.payload.get("full"):
            return JobResult(SKIPPED, {"reason": "draft pull request"})

        reviews = gh.list_reviews(repo, number)
        comments = gh.pull_review_comments(repo, number)
        marker = request_marker(job.payload["request"]) if job.payload.get("request") else review_marker(head)
        for existing in reviews:
            if marker in (existing.get("body") or ""):  # a rerun after the review was posted
                plan = job.plan if isinstance(job.plan, dict) and "review" in job.plan else None
                if plan is not None:
                    self._after(job, gh, comments, Review.from_dict(plan["review"]), plan)
                return JobResult(DONE, {"review_id": existing.get("id"), "already_posted": True})

        review, plan = self._plan(job, ctx, gh, config, reviews, base.get("sha"))
        ctx.check()  # superseded while the model ran: post nothing
        known = set(extract_fingerprints("\n".join(r.get("body") or "" for r in reviews)))
        for comment in comments:
            known.update(extract_fingerprints(comment.get("body")))
        state = read_threads(gh, repo, number, comments, own_logins(gh, self.cfg.settings.bot_logins))
        fixed = fixed_threads(state, review)
        earlier = any(REVIEW_MARK in (r.get("body") or "") for r in reviews)
        new_inline = [c for c in review.comments if comment_fingerprint(c) not in known]
        new_notes = [c for c in review.unanchored if comment_fingerprint(c) not in known]
        noted = notice is None or any(notice in (r.get("body") or "") for r in reviews)
        if earlier and not new_inline and not new_notes and noted and not fixed and not job.payload.get("full"):
            self._record(job, gh, state, comments, [], plan, [])
            return JobResult(DONE, {"nothing_new": True, "known": len(known), **plan_info(plan)})
        notes = [plan.get("range_note") or "", thread_summary(len(fixed), state.thread_api) or ""]
        result = self._post(job, ctx, gh, review, known, notice, [n for n in notes if n])
        if result.info.get("dry_run"):
            return result
        settled = settle(gh, repo, number, head, fixed, state.thread_api)
        self._record(job, gh, state, comments, fixed, plan, [*new_inline, *new_notes])
        self._record_review(job, review, plan, result, time.monotonic() - started)
        result.info.update(plan_info(plan), **settled)
        return result

    def _after(self, job: Job, gh: Forge, comments: list[dict], review: Review, plan: dict) -> None:
        """A rerun whose review was already posted (the worker died after the POST): finish what
        came after it, settling the fixed threads (both steps skip what is already done)."""
        state = read_threads(gh, job.repo, job.pr, comments, own_logins(gh, self.cfg.settings.bot_logins))
        fixed = fixed_threads(state, review)
        settle(gh, job.repo, job.pr, job.head_sha or "", fixed, state.thread_api)
        self._record(job, gh, state, comments, fixed, plan, [])

    def _record(
        self,
        job: Job,
        gh: Forge,
        state: Any,
        comments: list[dict],
        settled: list[Any],
        plan: dict,
        posted: list[ReviewComment],
    ) -> None:
        """Into the dataset store: what was posted (fingerprint, hunk, model version), the forge's ids
        of the bot's comments, and what people did with them; then their evidence is re-derived.
        A store that cannot be written loses feedback, never the review: it is logged, not raised."""
        if self.store is None:
            return
        try:
            store = self.store()
            hunks = plan.get("hunks") or {}
            store.record_posts(
                BotPost(
                    job.repo,
                    job.pr,
                    comment_fingerprint(c),
                    c.path,
                    c.line,
                    c.side,
                    c.body,
                    hunks.get(comment_fingerprint(c)),
                    job.head_sha,
                    plan.get("model_version"),
                )
                for c in posted
            )
            if posted:  # learn the new comments' ids now, so feedback on them can be traced at once
                try:
                    comments = gh.pull_review_comments(job.repo, job.pr)
                except ForgeError as exc:
                    log.warning("%s#%s: cannot list the comments just posted: %s", job.repo, job.pr, exc)
            for c in comments:
                author = str((c.get("user") or {}).get("login") or "").lower()
                fps = extract_fingerprints(c.get("body"))
                if c.get("in_reply_to_id") is None and fps and author in state.own:
                    store.link_post(job.repo, job.pr, fps[0], int(c["id"]))
            bot = next(iter(sorted(state.own)), "revbot")
            rows = feedback_rows(job.repo, job.pr, state, comments, settled, bot, job.forge)
            if rows:
                store.record_feedback(rows)
            refresh_evidence(store, job.repo, job.pr)
        except (DataError, OSError) as exc:
            log.warning("%s#%s: feedback not recorded: %s", job.repo, job.pr, exc)

    def _record_review(self, job: Job, review: Review, plan: dict, result: JobResult, seconds: float) -> None:
        """The review just posted, for the operator pages' Reviews list (logged, never raised)."""
        if self.store is None:
            return
        try:
            self.store().record_review(
                ReviewRecord(
                    job.repo,
                    job.pr,
                    job.head_sha or "",
                    plan.get("model_version"),
                    int(result.info.get("comments") or 0),
                    int(result.info.get("in_body") or 0),
                    tuple({"path": s.path, "reason": s.reason} for s in review.skipped),
                    round(seconds, 3),
                    result.info.get("review_id"),
                )
            )
        except (DataError, OSError) as exc:
            log.warning("%s#%s: review not recorded: %s", job.repo, job.pr, exc)

    # ------------------------------------------------------------------ steps

    def _moved_on(self, job: Job, ctx: JobContext, current: str) -> JobResult:
        """The PR's head is no longer this job's: make sure the newer head has a job (its event
        may be late or lost) and stop."""
        payload = dict(job.payload, head_sha=current, action="resync", delivery=None)
        newer = NewJob(REVIEW, review_key(job.repo, job.pr, current), job.repo, job.pr, current, payload)
        accepted = ctx.worker.queue.submit(None, "pull_request", "resync", newer)
        return JobResult(SKIPPED, {"reason": "head moved on", "head_sha": current, "job": accepted.job_id})

    def _repo_config(self, gh: Forge, repo: str, base_ref: str | None) -> tuple[RepoConfig, str | None]:
        """The base branch's config, and the note for the review body when it is invalid (then the
        defaults apply: anyone can break the base config, and the team must learn why)."""
        for name in CONFIG_NAMES:
            text = gh.get_file_text(repo, name, ref=base_ref)
            if text is not None:
                source = f"{name}@{(base_ref or 'default')[:12]}"
                try:
                    return RepoConfig.from_yaml(text, source=source), None
                except DataError as exc:
                    log.warning("%s: %s; reviewing with the default settings", repo, exc)
                    return RepoConfig(source=source), config_notice(str(exc))
        return RepoConfig(), None

    def _plan(
        self, job: Job, ctx: JobContext, gh: Forge, config: RepoConfig, reviews: list[dict], base_sha: str | None
    ) -> tuple[Review, dict]:
        """The review to post and its plan: the saved plan of an earlier run, or a fresh one (then
        saved): the range reviewed (``webhooks.scope``), the review, the hunk each comment is on."""
        if job.plan and isinstance(job.plan, dict) and "review" in job.plan:
            return Review.from_dict(job.plan["review"]), job.plan
        head = job.head_sha or ""
        diff = read_pull_diff(gh, job.repo, job.pr, f"{job.repo}#{job.pr}@{head[:12]}")
        scope = choose_scope(
            gh,
            job.repo,
            diff,
            reviews,
            head,
            base_sha,
            full=bool(job.payload.get("full")),
            requested_by=job.payload.get("requested_by"),
        )
        ignores = self._pr_ignores(job)
        options = ReviewOptions.from_config(
            config,
            max_new_tokens=self.cfg.settings.max_new_tokens,
            token_budget=self.cfg.settings.token_budget,
            ignore_paths=(*config.ignore_paths, *ignores),
        )
        backend, version = self.models.get(config.model_version)
        if isinstance(backend, OpenAIBackend):  # a server batches concurrent requests itself
            review = review_diff(scope.diff, backend, options)
        else:
            with self._generate_lock:
                review = review_diff(scope.diff, backend, options)
        hunks = {}
        for c in review.comments:
            hunk = (scope.diff.file(c.path) or FileDiff(c.path)).hunk_for(c.line, c.side)
            if hunk is not None:
                hunks[comment_fingerprint(c)] = hunk.text()
        note = scope.note()
        if ignores:
            note += "\n**Ignored on request:** " + ", ".join(f"`{g}`" for g in ignores)
        plan = {
            "review": review.to_dict(),
            "model_version": version,
            "planned_at": time.time(),
            "range_note": note,
            "incremental": scope.incremental,
            "since": scope.since,
            "scope_reason": scope.reason,
            "hunks_in_scope": sum(len(f.hunks) for f in scope.diff),
            "hunks": hunks,
        }
        ctx.save_plan(plan)
        return review, plan

    def _pr_ignores(self, job: Job) -> list[str]:
        """Globs recorded for this PR by ``/revbot ignore`` (none without a store)."""
        if self.store is None:
            return []
        try:
            return self.store().pr_ignores(job.repo, job.pr)
        except (DataError, OSError) as exc:
            log.warning("%s#%s: /revbot ignore globs unreadable, reviewing without them: %s", job.repo, job.pr, exc)
            return []

    def _post(
        self,
        job: Job,
        ctx: JobContext,
        gh: Forge,
        review: Review,
        known: set[str],
        notice: str | None = None,
        notes: list[str] | None = None,
    ) -> JobResult:
        request = job.payload.get("request")
        header = f"{HEADER}\n{review_marker(job.head_sha or '')}" + (f"\n{request_marker(request)}" if request else "")
        header += (f"\n\n{notice}" if notice else "") + "".join(f"\n\n{n}" for n in notes or ())
        moved_refused = 0
        for attempt in range(MAX_REFUSED_ROUNDS + 1):
            payload = github_review_payload(
                review, job.head_sha, known_fingerprints=known, max_inline=MAX_INLINE, header=header
            )
            sent = payload["comments"]
            if self.cfg.dry_run:
                log.warning(
                    "dry run: review for %s#%s at %s would be:\n%s",
                    job.repo,
                    job.pr,
                    (job.head_sha or "")[:12],
                    scrub_text(json.dumps(payload, indent=2)),
                )
                return JobResult(DONE, {"dry_run": True, "comments": len(sent)})
            ctx.check()
            try:
                posted = gh.create_review(
                    job.repo,
                    job.pr,
                    commit_id=payload["commit_id"],
                    body=payload["body"],
                    event=payload["event"],
                    comments=sent,
                )
            except InvalidPositionError as exc:
                self.metrics.inc("revbot_forge_api_errors_total", {"forge": job.forge, "status": exc.status or 422})
                review, moved = self._without_refused(
                    review, known, exc.failed_indexes, everything=attempt == MAX_REFUSED_ROUNDS - 1
                )
                moved_refused += moved
                log.warning(
                    "%s refused %d inline comment(s) on %s#%s; posting them in the body instead",
                    forge_name(job.forge),
                    moved,
                    job.repo,
                    job.pr,
                )
                if moved == 0:
                    raise
                continue
            unposted = [c for c in review.comments if comment_fingerprint(c) not in known]
            to_body = max(len(unposted) - MAX_INLINE, 0) + len(
                [c for c in review.unanchored if comment_fingerprint(c) not in known]
            )
            self.metrics.inc("revbot_reviews_posted_total")
            self.metrics.inc("revbot_comments_posted_total", value=len(sent))
            self.metrics.inc("revbot_comments_moved_to_body_total", value=to_body)
            self.metrics.observe("revbot_review_latency_seconds", max(time.time() - job.created_at, 0.0))
            log.info(
                "posted review %s on %s#%s: %d inline comment(s), %d in the body",
                posted.get("id"),
                job.repo,
                job.pr,
                len(sent),
                to_body,
            )
            info = {"review_id": posted.get("id"), "comments": len(sent), "in_body": to_body, "refused": moved_refused}
            if notice:
                info["config_error"] = True
            return JobResult(DONE, info)
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _without_refused(
        review: Review, known: set[str], failed: list[int] | None, everything: bool
    ) -> tuple[Review, int]:
        """The review with the inline comments the forge refused moved to the unanchored ones (the
        body). ``failed`` indexes the comments as sent; None (the forge did not say) moves all."""
        sent = [c for c in review.comments if comment_fingerprint(c) not in known][:MAX_INLINE]
        if failed is None or everything:
            refused = sent
        else:
            refused = [sent[i] for i in failed if 0 <= i < len(sent)]
        if not refused:
            return review, 0
        drop = {id(c) for c in refused}
        kept = [c for c in review.comments if id(c) not in drop]
        return replace(review, comments=kept, unanchored=[*review.unanchored, *refused]), len(refused)
