"""Resumable training: the whole state of an adapter's training loop in one file.

A medium benchmark training takes 20–50 minutes on 2 CPU cores and a benchmark trains
several; an interrupted process (a closed laptop, a session that ends, a kill) used to lose
the training it was in. The loop saves its state every ``interval`` seconds, and a new
training of the same recipe on the same instances resumes from it and ends with the
parameters an uninterrupted training would have (tests/training/test_checkpoint.py checks
equality).

The state is what the next step depends on: the trainable parameters, AdamW's moments, the
scheduler's step, the data order of the current epoch and the generator that draws the next
ones, and torch's global generator (LoRA's dropout draws from it). It is read with
``weights_only=True``: a tampered file cannot run code, and one of another recipe or other
instances is ignored (and replaced), never resumed from.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rec_eraser.files import write_file_atomically

logger = logging.getLogger(__name__)

FORMAT = 1
#: seconds between saves: a save costs well under a second (LoRA and its AdamW moments are a few
#: tens of MB), an interruption loses at most this much training
DEFAULT_INTERVAL = 300.0


@dataclass
class LoopState:
    """Where the training loop is: the next batch is ``order[position:position + batch]`` of ``epoch``."""

    epoch: int = 0
    position: int = 0
    step: int = 0
    order: list[int] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0  # training time before this process (the record's seconds add it)
    resumed_at: list[int] = field(default_factory=list)  # the steps this training resumed at


def save_checkpoint(
    path: Path,
    key: dict[str, Any],
    loop: LoopState,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    generator: torch.Generator,
) -> None:
    """Write the state atomically (a crash mid-write leaves the previous checkpoint)."""
    state = {
        "format": FORMAT,
        "key": key,
        "loop": {
            "epoch": loop.epoch,
            "position": loop.position,
            "step": loop.step,
            "order": loop.order,
            "losses": loop.losses,
            "seconds": loop.seconds,
            "resumed_at": loop.resumed_at,
        },
        "trainable": {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "generator": generator.get_state(),
        "torch_rng": torch.get_rng_state(),
    }
    write_file_atomically(path, lambda tmp: torch.save(state, tmp), mode=0o600)


def load_checkpoint(
    path: Path,
    key: dict[str, Any],
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    generator: torch.Generator,
    n_samples: int,
) -> LoopState | None:
    """Restore a checkpoint of the training ``key`` names (on ``n_samples`` instances) into the
    objects given; ``None`` when there is none, or it is unreadable, inconsistent or of another
    training (it is then removed)."""
    for stale in path.parent.glob(f".{path.name}.*.tmp"):  # a save a kill interrupted
        stale.unlink(missing_ok=True)
    if not path.is_file():
        return None
    # what a fresh training starts from, put back if the checkpoint turns out unusable half-way
    fresh = (
        copy.deepcopy(optimizer.state_dict()),
        copy.deepcopy(scheduler.state_dict()),
        generator.get_state(),
        torch.get_rng_state(),
    )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if state.get("format") != FORMAT or state.get("key") != key:
            raise ValueError("it belongs to another training (recipe, instances or base model)")
        trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
        saved = state["trainable"]
        if set(saved) != set(trainable) or any(saved[n].shape != p.shape for n, p in trainable.items()):
            raise ValueError("its parameters are not this model's")
        loop = LoopState(**state["loop"])
        if (
            sorted(loop.order) != list(range(n_samples))
            or loop.position < 0
            or len(loop.losses) != loop.step
            or state["scheduler"].get("last_epoch") != loop.step
        ):
            raise ValueError("its loop state is inconsistent")
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
    except Exception as exc:  # an unusable checkpoint costs only the time it would have saved
        optimizer.load_state_dict(fresh[0])
        scheduler.load_state_dict(fresh[1])
        generator.set_state(fresh[2])
        torch.set_rng_state(fresh[3])
        logger.warning("ignoring the training checkpoint %s: %s", path, exc)
        path.unlink(missing_ok=True)
        return None
    with torch.no_grad():  # last: every check above passed, and a copy of equal shapes cannot fail
        for name, value in saved.items():
            trainable[name].copy_(value)
    loop.resumed_at = [*loop.resumed_at, loop.step]
    logger.info("resuming the training from %s at step %d", path, loop.step)
    return loop
