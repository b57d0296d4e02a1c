"""A run's memorisation gap: the one wiring of its sample that training and requests share.

The gap itself (its definition, its sample, its figures) is :mod:`rec_eraser.workflows.calibration`;
this module measures it on a run's version: with the run's validation split, the recipe's
held-out users and the calibration's sample settings, at training (``training_memorisation``,
recorded in v0000's manifest) or by a request (``version_memorisation``), and checks a gap a
caller hands in (``checked_gap``).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

from rec_eraser.tasks.instance import Instance
from rec_eraser.tasks.prepare import load_instances
from rec_eraser.training.recipe import Recipe
from rec_eraser.training.scoring import instance_losses
from rec_eraser.training.train import LoadedModel, Measure, held_out_instances
from rec_eraser.training.versions import version_name
from rec_eraser.workflows.calibration import MemorisationGap, measure_memorisation
from rec_eraser.workflows.registry import Registry
from rec_eraser.workflows.update import DEFAULT_CALIBRATION, Calibrate


def version_memorisation(
    registry: Registry, version: str, loaded: Any, train_split: list, calibrate: Calibrate
) -> MemorisationGap | None:
    """Measure ``version``'s memorisation gap with ``calibrate``'s sample (done once per lineage,
    then recorded and reused); ``loaded``: that version's model."""
    root_recipe = Recipe.from_dict(registry.lineage(version)[-1]["recipe"])
    return _memorisation_of(
        registry.run_dir,
        root_recipe,
        version,
        loaded,
        registry.training_set(version, train_split),
        set(registry.edited(version)),
        registry.training_set("v0000", train_split),
        train_split,
        calibrate,
    )


def _memorisation_of(
    run_dir: Path,
    root_recipe: Recipe,
    version: str,
    loaded: Any,
    training_set: list,
    edited_ids: set[str],
    ever_trained: list,
    train_split: list,
    calibrate: Calibrate,
) -> MemorisationGap | None:
    """The one wiring of the gap's sample (validation split, held-out users, size, seed) that
    requests and training share, so both measure the same figure."""
    return measure_memorisation(
        partial(instance_losses, loaded),
        version,
        training_set,
        edited_ids,
        ever_trained,
        train_split,
        load_instances(run_dir, "valid"),
        calibrate.reference_size,
        calibrate.seed,
        held_out_instances(run_dir, root_recipe, train_split),
    )


def training_memorisation(run_dir: Path | str, recipe: Recipe, calibrate: Calibrate = DEFAULT_CALIBRATION) -> Measure:
    """For ``train_run(..., measure=)``: v0000's memorisation gap, measured on the freshly trained
    model with ``calibrate``'s sample, recorded in v0000's manifest where every request of the
    lineage finds and reuses it. Training pays the one-time measurement, so no deletion request
    does (a lineage trained without it gets it measured by its first calibrated request)."""
    run_dir = Path(run_dir)

    def measure(loaded: LoadedModel, training_set: list[Instance]) -> dict[str, Any]:
        train_split = load_instances(run_dir, "train")
        gap = _memorisation_of(
            run_dir, recipe, version_name(0), loaded, training_set, set(), training_set, train_split, calibrate
        )
        return {} if gap is None else {"calibration": {"memorisation_gap": gap.to_dict()}}

    return measure


def checked_gap(
    gap: MemorisationGap | None, lineage: list[dict[str, Any]], calibrate: Calibrate
) -> MemorisationGap | None:
    """A caller's gap, checked: measured on a version of this lineage, with ``calibrate``'s sample settings."""
    if gap is None:
        return None
    versions = [record["version"] for record in lineage]
    if gap.measured_on not in versions:
        raise ValueError(
            f"the memorisation gap given was measured on {gap.measured_on!r}, not on a version of this lineage ({versions[0]})"
        )
    if (gap.reference_size, gap.seed) != (calibrate.reference_size, calibrate.seed):
        raise ValueError(
            f"the memorisation gap given was measured with reference_size {gap.reference_size}, seed {gap.seed}; "
            f"the calibration asks for {calibrate.reference_size}, {calibrate.seed}"
        )
    return gap
