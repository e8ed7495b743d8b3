"""Training examples balanced across repositories, so one that dominates does not become the voice.

A dataset pooled from many projects (crc-py: 44% of its comments from one repository) teaches the
model the largest project's habits. ``balance_by_repo`` caps every repository at the same number of
examples ``cap``, the largest for which a capped repository holds at most ``max_share`` of the
balanced set (water-filling: repositories under the cap keep everything). It drops whole pull
requests, chosen by a seeded hash (the same set on every run, unrelated to time, so the training
split keeps its spread of dates), and never touches a repository under the cap.

A team training on its own one or two repositories is not balanced: with fewer than
``1 / max_share`` repositories no cap can meet the share, and the examples are returned as they
are (``BalanceResult.capped`` is then None). Only training examples are balanced; validation and
test stay what the team wrote.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from bot.examples import Example


@dataclass
class BalanceResult:
    examples: list[Example]
    cap: int | None  # examples per repository at most; None: nothing was capped
    dropped: Counter[str] = field(default_factory=Counter)  # repository -> examples left out

    def to_dict(self) -> dict[str, object]:
        return {"cap": self.cap, "dropped": dict(self.dropped)}


def repo_cap(counts: Sequence[int], max_share: float) -> int | None:
    """The largest cap C with C <= max_share * sum(min(n, C)), or None when no repository exceeds it
    or no cap of at least one example can meet the share (too few repositories)."""
    if not counts or not 0 < max_share < 1:
        return None
    total = sum(counts)
    if max(counts) <= max_share * total:
        return None

    def fits(cap: int) -> bool:
        return cap <= max_share * sum(min(n, cap) for n in counts)

    if not fits(1):
        return None
    low, high = 1, max(counts)  # fits(low) holds, fits(high) does not
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (mid, high) if fits(mid) else (low, mid)
    return low


def _pr_order(seed: int, repo: str, pr: int) -> str:
    return hashlib.sha256(f"{seed}\0{repo}\0{pr}".encode()).hexdigest()


def balance_by_repo(examples: Sequence[Example], max_share: float | None, seed: int = 0) -> BalanceResult:
    """``examples`` with every repository over the cap cut down to it by whole pull requests (the
    last PR taken may overshoot by its own size, never more). Order is kept."""
    counts = Counter(ex.repo for ex in examples)
    cap = repo_cap(list(counts.values()), max_share) if max_share is not None else None
    if cap is None:
        return BalanceResult(list(examples), None)
    by_pr: dict[tuple[str, int], int] = Counter((ex.repo, ex.pr) for ex in examples)
    chosen: dict[str, set[int]] = defaultdict(set)
    for repo, n in counts.items():
        if n <= cap:
            continue
        taken = 0
        for pr in sorted((p for r, p in by_pr if r == repo), key=lambda p: _pr_order(seed, repo, p)):
            if taken >= cap:
                break
            chosen[repo].add(pr)
            taken += by_pr[(repo, pr)]
    kept: list[Example] = []
    dropped: Counter[str] = Counter()
    for ex in examples:
        if counts[ex.repo] <= cap or ex.pr in chosen[ex.repo]:
            kept.append(ex)
        else:
            dropped[ex.repo] += 1
    return BalanceResult(kept, cap, dropped)
