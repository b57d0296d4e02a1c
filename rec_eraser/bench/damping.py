"""``rec-eraser bench damping``: is the automatic damping rule right on a real adapter?

A real base model (the embedded SmolLM2-135M by default) gets a LoRA adapter (r=8 on q/v)
trained on a small TALLRec-shaped task — "User liked: …. User disliked: …. Will the user
like X? Answer:" → " Yes" / " No" — whose labels follow a hidden item category with 25%
label noise, so the adapter both generalises and memorises. Some users are then
forgotten, by retraining without them (two seeds: the noise floor) and by influence
updates with the automatic damping rule scaled by several factors. Everything is judged
in function space (docs/design.md, "Judging an update"): test AUC, the loss on forgotten instances against that
on never-seen ones, and the correlation of Yes/No scores with Retrain's.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from rec_eraser.core import InfluenceEngine, Removal, SolverConfig
from rec_eraser.core.curvature import deterministic_mode
from rec_eraser.evaluation.metrics import auc
from rec_eraser.models import load_causal_lm
from rec_eraser.models.lm_loss import (
    IGNORE,
    causal_lm_logits,
    causal_lm_loss,
    first_response_logits,
    pad_collate,
    per_instance_response_loss,
)

logger = logging.getLogger(__name__)

ITEMS = [
    f"{c} {a}"
    for c in ("Red", "Blue", "Green", "Gold", "Grey", "Pink")
    for a in ("Fox", "Owl", "Bear", "Wolf", "Hawk", "Deer")
]


@dataclass
class Instance:
    user: int
    prompt: str
    answer: str
    input_ids: torch.Tensor
    labels: torch.Tensor


def build_instances(
    tokenizer: Any, users: Sequence[int], per_user: int, rng: np.random.Generator, noise: float
) -> list[dict[str, Any]]:
    """TALLRec-shaped prompts; the label is the target's hidden category, flipped with prob. ``noise``."""
    liked_items = set(ITEMS[::2])  # the hidden rule: every other item is liked
    out = []
    for user in users:
        for _ in range(per_user):
            chosen = rng.choice(len(ITEMS), size=6, replace=False)
            history, target = [ITEMS[i] for i in chosen[:5]], ITEMS[chosen[5]]
            liked = ", ".join(h for h in history if h in liked_items) or "none"
            disliked = ", ".join(h for h in history if h not in liked_items) or "none"
            flipped = rng.random() < noise
            label = (target in liked_items) != flipped
            prompt = f"User liked: {liked}. User disliked: {disliked}. Will the user like {target}? Answer:"
            answer = " Yes" if label else " No"
            p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
            a_ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
            ids = torch.tensor(p_ids + a_ids)
            labels = torch.tensor([IGNORE] * len(p_ids) + a_ids)
            out.append({"input_ids": ids, "labels": labels, "user": user, "label": int(label), "noisy": flipped})
    return out


def collate(samples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    return pad_collate([{"input_ids": s["input_ids"], "labels": s["labels"]} for s in samples])


def train_adapter(
    base: nn.Module, train: list[dict[str, Any]], seed: int, epochs: int, lr: float, batch_size: int = 8
) -> nn.Module:
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    model = get_peft_model(
        copy.deepcopy(base), LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], lora_dropout=0.05)
    )
    loss_fn = causal_lm_loss()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(train), generator=gen).tolist()
        for start in range(0, len(order), batch_size):
            loss = loss_fn(model, collate([train[i] for i in order[start : start + batch_size]]))
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    return model


def yes_no_ids(tokenizer: Any) -> tuple[int, int]:
    return tokenizer(" Yes", add_special_tokens=False)["input_ids"][0], tokenizer(" No", add_special_tokens=False)[
        "input_ids"
    ][0]


@torch.no_grad()
def evaluate(model: nn.Module, samples: list[dict[str, Any]], yes: int, no: int) -> tuple[np.ndarray, np.ndarray]:
    """(per-instance response loss, score = logit(Yes) − logit(No) at the answer position)."""
    losses, scores = [], []
    with deterministic_mode(model):
        for start in range(0, len(samples), 16):
            chunk = samples[start : start + 16]
            batch = collate(chunk)
            logits = causal_lm_logits(model, batch)
            losses.append(per_instance_response_loss(logits, batch))
            at = first_response_logits(logits, batch)
            scores.append(at[:, yes] - at[:, no])
    return torch.cat(losses).numpy(), torch.cat(scores).numpy()


def run_damping_check(
    base_model: Path | None = None,
    users: int = 24,
    per_user: int = 2,
    forget_users: int = 3,
    scales: Sequence[float] = (0.01, 0.1, 1.0),
    epochs: int = 5,
    lr: float = 2e-3,
    seed: int = 0,
    on_progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    say = on_progress or (lambda _msg: None)
    say("loading the base model")
    base, tokenizer = load_causal_lm(base_model)
    rng = np.random.default_rng(seed)
    train = build_instances(tokenizer, range(users), per_user, rng, noise=0.25)
    test = build_instances(tokenizer, range(users, users + 32), 2, rng, noise=0.0)
    forgotten_users = set(range(forget_users))
    forgotten = [z for z in train if z["user"] in forgotten_users]
    kept = [z for z in train if z["user"] not in forgotten_users]
    yes, no = yes_no_ids(tokenizer)
    test_labels = np.array([z["label"] for z in test])
    rows: dict[str, Any] = {}

    def measure(model: nn.Module, seconds: float, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        f_loss, _ = evaluate(model, forgotten, yes, no)
        k_loss, _ = evaluate(model, kept, yes, no)
        t_loss, t_score = evaluate(model, test, yes, no)
        return {
            "auc": auc(t_score, test_labels),
            "forgotten_loss": float(f_loss.mean()),
            "kept_loss": float(k_loss.mean()),
            "unseen_loss": float(t_loss.mean()),
            "seconds": seconds,
            "_scores": t_score,
            **(extra or {}),
        }

    say(f"training the original adapter on {len(train)} instances")
    t0 = time.perf_counter()
    original = train_adapter(base, train, seed, epochs, lr)
    rows["original"] = measure(original, time.perf_counter() - t0)
    for s in (0, 1):
        say(f"retraining without {len(forgotten)} forgotten instances (seed {s})")
        t0 = time.perf_counter()
        retrained = train_adapter(base, kept, seed + s, epochs, lr)
        rows[f"retrain_seed{s}"] = measure(retrained, time.perf_counter() - t0)
        del retrained
    for scale in scales:
        say(f"influence update, damping scale {scale:g}")
        model = copy.deepcopy(original)
        engine = InfluenceEngine(
            model,
            causal_lm_loss(),
            train,
            collate,
            curvature="ggn",
            solver=SolverConfig(method="cg", tol=1e-2, max_iters=60, damping_scale=scale, seed=seed),
        )
        update = engine.compute([Removal(z) for z in forgotten])
        update.apply(model)
        r = update.report
        rows[f"update_scale_{scale:g}"] = measure(
            model, r.seconds, {"damping": r.damping, "hvps": r.hvps, "relative_residual": r.relative_residual}
        )
        del model
    reference = rows["retrain_seed0"]["_scores"]
    for row in rows.values():
        row["score_correlation_with_retrain"] = float(np.corrcoef(row.pop("_scores"), reference)[0, 1])
    return {
        "n_train": len(train),
        "forgotten_instances": len(forgotten),
        "test_instances": len(test),
        "epochs": epochs,
        "lr": lr,
        "rows": rows,
    }
