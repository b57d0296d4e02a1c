"""A run's curvature cache: the Fisher rows of its last request, reused by the next one.

The default update needs the per-instance gradients of a 64-instance curvature sample plus its
own edited instances; only the latter are its physical floor. Successive requests on one
lineage draw nearly the same sample (the draw orders the training set by a seeded hash of each
instance's id, so an instance stays drawn while others leave), so the rows one request computed
can stand in for the next request's. They were computed at an ancestor's parameters, though:
before reusing them a request recomputes ``probes`` of the oldest and compares (relative error
‖g_now − g_cached‖ / ‖g_now‖); above ``tolerance`` the whole sample is recomputed. The edited
instances' rows are always computed. Reused rows carry no loss unless they were computed at the
request's own parent, so the retained check then measures its "before" losses by forward passes.

One file per run (``cache/curvature.safetensors``), replaced after each applied request under the
run's lock. Its SHA-256 is recorded in the manifest of the version that wrote it and checked
before use: a cache that is missing, unreadable, edited, of another parameter space or of
another lineage is ignored (one log line) and the rows are computed; rows computed below the
lineage's newest exact version (a compaction retrained the adapter) are never used. The tolerance (0.05) is a
prior, not tuned on any benchmark: rows 5% off change the curvature by about twice that, well
inside what the damping calibration then absorbs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load, save

from rec_eraser.core import EmpiricalFisher, InfluenceEngine, KnownRow
from rec_eraser.core.curvature import deterministic_mode
from rec_eraser.core.edits import Edit, new_samples, old_samples
from rec_eraser.tasks.instance import Instance
from rec_eraser.workflows.erasure import EXACT_KINDS
from rec_eraser.workflows.item_encoder import retrained_encoder

logger = logging.getLogger(__name__)

CACHE_FILE = Path("cache") / "curvature.safetensors"


@dataclass(frozen=True)
class CacheSettings:
    """``probes``: cached rows recomputed to measure staleness; ``tolerance``: the largest relative
    row error at which the cache is still reused; ``enabled``: False computes every row."""

    probes: int = 2
    tolerance: float = 0.05
    enabled: bool = True

    def __post_init__(self) -> None:
        if self.probes < 1:  # without a probe nothing would check the rows' staleness
            raise ValueError(f"the curvature cache needs at least one probe, got {self.probes}")
        if not self.tolerance >= 0:
            raise ValueError(f"the curvature cache's tolerance must be >= 0, got {self.tolerance}")

    def to_dict(self) -> dict[str, Any]:
        return {"probes": self.probes, "tolerance": self.tolerance, "enabled": self.enabled}


DEFAULT_CACHE = CacheSettings()


def instance_key(instance: Instance) -> str:
    """The id and a digest of the whole instance: a corrected instance keeps its id, not its key."""
    digest = hashlib.sha256(json.dumps(instance.to_dict(), sort_keys=True).encode()).hexdigest()[:16]
    return f"{instance.id}#{digest}"


def space_signature(engine: InfluenceEngine) -> str:
    """The trainable parameters' names and shapes: rows of another adapter shape are not these."""
    shapes = [(name, list(p.shape)) for name, p in zip(engine.space.names, engine.space.params)]
    return hashlib.sha256(json.dumps(shapes).encode()).hexdigest()


@dataclass
class CurvatureCache:
    """Rows by instance key: the gradient (float32), its loss and the version at whose parameters it was computed."""

    signature: str
    rows: dict[str, tuple[torch.Tensor, float, str]] = field(default_factory=dict)

    def to_bytes(self, written_after: str) -> bytes:
        keys = list(self.rows)
        tensors = {
            "rows": torch.stack([self.rows[k][0].to(torch.float32) for k in keys]).contiguous(),
            "losses": torch.tensor([self.rows[k][1] for k in keys], dtype=torch.float64),
        }
        header = {"keys": keys, "computed_at": [self.rows[k][2] for k in keys]}
        return save(
            tensors,
            metadata={"signature": self.signature, "written_after": written_after, "header": json.dumps(header)},
        )


