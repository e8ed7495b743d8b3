"""`revbot harvest github OWNER/REPO`: review comments from GitHub -> the store -> examples.

Requests, fewest first:
  1. review comments repo-wide (``/pulls/comments``, 100 a page, oldest change first) from the
     stored high-water mark (``since``), unless ``full``. Each page is committed with the new
     high-water mark and the PRs it touched marked pending, so a kill loses at most the page in
     flight and the next run resumes from there.
  2. PR authors (for the self-comment filter) only for pending PRs whose author is not stored:
     one ``GET /pulls/N`` each, or the PR list in bulk (100 a page, stopping once past the PRs
     needed) when that is fewer requests.
  3. PR files only for pending PRs with a kept comment, and only when the stored copy is not of
     the PR's current head. Negatives come from the same PRs' uncommented hunks: no extra request.
Then each pending PR's examples are rebuilt and replaced in one transaction, which also clears it
from the pending list (so an interrupted build resumes too).
"""

from __future__ import annotations

import math
import sys
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from adapters.store import CachedFile, PullRequestInfo, Store, StoredComment, now_stamp, utc_timestamp
from bot.errors import DataError, ForgeError, RevbotError, UsageError
from bot.feedback import refresh_evidence
from bot.forge import Forge, forge_name
from bot.secrets import scrub_text
from harvest.build import DEFAULT_MAX_HUNK_LINES, DEFAULT_OWN_LOGINS, BuildConfig, build_pr, kept_roots
from harvest.filters import DEFAULT_MIN_LENGTH, REASONS, FilterConfig, templated_ids

PAGE_SIZE = 100


@dataclass
class HarvestOptions:
    full: bool = False  # re-read every comment and rebuild every PR
    rebuild: bool = False  # rebuild every PR's examples from the store (after changing filters)
    since: str | None = None  # created_at window (also the lower bound of what is fetched)
    until: str | None = None
    authors: Iterable[str] | None = None
    deny: Iterable[str] = ()
    min_length: int = DEFAULT_MIN_LENGTH
    negatives_ratio: float = 1.0
    seed: int = 0
    max_hunk_lines: int = DEFAULT_MAX_HUNK_LINES
    own_logins: Iterable[str] = DEFAULT_OWN_LOGINS
    keep_templates: bool = False  # keep comments filled in from one template across PRs (bot.templates)
    progress: bool = False

    def filters(self) -> FilterConfig:
        return FilterConfig(
            authors=frozenset(self.authors) if self.authors is not None else None,
            deny=frozenset(self.deny),
            min_length=self.min_length,
            since=utc_timestamp(self.since),
            until=utc_timestamp(self.until),
        )

    def build_config(self) -> BuildConfig:
        if self.negatives_ratio < 0:
            raise UsageError(f"--negatives-ratio must be 0 or more, got {self.negatives_ratio}")
        if self.max_hunk_lines < 1:
            raise UsageError(f"max_hunk_lines must be at least 1, got {self.max_hunk_lines}")
        return BuildConfig(
            self.negatives_ratio, self.seed, self.max_hunk_lines, frozenset(x.lower() for x in self.own_logins)
        )


