"""Next-item HitRatio@k over the whole catalogue: of the item encoder (SASRec) and of popularity.

The input of each evaluation target is every earlier interaction of the user (SASRec sees the
last ``max_len``). With ``exclude_seen``, items already in the user's history (other than the
target) leave the ranking, as RecBole's full-sort evaluation does; turn it off for datasets
where users repeat items. Ties follow the project's one rule
(:mod:`rec_eraser.evaluation.metrics`): the expectation over a random order of the tied items.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from rec_eraser.data import Dataset, chronological, leave_last_out
from rec_eraser.encoders.sasrec import ItemEncoder
from rec_eraser.encoders.sasrec_train import training_sequences
from rec_eraser.evaluation.metrics import expected_hit_rate


def _eval_targets(dataset: Dataset, split: str) -> list[tuple[list[str], str]]:
    """(every earlier item of the user, target item) for each user's target of ``split``."""
    out = []
    for seq in chronological(dataset.interactions).values():
        labels = leave_last_out(len(seq))
        for pos, label in enumerate(labels):
            if label == split and pos > 0:
                out.append(([x.item for x in seq[:pos]], seq[pos].item))
    if not out:
        raise ValueError(f"{dataset.name}: no {split} targets")
    return out


def _rank_bounds(
    scores: Tensor,
    histories: Sequence[Sequence[str]],
    targets: Sequence[str],
    index: dict[str, int],
    exclude_seen: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """Best and worst 1-based rank of each target among all items (they differ where items tie with it)."""
    scores = scores.clone()
    if exclude_seen:
        for row, history in enumerate(histories):
            seen = [index[i] for i in set(history) if i != targets[row]]
            scores[row, seen] = -math.inf
    target_rows = torch.tensor([index[t] for t in targets])
    own = scores[torch.arange(len(targets)), target_rows][:, None]
    return (1 + (scores > own).sum(dim=1)).numpy(), (scores >= own).sum(dim=1).numpy()


def hit_at_k(
    encoder: ItemEncoder,
    dataset: Dataset,
    k: int = 10,
    split: str = "test",
    exclude_seen: bool = True,
    batch_size: int = 256,
) -> float:
    """SASRec's next-item HitRatio@k over all items on each user's ``split`` target."""
    pairs = _eval_targets(dataset, split)
    best, worst = [], []
    for b in range(0, len(pairs), batch_size):
        chunk = pairs[b : b + batch_size]
        histories, targets = [h for h, _ in chunk], [t for _, t in chunk]
        lo, hi = _rank_bounds(encoder.next_item_scores(histories), histories, targets, encoder.index, exclude_seen)
        best.append(lo)
        worst.append(hi)
    return expected_hit_rate(np.concatenate(best), np.concatenate(worst), k)


def popularity_hit_at_k(dataset: Dataset, k: int = 10, split: str = "test", exclude_seen: bool = True) -> float:
    """HitRatio@k of ranking items by their number of training interactions."""
    pairs = _eval_targets(dataset, split)
    item_ids = dataset.items
    index = {item: i for i, item in enumerate(item_ids)}
    counts = Counter(i for seq in training_sequences(dataset).values() for i in seq)
    scores = torch.tensor([float(counts.get(i, 0)) for i in item_ids], dtype=torch.float64).expand(len(pairs), -1)
    histories, targets = [h for h, _ in pairs], [t for _, t in pairs]
    return expected_hit_rate(*_rank_bounds(scores, histories, targets, index, exclude_seen), k)
