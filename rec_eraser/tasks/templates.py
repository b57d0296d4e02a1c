"""Prompt templates of the two tasks: every prompt string of rec-eraser is built here.

Boundary convention (both tasks): a prompt never ends in whitespace and a response always
starts with exactly one space. With byte-level BPE tokenizers (SmolLM2, GPT-2, Llama-3)
the pre-tokenizer then splits at the boundary, so tokenizing prompt and response apart or
together gives the same ids, and the first response token is " Yes" / " No" (TALLRec) or
the first word of the title with its space (LLaRA). Checked on SmolLM2:
"### Response:" + " Yes." -> [..., ":", "ĠYes", "."]; " No." -> ["ĠNo", "."].

The words (noun, verb, verb_past) come from the dataset mapping's ``[prompt]`` table.

LLaRA's layout here differs from the paper's in two ways, both measured (docs/training.md, "LLaRA's
hybrid prompt"): each item's embedding token comes *before* its title (LLaRA puts it
after), and the prompt ends with a user token ``[UserEmb]`` (the collaborative encoder's
state after the history). A causal LM predicts the first token of its answer from what it
has read; with the token before the title, the title's first token sits right after the
item's collaborative embedding, which is the pattern a pretrained LM's copying
(induction) heads complete: attend to the position after the best-matching token, copy
it. With the paper's order the same training left the adapter at chance.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

#: Placeholder before each history title; the model layer puts a projected item embedding there.
HISTORY_EMB = "[HistoryEmb]"
#: Placeholder before each candidate title.
CANS_EMB = "[CansEmb]"
#: Placeholder at the end of a LLaRA prompt; the model layer puts the projected state of the
#: collaborative encoder after the prompt's history there.
USER_EMB = "[UserEmb]"

#: LLaRA's prompt (its movie template, words from the mapping; the count is the real number of candidates).
LLARA_TEMPLATE = (
    "This user has {verb_past} {history} in the previous. Please predict the next {noun} this user "
    "will {verb}. Choose the answer from the following {count} {noun} titles: {candidates}. Answer: " + USER_EMB
)

#: The Alpaca prompt wrapper TALLRec fine-tunes with (ending at "### Response:", no trailing newline).
ALPACA_TEMPLATE = (
    "Below is an instruction that describes a task, paired with an input that provides further "
    "context. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:"
)
TALLREC_INSTRUCTION = (
    "Given the user's preference and unpreference, identify whether the user will like the "
    'target {noun} by answering "Yes." or "No.".'
)
TALLREC_INPUT = (
    "User Preference: {liked}\nUser Unpreference: {disliked}\nWhether the user will like the target {noun} {target}?"
)
#: What an empty preference list reads as.
TALLREC_NONE = "none"
#: TALLRec's responses, by label (1 = liked).
TALLREC_RESPONSES = {1: " Yes.", 0: " No."}


class PromptWords(Protocol):
    """The prompt words of a dataset (a :class:`rec_eraser.data.Mapping` has them)."""

    noun: str
    verb: str
    verb_past: str


def _tagged(titles: Sequence[str], tag: str) -> str:
    return ", ".join(f"{tag} {t}" for t in titles)


def llara_prompt(history: Sequence[str], candidates: Sequence[str], words: PromptWords) -> str:
    """LLaRA's prompt from history titles (oldest first) and candidate titles (in prompt order)."""
    return LLARA_TEMPLATE.format(
        verb_past=words.verb_past,
        verb=words.verb,
        noun=words.noun,
        history=_tagged(history, HISTORY_EMB),
        count=len(candidates),
        candidates=_tagged(candidates, CANS_EMB),
    )


def llara_response(target_title: str) -> str:
    """LLaRA's answer: the target's title after one space."""
    return " " + target_title


def _quoted(titles: Sequence[str]) -> str:
    return ", ".join(f'"{t}"' for t in titles) or TALLREC_NONE


def tallrec_prompt(liked: Sequence[str], disliked: Sequence[str], target_title: str, words: PromptWords) -> str:
    """TALLRec's Alpaca prompt from liked and disliked history titles (each oldest first) and the target's title."""
    instruction = TALLREC_INSTRUCTION.format(noun=words.noun)
    given = TALLREC_INPUT.format(
        liked=_quoted(liked), disliked=_quoted(disliked), noun=words.noun, target=f'"{target_title}"'
    )
    return ALPACA_TEMPLATE.format(instruction=instruction, input=given)


def tallrec_response(label: int) -> str:
    """``" Yes."`` for 1 (liked), ``" No."`` for 0."""
    return TALLREC_RESPONSES[int(label)]
