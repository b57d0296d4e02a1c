"""``rec-eraser demo``: the whole story on the embedded defaults (ml-100k, SmolLM2-135M, TALLRec).

Prepare the data, train an adapter (the shipped ``demo-tallrec`` recipe: it beats the task's
simple baseline), forget a handful of users and drop some noisy interactions in one request,
retrain from scratch on the edited data as the oracle, and compare the three adapters on the
same test prompts: the task's utility (AUC) beside its simple baseline, agreement with the
retrained oracle, the mean loss on the forgotten instances beside that of never-seen (test)
instances, a loss-based membership-inference AUC (forgotten vs never-seen; 0.5 =
indistinguishable), and the seconds each adapter cost (training, the update, retraining).

Every step is cached in the run folder (the prepared data, ``v0000``, the unlearned version
— the demo's events are idempotent — and the ``retrained-vNNNN`` oracle), so a second run
only evaluates; the folder is an ordinary run that every other command works on. Each
progress message, training steps included, is also appended with its time to
``RUN/demo.log``, so a run whose output is not a terminal can be followed with ``tail -f``.

``python -m rec_eraser.workflows.demo RESULT.json`` renders a result (``rec-eraser demo
--json``) as the Markdown table and sentences that ``docs/demo.md`` quotes.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from rec_eraser.errors import RecEraserError
from rec_eraser.tasks.prepare import load_instances, load_titles, prepare
from rec_eraser.tasks.registry import task_of
from rec_eraser.training.recipe import Recipe, load_recipe
from rec_eraser.training.train import fit_adapter, load_version, train_run
from rec_eraser.training.versions import save_version, version_manifest
from rec_eraser.workflows.comparison import function_space_figures
from rec_eraser.workflows.events import Event
from rec_eraser.workflows.progress import Say, logged, training_progress
from rec_eraser.workflows.registry import DEFAULT_ROOT, Registry
from rec_eraser.workflows.unlearn import DEFAULT_SOLVER, apply_events, training_memorisation
from rec_eraser.workflows.update import update_seconds

logger = logging.getLogger(__name__)

PROGRESS_LOG = "demo.log"


@dataclass(frozen=True)
class DemoSize:
    """How big the demo is: task, shipped recipe, users kept, events, evaluation prompts, solver sub-sample."""

    task: str
    recipe: str
    max_users: int | None
    forget_users: int
    noisy_interactions: int
    eval_prompts: int
    sample_size: int


# demo-tallrec: 768 instances, one epoch, about 10 minutes a training on 2 CPU cores; AUC 0.761
# against the like-rate baseline's 0.737 on all 943 test prompts (docs/training.md). The demo
# trains twice (the original and the oracle): about 25 minutes in all.
FULL = DemoSize(
    task="tallrec",
    recipe="demo-tallrec",
    max_users=None,
    forget_users=5,
    noisy_interactions=5,
    eval_prompts=200,
    sample_size=64,
)
QUICK = DemoSize(
    task="tallrec",
    recipe="demo-tallrec-quick",
    max_users=60,
    forget_users=3,
    noisy_interactions=3,
    eval_prompts=24,
    sample_size=24,
)


def default_out(quick: bool) -> Path:
    return DEFAULT_ROOT / ("demo-tallrec-quick" if quick else "demo-tallrec")


def choose_events(training_set: list, size: DemoSize, seed: int = 0) -> list[Event]:
    """Seeded demo events: delete ``forget_users`` users; for as many other users, one history item is noise."""
    rng = np.random.default_rng(seed)
    users = sorted({z.user for z in training_set}, key=lambda u: (len(u), u))
    chosen = [users[i] for i in rng.permutation(len(users))]
    forget, noisy_users = chosen[: size.forget_users], chosen[size.forget_users :]
    events = [Event(f"demo:delete_user:{u}", "delete_user", u) for u in forget]
    for user in noisy_users:
        if len(events) == size.forget_users + size.noisy_interactions:
            break
        with_history = [z for z in training_set if z.user == user and z.history_items]
        if not with_history:
            continue
        z = with_history[int(rng.integers(len(with_history)))]
        item = z.history_items[int(rng.integers(len(z.history_items)))]
        events.append(Event(f"demo:remove_interactions:{user}:{item}", "remove_interactions", user, items=(item,)))
    return events


def run_demo(
    out: Path | None = None, quick: bool = False, base_model: Path | None = None, say: Say | None = None
) -> dict[str, Any]:
    """Run (or resume) the demo in ``out``; returns the JSON-ready comparison.

    ``base_model`` replaces the embedded SmolLM2 (any local Hugging Face causal LM folder).
    """
    size = QUICK if quick else FULL
    run = Path(out) if out is not None else default_out(quick)
    say = logged(run / PROGRESS_LOG, say, ready=lambda: (run / "manifest.json").is_file())
    recipe = load_recipe(size.recipe)
    if base_model is not None:
        recipe = replace(recipe, base_model=str(base_model))
    t_start = time.perf_counter()
    if not (run / "manifest.json").is_file():
        say(f"preparing ml-100k ({size.task} task) into {run}")
        prepare("ml-100k", size.task, run, max_users=size.max_users)
    registry = Registry(run)
    if not registry.versions():
        say(
            f"training v0000 ({recipe.max_train} instances, {recipe.epochs} epoch(s)) and measuring its memorisation gap"
        )
        train_run(
            run, recipe, progress=training_progress("training v0000", say), measure=training_memorisation(run, recipe)
        )
    else:
        trained = Recipe.from_dict(registry.manifest("v0000")["recipe"])
        if trained != recipe:
            logger.warning("%s/v0000 was trained with another recipe than %s; reusing it as it is", run, size.recipe)
        recipe = trained
    original_seconds = registry.manifest("v0000")["training"]["seconds"]

    base_set = registry.training_set("v0000")
    events = choose_events(base_set, size)
    say(f"forgetting {size.forget_users} users and {len(events) - size.forget_users} noisy interactions in one request")
    result = apply_events(
        run, [(None, e) for e in events], solver=replace(DEFAULT_SOLVER, sample_size=size.sample_size), say=say
    )
    if result.problems:
        raise RecEraserError(f"demo events were refused: {result.problems[0]}")
    applied = registry.applied_events(registry.current())
    unlearned_version = applied[events[0].id]
    record = registry.manifest(unlearned_version)
    update_cost = update_seconds(record) if record.get("solver") else 0.0

    forgotten_users = [e.user for e in events if e.type == "delete_user"]
    forgotten = [z for z in base_set if z.user in forgotten_users]
    unseen = load_instances(run, "test")[: size.eval_prompts]

    oracle = f"retrained-{unlearned_version}"
    if not (run / oracle / "manifest.json").is_file():
        edited_set = registry.training_set(unlearned_version)
        say(f"retraining from scratch on the {len(edited_set)} edited instances (the oracle)")
        model, oracle_record = fit_adapter(run, recipe, edited_set, progress=training_progress("retraining", say))
        save_version(
            model,
            run / oracle,
            {
                "version": oracle,
                "parent": None,
                "kind": "retrained",
                "oracle_for": unlearned_version,
                **oracle_record,
                "events": [],
            },
        )
    retrain_seconds = version_manifest(run / oracle)["training"]["seconds"]

    task = task_of(size.task)
    titles = load_titles(run) if task.uses_titles else {}
    rows: dict[str, Any] = {}
    scores: dict[str, np.ndarray] = {}
    for name, version, seconds in (
        ("original", "v0000", original_seconds),
        ("unlearned", unlearned_version, update_cost),
        ("retrained", oracle, retrain_seconds),
    ):
        say(f"evaluating {version} on {len(unseen)} test prompts and the {len(forgotten)} forgotten instances")
        scores[name], figures = function_space_figures(load_version(run, version), task, unseen, titles, forgotten)
        figures.pop("corrected_loss")  # the demo forgets users; it corrects nothing
        rows[name] = {"version": version, "seconds": seconds, "metrics": figures}
    for name in rows:
        rows[name]["metrics"]["agreement_with_retrained"] = task.agreement(scores[name], scores["retrained"])
    say(f"done in {time.perf_counter() - t_start:.0f} s; the log is {run / PROGRESS_LOG}")
    return {
        "run": str(run),
        "quick": quick,
        "task": size.task,
        "recipe": size.recipe,
        "train_instances": len(base_set),
        "main_metric": task.main_metric,
        "agreement_kind": task.agreement_kind,
        "eval_prompts": len(unseen),
        "baseline": task.simple_baseline(base_set, unseen),
        **rows,
        "forgotten_users": forgotten_users,
        "forgotten_instances": len(forgotten),
        "noisy_interactions": [{"user": e.user, "item": e.items[0]} for e in events if e.type == "remove_interactions"],
        "edits": record.get("edits"),
        "solver": record.get("solver"),
        "calibration": (record.get("metrics") or {}).get("calibration"),
        "update_to_retrain_seconds": update_cost / retrain_seconds if retrain_seconds else None,
        "seconds": time.perf_counter() - t_start,
    }


ROWS = (
    ("original", "original (v0000)"),
    ("unlearned", "unlearned (rec-eraser's update)"),
    ("retrained", "retrained from scratch (oracle)"),
)


def _fmt(value: Any) -> str:
    return "–" if value is None else (f"{value:.3f}" if isinstance(value, float) else str(value))


def table_rows(result: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The comparison as a header and rows of text (the CLI prints them, :func:`render_markdown` writes Markdown)."""
    main = result["main_metric"]
    header = [
        "adapter",
        main,
        f"agreement with retrained ({result['agreement_kind'].replace('_', ' ')})",
        "loss on forgotten",
        "loss on never-seen (test)",
        "membership AUC",
        "seconds",
    ]
    rows = []
    for name, label in ROWS:
        m = result[name]["metrics"]
        rows.append(
            [
                label,
                _fmt(m[main]),
                _fmt(m["agreement_with_retrained"]),
                _fmt(m["forgotten_loss"]),
                _fmt(m["unseen_loss"]),
                _fmt(m["membership_auc"]),
                f"{result[name]['seconds']:.0f}",
            ]
        )
    return header, rows


