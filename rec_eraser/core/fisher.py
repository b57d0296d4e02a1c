"""The damped empirical Fisher of a sub-sample, inverted exactly through the Woodbury identity.

With G the ``[m, p]`` matrix of per-instance gradients g_i of m instances, the empirical
Fisher is F = (1/m) Gᵀ G, of rank at most m, and

    (F + λI)⁻¹ b = (1/λ) [ b − Gᵀ (mλ I + G Gᵀ)⁻¹ G b ].

Building G costs m gradient evaluations and no curvature products; each solve afterwards
costs two products with G and an m×m solve. This is what makes an update on a real LLM far
cheaper than retraining when HVPs are expensive (one HVP of SmolLM2 on a LLaRA prompt costs
about 2.6 gradients, and CG needs tens of them per instance); docs/fidelity.md measures how
close its updates land to retraining. Its curvature is the empirical Fisher, not the Hessian or Gauss–Newton matrix; the report
says so.

Row weights. The uniform 1/m above treats the sample as a plain random draw, but the sample
always holds the edited instances and draws only the rest. Seen as an estimate of the whole
training set's Fisher (1/n) Σ g gᵀ, an edited row then stands for itself alone and a drawn row
for (n − c) / (m − c) instances (c rows drawn for certain): weights 1/n and (n − c) / ((m − c) n),
the inverse of each row's chance of being in the sample (:meth:`EmpiricalFisher.inclusion_weighted`).
Why it matters: under uniform weights a row's own direction gets weight 1/m, so removing it is
predicted to move its loss by at most m/n (its self-influence g(F + λI)⁻¹g/n tends to m/n as
λ → 0), far below what a memorised instance moves on a large training set; under inclusion
weights an edited row can move by up to 1. In general, with W = diag(w),

    (Gᵀ W G + D)⁻¹ b = D⁻¹b − D⁻¹Gᵀ (W⁻¹ + G D⁻¹ Gᵀ)⁻¹ G D⁻¹b,

which for w = 1/m is the formula above.

Per-instance gradients come from batched backward passes where every trainable parameter
sits in an ``nn.Linear`` (LoRA, a linear projector): the layers' hooks keep each instance's
inputs and output gradients, and DW_n = Σ_t g_{n,t} a_{n,t}ᵀ splits the pass per instance.
Other models get one backward pass per instance. (``torch.func.vmap`` over a peft-wrapped
transformers model would need a functional copy of the model; the hooks need none.) On 2 CPU
cores batching gave no speed (a batch of one is already a matrix product over the prompt's
tokens), so the engine asks for one instance per pass; ``batch_size`` is there for accelerators.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rec_eraser.core import distributed
from rec_eraser.core.curvature import LossFn
from rec_eraser.core.linear_capture import UnsupportedCurvatureError, capture_passes, flat_instance_rows, linear_layers
from rec_eraser.core.params import ParameterSpace
from rec_eraser.errors import EXIT_CODES, RecEraserError

logger = logging.getLogger(__name__)


_CAPTURE_TOL = 1e-4  # relative: float32 captures of a sum against autograd's own sum


class _IncompleteCapture(RuntimeError):
    """The per-instance captures miss part of the gradient; ``passes``: the batched passes spent."""

    def __init__(self, passes: int, message: str) -> None:
        super().__init__(message)
        self.passes = passes


class InsufficientMemoryError(RecEraserError, MemoryError):
    """The Fisher's rows would not fit in the memory available: refused before any gradient is computed."""

    exit_code = EXIT_CODES["computation"]


def fisher_memory_bytes(rows: int, parameters: int) -> int:
    """The host memory a Fisher of ``rows`` per-instance gradients of ``parameters`` numbers holds
    at its peak: the float64 rows twice (as computed, then stacked into G) and the m × m Gram
    matrix. (The model and one backward pass come on top; they are there before the build.)"""
    return 8 * (2 * rows * parameters + rows * rows)


