"""The ``fisher`` method against a dense solve of the same damped empirical Fisher (closed form for logistic regression)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from rec_eraser.core import (
    EmpiricalFisher,
    InfluenceEngine,
    ParameterSpace,
    Removal,
    Replacement,
    SolverConfig,
    SolverConfigError,
)

from .conftest import MU, collate, fisher_engine, logistic_loss


def closed_form_gradients(problem, rows: list[int]) -> np.ndarray:
    """Per-instance gradients of BCE + (MU/2)‖w‖² in closed form: (σ(xᵀw) − y) x + MU w."""
    x, y, w = problem.x[rows], problem.y[rows], problem.w
    s = 1.0 / (1.0 + np.exp(-(x @ w)))
    return (s - y)[:, None] * x + MU * w[None]


def test_woodbury_solve_equals_the_dense_solve():
    gen = torch.Generator().manual_seed(0)
    g = torch.randn(7, 40, generator=gen, dtype=torch.float64)
    b = torch.randn(40, generator=gen, dtype=torch.float64)
    fisher = EmpiricalFisher(g)
    dense = g.T @ g / 7 + 0.3 * torch.eye(40, dtype=torch.float64)
    np.testing.assert_allclose(fisher.solve(b, 0.3).numpy(), torch.linalg.solve(dense, b).numpy(), rtol=1e-10)
    eig = torch.linalg.eigvalsh(g.T @ g / 7)
    assert fisher.trace() == pytest.approx(float(eig.sum()), rel=1e-10)
    assert fisher.trace_of_square() == pytest.approx(float((eig**2).sum()), rel=1e-10)
    with pytest.raises(ValueError, match="damping must be > 0"):
        fisher.solve(b, 0.0)


@pytest.mark.parametrize("damping", [1e-3, None])
def test_engine_fisher_matches_a_dense_solve_on_logistic_regression(logistic, damping):
    n = len(logistic.samples)
    sample_size = 60
    removed = [3, 17, 512]
    flipped = 40
    engine = fisher_engine(logistic.model(), logistic.samples, damping, sample_size=sample_size, seed=0)
    new = (logistic.samples[flipped][0], 1.0 - logistic.samples[flipped][1])
    edits = [Removal(logistic.samples[i]) for i in removed] + [Replacement(logistic.samples[flipped], new)]
    update = engine.compute(edits)

    # the curvature sub-sample: the edited instances first, then the engine's seeded draw
    chosen = engine.curvature_samples(edits)
    assert len(chosen) == sample_size and all(
        any(s is c for c in chosen) for s in (logistic.samples[i] for i in removed + [flipped])
    )
    index = {id(s): i for i, s in enumerate(logistic.samples)}
    flipped_new = problem_copy_with_label(logistic, flipped, 1.0 - logistic.y[flipped])
    # the replacement's new form joins the sample (b holds its gradient)
    g = np.vstack(
        [closed_form_gradients(logistic, [index[id(s)] for s in chosen]), closed_form_gradients(flipped_new, [flipped])]
    )
    fisher = g.T @ g / (sample_size + 1)
    expected_damping = 0.03 * np.trace(fisher @ fisher) / np.trace(fisher) if damping is None else damping
    assert update.report.damping == pytest.approx(expected_damping, rel=1e-8)

    b = (
        closed_form_gradients(logistic, removed).sum(0)
        + closed_form_gradients(logistic, [flipped])[0]
        - closed_form_gradients(flipped_new, [flipped])[0]
    ) / n
    expected = np.linalg.solve(fisher + expected_damping * np.eye(fisher.shape[0]), b)
    got = update.delta["weight"].reshape(-1).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-8, atol=1e-12)
    report = update.report
    assert report.method == "fisher" and report.curvature == "empirical_fisher"
    assert report.hvps == 0 and report.curvature_samples == sample_size + 1 and report.relative_residual < 1e-10
    # b is read off the sample's rows (g of the edited instances and of the new form): no pass repeated
    assert report.gradient_passes == sample_size + 1
    # the floor: the removed instances, the replaced one's old and its new form
    assert report.floor_rows == len(removed) + 2
    assert 0 < report.floor_seconds <= report.seconds


def problem_copy_with_label(problem, row: int, label: float):
    y = problem.y.copy()
    y[row] = label
    return type(problem)(x=problem.x, y=y, w=problem.w, samples=problem.samples)


def test_fisher_removal_raises_the_removed_loss(logistic):
    model = logistic.model()
    engine = fisher_engine(model, logistic.samples, sample_size=100)
    z = logistic.samples[7]
    before = float(logistic_loss(model, collate([z])).detach())
    engine.compute([Removal(z)]).apply(model)
    assert float(logistic_loss(model, collate([z])).detach()) > before


class TwoScaleLogistic(nn.Module):
    """Logistic regression whose last 10 features enter through a module at 30x the scale:
    its curvature block is ~900x the other's, like an LLaRA projector's against LoRA's."""

    def __init__(self, p: int) -> None:
        super().__init__()
        self.head = nn.Linear(p - 10, 1, bias=False, dtype=torch.float64)
        self.side = nn.Linear(10, 1, bias=False, dtype=torch.float64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x[:, :-10]) + self.side(30.0 * x[:, -10:])