@dataclass
class HarvestSummary:
    repo: str
    comments_fetched: int = 0
    inserted: int = 0
    updated: int = 0
    malformed: int = 0
    deleted: int = 0  # stored comments a --full read no longer found (deleted on the forge)
    comment_pages: int = 0
    prs_built: int = 0
    counts: Counter = field(default_factory=Counter)  # from harvest.build: kept, replies, dropped:<reason>, ...
    positives: int = 0
    negatives: int = 0
    requests: Counter = field(default_factory=Counter)  # comments, authors, files, rate_limit
    author_lookup: str = "none"  # none | per-pr | bulk
    files_fetched: int = 0
    files_cached: int = 0
    files_missing: int = 0
    feedback: int = 0
    rate_remaining: int | None = None
    rate_limit: int | None = None
    high_water: str | None = None
    interrupted: bool = False
    forge: str = "github"  # where the comments come from: "github" or "gitlab"

    @property
    def examples_written(self) -> int:
        return self.positives + self.negatives

    @property
    def requests_total(self) -> int:
        return sum(self.requests.values())

    @property
    def dropped(self) -> dict[str, int]:
        return {reason: self.counts.get(f"dropped:{reason}", 0) for reason in (*REASONS, "bad_diff_hunk")}

    def to_dict(self) -> dict[str, Any]:
        return {
            "repo": self.repo,
            "comments_fetched": self.comments_fetched,
            "comments_inserted": self.inserted,
            "comments_updated": self.updated,
            "comments_malformed": self.malformed,
            "comments_deleted": self.deleted,
            "comment_pages": self.comment_pages,
            "prs": self.prs_built,
            "comments_considered": self.counts.get("considered", 0),
            "kept": self.counts.get("kept", 0),
            "replies": self.counts.get("replies", 0),
            "orphan_replies": self.counts.get("orphan_replies", 0),
            "dropped": self.dropped,
            "examples_written": self.examples_written,
            "positive": self.positives,
            "negative": self.negatives,
            "from_pr_hunk": self.counts.get("from_pr_hunk", 0),
            "from_diff_hunk": self.counts.get("from_diff_hunk", 0),
            "requests": self.requests_total,
            "requests_by_kind": dict(self.requests),
            "author_lookup": self.author_lookup,
            "files_fetched": self.files_fetched,
            "files_cached": self.files_cached,
            "files_missing": self.files_missing,
            "bot_feedback": self.feedback,
            "rate_limit_remaining": self.rate_remaining,
            "rate_limit": self.rate_limit,
            "high_water": self.high_water,
            "interrupted": self.interrupted,
        }

    def text(self) -> str:
        c = self.counts
        dropped = ", ".join(f"{k} {v}" for k, v in self.dropped.items() if v) or "none"
        rate = "unknown" if self.rate_remaining is None else f"{self.rate_remaining}/{self.rate_limit}"
        by_kind = ", ".join(f"{k} {v}" for k, v in self.requests.items() if v) or "none"
        lines = [
            f"harvest {self.repo}" + (" (interrupted; run again to resume)" if self.interrupted else ""),
            f"  comments fetched: {self.comments_fetched} ({self.inserted} new, {self.updated} updated"
            + (f", {self.malformed} malformed skipped" if self.malformed else "")
            + (f", {self.deleted} deleted on {forge_name(self.forge)}" if self.deleted else "")
            + f") in {self.comment_pages} page(s)",
            f"  PRs rebuilt: {self.prs_built}",
            f"  comments considered: {c.get('considered', 0)}: kept {c.get('kept', 0)}, replies {c.get('replies', 0)}"
            + (f", orphan replies {c.get('orphan_replies', 0)}" if c.get("orphan_replies") else ""),
            f"  dropped: {dropped}",
            f"  examples written: {self.examples_written} ({self.positives} positive: {c.get('from_pr_hunk', 0)} comments "
            f"on PR hunks, {c.get('from_diff_hunk', 0)} on their own diff_hunk; {self.negatives} negative)",
            f"  requests: {self.requests_total} ({by_kind}); PR authors: {self.author_lookup}; "
            f"files fetched {self.files_fetched}, from cache {self.files_cached}",
            f"  rate limit left: {rate}",
        ]
        if self.feedback:
            lines.append(f"  feedback on the bot's comments: {self.feedback} row(s)")
        return "\n".join(lines)


class HarvestInterrupted(RevbotError):
    """Ctrl-C during a harvest: what was fetched is stored; the next run resumes."""

    exit_code = 130

    def __init__(self, summary: HarvestSummary):
        self.summary = summary
        super().__init__(
            f"interrupted; everything fetched so far is stored. Run the same command again to resume {summary.repo}."
        )


def _progress(enabled: bool, **kw: Any):
    from tqdm import tqdm

    return tqdm(disable=not enabled, file=sys.stderr, dynamic_ncols=True, leave=False, **kw)


class _Meter:
    """Counts the client's HTTP requests (retries included) per kind of work."""

    def __init__(self, client: Any, summary: HarvestSummary):
        self.client, self.summary = client, summary

    def count(self) -> int:
        return int(getattr(self.client, "request_count", 0) or 0)

    def charge(self, kind: str, before: int) -> None:
        spent = self.count() - before
        if spent:
            self.summary.requests[kind] += spent


def harvest_github(
    client: Forge,
    store: Store,
    repo: str,
    options: HarvestOptions | None = None,
    *,
    on_page: Callable[[int], None] | None = None,
) -> HarvestSummary:
    """Harvest ``repo`` into ``store`` through ``client`` (a ``bot.forge.Forge``: GitHub or GitLab).

    ``on_page(n)`` is called after the n-th comment page is committed (tests use it to simulate a
    kill between pages). Raises HarvestInterrupted on Ctrl-C, GitHubError when GitHub fails after
    retries; in both cases everything committed so far stays and the next run resumes.
    """
    options = options or HarvestOptions()
    forge = str(getattr(client, "forge", "github"))
    nested = forge == "gitlab"  # GitLab projects live in groups and subgroups: GROUP/SUB/PROJECT
    parts = repo.split("/") if isinstance(repo, str) else []
    if len(parts) < 2 or (len(parts) > 2 and not nested) or not all(parts):
        raise UsageError(
            f"a {'project is written GROUP/PROJECT' if nested else 'repository is written OWNER/REPO'}, got {repo!r}"
        )
    filters = options.filters()
    config = options.build_config()
    summary = HarvestSummary(repo, forge=forge)
    meter = _Meter(client, summary)
    api_url = getattr(client, "api_url", None)
    if isinstance(api_url, str):  # where (and from which forge) `revbot retrain` harvests this repository again
        store.set_api_url(repo, api_url)
        store.set_state(repo, "forge", forge)
    try:
        _fetch_comments(client, store, repo, options, filters, summary, meter, on_page, source=forge)
        _build_pending(client, store, repo, options, filters, config, summary, meter, source=forge)
    except KeyboardInterrupt as exc:
        summary.interrupted = True
        raise HarvestInterrupted(summary) from exc
    finally:
        summary.high_water = (store.get_state(repo, "high_water") or {}).get("updated_at")
    _rate_left(client, summary, meter)
    # the operator pages' "last harvest" (issue 20): when, how many comments, the rate budget left
    store.set_state(
        repo,
        "last_run",
        {
            "at": now_stamp(),
            "comments_fetched": summary.comments_fetched,
            "inserted": summary.inserted,
            "rate_remaining": summary.rate_remaining,
            "rate_limit": summary.rate_limit,
        },
    )
    return summary


