"""Reading events files: good lines kept, each bad line reported by number, never a crash."""

from __future__ import annotations

import pytest

from rec_eraser.workflows import Event, EventError, read_events


def write(tmp_path, text: str):
    path = tmp_path / "events.jsonl"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_issue_examples_parse(tmp_path):
    path = write(
        tmp_path,
        '{"id": "e1", "type": "delete_user", "user": "42"}\n'
        '{"id": "e2", "type": "remove_interactions", "user": "42", "items": ["50"]}\n\n'
        '{"id": "e3", "type": "correct_label", "user": 7, "item": 9, "label": "no"}\n'
        '{"id": "e4", "type": "correct_target", "user": "7", "item": "9", "target": "12"}\n',
    )
    events, problems = read_events(path)
    assert problems == []
    assert [(line, e) for line, e in events] == [
        (1, Event("e1", "delete_user", "42")),
        (2, Event("e2", "remove_interactions", "42", items=("50",))),
        (4, Event("e3", "correct_label", "7", item="9", label="No")),
        (5, Event("e4", "correct_target", "7", item="9", target="12")),
    ]
    assert events[2][1].liked is False


@pytest.mark.parametrize(
    "line, message",
    [
        ("not json", "not a JSON object"),
        ("[1, 2]", "must be a JSON object"),
        ('{"id": "x", "type": "forget", "user": "1"}', "unknown event type 'forget'"),
        ('{"id": "x", "type": "delete_user"}', "field 'user'"),
        ('{"type": "delete_user", "user": "1"}', "field 'id'"),
        ('{"id": "x", "type": "delete_user", "user": "1", "item": "2"}', "no field 'item'"),
        ('{"id": "x", "type": "remove_interactions", "user": "1", "items": []}', "non-empty list"),
        ('{"id": "x", "type": "correct_label", "user": "1", "item": "2", "label": "maybe"}', "Yes or No"),
        ('{"id": "x", "type": "correct_target", "user": "1", "item": "2"}', "field 'target'"),
        ('{"id": true, "type": "delete_user", "user": "1"}', "field 'id'"),
    ],
)
def test_each_bad_line_is_reported_with_its_number_and_good_lines_survive(tmp_path, line, message):
    path = write(
        tmp_path,
        '{"id": "ok1", "type": "delete_user", "user": "1"}\n'
        + line
        + '\n{"id": "ok2", "type": "delete_user", "user": "2"}\n',
    )
    events, problems = read_events(path)
    assert [e.id for _, e in events] == ["ok1", "ok2"]
    assert len(problems) == 1 and problems[0].line == 2 and message in problems[0].message


def test_a_repeated_id_is_a_problem_on_its_second_line(tmp_path):
    path = write(
        tmp_path, '{"id": "e1", "type": "delete_user", "user": "1"}\n{"id": "e1", "type": "delete_user", "user": "2"}\n'
    )
    events, problems = read_events(path)
    assert [e.user for _, e in events] == ["1"]
    assert problems[0].line == 2 and "repeats line 1" in problems[0].message


def test_unreadable_files_are_refused(tmp_path):
    with pytest.raises(EventError, match="no such events file"):
        read_events(tmp_path / "missing.jsonl")
    binary = tmp_path / "events.bin"
    binary.write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(EventError, match="UTF-8 JSON Lines"):
        read_events(binary)
    with pytest.raises(EventError, match="holds no events"):
        read_events(write(tmp_path, "\n\n"))


def test_line_numbers_survive_unicode_line_separators_inside_strings_and_a_bom(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text(
        "\ufeff"
        + '{"id": "a", "type": "delete_user", "user": "u\u2028v"}\n{"id": "c", "type": "nope", "user": "2"}\n'
        + '{"id": "d\u2028e", "type": "delete_user", "user": "3"}\n{"id": "f", "type": "delete_user", "user": "4"}\n',
        encoding="utf-8",
    )
    events, problems = read_events(path)
    assert [(line, e.id, e.user) for line, e in events] == [(1, "a", "u\u2028v"), (4, "f", "4")]
    assert [p.line for p in problems] == [2, 3] and "printable" in problems[1].message  # an id is one printable line


def test_a_request_with_many_items_gets_a_short_id_of_its_own():
    from rec_eraser.workflows.events import MAX_ID_LENGTH, request_event

    few = request_event("remove_interactions", "7", items=["50", "9"])
    assert few.id == "cli:remove_interactions:7:50,9"  # ids that fit keep their form (idempotency across versions)
    many = [str(i) for i in range(1000, 1100)]
    long = request_event("remove_interactions", "7", items=many)
    assert len(long.id) <= MAX_ID_LENGTH and long.id.startswith("cli:remove_interactions:7:sha256=")
    assert request_event("remove_interactions", "7", items=many[::-1]).id == long.id  # the same request, the same id
    assert request_event("remove_interactions", "7", items=many[1:]).id != long.id