def two_scale_loss(model: nn.Module, batch) -> torch.Tensor:
    x, y = batch
    return nn.functional.binary_cross_entropy_with_logits(model(x).squeeze(-1), y)


def test_damping_groups_apply_the_rule_to_each_block_and_solve_with_the_diagonal_damping(logistic):
    torch.manual_seed(0)
    model = TwoScaleLogistic(logistic.x.shape[1])
    samples = logistic.samples[:80]
    edits = [Removal(samples[3]), Removal(samples[17])]
    engine = InfluenceEngine(
        model,
        two_scale_loss,
        samples,
        collate,
        solver=SolverConfig(method="fisher", sample_size=40, damping_groups=("side.",)),
    )
    update = engine.compute(edits)

    grads = []
    for z in engine.curvature_samples(edits):  # dense ground truth, one instance at a time
        g = torch.autograd.grad(two_scale_loss(model, collate([z])), [model.head.weight, model.side.weight])
        grads.append(torch.cat([t.reshape(-1) for t in g]))
    g = torch.stack(grads).numpy()
    p_head = model.head.weight.numel()
    expected = {}
    for label, cols in (("side.", slice(p_head, None)), ("other", slice(0, p_head))):
        block = g[:, cols].T @ g[:, cols] / len(g)
        expected[label] = 0.03 * np.trace(block @ block) / np.trace(block)
    assert update.report.damping_by_group == pytest.approx(expected, rel=1e-8)
    assert expected["side."] > 100 * expected["other"]  # one shared λ would be set by the side block
    assert update.report.damping == pytest.approx(expected["other"])

    b = sum(
        np.concatenate(
            [
                t.reshape(-1).numpy()
                for t in torch.autograd.grad(
                    two_scale_loss(model, collate([e.sample])), [model.head.weight, model.side.weight]
                )
            ]
        )
        for e in edits
    ) / len(samples)
    d = np.concatenate([np.full(p_head, expected["other"]), np.full(10, expected["side."])])
    dense = np.linalg.solve(g.T @ g / len(g) + np.diag(d), b)
    got = np.concatenate(
        [update.delta["head.weight"].reshape(-1).numpy(), update.delta["side.weight"].reshape(-1).numpy()]
    )
    np.testing.assert_allclose(got, dense, rtol=1e-8, atol=1e-14)


def test_damping_groups_are_refused_outside_the_fisher_method():
    with pytest.raises(ValueError, match="damping_groups"):
        SolverConfig(method="cg", damping_groups=("projector.",))


