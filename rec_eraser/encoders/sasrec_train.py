"""Training the SASRec item encoder on a dataset's training interactions (the model, the data
layout and the determinism are described in :mod:`rec_eraser.encoders.sasrec`)."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from rec_eraser.data import Dataset, chronological, leave_last_out
from rec_eraser.encoders.sasrec import ItemEncoder, SASRec, _pad

logger = logging.getLogger(__name__)


def training_sequences(dataset: Dataset) -> dict[str, list[str]]:
    """User -> item ids of the user's training positions (chronological, valid/test targets left out)."""
    out = {}
    for user, seq in chronological(dataset.interactions).items():
        labels = leave_last_out(len(seq))
        out[user] = [x.item for x, label in zip(seq, labels) if label == "train"]
    return out


def training_windows(sequences: Sequence[Sequence[int]], max_len: int) -> list[list[int]]:
    """Cut sequences into windows of up to ``max_len + 1`` items, from the end, overlapping by one.

    Window ``w`` gives inputs ``w[:-1]`` and targets ``w[1:]``; every transition of every
    sequence appears in exactly one window. Sequences shorter than 2 give nothing.
    """
    out = []
    for seq in sequences:
        end = len(seq)
        while end >= 2:
            start = max(0, end - max_len - 1)
            out.append(list(seq[start:end]))
            end = start + 1
    return out


@contextmanager
def _threads(n: int | None) -> Iterator[None]:
    if n is None:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def train_sasrec(
    dataset: Dataset,
    epochs: int = 12,
    seed: int = 0,
    hidden: int = 64,
    max_len: int = 50,
    lr: float = 1e-3,
    batch_size: int = 128,
    progress: Callable[[int, int], None] | None = None,
    *,
    n_layers: int = 2,
    n_heads: int = 1,
    dropout: float = 0.2,
    threads: int | None = 1,
    items: Sequence[str] | None = None,
) -> ItemEncoder:
    """Train SASRec on the dataset's training interactions and return its item-embedding table.

    Args:
        dataset: the loaded dataset; the item vocabulary is ``dataset.items`` (all interacted
            items, first-appearance order); training uses each user's chronological sequence
            without its last two interactions (the valid and test targets).
        epochs: passes over the training windows (12 train ml-100k in about a minute on 2 cores).
        seed: seeds initialisation, dropout (``torch.manual_seed``) and shuffling (a ``torch.Generator``).
        hidden, max_len, lr, batch_size, n_layers, n_heads, dropout: the model and optimiser sizes.
        progress: called as ``progress(steps_done, steps_total)`` after every optimiser step.
        threads: torch intra-op threads during training (restored afterwards); None leaves them
            as they are. 1 was faster than 2 for these small matmuls on the 2-core machine.
        items: the item vocabulary, in row order (default ``dataset.items``). An encoder
            retrained on fewer interactions passes its predecessor's, so that every item keeps
            its row (prompts index items by row); an item without training interactions keeps
            its initial embedding, as it would in any encoder that never saw it.

    Returns:
        An :class:`ItemEncoder` with the trained embeddings (``[n_items, hidden]``), the model
        (in eval mode) and a config recording hyper-parameters, dataset provenance and the
        final training loss.

    Raises:
        ValueError: no user has two or more training interactions.
    """
    item_ids = list(items) if items is not None else dataset.items
    index = {item: i + 1 for i, item in enumerate(item_ids)}
    train = training_sequences(dataset)
    unknown = sorted({i for seq in train.values() for i in seq} - index.keys())
    if unknown:
        raise ValueError(
            f"{dataset.name}: {len(unknown)} interacted items are not in the vocabulary given (e.g. {unknown[0]!r})"
        )
    windows = training_windows([[index[i] for i in seq] for seq in train.values()], max_len)
    if not windows:
        raise ValueError(f"{dataset.name}: no user has two or more training interactions; SASRec has nothing to learn")
    n_train = sum(len(w) - 1 for w in windows)
    steps_per_epoch = math.ceil(len(windows) / batch_size)
    total = epochs * steps_per_epoch
    started = time.perf_counter()
    loss_value: float | None = None  # stays None with epochs=0
    with _threads(threads):
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed)
        model = SASRec(
            len(item_ids), hidden=hidden, max_len=max_len, n_layers=n_layers, n_heads=n_heads, dropout=dropout
        )
        optimizer = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.98))
        model.train()
        step = 0
        for epoch in range(epochs):
            order = torch.randperm(len(windows), generator=generator).tolist()
            total_loss, count = 0.0, 0
            for b in range(0, len(order), batch_size):
                batch = [windows[i] for i in order[b : b + batch_size]]
                inputs, lengths = _pad([w[:-1] for w in batch])
                targets, _ = _pad([w[1:] for w in batch])
                real = targets != 0
                states = model(inputs)[real]
                loss = nn.functional.cross_entropy(model.item_logits(states), targets[real] - 1)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total_loss += loss.item() * int(real.sum())
                count += int(real.sum())
                step += 1
                if progress is not None:
                    progress(step, total)
            loss_value = total_loss / count
            logger.debug("SASRec epoch %d/%d: loss %.4f", epoch + 1, epochs, loss_value)
        model.eval()
    seconds = time.perf_counter() - started
    logger.info(
        "SASRec trained on %s: %d windows, %d transitions, %d epochs, %.1f s, final loss %s",
        dataset.name,
        len(windows),
        n_train,
        epochs,
        seconds,
        loss_value,
    )
    config = {
        "model": "SASRec",
        "hidden": hidden,
        "max_len": max_len,
        "n_layers": n_layers,
        "n_heads": n_heads,
        "dropout": dropout,
        "epochs": epochs,
        "seed": seed,
        "lr": lr,
        "batch_size": batch_size,
        "n_items": len(item_ids),
        "train_transitions": n_train,
        "train_windows": len(windows),
        "final_train_loss": loss_value,
        "seconds": round(seconds, 2),
        "dataset": dataset.name,
        "dataset_files": dict(dataset.files),
    }
    embeddings = model.item_emb.weight.detach()[1:].clone()
    return ItemEncoder(item_ids, embeddings, config, model)
