"""The curvature cache: rows of the last request reused by the next, checked for staleness and tampering."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from rec_eraser.core import SolverConfig
from rec_eraser.workflows import Event, Registry, apply_events
from rec_eraser.workflows.curvature_cache import CACHE_FILE, CacheSettings
from rec_eraser.workflows.unlearn import preview_update

# half the tiny training set: successive requests then draw mostly the same instances
SOLVER = SolverConfig(method="fisher", sample_size=12)


def users_by_size(run) -> list[str]:
    """Smallest first: requests that edit few instances leave most of the sample to reuse."""
    counts = Counter(z.user for z in Registry(run).training_set("v0000"))
    return [u for u, _ in reversed(counts.most_common())]


def delete(run, user: str, **kwargs):
    return apply_events(run, [(None, Event(f"del-{user}", "delete_user", user))], solver=SOLVER, **kwargs)


def cache_record(run, version: str) -> dict:
    return Registry(run).manifest(version)["metrics"]["curvature_cache"]


def delta(loaded, base) -> np.ndarray:
    now = {n: p.detach() for n, p in loaded.model.named_parameters() if p.requires_grad}
    return np.concatenate([(now[n] - base[n]).flatten().numpy() for n in sorted(now)])


def test_the_next_request_reuses_the_rows_and_lands_where_computing_them_lands(run):
    first, second, third = users_by_size(run)[:3]
    delete(run, first)
    record = cache_record(run, "v0001")
    assert record["verdict"] == "no cache" and record["reused"] == 0 and len(record["sha256"]) == 64
    assert (run / CACHE_FILE).is_file()
    cost = Registry(run).manifest("v0001")["metrics"]["cost"]
    assert cost["rows_reused"] == 0 and cost["rows_computed"] == 12
    assert Registry(run).manifest("v0001")["metrics"]["peak_mb"] > 0  # every request records its peak memory

    # the second request: the same update whether its rows are reused or computed, up to the rows' staleness
    from rec_eraser.training.train import load_version

    parent = load_version(run, "v0001")
    base = {n: p.detach().clone() for n, p in parent.model.named_parameters() if p.requires_grad}
    event = [Event(f"del-{second}", "delete_user", second)]
    reusing, with_cache = preview_update(run, event, solver=SOLVER)
    computing, without = preview_update(run, event, solver=SOLVER, cache=CacheSettings(enabled=False))
    report = with_cache.metrics["curvature_cache"]
    assert report["verdict"] == "reused" and report["reused"] > 0 and report["probes"] == 2
    assert max(report["probe_errors"]) <= 0.05 and report["source"] == "v0000"
    assert with_cache.solver["reused_rows"] == report["reused"] and without.solver["reused_rows"] == 0
    assert without.metrics["curvature_cache"]["verdict"] == "no cache"
    assert with_cache.metrics["cost"]["rows_computed"] == 12 - report["reused"]
    reused_step, computed_step = delta(reusing, base), delta(computing, base)
    assert np.linalg.norm(reused_step - computed_step) <= 0.1 * np.linalg.norm(computed_step)

    # applied: the version records what it reused; the cache keeps the reused rows' own age
    delete(run, second)
    assert cache_record(run, "v0002")["reused"] == report["reused"]
    # a tolerance of 0 finds every cached row stale: all recomputed, nothing reused
    stale = preview_update(
        run, [Event(f"del-{third}", "delete_user", third)], solver=SOLVER, cache=CacheSettings(tolerance=0.0)
    )[1]
    assert stale.metrics["curvature_cache"]["verdict"].startswith("stale") and stale.solver["reused_rows"] == 0


def test_a_tampered_cache_is_not_used_and_nothing_else_changes(run, caplog):
    first, second = users_by_size(run)[:2]
    delete(run, first)
    path = run / CACHE_FILE
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF  # a byte of the rows
    path.write_bytes(bytes(data))
    result = delete(run, second)
    assert result.version == "v0002" and "do not match" in caplog.text
    record = cache_record(run, "v0002")
    assert record["verdict"] == "no cache" and record["reused"] == 0
    # the cache written after v0002 is whole again and recorded by it: read, then judged on its staleness
    caplog.clear()
    third = delete(run, users_by_size(run)[2]).metrics["curvature_cache"]
    assert third["source"] == "v0001" and third["probes"] == 2 and "do not match" not in caplog.text


@pytest.mark.parametrize("garbage", [b"", b"not a safetensors file"])
def test_an_unreadable_cache_is_ignored(run, caplog, garbage):
    first, second = users_by_size(run)[:2]
    delete(run, first)
    (run / CACHE_FILE).write_bytes(garbage)
    assert delete(run, second).metrics["curvature_cache"]["verdict"] == "no cache"