def test_batched_per_instance_gradients_equal_one_pass_per_instance():
    from rec_eraser.bench.toy import ToyTask, make_toy_task
    from rec_eraser.core.curvature import deterministic_mode

    task = make_toy_task(n_train=12, rank=2, train_steps=20)  # LoRA-style: every trainable parameter in an nn.Linear
    space = ParameterSpace(task.model)
    with deterministic_mode(task.model):
        single = EmpiricalFisher.from_samples(
            task.model, task.loss_fn, space, task.train, ToyTask.collate, batch_size=1
        )
        seen: list[int] = []
        batched = EmpiricalFisher.from_samples(
            task.model, task.loss_fn, space, task.train, ToyTask.collate, seen.append, batch_size=5
        )
    assert single.passes == 12 and batched.passes == 3 and seen == [5, 10, 12]
    torch.testing.assert_close(
        batched.gradients, single.gradients, rtol=1e-5, atol=1e-6 * float(single.gradients.abs().max())
    )


def test_a_loss_with_a_term_outside_the_layers_falls_back_to_one_pass_per_instance(logistic):
    # BCE + (MU/2)||w||^2: the regulariser's gradient reaches w directly, not through the layer's output
    model, rows = logistic.model(), [0, 1, 2, 3, 4]
    space = ParameterSpace(model)
    fisher = EmpiricalFisher.from_samples(
        model, logistic_loss, space, [logistic.samples[i] for i in rows], collate, batch_size=4
    )
    assert fisher.passes == 1 + len(rows)  # the batched pass that found the gap, then one per instance
    np.testing.assert_allclose(fisher.gradients.numpy(), closed_form_gradients(logistic, rows), rtol=1e-10)


def closed_form_losses(problem, rows: list[int]) -> np.ndarray:
    """Per-instance BCE + (MU/2)‖w‖²."""
    x, y, w = problem.x[rows], problem.y[rows], problem.w
    s = 1.0 / (1.0 + np.exp(-(x @ w)))
    return -(y * np.log(s) + (1 - y) * np.log(1 - s)) + 0.5 * MU * float(w @ w)


def test_a_prebuilt_fisher_gives_the_same_update_and_its_rows_losses(logistic):
    model = logistic.model()
    engine = fisher_engine(model, logistic.samples, sample_size=30, seed=1)
    edits = [Removal(logistic.samples[i]) for i in (5, 9)]
    fisher = engine.empirical_fisher(edits)
    index = {id(s): i for i, s in enumerate(logistic.samples)}
    rows = [index[id(s)] for s in fisher.samples]
    assert rows[:2] == [5, 9] and len(rows) == 30
    # the losses of the rows' own passes: what a caller reads instead of a second forward
    np.testing.assert_allclose(fisher.losses.numpy(), closed_form_losses(logistic, rows), rtol=1e-10)
    np.testing.assert_allclose(fisher.gradients.numpy(), closed_form_gradients(logistic, rows), rtol=1e-10)
    given, fresh = engine.compute(edits, fisher=fisher), engine.compute(edits)
    np.testing.assert_allclose(given.delta["weight"].numpy(), fresh.delta["weight"].numpy(), rtol=1e-12)
    assert (
        given.report.seconds >= fisher.seconds > 0
        and given.report.gradient_passes == fresh.report.gradient_passes == 30
    )
    with pytest.raises(ValueError, match="not built by empirical_fisher"):
        engine.compute([Removal(logistic.samples[6])], fisher=fisher)


def test_b_falls_back_to_its_own_passes_when_the_rows_miss_an_edited_instance(logistic):
    # a sample size of n takes the training set as given: an edit of an equal copy is not among its rows
    n = len(logistic.samples)
    engine = fisher_engine(logistic.model(), logistic.samples, 1e-3, sample_size=n, batch_size=4)
    copy = (logistic.samples[3][0].clone(), logistic.samples[3][1].clone())
    update = engine.compute([Removal(copy)])
    assert update.report.gradient_passes == n + 1  # the rows, then one batch for b
    b = closed_form_gradients(logistic, [3])[0] / n
    g = closed_form_gradients(logistic, list(range(n)))
    expected = np.linalg.solve(g.T @ g / n + 1e-3 * np.eye(g.shape[1]), b)
    np.testing.assert_allclose(update.delta["weight"].reshape(-1).numpy(), expected, rtol=1e-7, atol=1e-12)


