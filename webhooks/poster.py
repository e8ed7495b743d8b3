"""Review jobs: one pull request head -> at most one review on GitHub, never lost, never doubled.

For a job (repo, PR, head sha) the poster

1. reads the PR; a closed PR, a draft (when drafts are skipped) or a head that moved on is
   skipped (for a moved head the job of the new head is queued, in case its event is late);
2. reads ``.revbot.yml`` from the BASE commit, never the head: a PR cannot reconfigure its own
   review. An invalid one does not stop the review: it is done with the default settings and its
   body starts with a short note saying what is wrong (file, line, reason), so the team sees it on
   the PR instead of a review that silently never comes;
3. looks for a review of this head it already posted (a hidden ``revbot:review`` marker in the
   review body): a rerun after a crash or after a 5xx that GitHub had in fact applied stops here;
4. reviews the diff (``bot.review``) once and saves the result as the job's plan, so any rerun
   posts the same comments even if the model was reloaded meanwhile;
5. leaves out every comment whose fingerprint is already on the PR (a push re-reviews only
   what is new), and posts ONE review (event COMMENT) with at most 30 inline comments; the rest,
   the comments that could not be anchored and the files not reviewed go into its body;
6. on a 422 moves the comments GitHub names (all, if it names none) into the body and posts
   again, so the review itself is never lost.

``--dry-run`` logs the review instead of posting it.
"""
from __future__ import annotations

import json
import logging
import re
import threading
import time
from dataclasses import replace

from bot.config import CONFIG_NAMES, RepoConfig
from bot.diff import Diff, parse_diff, parse_patch
from bot.errors import DataError, GitHubError, UsageError
from bot.formats import comment_fingerprint, extract_fingerprints, github_review_payload
from bot.github import GitHubClient, ReviewValidationError
from bot.model import OpenAIBackend
from bot.review import Review, ReviewOptions, review_diff
from bot.secrets import scrub_text
from webhooks.jobs import DONE, REVIEW, SKIPPED, Job, NewJob, review_key
from webhooks.metrics import Metrics
from webhooks.settings import ServiceConfig
from webhooks.worker import JobContext, JobResult, ModelHolder, TransientError

log = logging.getLogger(__name__)

MAX_INLINE = 30  # inline comments per create-review call
MAX_422_ROUNDS = 3
HEADER = "**revbot review**"


REVIEW_MARK = "<!-- revbot:review sha="


def review_marker(head_sha: str) -> str:
    """Hidden in every review body: says which head this review covers."""
    return f"{REVIEW_MARK}{head_sha} -->"


CONFIG_NOTE = "**Note:** `.revbot.yml` on the base branch is invalid, so this review used the default settings."


def config_notice(error: str) -> str:
    """The review-body note for an invalid base ``.revbot.yml``. The error quotes text from that
    file (attacker-controlled): it is shown in a code span (no markdown, links or @mentions) and
    cannot carry a hidden revbot marker that would make a later review look already posted."""
    text = " ".join(error.split())[:400].replace("<!--", "<!\u200b--")
    fence = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    return f"{CONFIG_NOTE}\n{fence} {text} {fence}"


class GitHubFactory:
    """GitHub clients for jobs: one token client, or one App client per installation (each keeps
    its installation token until shortly before it expires)."""

    def __init__(self, cfg: ServiceConfig):
        self.cfg = cfg
        self._clients: dict[int | None, GitHubClient] = {}
        self._lock = threading.Lock()

    def client(self, installation_id: int | None) -> GitHubClient:
        cfg = self.cfg
        options = dict(cfg.github_options)
        key = installation_id if cfg.github_app_id and not cfg.github_token else None
        with self._lock:
            if key in self._clients:
                return self._clients[key]
            if cfg.github_token:
                client = GitHubClient(cfg.github_token, api_url=cfg.github_api_url, environ={}, **options)
            elif cfg.github_app_id:
                if installation_id is None:
                    raise UsageError("GitHub App auth needs the installation id, and this delivery has none "
                                     "(is the webhook configured on the App?)")
                client = GitHubClient(app_id=cfg.github_app_id, private_key_path=cfg.github_private_key,
                                      installation_id=installation_id, api_url=cfg.github_api_url, environ={},
                                      **options)
            else:
                client = GitHubClient(None, api_url=cfg.github_api_url, environ={}, **options)
            self._clients[key] = client
            return client


