"""``rec-eraser bench calibration``: which calibration target lands where Retrain lands, forget set by forget set?

The medium benchmarks judge one forget set per run (one to four hours of CPU each on SmolLM2);
how far Retrain moves a forget set's loss varies from set to set, and a damping rule that is
right on average can be wrong on every single set. This study asks the question many times
on one adapter: the synthetic TALLRec-shaped task of ``rec-eraser bench damping`` (short
prompts, a hidden item rule, 25% label noise, so that the adapter memorises its noisy
instances) is trained once on the embedded base model, then for each of several seeded forget
sets (a few users each) Retrain runs without them and three influence updates of the original
adapter (the default ``fisher`` solver on a sub-sample of the training set) are compared
with it:

- ``rule``: the fixed damping rule λ = 0.03 · tr(F²)/tr(F);
- ``edited``: the forget set's measured loss moves by the memorisation gap (the workflows'
  default target when this study ran; ``reference`` is the default since);
- ``reference``: the damping at which the Fisher's retained rows are predicted to move by the
  gap on average (``rec_eraser.core.calibration.reference_factor``);
- ``quantile``: each forgotten instance's loss carried to its rank among the held-out users'
  losses (``rec_eraser.core.calibration.quantile_moves``, from the trained instances' losses
  outside the forget set), and the damping at which the forget rows' predicted move equals
  those targets' mean (``move_factor``); added after the first run of this study.

The gap is the mean loss of every instance of held-out users drawn exactly like the trained
ones (the same 25% noise; the workflows' preferred source, there sampled 128 at a time) minus
that of every training instance; nothing is tuned on Retrain. Reported per set: Retrain's move of the forget set's mean loss, each update's move,
and the score correlation with that set's Retrain on clean test prompts; overall: each
update's mean absolute error in the move and how its moves correlate with Retrain's across
sets. A second Retrain seed on the first set gives the noise floor.
"""

from __future__ import annotations

import copy
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rec_eraser.bench.damping import build_instances, collate, evaluate, train_adapter, yes_no_ids
from rec_eraser.core import InfluenceEngine, Removal, SolverConfig
from rec_eraser.core.calibration import CalibrationConfig, quantile_moves
from rec_eraser.evaluation.metrics import auc
from rec_eraser.models import load_causal_lm
from rec_eraser.models.lm_loss import causal_lm_loss

UPDATES = ("rule", "edited", "reference", "quantile")


