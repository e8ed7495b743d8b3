"""Benchmark: requests a harvest needs, revbot's versus a naive harvester, over real HTTP to the
GitHub simulator on loopback.

Repository: 2,000 PRs; 300 of them (picked at random, seeded) carry 3,000 review comments
between them. The naive harvester lists every PR, then each PR's comments, then each PR's files.
revbot lists comments repo-wide, learns PR authors in the cheaper of two ways, and fetches files
only for PRs with a kept comment. The physical minimum is ceil(comments / 100) comment pages plus
one file page per PR needed (each PR here has fewer than 100 files).
Then 50 new comments arrive and revbot harvests again, incrementally.

    python tests/bench/bench_harvest.py          # < 2 minutes; last line: RESULT k=v ...
"""

from __future__ import annotations

import math
import random
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere

from adapters.github import GitHubClient  # noqa: E402
from adapters.store import Store  # noqa: E402
from harvest.mine import HarvestOptions, harvest_github  # noqa: E402
from revbot.dev.github_sim import GitHubSimulator  # noqa: E402

REPO = "acme/platform"
TOTAL_PRS, COMMENTED_PRS, COMMENTS = 2000, 300, 3000
NEW_COMMENTS = 50
REVIEWERS = ["ana", "ben", "chen", "dara", "eli", "fay", "gus", "hana"]
REMARKS = [
    "This lookup runs once per item; hoist it out of the loop.",
    "Please add a test for the empty input case.",
    "Naming: `tmp` says nothing, call it `pending_jobs`.",
    "The lock is never released if this raises.",
    "Consider returning early here to flatten the nesting.",
    "Is this still needed after the migration?",
    "```suggestion\n    return sorted(items, key=lambda i: i.priority)\n```",
    "This duplicates `utils.parse_size`; reuse it.",
]


def _patch(k: int, variant: int) -> str:
    hunks = []
    for h in range(5):
        o = 30 * h + 1
        hunks.append(
            f"@@ -{o},4 +{o},5 @@ def step_{h}_{variant}():\n     a = {k}\n-    b = {h}\n+    b = {h + 1}\n+    c = {variant}\n     d = a + b\n     return d"
        )
    return "\n".join(hunks)


def _stamp(n: int) -> str:
    day, rest = divmod(n, 86400)
    hh, rest = divmod(rest, 3600)
    mm, ss = divmod(rest, 60)
    return f"2023-{1 + day // 28:02d}-{1 + day % 28:02d}T{hh:02d}:{mm:02d}:{ss:02d}Z"


def build_seed(rng: random.Random) -> tuple[dict, list[int]]:
    commented = sorted(rng.sample(range(1, TOTAL_PRS + 1), COMMENTED_PRS))
    per_pr = COMMENTS // COMMENTED_PRS
    pulls, n = [], 0
    for number in range(1, TOTAL_PRS + 1):
        author = f"dev{number % 37}"
        files = [
            {"filename": f"svc/mod_{number % 50}/file_{j}.py", "status": "modified", "patch": _patch(number, j)}
            for j in range(2)
        ]
        comments = []
        if number in commented:
            for k in range(per_pr):
                n += 1
                f, h = k % 2, (k // 2) % 3
                comments.append(
                    {
                        "id": 500_000 + n,
                        "path": files[f]["filename"],
                        "line": 30 * h + 2 + (k % 3 == 0),
                        "side": "RIGHT",
                        "body": REMARKS[(n + number) % len(REMARKS)],
                        "user": REVIEWERS[(n * 7 + number) % len(REVIEWERS)],
                        "created_at": _stamp(number * 3600 + k),
                    }
                )
        pulls.append(
            {
                "number": number,
                "user": author,
                "title": f"Change {number}",
                "created_at": _stamp(number * 3600 - 600),
                "files": files,
                "comments": comments,
            }
        )
    return {"repos": [{"owner": "acme", "name": "platform", "pulls": pulls}]}, commented


def naive_harvest(url: str, workers: int = 8) -> tuple[dict, int]:
    """Every PR, then each PR's review comments and files: what a straightforward script does.
    Run on ``workers`` threads (one client each) only to keep the benchmark short: the number of
    requests does not depend on it. Returns (what it saw, requests made)."""
    lister = GitHubClient("bench-token", api_url=url, sleep=lambda s: None)
    numbers = [p["number"] for p in lister.iter_pulls(REPO, state="all")]
    local = threading.local()
    clients = [lister]
    lock = threading.Lock()

    def fetch(number: int) -> tuple[int, int]:
        if not hasattr(local, "client"):
            local.client = GitHubClient("bench-token", api_url=url, sleep=lambda s: None)
            with lock:
                clients.append(local.client)
        return len(local.client.pull_review_comments(REPO, number)), len(local.client.pull_files(REPO, number))

    with ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(fetch, numbers))
    requests = sum(c.request_count for c in clients)
    for c in clients:
        c.close()
    return {"prs": len(numbers), "comments": sum(r[0] for r in results), "files": sum(r[1] for r in results)}, requests


