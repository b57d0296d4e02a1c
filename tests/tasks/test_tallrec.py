"""TALLRec instances: liked / disliked split, labels, golden prompt, datasets without ratings."""

from __future__ import annotations

from pathlib import Path

import pytest

from rec_eraser.data import Dataset, load_dataset
from rec_eraser.tasks import TaskError, build_tallrec


def test_golden_prompt_and_labels(small: Dataset) -> None:
    out = build_tallrec(small)
    assert [(i.id, i.split, i.label, i.response) for i in out] == [
        ("tallrec-1-1", "train", 1, " Yes."),
        ("tallrec-1-2", "train", 0, " No."),
        ("tallrec-1-3", "valid", 0, " No."),
        ("tallrec-1-4", "test", 1, " Yes."),
        ("tallrec-2-1", "valid", 1, " Yes."),
        ("tallrec-2-2", "test", 1, " Yes."),
    ]
    assert out[3].prompt == (
        "Below is an instruction that describes a task, paired with an input that provides further context. "
        "Write a response that appropriately completes the request.\n\n"
        "### Instruction:\n"
        "Given the user's preference and unpreference, identify whether the user will like the target movie by "
        'answering "Yes." or "No.".\n\n'
        "### Input:\n"
        'User Preference: "Toy Story", "The Usual Suspects"\n'
        'User Unpreference: "Four Rooms", "GoldenEye"\n'  # GoldenEye is rated 3: not above 3
        'Whether the user will like the target movie "Copycat"?\n\n'
        "### Response:"
    )
    assert out[3].history_items == ("1", "3", "4", "2") and out[3].target_item == "6"
    assert out[4].prompt.count('User Unpreference: "GoldenEye"\n') == 1
    assert "User Preference: none\n" in out[4].prompt


def test_threshold_override(small: Dataset) -> None:
    assert [i.label for i in build_tallrec(small, liked_above=4)] == [1, 0, 0, 1, 0, 1]


def test_without_ratings_is_a_clear_error(lastfm_dir: Path) -> None:
    with pytest.raises(TaskError, match="needs explicit ratings.*'lastfm'.*llara"):
        build_tallrec(load_dataset(lastfm_dir))
