"""Is bfloat16 autocast worth it on this machine? Measured, because a CPU's flags do not say.

The medium recipes train under bfloat16 autocast because, on the machines their comments were
measured on, it was faster than float32 (0.58 against 0.84 s per instance-step). On a CPU
without native bfloat16 arithmetic (an AVX2-only AMD EPYC, torch 2.13 reporting capability
"AVX2") the same products fall back to a slow path: a 512 × 576 × 1536 product took 0.73 s in
bfloat16 against 0.012 s in float32, and a medium TALLRec training ran about 60 times slower
than its recipe says. Training still works there, so this warns rather than refuses or
silently changes the recipe (a recipe's precision is part of what a run's results mean).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import lru_cache

import torch

#: warn when bfloat16 products take more than this many times as long as float32 ones: where bfloat16 is
#: native it is faster (ratio < 1), where it is emulated it was ~60x slower, so any factor between serves
SLOWDOWN_WARNING = 2.0


@lru_cache(maxsize=1)
def bfloat16_slowdown(repeats: int = 5) -> float:
    """How many times as long a bfloat16 matrix product takes as a float32 one on this CPU (best of ``repeats``).

    Small products (128 × 256 × 256): a few milliseconds even on the slow path.
    """
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(128, 256, generator=gen), torch.randn(256, 256, generator=gen)

    def best(x: torch.Tensor, y: torch.Tensor) -> float:
        x @ y  # warm-up: the first call picks kernels
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            x @ y
            times.append(time.perf_counter() - t0)
        return max(min(times), 1e-9)

    return best(a.bfloat16(), b.bfloat16()) / best(a, b)


def precision_warning(precision: str, device: str, slowdown: Callable[[], float] = bfloat16_slowdown) -> str | None:
    """A warning for a recipe that asks for bfloat16 autocast on a CPU where it is slow, else ``None``."""
    if precision != "bfloat16" or device != "cpu":
        return None
    factor = slowdown()
    if factor <= SLOWDOWN_WARNING:
        return None
    return (
        f"bfloat16 autocast is slow on this CPU (a matrix product takes {factor:.0f}x as long as in float32; torch reports "
        f"CPU capability {torch.backends.cpu.get_cpu_capability()}): training will take far longer than the recipe's "
        'comments measured; set precision = "float32" in the recipe ([train] or the tier\'s section) on this machine '
        "(rec-eraser bench: --precision float32)"
    )
