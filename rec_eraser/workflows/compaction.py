"""``rec-eraser compact``: retrain exactly what the current version stands for, and make it current.

An influence update is approximate; a compaction makes the events in effect exact. It trains a
fresh adapter with v0000's recipe on the training set the current version stands for (v0000's
instances with every edit of the lineage applied), compares it in function space with that
approximate version (utility and agreement on unseen test prompts, the losses of the removed
instances and of the corrected forms, membership AUC: :mod:`rec_eraser.workflows.comparison`),
and writes it as a new version of kind ``compacted`` (exact, so ``rec-eraser status`` counts
nothing below it as pending), with the comparison in its manifest.

The training runs without the run's lock, so requests keep landing meanwhile; the lock is taken
only to write. Events that were applied during the training (versions newer than the one it
trained for) are then re-applied, approximately, on top of the compacted version, under the same
lock, so that no deletion is ever out of effect; they stay pending until the next compaction. If
the lineage changed in any other way meanwhile (a rollback), nothing is written and the command
says so. An interrupted training resumes from its checkpoint on the next run of the command;
until a version is written, the current version stays current.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from rec_eraser.errors import RecEraserError
from rec_eraser.tasks.prepare import load_instances, load_titles
from rec_eraser.tasks.registry import task_of
from rec_eraser.training.recipe import Recipe
from rec_eraser.training.train import checkpoint_path, fit_loaded, load_version, version_item_encoder
from rec_eraser.training.versions import save_version
from rec_eraser.workflows.comparison import function_space_figures
from rec_eraser.workflows.erasure import approximate_versions, owed_by_compaction, owed_encoder_choice
from rec_eraser.workflows.events import parse_event
from rec_eraser.workflows.item_encoder import retrained_encoder
from rec_eraser.workflows.progress import Say, training_progress
from rec_eraser.workflows.registry import EDITED, Registry, now
from rec_eraser.workflows.unlearn import apply_locked

logger = logging.getLogger(__name__)

#: test prompts the comparison scores (as the benchmark's medium tier)
DEFAULT_EVAL_PROMPTS = 200


class CompactionError(RecEraserError):
    """The lineage changed during the compaction in a way it cannot carry over (a rollback)."""


def compact_run(
    run_dir: Path | str,
    eval_prompts: int = DEFAULT_EVAL_PROMPTS,
    say: Say | None = None,
    wait: float = 0.0,
) -> dict[str, Any]:
    """Retrain on the current version's training set, compare, and write the exact version.

    Returns ``{"version", "compacted", "reapplied", "comparison", "seconds", ...}``; ``version``
    is None (with a ``reason``) when the current version has no approximate event to compact."""
    say = say or (lambda _m: None)
    run_dir = Path(run_dir)
    registry = Registry(run_dir)
    if owed_by_compaction(registry):
        return _finish_interrupted(registry, say, wait)
    base = registry.current()
    approximate, _ = approximate_versions(registry, base)
    if not any(record.get("events") for record in approximate.values()):
        return {"version": None, "compacted": base, "reason": f"{base} holds no approximately applied event"}
    lineage = registry.lineage(base)
    root = lineage[-1]
    recipe = Recipe.from_dict(root["recipe"])
    training_set = registry.training_set(base)
    # an item encoder retrained for a deletion stays in use: the exact adapter reads it too
    encoder_entry = registry.manifest(base).get("item_encoder")
    encoder = version_item_encoder(run_dir, registry.record(base)) if encoder_entry else None
    t0 = time.perf_counter()
    say(f"retraining from scratch on the {len(training_set)} instances {base} stands for")
    exact, training = fit_loaded(
        run_dir,
        recipe,
        training_set,
        progress=training_progress("compacting", say),
        checkpoint=checkpoint_path(run_dir, f"compact-{base}"),
        encoder=encoder,
    )
    train_seconds = time.perf_counter() - t0

    # the comparison: the approximate version against the exact one, on unseen prompts and the edited instances
    task = task_of(root["task"])
    titles = load_titles(run_dir) if task.uses_titles else {}
    unseen = load_instances(run_dir, "test")[:eval_prompts]
    edited = registry.edited(base)
    originals = {z.id: z for z in registry.training_set(root["version"])}
    forgotten = [originals[i] for i, new in edited.items() if new is None and i in originals]
    corrected = [new for new in edited.values() if new is not None]
    say(f"comparing {base} with the retrained adapter on {len(unseen)} test prompts")
    approx_scores, approx_figures = function_space_figures(
        load_version(run_dir, base), task, unseen, titles, forgotten, corrected
    )
    exact_scores, exact_figures = function_space_figures(exact, task, unseen, titles, forgotten, corrected)
    comparison = {
        "approximate": {"version": base, **approx_figures},
        "exact": exact_figures,
        "agreement": task.agreement(approx_scores, exact_scores),
        "agreement_kind": task.agreement_kind,
        "main_metric": task.main_metric,
        "eval_prompts": len(unseen),
        "forgotten_instances": len(forgotten),
        "corrected_instances": len(corrected),
    }

    with registry.writing(wait):
        current = registry.current()
        later = []  # manifests of the versions written during the training, oldest first
        for record in registry.lineage(current):
            if record["version"] == base:
                break
            later.append(record)
        else:
            raise CompactionError(
                f"{base}, which this compaction retrained, is no longer on the current version's lineage "
                f"({current}: a rollback?); nothing was written: run `rec-eraser compact` again"
            )
        later.reverse()
        if any(record["kind"] != "unlearned" for record in later):
            raise CompactionError(
                f"the run changed during the compaction by more than new requests ({', '.join(r['version'] for r in later)}); "
                "nothing was written: run `rec-eraser compact` again"
            )
        name = registry.next_version()
        record = {
            **training,  # the base model's path and fingerprints, recipe, training ids and cost, as `train` records them
            "version": name,
            "parent": base,
            "kind": "compacted",
            "created": now(),
            "events": [],
            "compacted": base,
            # re-applied on top right after this version is written (an audit trail if that is interrupted)
            "landed_during": [e["id"] for r in later for e in r.get("events", [])],
            "metrics": {"compaction": comparison},
        }
        # a request that landed meanwhile retrained the item encoder: re-applied, it retrains it again (else
        # the compacted version's encoder, which still holds what that request erased, would stay in use)
        reapply_encoder = "retrain" if any(retrained_encoder(r) for r in later) else "keep"
        if reapply_encoder == "retrain":
            record["reapply_item_encoder"] = reapply_encoder
        if encoder_entry:
            record["item_encoder"] = {"version": encoder_entry["version"], "retrained": False}
        say(f"writing {name} (exact: retrained on what {base} stands for)")
        save_version(exact.model, run_dir / name, record, files={EDITED: Registry.edited_jsonl(edited)})
        del exact  # one model in memory while the re-apply loads its own
        checkpoint_path(run_dir, f"compact-{base}").unlink(missing_ok=True)
        registry.append_ledger({"time": record["created"], "action": "compact", "version": name, "parent": base})
        reapplied = []
        events = [(None, parse_event(_as_request(e))) for r in later for e in r.get("events", [])]
        if events:
            say(f"re-applying the {len(events)} events that landed during the training")
            try:
                result = apply_locked(registry, events, None, None, say, strict=True, item_encoder=reapply_encoder)
            except BaseException as exc:
                # the compacted version lacks these events: never leave it current without them
                restored = registry.rollback_locked(current)
                raise CompactionError(
                    f"re-applying the events that landed during the compaction failed ({exc}); {restored['version']} "
                    f"restores {current}, which holds them, as the current version ({name}, the exact retraining of "
                    f"{base}, is kept but not current): run `rec-eraser compact` again"
                ) from exc
            reapplied = [{"version": result.version, "events": [e.id for _, e in events]}]
    return {
        "version": name,
        "compacted": base,
        "current": registry.current(),
        "reapplied": reapplied,
        "comparison": comparison,
        "train_seconds": train_seconds,
        "seconds": time.perf_counter() - t0,
    }


def _finish_interrupted(registry: Registry, say: Say, wait: float) -> dict[str, Any]:
    """The re-apply an interrupted compaction owes (:func:`owed_by_compaction`), without retraining."""
    t0 = time.perf_counter()
    with registry.writing(wait):
        owed = owed_by_compaction(registry)  # again, under the lock: another writer may have paid it
        compacted = registry.current()
        if not owed:
            return {"version": None, "compacted": compacted, "reason": "another job re-applied the owed events"}
        say(f"re-applying the {len(owed)} events that an interrupted compaction left out of effect")
        result = apply_locked(
            registry,
            [(None, parse_event(e)) for e in owed],
            None,
            None,
            say,
            strict=True,
            item_encoder=owed_encoder_choice(registry),
        )
    return {
        "version": compacted,
        "compacted": registry.manifest(compacted)["compacted"],
        "current": registry.current(),
        "reapplied": [{"version": result.version, "events": [e["id"] for e in owed]}],
        "finished_interrupted": True,
        "comparison": registry.manifest(compacted)["metrics"]["compaction"],
        "train_seconds": 0.0,
        "seconds": time.perf_counter() - t0,
    }


def _as_request(applied: dict[str, Any]) -> dict[str, Any]:
    """An event as a version recorded it, less the counts of what it edited: the request again."""
    return {k: v for k, v in applied.items() if k not in ("removed", "modified")}
