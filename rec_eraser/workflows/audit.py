"""One user's data through a run's history: ``rec-eraser audit RUN --user ID``.

The answer a data-protection officer files: which training instances were built from the
user's data (an instance is built from one user's history, so these are the instances of that
user), in which versions they were present, the events that removed or corrected them and how
each was applied (method, damping, residual, calibration), whether a training from scratch
covers the request yet, and a membership test on the current version: the loss of the user's
former instances against instances the adapter never trained on, as an AUC (0.5: the model
cannot tell them apart) and a one-sided permutation p-value (small: the former instances still
look trained on). A user has few instances, so the test has little power: a large p-value says
that no trace was found, not that none is there.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from rec_eraser.errors import RecEraserError
from rec_eraser.evaluation.unlearning import membership_inference_auc
from rec_eraser.tasks.instance import Instance
from rec_eraser.tasks.prepare import load_instances
from rec_eraser.training.recipe import Recipe
from rec_eraser.training.scoring import instance_losses
from rec_eraser.training.train import ENCODER_DIR, encoder_holder, held_out_instances, load_version
from rec_eraser.workflows.calibration import untrained_reference
from rec_eraser.workflows.erasure import approximate_versions
from rec_eraser.workflows.registry import Registry

#: never-trained instances the membership test compares with, and its permutations
REFERENCE_SIZE = 128
PERMUTATIONS = 2000


class AuditError(RecEraserError, ValueError):
    """The user is not in the run's data at all."""


def permutation_p_value(members: np.ndarray, others: np.ndarray, permutations: int, seed: int) -> float:
    """One-sided p-value of the membership AUC: the share of label permutations whose AUC is at
    least the observed one (with the observed counted, so never 0)."""
    observed = membership_inference_auc(members, others)
    pooled = np.concatenate([members, others])
    rng = np.random.default_rng(seed)
    hits = 1
    for _ in range(permutations):
        order = rng.permutation(pooled.size)
        if membership_inference_auc(pooled[order[: members.size]], pooled[order[members.size :]]) >= observed:
            hits += 1
    return hits / (permutations + 1)


def audit_user(
    run_dir: Path | str,
    user: str,
    losses_of: Callable[[Sequence[Instance]], np.ndarray] | None = None,
    reference_size: int = REFERENCE_SIZE,
    permutations: int = PERMUTATIONS,
    seed: int = 0,
) -> dict[str, Any]:
    """The audit of ``user`` (see the module). ``losses_of``: the current version's per-instance
    losses (default: load it); the membership test is skipped when the user has no former instance."""
    registry = Registry(run_dir)
    splits = {name: load_instances(registry.run_dir, name) for name in ("train", "valid", "test")}
    if not any(z.user == user for instances in splits.values() for z in instances):
        raise AuditError(f"user {user!r} has no data in {registry.run_dir} (not in any split of the prepared run)")
    current = registry.current()
    trained = registry.training_set("v0000", splits["train"])
    former = [z for z in trained if z.user == user]
    ids = {z.id for z in former}

    in_effect = registry.applied_event_records(current)
    versions, events = [], []
    for version in registry.versions():
        record = registry.record(version)
        present = [z for z in registry.training_set(version, splits["train"]) if z.id in ids]
        versions.append(
            {
                "version": version,
                "kind": record.kind,
                "created": record.created,
                "present": len(present),
                "corrected": sum(1 for z in present if z not in former),
            }
        )
        solver = record.details.get("solver") or {}
        calibration = (record.details.get("metrics") or {}).get("calibration") or {}
        for event in (e for e in record.events if e.get("user") == user):
            events.append(
                {
                    **event,
                    "version": version,
                    "applied": record.created,
                    "method": solver.get("method"),
                    "damping": solver.get("damping"),
                    "damping_rule": solver.get("damping_rule"),
                    "relative_residual": solver.get("relative_residual"),
                    "memorisation_gap": (calibration.get("memorisation_gap") or {}).get("gap"),
                    "calibration_target": (calibration.get("settings") or {}).get("target"),
                    # False once a rollback to a version before it undid it: the data is back in the model
                    "in_effect": in_effect.get(event["id"], (None,))[0] == version,
                }
            )
    # the user's events in effect, and whether an approximate version applied any of them
    approximate, _ = approximate_versions(registry, current)
    applied_by = [version for version, event in in_effect.values() if event.get("user") == user]
    present_now = next(v["present"] for v in versions if v["version"] == current)

    membership = None
    if former:
        root = registry.record("v0000")
        reference, source = untrained_reference(
            trained,
            splits["train"],
            splits["valid"],
            reference_size,
            seed,
            held_out_instances(registry.run_dir, Recipe.from_dict(root.recipe), splits["train"]),
        )
        reference = [z for z in reference if z.user != user]
        if reference:
            if losses_of is None:
                losses_of = partial(instance_losses, load_version(registry.run_dir, current))
            member_losses, other_losses = losses_of(former), losses_of(reference)
            membership = {
                "version": current,
                "former_instances": len(former),
                "reference_instances": len(reference),
                "reference_source": source,
                "former_loss": float(np.mean(member_losses)),
                "reference_loss": float(np.mean(other_losses)),
                "auc": membership_inference_auc(member_losses, other_losses),
                "p_value": permutation_p_value(member_losses, other_losses, permutations, seed),
                "permutations": permutations,
            }
    return {
        "run": str(registry.run_dir),
        "user": user,
        "current": current,
        "instances": [{"id": z.id, "position": z.position, "target_item": z.target_item} for z in former],
        "present_in_current": present_now,
        "versions": versions,
        "events": events,
        "exact": None if not applied_by else not any(version in approximate for version in applied_by),
        "membership": membership,
        "item_encoder": _encoder_audit(registry, current, user, in_effect),
    }


