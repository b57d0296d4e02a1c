"""Two gloo processes on CPU give what one process gives: the split helpers, the Fisher rows
and b of an influence update, a data-parallel training run, and the scoring passes.

The two ranks run once per module (spawned, one thread each) and rank 0 saves what they
computed; each test compares one piece with the same computation done here, alone.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from rec_eraser.core import distributed

WORLD = 2
TRAIN = 11  # an odd count and a batch of 3: the ranks' blocks differ in size, one step holds 2


def _flat(update) -> torch.Tensor:
    return torch.cat([d.reshape(-1) for d in update.delta.values()])


def compute(run_dir: Path, model_dir: Path, llara_dir: Path) -> dict[str, Any]:
    """Everything compared, computed the same way alone and on every rank."""
    from rec_eraser.bench.toy import ToyTask, make_toy_task
    from rec_eraser.core import EmpiricalFisher, InfluenceEngine, Removal, Replacement, SolverConfig
    from rec_eraser.core.params import ParameterSpace
    from rec_eraser.tasks.prepare import load_instances, load_titles
    from rec_eraser.training.recipe import Recipe
    from rec_eraser.training.scoring import candidate_scores_and_losses, instance_losses, yes_no_scores_and_losses
    from rec_eraser.training.train import fit_loaded, training_instances

    rank = distributed.world()[0]
    out: dict[str, Any] = {
        "blocks": [list(distributed.block(7, r, WORLD)) for r in range(WORLD)],
        "sharded_list": distributed.sharded(lambda part: [x * x for x in part], list(range(7))),
        # one item for two ranks: rank 1 has none and returns an empty array of another shape
        "sharded_array": distributed.sharded(lambda part: np.array([[x, 2.0 * x] for x in part]), [3.0]),
        "gathered": distributed.gather_rows(torch.full((rank + 1, 2), float(rank))),
        "summed": distributed.all_reduce_sum(torch.tensor([1.0 + rank])),
    }
    task = make_toy_task(n_train=13, n_test=2, rank=4, train_steps=5)
    space = ParameterSpace(task.model)
    fisher = EmpiricalFisher.from_samples(task.model, task.loss_fn, space, task.train, ToyTask.collate)
    out["fisher_rows"], out["fisher_losses"], out["fisher_passes"] = fisher.gradients, fisher.losses, fisher.passes
    corrected = dict(task.train[4])
    corrected["labels"] = torch.where(corrected["labels"] >= 0, (corrected["labels"] + 1) % 48, corrected["labels"])
    edits = [Removal(task.train[0]), Removal(task.train[7]), Replacement(task.train[4], corrected)]
    engine = InfluenceEngine(
        task.model, task.loss_fn, task.train, ToyTask.collate, solver=SolverConfig(method="fisher", batch_size=2)
    )
    out["rhs"] = engine.rhs(edits)
    update = engine.compute(edits)
    out["delta"], out["damping"] = _flat(update), update.report.damping

    recipe = Recipe(
        rank=4, alpha=8, dropout=0.0, epochs=2, batch_size=3, lr=5e-3, max_train=TRAIN, base_model=str(model_dir)
    )
    loaded, record = fit_loaded(run_dir, recipe, training_instances(run_dir, recipe))
    out["adapter"] = {n: p.detach().clone() for n, p in loaded.model.named_parameters() if p.requires_grad}
    out["final_loss"] = record["training"]["final_loss"]
    test = load_instances(run_dir, "test")[:5]
    scored: list[int] = []  # what this rank scored itself: its block, not every prompt
    out["yes_no"] = yes_no_scores_and_losses(loaded, test, batch_size=2, tick=scored.append)
    out["scored_per_rank"] = distributed.gather_objects([sum(scored)])
    out["losses"] = instance_losses(loaded, test, batch_size=2)

    # LLaRA: the item encoder is trained (by rank 0) on the first training, and the projector
    # drawn after it; both ranks must still train one model
    llara = Recipe(
        rank=4,
        alpha=8,
        dropout=0.0,
        epochs=1,
        batch_size=3,
        lr=5e-3,
        max_train=7,
        base_model=str(model_dir),
        item_tokens=True,
        sasrec_epochs=2,
    )
    loaded, _ = fit_loaded(llara_dir, llara, training_instances(llara_dir, llara))
    out["llara_adapter"] = {n: p.detach().clone() for n, p in loaded.model.named_parameters() if p.requires_grad}
    titles = load_titles(llara_dir)
    llara_test = load_instances(llara_dir, "test")[:3]
    out["llara_scored"] = candidate_scores_and_losses(loaded, llara_test, titles)
    out["llara_scored_one"] = candidate_scores_and_losses(loaded, llara_test[:1], titles)  # rank 1 has none
    return out


def _rank_main(rank: int, store: str, result: str, run_dir: str, model_dir: str, llara_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD)
    try:
        computed = compute(Path(run_dir), Path(model_dir), Path(llara_dir))
        if rank == 0:
            torch.save(computed, result)
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def both(tmp_path_factory, tallrec_run, llara_run, tiny_model_dir) -> tuple[dict[str, Any], dict[str, Any]]:
    """(two processes' results, one process's results); each trains its own LLaRA item encoder."""
    folder = tmp_path_factory.mktemp("distributed")
    run = folder / "run"
    shutil.copytree(tallrec_run, run)
    llara_two, llara_one = folder / "llara-2", folder / "llara-1"
    shutil.copytree(llara_run, llara_two)
    shutil.copytree(llara_run, llara_one)
    result = folder / "rank0.pt"
    mp.start_processes(
        _rank_main,
        args=(str(folder / "store"), str(result), str(run), str(tiny_model_dir), str(llara_two)),
        nprocs=WORLD,
        join=True,
        start_method="spawn",
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the ranks' thread count: the same kernels, the same rounding
    try:
        alone = compute(run, tiny_model_dir, llara_one)
    finally:
        torch.set_num_threads(threads)
    return torch.load(result, weights_only=False), alone


def test_the_helpers_split_in_rank_order_and_gather_everything(both):
    two, _ = both
    assert two["blocks"] == [[0, 1, 2], [3, 4, 5, 6]]
    assert two["sharded_list"] == [x * x for x in range(7)]
    np.testing.assert_array_equal(two["sharded_array"], [[3.0, 6.0]])
    assert torch.equal(two["gathered"], torch.tensor([[0.0, 0.0], [1.0, 1.0], [1.0, 1.0]]))
    assert float(two["summed"]) == 3.0


def test_helpers_alone_change_nothing(both):
    _, alone = both
    assert alone["blocks"] == [[0, 1, 2], [3, 4, 5, 6]]  # the split itself does not depend on the world
    assert alone["sharded_list"] == [x * x for x in range(7)]
    assert torch.equal(alone["gathered"], torch.zeros(1, 2)) and float(alone["summed"]) == 1.0


def test_fisher_rows_and_b_equal_one_process(both):
    two, alone = both
    torch.testing.assert_close(two["fisher_rows"], alone["fisher_rows"], rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(two["fisher_losses"], alone["fisher_losses"], rtol=1e-6, atol=1e-9)
    assert two["fisher_passes"] == alone["fisher_passes"] == 13  # the ranks' passes add up
    torch.testing.assert_close(two["rhs"], alone["rhs"], rtol=1e-5, atol=1e-9)


def test_an_influence_update_equals_one_process(both):
    two, alone = both
    assert two["damping"] == pytest.approx(alone["damping"], rel=1e-6)
    assert float((two["delta"] - alone["delta"]).norm() / alone["delta"].norm()) < 1e-5


def test_data_parallel_training_equals_one_process(both):
    two, alone = both
    assert two["adapter"].keys() == alone["adapter"].keys()
    moved = max(float(p.abs().max()) for n, p in alone["adapter"].items() if "lora_B" in n)
    assert moved > 0  # the adapter trained (LoRA B starts at zero)
    for name, weight in alone["adapter"].items():
        torch.testing.assert_close(two["adapter"][name], weight, rtol=1e-4, atol=1e-6, msg=name)
    assert two["final_loss"] == pytest.approx(alone["final_loss"], rel=1e-5)


def test_data_parallel_llara_training_with_item_tokens_equals_one_process(both):
    two, alone = both
    assert any("projector" in n for n in alone["llara_adapter"])
    for name, weight in alone["llara_adapter"].items():
        torch.testing.assert_close(two["llara_adapter"][name], weight, rtol=1e-4, atol=1e-6, msg=name)


def test_sharded_scoring_equals_one_process(both):
    two, alone = both
    assert two["scored_per_rank"] == [2, 3] and alone["scored_per_rank"] == [5]  # each rank scored its block
    for got, want in zip(two["yes_no"], alone["yes_no"]):
        assert got.shape == want.shape == (5,)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(two["losses"], alone["losses"], rtol=1e-4, atol=1e-5)
    # LLaRA's candidate pass with its losses, sharded; with one prompt, one rank scores nothing
    for key, prompts in (("llara_scored", 3), ("llara_scored_one", 1)):
        (scores, losses), (alone_scores, alone_losses) = two[key], alone[key]
        assert scores.shape == alone_scores.shape and scores.shape[0] == prompts and losses.shape == (prompts,)
        np.testing.assert_allclose(scores, alone_scores, rtol=1e-3, atol=1e-4)
        np.testing.assert_allclose(losses, alone_losses, rtol=1e-3, atol=1e-4)
