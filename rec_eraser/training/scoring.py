"""What a trained model says about instances: losses, candidate likelihoods, Yes/No scores,
greedy answers. All run with dropout off and without gradients, in micro-batches."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from rec_eraser.models.lm_loss import IGNORE, first_response_logits, per_instance_response_loss
from rec_eraser.tasks.instance import Instance
from rec_eraser.training.encode import collate, encode_instance
from rec_eraser.training.train import LoadedModel

Tick = Callable[[int], None]


def _batches(items: Sequence, size: int):
    for start in range(0, len(items), size):
        yield items[start : start + size]


@torch.no_grad()
def instance_losses(loaded: LoadedModel, instances: Sequence[Instance], batch_size: int = 8, tick: Tick | None = None) -> np.ndarray:
    """Each instance's mean response cross-entropy (the training loss ℓ), shape ``[n]``."""
    out = []
    for chunk in _batches(list(instances), batch_size):
        batch = collate([encode_instance(z, loaded.tokenizer, loaded.item_index, loaded.recipe.max_length) for z in chunk])
        out.append(per_instance_response_loss(loaded.model(batch), batch))
        if tick:
            tick(len(chunk))
    return torch.cat(out).numpy() if out else np.zeros(0)


@torch.no_grad()
def candidate_scores(loaded: LoadedModel, instances: Sequence[Instance], titles: dict[str, str], tick: Tick | None = None) -> np.ndarray:
    """LLaRA ranking mode: each candidate's mean log-likelihood as the response, ``[n, candidates]``.

    The response scored is the one training used (" " + title, then end-of-sequence); the
    mean over its tokens keeps long titles from being penalised for their length.
    """
    rows = []
    for z in instances:
        samples = [encode_instance(z, loaded.tokenizer, loaded.item_index, loaded.recipe.max_length, response=" " + titles[c]) for c in z.candidates]
        batch = collate(samples)
        rows.append(-per_instance_response_loss(loaded.model(batch), batch))
        if tick:
            tick(1)
    return torch.stack(rows).numpy()


@torch.no_grad()
def yes_no_scores(loaded: LoadedModel, instances: Sequence[Instance], batch_size: int = 8, tick: Tick | None = None) -> np.ndarray:
    """TALLRec: logit(" Yes") − logit(" No") at the first response position, ``[n]``."""
    tok = loaded.tokenizer
    yes = tok(" Yes", add_special_tokens=False)["input_ids"][0]
    no = tok(" No", add_special_tokens=False)["input_ids"][0]
    out = []
    for chunk in _batches(list(instances), batch_size):
        batch = collate([encode_instance(z, tok, loaded.item_index, loaded.recipe.max_length) for z in chunk])
        logits = loaded.model(batch)
        at = first_response_logits(logits, batch)
        out.append(at[:, yes] - at[:, no])
        if tick:
            tick(len(chunk))
    return torch.cat(out).numpy() if out else np.zeros(0)


@torch.no_grad()
def generate_answers(loaded: LoadedModel, instances: Sequence[Instance], max_new_tokens: int = 24, tick: Tick | None = None) -> list[str]:
    """Greedy generation after each prompt (one prompt at a time: no padding questions)."""
    tok = loaded.tokenizer
    answers = []
    for z in instances:
        sample = encode_instance(z, tok, loaded.item_index, loaded.recipe.max_length, response="")
        prompt_len = int((sample["labels"] == IGNORE).sum())
        batch = collate([{k: (v[:prompt_len] if k in ("input_ids", "labels") else v) for k, v in sample.items()}])
        embeds = loaded.model.input_embeddings(batch)
        generated = loaded.model.lm.generate(inputs_embeds=embeds, attention_mask=batch["attention_mask"], max_new_tokens=max_new_tokens,
                                             do_sample=False, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
        answers.append(tok.decode(generated[0], skip_special_tokens=True))
        if tick:
            tick(1)
    return answers
