"""An interrupted training resumes from its checkpoint and ends where an uninterrupted one ends."""

from __future__ import annotations

import logging

import pytest
import torch

from rec_eraser.tasks.prepare import load_instances
from rec_eraser.training.recipe import Recipe
from rec_eraser.training.train import _fit


class Interrupted(Exception):
    pass


def recipe_for(model_dir, **changes) -> Recipe:
    # dropout on: its masks come from torch's global generator, which the checkpoint must carry
    return Recipe(
        **{
            "rank": 4,
            "alpha": 8,
            "dropout": 0.1,
            "epochs": 3,
            "batch_size": 4,
            "lr": 5e-3,
            "base_model": str(model_dir),
            **changes,
        }
    )


def trainable(loaded) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in loaded.model.named_parameters() if p.requires_grad}


def stop_at(step: int):
    def progress(s: int, total: int, loss: float) -> None:
        if s == step:
            raise Interrupted

    return progress


@pytest.fixture(scope="module")
def uninterrupted(tallrec_run, tiny_model_dir):
    instances = load_instances(tallrec_run, "train")[:10]  # 3 batches an epoch, the last one short
    loaded, record = _fit(tallrec_run, recipe_for(tiny_model_dir), instances, None)
    return instances, trainable(loaded), record


@pytest.mark.parametrize("stop", [2, 3, 7])  # mid-epoch, at an epoch's end, in the last epoch
def test_a_resumed_training_ends_with_the_uninterrupted_parameters(
    tmp_path, tallrec_run, tiny_model_dir, uninterrupted, stop
):
    instances, expected, record = uninterrupted
    checkpoint = tmp_path / "state.pt"
    recipe = recipe_for(tiny_model_dir)
    with pytest.raises(Interrupted):  # saved after every step, interrupted after step `stop`'s save
        _fit(tallrec_run, recipe, instances, stop_at(stop + 1), checkpoint, checkpoint_interval=0.0)
    assert checkpoint.is_file()
    seconds_before = torch.load(checkpoint, weights_only=True)["loop"]["seconds"]
    steps = []
    loaded, resumed = _fit(tallrec_run, recipe, instances, lambda s, t, loss: steps.append(s), checkpoint)
    assert steps == list(range(stop + 1, 10))  # 9 steps in all: only the rest ran
    got = trainable(loaded)
    assert got.keys() == expected.keys() and all(torch.equal(got[n], expected[n]) for n in expected)
    assert resumed["training"]["steps"] == record["training"]["steps"] == 9
    assert resumed["training"]["final_loss"] == record["training"]["final_loss"]
    assert resumed["training"]["resumed_at_steps"] == [stop] and "resumed_at_steps" not in record["training"]
    assert resumed["training"]["seconds"] > seconds_before > 0  # the interrupted process's training time counts too
    assert checkpoint.is_file()  # the caller removes it once the adapter is saved (train_run, the benchmark's cache)


def test_a_checkpoint_of_another_training_or_an_inconsistent_or_damaged_one_is_ignored(
    tmp_path, tallrec_run, tiny_model_dir, uninterrupted, caplog
):
    instances, expected, _ = uninterrupted
    checkpoint = tmp_path / "state.pt"
    with pytest.raises(Interrupted):  # another recipe (learning rate) left this checkpoint
        _fit(
            tallrec_run, recipe_for(tiny_model_dir, lr=1e-2), instances, stop_at(4), checkpoint, checkpoint_interval=0.0
        )
    foreign = checkpoint.read_bytes()
    with pytest.raises(Interrupted):  # this training's own checkpoint, its data order then garbled below
        _fit(tallrec_run, recipe_for(tiny_model_dir), instances, stop_at(4), checkpoint, checkpoint_interval=0.0)
    garbled = torch.load(checkpoint, weights_only=True)
    garbled["loop"]["order"] = [0] * len(garbled["loop"]["order"])
    torch.save(garbled, checkpoint)
    for damage in ("garbled", foreign, b"not a checkpoint"):
        if damage != "garbled":
            checkpoint.write_bytes(damage)
        with caplog.at_level(logging.WARNING, logger="rec_eraser.training.checkpoint"):
            loaded, record = _fit(tallrec_run, recipe_for(tiny_model_dir), instances, None, checkpoint)
        assert "ignoring the training checkpoint" in caplog.text
        caplog.clear()
        got = trainable(loaded)
        assert all(torch.equal(got[n], expected[n]) for n in expected)  # a fresh training, as if there were none
        assert "resumed_at_steps" not in record["training"] and not checkpoint.exists()  # ignored and removed