#: a container's memory limit and use: cgroup v2, then v1 (psutil reports the host's memory, not these)
_CGROUP_FILES = (
    ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
    ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),
)


def _cgroup_headroom() -> int | None:
    for limit_file, usage_file in _CGROUP_FILES:
        try:
            limit = Path(limit_file).read_text().strip()
            usage = int(Path(usage_file).read_text().strip())
        except (OSError, ValueError):
            continue
        if limit.isdigit() and int(limit) < 2**60:  # "max", or v1's huge number: no limit
            return max(0, int(limit) - usage)
        return None
    return None


def available_memory_bytes() -> int | None:
    """The memory this process can still take now: the system's available memory (psutil), or a
    container's remaining headroom under its cgroup limit when that is smaller; None if unknown."""
    try:
        import psutil
    except ImportError:  # pragma: no cover - psutil comes with accelerate
        return _cgroup_headroom()
    known = [int(psutil.virtual_memory().available), _cgroup_headroom()]
    return min(k for k in known if k is not None)


def check_fisher_memory(rows: int, parameters: int, available: int | None = None) -> int:
    """The estimate of :func:`fisher_memory_bytes`; raises :class:`InsufficientMemoryError` when it
    exceeds ``available`` (default: :func:`available_memory_bytes`), so that a request too large
    for the machine ends with one line before its first gradient rather than in an out-of-memory kill."""
    needed = fisher_memory_bytes(rows, parameters)
    available = available_memory_bytes() if available is None else available
    if available is not None and needed > available:
        raise InsufficientMemoryError(
            f"the empirical Fisher of {rows} instances x {parameters:,} parameters needs about "
            f"{needed / 2**30:.2f} GiB and {available / 2**30:.2f} GiB is available: lower --sample-size, "
            "train the adapter with fewer parameters (rank, target modules), or free memory"
        )
    return needed


@dataclass(frozen=True)
class KnownRow:
    """A per-instance gradient row computed earlier (``[p]``) and its loss then, if known."""

    gradient: torch.Tensor
    loss: float | None = None


