"""Calibrating the damping of one request: the search, and its target against exact retraining."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rec_eraser.core import Removal
from rec_eraser.core.calibration import CalibrationConfig, calibrate_scale, move_factor, quantile_moves
from rec_eraser.workflows.calibration import memorisation_gap

from .conftest import fisher_engine, fit_logistic


def test_search_finds_the_factor_of_a_closed_form_progress():
    # progress(f) = 2 / (1 + f / 7): exactly 1 at f = 7, falling in f
    result = calibrate_scale(lambda f: 2 / (1 + f / 7), CalibrationConfig(tol=1e-3, trials=40))
    assert result.reached and abs(result.progress - 1) <= 1e-3
    assert result.factor == pytest.approx(7, rel=5e-3)
    assert result.trials[0][0] == 1.0  # starts at the rule's damping


def test_search_stops_at_the_end_of_its_range_and_says_it_missed():
    short = calibrate_scale(lambda f: 0.5 - 0.01 * math.log10(f), CalibrationConfig(min_factor=1e-2, trials=10))
    assert not short.reached and short.factor == pytest.approx(1e-2)
    broken = calibrate_scale(lambda f: math.nan, CalibrationConfig(max_factor=1e2, trials=10))
    assert not broken.reached and broken.factor == pytest.approx(1e2)  # non-finite counts as overshooting


def test_calibration_settings_are_validated():
    with pytest.raises(ValueError, match="min_factor"):
        CalibrationConfig(min_factor=2.0)
    with pytest.raises(ValueError, match="expand"):
        CalibrationConfig(expand=1.0)


@pytest.fixture(scope="module")
def memorising_logistic():
    """Logistic regression with p/n large enough that training points are visibly memorised."""
    rng = np.random.default_rng(3)
    n, n_out, p = 240, 4000, 60
    w_true = rng.normal(size=p) / np.sqrt(p) * 2
    x = rng.normal(size=(n + n_out, p))
    y = (rng.random(n + n_out) < 1 / (1 + np.exp(-x @ w_true))).astype(np.float64)
    w = fit_logistic(x[:n], y[:n])
    samples = [(torch.from_numpy(x[i]), torch.tensor(y[i])) for i in range(n + n_out)]
    removed = list(rng.choice(n, 40, replace=False))
    keep = np.setdiff1d(np.arange(n), removed)
    retrained = fit_logistic(x[keep], y[keep])
    return x, y, w, samples, removed, retrained, n


def _bce(w: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    z = x @ w
    return np.logaddexp(0.0, z) - y * z


def _model(w: np.ndarray) -> torch.nn.Linear:
    m = torch.nn.Linear(len(w), 1, bias=False, dtype=torch.float64)
    with torch.no_grad():
        m.weight.copy_(torch.from_numpy(w)[None])
    return m


def _forget_loss_of(model: torch.nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    return float(_bce(model.weight.detach().numpy().ravel(), x, y).mean())


def _engine(model, samples, n, **settings):
    """The ``fisher`` engine on the first ``n`` samples in micro-batches of 40; ``settings``: more of its SolverConfig."""
    return fisher_engine(model, samples[:n], batch_size=40, **settings)


def test_calibration_with_retrainings_figure_picks_what_a_brute_force_scan_against_retraining_picks(
    memorising_logistic,
):
    x, y, w, samples, removed, retrained, n = memorising_logistic
    xf, yf = x[removed], y[removed]
    start, target = float(_bce(w, xf, yf).mean()), float(_bce(retrained, xf, yf).mean())
    assert target - start > 0.05  # the removed points were memorised: retraining raises their loss
    edits = [Removal(samples[i]) for i in removed]

    factors = 10.0 ** np.linspace(-3, 3, 121)
    scan = []
    for f in factors:
        model = _model(w)
        _engine(model, samples, n).compute(edits, damping_factor=float(f)).apply(model)
        scan.append(abs(_forget_loss_of(model, xf, yf) - target))
    brute_force = factors[int(np.argmin(scan))]

    model = _model(w)
    update = _engine(model, samples, n).compute(
        edits,
        objective=lambda m: (_forget_loss_of(m, xf, yf) - start) / (target - start),
        calibration=CalibrationConfig(tol=1e-3, trials=40),
    )
    chosen = update.report.calibration["factor"]
    assert update.report.calibration["reached"]
    assert abs(math.log10(chosen) - math.log10(brute_force)) <= 0.05, (chosen, brute_force)
    assert np.allclose(model.weight.detach().numpy().ravel(), w)  # the search leaves the model as it was
    update.apply(model)
    assert _forget_loss_of(model, xf, yf) == pytest.approx(target, abs=1e-3)


def test_memorisation_gap_target_lands_near_retraining_without_retraining(memorising_logistic):
    """The workflows' target: removed points' loss now plus (never-trained − trained loss), measured on other points."""
    x, y, w, samples, removed, retrained, n = memorising_logistic
    xf, yf = x[removed], y[removed]
    retained = np.setdiff1d(np.arange(n), removed)
    gap = memorisation_gap(_bce(w, x[retained], y[retained]), _bce(w, x[n:], y[n:]))
    start, retrain_loss = float(_bce(w, xf, yf).mean()), float(_bce(retrained, xf, yf).mean())
    assert gap.gap > 2 * gap.standard_error
    edits = [Removal(samples[i]) for i in removed]
    model = _model(w)
    update = _engine(model, samples, n).compute(
        edits, objective=lambda m: (_forget_loss_of(m, xf, yf) - start) / gap.gap
    )
    update.apply(model)
    calibrated = _forget_loss_of(model, xf, yf)
    rule = _model(w)
    _engine(rule, samples, n).compute(edits).apply(rule)
    # within a third of Retrain's move, and nearer Retrain than the fixed rule's step
    assert abs(calibrated - retrain_loss) <= (retrain_loss - start) / 3, (start, calibrated, retrain_loss)
    assert abs(calibrated - retrain_loss) < abs(_forget_loss_of(rule, xf, yf) - retrain_loss)


def test_influence_spectrum_equals_the_explicit_damped_solve():
    from rec_eraser.core.fisher import EmpiricalFisher

    gen = torch.Generator().manual_seed(0)
    rows = torch.randn(12, 30, generator=gen, dtype=torch.float64)
    fisher = EmpiricalFisher(rows)
    a, b = torch.randn(12, generator=gen, dtype=torch.float64), torch.randn(12, generator=gen, dtype=torch.float64)
    for damping in (0.3, torch.rand(30, generator=gen, dtype=torch.float64) + 0.05):  # scalar, and per parameter
        spectrum = fisher.influence_spectrum(damping)
        for factor in (1e-2, 1.0, 7.0):
            explicit = float((rows.T @ a) @ fisher.solve(rows.T @ b, damping * factor))
            assert spectrum.bilinear(a, b, factor) == pytest.approx(explicit, rel=1e-9)
        # a group's self-influence falls as the damping grows
        e = torch.zeros(12, dtype=torch.float64)
        e[[1, 4]] = 1.0
        values = [spectrum.bilinear(e, e, f) for f in (0.01, 0.1, 1.0, 10.0)]
        assert all(x > y > 0 for x, y in zip(values, values[1:]))


def test_reference_factor_hits_its_target_or_says_which_end_it_stopped_at():
    from rec_eraser.core.calibration import reference_factor
    from rec_eraser.core.fisher import EmpiricalFisher

    rows = torch.randn(10, 25, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    spectrum = EmpiricalFisher(rows).influence_spectrum(0.5)
    groups, n = [[0], [1, 2], [3]], 100
    reachable = reference_factor(spectrum, groups, n, 0.01)
    assert reachable.reached and reachable.predicted == pytest.approx(0.01, rel=1e-3)
    e = torch.zeros(10, dtype=torch.float64)
    direct = 0.0
    for group in groups:  # the definition, group by group
        e.zero_()
        e[group] = 1.0
        direct += spectrum.bilinear(e, e, reachable.factor)
    assert direct / (n * 4) == pytest.approx(reachable.predicted, rel=1e-9)
    too_far = reference_factor(spectrum, groups, n, 1e6, CalibrationConfig(min_factor=1e-2))
    assert not too_far.reached and too_far.factor == pytest.approx(1e-2)
    with pytest.raises(ValueError, match="positive target"):
        reference_factor(spectrum, groups, n, 0.0)


def _retrain_move_and_updates(memorising, forget: np.ndarray) -> dict[str, float]:
    """Retrain's move of the forget set's mean loss, and where the two calibrations without retraining put it."""
    x, y, w, samples, _, _, n = memorising
    keep = np.setdiff1d(np.arange(n), forget)
    xf, yf = x[forget], y[forget]
    start = float(_bce(w, xf, yf).mean())
    retrain = float(_bce(fit_logistic(x[keep], y[keep]), xf, yf).mean()) - start
    gap = memorisation_gap(_bce(w, x[keep], y[keep]), _bce(w, x[n:], y[n:])).gap
    edits = [Removal(samples[i]) for i in forget]

    edited_model = _model(w)  # the edited instances' measured move equals the gap
    _engine(edited_model, samples, n).compute(
        edits, objective=lambda m: (_forget_loss_of(m, xf, yf) - start) / gap
    ).apply(edited_model)

    reference_model = _model(w)  # the retained rows' predicted leave-one-out move averages the gap
    engine = _engine(reference_model, samples, n)
    fisher = engine.empirical_fisher(edits)
    removed = {id(samples[i]) for i in forget}
    rows = [row for row, z in enumerate(fisher.samples) if id(z) not in removed]  # each point is its own "user"
    chosen, _, whole, fisher = engine.match_reference(
        fisher, rows, rows, {row: 1 for row in rows}, gap, CalibrationConfig(min_factor=1e-6, max_factor=1e6)
    )
    assert whole and chosen.groups == len(rows)
    engine.compute(edits, damping_factor=chosen.factor, fisher=fisher).apply(reference_model)

    quantile_model = _model(w)  # the forget rows' predicted move equals their quantile targets' mean
    engine = _engine(quantile_model, samples, n)
    fisher = engine.empirical_fisher(edits)
    wanted = float(quantile_moves(_bce(w, xf, yf), _bce(w, x[keep], y[keep]), _bce(w, x[n:], y[n:])).mean())
    search = CalibrationConfig(min_factor=1e-6, max_factor=1e6)
    # as the workflow does: targets that ask for no move get the shortest step of the range
    factor = engine.match_edits(fisher, edits, wanted, search).factor if wanted > 0 else search.max_factor
    engine.compute(edits, damping_factor=factor, fisher=fisher).apply(quantile_model)
    return {
        "retrain": retrain,
        "gap": gap,
        "edited": _forget_loss_of(edited_model, xf, yf) - start,
        "reference": _forget_loss_of(reference_model, xf, yf) - start,
        "quantile_target": wanted,
        "quantile": _forget_loss_of(quantile_model, xf, yf) - start,
    }


def test_reference_calibration_follows_retraining_across_forget_sets_the_gap_treats_alike(memorising_logistic):
    """Exact leave-k-out retraining of L2-regularised logistic regression: Retrain moves the
    hardest (most memorised) points' loss far more than the gap, the easiest' hardly at all;
    the damping matched on retained points' predicted leave-one-out moves follows both, where
    moving every forget set by the gap cannot."""
    x, y, w, *_ = memorising_logistic
    n = memorising_logistic[-1]
    order = np.argsort(_bce(w, x[:n], y[:n]))
    hard, easy = (
        _retrain_move_and_updates(memorising_logistic, order[-20:]),
        _retrain_move_and_updates(memorising_logistic, order[:20]),
    )
    assert hard["retrain"] > 2 * hard["gap"] and easy["retrain"] < easy["gap"] / 10  # the gap is wrong for both
    for case in (hard, easy):
        assert abs(case["reference"] - case["retrain"]) < abs(case["edited"] - case["retrain"]) / 2, case
    assert abs(hard["reference"] - hard["retrain"]) <= 0.15 * hard["retrain"], hard
    assert abs(easy["reference"] - easy["retrain"]) <= 0.01, easy
    # the quantile targets (each forget point's loss carried to its rank among never-trained points)
    # order the sets as Retrain does, where the gap asks the same of both: far more than the gap
    # for the hard set (more than Retrain's move: the hardest trained points are not the hardest
    # never-trained ones; the longest step of the range then stops it near Retrain), nothing for
    # the easy one
    assert hard["quantile_target"] > 2 * hard["gap"] and easy["quantile_target"] < easy["gap"] / 10
    assert (
        hard["quantile_target"] > 1.5 * hard["retrain"]
        and abs(hard["quantile"] - hard["retrain"]) <= 0.1 * hard["retrain"]
    )
    assert abs(easy["quantile"] - easy["retrain"]) <= 0.01, easy
    # a random forget set: both land within half of Retrain's move (first order undershoots a 40-point removal)
    rand = _retrain_move_and_updates(memorising_logistic, np.asarray(memorising_logistic[4]))
    assert abs(rand["reference"] - rand["retrain"]) <= rand["retrain"] / 2, rand


def test_whole_groups_keep_the_users_all_of_whose_instances_are_rows():
    from rec_eraser.core.calibration import whole_groups

    rows, users = [0, 1, 2, 5, 7], ["a", "a", "b", "c", "c"]
    assert whole_groups(rows, users, {"a": 2, "b": 3, "c": 2}) == (
        [[0, 1], [5, 7]],
        True,
    )  # b has 3 instances, 1 sampled
    assert whole_groups(rows, users, {"a": 4, "b": 3, "c": 3}) == (
        [[0, 1], [2], [5, 7]],
        False,
    )  # none whole: all, flagged


def test_reference_factor_stops_at_the_upper_end_when_even_the_shortest_step_moves_too_much():
    from rec_eraser.core.calibration import reference_factor
    from rec_eraser.core.fisher import EmpiricalFisher

    spectrum = EmpiricalFisher(
        torch.randn(8, 20, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    ).influence_spectrum(0.5)
    tiny = reference_factor(spectrum, [[0], [1]], 10, 1e-12, CalibrationConfig(max_factor=10.0))
    assert not tiny.reached and tiny.factor == pytest.approx(10.0) and tiny.predicted > 1e-12


def test_reference_prediction_is_bounded_by_the_sample_fraction():
    """As the damping goes to 0, G(F + fD)⁻¹Gᵀ tends to m times a projection, so a group of the
    Fisher's own rows removed is predicted to move by at most m/n per row: a gap above that can
    never be matched (the LLaRA tiny-model test meets this limit). With rows in general
    position (m ≤ p) the projection is the identity on them and the limit is m/n exactly; with
    rows of rank below m it stays under."""
    from rec_eraser.core.calibration import reference_factor
    from rec_eraser.core.fisher import EmpiricalFisher

    generator = torch.Generator().manual_seed(3)
    groups, n, near_zero = [[0, 1], [2], [3, 4, 5]], 40, CalibrationConfig(min_factor=1e-12)
    full_rank = EmpiricalFisher(torch.randn(12, 30, generator=generator, dtype=torch.float64)).influence_spectrum(0.5)
    limit = reference_factor(full_rank, groups, n, 10.0, near_zero)
    assert not limit.reached and limit.predicted == pytest.approx(12 / n, rel=1e-6)
    low_rank_rows = torch.randn(12, 4, generator=generator, dtype=torch.float64) @ torch.randn(
        4, 30, generator=generator, dtype=torch.float64
    )
    low_rank = EmpiricalFisher(low_rank_rows).influence_spectrum(0.5)
    assert reference_factor(low_rank, groups, n, 10.0, near_zero).predicted < 12 / n
    assert reference_factor(full_rank, groups, n, 0.9 * 12 / n, near_zero).reached


def test_quantile_moves_carry_each_loss_to_its_rank_in_the_other_sample():
    rng = np.random.default_rng(0)
    trained = rng.random(4000)
    # equal samples: every loss of the sample stays where it is
    assert np.abs(quantile_moves(trained, trained, trained)).max() < 1e-12
    # a sample shifted by c moves every loss inside the range by c; one scaled by 2 doubles it
    inside = np.array([0.05, 0.3, 0.5, 0.9])
    assert quantile_moves(inside, trained, trained + 0.2) == pytest.approx(np.full(4, 0.2), abs=1e-9)
    assert quantile_moves(inside, trained, 2 * trained) == pytest.approx(inside, abs=0.03)
    # exact on small samples: 0.2, the 2nd of 4 trained losses, maps to the 2nd untrained one;
    # 0.25, halfway between the 2nd and 3rd, to halfway between theirs
    small = quantile_moves(np.array([0.2, 0.25]), [0.1, 0.2, 0.3, 0.4], [1.0, 2.0, 3.0, 4.0])
    assert small == pytest.approx([2.0 - 0.2, 2.5 - 0.25])
    # outside the trained range: held at its extreme level, not at the other sample's extreme
    far = quantile_moves(np.array([-5.0, 5.0]), [0.1, 0.2, 0.3, 0.4], [1.0, 2.0, 3.0, 4.0, 100.0])
    assert far == pytest.approx(
        [
            np.quantile([1, 2, 3, 4, 100], 0.125, method="hazen") + 5,
            np.quantile([1, 2, 3, 4, 100], 0.875, method="hazen") - 5,
        ]
    )
    # tied losses share the mean of their positions: 0.2 twice among 4 sits at level 1/2
    tied = quantile_moves(np.array([0.2]), [0.1, 0.2, 0.2, 0.3], [1.0, 2.0, 3.0, 4.0])
    assert tied == pytest.approx([2.5 - 0.2])
    with pytest.raises(ValueError, match="at least 2"):
        quantile_moves(inside, [0.1], [0.2, 0.3])


def test_move_factor_on_removed_and_corrected_rows_is_the_solves_own_predicted_move(memorising_logistic):
    """A removal and a correction together: +1 on the old rows, −1 on the corrected one; at the
    chosen factor the per-row predicted move times the rows is the update's n·bᵀΔθ."""
    from rec_eraser.core import Replacement
    from rec_eraser.core.calibration import edit_coefficients

    x, y, w, samples, _, _, n = memorising_logistic
    flipped = (samples[1][0], 1.0 - samples[1][1])
    edits = [Removal(samples[0]), Replacement(samples[1], flipped)]
    engine = _engine(_model(w), samples, n)
    fisher = engine.empirical_fisher(edits)
    coefficients = edit_coefficients(fisher, edits)
    assert sorted(coefficients[coefficients != 0].tolist()) == [-1.0, 1.0, 1.0]
    damping, _, _ = engine.fisher_damping(fisher)
    spectrum = fisher.influence_spectrum(damping)
    reachable = spectrum.bilinear(coefficients, coefficients, 1.0) / n / 3  # the move at the starting damping
    chosen = move_factor(spectrum, coefficients[:, None], n, 3, reachable / 2, CalibrationConfig())
    assert chosen.reached and chosen.factor > 1 and chosen.predicted == pytest.approx(reachable / 2, rel=1e-3)
    update = engine.compute(edits, damping_factor=chosen.factor, fisher=fisher)
    assert update.report.predicted_change == pytest.approx(chosen.predicted * 3, rel=1e-6)
    with pytest.raises(ValueError, match="positive target"):
        move_factor(spectrum, coefficients[:, None], n, 3, 0.0)