def summary_lines(result: dict[str, Any]) -> list[str]:
    """What the table shows, in words, computed from the result (never typed in)."""
    main, base = result["main_metric"], result["baseline"]
    o, u, r = (result[name]["metrics"] for name in ("original", "unlearned", "retrained"))
    beats = "beats" if o[main] > base["value"] else "does NOT beat"
    lines = [
        f"Utility: the original adapter {beats} the {base['name']} baseline ({main} {o[main]:.3f} vs {base['value']:.3f}); after "
        f"the update {u[main]:.3f}, after retraining {r[main]:.3f}.",
        f"Agreement: the update's test scores agree with the retrained oracle's at {u['agreement_with_retrained']:.3f} "
        f"(the original's: {o['agreement_with_retrained']:.3f}).",
        f"Forgetting: retraining moved the loss on the {result['forgotten_instances']} forgotten instances {o['forgotten_loss']:.3f} -> "
        f"{r['forgotten_loss']:.3f}; the update moved it to {u['forgotten_loss']:.3f} (never-seen test instances: "
        f"{r['unseen_loss']:.3f}). Membership AUC {o['membership_auc']:.3f} -> {u['membership_auc']:.3f} (retrained "
        f"{r['membership_auc']:.3f}; 0.5 = indistinguishable from never-seen).",
    ]
    ratio = result["update_to_retrain_seconds"]
    if ratio is not None:
        lines.append(
            f"Cost: the update took {result['unlearned']['seconds']:.0f} s, {ratio:.2f} of retraining's "
            f"{result['retrained']['seconds']:.0f} s."
        )
    return lines


def render_markdown(result: dict[str, Any]) -> str:
    header, rows = table_rows(result)
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(out) + "\n\n" + "\n".join(f"- {line}" for line in summary_lines(result)) + "\n"


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m rec_eraser.workflows.demo RESULT.json")
    sys.stdout.write(render_markdown(json.loads(Path(sys.argv[1]).read_text(encoding="utf-8"))))
