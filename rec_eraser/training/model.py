"""The LLM4Rec model: a causal LM with a LoRA adapter, plus (LLaRA) a projector that maps
frozen collaborative item embeddings into the LM's input space at item-token positions.

Its trainable parameters — LoRA's A/B and the projector — are exactly what the influence
engine edits; the base LM and the item embeddings stay frozen.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from rec_eraser.core import OutputLoss
from rec_eraser.models.lm_loss import response_token_loss, sampled_response_gradient


class RecModel(nn.Module):
    def __init__(self, lm: nn.Module, item_embeddings: torch.Tensor | None = None, projector: nn.Module | None = None) -> None:
        super().__init__()
        self.lm = lm
        self.projector = projector
        if item_embeddings is not None:
            self.register_buffer("item_embeddings", item_embeddings.detach().clone(), persistent=False)
        else:
            self.item_embeddings = None

    def input_embeddings(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        embeds = self.lm.get_input_embeddings()(batch["input_ids"])
        if self.projector is None or batch["item_idx"].numel() == 0:
            return embeds
        projected = self.projector(self.item_embeddings[batch["item_idx"]]).to(embeds.dtype)
        return embeds.index_put((batch["item_rows"], batch["item_cols"]), projected)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Logits ``[batch, length, vocab]``."""
        return self.lm(inputs_embeds=self.input_embeddings(batch), attention_mask=batch["attention_mask"]).logits


def model_logits(model: nn.Module, batch: Any) -> torch.Tensor:
    return model(batch)


def rec_loss() -> OutputLoss:
    """The training loss of a :class:`RecModel` (mean response cross-entropy), split for GGN products."""
    return OutputLoss(model_logits, response_token_loss, sampled_response_gradient)
