"""From prepared instances to token ids, response labels and item-token positions.

A LLaRA prompt names each item by its title followed by a placeholder (``[HistoryEmb]`` in
the history, ``[CansEmb]`` among the candidates). Each placeholder becomes one token whose
input embedding the model replaces by the projected collaborative embedding of that item
(the history items, then the candidates, in prompt order). Without item tokens the
placeholders are removed from the text. The response is followed by the end-of-sequence
token, so generation knows where to stop; labels are -100 on the prompt.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from rec_eraser.models.lm_loss import IGNORE, pad_collate
from rec_eraser.tasks.instance import Instance
from rec_eraser.tasks.templates import CANS_EMB, HISTORY_EMB

# the space before a placeholder belongs to it: "Alien [HistoryEmb]" -> "Alien" + <item token>
PLACEHOLDER = re.compile("( ?" + re.escape(HISTORY_EMB) + "| ?" + re.escape(CANS_EMB) + ")")


class EncodingError(ValueError):
    """An instance cannot be encoded (unknown item, placeholders that do not match its items)."""


def _ids(tokenizer: Any, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def encode_prompt(instance: Instance, tokenizer: Any, item_index: Mapping[str, int] | None, placeholder_id: int) -> tuple[list[int], list[tuple[int, int]]]:
    """Prompt token ids and the (position, item row) of every item token."""
    if item_index is None:
        return _ids(tokenizer, PLACEHOLDER.sub("", instance.prompt)), []
    history = iter(instance.history_items)
    candidates = iter(instance.candidates or ())
    ids: list[int] = []
    items: list[tuple[int, int]] = []
    for piece in PLACEHOLDER.split(instance.prompt):
        if piece.strip() in (HISTORY_EMB, CANS_EMB):
            source = history if piece.strip() == HISTORY_EMB else candidates
            item = next(source, None)
            if item is None:
                raise EncodingError(f"instance {instance.id}: more {piece} placeholders than items")
            if item not in item_index:
                raise EncodingError(f"instance {instance.id}: item {item!r} has no collaborative embedding")
            items.append((len(ids), item_index[item]))
            ids.append(placeholder_id)
        elif piece:
            ids.extend(_ids(tokenizer, piece))
    return ids, items


def response_ids(tokenizer: Any, response: str) -> list[int]:
    """The token ids a response is trained and scored as: its text, then end-of-sequence."""
    return _ids(tokenizer, response) + [tokenizer.eos_token_id]


def encode_instance(instance: Instance, tokenizer: Any, item_index: Mapping[str, int] | None = None, max_length: int = 512,
                    response: str | None = None) -> dict[str, torch.Tensor]:
    """One training sample: ``input_ids``, ``labels`` (response only), ``item_pos``, ``item_idx``.

    A prompt longer than ``max_length`` loses its oldest tokens (item tokens cut with them).
    ``response`` overrides the instance's own (used to score candidates).
    """
    placeholder_id = tokenizer.unk_token_id if tokenizer.unk_token_id is not None else 0
    prompt_ids, items = encode_prompt(instance, tokenizer, item_index, placeholder_id)
    answer = response_ids(tokenizer, instance.response if response is None else response)
    cut = max(0, len(prompt_ids) + len(answer) - max_length)
    prompt_ids = prompt_ids[cut:]
    items = [(p - cut, row) for p, row in items if p >= cut]
    return {
        "input_ids": torch.tensor(prompt_ids + answer),
        "labels": torch.tensor([IGNORE] * len(prompt_ids) + answer),
        "item_pos": torch.tensor([p for p, _ in items], dtype=torch.long),
        "item_idx": torch.tensor([r for _, r in items], dtype=torch.long),
    }


def collate(samples: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Right-padded batch plus flattened item-token coordinates (``item_rows``, ``item_cols``, ``item_idx``)."""
    batch = pad_collate([{"input_ids": s["input_ids"], "labels": s["labels"]} for s in samples])
    rows = [torch.full_like(s["item_pos"], i) for i, s in enumerate(samples)]
    batch["item_rows"] = torch.cat(rows) if rows else torch.zeros(0, dtype=torch.long)
    batch["item_cols"] = torch.cat([s["item_pos"] for s in samples])
    batch["item_idx"] = torch.cat([s["item_idx"] for s in samples])
    return batch