def test_a_fisher_too_large_for_memory_is_refused_before_its_first_gradient(logistic, monkeypatch):
    """The estimate is what the build holds (the float64 rows twice, then the Gram matrix), and a
    build that would exceed the memory available ends with one error before any gradient."""
    from rec_eraser.core import fisher as fisher_module
    from rec_eraser.errors import exit_code_of

    model = logistic.model()
    space = ParameterSpace(model)
    samples = logistic.samples[:12]
    built = EmpiricalFisher.from_samples(model, logistic_loss, space, samples, collate)
    m, p = built.gradients.shape
    assert fisher_module.fisher_memory_bytes(m, p) == 2 * built.gradients.numel() * 8 + built.gram.numel() * 8
    assert fisher_module.check_fisher_memory(m, p, available=10**12) == fisher_module.fisher_memory_bytes(m, p)

    monkeypatch.setattr(fisher_module, "available_memory_bytes", lambda: fisher_module.fisher_memory_bytes(m, p) - 1)
    computed = []
    with pytest.raises(
        fisher_module.InsufficientMemoryError, match=f"{m} instances x {p:,} parameters needs about"
    ) as err:
        EmpiricalFisher.from_samples(model, logistic_loss, space, samples, collate, on_gradient=computed.append)
    assert computed == [] and exit_code_of(err.value) == 4


def test_a_containers_memory_limit_bounds_what_is_available(tmp_path, monkeypatch):
    from rec_eraser.core import fisher as fisher_module

    limit, usage = tmp_path / "memory.max", tmp_path / "memory.current"
    monkeypatch.setattr(fisher_module, "_CGROUP_FILES", ((str(limit), str(usage)),))
    assert fisher_module._cgroup_headroom() is None  # no cgroup files: no container limit
    limit.write_text("1073741824\n")
    usage.write_text("268435456\n")
    assert fisher_module._cgroup_headroom() == 3 * 2**28
    assert fisher_module.available_memory_bytes() <= 3 * 2**28  # the smaller of the container's and the system's
    limit.write_text("max\n")
    assert fisher_module._cgroup_headroom() is None


def test_known_rows_are_taken_instead_of_computed_and_the_update_is_unchanged(logistic):
    from rec_eraser.core import KnownRow

    model = logistic.model()
    engine = fisher_engine(model, logistic.samples, sample_size=20, seed=3)
    edits = [Removal(logistic.samples[i]) for i in (5, 9)]
    fresh = engine.empirical_fisher(edits)
    exact = {id(z): KnownRow(fresh.gradients[i], float(fresh.losses[i])) for i, z in enumerate(fresh.samples)}
    asked: list[int] = []

    def known(z):
        asked.append(id(z))
        return exact[id(z)]

    cached = engine.empirical_fisher(edits, known=known)
    # the edited instances are always computed: the cache is never asked for them
    assert set(asked) == {id(z) for z in fresh.samples[2:]} and cached.reused == 18 and cached.passes == 2
    torch.testing.assert_close(cached.gradients, fresh.gradients, rtol=0, atol=0)
    torch.testing.assert_close(cached.losses, fresh.losses, rtol=0, atol=0)
    with_cache, without = engine.compute(edits, fisher=cached), engine.compute(edits, fisher=fresh)
    np.testing.assert_allclose(with_cache.delta["weight"].numpy(), without.delta["weight"].numpy(), rtol=1e-12)
    assert with_cache.report.reused_rows == 18 and without.report.reused_rows == 0
    assert with_cache.report.gradient_passes == 2 and with_cache.report.floor_rows == 2
    # the floor is priced at the computed rows' own seconds, not spread over the reused ones
    assert with_cache.report.floor_seconds == pytest.approx(2 * cached.seconds / 2)
    # a known row without its loss leaves the Fisher without losses (the caller then measures them)
    lossless = engine.empirical_fisher(edits, known=lambda z: KnownRow(exact[id(z)].gradient))
    assert lossless.losses is None and lossless.reused == 18


