"""The promotion gate: may a candidate version replace the current one?

It lives with evaluation because it decides on evaluation's numbers: `revbot eval` prints the same
three inputs (the gate metric, the parse-failure rate, the validation loss) that `revbot retrain`
decides on. The decision is a pure function of those numbers, so it can be tested without a model.

A candidate is promoted only when all of these hold, otherwise the current version stays:
1. it is at least as good as the current version on the gate metric (same test hunks, same
   generation settings); a value that could not be measured counts as the worst;
2. the metric carries signal: not undefined on both sides, and for a higher-is-better metric not
   zero on both sides (a 0 = 0 tie is no evidence that the candidate works);
3. its parse-failure rate is at most ``PARSE_FAILURE_TOLERANCE`` (absolute) above the current one's;
4. its validation loss is at most ``VAL_LOSS_TOLERANCE`` (relative) above the current one's. Each
   version's loss is on its own validation split, which shifts as the store grows, hence a
   tolerance rather than a strict comparison; a briefly trained model's loss is many times higher.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from finetune.metrics import LOWER_IS_BETTER as _LOWER_METRICS
from finetune.metrics import METRIC_INFO

DEFAULT_GATE_METRIC = "review_f1"
PARSE_FAILURE_TOLERANCE = 0.05  # the candidate may fail to parse at most 5 more answers in 100
VAL_LOSS_TOLERANCE = 0.20  # the candidate's validation loss may be at most 20% higher
# answer_loss: held-out loss measured on both models by `revbot retrain` (not an eval metric)
GATE_METRICS = tuple(k for k, m in METRIC_INFO.items() if m.higher_is_better is not None) + ("answer_loss",)
LOWER_IS_BETTER = _LOWER_METRICS + ("answer_loss",)
_EPS = 1e-9


@dataclass(frozen=True)
class Evidence:
    """What one version brings to the gate."""

    name: str
    metric: float | None  # the gate metric, on the shared test hunks
    parse_failure_rate: float | None  # on the same hunks
    val_loss: float | None  # recorded at training time


@dataclass(frozen=True)
class Check:
    name: str  # metric | signal | parse_failures | val_loss
    passed: bool
    detail: str


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    reason: str
    checks: tuple[Check, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"promote": self.promote, "reason": self.reason, "checks": [asdict(c) for c in self.checks]}


def _num(value: float | None, digits: int = 4) -> str:
    return "none" if value is None else f"{value:.{digits}f}"


def at_least_as_good(candidate: float | None, incumbent: float | None, metric: str) -> bool:
    """Candidate >= incumbent (<= for a lower-is-better metric). A missing value counts as the worst."""
    lower = metric in LOWER_IS_BETTER
    worst = float("inf") if lower else float("-inf")
    c = worst if candidate is None else candidate
    i = worst if incumbent is None else incumbent
    return c <= i + _EPS if lower else c >= i - _EPS


def has_signal(candidate: float | None, incumbent: float | None, metric: str) -> bool:
    """False when the two values cannot show which version is better: both undefined, or both zero
    on a metric where zero means nothing was achieved."""
    if candidate is None and incumbent is None:
        return False
    if metric in LOWER_IS_BETTER:
        return True
    return bool(candidate) or bool(incumbent)


def decide(
    metric: str,
    candidate: Evidence,
    incumbent: Evidence | None,
    *,
    parse_failure_tolerance: float = PARSE_FAILURE_TOLERANCE,
    val_loss_tolerance: float = VAL_LOSS_TOLERANCE,
) -> GateDecision:
    """Promote ``candidate`` over ``incumbent`` (None: nothing is current yet) or not, and why."""
    if incumbent is None:
        return GateDecision(
            True, f"no version was current: the first candidate is promoted ({metric} {_num(candidate.metric)})"
        )
    other = incumbent.name
    c, i = candidate.metric, incumbent.metric
    checks = []
    if at_least_as_good(c, i, metric):
        checks.append(Check("metric", True, f"{metric} {_num(c)} is at least as good as {other}'s {_num(i)}"))
    else:
        checks.append(Check("metric", False, f"{metric} {_num(c)} is worse than {other}'s {_num(i)}"))
    if has_signal(c, i, metric):
        checks.append(Check("signal", True, f"{metric} carries signal"))
    else:
        both = "undefined" if c is None and i is None else "zero"
        checks.append(
            Check(
                "signal",
                False,
                f"no evidence: {metric} is {both} for both {candidate.name} and {other} "
                "(a tie at nothing says nothing)",
            )
        )

    cp, ip = candidate.parse_failure_rate, incumbent.parse_failure_rate
    if cp is None and ip is not None:
        checks.append(Check("parse_failures", False, "the candidate's parse-failure rate was not measured"))
    elif cp is None or ip is None or cp <= ip + parse_failure_tolerance + _EPS:
        checks.append(
            Check(
                "parse_failures",
                True,
                f"parse failures {_num(cp, 3)} vs {other}'s {_num(ip, 3)} (tolerance +{parse_failure_tolerance:g})",
            )
        )
    else:
        checks.append(
            Check(
                "parse_failures",
                False,
                f"parse failures {_num(cp, 3)} vs {other}'s {_num(ip, 3)}: worse "
                f"by more than the {parse_failure_tolerance:g} tolerance",
            )
        )

    cl, il = candidate.val_loss, incumbent.val_loss
    if cl is None and il is not None:
        checks.append(Check("val_loss", False, "the candidate has no validation loss to compare"))
    elif cl is None or il is None or cl <= il * (1 + val_loss_tolerance) + _EPS:
        checks.append(
            Check(
                "val_loss",
                True,
                f"validation loss {_num(cl)} vs {other}'s {_num(il)} (tolerance +{100 * val_loss_tolerance:g}%)",
            )
        )
    else:
        checks.append(
            Check(
                "val_loss",
                False,
                f"validation loss {_num(cl)} vs {other}'s {_num(il)}: more than {100 * val_loss_tolerance:g}% worse",
            )
        )

    failed = [ch for ch in checks if not ch.passed]
    if failed:
        return GateDecision(False, "; ".join(ch.detail for ch in failed), tuple(checks))
    return GateDecision(True, "; ".join(ch.detail for ch in checks if ch.name != "signal"), tuple(checks))
