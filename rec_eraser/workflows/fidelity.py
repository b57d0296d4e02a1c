"""Can a benchmark run judge fidelity, and does a method land where Retrain lands?

Two judgements over the figures ``run_benchmark`` collects, both written into its result:

``can_judge``: whether the experiment is able to tell a good unlearner from doing nothing.

- ``beats_baselines``: the original adapter beats the task's simple baseline on the test
  prompts (TALLRec: AUC above the target item's training like-rate; LLaRA: hit@1 above
  popularity). An adapter that learnt nothing cannot lose what it learnt.
- ``memorised``: the mean loss of never-trained instances exceeds that of trained ones by
  more than twice its standard error (the memorisation gap). Without it there is nothing
  to forget.
- ``retrain_moves_target``: Retrain moves the edit's target figure (the forget-set loss for
  IR, the corrected forms' loss for QM and RC) further from the original than its two seeds
  differ on it. Where it does not, doing nothing is as good as Retrain and the experiment
  **cannot judge fidelity**.
- ``test_prompts``: at least 200 test prompts.

``targets``, per method, against Retrain's seed spread in the same run:

- ``target_figure``: inside the interval of Retrain's two seeds, widened on each side by 10%
  of Retrain's move from the original;
- ``agreement``: agreement with Retrain at least Retrain seed 1's minus 0.02;
- ``utility_gap``: |utility − Retrain's| no larger than the seeds' gap plus 0.01;
- ``membership_auc``: within 0.05 of Retrain's (``seed_spread``: how far Retrain's own seed 1
  is, which says whether 0.05 is above the run's noise);
- ``cost``: at most 0.1 of Retrain's seconds.
"""

from __future__ import annotations

import math
from typing import Any

from rec_eraser.tasks.registry import task_of

MIN_TEST_PROMPTS = 200
WIDEN = 0.10  # of Retrain's move, on each side of the seeds' interval
AGREEMENT_SLACK = 0.02
UTILITY_SLACK = 0.01
MEMBERSHIP_SLACK = 0.05
MAX_COST = 0.10
#: a figure equal to its bound meets it: the figures are sums and differences of rates (hit@1 of
#: 200 prompts moves in steps of 0.005), whose float rounding (~1e-17) must not decide a tie
TIE = 1e-9


def target_figure(edit: str) -> str:
    """The metric an edit is judged on: the forget-set loss (ir) or the corrected forms' loss (qm, rc)."""
    return "forget_loss" if edit == "ir" else "corrected_loss"


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def _distance(a: Any, b: Any) -> float | None:
    return abs(a - b) if _finite(a) and _finite(b) else None


def _spread(result: dict[str, Any]) -> dict[str, Any]:
    """Retrain's second seed's metrics (against seed 0)."""
    return next(iter(result["retrain_spread"].values()))


def main_metric(task: str) -> str:
    """The utility figure the baseline condition compares: the task's main metric (TALLRec AUC, LLaRA hit@1)."""
    return task_of(task).main_metric


def adapter_conditions(
    metric: str, adapter: float | None, baseline: dict[str, Any], memorisation: dict[str, Any]
) -> dict[str, Any]:
    """The two conditions on the original adapter alone (``beats_baselines``, ``memorised``), which
    ``rec-eraser bench RECIPE --check`` reads before any Retrain is trained."""
    gap, se = memorisation.get("gap"), memorisation.get("standard_error")
    return {
        "beats_baselines": {
            "metric": metric,
            "adapter": adapter,
            "baseline": baseline.get("name"),
            "baseline_value": baseline.get("value"),
            "verdict": _finite(adapter) and _finite(baseline.get("value")) and adapter > baseline["value"],
        },
        "memorised": {**memorisation, "verdict": _finite(gap) and _finite(se) and gap > 2 * se},
    }


