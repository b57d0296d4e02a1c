"""Work split across processes with ``torch.distributed`` (gloo on CPU, NCCL on GPU).

Every helper here is a no-op in a single process: code written against them runs unchanged
alone and under ``torchrun --nproc-per-node N``. The split is always the same: a list of
work items (instances, edited instances, prompts) is cut into contiguous blocks, one per
rank in rank order, so that concatenating the ranks' results restores the single-process
order exactly. Results are then gathered (rows, scores) or summed (gradients) so that every
rank holds what one process would have computed, up to float rounding of the sums.

Only first-order work is split: per-instance gradients, summed gradients, training steps and
forward scoring. None of it needs a double backward, which is why plain collectives suffice
here where DDP and FSDP (which support no double backward) would not. Curvature products
that need one (Hessian / Gauss–Newton solvers) run replicated: every rank does the whole
solve on the same inputs and reaches the same answer, with no speed-up
(:data:`rec_eraser.core.solver_registry` says which solvers split their work).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from datetime import timedelta
from typing import Any, ContextManager, TypeVar

import numpy as np
import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)

T = TypeVar("T")


def world() -> tuple[int, int]:
    """``(rank, world_size)``; ``(0, 1)`` when no process group is initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    """True on rank 0 (and in a single process): the one rank that writes files and prints."""
    return world()[0] == 0


def init_from_env(timeout_seconds: float = 1800.0) -> bool:
    """Join the process group that ``torchrun`` / ``accelerate launch`` describe in the
    environment (``WORLD_SIZE`` > 1); gloo on CPU, NCCL when CUDA is available. Returns
    whether this process now runs distributed. Without those variables: nothing, False."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if dist.is_initialized():
        return True
    # gloo for CPU tensors always (gradient rows and counts are gathered on the host), NCCL for
    # CUDA tensors where there is a GPU for this rank
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    backend = "gloo"
    if torch.cuda.is_available() and local_rank < torch.cuda.device_count():
        torch.cuda.set_device(local_rank)
        backend = "cpu:gloo,cuda:nccl"
    dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_seconds))
    atexit.register(_leave)
    logger.info("distributed: rank %d of %d (%s)", dist.get_rank(), dist.get_world_size(), backend)
    return True


#: how long a rank waits at exit for the others before it tears the group down anyway
EXIT_BARRIER_SECONDS = 60.0


def _leave() -> None:
    if not dist.is_initialized():
        return
    try:
        # every rank reaches the exit before any destroys the group: one that tears it down while
        # another is still in a collective can abort at exit ("terminate called without an active
        # exception" on rank 0 after `evaluate`, seen once in CI)
        dist.monitored_barrier(timeout=timedelta(seconds=EXIT_BARRIER_SECONDS))
    except Exception as exc:  # a rank that died or hangs: leave anyway, the launcher reports it
        logger.warning("distributed: not every rank reached the exit (%s); leaving", exc)
    dist.destroy_process_group()


def local_world_size() -> int:
    """The processes on this machine (``LOCAL_WORLD_SIZE``, set by torchrun; 1 alone): what
    shares its memory."""
    return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1"))) if world()[1] > 1 else 1


def barrier() -> None:
    """Wait for every rank (nothing alone)."""
    if world()[1] > 1:
        dist.barrier()


def block(n: int, rank: int | None = None, size: int | None = None) -> range:
    """The indices of ``n`` items that ``rank`` of ``size`` takes: a contiguous block, the
    first ``n mod size`` ranks one item longer."""
    here, total = world()
    rank, size = here if rank is None else rank, total if size is None else size
    return range(rank * n // size, (rank + 1) * n // size)


def my_block(items: Sequence[T]) -> list[T]:
    """This rank's contiguous block of ``items`` (all of them alone)."""
    return [items[i] for i in block(len(items))]


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Σ over ranks of ``tensor``, in place, on every rank (the tensor itself alone)."""
    if world()[1] > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def sum_int(value: int) -> int:
    """Σ over ranks of one count."""
    if world()[1] == 1:
        return value
    return int(all_reduce_sum(torch.tensor([value], dtype=torch.int64))[0])


def gather_rows(local: torch.Tensor) -> torch.Tensor:
    """Every rank's ``local`` rows (``[m_r, ...]``, ``m_r`` may differ, may be 0), concatenated
    in rank order on every rank. The trailing shape and dtype must agree across ranks."""
    rank, size = world()
    if size == 1:
        return local
    counts = [torch.zeros(1, dtype=torch.int64) for _ in range(size)]
    dist.all_gather(counts, torch.tensor([local.shape[0]], dtype=torch.int64))
    sizes = [int(c[0]) for c in counts]
    longest = max(sizes)
    padded = torch.zeros((longest, *local.shape[1:]), dtype=local.dtype, device=local.device)
    padded[: local.shape[0]] = local
    parts = [torch.empty_like(padded) for _ in range(size)]
    dist.all_gather(parts, padded)
    return torch.cat([part[:m] for part, m in zip(parts, sizes)])


def gather_objects(local: list[Any]) -> list[Any]:
    """Every rank's list of picklable ``local`` items, concatenated in rank order on every rank."""
    size = world()[1]
    if size == 1:
        return local
    parts: list[Any] = [None] * size
    dist.all_gather_object(parts, local)
    return [item for part in parts for item in part]


