"""From prepared instances to token ids, response labels and item-token positions.

A LLaRA prompt names each item by an item-token placeholder followed by its title
(``[HistoryEmb]`` in the history, ``[CansEmb]`` among the candidates) and ends with a user
placeholder (``[UserEmb]``). Each placeholder becomes one token whose input embedding the
model replaces: an item's by its projected collaborative embedding (the history items, then
the candidates, in prompt order), the user's by the projected state of the collaborative
encoder after the prompt's history items. Without item tokens the placeholders are removed
from the text. Prompts of runs prepared before the user token existed (title, then item
token; no user token) encode as they always did. The response is followed by the
end-of-sequence token, so generation knows where to stop; labels are -100 on the prompt.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch.nn.utils.rnn import pad_sequence

from rec_eraser.errors import RecEraserError
from rec_eraser.models.lm_loss import IGNORE, pad_collate
from rec_eraser.tasks.instance import Instance
from rec_eraser.tasks.templates import CANS_EMB, HISTORY_EMB, USER_EMB

# the space before a placeholder belongs to it: "watched [HistoryEmb] Alien" -> "watched" + <item token> + " Alien"
PLACEHOLDER = re.compile("(" + "|".join(" ?" + re.escape(p) for p in (HISTORY_EMB, CANS_EMB, USER_EMB)) + ")")
#: padding of the history rows of user tokens (``user_items``)
NO_ITEM = -1


class EncodingError(RecEraserError, ValueError):
    """An instance cannot be encoded (unknown item, placeholders that do not match its items)."""


def _ids(tokenizer: Any, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def _row(instance: Instance, item: str, item_index: Mapping[str, int]) -> int:
    if item not in item_index:
        raise EncodingError(f"instance {instance.id}: item {item!r} has no collaborative embedding")
    return item_index[item]


def encode_prompt(
    instance: Instance, tokenizer: Any, item_index: Mapping[str, int] | None, placeholder_id: int
) -> tuple[list[int], list[tuple[int, int]], list[int]]:
    """Prompt token ids, the (position, item row) of every item token, and the positions of user tokens.

    A user token stands for the instance's whole history (``history_items``).
    """
    if item_index is None:
        return _ids(tokenizer, PLACEHOLDER.sub("", instance.prompt)), [], []
    history = iter(instance.history_items)
    candidates = iter(instance.candidates or ())
    ids: list[int] = []
    items: list[tuple[int, int]] = []
    users: list[int] = []
    for piece in PLACEHOLDER.split(instance.prompt):
        tag = piece.strip()
        if tag == USER_EMB:
            users.append(len(ids))
            ids.append(placeholder_id)
        elif tag in (HISTORY_EMB, CANS_EMB):
            item = next(history if tag == HISTORY_EMB else candidates, None)
            if item is None:
                raise EncodingError(f"instance {instance.id}: more {tag} placeholders than items")
            items.append((len(ids), _row(instance, item, item_index)))
            ids.append(placeholder_id)
        elif piece:
            ids.extend(_ids(tokenizer, piece))
    return ids, items, users


def response_ids(tokenizer: Any, response: str) -> list[int]:
    """The token ids a response is trained and scored as: its text, then end-of-sequence."""
    return _ids(tokenizer, response) + [tokenizer.eos_token_id]


def encode_instance(
    instance: Instance,
    tokenizer: Any,
    item_index: Mapping[str, int] | None = None,
    max_length: int = 512,
    response: str | None = None,
) -> dict[str, torch.Tensor]:
    """One training sample: ``input_ids``, ``labels`` (response only), ``item_pos``, ``item_idx``,
    ``user_pos`` and ``user_items`` (the history's item rows, one row per user token).

    A prompt longer than ``max_length`` loses its oldest tokens (item tokens cut with them;
    a user token keeps the whole history it stands for).
    ``response`` overrides the instance's own (used to score candidates).
    """
    placeholder_id = tokenizer.unk_token_id if tokenizer.unk_token_id is not None else 0
    prompt_ids, items, users = encode_prompt(instance, tokenizer, item_index, placeholder_id)
    answer = response_ids(tokenizer, instance.response if response is None else response)
    cut = max(0, len(prompt_ids) + len(answer) - max_length)
    prompt_ids = prompt_ids[cut:]
    items = [(p - cut, row) for p, row in items if p >= cut]
    users = [p - cut for p in users if p >= cut]
    history = [_row(instance, item, item_index) for item in instance.history_items] if users else []
    return {
        "input_ids": torch.tensor(prompt_ids + answer),
        "labels": torch.tensor([IGNORE] * len(prompt_ids) + answer),
        "item_pos": torch.tensor([p for p, _ in items], dtype=torch.long),
        "item_idx": torch.tensor([r for _, r in items], dtype=torch.long),
        "user_pos": torch.tensor(users, dtype=torch.long),
        "user_items": torch.tensor([history] * len(users), dtype=torch.long).reshape(len(users), len(history)),
    }


def collate(samples: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Right-padded batch plus flattened item-token coordinates (``item_rows``, ``item_cols``,
    ``item_idx``) and user-token coordinates (``user_rows``, ``user_cols``) with their
    histories ``user_items`` ``[user tokens, longest history]`` (padded with -1)."""
    batch = pad_collate([{"input_ids": s["input_ids"], "labels": s["labels"]} for s in samples])
    batch["item_rows"] = torch.cat([torch.full_like(s["item_pos"], i) for i, s in enumerate(samples)])
    batch["item_cols"] = torch.cat([s["item_pos"] for s in samples])
    batch["item_idx"] = torch.cat([s["item_idx"] for s in samples])
    users = [(i, s) for i, s in enumerate(samples) if "user_pos" in s and len(s["user_pos"])]
    batch["user_rows"] = torch.tensor([i for i, s in users for _ in s["user_pos"]], dtype=torch.long)
    batch["user_cols"] = torch.cat([s["user_pos"] for _, s in users]) if users else torch.zeros(0, dtype=torch.long)
    histories = [h for _, s in users for h in s["user_items"]]
    batch["user_items"] = (
        pad_sequence(histories, batch_first=True, padding_value=NO_ITEM)
        if histories
        else torch.zeros(0, 0, dtype=torch.long)
    )
    return batch
