"""How much of a user sits in the SASRec item encoder: a membership test before and after
retraining the encoder without them (``rec-eraser bench encoder``).

In the LLaRA task the item encoder is trained on every training interaction, a deleted user's
included, and neither the influence update nor the adapter's Retrain touches it. Whether that
matters is measured here, before anything is built to change it. The users of a dataset are
dealt, seeded, into three groups: ``holdout`` users, on whom no encoder is ever trained (what a
stranger is to the encoder), ``forget`` users, and the rest. Two encoders are trained with
the same settings and seed: ``with`` (on every user but the held-out ones) and ``without``
(also without the forget users: the retrained encoder an erasure would produce).

Each user's score is the mean next-item loss of SASRec over the transitions of their own
training sequence (each transition once, as training windows cut them). Items the ``without``
encoder does not know (those only the forget or the held-out users had) are dropped from the
sequences before either encoder scores them, so both score the same transitions.
The membership AUC is the chance that a forget user's loss is below a held-out user's: about
0.5 when the encoder treats them alike. Under ``with`` it measures how much the encoder holds of
the forget users; under ``without`` it should fall to what users of these two groups differ
by anyway. The p-value is a permutation test of the ``with`` AUC against group labels shuffled.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from rec_eraser.data import Dataset, load_dataset
from rec_eraser.encoders.sasrec import ItemEncoder
from rec_eraser.encoders.sasrec_train import train_sasrec, training_sequences, training_windows
from rec_eraser.evaluation.unlearning import membership_inference_auc
from rec_eraser.workflows.progress import Say


def user_losses(encoder: ItemEncoder, sequences: dict[str, list[str]], known: set[str]) -> dict[str, float]:
    """Each user's mean next-item loss (cross-entropy over the encoder's items) on their own
    sequence, over transitions whose items are all in ``known``; users with none are left out."""
    assert encoder.model is not None
    model, max_len = encoder.model, encoder.model.max_len
    out: dict[str, float] = {}
    model.eval()
    with torch.no_grad():
        for user, seq in sequences.items():
            kept = [item for item in seq if item in known]
            windows = training_windows([[i + 1 for i in encoder.indices(kept)]], max_len)
            if not windows:
                continue
            losses = []
            for window in windows:
                inputs = torch.tensor([window[:-1]])
                logits = model.item_logits(model(inputs))[0]  # [positions, items]
                targets = torch.tensor(window[1:]) - 1
                losses.append(torch.nn.functional.cross_entropy(logits, targets, reduction="none"))
            out[user] = float(torch.cat(losses).mean())
    return out


def _auc(members: Sequence[float], strangers: Sequence[float]) -> float:
    return membership_inference_auc(np.asarray(members), np.asarray(strangers))


def _permutation_p(members: list[float], strangers: list[float], observed: float, rounds: int, seed: int) -> float:
    pooled = np.asarray(members + strangers)
    rng = np.random.default_rng(seed)
    k, hits = len(members), 0
    for _ in range(rounds):
        perm = rng.permutation(len(pooled))
        hits += _auc(pooled[perm[:k]], pooled[perm[k:]]) >= observed
    return (hits + 1) / (rounds + 1)


def _without(dataset: Dataset, users: set[str]) -> Dataset:
    return dataclasses.replace(dataset, interactions=tuple(x for x in dataset.interactions if x.user not in users))


def encoder_membership(
    dataset: Dataset | str = "ml-100k",
    forget_fraction: float = 0.05,
    holdout_fraction: float = 0.1,
    epochs: int = 20,
    seed: int = 0,
    permutations: int = 2000,
    say: Say | None = None,
) -> dict[str, Any]:
    """The study of the module's docstring; returns the JSON-ready result."""
    say = say or (lambda _m: None)
    dataset = load_dataset(dataset) if isinstance(dataset, str) else dataset
    dataset_name = dataset.name
    users = sorted(dataset.users, key=lambda u: (len(u), u))
    order = np.random.default_rng([seed, 7]).permutation(len(users))
    n_hold, n_forget = round(holdout_fraction * len(users)), round(forget_fraction * len(users))
    holdout = {users[i] for i in order[:n_hold]}
    forget = {users[i] for i in order[n_hold : n_hold + n_forget]}
    if not holdout or not forget:
        raise ValueError(f"{dataset_name}: the fractions leave no held-out or no forget user")
    sequences = training_sequences(dataset)
    encoders, seconds = {}, {}
    for name, left_out in (("with", holdout), ("without", holdout | forget)):
        say(f"training the item encoder {name} the forget users ({epochs} epochs)")
        t0 = time.perf_counter()
        encoders[name] = train_sasrec(_without(dataset, left_out), epochs=epochs, seed=seed)
        seconds[name] = time.perf_counter() - t0
    known = set(encoders["without"].item_ids)  # the smaller vocabulary: items both encoders know
    result: dict[str, Any] = {
        "dataset": dataset_name,
        "users": len(users),
        "holdout_users": len(holdout),
        "forget_users": len(forget),
        "epochs": epochs,
        "seed": seed,
        "train_seconds": seconds,
        "items_only_forget_users_had": len(set(encoders["with"].item_ids) - known),
    }
    for name, encoder in encoders.items():
        losses = user_losses(encoder, {u: s for u, s in sequences.items() if u in forget | holdout}, known)
        members = [v for u, v in losses.items() if u in forget]
        strangers = [v for u, v in losses.items() if u in holdout]
        result[name] = {
            "forget_loss": float(np.mean(members)),
            "holdout_loss": float(np.mean(strangers)),
            "membership_auc": _auc(members, strangers),
        }
        if name == "with":
            auc_with = result[name]["membership_auc"]
            result[name]["p_value"] = _permutation_p(members, strangers, auc_with, permutations, seed)
    result["auc_drop"] = result["with"]["membership_auc"] - result["without"]["membership_auc"]
    return result


def markdown(result: dict[str, Any]) -> str:
    """The study as Markdown, for the docs (rendered from the result file)."""
    lines = [
        f"{result['dataset']}: {result['forget_users']} forget users against {result['holdout_users']} held-out users "
        f"(of {result['users']}); SASRec trained {result['epochs']} epochs, seed {result['seed']} "
        f"({result['train_seconds']['with']:.0f} s and {result['train_seconds']['without']:.0f} s).",
        "",
        "| item encoder | forget users' loss | held-out users' loss | membership AUC |",
        "|---|---|---|---|",
    ]
    for name in ("with", "without"):
        row = result[name]
        lines.append(
            f"| trained {name} the forget users | {row['forget_loss']:.3f} | {row['holdout_loss']:.3f} | "
            f"{row['membership_auc']:.3f} |"
        )
    lines += [
        "",
        f"AUC drop on retraining without them: {result['auc_drop']:.3f}; permutation p-value of the first AUC: "
        f"{result['with']['p_value']:.3g}.",
    ]
    return "\n".join(lines) + "\n"