class EmpiricalFisher:
    """F = Σ w_i g_i g_iᵀ over m instances (w_i = 1/m unless weighted), held as its gradient matrix G (float64)."""

    def __init__(
        self,
        gradients: torch.Tensor,
        passes: int | None = None,
        losses: torch.Tensor | None = None,
        samples: Sequence[Any] | None = None,
        seconds: float = 0.0,
    ) -> None:
        """``passes``: the backward passes that produced ``gradients`` (one per row unless batched);
        ``losses``: each row's loss at the same parameters, when the passes gave it (``[m]``);
        ``samples``: the rows' instances; ``seconds``: what building the rows took."""
        if gradients.dim() != 2 or gradients.shape[0] == 0:
            raise ValueError(f"expected a non-empty [m, p] gradient matrix, got shape {tuple(gradients.shape)}")
        if losses is not None and losses.shape != (gradients.shape[0],):
            raise ValueError(
                f"expected one loss per gradient row ({gradients.shape[0]}), got shape {tuple(losses.shape)}"
            )
        if samples is not None and len(samples) != gradients.shape[0]:
            raise ValueError(f"expected one sample per gradient row ({gradients.shape[0]}), got {len(samples)}")
        self.gradients = gradients.to(torch.float64)
        self.gram = self.gradients @ self.gradients.T  # G Gᵀ, [m, m]
        self.passes = gradients.shape[0] if passes is None else passes
        self.losses = None if losses is None else losses.to(torch.float64)
        self.samples = None if samples is None else list(samples)
        self.seconds = seconds
        self.reused = 0  # rows taken from a cache (``from_samples``' ``known``), not computed
        self.row_weights: torch.Tensor | None = None  # [m] summing to 1 (or less); None: uniform 1/m
        self.certain: tuple[int, ...] = ()  # rows in the sample for certain (``inclusion_weighted``)
        self.population: int | None = None  # the instance count the weights estimate over

    def inclusion_weighted(self, certain: Sequence[int], population: int) -> EmpiricalFisher:
        """This Fisher with each row weighted by the inverse of its chance of being sampled: 1/N
        for the ``certain`` rows (the edited instances, always in the sample), the rest sharing
        what remains equally ((N − c) / ((m − c) N) each), N = ``population`` (the engine passes
        the training set plus the corrected forms, which are rows too).

        The result estimates the training set's Fisher without the m/n cap on a row's own
        predicted move (module docstring). It shares G and G Gᵀ with this one (no copy). When
        every row is certain (the sample is the whole set), each weighs 1/n."""
        certain = tuple(sorted(set(int(i) for i in certain)))
        if population < 1:
            raise ValueError(f"inclusion weights need a positive population, got {population}")
        if any(not 0 <= i < self.size for i in certain):
            raise ValueError(f"certain rows must index the Fisher's {self.size} rows")
        drawn = self.size - len(certain)
        if drawn and population - len(certain) < drawn:
            raise ValueError(
                f"a sample of {drawn} drawn rows cannot come from {population - len(certain)} remaining instances"
            )
        share = (population - len(certain)) / (drawn * population) if drawn else 0.0
        weights = torch.full((self.size,), share, dtype=torch.float64)
        weights[list(certain)] = 1.0 / population
        weighted = self.with_inclusion(certain, population)
        weighted.row_weights = weights
        return weighted

    def with_inclusion(self, certain: Sequence[int], population: int) -> EmpiricalFisher:
        """This Fisher, unweighted as it is, knowing which rows were drawn for certain out of how
        many instances: what :meth:`inclusion_weighted` needs to weight it later (``certain``,
        ``population``). Shares G and G Gᵀ."""
        known = EmpiricalFisher.__new__(EmpiricalFisher)
        known.__dict__.update(self.__dict__)
        known.certain, known.population = tuple(sorted(set(int(i) for i in certain))), population
        return known

    def as_if_certain(self, rows: Sequence[int]) -> EmpiricalFisher:
        """This Fisher with ``rows`` drawn for certain too, beside its own certain rows (same
        inclusion weighting; a uniform Fisher is returned as it is). The reference calibration
        predicts a retained group's move with it, so that the group weighs what the edited rows
        weigh. (It is not quite the Fisher a request removing only ``rows`` would build: there the
        present request's edited rows would be drawn rows; keeping them certain keeps one sample
        for every group and changes one weight per edited row.)"""
        if self.row_weights is None or self.population is None:
            return self
        return self.inclusion_weighted(self.certain + tuple(rows), self.population)

    @property
    def weighting(self) -> str:
        """How its rows are weighted, as ``SolverConfig.row_weights`` names it: ``"uniform"`` or ``"inclusion"``."""
        return "uniform" if self.row_weights is None else "inclusion"

    @property
    def weights(self) -> torch.Tensor:
        """w: ``[m]``, each row's weight in F."""
        if self.row_weights is None:
            return torch.full((self.size,), 1.0 / self.size, dtype=torch.float64)
        return self.row_weights

    @classmethod
    def from_samples(
        cls,
        model: nn.Module,
        loss_fn: LossFn,
        space: ParameterSpace,
        samples: Sequence[Any],
        collate_fn: Callable[[list[Any]], Any],
        on_gradient: Callable[[int], None] | None = None,
        batch_size: int = 1,
        known: Callable[[Any], KnownRow | None] | None = None,
    ) -> EmpiricalFisher:
        """Per-instance gradients of ``loss_fn`` at the model's current parameters.

        ``known(sample)``: a row (and its loss, or None) already computed for that sample, taken
        instead of a pass (a curvature cache; the caller answers for its staleness), or None to
        compute it. ``reused`` counts them; ``passes`` and ``seconds`` are the computed rows' own.

        With ``batch_size`` > 1 and every trainable parameter in an ``nn.Linear`` (LoRA, a linear
        projector), one backward pass serves ``batch_size`` instances: the layers' hooks split
        its gradient per instance (:mod:`rec_eraser.core.linear_capture`). Same values, fewer
        passes; other models get one pass per instance. One pass per instance also keeps each
        instance's loss (``losses``), which a caller can use instead of a second forward pass;
        a batched pass yields only the batch's mean, so ``losses`` is then ``None``.
        """
        t0 = time.perf_counter()
        # every process on the machine holds the whole matrix (and, distributed, the gathering's copy)
        check_fisher_memory(len(samples) * (2 * distributed.local_world_size() - 1), space.dim)
        found = [None if known is None else known(sample) for sample in samples]
        todo = [sample for sample, row in zip(samples, found) if row is None]
        computed, passes, computed_losses = (
            cls._compute_sharded(model, loss_fn, space, todo, collate_fn, on_gradient, batch_size)
            if todo
            else (None, 0, None)
        )
        if len(todo) == len(samples):
            return cls(computed, passes, computed_losses, samples, seconds=time.perf_counter() - t0)
        rows, losses, next_computed = [], [], 0
        for row in found:
            if row is None:
                rows.append(computed[next_computed])
                losses.append(None if computed_losses is None else float(computed_losses[next_computed]))
                next_computed += 1
            else:
                rows.append(row.gradient.to(torch.float64).reshape(-1))
                losses.append(row.loss)
        fisher = cls(
            torch.stack(rows),
            passes,
            None if any(loss is None for loss in losses) else torch.tensor(losses, dtype=torch.float64),
            samples,
            seconds=time.perf_counter() - t0,
        )
        fisher.reused = len(samples) - len(todo)
        return fisher

    @classmethod
    def _compute_sharded(
        cls,
        model: nn.Module,
        loss_fn: LossFn,
        space: ParameterSpace,
        samples: Sequence[Any],
        collate_fn: Callable[[list[Any]], Any],
        on_gradient: Callable[[int], None] | None,
        batch_size: int,
    ) -> tuple[torch.Tensor, int, torch.Tensor | None]:
        """:meth:`_compute` with the rows split across processes (:mod:`rec_eraser.core.distributed`):
        each rank computes a contiguous block and every rank ends with all rows in order. Alone,
        exactly :meth:`_compute`."""
        if distributed.world()[1] == 1:
            return cls._compute(model, loss_fn, space, samples, collate_fn, on_gradient, batch_size)
        mine = distributed.my_block(samples)

        def block() -> tuple[torch.Tensor, int, torch.Tensor | None]:
            if not mine:  # more ranks than rows: this one only takes part in the gathering
                return torch.zeros((0, space.dim), dtype=torch.float64), 0, torch.zeros(0, dtype=torch.float64)
            return cls._compute(model, loss_fn, space, mine, collate_fn, on_gradient, batch_size)

        rows, passes, losses = distributed.on_every_rank(block)  # a failure on one rank is raised on all
        # a batched pass keeps no per-row loss; then no rank's losses are kept
        everyone_has_losses = distributed.sum_int(int(losses is not None)) == distributed.world()[1]
        gathered_losses = distributed.gather_rows(losses) if everyone_has_losses else None
        return distributed.gather_rows(rows.to(torch.float64)), distributed.sum_int(passes), gathered_losses

    @classmethod
    def _compute(
        cls,
        model: nn.Module,
        loss_fn: LossFn,
        space: ParameterSpace,
        samples: Sequence[Any],
        collate_fn: Callable[[list[Any]], Any],
        on_gradient: Callable[[int], None] | None,
        batch_size: int,
    ) -> tuple[torch.Tensor, int, torch.Tensor | None]:
        """The rows of ``samples`` (float64, [m, p]), the passes they took and their losses (None when batched)."""
        layers = None
        if batch_size > 1:
            try:
                layers = linear_layers(model, space)
            except UnsupportedCurvatureError as exc:
                logger.info("empirical Fisher: one instance per pass (%s)", exc)
        wasted = 0
        if layers is not None:
            try:
                gradients, passes = cls._batched(
                    model, loss_fn, space, layers, samples, collate_fn, on_gradient, batch_size
                )
                return gradients, passes, None
            except _IncompleteCapture as exc:
                logger.info("empirical Fisher: one instance per pass (%s)", exc)
                wasted = exc.passes
        rows, losses = [], []
        for i, sample in enumerate(samples):
            loss = loss_fn(model, collate_fn([sample]))
            grads = torch.autograd.grad(loss, space.params, allow_unused=True)
            rows.append(space.flatten(list(grads)).to(torch.float64).cpu())
            losses.append(float(loss.detach()))
            if on_gradient:
                on_gradient(i + 1)
        return torch.stack(rows), len(rows) + wasted, torch.tensor(losses, dtype=torch.float64)

    @classmethod
    def _batched(
        cls,
        model: nn.Module,
        loss_fn: LossFn,
        space: ParameterSpace,
        layers: list,
        samples: Sequence[Any],
        collate_fn: Callable[[list[Any]], Any],
        on_gradient: Callable[[int], None] | None,
        batch_size: int,
    ) -> tuple[torch.Tensor, int]:
        rows: list[torch.Tensor] = []
        sums: list[torch.Tensor] = []

        def take(count: int) -> None:
            for layer in layers:
                # per instance only when the layer ran on [count, tokens, d] inputs: a projector applied
                # to every item token of the batch at once (LLaRA) has no instance axis to split
                if layer.inputs is None or layer.out_grads is None:
                    raise _IncompleteCapture(len(rows) + 1, "a trainable layer was not reached by this micro-batch")
                if layer.inputs.dim() != 3 or layer.inputs.shape[0] != count or layer.out_grads.shape[0] != count:
                    raise _IncompleteCapture(
                        len(rows) + 1, f"a trainable layer's inputs {tuple(layer.inputs.shape)} have no instance axis"
                    )
            rows.append(flat_instance_rows(layers, space, count).to(torch.float64).cpu())
            for layer in layers:  # a layer the next micro-batch does not reach must not keep these
                layer.inputs = layer.out_grads = None
            # the hooks see only what flows through the layers' outputs; a loss term on the
            # parameters themselves (weight decay in the loss) would be missing from the rows
            split, total = rows[-1].sum(0), sums[-1]
            scale = float(torch.linalg.vector_norm(rows[-1], dim=1).sum())
            if float(torch.linalg.vector_norm(split - total)) > _CAPTURE_TOL * max(scale, 1e-30):
                raise _IncompleteCapture(
                    len(rows),
                    "the layers' captures do not add up to the pass's gradient: the loss has terms outside them",
                )
            if on_gradient:
                on_gradient(sum(r.shape[0] for r in rows))

        passes = capture_passes(
            model,
            loss_fn,
            space,
            layers,
            samples,
            collate_fn,
            batch_size,
            torch.Generator(),
            take,
            empirical=True,
            on_sum=lambda grads: sums.append(space.flatten(list(grads)).to(torch.float64).cpu()),
        )
        return torch.cat(rows), passes

    @property
    def size(self) -> int:
        return self.gradients.shape[0]

    # Unweighted, every formula below is the 1/m one exactly as it was before weights existed (same
    # float operations), so that updates written then are reproduced bit for bit.

    def trace(self) -> float:
        """tr(F) = Σ w_i ‖g_i‖²."""
        return _trace_of(self.gram, self.row_weights)

    def trace_of_square(self) -> float:
        """tr(F²) = ‖W^½ G Gᵀ W^½‖²_F."""
        return _square_of(self.gram, self.row_weights)

    def block_traces(self, columns: torch.Tensor) -> tuple[float, float]:
        """tr(F_BB) and tr(F_BB²) of the diagonal block of F on the parameters ``columns`` (a [p] mask)."""
        block = self.gradients[:, columns.cpu()]
        gram = block @ block.T
        return _trace_of(gram, self.row_weights), _square_of(gram, self.row_weights)

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        """F v."""
        if self.row_weights is None:
            return self.gradients.T @ (self.gradients @ v.to(torch.float64)) / self.size
        return self.gradients.T @ (self.row_weights * (self.gradients @ v.to(torch.float64)))

    def solve(self, b: torch.Tensor, damping: float | torch.Tensor) -> torch.Tensor:
        """(F + D)⁻¹ b by the Woodbury identity, in b's dtype; D = λI for a float λ, diag(d) for a [p] tensor d.

        (F + D)⁻¹ b = D⁻¹b − D⁻¹Gᵀ (W⁻¹ + G D⁻¹ Gᵀ)⁻¹ G D⁻¹b, W⁻¹ = mI when unweighted; for
        D = λI this is the module docstring's formula.
        """
        inverse = self._inverse_damping(damping)
        b64 = b.to(torch.float64).cpu()
        scaled = self.gradients * inverse  # G D⁻¹
        # G D⁻¹ Gᵀ: for D = λI the precomputed G Gᵀ / λ, no second m × m × p product
        reduced = self.gram * inverse if inverse.dim() == 0 else scaled @ self.gradients.T
        system = reduced + (
            self.size * torch.eye(self.size, dtype=torch.float64)
            if self.row_weights is None
            else torch.diag(1.0 / self.row_weights)
        )
        coeffs = torch.linalg.solve(system, scaled @ b64)
        x = inverse * b64 - scaled.T @ coeffs
        return x.to(dtype=b.dtype, device=b.device)

    def _inverse_damping(self, damping: float | torch.Tensor) -> torch.Tensor:
        """D⁻¹: a 0-d tensor 1/λ for a float λ, else the [p] vector 1/d."""
        d = torch.as_tensor(damping, dtype=torch.float64).cpu()
        if not bool((d > 0).all()):
            raise ValueError(
                f"the empirical Fisher is singular (rank <= {self.size}); damping must be > 0, got {float(d.min())}"
            )
        p = self.gradients.shape[1]
        if d.dim() != 0 and d.shape != (p,):
            raise ValueError(f"a damping vector needs {p} entries, got shape {tuple(d.shape)}")
        return 1.0 / d

    def relative_residual(self, x: torch.Tensor, b: torch.Tensor, damping: float | torch.Tensor) -> float:
        """‖(F + D)x − b‖ / ‖b‖ (a check of the arithmetic: the solve is exact)."""
        x64, b64 = x.to(torch.float64).cpu(), b.to(torch.float64).cpu()
        d = torch.as_tensor(damping, dtype=torch.float64).cpu()
        return float(torch.linalg.vector_norm(self.matvec(x64) + d * x64 - b64) / torch.linalg.vector_norm(b64))

    def influence_spectrum(self, damping: float | torch.Tensor) -> InfluenceSpectrum:
        """Influences between this Fisher's own rows under ``factor × damping``, for any factor (:class:`InfluenceSpectrum`)."""
        return InfluenceSpectrum(self, damping)