def test_a_keyed_curvature_draw_is_stable_when_other_instances_leave_the_training_set(logistic):
    config = SolverConfig(method="fisher", sample_size=10, seed=0)
    names = {id(z): f"z{i}" for i, z in enumerate(logistic.samples)}

    def draw(samples, edited):
        engine = InfluenceEngine(logistic.model(), logistic_loss, samples, collate, solver=config)
        engine.sample_key = lambda z: names[id(z)]
        return [names[id(z)] for z in engine.curvature_samples([Removal(samples[i]) for i in edited])]

    whole = draw(logistic.samples, [0])
    assert whole[0] == "z0" and len(whole) == 10 and len(set(whole)) == 10
    # remove an undrawn instance: the same draw; remove a drawn one: it alone is replaced
    undrawn = next(i for i in range(1, 40) if f"z{i}" not in whole)
    fewer = [z for i, z in enumerate(logistic.samples) if i != undrawn]
    assert draw(fewer, [0]) == whole
    drawn = int(whole[3][1:])
    without = draw([z for i, z in enumerate(logistic.samples) if i != drawn], [0])
    assert len(set(without) & set(whole)) == 9 and f"z{drawn}" not in without
    # another seed draws another sample
    config = SolverConfig(method="fisher", sample_size=10, seed=1)
    assert draw(logistic.samples, [0]) != whole


def test_a_large_request_grows_the_sample_to_keep_its_retained_floor(logistic):
    def sample(edited: int, floor: float) -> list:
        engine = fisher_engine(logistic.model(), logistic.samples, sample_size=10, seed=0, retained_floor=floor)
        return engine.curvature_samples([Removal(z) for z in logistic.samples[:edited]])

    edited_ids = lambda chosen, k: {id(z) for z in chosen} & {id(z) for z in logistic.samples[:k]}  # noqa: E731
    # a small request: sample_size in all, whatever the floor
    assert len(sample(3, 0.5)) == 10 and len(edited_ids(sample(3, 0.5), 3)) == 3
    # 8 edited of a 10-row budget: the floor keeps 5 others (13 rows); without it, 2 others
    grown = sample(8, 0.5)
    assert len(grown) == 13 and len(edited_ids(grown, 8)) == 8
    assert len(sample(8, 0.0)) == 10
    # a request larger than the budget still keeps the floor's share of others
    assert len(sample(12, 0.5)) == 12 + 5 and len(sample(12, 0.0)) == 12
    with pytest.raises(SolverConfigError, match="retained_floor"):
        SolverConfig(method="fisher", retained_floor=1.5)


def test_a_weighted_fishers_solve_traces_and_product_equal_the_dense_ones():
    """F = Gᵀ W G: the Woodbury solve with W⁻¹ in place of mI, and its traces, against dense algebra."""
    gen = torch.Generator().manual_seed(4)
    g = torch.randn(9, 40, generator=gen, dtype=torch.float64)
    b, v = torch.randn(40, generator=gen, dtype=torch.float64), torch.randn(40, generator=gen, dtype=torch.float64)
    base = EmpiricalFisher(g)
    weighted = base.inclusion_weighted(certain=[0, 3], population=50)
    w = weighted.weights
    assert float(w.sum()) == pytest.approx(1.0) and w[0] == w[3] == pytest.approx(1 / 50)
    assert w[1] == pytest.approx((50 - 2) / (7 * 50))  # the 7 drawn rows share the other 48 instances
    dense = g.T @ torch.diag(w) @ g
    for damping in (0.3, torch.rand(40, generator=gen, dtype=torch.float64) + 0.05):
        expected = torch.linalg.solve(dense + torch.diag(torch.as_tensor(damping, dtype=torch.float64).expand(40)), b)
        np.testing.assert_allclose(weighted.solve(b, damping).numpy(), expected.numpy(), rtol=1e-10)
    np.testing.assert_allclose(weighted.matvec(v).numpy(), (dense @ v).numpy(), rtol=1e-10)
    eig = torch.linalg.eigvalsh(dense)
    assert weighted.trace() == pytest.approx(float(eig.sum()), rel=1e-10)
    assert weighted.trace_of_square() == pytest.approx(float((eig**2).sum()), rel=1e-10)
    mask = torch.zeros(40, dtype=torch.bool)
    mask[:15] = True
    block_eig = torch.linalg.eigvalsh(dense[:15, :15])
    assert weighted.block_traces(mask) == pytest.approx((float(block_eig.sum()), float((block_eig**2).sum())))
    # the unweighted Fisher is untouched (the weighted one shares its rows, no copy)
    assert base.row_weights is None and base.weights.tolist() == pytest.approx([1 / 9] * 9)
    assert weighted.gradients is base.gradients and weighted.gram is base.gram