def can_judge(result: dict[str, Any], baseline: dict[str, Any], memorisation: dict[str, Any]) -> dict[str, Any]:
    """The four conditions with their figures and verdicts; ``verdict`` is true when all hold.

    ``baseline``: ``{"name", "value"}`` of the simple baseline on the main metric;
    ``memorisation``: a :class:`~rec_eraser.workflows.calibration.MemorisationGap` as a dict.
    """
    main = main_metric(result["experiment"]["task"])
    figure = target_figure(result["experiment"]["edit"])
    retrain = result["methods"].get("retrain", {}).get("metrics", {})
    original_value, seed0, seed1 = (
        result["original"]["metrics"].get(figure),
        retrain.get(figure),
        _spread(result).get(figure),
    )
    move = abs(seed0 - original_value) if _finite(seed0) and _finite(original_value) else None
    spread = abs(seed1 - seed0) if _finite(seed0) and _finite(seed1) else None
    conditions = {
        **adapter_conditions(main, result["original"]["metrics"].get(main), baseline, memorisation),
        "retrain_moves_target": {
            "figure": figure,
            "original": original_value,
            "retrain_seed0": seed0,
            "retrain_seed1": seed1,
            "move": move,
            "seed_spread": spread,
            "verdict": move is not None and spread is not None and move > spread,
        },
        "test_prompts": {
            "n": result["test_prompts"],
            "minimum": MIN_TEST_PROMPTS,
            "verdict": result["test_prompts"] >= MIN_TEST_PROMPTS,
        },
    }
    return {
        **conditions,
        "verdict": all(c["verdict"] for c in conditions.values()),
        "can_judge_fidelity": conditions["retrain_moves_target"]["verdict"],
    }


def targets(result: dict[str, Any], row: dict[str, Any]) -> dict[str, Any]:
    """The five targets of one method's row (``result["methods"][name]``); ``met`` counts those met."""
    figure = target_figure(result["experiment"]["edit"])
    m = row["metrics"]
    retrain = result["methods"]["retrain"]["metrics"]
    seed1 = _spread(result)
    original = result["original"]["metrics"]
    out: dict[str, Any] = {}
    lo = hi = None
    if _finite(retrain.get(figure)) and _finite(seed1.get(figure)) and _finite(original.get(figure)):
        widen = WIDEN * abs(retrain[figure] - original[figure])
        lo, hi = min(retrain[figure], seed1[figure]) - widen, max(retrain[figure], seed1[figure]) + widen
    value = m.get(figure)
    out["target_figure"] = {
        "figure": figure,
        "value": value,
        "low": lo,
        "high": hi,
        "met": lo is not None and _finite(value) and lo - TIE <= value <= hi + TIE,
    }
    bound = seed1.get("agreement_with_retrain")
    bound = bound - AGREEMENT_SLACK if _finite(bound) else None
    value = m.get("agreement_with_retrain")
    out["agreement"] = {
        "value": value,
        "min": bound,
        "met": bound is not None and _finite(value) and value >= bound - TIE,
    }
    bound = abs(seed1["utility_gap"]) + UTILITY_SLACK if _finite(seed1.get("utility_gap")) else None
    value = abs(m["utility_gap"]) if _finite(m.get("utility_gap")) else None
    out["utility_gap"] = {
        "value": value,
        "max": bound,
        "met": bound is not None and value is not None and value <= bound + TIE,
    }
    value = _distance(m.get("membership_auc"), retrain.get("membership_auc"))
    # the seeds' own distance says whether the 0.05 is above this run's noise (it need not be: a forget set of
    # a few dozen instances gives an AUC whose standard error is several hundredths)
    out["membership_auc"] = {
        "value": value,
        "max": MEMBERSHIP_SLACK,
        "met": value is not None and value <= MEMBERSHIP_SLACK + TIE,
        "seed_spread": _distance(seed1.get("membership_auc"), retrain.get("membership_auc")),
    }
    value = row.get("ratio_to_retrain")
    out["cost"] = {"value": value, "max": MAX_COST, "met": _finite(value) and value <= MAX_COST + TIE}
    out["met"] = sum(1 for t in out.values() if t["met"])
    out["of"] = 5
    return out
