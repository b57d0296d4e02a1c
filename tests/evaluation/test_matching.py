"""match_answer: the rule that turns a generated answer into a candidate index (or invalid)."""

from __future__ import annotations

import pytest

from rec_eraser.evaluation import match_answer, match_answers, normalize


def test_normalize_casefolds_collapses_and_strips_edges() -> None:
    assert normalize('  "The   Usual\tSuspects."  ') == "the usual suspects"
    assert normalize("**Heat**") == "heat"
    assert normalize("Schindler’s List") == "schindler's list"  # typographic apostrophe
    assert normalize("L.A. Confidential.") == "l.a. confidential"  # inner periods kept
    assert normalize(" ?!. ") == ""


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("Heat", 2),
        (" heat.", 2),  # casefold, leading space, trailing period
        ('"Heat"', 2),  # surrounding quotes
        ("'Heat'.", 2),
        ("**Heat**", 2),  # Markdown emphasis
        ("  the   USUAL suspects ", 3),  # whitespace collapsed
        ("The answer is Heat", 2),  # containment
        ("Heat [CansEmb]", 2),  # the item token echoed after the title
        ("Heat\nThis user has watched Fargo", 2),  # only the first line is read
        ("\n\n  Heat\nFargo", 2),  # ... the first non-empty one
        ("Heat or Fargo", None),  # two candidates named: ambiguous
        ("Fargo\n", 4),
        ("Casablanca", None),  # names no candidate
        ("", None),
        ("  \n \n", None),
        ("...", None),
    ],
)
def test_match_answer_basic(answer: str, expected: int | None) -> None:
    titles = ["Alien", "Aliens", "Heat", "The Usual Suspects", "Fargo"]
    assert match_answer(answer, titles) == expected


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("Aliens", 1),  # exact match wins over the contained "Alien"
        ("Alien", 0),
        ("I think Aliens.", 1),  # "Alien" is not a whole word inside "Aliens"
        ("Alien 3", 2),
        ("The answer is Alien 3.", 2),  # "Alien" only occurs inside the longer "Alien 3": the longest wins
        ("Alien, not Alien 3", None),  # both named separately: ambiguous
        ("Alien or Aliens", None),
    ],
)
def test_match_answer_prefers_the_longest_of_nested_titles(answer: str, expected: int | None) -> None:
    assert match_answer(answer, ["Alien", "Aliens", "Alien 3"]) == expected


def test_match_answer_whole_words_and_edge_cases() -> None:
    assert match_answer("I'd update my answer", ["Up", "Heat"]) is None  # "up" inside "update" is not named
    assert match_answer("Up!", ["Up", "Heat"]) == 0
    assert match_answer("Aliens", ["Alien", "Heat"]) is None  # a non-candidate that contains a candidate
    assert match_answer("I pick Airplane!", ["Airplane!", "Heat"]) == 0  # title's own "!" stripped on both sides
    assert match_answer("airplane", ["Airplane!", "Heat"]) == 0
    assert match_answer("Schindler's List", ["Schindler’s List", "Heat"]) == 0
    assert match_answer("(500) Days of Summer", ["(500) Days of Summer", "Summer"]) == 0  # exact beats contained
    assert match_answer("Heat", ["Heat", "Heat"]) is None  # duplicate titles: ambiguous
    assert match_answer("I watched Heat", ["Heat", "heat."]) is None
    assert match_answer("Heat", ["", "Heat"]) == 1  # an empty title is never named
    assert match_answer("anything", ["", "?!"]) is None
    assert match_answer("Heat", []) is None


def test_match_answers_checks_lengths() -> None:
    assert match_answers(["Heat", "x"], [["Heat"], ["Fargo"]]) == [0, None]
    with pytest.raises(ValueError, match="2 answers but 1"):
        match_answers(["Heat", "x"], [["Heat"]])