def run_target_study(
    base_model: Path | None = None,
    users: int = 32,
    per_user: int = 2,
    held_out_users: int = 16,
    forget_users: int = 2,
    sets: int = 8,
    sample_size: int = 48,
    epochs: int = 5,
    lr: float = 2e-3,
    noise: float = 0.25,
    seed: int = 0,
    on_progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """The study (module docstring); returns the JSON-ready result."""
    if not 0 < forget_users < users:
        raise ValueError(f"forget_users must be between 1 and users - 1 ({users - 1}), got {forget_users}")
    if sets < 2:
        raise ValueError(f"the study needs at least 2 forget sets to compare across sets, got {sets}")
    say = on_progress or (lambda _msg: None)
    t_start = time.perf_counter()
    say("loading the base model")
    base, tokenizer = load_causal_lm(base_model)
    rng = np.random.default_rng(seed)
    train = build_instances(tokenizer, range(users), per_user, rng, noise=noise)
    held_out = build_instances(tokenizer, range(users, users + held_out_users), per_user, rng, noise=noise)
    test = build_instances(tokenizer, range(users + held_out_users, users + held_out_users + 32), 2, rng, noise=0.0)
    yes, no = yes_no_ids(tokenizer)
    test_labels = np.array([z["label"] for z in test])

    say(f"training the original adapter on {len(train)} instances")
    t0 = time.perf_counter()
    original = train_adapter(base, train, seed, epochs, lr)
    train_seconds = time.perf_counter() - t0
    trained_loss, _ = evaluate(original, train, yes, no)
    held_out_loss, _ = evaluate(original, held_out, yes, no)
    _, original_scores = evaluate(original, test, yes, no)
    gap = float(held_out_loss.mean() - trained_loss.mean())
    gap_se = float(
        np.sqrt(held_out_loss.var(ddof=1) / len(held_out_loss) + trained_loss.var(ddof=1) / len(trained_loss))
    )
    if not gap > 0:
        raise ValueError(f"the original adapter memorised nothing (gap {gap:.3g}): raise epochs or lr")
    noisy = {i for i, z in enumerate(train) if z["noisy"]}

    draws = np.random.default_rng([seed, 1])
    results = []
    for k in range(sets):
        forgotten_users = set(draws.choice(users, forget_users, replace=False).tolist())
        forget_idx = [i for i, z in enumerate(train) if z["user"] in forgotten_users]
        kept = [z for z in train if z["user"] not in forgotten_users]
        forget = [train[i] for i in forget_idx]
        start = float(evaluate(original, forget, yes, no)[0].mean())
        say(f"forget set {k + 1}/{sets}: Retrain without users {sorted(forgotten_users)}")
        t0 = time.perf_counter()
        retrained = train_adapter(base, kept, seed, epochs, lr)
        retrain_seconds = time.perf_counter() - t0
        retrain_loss = float(evaluate(retrained, forget, yes, no)[0].mean())
        _, retrain_scores = evaluate(retrained, test, yes, no)
        row: dict[str, Any] = {
            "users": sorted(int(u) for u in forgotten_users),
            "instances": len(forget),
            "noisy_instances": len(noisy.intersection(forget_idx)),
            "original_loss": start,
            "retrain": {
                "loss": retrain_loss,
                "move": retrain_loss - start,
                "seconds": retrain_seconds,
                "auc": auc(retrain_scores, test_labels),
            },
        }
        if k == 0:
            say("the first set's Retrain with a second seed (the noise floor)")
            second = train_adapter(base, kept, seed + 1, epochs, lr)
            second_loss = float(evaluate(second, forget, yes, no)[0].mean())
            _, second_scores = evaluate(second, test, yes, no)
            row["retrain_seed1"] = {
                "loss": second_loss,
                "move": second_loss - start,
                "score_correlation_with_retrain": _correlation(second_scores, retrain_scores),
            }
            del second
        del retrained
        say(f"forget set {k + 1}/{sets}: the influence updates")
        references = (np.delete(trained_loss, forget_idx), held_out_loss)
        for name, (model, seconds, note) in _updates(
            original, train, forget, start, gap, references, sample_size, seed, yes, no
        ).items():
            loss = float(evaluate(model, forget, yes, no)[0].mean())
            _, scores = evaluate(model, test, yes, no)
            row[name] = {
                "loss": loss,
                "move": loss - start,
                "seconds": seconds,
                "auc": auc(scores, test_labels),
                "score_correlation_with_retrain": _correlation(scores, retrain_scores),
                **note,
            }
        row["original_score_correlation_with_retrain"] = _correlation(original_scores, retrain_scores)
        results.append(row)
    return {
        "settings": {
            "users": users,
            "per_user": per_user,
            "held_out_users": held_out_users,
            "forget_users": forget_users,
            "sets": sets,
            "sample_size": sample_size,
            "epochs": epochs,
            "lr": lr,
            "noise": noise,
            "seed": seed,
            "base_model": str(base_model) if base_model else "embedded SmolLM2-135M",
        },
        "n_train": len(train),
        "noisy_train_instances": len(noisy),
        "train_seconds": train_seconds,
        "original_auc": auc(original_scores, test_labels),
        "memorisation_gap": {
            "gap": gap,
            "standard_error": gap_se,
            "trained_loss": float(trained_loss.mean()),
            "untrained_loss": float(held_out_loss.mean()),
            "untrained_source": "held-out users",
        },
        "sets": results,
        "summary": summarise(results),
        "seconds": time.perf_counter() - t_start,
    }


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a, b)[0, 1])


