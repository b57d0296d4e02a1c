"""Settings of the influence solvers: one plain dataclass, validated on creation."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from rec_eraser.errors import RecEraserError


class SolverConfigError(RecEraserError, ValueError):
    """A solver configuration that cannot run: an unknown method or preconditioner, a setting out of range."""


PRECONDITIONERS = (None, "auto", "lowrank", "ekfac")
ROW_WEIGHTS = ("uniform", "inclusion", "auto")


@dataclass(frozen=True)
class SolverConfig:
    """How (C + λI) x = b is solved.

    One flat record (it is written into every version's manifest as it is), but each method
    reads only the common settings and its own (declared where it is registered, see
    :func:`rec_eraser.core.solver_registry.register_solver`); a setting the method would ignore,
    set away from its default, is refused.

    Attributes:
        method: ``"exact"`` (dense, small p only), ``"cg"``, ``"lissa"``, ``"sqp"`` (the
            finite-sum quadratic program by variance-reduced mini-batch steps) or ``"ekfac"``
            (eigenvalue-corrected Kronecker-factored curvature, no model pass per solve) or
            ``"fisher"`` (the damped empirical Fisher of the curvature sub-sample, solved
            exactly by the Woodbury identity: one gradient per sub-sample instance, no HVP)
            or ``"adam"`` (the reference implementation's recipe: ``max_iters`` Adam steps
            at ``lr`` on the QP with mini-batch gradients; kept for comparison, it has no
            convergence guarantee), or any solver registered with
            :func:`rec_eraser.core.solver_registry.register_solver`.
        batch_size: instances per micro-batch; the unit in which HVPs are counted.
        max_iters: iteration cap (CG iterations, LiSSA steps, SQP mini-batch steps).
        tol: target relative residual ‖(C + λI)x − b‖ / ‖b‖.
        seed: seeds every random draw (sub-sample, mini-batches, probes).
        sample_size: instances in the fixed curvature sub-sample (always including the
            edited instances); ``None`` = the whole training set.
        retained_floor: the sub-sample's unedited instances are at least this fraction of
            ``sample_size``, so a request that edits more than (1 − it) × ``sample_size``
            instances grows the sample past ``sample_size``: the curvature, and the
            calibration that matches the damping on retained rows, keep instances the request
            does not touch. ``0`` = ``sample_size`` caps the whole sample (the rule before it
            existed, under which a 53-instance request on a 64-row sample kept 11).
        hvp_budget: stop once this many micro-batch HVPs were spent (``None`` = no cap).
        preconditioner: what preconditions ``cg``: ``"lowrank"`` (the Gauss–Newton matrix
            of sampled-label gradients, coupling kept; see ``rec_eraser.core.lowrank``),
            ``"auto"`` (plain CG that builds the ``"lowrank"`` preconditioner only when the
            iterations it still needs cost more than the build; see
            ``solvers.solve_cg_deferred``), ``"ekfac"`` (block-diagonal; measured not to
            reduce CG's products on LoRA) or ``None``.
        preconditioner_samples: sampled-label gradients per curvature-sample instance for
            the ``"lowrank"`` preconditioner (each costs one gradient pass over the sample;
            its rank is at most this times the sample size, its memory p floats per
            gradient).
        power_iters: power-iteration steps for the top eigenvalue (step sizes of lissa/sqp).
        lissa_scale: LiSSA's scale as a multiple of the top eigenvalue of C + λI (> 1/2 for
            convergence with exact products; larger for noisy mini-batches).
        check_every: LiSSA measures its residual (one full product) every this many steps.
        exact_max_dim: refuse the dense solver above this many parameters.
        max_residual: a final relative residual above this (or non-finite) is a divergence
            and raises; between ``tol`` and this the update is returned, marked unconverged.
        damping_scale: the factor of the automatic damping rule (see ``damping``).
        damping_groups: prefixes of parameter names (``named_parameters``) whose parameters get
            a damping of their own: the automatic rule applied to their diagonal block of the
            curvature; the parameters matching no prefix form one more group (``"other"``).
            For modules whose curvature lives on different scales: on LLaRA adapters the
            projector's block sets the shared λ, 16–480× LoRA's own (docs/engine.md, "Damping per
            parameter group", where it is measured: not a clear gain, so off by default).
            ``fisher`` only; ``()`` = one group.
        row_weights: how the ``fisher`` method weights its sample's rows: ``"uniform"`` (1/m
            each: the sample as a plain draw) or ``"inclusion"`` (each row by the inverse of its
            chance of being in the sample: 1/N for the edited instances, which always are, the
            rest sharing the remainder; see ``rec_eraser.core.fisher``) or ``"auto"`` (the default:
            uniform, unless the reference calibration cannot reach its target on the uniform Fisher, even
            the longest step of its range predicting too little, and the sample is a strict
            sub-sample, whose m/n cap inclusion weights lift: then inclusion;
            :meth:`~rec_eraser.core.engine.InfluenceEngine.match_reference`; the default since
            it met the three criteria docs/fidelity.md wrote down before judging it).
            ``fisher`` only.
        lr: the ``adam`` method's learning rate.
    """

    method: str = "cg"
    batch_size: int = 8
    max_iters: int = 500
    tol: float = 1e-3
    seed: int = 0
    sample_size: int | None = None
    retained_floor: float = 0.5
    hvp_budget: int | None = None
    preconditioner: str | None = None
    preconditioner_samples: int = 16
    power_iters: int = 20
    lissa_scale: float = 1.0
    check_every: int = 10
    exact_max_dim: int = 6000
    max_residual: float = 0.5
    damping_scale: float = 0.03
    damping_groups: tuple[str, ...] = ()
    row_weights: str = "auto"
    lr: float = 1e-5

    def __post_init__(self) -> None:
        # the registry is read here, not at import: it imports the built-in solvers, which import this module
        from rec_eraser.core.solver_registry import solver_names

        if self.method not in solver_names():
            raise SolverConfigError(f"unknown solver method {self.method!r}; choose one of {', '.join(solver_names())}")
        if self.preconditioner not in PRECONDITIONERS:
            raise SolverConfigError(
                f"unknown preconditioner {self.preconditioner!r}; choose one of {', '.join(map(str, PRECONDITIONERS))}"
            )
        for name in (
            "batch_size",
            "max_iters",
            "power_iters",
            "check_every",
            "exact_max_dim",
            "preconditioner_samples",
        ):
            if getattr(self, name) < 1:
                raise SolverConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.tol > 0:
            raise SolverConfigError(f"tol must be > 0, got {self.tol}")
        if self.row_weights not in ROW_WEIGHTS:
            raise SolverConfigError(f"unknown row_weights {self.row_weights!r}; choose one of {', '.join(ROW_WEIGHTS)}")
        if self.sample_size is not None and self.sample_size < 1:
            raise SolverConfigError(f"sample_size must be >= 1 or None, got {self.sample_size}")
        if not 0.0 <= self.retained_floor <= 1.0:
            raise SolverConfigError(f"retained_floor must be in [0, 1], got {self.retained_floor}")
        object.__setattr__(self, "damping_groups", tuple(self.damping_groups))  # a TOML/JSON list becomes hashable
        self._refuse_ignored_settings()
        if not self.lr > 0:
            raise SolverConfigError(f"lr must be > 0, got {self.lr}")
        if not self.lissa_scale > 0.5:
            raise SolverConfigError(f"lissa_scale must be > 0.5, got {self.lissa_scale}")

    def _refuse_ignored_settings(self) -> None:
        """A setting the method does not read, set away from its default, would be silently ignored: refuse it."""
        from rec_eraser.core.solver_registry import COMMON_SETTINGS, method_settings

        own = method_settings(self.method)
        if own is None:  # a registered solver that did not declare its settings
            return
        ignored = [
            f.name
            for f in fields(self)
            if f.name not in COMMON_SETTINGS and f.name not in own and getattr(self, f.name) != f.default
        ]
        if ignored:
            raise SolverConfigError(
                f"{ignored[0]} is not a setting of method {self.method!r}, which would ignore it "
                f"(its own settings: {', '.join(own) or 'none beyond the common ones'})"
            )

    @classmethod
    def for_method(cls, method: str, **settings: Any) -> SolverConfig:
        """The configuration of ``method`` with the settings registered as its recommended ones
        (``cg``: the ``"auto"`` preconditioner), overridden by ``settings``; what the CLI builds."""
        from rec_eraser.core.solver_registry import recommended_settings

        return cls(method=method, **{**recommended_settings(method), **settings})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