class InfluenceSpectrum:
    """aᵀ G (F + f·D)⁻¹ Gᵀ b for coefficient vectors a, b over the Fisher's m rows, at any factor f.

    With F = Gᵀ W G, S = W^½ and S G D⁻¹ Gᵀ S = Q diag(k) Qᵀ (one m × m eigendecomposition),
    the Woodbury identity gives

        G (F + f D)⁻¹ Gᵀ = S⁻¹ Q diag(k / (f + k)) Qᵀ S⁻¹

    (for W = I/m: Q diag(m k' / (m f + k')) Qᵀ with k' the eigenvalues of G D⁻¹ Gᵀ), so every
    such influence costs two m-vectors' products, however many factors are tried, and falls
    monotonically as f grows (each weight k / (f + k) does). With b = Gᵀβ / n the
    right-hand side of an update, aᵀ Δθ(f) = ``bilinear(a, β, f) / n`` is the first-order change
    of the rows' losses that a weights; ``bilinear(e, e, f) / n`` with e an indicator of some
    rows is their predicted leave-out move (the self-influence of that group).
    """

    def __init__(
        self, fisher: EmpiricalFisher, damping: float | torch.Tensor, reduced: torch.Tensor | None = None
    ) -> None:
        """``reduced``: G D⁻¹ Gᵀ of ``fisher``'s rows at ``damping`` when already computed (``self.reduced``
        of a spectrum of the same rows and damping, whatever their weights): with a per-parameter
        damping it is an m × m × p product, which a re-weighting of the same rows need not repeat."""
        if reduced is None:
            inverse = fisher._inverse_damping(damping)
            reduced = fisher.gram * inverse if inverse.dim() == 0 else (fisher.gradients * inverse) @ fisher.gradients.T
        self.reduced = reduced  # G D⁻¹ Gᵀ, unweighted
        # unweighted: Q diag(m k' / (m f + k')) Qᵀ on G D⁻¹ Gᵀ itself, the formula before weights existed
        self.inverse_root = None if fisher.row_weights is None else 1.0 / fisher.row_weights.sqrt()
        if self.inverse_root is not None:
            reduced = reduced / self.inverse_root[:, None] / self.inverse_root[None, :]
        eigenvalues, self.vectors = torch.linalg.eigh((reduced + reduced.T) / 2)
        self.eigenvalues = eigenvalues.clamp(min=0.0)  # K is PSD; rounding can make its smallest slightly negative
        self.size = fisher.size

    def weights(self, factor: float) -> torch.Tensor:
        """k / (factor + k) per eigen-direction (unweighted: m k' / (m·factor + k'))."""
        if not factor > 0:
            raise ValueError(f"the damping factor must be > 0, got {factor}")
        if self.inverse_root is None:
            return self.size * self.eigenvalues / (self.size * factor + self.eigenvalues)
        return self.eigenvalues / (factor + self.eigenvalues)

    def coordinates(self, coefficients: torch.Tensor) -> torch.Tensor:
        """Qᵀ S⁻¹ c for ``[m]`` or ``[m, k]`` coefficients c (unweighted: Qᵀ c): what :meth:`weights` multiply."""
        c = torch.as_tensor(coefficients, dtype=torch.float64)
        if self.inverse_root is not None:
            c = c * (self.inverse_root if c.dim() == 1 else self.inverse_root[:, None])
        return self.vectors.T @ c

    def bilinear(self, a: torch.Tensor, b: torch.Tensor, factor: float) -> float:
        """aᵀ G (F + factor·D)⁻¹ Gᵀ b for [m] coefficient vectors ``a`` and ``b``."""
        return float((self.coordinates(a) * self.weights(factor) * self.coordinates(b)).sum())


def _trace_of(gram: torch.Tensor, weights: torch.Tensor | None) -> float:
    """Σ w_i K_ii: tr(F) for F = Gᵀ W G and K = G Gᵀ (``None``: w_i = 1/m)."""
    if weights is None:
        return float(torch.diagonal(gram).sum()) / gram.shape[0]
    return float((weights * torch.diagonal(gram)).sum())


def _square_of(gram: torch.Tensor, weights: torch.Tensor | None) -> float:
    """‖W^½ K W^½‖²_F = Σ_ij w_i w_j K_ij²: tr(F²) for F = Gᵀ W G and K = G Gᵀ (``None``: w_i = 1/m)."""
    if weights is None:
        return float((gram**2).sum()) / gram.shape[0] ** 2
    return float((weights[:, None] * gram**2 * weights[None, :]).sum())
