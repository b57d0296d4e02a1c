"""The solvers of (C + λI) x = b, registered by name (as peft registers its tuners).

A solver is one function from a :class:`SolveProblem` to a
:class:`~rec_eraser.core.solvers.Solution`; ``SolverConfig(method=NAME)`` accepts every
registered name and :class:`~rec_eraser.core.engine.InfluenceEngine` looks the function up, then
measures the residual, counts the products and writes the one report, whatever the solver.
Adding a solver is one module that calls :func:`register_solver`; nothing else is edited.

``"fisher"`` is the one method that is not a solver of this system: it replaces the curvature
by the damped empirical Fisher of the curvature sample and solves that exactly (Woodbury), on
the engine's own path, so it is reserved here.

This module imports nothing of the engine at run time, so that the configuration can validate
a method's name against the registry without an import cycle.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import Tensor, nn

    from rec_eraser.core.config import SolverConfig
    from rec_eraser.core.curvature import CurvatureOperator, LossFn
    from rec_eraser.core.operators import DampedOperator
    from rec_eraser.core.params import ParameterSpace
    from rec_eraser.core.solvers import Solution

#: the method with its own path in the engine (see the module's docstring)
FISHER = "fisher"


@dataclass(frozen=True)
class SolveProblem:
    """Everything a solver may use: the damped system ``op`` x = ``b``, the undamped
    ``curvature`` (its sample, for solvers that fit their own approximation of it), the
    ``config``, and the model with its loss for those that need more passes over it."""

    op: DampedOperator
    b: Tensor
    curvature: CurvatureOperator
    config: SolverConfig
    model: nn.Module
    loss_fn: LossFn
    space: ParameterSpace
    collate_fn: Callable[[list[Any]], Any]


SolverFn = Callable[[SolveProblem], "Solution"]

_SOLVERS: dict[str, SolverFn] = {}
_RECOMMENDED: dict[str, dict[str, Any]] = {}
#: the settings of SolverConfig each method reads beyond the common ones (``None``: not declared)
_SETTINGS: dict[str, tuple[str, ...] | None] = {FISHER: ("damping_groups", "row_weights")}

#: how each method uses more than one process (``rec_eraser.core.distributed``): ``"split"``
#: computes its gradient rows and b shared out across the ranks and gathered; ``"replicated"``
#: computes b split but runs the whole solve on every rank (same inputs, same answer, no
#: speed-up): its curvature products need a double backward, which this project does not
#: split (DDP and FSDP do not support one; an all-reduce of per-rank products would, and is
#: left for when a multi-GPU machine can measure it)
_PARALLELISM: dict[str, str] = {FISHER: "split"}
PARALLELISMS = ("split", "replicated")

#: the settings every method reads: the curvature sample, its batches and seed, the starting
#: damping's rule, and the residual the engine checks and reports
COMMON_SETTINGS = (
    "method",
    "batch_size",
    "seed",
    "sample_size",
    "retained_floor",
    "tol",
    "max_residual",
    "damping_scale",
)


def register_solver(
    name: str,
    recommended: Mapping[str, Any] | None = None,
    settings: Sequence[str] | None = None,
    parallelism: str = "replicated",
) -> Callable[[SolverFn], SolverFn]:
    """Decorator: register ``fn`` as the solver ``name``. A name is registered once.

    ``recommended``: settings of :class:`SolverConfig` that :meth:`SolverConfig.for_method`
    gives this method unless told otherwise (the plain constructor's defaults stay the same for
    every method), so that the CLI and the library build the same configuration.
    ``settings``: the settings it reads beyond :data:`COMMON_SETTINGS`; the configuration then
    refuses any other one set away from its default (it would be silently ignored). ``None``
    (undeclared) accepts every setting. ``parallelism``: how it runs under torch.distributed
    (:data:`PARALLELISMS`; see :func:`solver_parallelism`)."""
    if parallelism not in PARALLELISMS:
        raise ValueError(f"parallelism must be one of {PARALLELISMS}, got {parallelism!r}")

    def register(fn: SolverFn) -> SolverFn:
        if name == FISHER or name in _SOLVERS:
            raise ValueError(f"a solver named {name!r} is registered already")
        _PARALLELISM[name] = parallelism
        _SOLVERS[name] = fn
        _RECOMMENDED[name] = dict(recommended or {})
        _SETTINGS[name] = None if settings is None else tuple(settings)
        return fn

    return register


def method_settings(name: str) -> tuple[str, ...] | None:
    """The settings method ``name`` reads beyond the common ones; ``None`` when it did not declare them."""
    _load_builtin()
    return _SETTINGS.get(name)


def solver_parallelism(name: str) -> str:
    """How method ``name`` runs in more than one process: ``"split"`` (its per-instance rows
    and b are shared out across the ranks) or ``"replicated"`` (b is split, the solve runs
    whole on every rank, so extra processes add no speed)."""
    _load_builtin()
    return _PARALLELISM[name]


def recommended_settings(name: str) -> dict[str, Any]:
    """The settings registered with solver ``name`` (empty for ``"fisher"`` and unknown names)."""
    _load_builtin()
    return dict(_RECOMMENDED.get(name, {}))


def _load_builtin() -> None:
    # the built-in solvers register themselves when their module is first imported
    import rec_eraser.core.solver_methods  # noqa: F401


def solver_names() -> tuple[str, ...]:
    """Every method ``SolverConfig`` accepts: the registered solvers and ``"fisher"``."""
    _load_builtin()
    return (*_SOLVERS, FISHER)


def solver(name: str) -> SolverFn:
    """The registered solver ``name`` (``KeyError`` for an unknown one: the configuration
    refuses unknown names before a solve is reached)."""
    _load_builtin()
    return _SOLVERS[name]