def main() -> int:
    rng = random.Random(20240601)
    t0 = time.perf_counter()
    seed, commented = build_seed(rng)
    with GitHubSimulator(seed) as sim, tempfile.TemporaryDirectory() as tmp:
        print(
            f"simulator at {sim.url}: {TOTAL_PRS} PRs, {COMMENTS} review comments on {len(commented)} of them "
            f"(seeded in {time.perf_counter() - t0:.1f} s)"
        )
        store = Store(Path(tmp) / "bench.db")
        client = GitHubClient("bench-token", api_url=sim.url, sleep=lambda s: None)

        t = time.perf_counter()
        summary = harvest_github(client, store, REPO, HarvestOptions())
        revbot_time = time.perf_counter() - t
        revbot = summary.requests_total
        needed = len({e.pr for e in store.iter_examples(REPO) if not e.is_negative})
        files_pages = needed  # every PR here has < 100 files: one page each
        minimum = math.ceil(summary.comments_fetched / 100) + files_pages

        t = time.perf_counter()
        seen, naive = naive_harvest(sim.url)
        naive_time = time.perf_counter() - t

        print(
            f"revbot harvest: {revbot} requests in {revbot_time:.1f} s "
            f"({', '.join(f'{k} {v}' for k, v in summary.requests.items())}; PR authors by {summary.author_lookup})"
        )
        print(
            f"  {summary.comments_fetched} comments, {summary.prs_built} PRs, {summary.positives} positive and "
            f"{summary.negatives} negative examples; dropped: {', '.join(f'{k} {v}' for k, v in summary.dropped.items() if v) or 'none'}"
        )
        print(
            f"naive harvest:  {naive} requests in {naive_time:.1f} s on 8 threads ({seen['prs']} PRs listed, {seen['comments']} comments, "
            f"{seen['files']} file entries)"
        )
        print(
            f"physical minimum: {minimum} = {math.ceil(summary.comments_fetched / 100)} comment pages + {files_pages} file pages "
            f"(PRs with a kept comment)"
        )
        over = revbot / minimum - 1
        print(
            f"naive / revbot = {naive / revbot:.1f}x; revbot / minimum = {revbot / minimum:.3f} "
            f"({over:+.1%}; goal within 5%: {'met' if over <= 0.05 else 'not met'})"
        )
        extra = summary.requests_total - minimum
        if extra > 0:
            print(
                f"  the {extra} requests above the minimum are PR authors (for the self-comment filter), which the "
                "minimum does not count"
            )

        commented_rng = random.Random(7)
        targets = commented_rng.sample(commented, 10)
        for k in range(NEW_COMMENTS):
            pr = targets[k % len(targets)]
            sim.add_comments(
                REPO,
                pr,
                [
                    {
                        "path": f"svc/mod_{pr % 50}/file_0.py",
                        "line": 32,
                        "side": "RIGHT",
                        "body": f"Follow-up {k}: please log the retry count here.",
                        "user": "ana",
                        "created_at": f"2025-06-01T00:{k // 60:02d}:{k % 60:02d}Z",
                    }
                ],
            )
        t = time.perf_counter()
        again = harvest_github(client, store, REPO, HarvestOptions())
        inc_time = time.perf_counter() - t
        inc_comments = again.requests.get("comments", 0)
        print(
            f"incremental after {NEW_COMMENTS} new comments: {inc_comments} comment request(s) "
            f"(goal <= 3: {'met' if inc_comments <= 3 else 'not met'}), {again.requests_total} in all "
            f"({', '.join(f'{k} {v}' for k, v in again.requests.items())}), {again.inserted} new comments, "
            f"{again.prs_built} PRs rebuilt, {inc_time:.1f} s"
        )
        client.close()
    print(f"total {time.perf_counter() - t0:.1f} s")
    print(f"RESULT requests={revbot} minimum={minimum} naive={naive} incremental_comment_requests={inc_comments}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
