"""The report's recovery caveat, on hand-made result objects (no model)."""

from __future__ import annotations

import pytest

from rec_eraser.workflows.bench_report import markdown, recovery_caveat


def _result(edit: str, original: float, retrain: float, seed_gap: float) -> dict:
    return {
        "recipe": "recipes/x.toml",
        "quick": True,
        "events": 1,
        "forget_instances": 2,
        "train_instances": 10,
        "corrected_instances": 2,
        "test_prompts": 20,
        "experiment": {"task": "tallrec", "edit": edit, "dataset": "ml-100k", "fraction": 0.2, "retrain_seeds": [0, 1]},
        # as run_benchmark writes it: the original's utility_gap is original − Retrain
        "original": {"metrics": {"auc": original, "utility_gap": original - retrain}, "seconds": 1.0},
        "methods": {
            "retrain": {"metrics": {"auc": retrain, "recovery": 1.0, "recovery_corrected_loss": 1.0}, "seconds": 2.0}
        },
        "retrain_spread": {"seed1_vs_seed0": {"auc": retrain + seed_gap, "utility_gap": seed_gap}},
    }


def test_recovery_within_retrains_seed_spread_is_flagged_as_noise():
    # the TALLRec RC quick run: Retrain moved AUC by 1/84 (one positive-negative pair), as much as its seeds differ
    result = _result("rc", original=39 / 84, retrain=38 / 84, seed_gap=1 / 84)
    caveat = recovery_caveat(result)
    assert caveat is not None and "noise" in caveat and "0.0119" in caveat
    assert caveat in markdown(result)


@pytest.mark.parametrize(
    "edit, original, retrain, seed_gap",
    [
        ("rc", 0.50, 0.70, 0.05),  # Retrain moved 0.2, seeds differ by 0.05: recovery means something
        ("ir", 0.46, 0.45, 0.05),  # no recovery for removals
        ("qm", 0.50, float("nan"), 0.05),  # a missing figure: nothing to judge
    ],
)
def test_no_caveat_when_recovery_is_resolvable_or_not_reported(edit, original, retrain, seed_gap):
    assert recovery_caveat(_result(edit, original, retrain, seed_gap)) is None


def test_the_table_has_the_corrected_loss_recovery_column():
    table = markdown(_result("rc", original=0.5, retrain=0.7, seed_gap=0.01))
    header = table.splitlines()[6]
    assert "| recovery | recovery_corrected_loss |" in header