def test_a_weighted_spectrum_equals_the_explicit_weighted_solve_and_lifts_the_sample_cap():
    """Inclusion weights: the spectrum's influences are the weighted Fisher's own, and a row drawn
    for certain (weight 1/n) is predicted to move by up to 1 when removed, not m/n."""
    from rec_eraser.core.calibration import reference_factor
    from rec_eraser.core.fisher import EmpiricalFisher

    generator = torch.Generator().manual_seed(6)
    rows, n = torch.randn(12, 30, generator=generator, dtype=torch.float64), 40
    fisher = EmpiricalFisher(rows).inclusion_weighted(certain=[0, 1], population=n)
    a, b = (
        torch.randn(12, generator=generator, dtype=torch.float64),
        torch.randn(12, generator=generator, dtype=torch.float64),
    )
    spectrum = fisher.influence_spectrum(0.5)
    for factor in (1e-2, 1.0, 7.0):
        explicit = float((rows.T @ a) @ fisher.solve(rows.T @ b, 0.5 * factor))
        assert spectrum.bilinear(a, b, factor) == pytest.approx(explicit, rel=1e-9)
    near_zero = CalibrationConfig(min_factor=1e-12)
    certain = reference_factor(spectrum, [[0], [1]], n, 10.0, near_zero)
    assert not certain.reached and certain.predicted == pytest.approx(1.0, rel=1e-6)  # each certain row's own move
    drawn = reference_factor(spectrum, [[5]], n, 10.0, near_zero)  # a drawn row stands for (n − 2)/10 instances
    assert drawn.predicted == pytest.approx(10 / (n - 2), rel=1e-6)
    # a group predicted in the Fisher its own removal would build: drawn for certain, it too can reach 1
    as_request = reference_factor(
        spectrum, [[5], [6, 7]], n, 10.0, near_zero, lambda group: fisher.as_if_certain(group).influence_spectrum(0.5)
    )
    assert as_request.predicted == pytest.approx(1.0, rel=1e-6) and as_request.groups == 2 and as_request.rows == 3
    # and at any factor it is the definition, group by group
    reachable = reference_factor(
        spectrum, [[5], [6, 7]], n, 0.3, None, lambda group: fisher.as_if_certain(group).influence_spectrum(0.5)
    )
    direct = 0.0
    for group in ([5], [6, 7]):
        e = torch.zeros(12, dtype=torch.float64)
        e[group] = 1.0
        direct += fisher.as_if_certain(group).influence_spectrum(0.5).bilinear(e, e, reachable.factor)
    assert reachable.reached and direct / (n * 3) == pytest.approx(0.3, rel=1e-3)
    # a re-weighting of the same rows at the same damping may reuse G D⁻¹ Gᵀ (per-parameter damping too)
    from rec_eraser.core.fisher import InfluenceSpectrum

    d = torch.rand(30, generator=generator, dtype=torch.float64) + 0.05
    reused = InfluenceSpectrum(fisher.as_if_certain([5]), d, fisher.influence_spectrum(d).reduced)
    fresh = fisher.as_if_certain([5]).influence_spectrum(d)
    assert reused.bilinear(a, b, 0.7) == pytest.approx(fresh.bilinear(a, b, 0.7), rel=1e-12)


