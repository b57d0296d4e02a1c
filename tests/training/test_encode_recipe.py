"""Encoding instances into tokens, labels and item-token positions; recipe files."""

from __future__ import annotations

import math

import pytest
import torch

from rec_eraser.models.lm_loss import IGNORE
from rec_eraser.tasks.instance import Instance, Source
from rec_eraser.training.encode import EncodingError, collate, encode_instance
from rec_eraser.training.recipe import Recipe, RecipeError, load_recipe


def llara_instance() -> Instance:
    return Instance(
        id="llara-1-2",
        task="llara",
        split="train",
        user="1",
        position=2,
        prompt="This user has watched Alien [HistoryEmb], Heat [HistoryEmb] in the previous. Choose: Up [CansEmb], Cars [CansEmb]. Answer:",
        response=" Up",
        interactions=(Source("10", 1.0, 2), Source("11", 2.0, 3), Source("12", 3.0, 4)),
        history_items=("10", "11"),
        target_item="12",
        candidates=("12", "13"),
        label=None,
    )


def user_token_instance() -> Instance:
    """The current layout: item tokens before the titles, a user token at the end."""
    from dataclasses import replace

    return replace(
        llara_instance(),
        prompt="This user has watched [HistoryEmb] Alien, [HistoryEmb] Heat in the previous. "
        "Choose: [CansEmb] Up, [CansEmb] Cars. Answer: [UserEmb]",
    )


INDEX = {"10": 0, "11": 1, "12": 2, "13": 3}


def test_item_tokens_precede_titles_and_the_user_token_ends_the_prompt(tokenizer):
    sample = encode_instance(user_token_instance(), tokenizer, INDEX)
    ids = sample["input_ids"]
    assert sample["item_idx"].tolist() == [0, 1, 2, 3]
    first, second = (int(p) for p in sample["item_pos"][:2])
    assert tokenizer.decode(ids[:first]) == "This user has watched"
    # a title's first token comes right after its item token, with its leading space (as the response has it)
    assert tokenizer.decode(ids[first + 1 : second]) == " Alien,"
    prompt_len = int((sample["labels"] == IGNORE).sum())
    assert sample["user_pos"].tolist() == [prompt_len - 1] and int(ids[prompt_len - 1]) == tokenizer.unk_token_id
    assert sample["user_items"].tolist() == [[0, 1]]  # the whole history, in order
    plain = encode_instance(user_token_instance(), tokenizer, None)
    assert tokenizer.decode(plain["input_ids"][plain["labels"] == IGNORE]) == (
        "This user has watched Alien, Heat in the previous. Choose: Up, Cars. Answer:"
    )
    assert plain["user_pos"].numel() == 0 and plain["user_items"].numel() == 0


def test_collate_pads_user_histories(tokenizer):
    from dataclasses import replace

    long = encode_instance(user_token_instance(), tokenizer, INDEX)
    short = encode_instance(
        replace(
            user_token_instance(),
            history_items=("11",),
            prompt="Seen [HistoryEmb] Heat. Choose: [CansEmb] Up, [CansEmb] Cars. Answer: [UserEmb]",
        ),
        tokenizer,
        INDEX,
    )
    old = encode_instance(llara_instance(), tokenizer, INDEX)  # no user token
    batch = collate([long, old, short])
    assert batch["user_rows"].tolist() == [0, 2]
    assert batch["user_cols"].tolist() == [int(long["user_pos"][0]), int(short["user_pos"][0])]
    assert batch["user_items"].tolist() == [[0, 1], [1, -1]]


