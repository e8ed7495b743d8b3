"""Balancing training examples across repositories (bot.balance) and its hook in the training split."""

from __future__ import annotations

from collections import Counter

import pytest

from bot.balance import balance_by_repo, repo_cap
from bot.examples import Example, ExampleComment
from finetune.data import split_examples


def _examples(sizes: dict[str, int], per_pr: int = 1) -> list[Example]:
    out = []
    for repo, n in sizes.items():
        for i in range(n):
            pr = i // per_pr + 1
            out.append(
                Example(
                    f"{repo}#{i}",
                    repo,
                    pr,
                    "a.py",
                    "@@ -1,1 +1,1 @@\n-a\n+b",
                    [ExampleComment(1, "RIGHT", f"c{i}")],
                    f"2024-01-{1 + i % 28:02d}T00:00:00Z",
                )
            )
    return out


def test_the_cap_is_the_water_level_that_meets_the_share():
    # one repository of 366 among others totalling 400, none over 57: capped at 400 * 0.25 / 0.75 = 133
    counts = [366, 57, 49, 37, 36] + [10] * 22 + [1] * 1
    cap = repo_cap(counts, 0.25)
    assert cap is not None and cap <= 0.25 * sum(min(n, cap) for n in counts) < cap + 1
    assert repo_cap([10, 10, 10, 10, 10], 0.25) is None  # nobody dominates
    assert repo_cap([900, 100], 0.25) is None  # two repositories can never meet a quarter each
    assert repo_cap([900, 100], 0.9) is None  # 90% is allowed: nothing to do


def test_balancing_cuts_only_the_dominant_repository_by_whole_prs_the_same_way_every_time():
    examples = _examples({"big": 300, "a": 40, "b": 40, "c": 40, "d": 40}, per_pr=3)
    result = balance_by_repo(examples, 0.25, seed=1)
    counts = Counter(ex.repo for ex in result.examples)
    assert counts["a"] == counts["b"] == counts["c"] == counts["d"] == 40
    assert counts["big"] <= result.cap + 2 and counts["big"] / len(result.examples) <= 0.27
    assert result.dropped == Counter({"big": 300 - counts["big"]})
    # whole PRs: a kept PR keeps all three of its examples
    kept_prs = Counter(ex.pr for ex in result.examples if ex.repo == "big")
    assert set(kept_prs.values()) == {3}
    assert [e.id for e in balance_by_repo(examples, 0.25, seed=1).examples] == [e.id for e in result.examples]
    assert [e.id for e in balance_by_repo(examples, 0.25, seed=2).examples] != [e.id for e in result.examples]


@pytest.mark.parametrize("share", [None, 0.5])
def test_nothing_changes_when_no_repository_dominates_or_balancing_is_off(share):
    examples = _examples({"a": 30, "b": 30, "c": 25})
    result = balance_by_repo(examples, share)
    assert result.examples == examples and result.cap is None and not result.dropped


def test_the_training_split_is_balanced_and_the_held_out_splits_are_not():
    examples = _examples({"big": 400, "a": 50, "b": 50, "c": 50, "d": 50})
    plain = split_examples(examples, 0)
    balanced = split_examples(examples, 0, max_repo_share=0.25)
    assert balanced.test == plain.test and balanced.validation == plain.validation
    share = Counter(ex.repo for ex in balanced.train)["big"] / len(balanced.train)
    assert share <= 0.26 < Counter(ex.repo for ex in plain.train)["big"] / len(plain.train)
    assert balanced.settings["balance"]["dropped"]["big"] > 0 and "balance" not in plain.settings