def _reference_move_on_a_sample(memorising, forget: np.ndarray, sample_size: int | None, weights: str) -> float:
    """The forget set's mean loss move of the reference-calibrated update from a ``sample_size``-row Fisher."""
    x, y, w, samples, _, _, n = memorising
    keep = np.setdiff1d(np.arange(n), forget)
    gap = memorisation_gap(_bce(w, x[keep], y[keep]), _bce(w, x[n:], y[n:])).gap
    edits = [Removal(samples[i]) for i in forget]
    model = _model(w)
    engine = _engine(model, samples, n, sample_size=sample_size, row_weights=weights)
    fisher = engine.empirical_fisher(edits)
    removed = {id(samples[i]) for i in forget}
    rows = [row for row, z in enumerate(fisher.samples) if id(z) not in removed]
    chosen, _, _, fisher = engine.match_reference(
        fisher, rows, rows, {row: 1 for row in rows}, gap, CalibrationConfig(min_factor=1e-6, max_factor=1e6)
    )
    engine.compute(edits, damping_factor=chosen.factor, fisher=fisher).apply(model)
    start = float(_bce(w, x[forget], y[forget]).mean())
    return _forget_loss_of(model, x[forget], y[forget]) - start


def test_inclusion_weights_keep_a_small_samples_update_near_the_whole_sets_and_retraining(memorising_logistic):
    """Exact retraining of logistic regression, the 20 most memorised points removed (n = 240,
    p = 60): with the whole training set as the Fisher the reference-calibrated update lands near
    Retrain; from a 50-row sample (20 edited + 30 drawn, fewer rows than parameters) uniform
    weights cap each row's predicted move at m/n and land far short, inclusion weights stay near.
    On the 20 easiest points both stay near Retrain's near-zero move."""
    x, y, w, *_ = memorising_logistic
    n = memorising_logistic[-1]
    order = np.argsort(_bce(w, x[:n], y[:n]))
    hard = order[-20:]
    keep = np.setdiff1d(np.arange(n), hard)
    retrain = float(_bce(fit_logistic(x[keep], y[keep]), x[hard], y[hard]).mean() - _bce(w, x[hard], y[hard]).mean())
    whole = _reference_move_on_a_sample(memorising_logistic, hard, None, "uniform")
    assert whole == pytest.approx(_reference_move_on_a_sample(memorising_logistic, hard, None, "inclusion"))
    uniform = _reference_move_on_a_sample(memorising_logistic, hard, 50, "uniform")
    inclusion = _reference_move_on_a_sample(memorising_logistic, hard, 50, "inclusion")
    assert abs(whole - retrain) <= 0.1 * retrain
    assert uniform < 0.4 * retrain  # the cap: far short
    assert abs(inclusion - retrain) <= 0.2 * retrain and abs(inclusion - whole) < abs(uniform - whole) / 4
    easy = order[:20]
    for weights in ("uniform", "inclusion"):
        assert abs(_reference_move_on_a_sample(memorising_logistic, easy, 50, weights)) <= 0.01