# --------------------------------------------------------------------------- phase 1: comments


def _fetch_bounds(store: Store, repo: str, options: HarvestOptions, since: str | None) -> tuple[str | None, str | None]:
    """(the ``since`` to ask GitHub for, the lower bound of the continuous read it continues).

    The stored mark is ``{"updated_at": T, "from": F}``: every comment updated in [F, T] is
    stored. A run asking for an earlier start than F must read from there again."""
    mark = store.get_state(repo, "high_water")
    if options.full or not mark:
        return since, since
    floor = mark.get("from")
    if floor is None or (since is not None and since >= floor):
        return (max(mark["updated_at"], since) if since else mark["updated_at"]), floor
    return since, since


def _fetch_comments(client, store, repo, options, filters, summary, meter, on_page, source="github") -> None:
    api_since, floor = _fetch_bounds(store, repo, options, filters.since)
    if options.full or options.rebuild:
        store.mark_pending(repo, store.comment_prs(repo))
    if options.rebuild:
        return
    authors = store.pull_authors(repo)
    page: list[dict] = []
    seen: set[int] = set()
    started = now_stamp()
    bar = _progress(options.progress, desc=f"{repo} comments", unit=" comments")

    def commit() -> None:
        comments = []
        stamps = []
        for raw in page:
            try:
                stamps.append(utc_timestamp(raw.get("updated_at") or raw.get("created_at")))
            except (DataError, AttributeError):
                pass
            try:
                comment = StoredComment.from_github(raw, repo, source=source, forge=source)
            except DataError:
                summary.malformed += 1  # no id or no PR: nothing to key it by
                continue
            comment.pr_author = authors.get(comment.pr)
            comments.append(comment)
            seen.add(comment.id)
        newest = max((s for s in stamps if s), default=None)
        with store.transaction():
            inserted, updated = store.upsert_comments(comments, mark_pending=True)
            if newest:
                store.set_state(repo, "high_water", {"updated_at": newest, "from": floor})
        summary.inserted += inserted
        summary.updated += updated
        summary.comment_pages += 1
        bar.update(len(page))
        page.clear()
        if on_page is not None:
            on_page(summary.comment_pages)

    before = meter.count()
    try:
        for raw in client.iter_review_comments(repo, since=api_since, sort="updated", direction="asc"):
            page.append(raw)
            summary.comments_fetched += 1
            if len(page) >= PAGE_SIZE:
                commit()
        if page:
            commit()
    finally:
        bar.close()
        meter.charge("comments", before)
    if options.full and filters.since is None:  # a complete read: what it did not return was deleted
        summary.deleted = store.prune_comments(repo, seen, before=started, forge=source)


# --------------------------------------------------------------------------- phase 2: build


def _pull_info(repo: str, data: dict) -> PullRequestInfo:
    user = data.get("user") or {}
    head = data.get("head") or {}
    return PullRequestInfo(
        repo=repo,
        number=int(data["number"]),
        author=user.get("login") if isinstance(user, dict) else None,
        head_sha=head.get("sha") if isinstance(head, dict) else None,
        state=data.get("state"),
        created_at=utc_timestamp(data.get("created_at")),
        updated_at=utc_timestamp(data.get("updated_at")),
        title=scrub_text(data.get("title")),
    )


