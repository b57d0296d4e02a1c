"""The training loss of a causal-LM recommender, split for the engine's Gauss–Newton products.

ℓ(z) = mean cross-entropy over the response tokens of instance z (labels ≠ -100); a batch
loss is the mean of per-instance losses (docs/design.md, "Sign and scale"). The same function trains the
adapter and is differentiated by the engine.
"""

from __future__ import annotations

import torch
from torch import nn

from rec_eraser.core import OutputLoss

IGNORE = -100


def aligned_labels(logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The labels of the positions ``logits`` covers: all of them, or the last ``logits.shape[1]``
    when the model computed logits only from the first position that predicts a response token
    (``logits_to_keep``), which every loss here accepts."""
    labels = batch["labels"]
    if logits.shape[1] > labels.shape[1]:
        raise ValueError(f"logits cover {logits.shape[1]} positions but the labels only {labels.shape[1]}")
    return labels[:, labels.shape[1] - logits.shape[1] :]


def per_instance_response_loss(logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Each instance's mean cross-entropy over its response tokens, shape ``[batch]``."""
    labels = aligned_labels(logits, batch)[:, 1:]
    logits = logits[:, :-1]
    token_loss = nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE, reduction="none"
    ).view(labels.shape)
    mask = (labels != IGNORE).to(token_loss.dtype)
    return (token_loss * mask).sum(1) / mask.sum(1).clamp(min=1)


def response_token_loss(logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean over the batch of each instance's mean cross-entropy over its response tokens."""
    return per_instance_response_loss(logits, batch).mean()


def first_response_logits(logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Logits ``[batch, vocab]`` at the position that predicts each instance's first response token."""
    position = (aligned_labels(logits, batch) != IGNORE).int().argmax(1) - 1
    return logits[torch.arange(logits.shape[0]), position]


def sampled_response_gradient(
    logits: torch.Tensor, batch: dict[str, torch.Tensor], generator: torch.Generator
) -> torch.Tensor:
    """ε = (softmax − one-hot(y ~ softmax)) / √T_n at each response position, zero elsewhere.

    Its covariance per instance is the Hessian of the instance's mean response
    cross-entropy w.r.t. the logits (see ``OutputLoss``).
    """
    labels = aligned_labels(logits, batch)[:, 1:]
    mask = labels != IGNORE
    # sampled at the response positions only, in row-major order: the draw does not depend on
    # how many prompt positions the logits cover, and no softmax is spent on the prompt
    probs = torch.softmax(logits[:, :-1].detach().float()[mask], dim=-1)
    sampled = torch.multinomial(probs, 1, generator=generator).squeeze(1)
    eps = probs - nn.functional.one_hot(sampled, probs.shape[-1]).to(probs.dtype)
    scale = mask.sum(1).clamp(min=1).to(probs.dtype).rsqrt()  # 1/√T_n
    rows = mask.nonzero(as_tuple=True)[0]  # each response position's instance, in the mask's order
    out = torch.zeros_like(logits)
    shifted = out[:, :-1]
    shifted[mask] = (eps * scale[rows].unsqueeze(1)).to(logits.dtype)
    return out


def causal_lm_logits(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return model(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask")).logits


def pad_collate(samples: list[dict[str, torch.Tensor]], pad_id: int = 0) -> dict[str, torch.Tensor]:
    """Right-pad ``input_ids``/``labels`` to the longest instance; adds ``attention_mask``."""
    length = max(len(s["input_ids"]) for s in samples)
    ids = torch.full((len(samples), length), pad_id, dtype=torch.long)
    labels = torch.full((len(samples), length), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(samples), length), dtype=torch.long)
    for i, s in enumerate(samples):
        n = len(s["input_ids"])
        ids[i, :n] = s["input_ids"]
        labels[i, :n] = s["labels"]
        mask[i, :n] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def causal_lm_loss() -> OutputLoss:
    """The response-token loss as an :class:`OutputLoss` (so ``curvature="ggn"`` and EK-FAC's
    sampled Fisher work)."""
    return OutputLoss(causal_lm_logits, response_token_loss, sampled_response_gradient)