def test_item_tokens_sit_where_the_placeholders_were(tokenizer):
    z = llara_instance()
    index = {"10": 0, "11": 1, "12": 2, "13": 3}
    sample = encode_instance(z, tokenizer, index)
    assert sample["item_idx"].tolist() == [0, 1, 2, 3]  # history items, then candidates, in prompt order
    ph = tokenizer.unk_token_id
    assert all(int(sample["input_ids"][p]) == ph for p in sample["item_pos"])
    text_before_first = tokenizer.decode(sample["input_ids"][: int(sample["item_pos"][0])])
    assert text_before_first == "This user has watched Alien"
    response = sample["input_ids"][sample["labels"] != IGNORE].tolist()
    assert response == tokenizer(" Up", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    assert (sample["labels"][: len(sample["labels"]) - len(response)] == IGNORE).all()


def test_without_item_tokens_the_placeholders_leave_the_text(tokenizer):
    sample = encode_instance(llara_instance(), tokenizer, None)
    text = tokenizer.decode(sample["input_ids"][sample["labels"] == IGNORE])
    assert text == "This user has watched Alien, Heat in the previous. Choose: Up, Cars. Answer:"
    assert sample["item_pos"].numel() == 0


def test_unknown_item_and_truncation(tokenizer):
    with pytest.raises(EncodingError, match="no collaborative embedding"):
        encode_instance(llara_instance(), tokenizer, {"10": 0})
    index = {"10": 0, "11": 1, "12": 2, "13": 3}
    full = encode_instance(llara_instance(), tokenizer, index)
    cut = encode_instance(llara_instance(), tokenizer, index, max_length=len(full["input_ids"]) - 3)
    assert torch.equal(cut["input_ids"], full["input_ids"][3:])
    assert torch.equal(cut["item_pos"], full["item_pos"] - 3)


def test_collate_flattens_item_coordinates(tokenizer):
    index = {"10": 0, "11": 1, "12": 2, "13": 3}
    a = encode_instance(llara_instance(), tokenizer, index)
    batch = collate([a, a])
    assert batch["item_rows"].tolist() == [0] * 4 + [1] * 4
    assert torch.equal(batch["item_cols"], torch.cat([a["item_pos"], a["item_pos"]]))


def test_recipe_files(tmp_path):
    path = tmp_path / "r.toml"
    path.write_text("[lora]\nrank = 4\n[train]\nlr = 2e-3\nepochs = 2\n")
    recipe = load_recipe(path)
    assert (recipe.rank, recipe.lr, recipe.epochs, recipe.alpha) == (4, 2e-3, 2, 16)
    assert Recipe.from_dict(recipe.to_dict()) == recipe
    path.write_text("[train]\nlearning_rate = 1\n")
    with pytest.raises(RecipeError, match="unknown setting 'learning_rate'"):
        load_recipe(path)
    path.write_text("[optimizer]\nlr = 1\n")
    with pytest.raises(RecipeError, match="unknown section"):
        load_recipe(path)
    path.write_text("[train]\nlr = 5\n")
    with pytest.raises(RecipeError, match="lr must be"):
        load_recipe(path)
    path.write_text("[train]\nprojector_lr = 0\n")
    with pytest.raises(RecipeError, match="projector_lr must be"):
        load_recipe(path)
    path.write_text("[train]\nprojector_lr = 3e-2\n")
    assert load_recipe(path).projector_lr == 3e-2
    for section, line, message in [
        ("train", 'schedule = "linear"', "schedule must be one of constant, cosine"),
        ("train", 'precision = "fp16"', "precision must be one of float32, bfloat16"),
        ("train", "warmup = 1.0", "warmup must be in"),
        ("model", 'projector_init = "xavier"', "projector_init must be one of scaled, default"),
    ]:
        path.write_text(f"[{section}]\n{line}\n")
        with pytest.raises(RecipeError, match=message):
            load_recipe(path)
    with pytest.raises(RecipeError, match="no such recipe"):
        load_recipe(tmp_path / "missing.toml")


def test_a_setting_in_another_section_than_its_own_is_refused(tmp_path):
    path = tmp_path / "r.toml"
    for text, message in [
        ("[lora]\nlr = 2e-3\n", r"lr belongs in \[train\], not \[lora\]"),
        ("[train]\nrank = 4\n", r"rank belongs in \[lora\], not \[train\]"),
        ('[train]\nprojector_init = "default"\n', r"projector_init belongs in \[model\]"),
        ("[model]\nextra = 1\n", r"unknown setting 'extra' in \[model\]"),
    ]:
        path.write_text(text)
        with pytest.raises(RecipeError, match=message):
            load_recipe(path)
    # the sections name every setting of a recipe, each once
    from dataclasses import fields

    from rec_eraser.training.recipe import SECTION_SETTINGS

    named = [name for names in SECTION_SETTINGS.values() for name in names]
    assert sorted(named) == sorted({f.name for f in fields(Recipe)} - {"extra"}) and len(named) == len(set(named))


def test_learning_rate_schedules():
    from rec_eraser.training.train import learning_rate_factor

    assert [learning_rate_factor(Recipe(), 4)(k) for k in range(4)] == [1.0] * 4
    # 10 steps, 2 of warm-up: 1/3, 2/3, then a half cosine over the remaining 8 steps
    cosine = learning_rate_factor(Recipe(schedule="cosine", warmup=0.2), 10)
    expected = [1 / 3, 2 / 3] + [0.5 * (1 + math.cos(math.pi * j / 8)) for j in range(8)]
    assert [cosine(k) for k in range(10)] == pytest.approx(expected)
    assert cosine(2) == 1.0 and 0 < cosine(9) < 0.04  # the peak after warm-up; nearly 0 at the last step
    assert learning_rate_factor(Recipe(warmup=0.5), 4)(0) == pytest.approx(1 / 3)  # warm-up, then constant
    assert learning_rate_factor(Recipe(warmup=0.5), 4)(2) == 1.0


@pytest.mark.parametrize(
    "settings,message",
    [
        ({"rank": 2.5}, "rank must be an integer, got 2.5"),
        ({"batch_size": 8.0}, "batch_size must be an integer, got 8.0"),
        ({"epochs": True}, "epochs must be an integer, got True"),
        ({"dropout": 2}, "dropout must be in \\[0, 1\\)"),
        ({"dropout": -0.1}, "dropout must be in \\[0, 1\\)"),
        ({"seed": -1}, "seed must be >= 0"),
        ({"target_modules": "q_proj"}, "target_modules must be a list, got 'q_proj'"),
        ({"target_modules": []}, "target_modules must name at least one module"),
        ({"target_modules": ["q_proj", 3]}, "target_modules must be a list of strings"),
        ({"max_length": 1}, "max_length must be >= 32 tokens"),
        ({"precision": 16}, "precision must be a string, got 16"),
        ({"base_model": ["x"]}, "base_model must be a string or absent"),
    ],
)
def test_a_recipe_value_of_the_wrong_type_or_range_is_one_line(settings, message):
    with pytest.raises(RecipeError, match=message):
        Recipe.from_dict(settings)
    assert Recipe.from_dict({"epochs": 2, "lr": 0.002, "dropout": 0}).dropout == 0  # an integer is a number
