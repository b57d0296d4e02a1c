"""The typed version manifest: one reader and one writer, a round trip, and the shape checks."""

from __future__ import annotations

import json

import pytest

from rec_eraser.training.manifest import (
    MANIFEST_HASH,
    MANIFEST_SCHEMA,
    ManifestError,
    VersionRecord,
    manifest_digest,
    sealed,
    unsealed,
)
from rec_eraser.training.versions import VersionIntegrityError, version_record, write_version_folder

RECORD = VersionRecord(
    version="v0003",
    recipe={"rank": 8, "target_modules": ["q_proj", "v_proj"]},
    parent="v0002",
    kind="unlearned",
    created="2026-12-06T22:00:00",
    base_model="/models/smollm2",
    base_model_sha256="ab" * 32,
    events=({"id": "e1", "type": "delete_user", "user": "42", "removed": 3},),
    hashes={"adapter_model.safetensors": "cd" * 32},
    details={"solver": {"method": "fisher", "seconds": 12.5}, "train_instances": 381, "note": "ü, \u2028"},
)


def test_a_record_round_trips_through_its_file_text():
    text = sealed(RECORD)
    data = json.loads(text)
    assert data["schema"] == MANIFEST_SCHEMA and data[MANIFEST_HASH] == manifest_digest(data)
    assert unsealed(data, "v0003") == RECORD
    assert VersionRecord.from_dict(RECORD.to_dict()) == RECORD
    # the details come back as written, the typed fields typed
    back = unsealed(data)
    assert back.details["note"] == "ü, \u2028" and back.events[0]["removed"] == 3 and back.parent == "v0002"


def test_a_manifest_of_an_earlier_schema_reads_with_its_defaults():
    old = {"version": "v0000", "parent": None, "recipe": {}, "events": [], "training": {"seconds": 3.0}}
    record = unsealed(old, "v0000")  # schema 0: written before kinds, hashes and the self-hash
    assert (record.kind, record.schema, record.hashes, record.details) == (
        "trained",
        0,
        {},
        {"training": {"seconds": 3.0}},
    )


@pytest.mark.parametrize(
    "change,message",
    [
        ({"schema": MANIFEST_SCHEMA + 1}, "reads up to"),
        ({"version": 7}, "is not a name"),
        ({"parent": "../v0001"}, "is not a version name"),
        ({"kind": "magic"}, "unknown kind"),
        ({"recipe": "rank=8"}, "it has no recipe"),
        ({"events": [{"type": "delete_user"}]}, "events with ids"),
        ({"events": "e1"}, "events with ids"),
        ({"hashes": {"a": 1}}, "table of file names"),
        ({"base_model": 3}, "base_model 3 is not a string"),
    ],
)
def test_a_record_of_the_wrong_shape_is_refused(change, message):
    with pytest.raises(ManifestError, match=message):
        VersionRecord.from_dict({**RECORD.to_dict(), **change})


def test_the_folder_name_must_match_and_an_edit_breaks_the_seal():
    data = json.loads(sealed(RECORD))
    with pytest.raises(ManifestError, match="not its folder's 'v0004'"):
        unsealed(data, "v0004")
    data["details_added_by_hand"] = 1
    with pytest.raises(ManifestError, match="edited after the version was written"):
        unsealed(data, "v0003")
    data["schema"] = 1  # lowering the schema does not skip a seal that is there
    with pytest.raises(ManifestError, match="edited after the version was written"):
        unsealed(data, "v0003")


def test_the_writer_refuses_a_malformed_record_before_writing_anything(tmp_path):
    filled = []
    with pytest.raises(ValueError, match="the version's record is malformed: unknown kind"):
        write_version_folder(tmp_path / "v0001", filled.append, {**RECORD.to_dict(), "version": "v0001", "kind": "x"})
    assert not filled and list(tmp_path.iterdir()) == []
    written = write_version_folder(
        tmp_path / "v0001",
        lambda folder: (folder / "a.bin").write_bytes(b"1"),
        {**RECORD.to_dict(), "version": "v0001"},
    )
    record = version_record(written)
    assert record.hashes.keys() == {"a.bin"} and record.details == RECORD.details and record.events == RECORD.events
    (written / "manifest.json").write_text((written / "manifest.json").read_text().replace("fisher", "cg"))
    with pytest.raises(VersionIntegrityError, match="v0001/manifest.json: its content differs"):
        version_record(written)
