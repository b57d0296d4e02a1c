"""The memorisation gap is measured once per lineage and found again by the settings it was measured with."""

from __future__ import annotations

import numpy as np
import pytest

from rec_eraser.tasks.instance import Instance
from rec_eraser.workflows.calibration import (
    MemorisationGap,
    drift_check,
    measure_memorisation,
    memorisation_gap,
    recorded_memorisation,
)


def _record(gap: dict | None) -> dict:
    return {"metrics": {"calibration": {"memorisation_gap": gap}}}


def _gap(value: float, on: str | None = "v0000", size: int = 128, seed: int = 0) -> dict:
    return MemorisationGap(
        gap=value,
        standard_error=0.01,
        trained_loss=1.0,
        untrained_loss=1.0 + value,
        trained_instances=5,
        untrained_instances=5,
        untrained_source="test",
        measured_on=on,
        seconds=1.0,
        reference_size=size,
        seed=seed,
    ).to_dict()


def test_the_nearest_gap_with_the_same_settings_is_found():
    lineage = [{"metrics": {}}, _record(_gap(0.2, "v0001")), _record(_gap(0.1))]  # newest first
    assert recorded_memorisation(lineage, 128, 0).gap == 0.2
    assert recorded_memorisation(lineage[2:], 128, 0).gap == 0.1
    # other settings, or a record from before gaps named their version, are measured again
    assert recorded_memorisation([_record(_gap(0.2, size=64))], 128, 0) is None
    assert recorded_memorisation([_record(_gap(0.2, seed=1))], 128, 0) is None
    assert recorded_memorisation([_record(_gap(0.2, on=None))], 128, 0) is None
    assert recorded_memorisation([{"metrics": None}, {}], 128, 0) is None
    # a key a later version may add does not break reading
    assert recorded_memorisation([_record(_gap(0.3) | {"added_later": 1})], 128, 0).gap == 0.3


def test_a_gap_keeps_its_samples_losses_and_only_such_a_record_serves_the_quantile_target():
    gap = memorisation_gap(np.array([0.1, 0.2, 0.3]), np.array([0.4, 0.5]))
    assert gap.trained_losses == [0.1, 0.2, 0.3] and gap.untrained_losses == [0.4, 0.5] and gap.has_losses
    with_losses = gap.to_dict() | {"measured_on": "v0000", "reference_size": 128, "seed": 0}
    lineage = [_record(_gap(0.2, "v0001")), _record(with_losses)]  # the newer record has no losses
    assert recorded_memorisation(lineage, 128, 0).gap == 0.2
    found = recorded_memorisation(lineage, 128, 0, with_losses=True)
    assert found.measured_on == "v0000" and found.untrained_losses == [0.4, 0.5]
    assert recorded_memorisation(lineage[:1], 128, 0, with_losses=True) is None


def _instance(name: str, user: str) -> Instance:
    return Instance(
        id=name,
        task="tallrec",
        split="train",
        user=user,
        position=0,
        prompt="p",
        response=" Yes.",
        interactions=(),
        history_items=(),
        target_item="i",
        label=1,
    )


def test_measure_uses_unedited_trained_instances_and_never_trained_users():
    trained = [_instance(f"t{i}", f"u{i % 4}") for i in range(20)]
    outside = [_instance(f"n{i}", f"w{i}") for i in range(20)]  # users the adapter never saw
    loss = {z.id: 1.0 + 0.01 * i for i, z in enumerate(trained)} | {z.id: 3.0 for z in outside}
    seen: list[list[str]] = []

    def losses_of(instances):
        seen.append([z.id for z in instances])
        return np.array([loss[z.id] for z in instances])

    edited = {"t0", "t1"}
    gap = measure_memorisation(losses_of, "v0003", trained, edited, trained, trained + outside, [], size=8, seed=0)
    assert gap.measured_on == "v0003" and (gap.reference_size, gap.seed) == (8, 0)
    assert gap.untrained_source == "train split, users outside the training set"
    assert len(seen[0]) == 8 and not edited & set(seen[0]) and all(i.startswith("t") for i in seen[0])
    assert len(seen[1]) == 8 and all(i.startswith("n") for i in seen[1])
    assert gap.gap == pytest.approx(np.mean([loss[i] for i in seen[1]]) - np.mean([loss[i] for i in seen[0]]))
    assert gap.trained_instances == gap.untrained_instances == 8
    # each trained user holds 5 of the train split's instances, each outside user 1: the population differs
    assert (gap.trained_user_activity, gap.untrained_user_activity) == (5.0, 1.0)
    assert measure_memorisation(losses_of, "v0000", trained[:1], set(), trained, trained, [], size=8, seed=0) is None


def _retained(before: float, after: float) -> dict:
    return {"kind": "unlearned", "metrics": {"calibration": {"retained_loss": {"before": before, "after": after}}}}


def test_a_lineage_is_trusted_until_its_retained_drift_reaches_the_gap():
    trained = {"kind": "trained", "metrics": {}}
    lineage = [_retained(0.20, 0.21), _retained(0.30, 0.28), trained]  # |+0.01| + |-0.02|, two requests
    check = drift_check(lineage, gap=0.05)
    assert (
        check["retained_drift"] == pytest.approx(0.03) and check["requests"] == 2 and check["unmeasured_requests"] == 0
    )
    assert check["bound"] == 0.05 and check["trusted"] is True
    assert drift_check(lineage, gap=0.03 - 1e-9)["trusted"] is False
    assert drift_check(lineage, gap=None)["trusted"] is None and drift_check(lineage, gap=-0.1)["trusted"] is None
    # an approximate request that measured no retained loss (uncalibrated, Gauss-Newton) makes it unknown
    blind = {"kind": "unlearned", "metrics": {}}
    assert drift_check([blind, *lineage], gap=0.05)["trusted"] is None


def test_held_out_users_are_the_preferred_never_trained_reference():
    from rec_eraser.workflows.calibration import HELD_OUT_SOURCE, untrained_reference

    trained = [_instance(f"t{i}", f"u{i % 4}") for i in range(20)]
    outside = [_instance(f"n{i}", f"w{i}") for i in range(20)]
    held = [_instance(f"h{i}", f"x{i % 5}") for i in range(20)]
    picked, source = untrained_reference(trained, trained + outside + held, [], size=8, seed=0, held_out=held)
    assert source == HELD_OUT_SOURCE and all(z.id.startswith("h") for z in picked) and len(picked) == 8
    # too few held out (fewer than 16 here): the next source
    picked, source = untrained_reference(trained, trained + outside + held, [], size=16, seed=0, held_out=held[:5])
    assert source == "train split, users outside the training set"