def _encoder_audit(
    registry: Registry, current: str, user: str, in_effect: dict[str, tuple[str, dict[str, Any]]]
) -> dict[str, Any] | None:
    """LLaRA: whether the item encoder the current version reads was trained without the user's
    events in effect (None for a run without an item encoder). The run's encoder was trained on
    every user's interactions, whether or not their instances were in the adapter's training set."""
    if not (registry.run_dir / ENCODER_DIR).exists():
        return None
    user_events = sorted(i for i, (_, e) in in_effect.items() if e.get("user") == user)
    holder = encoder_holder(registry.manifest(current))
    excluded = (
        sorted(i for i, (_, e) in registry.applied_event_records(holder).items() if e.get("user") == user)
        if holder
        else []
    )
    return {
        "retrained_in": holder,  # None: the run's encoder, trained on every interaction of the dataset
        "events_excluded": excluded,
        "events_in_effect": user_events,
        "covers_events": bool(user_events) and set(user_events) <= set(excluded),
    }


def render_markdown(audit: dict[str, Any]) -> str:
    """The audit as a report a data-protection officer can file."""
    user, n = audit["user"], len(audit["instances"])
    lines = [f"# Audit of user {user} in {audit['run']}", ""]
    if not n:
        lines += [
            f"User {user} has data in the prepared run, but none of it was in the training set of `v0000`: "
            "no adapter version of this run was trained on it.",
            "",
            *_encoder_lines(audit.get("item_encoder")),
        ]
        return "\n".join(lines)
    lines += [
        f"{n} training instance(s) of `v0000` were built from this user's data; the current version "
        f"(`{audit['current']}`) holds {audit['present_in_current']} of them.",
        "",
        "| version | kind | created | instances present | of them corrected |",
        "|---|---|---|---|---|",
        *(
            f"| {v['version']} | {v['kind']} | {v['created'] or '–'} | {v['present']} | {v['corrected']} |"
            for v in audit["versions"]
        ),
        "",
    ]
    if audit["events"]:
        lines += [
            "| event | type | applied in | applied | method | damping | relative residual | in effect now |",
            "|---|---|---|---|---|---|---|---|",
            *(
                f"| {e['id']} | {e['type']} | {e['version']} | {e['applied']} | {e['method'] or '–'} | "
                f"{_num(e['damping'])} | {_num(e['relative_residual'])} | "
                f"{'yes' if e['in_effect'] else 'no: undone by a rollback'} |"
                for e in audit["events"]
            ),
            "",
        ]
        exact = audit["exact"]
        lines.append(
            "Covered by a training from scratch: "
            + ("yes." if exact else "no: applied by an approximate (influence) update only." if exact is False else "–")
        )
    else:
        lines.append("No event of this user has been applied: the current version was trained on their data.")
    lines += _encoder_lines(audit.get("item_encoder"))
    m = audit["membership"]
    if m:
        lines += [
            "",
            f"Membership test on `{m['version']}`: the user's {m['former_instances']} former instance(s) have mean loss "
            f"{m['former_loss']:.3f} against {m['reference_loss']:.3f} for {m['reference_instances']} instances never "
            f"trained on ({m['reference_source']}); AUC {m['auc']:.3f} (0.5: indistinguishable), one-sided permutation "
            f"p-value {m['p_value']:.3g} over {m['permutations']} permutations. With this few instances the test has "
            "little power: a large p-value means no trace was found, not that none remains.",
        ]
    return "\n".join(lines) + "\n"


def _encoder_lines(encoder: dict[str, Any] | None) -> list[str]:
    if not encoder:
        return []
    holder, events = encoder["retrained_in"], encoder["events_in_effect"]
    if holder is None:
        text = "the run's own, trained on every interaction of the dataset, this user's included" + (
            " (the requests kept it: `--item-encoder keep`)." if events else "."
        )
    elif not events:
        text = f"retrained in `{holder}` for other requests, on interactions that include this user's."
    elif encoder["covers_events"]:
        text = f"retrained in `{holder}` without the interactions of this user's events in effect."
    else:
        later = ", ".join(e for e in events if e not in encoder["events_excluded"])
        text = f"retrained in `{holder}`, before this user's events {later}: it still holds those interactions."
    return ["", "Item encoder (LLaRA's SASRec item embeddings) read by the current version: " + text]


def _num(value: Any) -> str:
    return "–" if value is None else f"{value:.3g}"
