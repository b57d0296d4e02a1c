"""SASRec item encoder: learning on a synthetic cycle, determinism, save/load, lookup errors, split use."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rec_eraser.data import Dataset, Interaction, Mapping
from rec_eraser.encoders import (
    ItemEncoder,
    UnknownItemError,
    hit_at_k,
    popularity_hit_at_k,
    train_sasrec,
    training_sequences,
    training_windows,
)

SMALL = {"hidden": 16, "max_len": 8, "lr": 1e-2, "batch_size": 16}


def make_dataset(sequences: dict[str, list[str]]) -> Dataset:
    """A Dataset built in memory: each user's items in the given order (timestamps 0, 1, 2, ...)."""
    rows, line = [], 2
    for user, items in sequences.items():
        for t, item in enumerate(items):
            rows.append(Interaction(user, item, None, float(t), line))
            line += 1
    mapping = Mapping(name="synthetic", user="user_id", item="item_id", timestamp="timestamp")
    return Dataset("synthetic", Path("."), mapping, tuple(rows), {})


def cycle_dataset(n_users: int = 32, n_items: int = 7, length: int = 12) -> Dataset:
    """Every user walks the cycle i0 -> i1 -> ... -> i6 -> i0 from a user-dependent start."""
    return make_dataset({f"u{u}": [f"i{(u + t) % n_items}" for t in range(length)] for u in range(n_users)})


@pytest.fixture(scope="module")
def cycle() -> Dataset:
    return cycle_dataset()


@pytest.fixture(scope="module")
def trained(cycle: Dataset) -> ItemEncoder:
    return train_sasrec(cycle, epochs=25, seed=0, **SMALL)


def test_learns_a_deterministic_cycle(cycle: Dataset, trained: ItemEncoder) -> None:
    # items repeat along the cycle, so rank over all items (excluding seen ones would leave only the target)
    assert hit_at_k(trained, cycle, k=1, exclude_seen=False) >= 0.9
    assert hit_at_k(trained, cycle, k=1, split="valid", exclude_seen=False) >= 0.9
    assert trained.embeddings.shape == (7, 16)
    assert trained.item_ids == cycle.items
    assert trained.config["epochs"] == 25 and trained.config["seed"] == 0


def test_untrained_model_does_not_know_the_cycle(cycle: Dataset) -> None:
    untrained = train_sasrec(cycle, epochs=0, seed=0, **SMALL)
    assert hit_at_k(untrained, cycle, k=1, exclude_seen=False) < 0.6


def test_same_seed_same_embeddings(cycle: Dataset, trained: ItemEncoder) -> None:
    again = train_sasrec(cycle, epochs=25, seed=0, **SMALL)
    assert torch.equal(again.embeddings, trained.embeddings)
    other = train_sasrec(cycle, epochs=25, seed=1, **SMALL)
    assert not torch.equal(other.embeddings, trained.embeddings)


def test_progress_counts_optimizer_steps(cycle: Dataset) -> None:
    calls: list[tuple[int, int]] = []
    train_sasrec(cycle, epochs=2, seed=0, progress=lambda done, total: calls.append((done, total)), **SMALL)
    # 32 users with 10 training items each; 10 > max_len + 1 = 9, so two windows each
    windows = 2 * 32
    steps = 2 * -(-windows // SMALL["batch_size"])
    assert calls == [(i + 1, steps) for i in range(steps)]


def test_save_load_round_trip(tmp_path: Path, cycle: Dataset, trained: ItemEncoder) -> None:
    folder = trained.save(tmp_path / "enc")
    assert sorted(p.name for p in folder.iterdir()) == ["item_encoder.json", "item_encoder.safetensors"]
    loaded = ItemEncoder.load(folder)
    assert loaded.item_ids == trained.item_ids
    assert torch.equal(loaded.embeddings, trained.embeddings)
    assert loaded.config == trained.config
    histories = [["i0", "i1"], ["i5"]]
    assert torch.equal(loaded.next_item_scores(histories), trained.next_item_scores(histories))
    assert hit_at_k(loaded, cycle, k=1, exclude_seen=False) == hit_at_k(trained, cycle, k=1, exclude_seen=False)


def test_embedding_table_only_round_trip(tmp_path: Path) -> None:
    enc = ItemEncoder(["a", "b"], torch.arange(6, dtype=torch.float32).reshape(2, 3), {"hidden": 3})
    loaded = ItemEncoder.load(enc.save(tmp_path / "plain"))
    assert loaded.model is None and loaded.item_ids == ["a", "b"]
    assert torch.equal(loaded.embeddings, enc.embeddings)
    with pytest.raises(RuntimeError, match="no SASRec model"):
        loaded.next_item_scores([["a"]])


def test_load_missing_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="item_encoder"):
        ItemEncoder.load(tmp_path)


def test_lookup(trained: ItemEncoder) -> None:
    rows = trained.lookup(["i3", "i0", "i3"])
    assert rows.shape == (3, 16)
    assert torch.equal(rows[0], trained.embeddings[trained.item_ids.index("i3")])
    assert torch.equal(rows[1], trained.embeddings[trained.item_ids.index("i0")])
    assert not rows.requires_grad


