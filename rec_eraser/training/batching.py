"""The order in which training takes its instances: random, or random with length buckets.

Padding a batch to its longest instance costs compute on tokens that carry nothing; grouping
instances of similar length into the same batch removes most of it. The grouping here keeps
the randomness that matters: the epoch's random order is cut into windows of
``window_batches`` batches, and only within a window are instances sorted by length (so which
instances meet in a window is random, and nothing is ever sorted across the whole epoch).
"""

from __future__ import annotations

import torch


def bucketed_order(
    lengths: list[int], batch_size: int, window_batches: int = 16, generator: torch.Generator | None = None
) -> list[int]:
    """The indices ``0..len(lengths)-1`` in batches of similar length: the given order cut into
    windows of ``window_batches`` batches, each window sorted longest first (so a short last
    batch holds the shortest instances, not the longest). With ``generator`` the full batches of
    each window are then shuffled, so that a window's steps do not run from long to short; a
    short batch stays at its window's end."""
    window = batch_size * window_batches
    order: list[int] = []
    for start in range(0, len(lengths), window):
        chunk = sorted(range(start, min(start + window, len(lengths))), key=lambda i: -lengths[i])
        batches = [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
        # a short batch stays last: training slices the order every batch_size indices, so a
        # short batch anywhere else would shift every later step across two buckets
        short = batches.pop() if len(batches[-1]) < batch_size else None
        if generator is not None and len(batches) > 1:
            batches = [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
        order.extend(i for batch in batches + ([short] if short else []) for i in batch)
    return order


def epoch_order(
    lengths: list[int], batch_size: int, generator: torch.Generator, length_bucketing: bool = False
) -> list[int]:
    """One epoch's order of the training instances: a random permutation drawn from ``generator``
    (exactly what training drew before bucketing existed), grouped into length buckets when asked."""
    order = torch.randperm(len(lengths), generator=generator).tolist()
    if not length_bucketing:
        return order
    grouped = bucketed_order([lengths[i] for i in order], batch_size, generator=generator)
    return [order[i] for i in grouped]
