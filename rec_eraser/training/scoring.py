"""What a trained model says about instances: losses, candidate likelihoods, Yes/No scores,
greedy answers. All run with dropout off and without gradients, in micro-batches."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch

from rec_eraser.core import distributed
from rec_eraser.models.lm_loss import IGNORE, first_response_logits, per_instance_response_loss
from rec_eraser.tasks.instance import Instance
from rec_eraser.training.encode import collate, encode_instance, response_ids
from rec_eraser.training.model import forward_accepts
from rec_eraser.training.train import LoadedModel

Tick = Callable[[int], None]


def _batches(items: Sequence, size: int):
    for start in range(0, len(items), size):
        yield items[start : start + size]


@torch.no_grad()
def instance_losses(
    loaded: LoadedModel, instances: Sequence[Instance], batch_size: int = 8, tick: Tick | None = None
) -> np.ndarray:
    """Each instance's mean response cross-entropy (the training loss ℓ), shape ``[n]``."""
    return distributed.sharded(lambda part: _instance_losses(loaded, part, batch_size, tick), instances)


def _instance_losses(loaded: LoadedModel, instances: list[Instance], batch_size: int, tick: Tick | None) -> np.ndarray:
    out = []
    for chunk in _batches(list(instances), batch_size):
        batch = collate(
            [encode_instance(z, loaded.tokenizer, loaded.item_index, loaded.recipe.max_length) for z in chunk]
        )
        # logits from the first response position only (the loss reads nothing earlier): the same
        # values as the full pass, without the vocabulary projection of every prompt position
        out.append(loaded.model.response_losses(batch))
        if tick:
            tick(len(chunk))
    return torch.cat(out).numpy() if out else np.zeros(0)


@torch.no_grad()
def candidate_scores(
    loaded: LoadedModel, instances: Sequence[Instance], titles: dict[str, str], tick: Tick | None = None
) -> np.ndarray:
    """LLaRA ranking mode: each candidate's mean log-likelihood as the response, ``[n, candidates]``.

    The response scored is the one training used (" " + title, then end-of-sequence); the
    mean over its tokens keeps long titles from being penalised for their length. The
    prompt is run once and its key/value cache shared by all candidates, which makes
    ranking about as cheap as one forward pass per prompt instead of one per candidate.
    """
    return distributed.sharded(lambda part: _candidate_scores(loaded, part, titles, tick), instances)


def _candidate_scores(
    loaded: LoadedModel, instances: list[Instance], titles: dict[str, str], tick: Tick | None
) -> np.ndarray:
    rows = [row for _, _, row in _scored_candidates(loaded, instances, titles, tick)]
    return torch.stack(rows).numpy() if rows else np.zeros((0, 0))


def _scored_candidates(
    loaded: LoadedModel, instances: list[Instance], titles: dict[str, str], tick: Tick | None
) -> Iterator[tuple[Instance, list[list[int]], torch.Tensor]]:
    """Per instance, in order: the instance, its candidates' responses (token ids) and their scores."""
    for z in instances:
        responses = [response_ids(loaded.tokenizer, " " + titles[c]) for c in z.candidates]
        yield z, responses, _shared_prompt_scores(loaded, z, responses)
        if tick:
            tick(1)