def test_lookup_unknown_item_errors(trained: ItemEncoder) -> None:
    with pytest.raises(UnknownItemError) as info:
        trained.lookup(["i1", "no-such-item"])
    assert isinstance(info.value, KeyError)
    assert info.value.item == "no-such-item"
    assert "'no-such-item' is not known to the item encoder (7 items" in str(info.value)
    with pytest.raises(KeyError):
        trained.next_item_scores([["i1", "nope"]])


def test_trains_only_on_training_positions() -> None:
    data = make_dataset({"a": ["x", "y", "z", "v", "t"], "b": ["y", "x"], "c": ["z"]})
    assert training_sequences(data) == {"a": ["x", "y", "z"], "b": [], "c": []}
    # "v" and "t" are only valid/test targets: still in the vocabulary, never in a training window
    enc = train_sasrec(data, epochs=1, seed=0, hidden=8, max_len=4)
    assert enc.item_ids == ["x", "y", "z", "v", "t"]
    assert enc.config["train_transitions"] == 2


def test_no_training_data_errors() -> None:
    with pytest.raises(ValueError, match="no user has two or more training interactions"):
        train_sasrec(make_dataset({"a": ["x", "y", "z"]}), epochs=1)


def test_windows_cover_every_transition_once() -> None:
    seq = list(range(1, 12))  # 10 transitions
    windows = training_windows([seq, [5], [7, 8]], max_len=4)
    assert windows == [[7, 8, 9, 10, 11], [3, 4, 5, 6, 7], [1, 2, 3], [7, 8]]
    pairs = [(w[i], w[i + 1]) for w in windows for i in range(len(w) - 1)]
    assert sorted(pairs) == sorted([(a, a + 1) for a in range(1, 11)] + [(7, 8)])
    assert all(len(w) <= 5 for w in windows)


def test_popularity_baseline_by_hand() -> None:
    # training counts: x 3, y 2, z 1; test targets: a -> y (seen by a), b -> z, c -> x
    data = make_dataset({"a": ["x", "y", "x", "v", "y"], "b": ["x", "y", "z", "w", "z"], "c": ["z", "v", "w", "x"]})
    # training counts x 3, y 2, z 2, v 1, w 0: ranking x > (y = z) > v > w; a tie counts as the
    # expectation over a random order of the tied items
    assert popularity_hit_at_k(data, k=1, exclude_seen=False) == pytest.approx(1 / 3)  # only c (x)
    # a (y) and b (z) rank 2 or 3: half a hit each at k = 2; c (x) a whole one
    assert popularity_hit_at_k(data, k=2, exclude_seen=False) == pytest.approx((0.5 + 0.5 + 1) / 3)
    # excluding seen items (other than the target): a: x, v seen -> y ties with z for first (1/2);
    # b: x, y, w seen -> z first; c: z, v, w seen -> x first
    assert popularity_hit_at_k(data, k=1, exclude_seen=True) == pytest.approx((0.5 + 1 + 1) / 3)


def test_user_states_rank_items_as_sasrec_does(trained: ItemEncoder) -> None:
    users = trained.user_state_encoder()
    histories = [["i0", "i1", "i2"], ["i4"], ["i3", "i5"]]
    rows = torch.full((3, 3), -1, dtype=torch.long)
    for r, h in enumerate(histories):
        rows[r, : len(h)] = torch.tensor(trained.indices(h))
    states = users(rows)
    # the same direction as SASRec's own state: item scores are a positive multiple of its next-item scores
    scores = trained.next_item_scores(histories)
    ratio = (states @ trained.embeddings.T) / scores
    assert torch.allclose(ratio, ratio[:, :1].expand_as(ratio), rtol=1e-4) and (ratio > 0).all()
    mean_norm = float(trained.embeddings.norm(dim=1).mean())
    assert torch.allclose(states.norm(dim=1), torch.full((3,), mean_norm), rtol=1e-5)


def test_user_states_are_frozen_deterministic_and_zero_without_history(trained: ItemEncoder) -> None:
    users = trained.user_state_encoder()
    users.train()  # the engine's models switch to train mode; this one must not (dropout would change its output)
    assert not users.training and not users.sasrec.training
    assert not any(p.requires_grad for p in users.parameters())
    rows = torch.tensor([[0, 1, 2], [-1, -1, -1]])
    first, second = users(rows), users(rows)
    assert torch.equal(first, second)
    assert torch.equal(first[1], torch.zeros(trained.dim))


def test_user_states_of_long_histories_use_their_last_items(trained: ItemEncoder) -> None:
    users = trained.user_state_encoder()
    max_len = users.sasrec.max_len  # 8 in these tests
    long = [k % 7 for k in range(max_len + 3)]
    rows = torch.tensor([long, long[-max_len:] + [-1] * 3])
    states = users(rows)
    assert torch.allclose(states[0], states[1], atol=1e-6)


def test_user_states_need_the_sasrec_model() -> None:
    with pytest.raises(RuntimeError, match="no SASRec model"):
        ItemEncoder(["a"], torch.zeros(1, 4)).user_state_encoder()