def test_auto_row_weights_switch_to_inclusion_only_where_the_uniform_match_hits_the_sample_cap(memorising_logistic):
    """``row_weights = "auto"``: a target the uniform 50-row Fisher can reach is matched on it, as
    "uniform" does; one above its m/n cap (50/240) is matched on the inclusion-weighted Fisher,
    as "inclusion" does, and that Fisher is the one handed back to solve with."""
    x, y, w, samples, _, _, n = memorising_logistic
    forget = np.argsort(_bce(w, x[:n], y[:n]))[-20:]
    edits = [Removal(samples[i]) for i in forget]
    removed = {id(samples[i]) for i in forget}

    def match(weights: str, target: float):
        engine = _engine(_model(w), samples, n, sample_size=50, row_weights=weights)
        fisher = engine.empirical_fisher(edits)
        rows = [row for row, z in enumerate(fisher.samples) if id(z) not in removed]
        return engine.match_reference(fisher, rows, rows, {row: 1 for row in rows}, target)

    reachable, above_cap = 0.1, 0.5
    assert 50 / n < above_cap
    uniform, auto = match("uniform", reachable), match("auto", reachable)
    assert uniform[0].reached and auto[0].to_dict() == uniform[0].to_dict() and auto[3].row_weights is None
    capped, auto, inclusion = match("uniform", above_cap), match("auto", above_cap), match("inclusion", above_cap)
    assert not capped[0].reached and capped[0].predicted < above_cap
    assert inclusion[0].reached and auto[0].to_dict() == pytest.approx(inclusion[0].to_dict())
    assert auto[3].row_weights is not None and torch.equal(auto[3].weights, inclusion[3].weights)


def test_auto_row_weights_stay_uniform_where_the_sample_is_the_whole_set(memorising_logistic):
    """With every training instance a row, inclusion weights are the uniform ones: a target no
    damping reaches is left as the uniform match says (no second match, no inclusion record)."""
    x, y, w, samples, _, _, n = memorising_logistic
    forget = np.argsort(_bce(w, x[:n], y[:n]))[-20:]
    edits = [Removal(samples[i]) for i in forget]
    removed = {id(samples[i]) for i in forget}
    engine = _engine(_model(w), samples, n, row_weights="auto")
    fisher = engine.empirical_fisher(edits)
    rows = [row for row, z in enumerate(fisher.samples) if id(z) not in removed]
    chosen, _, _, matched = engine.match_reference(fisher, rows, rows, {row: 1 for row in rows}, 5.0)
    assert not chosen.reached and chosen.predicted < 5.0 and matched is fisher and matched.row_weights is None
