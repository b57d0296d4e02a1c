"""Length-bucketed training order: a permutation, the old order when off, batches of near lengths."""

import torch

from rec_eraser.training.batching import bucketed_order, epoch_order
from rec_eraser.training.recipe import Recipe


def test_without_bucketing_an_epoch_is_the_permutation_training_always_drew():
    lengths = list(range(37))
    drawn = epoch_order(lengths, 4, torch.Generator().manual_seed(3))
    assert drawn == torch.randperm(37, generator=torch.Generator().manual_seed(3)).tolist()


def test_bucketing_keeps_every_instance_once_and_groups_lengths_within_windows():
    gen = torch.Generator().manual_seed(0)
    lengths = torch.randint(10, 400, (300,), generator=gen).tolist()
    order = epoch_order(lengths, 8, torch.Generator().manual_seed(1), length_bucketing=True)
    assert sorted(order) == list(range(300))

    def padding(order: list[int]) -> int:
        batches = [order[s : s + 8] for s in range(0, 296, 8)]
        return sum(8 * max(lengths[i] for i in b) - sum(lengths[i] for i in b) for b in batches)

    plain = epoch_order(lengths, 8, torch.Generator().manual_seed(1))
    assert padding(order) < 0.25 * padding(plain)  # uniform lengths: far less padding in each batch
    # a window (16 batches of 8) holds the same instances as the random order's window
    assert set(order[:128]) == set(plain[:128])
    again = epoch_order(lengths, 8, torch.Generator().manual_seed(1), length_bucketing=True)
    assert again == order  # seeded: a resumed or repeated run draws the same epochs


def test_shuffled_batches_stay_whole_and_sorted_inside():
    lengths = [5, 1, 4, 2, 9, 3, 8, 7, 6, 0, 11, 10]
    order = bucketed_order(lengths, batch_size=2, window_batches=3, generator=torch.Generator().manual_seed(0))
    assert sorted(order) == list(range(12))
    pairs = {frozenset(order[i : i + 2]) for i in range(0, 12, 2)}
    assert pairs == {frozenset(p) for p in ([4, 0], [2, 5], [3, 1], [10, 11], [6, 7], [8, 9])}


def test_the_new_setting_at_its_default_leaves_the_recipe_key_unchanged():
    assert "length_bucketing" not in Recipe().to_dict()  # adapters keyed before it existed still match
    assert Recipe(length_bucketing=True).to_dict()["length_bucketing"] is True
    assert Recipe.from_dict(Recipe(length_bucketing=True).to_dict()).length_bucketing is True
    assert Recipe.from_dict(Recipe().to_dict()) == Recipe()


def test_a_short_batch_stays_at_its_window_end_so_every_step_is_one_bucket():
    lengths = torch.randperm(300, generator=torch.Generator().manual_seed(5)).tolist()  # distinct lengths
    window = 32  # 300 = 9 windows of 32 and one of 12: a batch of 8 and a short one of 4
    for seed in range(8):  # the shuffle would put the short batch first in about half of them
        order = bucketed_order(lengths, batch_size=8, window_batches=4, generator=torch.Generator().manual_seed(seed))
        assert sorted(order) == list(range(300))
        for start in range(0, 300, window):
            members = sorted(range(start, min(start + window, 300)), key=lambda i: -lengths[i])
            rank = {i: r for r, i in enumerate(members)}
            for step in range(start, min(start + window, 300), 8):  # training's slices
                ranks = sorted(rank[i] for i in order[step : step + 8])
                assert ranks == list(range(ranks[0], ranks[0] + len(ranks))), (seed, start, step)  # one bucket
        assert [rank[i] for i in order[-4:]] == [8, 9, 10, 11]  # the short batch: the window's shortest, last
