"""Choosing the damping of one request from a figure of the updated model, without retraining.

An influence step Δθ(λ) = (C + λI)⁻¹ b shrinks as λ grows (each eigen-component of b by
1/(μ + λ)), from the undamped Newton step at λ → 0 to nothing at λ → ∞. A fixed rule for λ
(``rec_eraser.core.damping``) was tuned on one toy task and lands far from retraining
elsewhere: too long a step on adapters that did not memorise their data, too short on ones
whose curvature is set by a few large gradients. Here λ is chosen per request instead: the
caller measures a figure of the *updated* model and says how far it moved toward where
retraining would put it, as a ``progress`` (0 = where it started, 1 = on target), and the
calibration searches the damping's scale for progress 1.

What the target is comes from the caller (the unlearning workflows use the loss of
comparable instances the model never trained on; see ``rec_eraser.workflows.calibration``);
this module only searches. The search is a bisection in log λ: starting from the rule's λ,
it steps by ``expand`` until the target is bracketed (or the bracket's end is reached), then
halves the bracket in log space. It assumes progress falls as λ grows, which holds for the
first-order change of the edited losses (−bᵀ(C + λI)⁻¹b·n is monotone in λ) and was the
case in every measured run; where it is not, the best trial found is returned all the same
and every trial is in the report.

Why not the first-order prediction alone: it is exact only for small steps, and the steps
that matter here are not small (on TALLRec adapters the rule's step raised the forgotten
loss by twice what the linear model predicted). So every trial measures the real figure;
the linear prediction is kept beside it as a trust check.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from rec_eraser.core.edits import Edit, new_samples, old_samples

if TYPE_CHECKING:
    from rec_eraser.core.fisher import EmpiricalFisher, InfluenceSpectrum

logger = logging.getLogger(__name__)

#: ``objective(model) -> progress``: measured on the model with the trial update applied
Objective = Callable[[torch.nn.Module], float]


@dataclass(frozen=True)
class CalibrationConfig:
    """How the damping's scale is searched.

    Attributes:
        min_factor, max_factor: the search range, as multiples of the starting damping (the
            automatic rule's λ, or the one given).
        expand: the factor of each step while the target is not bracketed.
        trials: the most evaluations of the objective (each costs what the objective costs:
            in the workflows, forward passes over the edited instances).
        tol: stop once |progress − 1| is at most this.
    """

    min_factor: float = 1e-3
    max_factor: float = 1e3
    expand: float = 10.0
    trials: int = 8
    tol: float = 0.1

    def __post_init__(self) -> None:
        if not 0 < self.min_factor <= 1 <= self.max_factor:
            raise ValueError(
                f"calibration needs 0 < min_factor <= 1 <= max_factor, got {self.min_factor}, {self.max_factor}"
            )
        if not self.expand > 1:
            raise ValueError(f"calibration expand must be > 1, got {self.expand}")
        if self.trials < 1:
            raise ValueError(f"calibration trials must be >= 1, got {self.trials}")
        if not self.tol > 0:
            raise ValueError(f"calibration tol must be > 0, got {self.tol}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Calibration:
    """The chosen scale of the damping and how it was found."""

    factor: float  # the chosen damping = factor × the starting damping
    progress: float  # the objective at the chosen factor (1 = on target)
    reached: bool  # |progress − 1| <= tol
    trials: list[tuple[float, float]] = field(default_factory=list)  # (factor, progress) in the order tried

    def to_dict(self) -> dict[str, Any]:
        return {
            "factor": self.factor,
            "progress": self.progress,
            "reached": self.reached,
            "trials": [list(t) for t in self.trials],
        }


def calibrate_scale(progress_at: Callable[[float], float], config: CalibrationConfig | None = None) -> Calibration:
    """The damping factor whose update brings ``progress_at(factor)`` nearest to 1.

    ``progress_at`` is assumed to fall as the factor grows (a larger damping, a shorter step).
    Non-finite progress (a step so long the model broke) counts as overshooting.
    """
    cfg = config or CalibrationConfig()
    trials: list[tuple[float, float]] = []

    def measure(factor: float) -> float:
        value = float(progress_at(factor))
        if not math.isfinite(value):
            value = math.inf
        trials.append((factor, value))
        logger.info("calibration: damping x %.3g -> progress %.3g", factor, value)
        return value

    def done() -> bool:
        return abs(trials[-1][1] - 1) <= cfg.tol or len(trials) >= cfg.trials

    lo = hi = None  # log factors with progress above (lo: short of damping) and below 1
    log_f = 0.0
    value = measure(1.0)
    step = math.log(cfg.expand)
    log_min, log_max = math.log(cfg.min_factor), math.log(cfg.max_factor)
    while not done():
        if value > 1:
            lo = log_f
        else:
            hi = log_f
        if lo is not None and hi is not None:
            log_f = (lo + hi) / 2
        elif value > 1:  # overshoot: more damping
            if log_f >= log_max:
                break
            log_f = min(log_f + step, log_max)
        else:  # short of the target: less damping
            if log_f <= log_min:
                break
            log_f = max(log_f - step, log_min)
        value = measure(math.exp(log_f))
    factor, best = min(trials, key=lambda t: (abs(t[1] - 1), -t[0]))
    return Calibration(factor=factor, progress=best, reached=abs(best - 1) <= cfg.tol, trials=trials)


class ParameterSnapshot:
    """The trainable parameters' values, to try an update and put the model back exactly."""

    def __init__(self, params: list[torch.nn.Parameter]) -> None:
        self.params = params
        self.values = [p.detach().clone() for p in params]

    def restore(self) -> None:
        with torch.no_grad():
            for p, v in zip(self.params, self.values):
                p.copy_(v)


@dataclass
class ReferenceCalibration:
    """The damping factor at which the influence function predicts, for reference groups of
    training rows, a mean leave-group-out move equal to a measured target (:func:`reference_factor`)."""

    factor: float  # the chosen damping = factor × the starting damping
    target: float  # the per-instance move asked for
    predicted: float  # the mean predicted per-instance move of the reference at ``factor``
    reached: bool  # |predicted / target − 1| <= 1e-3 inside the range (else the end of the range nearest to it)
    groups: int
    rows: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def reference_factor(
    spectrum: InfluenceSpectrum,
    groups: list[list[int]],
    n: int,
    target: float,
    config: CalibrationConfig | None = None,
    spectrum_of: Callable[[list[int]], InfluenceSpectrum] | None = None,
) -> ReferenceCalibration:
    """The factor f of the starting damping at which removing each reference group alone would,
    to first order, move its rows' loss by ``target`` on average.

    ``spectrum``: an :class:`~rec_eraser.core.fisher.InfluenceSpectrum` of the update's Fisher
    at the starting damping; ``groups``: row indices of the Fisher, one list per group removed
    together (a user's instances); ``n``: the training set's size (b's 1/n). The predicted move
    of group S is (1/n) Σ_{i∈S} g_iᵀ (F + f·D)⁻¹ Σ_{j∈S} g_j (:func:`move_factor` with one
    indicator column per group). ``spectrum_of(group)``: the spectrum to predict that group's
    move with, when it differs per group (an inclusion-weighted Fisher, in which the group is
    weighted as the request's own rows would be: ``EmpiricalFisher.as_if_certain``); else
    ``spectrum`` for all.
    """
    groups = [list(g) for g in groups if len(g)]
    if not groups:
        raise ValueError("reference calibration needs at least one reference row")
    rows = sum(len(g) for g in groups)
    if spectrum_of is None:
        indicators = torch.zeros(spectrum.size, len(groups), dtype=torch.float64)
        for k, group in enumerate(groups):
            indicators[group, k] = 1.0
        return move_factor(spectrum, indicators, n, rows, target, config)
    terms = []
    for group in groups:
        indicator = torch.zeros(spectrum.size, dtype=torch.float64)
        indicator[group] = 1.0
        own = spectrum_of(group)
        terms.append((own, own.coordinates(indicator) ** 2))
    return _match_moves(terms, n, rows, len(groups), target, config)


def edit_coefficients(fisher: EmpiricalFisher, edits: Sequence[Edit]) -> torch.Tensor:
    """``[m]``: +1 on the Fisher's rows of the edits' old samples (removed, or replaced), −1 on
    those of their new ones (corrected forms). The right-hand side of an update is b = Gᵀc / n
    with c this vector, and cᵀ G (F + λD)⁻¹ Gᵀ c / n the edits' predicted move (the old rows'
    rise plus the new rows' fall). Every edited sample must be a row of the Fisher."""
    row_of = {id(z): i for i, z in enumerate(fisher.samples)}
    coefficients = torch.zeros(fisher.size, dtype=torch.float64)
    coefficients[[row_of[id(z)] for z in old_samples(list(edits))]] += 1.0
    news = new_samples(list(edits))
    if news:
        coefficients[[row_of[id(z)] for z in news]] -= 1.0
    return coefficients


def move_factor(
    spectrum: InfluenceSpectrum,
    coefficients: torch.Tensor,
    n: int,
    rows: int,
    target: float,
    config: CalibrationConfig | None = None,
) -> ReferenceCalibration:
    """The factor f of the starting damping at which Σ_k (1/n) c_kᵀ G (F + f·D)⁻¹ Gᵀ c_k, per row,
    equals ``target``.

    ``coefficients``: ``[m, k]``, one column per group of rows moved together: an indicator
    for a group removed (its predicted leave-out move), or +1 on removed and −1 on added rows
    for an edit that does both (old forms out, corrected forms in: the predicted rise of the old
    rows' losses plus the fall of the new ones'); ``rows``: how many rows the per-row mean is
    over. Each term falls with f, so a bisection in log f finds the factor; a target outside
    what the range can reach gets the nearer end. Only m × m products: no gradient and no
    forward pass.
    """
    if rows < 1 or coefficients.dim() != 2 or not bool((coefficients != 0).any()):
        raise ValueError("calibration on predicted moves needs at least one row with a coefficient")
    squares = (spectrum.coordinates(coefficients) ** 2).sum(1)  # Σ_columns of each eigen-direction's share
    return _match_moves([(spectrum, squares)], n, rows, coefficients.shape[1], target, config)


def _match_moves(
    terms: list[tuple[InfluenceSpectrum, torch.Tensor]],
    n: int,
    rows: int,
    groups: int,
    target: float,
    config: CalibrationConfig | None,
) -> ReferenceCalibration:
    """The bisection of :func:`move_factor`: the predicted per-row move at factor f is
    Σ_terms Σ_j weights_j(f) · squares_j / (n · rows), each term a spectrum and its squared
    coordinates; it falls with f."""
    cfg = config or CalibrationConfig()
    if not target > 0:
        raise ValueError(f"calibration on predicted moves needs a positive target move, got {target}")

    def predicted(log_f: float) -> float:
        f = math.exp(log_f)
        return sum(float((spectrum.weights(f) * squares).sum()) for spectrum, squares in terms) / (n * rows)

    lo, hi = math.log(cfg.min_factor), math.log(cfg.max_factor)
    if predicted(lo) <= target:  # even the longest step of the range predicts too little
        log_f = lo
    elif predicted(hi) >= target:
        log_f = hi
    else:
        for _ in range(100):  # the bracket halves each time: far below float resolution well before 100
            mid = (lo + hi) / 2
            if predicted(mid) > target:
                lo = mid
            else:
                hi = mid
            if hi - lo < 1e-9:
                break
        log_f = (lo + hi) / 2
    value = predicted(log_f)
    return ReferenceCalibration(
        factor=math.exp(log_f),
        target=target,
        predicted=value,
        reached=abs(value / target - 1) <= 1e-3,
        groups=groups,
        rows=rows,
    )


def quantile_moves(losses: np.ndarray, from_sample: Sequence[float], to_sample: Sequence[float]) -> np.ndarray:
    """How far each loss moves when it keeps its rank but changes population: ``to_sample``'s
    quantile at the loss's level in ``from_sample``, minus the loss.

    A removed instance goes from the trained population to the never-trained one
    (``from_sample`` the trained reference losses, ``to_sample`` the never-trained ones); a
    corrected form the other way. Unlike one shift for all (the gap), this asks less of an
    instance the model already fits well, whose never-trained counterparts fit well too: the
    lower quantiles of the two populations lie closer together than their means.

    Levels are Hazen plotting positions, (i + ½) / n for the i-th smallest of n losses, on both
    samples: a loss of ``from_sample`` gets its own position (tied losses the mean of theirs; a
    loss between two of them, the linear interpolation of theirs), and ``to_sample`` is read at
    that level. So equal samples map every loss to itself, a sample shifted by c moves every
    loss inside its range by c, and samples of different sizes meet at the same levels. A loss outside ``from_sample``'s range
    is held at its extreme level (½ / n or 1 − ½ / n), not at ``to_sample``'s extreme, which a
    larger sample would push further out.
    """
    ranked, target = np.sort(np.asarray(from_sample, dtype=float)), np.asarray(to_sample, dtype=float)
    if len(ranked) < 2 or len(target) < 2:
        raise ValueError("a quantile target needs at least 2 losses in each reference sample")
    losses = np.asarray(losses, dtype=float)
    values, tie = np.unique(ranked, return_inverse=True)
    positions = np.bincount(tie, weights=(np.arange(len(ranked)) + 0.5) / len(ranked)) / np.bincount(tie)
    level = np.interp(losses, values, positions)  # flat beyond the ends
    return np.quantile(target, level, method="hazen") - losses


def whole_groups(
    rows: Sequence[int], keys: Sequence[Hashable], totals: Mapping[Hashable, int]
) -> tuple[list[list[int]], bool]:
    """``rows`` grouped by their ``keys`` (a user), keeping the groups that hold all ``totals[key]``
    of their key's training instances, and whether they do.

    A reference group stands for removing a whole user, as an edited user is removed whole; a
    user only part of whose instances fell into a sub-sample would be predicted to move less
    (the cross-terms between its instances are missing), which would bias the matched damping
    toward longer steps. When no group is whole, every group is kept and the flag is False.
    """
    groups: dict[Hashable, list[int]] = {}
    for row, key in zip(rows, keys):
        groups.setdefault(key, []).append(row)
    whole = [g for key, g in groups.items() if len(g) == totals.get(key, 0)]
    return (whole, True) if whole else (list(groups.values()), False)
