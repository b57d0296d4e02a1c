"""The LLM4Rec model: a causal LM with a LoRA adapter, plus (LLaRA) a projector that maps
frozen collaborative item embeddings into the LM's input space at item-token positions.

Its trainable parameters — LoRA's A/B and the projector — are exactly what the influence
engine edits; the base LM and the item embeddings stay frozen.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn

from rec_eraser.core import OutputLoss
from rec_eraser.models.lm_loss import IGNORE, per_instance_response_loss, response_token_loss, sampled_response_gradient


class RecModel(nn.Module):
    """``lm`` (LoRA-wrapped) reading a batch whose item and user tokens get projected collaborative inputs.

    Args:
        lm: the causal LM with its adapter.
        item_embeddings: the frozen item-embedding table (LLaRA), ``[items, dim]``.
        projector: maps ``dim`` to the LM's hidden size; trained with the adapter.
        user_encoder: frozen module from a history's item rows ``[n, length]`` (-1 padded) to
            ``[n, dim]`` states in the item embeddings' space (SASRec's, see
            ``rec_eraser.encoders.sasrec.UserStateEncoder``); needed for prompts with user tokens.
    """

    def __init__(
        self,
        lm: nn.Module,
        item_embeddings: torch.Tensor | None = None,
        projector: nn.Module | None = None,
        user_encoder: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.lm = lm
        self.projector = projector
        self.user_encoder = user_encoder
        if item_embeddings is not None:
            self.register_buffer("item_embeddings", item_embeddings.detach().clone(), persistent=False)
        else:
            self.item_embeddings = None

    def input_embeddings(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        embeds = self.lm.get_input_embeddings()(batch["input_ids"])
        users = batch.get("user_items")
        has_users = users is not None and len(users) > 0
        if self.projector is None or (batch["item_idx"].numel() == 0 and not has_users):
            return embeds
        inputs, rows, cols = [self.item_embeddings[batch["item_idx"]]], [batch["item_rows"]], [batch["item_cols"]]
        if has_users:
            if self.user_encoder is None:
                raise ValueError(
                    "the prompts have user tokens but the model has no user encoder (an item encoder "
                    "without its SASRec model)"
                )
            inputs.append(self.user_encoder(users).to(inputs[0].dtype))
            rows.append(batch["user_rows"])
            cols.append(batch["user_cols"])
        projected = self.projector(torch.cat(inputs)).to(embeds.dtype)
        return embeds.index_put((torch.cat(rows), torch.cat(cols)), projected)

    def forward(self, batch: dict[str, torch.Tensor], logits_to_keep: int | None = None) -> torch.Tensor:
        """Logits ``[batch, length, vocab]``; only the last ``logits_to_keep`` positions' when given."""
        keep = {} if logits_to_keep is None else {"logits_to_keep": logits_to_keep}
        return self.lm(
            inputs_embeds=self.input_embeddings(batch), attention_mask=batch["attention_mask"], **keep
        ).logits

    def response_losses(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Each instance's mean response cross-entropy ``[batch]``: the value of
        ``per_instance_response_loss(self(batch), batch)``, but with logits computed only from
        the first position that predicts a response token. A prompt is ~50 times longer than
        its answer and the vocabulary projection of every prompt position was a fifth of a
        training step's time (SmolLM2, 2 CPU cores)."""
        return per_instance_response_loss(self.response_logits(batch), batch)

    def response_logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Logits from the first position that predicts a response token on (every position for a
        model without ``logits_to_keep``): all that any response readout or loss reads. The
        losses and readouts of ``rec_eraser.models.lm_loss`` align the labels to them."""
        if not forward_accepts(self.lm, "logits_to_keep"):
            return self(batch)
        labels = batch["labels"]
        start = max(int((labels != IGNORE).int().argmax(1).min()) - 1, 0)
        return self(batch, logits_to_keep=labels.shape[1] - start)


def forward_accepts(lm: nn.Module, name: str) -> bool:
    """Whether the forward of ``lm`` (the base model under a PEFT wrapper) takes the keyword ``name``:
    transformers versions and model classes differ in the ones they take."""
    base = lm.get_base_model() if hasattr(lm, "get_base_model") else lm
    return name in inspect.signature(base.forward).parameters


def model_logits(model: nn.Module, batch: Any) -> torch.Tensor:
    # response positions only: the loss reads nothing earlier, and the vocabulary projection
    # of every prompt position (and its backward) was a fifth of a gradient's time
    return model.response_logits(batch)


def rec_loss() -> OutputLoss:
    """The training loss of a :class:`RecModel` (mean response cross-entropy), split for GGN products."""
    return OutputLoss(model_logits, response_token_loss, sampled_response_gradient)
