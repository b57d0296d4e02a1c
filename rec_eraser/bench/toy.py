"""A tiny random Llama with a LoRA adapter, trained on a synthetic next-token task.

Small enough that the dense Hessian is computable (p of a few thousand), real enough to
exercise the engine as it meets a recommender's adapter: peft LoRA on q/v projections,
attention, response-only token cross-entropy.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from rec_eraser.core import OutputLoss
from rec_eraser.models.lm_loss import IGNORE, causal_lm_loss


@dataclass
class ToyTask:
    model: nn.Module
    loss_fn: OutputLoss
    train: list[dict[str, torch.Tensor]]
    test: list[dict[str, torch.Tensor]]

    @staticmethod
    def collate(samples: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        return {k: torch.stack([s[k] for s in samples]) for k in samples[0]}


def tiny_llama(vocab: int = 48, hidden: int = 32, layers: int = 2, seed: int = 0) -> nn.Module:
    """A randomly initialised Llama causal LM (eager attention, float32)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=64,
        attn_implementation="eager",
    )
    return LlamaForCausalLM(config)


def make_toy_task(
    n_train: int = 48,
    n_test: int = 16,
    seq_len: int = 10,
    rank: int = 8,
    train_steps: int = 40,
    seed: int = 0,
    base: nn.Module | None = None,
    lr: float = 2e-2,
) -> ToyTask:
    """LoRA (q/v, rank ``rank``) on ``base`` (default: a tiny random Llama), briefly trained
    on a synthetic task: the response repeats the prompt's first two tokens."""
    from peft import LoraConfig, get_peft_model

    base = base if base is not None else tiny_llama(seed=seed)
    torch.manual_seed(seed)
    model = get_peft_model(
        base, LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=["q_proj", "v_proj"], lora_dropout=0.1)
    )
    gen = torch.Generator().manual_seed(seed)
    vocab = base.config.vocab_size

    def sample() -> dict[str, torch.Tensor]:
        prompt = torch.randint(3, min(vocab, 1000), (seq_len - 2,), generator=gen)
        response = torch.stack([prompt[0], prompt[1]])  # the response repeats the first two prompt tokens
        ids = torch.cat([prompt, response])
        labels = torch.full_like(ids, IGNORE)
        labels[-2:] = response
        return {"input_ids": ids, "labels": labels}

    train = [sample() for _ in range(n_train)]
    test = [sample() for _ in range(n_test)]
    loss_fn = causal_lm_loss()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    for step in range(train_steps):
        idx = torch.randperm(n_train, generator=gen)[:8].tolist()
        loss = loss_fn(model, ToyTask.collate([train[i] for i in idx]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return ToyTask(model=model, loss_fn=loss_fn, train=train, test=test)