def _updates(
    original: torch.nn.Module,
    train: list,
    forget: list,
    start: float,
    gap: float,
    references: tuple[np.ndarray, np.ndarray],
    sample_size: int,
    seed: int,
    yes: int,
    no: int,
) -> dict[str, tuple[torch.nn.Module, float, dict[str, Any]]]:
    """The updates of ``original`` for removing ``forget`` (whose mean loss is ``start``), from one
    empirical Fisher; ``references``: the original's losses on the trained instances outside the
    forget set and on the held-out users' instances."""
    edits = [Removal(z) for z in forget]
    solver = SolverConfig(method="fisher", sample_size=sample_size, batch_size=4, seed=seed)
    out: dict[str, tuple[torch.nn.Module, float, dict[str, Any]]] = {}
    fisher = None
    for name in UPDATES:
        model = copy.deepcopy(original)
        engine = InfluenceEngine(model, causal_lm_loss(), train, collate, curvature="ggn", solver=solver)
        # the same rows serve the three updates (same instances, same seeded sub-sample, the
        # original's parameters); each report counts the Fisher's seconds, as a request would pay them
        fisher = fisher or engine.empirical_fisher(edits)
        note: dict[str, Any] = {}
        if name == "rule":
            update = engine.compute(edits, fisher=fisher)
        elif name == "edited":

            def progress(m: torch.nn.Module) -> float:
                return (float(evaluate(m, forget, yes, no)[0].mean()) - start) / gap

            update = engine.compute(edits, objective=progress, calibration=CalibrationConfig(), fisher=fisher)
            note = {"factor": update.report.calibration["factor"], "trials": len(update.report.calibration["trials"])}
        elif name == "quantile":
            t0 = time.perf_counter()
            forget_loss = evaluate(original, forget, yes, no)[0]
            wanted = float(quantile_moves(forget_loss, *references).mean())
            search = CalibrationConfig()
            # as the workflow does: targets that ask for no move get the shortest step of the range
            chosen = engine.match_edits(fisher, edits, wanted, search) if wanted > 0 else None
            factor = chosen.factor if chosen is not None else search.max_factor
            matching = time.perf_counter() - t0
            update = engine.compute(edits, damping_factor=factor, fisher=fisher)
            note = {
                "factor": factor,
                "target_move": wanted,
                "reached": chosen.reached if chosen is not None else False,
                "matching_seconds": matching,
            }
        else:
            t0 = time.perf_counter()
            forgotten = {id(z) for z in forget}
            rows = [row for row, z in enumerate(fisher.samples) if id(z) not in forgotten]
            chosen, _, whole, matched_fisher = engine.match_reference(
                fisher, rows, [fisher.samples[row]["user"] for row in rows], Counter(z["user"] for z in train), gap
            )
            matching = time.perf_counter() - t0
            update = engine.compute(edits, damping_factor=chosen.factor, fisher=matched_fisher)
            note = {
                "factor": chosen.factor,
                "reached": chosen.reached,
                "reference_rows": chosen.rows,
                "reference_users": chosen.groups,
                "whole_users": whole,
                "row_weights": matched_fisher.weighting,  # auto may switch
                "matching_seconds": matching,
            }
        update.apply(model)
        seconds = update.report.seconds + note.get("matching_seconds", 0.0)
        out[name] = (
            model,
            seconds,
            {"damping": update.report.damping, "predicted_move": update.report.predicted_change / len(forget), **note},
        )
    return out