def agree(value: T) -> T:
    """Rank 0's ``value`` on every rank (a decision that must be the same everywhere, such as
    whether a file exists yet); ``value`` itself alone."""
    if world()[1] == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def on_every_rank(fn: Callable[[], T]) -> T:
    """``fn()``, with a failure on any rank raised on every rank (the first failing rank's
    exception), so that no rank goes on to a collective the failed one never reaches."""
    if world()[1] == 1:
        return fn()
    try:
        result, failure = fn(), None
    except Exception as exc:  # gathered below and raised everywhere
        result, failure = None, exc
    failures = gather_objects([failure])
    first = next((f for f in failures if f is not None), None)
    if first is not None:
        raise first
    return result  # type: ignore[return-value]


def broadcast_module_state(module: torch.nn.Module) -> None:
    """Every rank takes rank 0's trainable parameters and random state (nothing alone): the
    ranks of a data-parallel training must start from one model, whatever each drew so far."""
    if world()[1] == 1:
        return
    for p in module.parameters():
        if p.requires_grad:
            with torch.no_grad():
                host = p.detach().cpu()
                dist.broadcast(host, src=0)
                p.copy_(host.to(p.device))
    state = [torch.get_rng_state()]
    dist.broadcast_object_list(state, src=0)
    torch.set_rng_state(state[0])


def sharded(fn: Callable[[list[T]], Any], items: Sequence[T]) -> Any:
    """``fn(items)`` with each rank computing ``fn`` of its block and the results concatenated
    in rank order (a tensor or an array along axis 0, a list item by item). ``fn`` must map
    a list to one result per item. A failure on any rank is raised on every rank
    (:func:`on_every_rank`). Alone: ``fn(list(items))``."""
    if world()[1] == 1:
        return fn(list(items))
    local = on_every_rank(lambda: fn(my_block(items)))
    if isinstance(local, torch.Tensor):
        return gather_rows(local)
    if isinstance(local, np.ndarray):
        # a rank with no items may return a differently shaped empty array; the others set the shape
        gathered = gather_objects([local])
        shaped = [a for a in gathered if a.size] or gathered
        return np.concatenate(shaped, axis=0)
    return gather_objects(list(local))


@contextlib.contextmanager
def entered_by_main(enter: Callable[[], ContextManager[Any]]) -> Iterator[None]:
    """``with enter():`` on rank 0 only (a file lock, a write), every rank inside the block.

    Alone it is just ``with enter():``. Distributed, rank 0 enters the context; if that fails,
    every rank raises the same exception (so a refused lock is one clear error on all ranks,
    not a hang); on a normal exit the ranks meet at a barrier before rank 0 leaves it, so what
    rank 0 wrote inside is in place when any rank goes on. Files are written by rank 0 alone
    (:func:`is_main`); the other ranks take part in the collectives of the work inside.
    """
    if world()[1] == 1:
        with enter():
            yield
        return
    with contextlib.ExitStack() as stack:
        failure: list[BaseException | None] = [None]
        if is_main():
            try:
                stack.enter_context(enter())
            except BaseException as exc:  # handed to every rank below, then raised everywhere
                failure[0] = exc
        dist.broadcast_object_list(failure, src=0)
        if failure[0] is not None:
            raise failure[0]
        yield
        barrier()