def cache_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def load_cache(run_dir: Path, lineage: list[dict[str, Any]], signature: str) -> CurvatureCache | None:
    """The run's cache, restricted to rows computed on ``lineage`` (manifests, newest first), or None
    with a log line when it cannot be trusted (see the module docstring)."""
    path = Path(run_dir) / CACHE_FILE
    if not path.is_file():
        return None
    # rows computed below the newest exact version belong to an adapter it replaced by retraining, and
    # rows computed below a version that retrained the item encoder were read through the old encoder
    cut = next((i + 1 for i, m in enumerate(lineage) if m.get("kind") in EXACT_KINDS or retrained_encoder(m)), None)
    lineage = lineage[:cut] if cut is not None else lineage
    try:
        data = path.read_bytes()
        header_len = int.from_bytes(data[:8], "little")
        if len(data) < 8 or not 0 < header_len <= len(data) - 8:
            raise ValueError("not a safetensors file")
        metadata = json.loads(data[8 : 8 + header_len])["__metadata__"]
        names = {m["version"]: m for m in lineage}
        writer = names.get(metadata["written_after"])
        if writer is None:
            logger.info("curvature cache: written after %s, not on this lineage; not used", metadata["written_after"])
            return None
        recorded = ((writer.get("metrics") or {}).get("curvature_cache") or {}).get("sha256")
        if recorded != cache_sha256(data):
            logger.warning("curvature cache: its bytes do not match what %s recorded; not used", writer["version"])
            return None
        if metadata["signature"] != signature:
            logger.info("curvature cache: rows of another parameter space; not used")
            return None
        tensors, header = load(data), json.loads(metadata["header"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        logger.warning("curvature cache unreadable (%s); not used", exc)
        return None
    cache = CurvatureCache(signature)
    for i, (key, at) in enumerate(zip(header["keys"], header["computed_at"])):
        if at in names:
            cache.rows[key] = (tensors["rows"][i], float(tensors["losses"][i]), at)
    return cache


@dataclass(frozen=True)
class CacheRequest:
    """Where a request's cache lives and what may be reused: the run, the parent's lineage
    (manifests, parent first) and the settings."""

    run_dir: Path
    lineage: list[dict[str, Any]]
    settings: CacheSettings = DEFAULT_CACHE


def cached_fisher(
    engine: InfluenceEngine,
    edits: list[Edit],
    key_of: dict[int, str],
    run_dir: Path,
    lineage: list[dict[str, Any]],
    settings: CacheSettings,
) -> tuple[EmpiricalFisher, dict[str, Any], CurvatureCache]:
    """The request's empirical Fisher with the cache's rows where they are fresh enough, what it
    reused and measured (for the manifest; ``seconds``: the probes'), and the cache to write after
    the request (its rows; the caller drops instances that leave the training set).

    ``key_of``: :func:`instance_key` by ``id`` of each encoded sample (training set and new forms)."""
    engine.sample_key = lambda z: key_of[id(z)]  # the draw the cache's rows were keyed for
    parent = lineage[0]["version"]
    t0 = time.perf_counter()
    cache = load_cache(run_dir, lineage, space_signature(engine)) if settings.enabled else None
    read_seconds = time.perf_counter() - t0
    samples = engine.fisher_samples(edits)
    edited = {id(z) for z in old_samples(edits) + new_samples(edits)}
    # seconds: reading the cache and the probes' passes (this request's own work)
    report: dict[str, Any] = {"settings": settings.to_dict(), "reused": 0, "probes": 0, "seconds": read_seconds}
    usable = {} if cache is None or not settings.enabled else cache.rows
    candidates = [z for z in samples if id(z) not in edited and key_of[id(z)] in usable]
    known: dict[int, KnownRow] = {}
    reused: set[int] = set()
    if candidates:
        age = {m["version"]: i for i, m in enumerate(lineage)}  # 0: the parent; larger: older
        report["source"] = min((usable[key_of[id(z)]][2] for z in candidates), key=age.__getitem__)
        oldest_first = sorted(candidates, key=lambda z: -age[usable[key_of[id(z)]][2]])
        # rows computed at the parent itself are exact: no probe
        probes = [z for z in oldest_first[: settings.probes] if usable[key_of[id(z)]][2] != parent]
        errors: list[float] = []
        if probes:
            t0 = time.perf_counter()
            with deterministic_mode(engine.model):  # as the engine's own rows are computed
                fresh = EmpiricalFisher.from_samples(
                    engine.model, engine.loss_fn, engine.space, probes, engine.collate_fn
                )
            report["seconds"], report["probes"] = report["seconds"] + time.perf_counter() - t0, len(probes)
            for i, z in enumerate(probes):
                now, cached = fresh.gradients[i], usable[key_of[id(z)]][0].to(torch.float64)
                errors.append(float(torch.linalg.vector_norm(now - cached) / max(float(now.norm()), 1e-30)))
                known[id(z)] = KnownRow(now, float(fresh.losses[i]))
            report["probe_errors"] = errors
        if errors and not max(errors) <= settings.tolerance:  # a NaN error is stale too
            report["verdict"] = f"stale (row error {max(errors):.3g} > {settings.tolerance:g}): recomputed"
        else:
            for z in candidates:
                if id(z) not in known:
                    row, loss, at = usable[key_of[id(z)]]
                    # a loss measured at another version's parameters is not this one's
                    known[id(z)] = KnownRow(row, loss if at == parent and not math.isnan(loss) else None)
                    reused.add(id(z))
            report["verdict"] = "reused"
    else:
        report["verdict"] = "no cache" if not usable else "no cached rows in this sample"
    fisher = engine.empirical_fisher(edits, known=lambda z: known.get(id(z)))
    report["reused"] = len(reused)
    out = CurvatureCache(space_signature(engine))
    for i, z in enumerate(fisher.samples or []):
        loss = float(fisher.losses[i]) if fisher.losses is not None else math.nan
        at = usable[key_of[id(z)]][2] if id(z) in reused else parent
        out.rows[key_of[id(z)]] = (fisher.gradients[i].to(torch.float32), loss, at)
    return fisher, report, out


def write_cache(run_dir: Path, data: bytes) -> None:
    """Replace the run's cache atomically (a temporary file renamed over it)."""
    path = Path(run_dir) / CACHE_FILE
    path.parent.mkdir(exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