def summarise(sets: list[dict[str, Any]]) -> dict[str, Any]:
    """Per update: mean |move − Retrain's move|, its ratio to the mean |Retrain move|, the correlation
    of the moves with Retrain's across sets, and the mean score correlation with each set's Retrain."""
    retrain = np.array([s["retrain"]["move"] for s in sets])
    out: dict[str, Any] = {
        "retrain_mean_abs_move": float(np.abs(retrain).mean()),
        "retrain_move_range": [float(retrain.min()), float(retrain.max())],
    }
    if "retrain_seed1" in sets[0]:
        out["retrain_seed_move_difference"] = abs(sets[0]["retrain_seed1"]["move"] - sets[0]["retrain"]["move"])
    names = ("original", *_updates_in(sets))
    moves = {
        name: np.zeros(len(sets)) if name == "original" else np.array([s[name]["move"] for s in sets]) for name in names
    }
    errors = {name: np.abs(moves[name] - retrain) for name in names}
    nearest = np.argmin(np.stack([errors[name] for name in names]), axis=0)
    for k, name in enumerate(names):
        corr = [
            s["original_score_correlation_with_retrain"]
            if name == "original"
            else s[name]["score_correlation_with_retrain"]
            for s in sets
        ]
        out[name] = {
            "mean_abs_error": float(errors[name].mean()),
            "relative_error": float(errors[name].mean() / np.abs(retrain).mean()),
            "sets_nearest": int((nearest == k).sum()),
            "move_correlation_with_retrain": None
            if name == "original" or moves[name].std() == 0 or retrain.std() == 0
            else float(np.corrcoef(moves[name], retrain)[0, 1]),
            "mean_score_correlation_with_retrain": float(np.mean(corr)),
        }
    return out


def _updates_in(sets: list[dict[str, Any]]) -> list[str]:
    """The updates a result holds (a file written before ``quantile`` was added lacks it)."""
    return [name for name in UPDATES if name in sets[0]]


def markdown(result: dict[str, Any]) -> str:
    """The study's tables, from its result file."""
    s, gap = result["settings"], result["memorisation_gap"]
    updates = _updates_in(result["sets"])
    calibrated = [name for name in updates if name != "rule"]
    lines = [
        f"{result['n_train']} training instances ({result['noisy_train_instances']} with a flipped label), "
        f"{s['epochs']} epochs, lr {s['lr']:g}; original test AUC {result['original_auc']:.3f}; memorisation gap "
        f"{gap['gap']:.3g} ± {gap['standard_error']:.2g} ({gap['untrained_source']}); {s['sets']} forget sets of "
        f"{s['forget_users']} users; Fisher sub-sample {s['sample_size']}.",
        "",
        f"| set | instances | noisy | original loss | Retrain move | {' | '.join(updates)} | "
        f"corr. with Retrain: {' / '.join(calibrated)} |",
        "|---|---|---|---|---|" + "---|" * (len(updates) + 1),
    ]
    for i, row in enumerate(result["sets"], 1):
        moves = " | ".join(f"{row[name]['move']:.3f}" for name in updates)
        correlations = " / ".join(f"{row[name]['score_correlation_with_retrain']:.3f}" for name in calibrated)
        lines.append(
            f"| {i} | {row['instances']} | {row['noisy_instances']} | {row['original_loss']:.3f} | {row['retrain']['move']:.3f} | "
            f"{moves} | {correlations} |"
        )
    summary = result["summary"]
    lines += [
        "",
        f"Retrain's moves range over [{summary['retrain_move_range'][0]:.3f}, {summary['retrain_move_range'][1]:.3f}]"
        + (
            f"; its second seed moved the first set by {summary['retrain_seed_move_difference']:.3f} more or less than the first."
            if "retrain_seed_move_difference" in summary
            else "."
        ),
        "",
        "| update | mean abs. error of the move | relative to Retrain's mean move | sets where nearest | move correlation with Retrain across sets | mean score correlation with Retrain |",
        "|---|---|---|---|---|---|",
    ]
    for name in ("original", *updates):
        r = summary[name]
        corr = "–" if r["move_correlation_with_retrain"] is None else f"{r['move_correlation_with_retrain']:.3f}"
        lines.append(
            f"| {'original (no update)' if name == 'original' else name} | {r['mean_abs_error']:.3f} | {r['relative_error']:.2f} | "
            f"{r['sets_nearest']} of {len(result['sets'])} | {corr} | {r['mean_score_correlation_with_retrain']:.3f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # python -m rec_eraser.bench.targets RESULT.json: print the tables
    import json
    import sys

    sys.stdout.write(markdown(json.loads(Path(sys.argv[1]).read_text())))