def test_inclusion_weights_of_a_sample_that_is_the_whole_set_are_the_uniform_ones():
    g = torch.randn(6, 10, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    whole = EmpiricalFisher(g).inclusion_weighted(certain=[1], population=6)
    assert whole.weights.tolist() == pytest.approx([1 / 6] * 6)
    assert EmpiricalFisher(g).inclusion_weighted(range(6), 6).weights.tolist() == pytest.approx([1 / 6] * 6)
    # a group treated as drawn for certain: its rows weigh 1/n beside the request's own
    regrouped = EmpiricalFisher(g).inclusion_weighted([0], 30).as_if_certain([4, 5])
    assert regrouped.certain == (0, 4, 5) and regrouped.weights[[0, 4, 5]].tolist() == pytest.approx([1 / 30] * 3)
    assert EmpiricalFisher(g).as_if_certain([4]).row_weights is None  # a uniform Fisher stays uniform
    assert EmpiricalFisher(g).weighting == "uniform" and regrouped.weighting == "inclusion"
    with pytest.raises(ValueError, match="cannot come from"):
        EmpiricalFisher(g).inclusion_weighted([0], 3)
    with pytest.raises(ValueError, match="index the Fisher"):
        EmpiricalFisher(g).inclusion_weighted([6], 30)


def test_row_weights_are_a_fisher_only_setting_and_validated():
    assert SolverConfig(method="fisher", row_weights="inclusion").row_weights == "inclusion"
    with pytest.raises(SolverConfigError, match="unknown row_weights"):
        SolverConfig(method="fisher", row_weights="bogus")
    with pytest.raises(SolverConfigError, match="row_weights"):
        SolverConfig(method="cg", row_weights="inclusion")


def test_engine_inclusion_weighted_update_matches_a_dense_weighted_solve(logistic):
    """Removals and a relabelled instance: the edited rows (old and new forms) weigh 1/N, N the
    training set plus the new form; the drawn rows share the rest."""
    n, sample_size, removed, flipped = len(logistic.samples), 40, [3, 17, 512], 40
    engine = fisher_engine(
        logistic.model(), logistic.samples, 1e-3, sample_size=sample_size, seed=0, row_weights="inclusion"
    )
    new = (logistic.samples[flipped][0], 1.0 - logistic.samples[flipped][1])
    edits = [Removal(logistic.samples[i]) for i in removed] + [Replacement(logistic.samples[flipped], new)]
    update = engine.compute(edits)
    index = {id(s): i for i, s in enumerate(logistic.samples)}
    rows = [index[id(s)] for s in engine.curvature_samples(edits)]
    flipped_new = problem_copy_with_label(logistic, flipped, 1.0 - logistic.y[flipped])
    g = np.vstack([closed_form_gradients(logistic, rows), closed_form_gradients(flipped_new, [flipped])])
    population, certain = n + 1, len(removed) + 2
    drawn_weight = (population - certain) / ((sample_size + 1 - certain) * population)
    w = np.array([1 / population if r in removed + [flipped] else drawn_weight for r in rows] + [1 / population])
    assert w.sum() == pytest.approx(1.0)
    b = (
        closed_form_gradients(logistic, removed).sum(0)
        + closed_form_gradients(logistic, [flipped])[0]
        - closed_form_gradients(flipped_new, [flipped])[0]
    ) / n
    expected = np.linalg.solve(g.T @ (w[:, None] * g) + 1e-3 * np.eye(g.shape[1]), b)
    np.testing.assert_allclose(update.delta["weight"].reshape(-1).numpy(), expected, rtol=1e-8, atol=1e-12)
