"""The influence engine: from edits of the training set to a change of the adapter.

Sign and scale, stated once (docs/design.md, "Sign and scale"). With L(θ) = (1/n) Σ_i ℓ(z_i; θ) the training
objective, g(z) = ∇θ ℓ(z; θ̂) at the trained parameters θ̂, C the curvature of L
(Hessian, or Gauss–Newton) and λ the damping, a list of edits {z_j → z'_j} (a removal has
z'_j = ∅ with g(∅) = 0) gives

    b  = (1/n) Σ_j [ g(z_j) − g(z'_j) ]
    Δθ = (C + λI)⁻¹ b,      θ_new = θ̂ + Δθ   (Δθ is *added*).

Removing one instance z thus gives Δθ = +(1/n) C⁻¹ g(z): the step that raises z's loss,
to first order by g(z)ᵀΔθ > 0. n is the size of the training set the adapter was trained
on, i.e. ``len(train_samples)``.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from rec_eraser.core import distributed
from rec_eraser.core.calibration import (
    CalibrationConfig,
    Objective,
    ParameterSnapshot,
    ReferenceCalibration,
    calibrate_scale,
    edit_coefficients,
    move_factor,
    reference_factor,
    whole_groups,
)
from rec_eraser.core.config import SolverConfig
from rec_eraser.core.curvature import CurvatureOperator, LossFn, deterministic_mode, summed_gradient
from rec_eraser.core.damping import auto_damping
from rec_eraser.core.edits import Edit, new_samples, old_samples, validate_edits
from rec_eraser.core.fisher import EmpiricalFisher, InfluenceSpectrum, KnownRow
from rec_eraser.core.operators import DampedOperator
from rec_eraser.core.params import ParameterSpace
from rec_eraser.core.report import SolverReport, Update
from rec_eraser.core.solver_registry import FISHER, SolveProblem, solver, solver_parallelism
from rec_eraser.core.solvers import Solution, SolverError

logger = logging.getLogger(__name__)


class InfluenceEngine:
    """Computes Δθ = (C + λI)⁻¹ b for edits of ``train_samples`` (see module docstring).

    Args:
        model: any ``nn.Module``; its ``requires_grad`` parameters are the ones edited.
        loss_fn: ``loss_fn(model, batch) -> scalar``, the mean of per-instance losses of the
            batch: the very loss the model was trained with. For ``curvature="ggn"`` an
            :class:`~rec_eraser.core.curvature.OutputLoss`.
        train_samples: the n instances the model was trained on.
        collate_fn: ``collate_fn(list_of_instances) -> batch``.
        curvature: ``"hessian"`` (exact second derivatives) or ``"ggn"`` (Gauss–Newton, PSD).
        damping: λ; ``None`` chooses it by the automatic rule of ``rec_eraser.core.damping``.
        solver: a :class:`SolverConfig`.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        train_samples: Sequence[Any],
        collate_fn: Callable[[list[Any]], Any],
        curvature: str = "hessian",
        damping: float | None = None,
        solver: SolverConfig | None = None,
    ) -> None:
        if len(train_samples) == 0:
            raise ValueError("train_samples is empty: the engine needs the training set the model was trained on")
        if damping is not None and not damping >= 0:
            raise ValueError(f"damping must be >= 0 or None, got {damping}")
        self.model = model
        self.loss_fn = loss_fn
        self.train_samples = list(train_samples)
        self.collate_fn = collate_fn
        self.curvature_kind = curvature
        self.damping = damping
        self.config = solver or SolverConfig()
        self.space = ParameterSpace(model)
        self.on_gradient: Callable[[int], None] | None = None  # progress of per-instance gradients (fisher)
        # a stable name per sample (e.g. its instance id): the curvature draw then orders the
        # training set by a seeded hash of it, so that a sample drawn once stays drawn when
        # other instances leave the training set (what lets a curvature cache be reused)
        self.sample_key: Callable[[Any], str] | None = None
        CurvatureOperator(model, loss_fn, self.space, self.train_samples[:1], collate_fn, curvature)  # validates early

    # -- pieces ----------------------------------------------------------------------------
    def rhs(self, edits: Sequence[Edit]) -> torch.Tensor:
        """b = (1/n) Σ_j [g(z_j) − g(z'_j)], by batched backward passes over the edited instances."""
        bs = self.config.batch_size
        b = summed_gradient(self.model, self.loss_fn, self.space, old_samples(list(edits)), self.collate_fn, bs)
        replaced = new_samples(list(edits))
        if replaced:
            b -= summed_gradient(self.model, self.loss_fn, self.space, replaced, self.collate_fn, bs)
        return b / len(self.train_samples)

    def curvature_samples(self, edits: Sequence[Edit]) -> list[Any]:
        """The fixed curvature sub-sample: the edited instances plus a seeded draw of the others,
        ``sample_size`` in all but at least ``retained_floor`` × ``sample_size`` of the others."""
        size = self.config.sample_size
        if size is None or size >= len(self.train_samples):
            return self.train_samples
        edited = old_samples(list(edits))
        edited_ids = {id(z) for z in edited}
        rest = [z for z in self.train_samples if id(z) not in edited_ids]
        # rounded first: 0.07 * 100 is 7.000000000000001 in floats, which must not ask for 8
        wanted = max(size - len(edited), math.ceil(round(self.config.retained_floor * size, 9)))
        if self.sample_key is not None:
            key, seed = self.sample_key, str(self.config.seed).encode()
            return edited + sorted(rest, key=lambda z: hashlib.blake2b(key(z).encode(), key=seed).digest())[:wanted]
        gen = torch.Generator(device="cpu").manual_seed(self.config.seed)
        draw = torch.randperm(len(rest), generator=gen)[:wanted].tolist()
        return edited + [rest[i] for i in draw]

    def curvature_operator(self, samples: Sequence[Any]) -> CurvatureOperator:
        return CurvatureOperator(
            self.model, self.loss_fn, self.space, samples, self.collate_fn, self.curvature_kind, self.config.batch_size
        )

    # -- the whole computation ---------------------------------------------------------------
    def fisher_samples(self, edits: Sequence[Edit]) -> list[Any]:
        """The ``fisher`` method's rows: the curvature sub-sample plus the corrected forms.

        The corrected forms join because b holds −g(z'), and a direction outside the span of
        the sample's gradients would be multiplied by 1/λ.
        """
        return self.curvature_samples(edits) + new_samples(list(edits))

    def empirical_fisher(
        self, edits: Sequence[Edit], known: Callable[[Any], KnownRow | None] | None = None
    ) -> EmpiricalFisher:
        """The ``fisher`` method's curvature for ``edits``, built once so that a caller can read its
        per-instance losses (``losses``, ``samples``) before :meth:`compute` (pass it back as
        ``fisher=``); its ``seconds`` are counted in that update's. ``known``: rows computed earlier
        (:meth:`EmpiricalFisher.from_samples`); the edited instances' rows are always computed."""
        edits = list(edits)
        validate_edits(edits)
        # one instance per pass: batching them through the layers' hooks gave the same rows but no
        # speed on 2 CPU cores (SmolLM2 r16 q,k,v,o, 16 instances: 0.69 s each at 1 per pass, 0.70
        # at 4, 0.68 at 8) and holds float64 copies of every LoRA input; kept for accelerators
        with deterministic_mode(self.model):
            edited = {id(z) for z in old_samples(edits) + new_samples(edits)}
            samples = self.fisher_samples(edits)
            fisher = EmpiricalFisher.from_samples(
                self.model,
                self.loss_fn,
                self.space,
                samples,
                self.collate_fn,
                self.on_gradient,
                known=None if known is None else (lambda z: None if id(z) in edited else known(z)),
            )
        # the rows estimate the mean over the training set and the corrected forms (which are rows
        # too, as b holds their gradients): every edited row is in for certain
        certain = [i for i, z in enumerate(samples) if id(z) in edited]
        population = len(self.train_samples) + len(new_samples(edits))
        if self.config.row_weights == "inclusion":
            return fisher.inclusion_weighted(certain, population)
        return fisher.with_inclusion(certain, population)  # "auto" may weight it at the calibration

    def compute(
        self,
        edits: Sequence[Edit],
        objective: Objective | None = None,
        calibration: CalibrationConfig | None = None,
        damping_factor: float = 1.0,
        fisher: EmpiricalFisher | None = None,
    ) -> Update:
        """Δθ for ``edits``; raises :class:`SolverError` on divergence (nothing is applied).

        With ``objective`` (``fisher`` only), the damping is the starting one (the rule's, or
        the given one) times the factor that brings ``objective(model)`` nearest to 1, the
        model holding the trial update (see :mod:`rec_eraser.core.calibration`); the model is
        left as it was. ``damping_factor`` (``fisher`` only) scales the starting damping
        without a search. ``fisher``: the result of :meth:`empirical_fisher` for the same
        edits at the current parameters (built here when not given).
        """
        edits = list(edits)
        if (objective is not None or damping_factor != 1.0 or fisher is not None) and self.config.method != FISHER:
            raise ValueError(
                f"calibrating, scaling the damping or a given Fisher is for method='fisher' only, not {self.config.method!r}"
            )
        if not damping_factor > 0:
            raise ValueError(f"damping_factor must be > 0, got {damping_factor}")
        validate_edits(edits)
        cfg = self.config
        if cfg.method == FISHER:
            with deterministic_mode(self.model):
                return self._compute_fisher(edits, objective, calibration, damping_factor, fisher)
        ranks = distributed.world()[1]
        if ranks > 1 and solver_parallelism(cfg.method) == "replicated":
            logger.warning(
                "%s runs its whole solve on each of the %d ranks (only b is split): its curvature products need "
                "a double backward, which is not split across processes; 'fisher' splits its rows",
                cfg.method,
                ranks,
            )
        t0 = time.perf_counter()
        with deterministic_mode(self.model):
            b = self.rhs(edits)
            rhs_passes = -(-len(old_samples(edits)) // cfg.batch_size) + -(-len(new_samples(edits)) // cfg.batch_size)
            curvature = self.curvature_operator(self.curvature_samples(edits))
            if self.damping is None:
                choice = auto_damping(curvature, scale=cfg.damping_scale, seed=cfg.seed)
                damping, rule = choice.value, choice.rule
            else:
                damping, rule = self.damping, "given"
            op = DampedOperator(curvature, damping)
            b_norm = float(torch.linalg.vector_norm(b))
            if b_norm == 0.0:
                solution, residual, ekfac_passes = Solution(x=torch.zeros_like(b), iterations=0), 0.0, 0
            else:
                solution, ekfac_passes = self._solve(op, b, curvature)
                if not torch.isfinite(solution.x).all():
                    raise SolverError(f"{cfg.method} returned non-finite values; nothing was applied")
                residual = op.relative_residual(solution.x, b)
        seconds = time.perf_counter() - t0
        if not residual <= cfg.max_residual:  # also catches NaN
            raise SolverError(
                f"{cfg.method} did not solve the system: relative residual {residual:.3g} > {cfg.max_residual:g}; "
                "nothing was applied (raise the damping, max_iters or hvp_budget)"
            )
        report = SolverReport(
            method=cfg.method,
            curvature=self.curvature_kind,
            damping=damping,
            damping_rule=rule,
            iterations=solution.iterations,
            hvps=curvature.hvps,
            hvp_samples=curvature.hvp_samples,
            gradient_passes=rhs_passes + ekfac_passes,
            relative_residual=residual,
            converged=residual <= cfg.tol,
            seconds=seconds,
            n_train=len(self.train_samples),
            curvature_samples=curvature.size,
            edits=len(edits),
            preconditioner=cfg.preconditioner if cfg.method == "cg" else None,
            preconditioner_built_at=solution.preconditioner_built_at,
            top_eigenvalue=solution.top_eigenvalue,
            rhs_norm=b_norm,
            delta_norm=float(torch.linalg.vector_norm(solution.x)),
            config=cfg.to_dict(),
        )
        if not report.converged:
            logger.warning("%s stopped at relative residual %.3g above tol %.3g", cfg.method, residual, cfg.tol)
        return Update(delta=self.space.to_dict(solution.x), report=report)

    def _compute_fisher(
        self,
        edits: list[Edit],
        objective: Objective | None,
        calibration: CalibrationConfig | None,
        damping_factor: float,
        fisher: EmpiricalFisher | None,
    ) -> Update:
        """The ``fisher`` method: (F + λI)⁻¹ b with F the empirical Fisher of the curvature sub-sample."""
        cfg = self.config
        t0 = time.perf_counter()
        if fisher is None:
            fisher = self.empirical_fisher(edits)
            built = 0.0  # inside this call's own clock
        else:
            if fisher.samples is None or [id(z) for z in fisher.samples] != [id(z) for z in self.fisher_samples(edits)]:
                raise ValueError("the given empirical Fisher was not built by empirical_fisher() for these edits")
            built = fisher.seconds
        b, rhs_passes = self._fisher_rhs(edits, fisher)
        damping, by_group, rule = self.fisher_damping(fisher)
        if damping_factor != 1.0:
            damping = damping * damping_factor
            by_group = {k: v * damping_factor for k, v in by_group.items()} if by_group else None
            rule = f"{rule}, x {damping_factor:g}"
        b_norm = float(torch.linalg.vector_norm(b))
        calibrated = None
        if objective is not None and b_norm > 0.0:
            calibrated = self._calibrate(fisher, b, damping, objective, calibration or CalibrationConfig())
            damping = damping * calibrated.factor
            by_group = {k: v * calibrated.factor for k, v in by_group.items()} if by_group else None
            rule = f"{rule}, x {calibrated.factor:.3g} (calibrated: progress {calibrated.progress:.3g})"
        if b_norm == 0.0:
            x, residual = torch.zeros_like(b), 0.0
        else:
            x = fisher.solve(b, damping)
            if not torch.isfinite(x).all():
                raise SolverError("fisher returned non-finite values; nothing was applied (raise the damping)")
            residual = fisher.relative_residual(x, b, damping)
        if not residual <= cfg.max_residual:
            raise SolverError(
                f"fisher did not solve the system: relative residual {residual:.3g} > {cfg.max_residual:g}; nothing was applied"
            )
        report = SolverReport(
            method="fisher",
            curvature="empirical_fisher",
            damping_rule=rule,
            damping_by_group=by_group,
            damping=by_group.get("other", max(by_group.values())) if by_group else float(damping),
            iterations=1,
            hvps=0,
            hvp_samples=0,
            gradient_passes=rhs_passes + fisher.passes,
            relative_residual=residual,
            converged=residual <= cfg.tol,
            seconds=time.perf_counter() - t0 + built,
            n_train=len(self.train_samples),
            curvature_samples=fisher.size,
            edits=len(edits),
            calibration=None
            if calibrated is None
            else {**calibrated.to_dict(), "config": (calibration or CalibrationConfig()).to_dict()},
            predicted_change=float(len(self.train_samples) * torch.dot(b.to(torch.float64), x.to(torch.float64))),
            rhs_norm=b_norm,
            delta_norm=float(torch.linalg.vector_norm(x)),
            config=cfg.to_dict(),
            floor_rows=(floor_rows := len(old_samples(edits)) + len(new_samples(edits))),
            # at the seconds per computed row (the reused ones cost nothing)
            floor_seconds=floor_rows * fisher.seconds / computed if (computed := fisher.size - fisher.reused) else None,
            reused_rows=fisher.reused,
        )
        return Update(delta=self.space.to_dict(x), report=report)

    def fisher_damping(self, fisher: EmpiricalFisher) -> tuple[float | torch.Tensor, dict[str, float] | None, str]:
        """The ``fisher`` method's starting damping for this Fisher: the given λ, or the rule's (per
        parameter group with ``damping_groups``: then a [p] vector and its value per group), and its description."""
        cfg = self.config
        if self.damping is not None:
            return self.damping, None, "given"
        trace = fisher.trace()
        if not trace > 0:
            raise SolverError(
                "every per-instance gradient is zero: the empirical Fisher is 0 and no damping can be chosen"
            )
        damping = cfg.damping_scale * fisher.trace_of_square() / trace
        groups = self._damping_groups()
        if len(groups) > 1:
            vector, by_group = self._group_damping(fisher, groups, float(damping))
            return (
                vector,
                by_group,
                f"{cfg.damping_scale:g} * tr(F_gg^2)/tr(F_gg) per parameter group g (exact, empirical Fisher of {fisher.size} instances)",
            )
        return (
            damping,
            None,
            f"{cfg.damping_scale:g} * tr(F^2)/tr(F) (exact, empirical Fisher of {fisher.size} instances)",
        )

    def match_reference(
        self,
        fisher: EmpiricalFisher,
        rows: Sequence[int],
        keys: Sequence[Hashable],
        totals: Mapping[Hashable, int],
        target: float,
        config: CalibrationConfig | None = None,
    ) -> tuple[ReferenceCalibration, InfluenceSpectrum, bool, EmpiricalFisher]:
        """The "reference" calibration on this Fisher: the factor of :meth:`fisher_damping` at which the
        Fisher's ``rows``, grouped by ``keys`` into whole groups (:func:`whole_groups`, ``totals``:
        each key's instance count), are predicted to move by ``target`` on average
        (:func:`reference_factor`); with the spectrum it used, whether the groups were whole, and
        the Fisher to solve with: ``fisher`` itself, or, with ``row_weights = "auto"`` when even
        the longest step of the range predicts too little on the uniform Fisher and the sample is
        a strict sub-sample (whose m/n cap, ``rec_eraser.core.fisher``, inclusion weights lift),
        its inclusion-weighted form, matched again."""
        groups, whole = whole_groups(rows, keys, totals)
        chosen, spectrum = self._match_groups(fisher, groups, target, config)
        short = not chosen.reached and chosen.predicted < target
        if self.config.row_weights == "auto" and fisher.row_weights is None and short:
            if fisher.population is None:
                raise ValueError("row_weights 'auto' needs a Fisher built by empirical_fisher() (its certain rows)")
            if fisher.size >= fisher.population:  # the sample is the whole set: inclusion weights are the uniform ones
                return chosen, spectrum, whole, fisher
            logger.info(
                "reference calibration: %.3g predicted at the range's end against %.3g wanted on the uniform "
                "Fisher (its m/n cap); matching on the inclusion-weighted one",
                chosen.predicted,
                target,
            )
            fisher = fisher.inclusion_weighted(fisher.certain, fisher.population)
            chosen, spectrum = self._match_groups(fisher, groups, target, config)
        return chosen, spectrum, whole, fisher

    def _match_groups(
        self, fisher: EmpiricalFisher, groups: list[list[int]], target: float, config: CalibrationConfig | None
    ) -> tuple[ReferenceCalibration, InfluenceSpectrum]:
        """:func:`reference_factor` of ``groups`` on ``fisher`` at its :meth:`fisher_damping`, and the spectrum."""
        damping, _, _ = self.fisher_damping(fisher)
        spectrum = fisher.influence_spectrum(damping)
        # inclusion-weighted: each group predicted with its rows drawn for certain too (as_if_certain),
        # the same rows at the same damping, so G D⁻¹ Gᵀ is reused and only re-weighted
        spectrum_of = (
            None
            if fisher.row_weights is None
            else (lambda group: InfluenceSpectrum(fisher.as_if_certain(group), damping, spectrum.reduced))
        )
        chosen = reference_factor(spectrum, groups, len(self.train_samples), target, config, spectrum_of)
        return chosen, spectrum

    def match_edits(
        self, fisher: EmpiricalFisher, edits: list[Edit], target: float, config: CalibrationConfig | None = None
    ) -> ReferenceCalibration:
        """The factor of :meth:`fisher_damping` at which the edits' own rows (+1 on old samples, −1
        on new ones, :func:`edit_coefficients`) are predicted to move by ``target`` per row
        (:func:`move_factor`): the "quantile" calibration, where each request says how far its
        edited instances should move."""
        damping, _, _ = self.fisher_damping(fisher)
        rows = len(old_samples(edits)) + len(new_samples(edits))
        coefficients = edit_coefficients(fisher, edits)[:, None]
        return move_factor(
            fisher.influence_spectrum(damping), coefficients, len(self.train_samples), rows, target, config
        )

    def _fisher_rhs(self, edits: list[Edit], fisher: EmpiricalFisher) -> tuple[torch.Tensor, int]:
        """b and the backward passes it cost: read off the Fisher's rows when they hold every edited
        instance (they are g(z_j) and g(z'_j) at the same parameters, so no pass is repeated),
        else computed by :meth:`rhs`."""
        row_of = {id(z): i for i, z in enumerate(fisher.samples or [])}
        old, new = old_samples(edits), new_samples(edits)
        if all(id(z) in row_of for z in old + new):
            total = fisher.gradients[[row_of[id(z)] for z in old]].sum(0)
            if new:
                total = total - fisher.gradients[[row_of[id(z)] for z in new]].sum(0)
            return (total / len(self.train_samples)).to(dtype=self.space.dtype, device=self.space.device), 0
        bs = self.config.batch_size
        return self.rhs(edits), -(-len(old) // bs) + -(-len(new) // bs)

    def _calibrate(
        self,
        fisher: EmpiricalFisher,
        b: torch.Tensor,
        damping: float | torch.Tensor,
        objective: Objective,
        config: CalibrationConfig,
    ):
        """Search the damping's factor with ``objective`` measured on the model holding each trial update."""
        snapshot = ParameterSnapshot(self.space.params)

        def progress_at(factor: float) -> float:
            x = fisher.solve(b, damping * factor)
            if not torch.isfinite(x).all():
                return float("inf")
            with torch.no_grad():
                for p, d in zip(self.space.params, self.space.unflatten(x)):
                    p.add_(d)
            try:
                return objective(self.model)
            finally:
                snapshot.restore()

        return calibrate_scale(progress_at, config)

    def _damping_groups(self) -> dict[str, torch.Tensor]:
        """Parameter-name prefix → a [p] mask of its parameters; "other" holds the rest. Empty groups are dropped."""
        owner = ["other"] * len(self.space.names)
        for i, name in enumerate(self.space.names):
            for prefix in self.config.damping_groups:
                if name.startswith(prefix):
                    owner[i] = prefix
                    break
        groups: dict[str, torch.Tensor] = {}
        for label in (*self.config.damping_groups, "other"):
            mask = torch.cat([torch.full((n,), o == label, dtype=torch.bool) for o, n in zip(owner, self.space.numels)])
            if bool(mask.any()):
                groups[label] = mask
        return groups

    def _group_damping(
        self, fisher: EmpiricalFisher, groups: dict[str, torch.Tensor], shared: float
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The rule on each group's diagonal block; a group without gradient keeps the shared value."""
        vector = torch.empty(self.space.dim, dtype=torch.float64)
        by_group = {}
        for label, mask in groups.items():
            trace, trace_sq = fisher.block_traces(mask)
            by_group[label] = self.config.damping_scale * trace_sq / trace if trace > 0 else shared
            vector[mask] = by_group[label]
        return vector, by_group

    def _solve(self, op: DampedOperator, b: torch.Tensor, curvature: CurvatureOperator) -> tuple[Solution, int]:
        problem = SolveProblem(
            op=op,
            b=b,
            curvature=curvature,
            config=self.config,
            model=self.model,
            loss_fn=self.loss_fn,
            space=self.space,
            collate_fn=self.collate_fn,
        )
        solution = solver(self.config.method)(problem)
        return solution, solution.gradient_passes
