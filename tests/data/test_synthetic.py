"""The synthetic dataset of ML-20M's shape that `bench data-size` prepares."""

from __future__ import annotations

from pathlib import Path

from rec_eraser.data import load_dataset
from rec_eraser.workflows.data_scale import synthetic_shape, write_synthetic_dataset


def test_the_synthetic_dataset_has_the_asked_size_and_loads(tmp_path: Path) -> None:
    folder = write_synthetic_dataset(tmp_path, 20_000)
    users, items = synthetic_shape(20_000)
    data = load_dataset(folder)
    assert len(data.interactions) == 20_000 and len(data.users) == users
    assert set(data.items) <= {str(i) for i in range(1, items + 1)}
    per_user = {}
    for x in data.interactions:
        per_user[x.user] = per_user.get(x.user, 0) + 1
        assert x.rating in {r / 2 for r in range(1, 11)}
    assert min(per_user.values()) >= 20  # ML-20M's floor
    assert data.title(data.items[0]).startswith("Synthetic Movie")
    assert write_synthetic_dataset(tmp_path / "again", 20_000) and (
        (tmp_path / "again" / "synthetic.inter").read_bytes() == (folder / "synthetic.inter").read_bytes()
    )  # seeded