@torch.no_grad()
def candidate_scores_and_losses(
    loaded: LoadedModel, instances: Sequence[Instance], titles: dict[str, str], tick: Tick | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`candidate_scores` and :func:`instance_losses` of the same instances, the losses read
    from the candidate pass wherever it scored the instance's own response after the same prompt.

    An instance's loss is its response's mean cross-entropy, which is minus the mean
    log-likelihood the candidate pass computes for that response when the target is among the
    candidates and the prompt was cut alike in both encodings (no cut, or a target as long as
    the longest candidate). That saves the second pass over every prompt that evaluation would
    otherwise make; the rest (a prompt cut further to fit a longer candidate) get their own pass.
    The two ways agree to float rounding (about 1e-6: a cached against a full attention pass).
    """
    if distributed.world()[1] == 1:
        return _candidate_scores_and_losses(loaded, list(instances), titles, tick)

    def scores_then_loss(part: list[Instance]) -> np.ndarray:
        if not part:  # a rank with no instances: an empty block (sharded allows its shape)
            return np.zeros((0, 0), dtype=np.float32)
        scores, losses = _candidate_scores_and_losses(loaded, part, titles, tick)
        return np.concatenate([scores, losses[:, None]], axis=1)

    both = distributed.sharded(scores_then_loss, instances)
    if not both.size:
        return np.zeros((0, 0), dtype=np.float32), np.zeros(0, dtype=np.float32)
    return both[:, :-1].astype(np.float32), both[:, -1].astype(np.float32)


def _candidate_scores_and_losses(
    loaded: LoadedModel, instances: list[Instance], titles: dict[str, str], tick: Tick | None
) -> tuple[np.ndarray, np.ndarray]:
    rows, losses, own_pass = [], np.full(len(instances), np.nan, dtype=np.float32), []
    limit = loaded.recipe.max_length
    for i, (z, responses, row) in enumerate(_scored_candidates(loaded, instances, titles, tick)):
        rows.append(row)
        own = response_ids(loaded.tokenizer, z.response)
        target = list(z.candidates).index(z.target_item) if z.target_item in z.candidates else None
        prompt = _prompt_length(loaded, z)
        longest = max(len(r) for r in responses)
        # the cut of encode_instance: the oldest prompt tokens beyond what the response leaves room for
        if (
            target is not None
            and responses[target] == own
            and max(0, prompt + longest - limit) == max(0, prompt + len(own) - limit)
        ):
            losses[i] = -float(rows[-1][target])
        else:
            own_pass.append(i)
    if own_pass:
        losses[own_pass] = _instance_losses(loaded, [instances[i] for i in own_pass], 8, None)
    return (torch.stack(rows).numpy() if rows else np.zeros((0, 0))), losses


def _prompt_length(loaded: LoadedModel, instance: Instance) -> int:
    """The length of ``instance``'s prompt before any cut (what encoding cuts from)."""
    sample = encode_instance(instance, loaded.tokenizer, loaded.item_index, max_length=2**31, response="")
    return int((sample["labels"] == IGNORE).sum())


def _prompt_batch(loaded: LoadedModel, instance: Instance, max_length: int) -> tuple[dict[str, torch.Tensor], int]:
    """A batch of one holding ``instance``'s prompt alone (cut to fit ``max_length`` with an
    end-of-sequence token after it, as encoding does), and the prompt's length."""
    sample = encode_instance(instance, loaded.tokenizer, loaded.item_index, max_length, response="")
    prompt_len = int((sample["labels"] == IGNORE).sum())
    return collate(
        [{k: (v[:prompt_len] if k in ("input_ids", "labels") else v) for k, v in sample.items()}]
    ), prompt_len


def _cache_keyword(lm: torch.nn.Module) -> str:
    """transformers renamed ``past_key_values`` to ``cache`` (5.x); pass whichever the model takes."""
    return "cache" if forward_accepts(lm, "cache") else "past_key_values"


#: the candidates of a prompt are scored in this many groups of similar response length: one
#: batch padded to the longest title wastes about 60% of its tokens on LLaRA's ml-100k prompts
CANDIDATE_GROUPS = 3


def _shared_prompt_scores(loaded: LoadedModel, instance: Instance, responses: list[list[int]]) -> torch.Tensor:
    """Mean response log-likelihood of each of ``responses`` after ``instance``'s prompt.

    The prompt runs once; its key/value cache is copied for each group of candidates of similar
    length (sorted, cut into :data:`CANDIDATE_GROUPS`), so that a group is padded to its own
    longest response, not to the longest of all."""
    lm = loaded.model.lm
    longest = max(len(r) for r in responses)
    # the prompt loses its oldest tokens so that prompt + the longest response fit, as in training
    prompt_batch, prompt_len = _prompt_batch(loaded, instance, loaded.recipe.max_length - longest + 1)
    out = lm(
        inputs_embeds=loaded.model.input_embeddings(prompt_batch),
        attention_mask=prompt_batch["attention_mask"],
        use_cache=True,
    )
    first = torch.log_softmax(out.logits[0, -1].float(), dim=-1)
    by_length = sorted(range(len(responses)), key=lambda i: len(responses[i]))
    size = -(-len(by_length) // CANDIDATE_GROUPS)
    groups = [by_length[start : start + size] for start in range(0, len(by_length), size)]
    scores = torch.empty(len(responses))
    for g, group in enumerate(groups):
        # the forward appends to the cache it is given: every group but the last gets a copy
        cache = out.past_key_values if g == len(groups) - 1 else copy.deepcopy(out.past_key_values)
        scores[group] = _continuation_scores(lm, cache, [responses[i] for i in group], prompt_len, first)
    return scores


def _continuation_scores(
    lm: torch.nn.Module, cache: Any, responses: list[list[int]], prompt_len: int, first: torch.Tensor
) -> torch.Tensor:
    """Mean log-likelihood of each of ``responses`` after a prompt whose cache (batch 1) is
    ``cache`` and whose next-token log-probabilities are ``first``."""
    k, longest = len(responses), max(len(r) for r in responses)
    cache.batch_repeat_interleave(k)
    ids = torch.zeros(k, longest, dtype=torch.long)
    mask = torch.zeros(k, longest, dtype=torch.long)
    for i, r in enumerate(responses):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    attention = torch.cat([torch.ones(k, prompt_len, dtype=torch.long), mask], dim=1)
    logits = lm(
        inputs_embeds=lm.get_input_embeddings()(ids), attention_mask=attention, **{_cache_keyword(lm): cache}
    ).logits
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    token_logp = torch.cat([first[ids[:, 0]][:, None], logp], dim=1) * mask
    return token_logp.sum(1) / mask.sum(1)


def yes_no_scores(
    loaded: LoadedModel, instances: Sequence[Instance], batch_size: int = 8, tick: Tick | None = None
) -> np.ndarray:
    """TALLRec: logit(" Yes") − logit(" No") at the first response position, ``[n]``."""
    return yes_no_scores_and_losses(loaded, instances, batch_size, tick)[0]


@torch.no_grad()
def yes_no_scores_and_losses(
    loaded: LoadedModel, instances: Sequence[Instance], batch_size: int = 8, tick: Tick | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`yes_no_scores` and :func:`instance_losses` of the same instances from one forward pass each."""
    if distributed.world()[1] == 1:
        return _yes_no(loaded, list(instances), batch_size, tick)
    both = distributed.sharded(lambda part: np.stack(_yes_no(loaded, part, batch_size, tick), axis=1), instances)
    return both[:, 0].astype(np.float32), both[:, 1].astype(np.float32)


def _yes_no(
    loaded: LoadedModel, instances: list[Instance], batch_size: int, tick: Tick | None
) -> tuple[np.ndarray, np.ndarray]:
    tok = loaded.tokenizer
    yes = tok(" Yes", add_special_tokens=False)["input_ids"][0]
    no = tok(" No", add_special_tokens=False)["input_ids"][0]
    scores, losses = [], []
    for chunk in _batches(list(instances), batch_size):
        batch = collate([encode_instance(z, tok, loaded.item_index, loaded.recipe.max_length) for z in chunk])
        logits = loaded.model.response_logits(batch)
        at = first_response_logits(logits, batch)
        scores.append(at[:, yes] - at[:, no])
        losses.append(per_instance_response_loss(logits, batch))
        if tick:
            tick(len(chunk))
    if not scores:
        return np.zeros(0), np.zeros(0)
    return torch.cat(scores).float().numpy(), torch.cat(losses).numpy()


@torch.no_grad()
def generate_answers(
    loaded: LoadedModel, instances: Sequence[Instance], max_new_tokens: int = 24, tick: Tick | None = None
) -> list[str]:
    """Greedy generation after each prompt (one prompt at a time: no padding questions)."""
    return distributed.sharded(lambda part: _generate(loaded, part, max_new_tokens, tick), instances)


def _generate(loaded: LoadedModel, instances: list[Instance], max_new_tokens: int, tick: Tick | None) -> list[str]:
    tok = loaded.tokenizer
    answers = []
    for z in instances:
        batch, _ = _prompt_batch(loaded, z, loaded.recipe.max_length)
        embeds = loaded.model.input_embeddings(batch)
        generated = loaded.model.lm.generate(
            inputs_embeds=embeds,
            attention_mask=batch["attention_mask"],
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
        )
        answers.append(tok.decode(generated[0], skip_special_tokens=True))
        if tick:
            tick(1)
    return answers