_FILE_STATUS = {"removed": "deleted", "changed": "modified", "unchanged": "modified"}


def read_pull_diff(gh: GitHubClient, repo: str, number: int, source: str) -> Diff:
    """The PR's diff; when GitHub will not render it (406: too large), rebuilt from the per-file
    patches of the files API, where files without a patch (binary, or too large) have no hunks and
    are reported as not reviewed."""
    try:
        return parse_diff(gh.pull_diff(repo, number), source)
    except GitHubError as exc:
        if exc.status != 406:
            raise
    log.info("%s: diff too large to render, using the files API", source)
    files = []
    for f in gh.pull_files(repo, number):
        status = _FILE_STATUS.get(f.get("status") or "modified", f.get("status") or "modified")
        fd = parse_patch(f.get("patch"), f["filename"], f.get("previous_filename"), status,
                         source=f"{source} {f['filename']}", strict=False)
        fd.is_binary = not f.get("patch") and status not in ("renamed", "copied", "deleted") and not f.get("changes")
        files.append(fd)
    return Diff(files, source)


class ReviewPoster:
    """Job handler for ``review`` jobs."""

    def __init__(self, cfg: ServiceConfig, github: GitHubFactory, models: ModelHolder, metrics: Metrics):
        self.cfg, self.github, self.models, self.metrics = cfg, github, models, metrics
        self._generate_lock = threading.Lock()  # one local generation at a time: a model is not re-entrant

    def __call__(self, job: Job, ctx: JobContext) -> JobResult:
        gh = self.github.client(job.payload.get("installation_id"))
        repo, number, head = job.repo, job.pr, job.head_sha or ""
        pr = gh.get_pull(repo, number)
        if pr.get("state") != "open":
            return JobResult(SKIPPED, {"reason": f"pull request is {pr.get('state')}"})
        current = (pr.get("head") or {}).get("sha")
        if current and current != head:
            seen, sent = str(pr.get("updated_at") or ""), str(job.payload.get("updated_at") or "")
            if seen and sent and seen < sent:  # GitHub's API has not caught up with the push yet
                raise TransientError(f"{repo}#{number}: the API still shows head {current[:12]}, older than "
                                     f"the event's {head[:12]}")
            return self._moved_on(job, ctx, current)
        base = pr.get("base") or {}
        config, notice = self._repo_config(gh, repo, base.get("sha") or base.get("ref") or job.payload.get("base_sha"))
        if not config.enabled:
            return JobResult(SKIPPED, {"reason": f"disabled by {config.source}"})
        if pr.get("draft") and config.skip_drafts:
            return JobResult(SKIPPED, {"reason": "draft pull request"})

        reviews = gh.list_reviews(repo, number)
        marker = review_marker(head)
        for existing in reviews:
            if marker in (existing.get("body") or ""):
                return JobResult(DONE, {"review_id": existing.get("id"), "already_posted": True})

        review = self._plan(job, ctx, gh, config)
        ctx.check()  # superseded while the model ran: post nothing
        known = set(extract_fingerprints("\n".join(r.get("body") or "" for r in reviews)))
        for comment in gh.pull_review_comments(repo, number):
            known.update(extract_fingerprints(comment.get("body")))
        earlier = any(REVIEW_MARK in (r.get("body") or "") for r in reviews)
        new_inline = [c for c in review.comments if comment_fingerprint(c) not in known]
        new_notes = [c for c in review.unanchored if comment_fingerprint(c) not in known]
        noted = notice is None or any(notice in (r.get("body") or "") for r in reviews)
        if earlier and not new_inline and not new_notes and noted:
            return JobResult(DONE, {"nothing_new": True, "known": len(known)})
        return self._post(job, ctx, gh, review, known, notice)

    # ------------------------------------------------------------------ steps

    def _moved_on(self, job: Job, ctx: JobContext, current: str) -> JobResult:
        """The PR's head is no longer this job's: make sure the newer head has a job (its event
        may be late or lost) and stop."""
        payload = dict(job.payload, head_sha=current, action="resync", delivery=None)
        newer = NewJob(REVIEW, review_key(job.repo, job.pr, current), job.repo, job.pr, current, payload)
        accepted = ctx.worker.queue.submit(None, "pull_request", "resync", newer)
        return JobResult(SKIPPED, {"reason": "head moved on", "head_sha": current, "job": accepted.job_id})

    def _repo_config(self, gh: GitHubClient, repo: str, base_ref: str | None) -> tuple[RepoConfig, str | None]:
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

    def _plan(self, job: Job, ctx: JobContext, gh: GitHubClient, config: RepoConfig) -> Review:
        """The review to post: the saved plan of an earlier run, or a fresh one (then saved)."""
        if job.plan and isinstance(job.plan, dict) and "review" in job.plan:
            return Review.from_dict(job.plan["review"])
        diff = read_pull_diff(gh, job.repo, job.pr, f"{job.repo}#{job.pr}@{(job.head_sha or '')[:12]}")
        options = ReviewOptions.from_config(config, max_new_tokens=self.cfg.max_new_tokens,
                                            token_budget=self.cfg.token_budget)
        backend, version = self.models.get(config.model_version)
        if isinstance(backend, OpenAIBackend):  # a server batches concurrent requests itself
            review = review_diff(diff, backend, options)
        else:
            with self._generate_lock:
                review = review_diff(diff, backend, options)
        ctx.save_plan({"review": review.to_dict(), "model_version": version, "planned_at": time.time()})
        return review

    def _post(self, job: Job, ctx: JobContext, gh: GitHubClient, review: Review, known: set[str],
              notice: str | None = None) -> JobResult:
        header = f"{HEADER}\n{review_marker(job.head_sha or '')}" + (f"\n\n{notice}" if notice else "")
        moved_by_422 = 0
        for attempt in range(MAX_422_ROUNDS + 1):
            payload = github_review_payload(review, job.head_sha, known_fingerprints=known, max_inline=MAX_INLINE,
                                            header=header)
            sent = payload["comments"]
            if self.cfg.dry_run:
                log.warning("dry run: review for %s#%s at %s would be:\n%s", job.repo, job.pr,
                            (job.head_sha or "")[:12], scrub_text(json.dumps(payload, indent=2)))
                return JobResult(DONE, {"dry_run": True, "comments": len(sent)})
            ctx.check()
            try:
                posted = gh.create_review(job.repo, job.pr, commit_id=payload["commit_id"], body=payload["body"],
                                          event=payload["event"], comments=sent)
            except ReviewValidationError as exc:
                self.metrics.inc("revbot_github_api_errors_total", {"status": 422})
                review, moved = self._without_refused(review, known, exc.failed_indexes,
                                                      everything=attempt == MAX_422_ROUNDS - 1)
                moved_by_422 += moved
                log.warning("GitHub refused %d inline comment(s) on %s#%s; posting them in the body instead",
                            moved, job.repo, job.pr)
                if moved == 0:
                    raise
                continue
            unposted = [c for c in review.comments if comment_fingerprint(c) not in known]
            to_body = max(len(unposted) - MAX_INLINE, 0) + len(
                [c for c in review.unanchored if comment_fingerprint(c) not in known])
            self.metrics.inc("revbot_reviews_posted_total")
            self.metrics.inc("revbot_comments_posted_total", value=len(sent))
            self.metrics.inc("revbot_comments_moved_to_body_total", value=to_body)
            self.metrics.observe("revbot_review_latency_seconds", max(time.time() - job.created_at, 0.0))
            log.info("posted review %s on %s#%s: %d inline comment(s), %d in the body", posted.get("id"),
                     job.repo, job.pr, len(sent), to_body)
            info = {"review_id": posted.get("id"), "comments": len(sent), "in_body": to_body, "refused": moved_by_422}
            if notice:
                info["config_error"] = True
            return JobResult(DONE, info)
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _without_refused(review: Review, known: set[str], failed: list[int] | None,
                         everything: bool) -> tuple[Review, int]:
        """The review with the inline comments GitHub refused moved to the unanchored ones (the
        body). ``failed`` indexes the comments as sent; None (GitHub did not say) moves all."""
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
