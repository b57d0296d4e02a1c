"""Prompt templates and titles: golden strings and the prompt/response boundary."""

from __future__ import annotations

import pytest

from rec_eraser.data import mapping_for
from rec_eraser.models.embedded import CACHE_NAME, cache_root
from rec_eraser.tasks import llara_prompt, llara_response, readable_title, tallrec_prompt, tallrec_response

ML = mapping_for("ml-100k")


def test_llara_prompt_golden() -> None:
    assert llara_prompt(["Toy Story", "GoldenEye"], ["Babe", "Copycat", "Four Rooms"], ML) == (
        "This user has watched [HistoryEmb] Toy Story, [HistoryEmb] GoldenEye in the previous. Please predict the "
        "next movie this user will watch. Choose the answer from the following 3 movie titles: [CansEmb] Babe, "
        "[CansEmb] Copycat, [CansEmb] Four Rooms. Answer: [UserEmb]"
    )
    assert llara_response("Copycat") == " Copycat"


def test_llara_prompt_uses_the_mapping_words() -> None:
    assert llara_prompt(["Air"], ["Air", "Morcheeba"], mapping_for("lastfm")) == (
        "This user has listened to [HistoryEmb] Air in the previous. Please predict the next artist this user will "
        "listen to. Choose the answer from the following 2 artist titles: [CansEmb] Air, [CansEmb] Morcheeba. "
        "Answer: [UserEmb]"
    )


def test_tallrec_prompt_golden() -> None:
    assert tallrec_prompt(["Toy Story", "Babe"], [], "Copycat", ML) == (
        "Below is an instruction that describes a task, paired with an input that provides further context. "
        "Write a response that appropriately completes the request.\n\n"
        "### Instruction:\n"
        "Given the user's preference and unpreference, identify whether the user will like the target movie by "
        'answering "Yes." or "No.".\n\n'
        "### Input:\n"
        'User Preference: "Toy Story", "Babe"\n'
        "User Unpreference: none\n"
        'Whether the user will like the target movie "Copycat"?\n\n'
        "### Response:"
    )
    assert (tallrec_response(1), tallrec_response(0)) == (" Yes.", " No.")


@pytest.mark.parametrize(
    ("raw", "readable"),
    [
        ("Toy Story", "Toy Story"),
        ("  Usual   Suspects, The ", "The Usual Suspects"),
        ("Blue Angel, The (Blaue Engel, Der)", "The Blue Angel (Der Blaue Engel)"),
        ("Star Maker, The (Uomo delle stelle, L')", "The Star Maker (L'Uomo delle stelle)"),
        ("Postino, Il", "Il Postino"),
        ("Paris, Texas", "Paris, Texas"),
        ("Seven (Se7en)", "Seven (Se7en)"),
        ("Die xue shuang xiong (Killer, The)", "Die xue shuang xiong (The Killer)"),
    ],
)
def test_readable_title(raw: str, readable: str) -> None:
    assert readable_title(raw) == readable


SMOLLM2 = cache_root() / "models" / CACHE_NAME


@pytest.mark.skipif(not (SMOLLM2 / "tokenizer.json").is_file(), reason="embedded model not converted yet")
def test_boundary_tokens_on_smollm2() -> None:
    """The first response token is " Yes" / " No"; tokenizing apart or together gives the same ids."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(SMOLLM2))
    prompt = tallrec_prompt(["Toy Story"], ["Babe"], "Copycat", ML)
    for label, word in ((1, "ĠYes"), (0, "ĠNo")):
        response = tok(tallrec_response(label), add_special_tokens=False)["input_ids"]
        assert tok.convert_ids_to_tokens(response[:1]) == [word]
        joint = tok(prompt + tallrec_response(label), add_special_tokens=False)["input_ids"]
        assert joint == tok(prompt, add_special_tokens=False)["input_ids"] + response
    prompt = llara_prompt(["Toy Story"], ["Babe", "Copycat"], ML)
    joint = tok(prompt + llara_response("Copycat"), add_special_tokens=False)["input_ids"]
    apart = tok(prompt, add_special_tokens=False)["input_ids"] + tok(" Copycat", add_special_tokens=False)["input_ids"]
    assert joint == apart