def _lookup_authors(client, store: Store, repo: str, needed: list[int], summary: HarvestSummary, meter: _Meter) -> None:
    """Authors of ``needed`` PRs at the lowest request count: one read per PR, or the PR list in
    bulk (oldest first, 100 a page, stopping after the highest number needed) when that is fewer
    requests. PR numbers are shared with issues, so PR #N is at most the N-th PR: listing up to
    it costs at most ceil(N / 100) pages. (Newest first has no such bound: newer PRs without
    review comments are unknown here.)"""
    if not needed:
        return
    high = max(needed)
    before = meter.count()
    try:
        if len(needed) <= math.ceil(high / PAGE_SIZE):
            summary.author_lookup = "per-pr"
            found = []
            for number in needed:
                try:
                    found.append(_pull_info(repo, client.get_pull(repo, number)))
                except ForgeError as exc:
                    if exc.status != 404:
                        raise
            store.upsert_pulls(found)
            return
        summary.author_lookup = "bulk"
        missing = set(needed)
        batch: list[PullRequestInfo] = []
        for data in client.iter_pulls(repo, state="all", sort="created", direction="asc"):
            info = _pull_info(repo, data)
            batch.append(info)
            missing.discard(info.number)
            if len(batch) >= PAGE_SIZE:
                store.upsert_pulls(batch)
                batch = []
            if not missing or info.number > high:
                break
        store.upsert_pulls(batch)
    finally:
        meter.charge("authors", before)


def _files_for(
    client, store: Store, repo: str, pr: int, comments: list[StoredComment], summary: HarvestSummary, meter: _Meter
):
    info = store.get_pull(repo, pr)
    newest = max(comments, key=lambda c: (c.created_at or "", c.id), default=None)
    want = (info.head_sha if info else None) or (newest.commit_id if newest else None)
    cached = store.cached_pr_files(repo, pr)
    if cached is not None and cached[1] == want:
        summary.files_cached += 1
        return cached[0]
    before = meter.count()
    try:
        raw = client.pull_files(repo, pr)
    except ForgeError as exc:
        if exc.status == 404:
            summary.files_missing += 1
            return None
        raise
    finally:
        meter.charge("files", before)
    files = [
        CachedFile(
            path=f.get("filename") or "",
            status=f.get("status") or "modified",
            patch=f.get("patch"),
            old_path=f.get("previous_filename"),
        )
        for f in raw
        if f.get("filename")
    ]
    store.cache_pr_files(repo, pr, files, commit=want)
    summary.files_fetched += 1
    return store.cached_pr_files(repo, pr)[0]  # the scrubbed copy


def _with_templates(store: Store, repo: str, options: HarvestOptions, filters: FilterConfig) -> FilterConfig:
    """``filters`` with the repository's templated comments, found over all its stored comments (a
    template shows across PRs, not in one). PRs whose comments changed verdict since the last run
    are marked for rebuilding, so a template that crosses the threshold later leaves no PR behind."""
    found = frozenset() if options.keep_templates else templated_ids(store.iter_comments(repo))
    before = frozenset(store.get_state(repo, "templated") or [])
    if found != before:
        changed = found ^ before
        prs = {c.pr for c in store.iter_comments(repo) if c.id in changed}
        with store.transaction():
            store.mark_pending(repo, sorted(prs))
            store.set_state(repo, "templated", sorted(found))
    return replace(filters, templated=found)


def _build_pending(client, store, repo, options, filters, config, summary, meter, source="github") -> None:
    filters = _with_templates(store, repo, options, filters)
    pending = store.pending_prs(repo)
    if not pending:
        return
    authors = store.pull_authors(repo)
    _lookup_authors(client, store, repo, [p for p in pending if p not in authors], summary, meter)
    authors = store.pull_authors(repo)
    bar = _progress(options.progress, desc=f"{repo} PRs", unit=" PR", total=len(pending))
    try:
        for pr in pending:
            comments = list(store.iter_comments(repo, pr))
            author = authors.get(pr)
            files = None
            if kept_roots(comments, author, filters):
                files = _files_for(client, store, repo, pr, comments, summary, meter)
            result = build_pr(
                repo, pr, comments, files, pr_author=author, filters=filters, config=config, source=source
            )
            with store.transaction():
                store.replace_examples(repo, result.examples, pr=pr)
                if result.feedback:
                    store.record_feedback(result.feedback)
            if result.feedback:
                refresh_evidence(store, repo, pr)  # reactions and replies -> evidence (bot.feedback)
            summary.prs_built += 1
            summary.counts.update(result.counts)
            summary.positives += result.positives
            summary.negatives += result.negatives
            summary.feedback += len(result.feedback)
            bar.update(1)
    finally:
        bar.close()


def _rate_left(client: Any, summary: HarvestSummary, meter: _Meter) -> None:
    """The core rate budget left, from the client's ``rate_limiting`` (PyGithub's: the last
    answer's headers, or one free ``GET /rate_limit`` when there was none). A harvest that got this
    far is not failed by the budget being unreadable."""
    before = meter.count()
    try:
        remaining, limit = client.rate_limiting
    except ForgeError:
        remaining = limit = None
    finally:
        meter.charge("rate_limit", before)
    summary.rate_remaining, summary.rate_limit = remaining, limit
