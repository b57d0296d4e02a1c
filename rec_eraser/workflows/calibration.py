"""Where retraining would put the edited instances' losses, estimated without retraining.

Retraining without an instance turns it into one the model never saw; retraining on a
corrected form turns that form into one it trained on. How far such an instance's loss moves
is what the adapter memorised, and that can be measured on instances that are not edited at
all: the **memorisation gap** is the mean loss of comparable instances never trained on
minus that of instances trained on (both under one version of the adapter: the request's
parent, or the ancestor it was measured on, see below). The targets of one
request are then

- each removed instance: its loss now **plus** the gap (it becomes never-trained);
- each corrected form: its loss now **minus** the gap (it becomes trained-on),

and the update's damping is calibrated (``rec_eraser.core.calibration``) so that the
measured move of the edited instances' losses equals the target move. An adapter that has
memorised nothing (gap ≤ 0) gets the smallest step of the search range: retraining would
leave it where it is.

The targets are shifts, not levels, so that an edited instance harder or easier than average
keeps its own difficulty. Never-trained instances are, in order of preference, the instances
of users the recipe holds out of training (``holdout_users``: drawn exactly like trained
users, so what a deleted user is to a retrained model), training-split instances of users
with no instance in the training set, other training-split instances outside the training
set, then validation instances; the manifest records which.

The gap is a property of the adapter, not of a request, and its sampling noise is what limits
the calibration: on the medium TALLRec adapter, a sample of 64 trained + 64 never-trained
instances gave 0.031 ± 0.019 and one of 46 + 64 gave 0.007 ± 0.022, and the two chose
dampings ten times apart. So it is
measured once per lineage on a larger sample (128 + 128 by default): at training, in
``v0000``'s manifest (``rec-eraser train``), or else by the first calibrated request, in its
version's manifest (``measured_on`` names the version measured); every later request on that
lineage with the same settings reuses it.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import numpy as np
import torch

from rec_eraser.tasks.instance import Instance
from rec_eraser.workflows.erasure import EXACT_KINDS

logger = logging.getLogger(__name__)

LossesOf = Callable[[Sequence[Instance]], np.ndarray]


@dataclass(frozen=True)
class MemorisationGap:
    """Mean loss of never-trained minus trained reference instances, with its standard error."""

    gap: float
    standard_error: float
    trained_loss: float
    untrained_loss: float
    trained_instances: int
    untrained_instances: int
    untrained_source: str
    measured_on: str | None = None  # the version whose losses these are
    seconds: float | None = None  # what measuring it took
    reference_size: int | None = None  # the sample settings it was measured with
    seed: int | None = None
    # the mean number of train-split instances of each reference instance's user: never-trained users
    # lighter than the trained ones (a sub-sample reaches heavy users first) may differ in loss for
    # that reason alone, so the gap would mix population with memorisation
    trained_user_activity: float | None = None
    untrained_user_activity: float | None = None
    # the two samples' losses themselves, for the "quantile" target (``rec_eraser.core.calibration.quantile_moves``); None
    # in a gap recorded before they were kept
    trained_losses: list[float] | None = None
    untrained_losses: list[float] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def has_losses(self) -> bool:
        return bool(self.trained_losses) and bool(self.untrained_losses)


def memorisation_gap(trained: np.ndarray, untrained: np.ndarray, untrained_source: str = "given") -> MemorisationGap:
    """The gap between two samples of per-instance losses (Welch's standard error)."""
    trained, untrained = np.asarray(trained, dtype=float), np.asarray(untrained, dtype=float)
    if len(trained) < 2 or len(untrained) < 2:
        raise ValueError(
            f"the memorisation gap needs at least 2 trained and 2 untrained instances, got {len(trained)} and {len(untrained)}"
        )
    se = float(np.sqrt(trained.var(ddof=1) / len(trained) + untrained.var(ddof=1) / len(untrained)))
    return MemorisationGap(
        gap=float(untrained.mean() - trained.mean()),
        standard_error=se,
        trained_loss=float(trained.mean()),
        untrained_loss=float(untrained.mean()),
        trained_instances=len(trained),
        untrained_instances=len(untrained),
        untrained_source=untrained_source,
        trained_losses=[float(x) for x in trained],
        untrained_losses=[float(x) for x in untrained],
    )


HELD_OUT_SOURCE = "held-out users (drawn like the trained ones, kept out of training)"


def untrained_reference(
    training_set: Sequence[Instance],
    train_split: Sequence[Instance],
    valid_split: Sequence[Instance],
    size: int,
    seed: int,
    held_out: Sequence[Instance] = (),
) -> tuple[list[Instance], str]:
    """Up to ``size`` instances the adapter never trained on, from the best source available (module docstring).

    ``held_out``: the training draw's instances of the recipe's held-out users, the best source
    when there are enough of them: users outside the training set otherwise are the users the
    seeded sub-sample happened not to reach, lighter users on average than the trained ones.
    """
    trained_ids = {z.id for z in training_set}
    trained_users = {z.user for z in training_set}
    outside = [z for z in train_split if z.id not in trained_ids]
    sources = [
        (HELD_OUT_SOURCE, [z for z in held_out if z.id not in trained_ids]),
        ("train split, users outside the training set", [z for z in outside if z.user not in trained_users]),
        ("train split, instances outside the training set", outside),
        ("validation split, users outside the training set", [z for z in valid_split if z.user not in trained_users]),
        ("validation split", list(valid_split)),
    ]
    for label, pool in sources:
        if len(pool) >= min(size, 16):  # a source with a handful only would make the gap noise
            return _sample(pool, size, seed), label
    return [], "none"


def _sample(pool: Sequence[Instance], size: int, seed: int) -> list[Instance]:
    if len(pool) <= size:
        return list(pool)
    rng = np.random.default_rng(seed)
    return [pool[i] for i in np.sort(rng.choice(len(pool), size, replace=False))]


def trained_reference(training_set: Sequence[Instance], edited_ids: set[str], size: int, seed: int) -> list[Instance]:
    """Up to ``size`` training instances not in ``edited_ids``."""
    return _sample([z for z in training_set if z.id not in edited_ids], size, seed)


def measure_memorisation(
    losses_of: LossesOf,
    version: str,
    training_set: Sequence[Instance],
    edited_ids: set[str],
    ever_trained: Sequence[Instance],
    train_split: Sequence[Instance],
    valid_split: Sequence[Instance],
    size: int,
    seed: int,
    held_out: Sequence[Instance] = (),
) -> MemorisationGap | None:
    """The gap of ``version`` (whose training set is ``training_set``) on up to ``size`` + ``size``
    seeded instances; ``None`` when fewer than 2 of either kind exist.

    ``edited_ids``: instances its lineage edited (a corrected form was not trained on by the
    root); ``ever_trained``: the root's training set (never-trained means never by any version); ``held_out``: the
    recipe's held-out users' instances (see :func:`untrained_reference`).
    """
    t0 = time.perf_counter()
    trained = trained_reference(training_set, edited_ids, size, seed)
    untrained, source = untrained_reference(ever_trained, train_split, valid_split, size, seed, held_out)
    if len(trained) < 2 or len(untrained) < 2:
        return None
    gap = memorisation_gap(losses_of(trained), losses_of(untrained), source)
    activity = Counter(z.user for z in train_split)
    return replace(
        gap,
        measured_on=version,
        seconds=time.perf_counter() - t0,
        reference_size=size,
        seed=seed,
        trained_user_activity=_mean_activity(trained, activity),
        untrained_user_activity=_mean_activity(untrained, activity),
    )


def _mean_activity(instances: Sequence[Instance], activity: Counter) -> float:
    return float(np.mean([activity[z.user] for z in instances]))


def recorded_memorisation(
    lineage: Sequence[dict[str, Any]], size: int, seed: int, with_losses: bool = False
) -> MemorisationGap | None:
    """The gap the nearest version of ``lineage`` (manifests, newest first) recorded with these
    settings; with ``with_losses``, only one that kept its samples' losses."""
    known = {f.name for f in fields(MemorisationGap)}
    for record in lineage:
        gap = ((record.get("metrics") or {}).get("calibration") or {}).get("memorisation_gap")
        if gap and gap.get("measured_on") and gap.get("reference_size") == size and gap.get("seed") == seed:
            found = MemorisationGap(**{k: v for k, v in gap.items() if k in known})
            if found.has_losses or not with_losses:
                return found
    return None


def retained_drift(lineage: Sequence[dict[str, Any]]) -> tuple[float, int, int]:
    """Σ over the lineage's approximate requests (``kind`` "unlearned") above its newest exact version of |retained reference loss
    after − before| as each recorded it; how many recorded one, and how many did not (an
    uncalibrated or Gauss–Newton update measures no retained loss)."""
    total, measured, unmeasured = 0.0, 0, 0
    for record in lineage:
        if record.get("kind") in EXACT_KINDS:  # a training from scratch: the drift below it is gone
            break
        if record.get("kind") != "unlearned":
            continue
        retained = ((record.get("metrics") or {}).get("calibration") or {}).get("retained_loss")
        if retained:
            total += abs(retained["after"] - retained["before"])
            measured += 1
        else:
            unmeasured += 1
    return total, measured, unmeasured


def drift_check(lineage: Sequence[dict[str, Any]], gap: float | None) -> dict[str, Any]:
    """Is a version still to be trusted? Its lineage's retained drift against the memorisation gap.

    Each calibrated request moves the edited instances' loss by the gap on purpose; the loss of
    the instances it should leave alone moves too, as collateral. Once that collateral change,
    summed over the lineage, reaches the gap itself, approximate updates have changed the data
    they keep as much as the memorisation they remove, and the version should be retrained
    (compacted) before further updates are relied on. The bound is that scale, fixed a priori
    (no benchmark chose it). ``trusted`` is None (unknown) without a positive gap or when a
    request of the lineage measured no retained loss.

    The retained instances are the unedited rows of each update's curvature sample, on which
    the update is damped most, so the figure is in-sample and may understate the change on
    other retained data.
    """
    drift, measured, unmeasured = retained_drift(lineage)
    trusted = None if gap is None or not gap > 0 or unmeasured else drift < gap
    return {
        "retained_drift": drift,
        "requests": measured,
        "unmeasured_requests": unmeasured,
        "bound": gap,
        "trusted": trusted,
    }


class EditedLossObjective:
    """The calibration's objective: how far the edited losses moved, as a fraction of the target move.

    progress = [Σ_removed (ℓ_after − ℓ_before) + Σ_corrected (ℓ_before − ℓ_after)] / ((k_removed + k_corrected) · gap)

    measured on ``losses_of`` (the model holding the trial update); 1 = on target.
    """

    def __init__(
        self,
        losses_of: LossesOf,
        removed: Sequence[Instance],
        corrected: Sequence[Instance],
        gap: float,
        removed_before: np.ndarray | None = None,
        corrected_before: np.ndarray | None = None,
    ) -> None:
        """``removed_before`` / ``corrected_before``: the groups' current losses when the caller has them already."""
        if not gap > 0:
            raise ValueError(f"a target move needs a positive memorisation gap, got {gap}")
        if not removed and not corrected:
            raise ValueError("nothing to calibrate on: no removed and no corrected instance")
        self.losses_of = losses_of
        self.removed, self.corrected, self.gap = list(removed), list(corrected), gap
        self.removed_before = self._current(self.removed, removed_before)
        self.corrected_before = self._current(self.corrected, corrected_before)
        self.last: dict[str, float | None] = {}

    def _current(self, instances: list[Instance], given: np.ndarray | None) -> np.ndarray:
        if given is not None:
            if len(given) != len(instances):
                raise ValueError(f"{len(given)} losses given for {len(instances)} instances")
            return np.asarray(given, dtype=float)
        return self.losses_of(instances) if instances else np.zeros(0)

    def move(self) -> float:
        """The measured move of the current model, in units of loss summed over the edited instances."""
        removed_after = self.losses_of(self.removed) if self.removed else np.zeros(0)
        corrected_after = self.losses_of(self.corrected) if self.corrected else np.zeros(0)
        self.last = {"removed_loss": _mean(removed_after), "corrected_loss": _mean(corrected_after)}
        return float((removed_after - self.removed_before).sum() + (self.corrected_before - corrected_after).sum())

    def __call__(self, _model: torch.nn.Module) -> float:
        return self.move() / ((len(self.removed) + len(self.corrected)) * self.gap)

    def targets(self) -> dict[str, float | None]:
        """The target mean losses of the two groups."""
        return {
            "removed_loss": None if not self.removed else float(self.removed_before.mean() + self.gap),
            "corrected_loss": None if not self.corrected else float(self.corrected_before.mean() - self.gap),
        }


def _mean(x: np.ndarray) -> float | None:
    return float(x.mean()) if len(x) else None
