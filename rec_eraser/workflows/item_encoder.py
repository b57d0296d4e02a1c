"""A request's choice for LLaRA's item encoder: keep it, or retrain it without the erased data.

The SASRec item encoder of a LLaRA run is trained once, on every training interaction of the
dataset, a deleted user's included (docs/unlearning.md measures how much of a user it holds).
The influence update edits the adapter and the projector, not the encoder. A request made with
``item_encoder="retrain"`` also:

1. applies every event in effect after it (this request's and its lineage's) to the
   interactions the run's encoder was trained on: ``delete_user`` drops the user's
   interactions, ``remove_interactions`` the named ones, ``correct_target`` turns an
   interaction into one with the true item (``correct_label`` changes no interaction);
2. trains a new encoder on them with the run encoder's settings and seed and its item
   vocabulary (every item keeps its row; about a minute on ml-100k);
3. carries the projector over to the new embedding space by the least-squares affine map of the
   new table onto the old one, folded into its first layer
   (:mod:`rec_eraser.encoders.alignment`), and feeds the model the new table and user states.

The new encoder's two files are written into the new version's folder and hashed by its
manifest; the manifest's ``item_encoder`` names the version whose folder holds the encoder in
use, and later versions that keep the encoder inherit that name, so a deletion once out of the
encoder stays out. A request with ``"keep"`` (the default) leaves the encoder as its parent had it.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from rec_eraser.data.dataset import Interaction
from rec_eraser.encoders.alignment import align_first_layer, fit_alignment, residual_of
from rec_eraser.encoders.sasrec import ItemEncoder
from rec_eraser.encoders.sasrec_train import train_sasrec, training_sequences
from rec_eraser.errors import RecEraserError
from rec_eraser.training.model import RecModel
from rec_eraser.training.train import encoder_dataset
from rec_eraser.workflows.events import Event

#: what a request may do with the item encoder
ENCODER_CHOICES = ("keep", "retrain")
DEFAULT_ENCODER_CHOICE = "keep"

#: the run encoder's settings that a retraining repeats (train_sasrec's keywords, as its config records them)
_SETTINGS = ("epochs", "seed", "hidden", "max_len", "lr", "batch_size", "n_layers", "n_heads", "dropout")


def retrained_encoder(manifest: dict[str, Any]) -> bool:
    """Whether the version of ``manifest`` retrained the item encoder (not merely read one retrained before)."""
    return bool((manifest.get("item_encoder") or {}).get("retrained"))


def check_encoder_choice(choice: str) -> str:
    """``choice`` if it is one of :data:`ENCODER_CHOICES`; a one-line error otherwise."""
    if choice not in ENCODER_CHOICES:
        raise RecEraserError(f"item encoder: {choice!r} is not one of {', '.join(ENCODER_CHOICES)}")
    return choice


def erase_interactions(
    interactions: Sequence[Interaction], events: Sequence[Event]
) -> tuple[tuple[Interaction, ...], dict[str, int]]:
    """``interactions`` with ``events`` applied in order, and how many were dropped and corrected."""
    kept = list(interactions)
    dropped = corrected = 0
    for event in events:
        if event.type == "delete_user":
            keep = [x for x in kept if x.user != event.user]
        elif event.type == "remove_interactions":
            items = set(event.items)
            keep = [x for x in kept if not (x.user == event.user and x.item in items)]
        elif event.type == "correct_target":
            fixed = [
                replace(x, item=event.target) if x.user == event.user and x.item == event.item else x for x in kept
            ]
            corrected += sum(a is not b for a, b in zip(kept, fixed))
            kept = fixed
            continue
        else:  # correct_label: the interaction happened; SASRec reads no label
            continue
        dropped += len(kept) - len(keep)
        kept = keep
    return tuple(kept), {"dropped": dropped, "corrected": corrected}


def check_alignment_rows(run_dir: Path, events: Sequence[Event], old: ItemEncoder) -> None:
    """Refuse, before anything is trained or solved, a retraining whose projector map could not
    be fitted: the affine map of step 3 needs more rows (items, plus one user state per training
    history when the model reads user tokens) than the embedding is wide. ``events`` may hold
    more than will be applied: erasing more only lowers the count, so the check is conservative."""
    rows = len(old.item_ids)
    what = "items"
    if old.model is not None:  # the model reads user states: the map is also fitted on them
        rows += len(_erased_histories(run_dir, events)[1])
        what = "items and user histories"
    if rows <= old.dim:
        raise RecEraserError(
            f"item encoder: cannot retrain it here: carrying the projector over needs more than {old.dim} "
            f"{what} (the embedding's width), this run has {rows}; keep the encoder instead (choice 'keep')"
        )


def _erased_histories(run_dir: Path, events: Sequence[Event]) -> tuple[Any, list[list[str]], dict[str, int]]:
    """The run's encoder dataset with ``events`` applied, its users' non-empty training histories
    (item ids) and what the events dropped and corrected."""
    dataset = encoder_dataset(run_dir)
    interactions, counts = erase_interactions(dataset.interactions, events)
    erased = replace(dataset, interactions=interactions)
    return erased, [seq for seq in training_sequences(erased).values() if seq], counts


def retrain_item_encoder(
    run_dir: Path, events: Sequence[Event], old: ItemEncoder
) -> tuple[ItemEncoder, list[list[int]], dict[str, Any]]:
    """A SASRec encoder trained like ``old`` (its settings, seed and item rows) on the run's
    encoder interactions with ``events`` (every event in effect) applied; the users' training
    histories it was trained on (as item rows: what user states are computed from); and what changed."""
    erased, histories, counts = _erased_histories(run_dir, events)
    settings = {k: old.config[k] for k in _SETTINGS if k in old.config}
    started = time.perf_counter()
    new = train_sasrec(erased, items=old.item_ids, **settings)
    return (
        new,
        [new.indices(seq) for seq in histories],
        {**counts, "interactions": len(erased.interactions), "train_seconds": time.perf_counter() - started},
    )


def swap_item_encoder(
    model: RecModel, old: ItemEncoder, new: ItemEncoder, histories: Sequence[Sequence[int]] = ()
) -> dict[str, Any]:
    """Feed ``model`` the ``new`` encoder's table and user states, its projector carried over
    from ``old``'s space by the best affine map (see the module); the fit's figures.

    The projector reads item rows and, on a model with user tokens, the user states SASRec
    computes from a history, through one first layer, so the map is fitted on both: every item
    row, and the state after each of ``histories`` (item rows) under either encoder. Its
    residual is reported on each part."""
    if model.projector is None:
        raise ValueError("the model has no item projector: its task uses no item encoder")
    if new.item_ids != old.item_ids:
        raise ValueError("the retrained item encoder has other item rows than the one it replaces")
    new_rows, old_rows = [new.embeddings], [old.embeddings]
    with_users = model.user_encoder is not None and len(histories) > 0
    if with_users:
        rows = _padded(histories)
        new_rows.append(new.user_state_encoder()(rows))
        old_rows.append(old.user_state_encoder()(rows))
    alignment = fit_alignment(torch.cat(new_rows), torch.cat(old_rows))
    align_first_layer(model.projector.fc1, alignment)
    table = new.embeddings.detach().clone().to(model.item_embeddings.device, model.item_embeddings.dtype)
    model.item_embeddings = table  # a registered buffer: assignment replaces it
    if model.user_encoder is not None:
        model.user_encoder = new.user_state_encoder()
    figures = {
        "relative_residual": alignment.relative_residual,
        "items": len(new.item_ids),
        "items_residual": residual_of(alignment, new_rows[0], old_rows[0]),
    }
    if with_users:
        figures |= {
            "user_states": len(histories),
            "user_states_residual": residual_of(alignment, new_rows[1], old_rows[1]),
        }
    return figures


def _padded(histories: Sequence[Sequence[int]]) -> torch.Tensor:
    rows = torch.full((len(histories), max(len(h) for h in histories)), -1, dtype=torch.long)
    for i, h in enumerate(histories):
        rows[i, : len(h)] = torch.tensor(list(h), dtype=torch.long)
    return rows


def encoder_files(encoder: ItemEncoder) -> dict[str, bytes]:
    """The encoder's files (names and bytes) as :meth:`ItemEncoder.save` writes them, to be
    written into a version folder with its other files."""
    with tempfile.TemporaryDirectory() as folder:
        encoder.save(folder)
        return {p.name: p.read_bytes() for p in sorted(Path(folder).iterdir()) if p.is_file()}
