"""``rec-eraser bench data-size``: ``prepare`` on a synthetic RecBole dataset of a real size.

Teams run LLM4Rec on catalogues far larger than MovieLens-100K; ML-20M has 20,000,263 ratings
of 138,493 users on 26,744 movies. The synthetic dataset has that shape (the same ratio of
interactions to users and items, at least 20 ratings a user as in ML-20M, a heavy-tailed
activity and a Zipf-like item popularity, half-star ratings, timestamps in ML-20M's range), is
written by :func:`write_synthetic_dataset` into a temporary folder and removed afterwards: it
is never committed and needs no download.

The study measures the two stages separately, each with its seconds and the process's peak
resident memory: loading (read, checks, the chosen users' interactions as objects) and the
whole ``prepare`` of a run folder (loading again, the instances of the first ``max_users``
users, the files). It also reports the bytes per prepared instance, from which the size of a
run folder holding every user's instances follows (printed as an estimate, not written).
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

Say = Callable[[str], None]

#: ML-20M's shape: ratings, users, movies rated, and the fewest ratings of any user.
ML20M_INTERACTIONS, ML20M_USERS, ML20M_ITEMS, ML20M_MIN_PER_USER = 20_000_263, 138_493, 26_744, 20
#: ML-20M's timestamps span January 1995 to March 2015 (Unix seconds).
ML20M_TIME_RANGE = (789_652_009, 1_427_784_002)

SYNTHETIC = "synthetic"

_MAPPING = """# A synthetic dataset of ML-20M's shape, written by rec_eraser.workflows.data_scale.
name = "synthetic"
liked_above = 3.0

[fields]
user = "user_id"
item = "item_id"
rating = "rating"
timestamp = "timestamp"
title = "movie_title"

[prompt]
noun = "movie"
noun_plural = "movies"
verb = "watch"
verb_past = "watched"
"""


def _activity(rng: np.random.Generator, interactions: int, users: int) -> np.ndarray:
    """Interactions per user: at least ML-20M's 20 (fewer only for tiny sizes), a lognormal
    tail, summing exactly to ``interactions``."""
    floor = min(ML20M_MIN_PER_USER, interactions // users)
    weights = rng.lognormal(0.0, 1.2, users)
    counts = floor + np.floor(weights / weights.sum() * (interactions - floor * users)).astype(np.int64)
    short = interactions - int(counts.sum())
    np.add.at(counts, rng.integers(0, users, short), 1)
    return counts


def synthetic_shape(interactions: int) -> tuple[int, int]:
    """(users, items) of a synthetic dataset of ``interactions``, at ML-20M's ratios."""
    users = max(1, round(interactions * ML20M_USERS / ML20M_INTERACTIONS))
    return users, max(2, round(interactions * ML20M_ITEMS / ML20M_INTERACTIONS))


def write_synthetic_dataset(
    folder: Path | str, interactions: int, users: int | None = None, items: int | None = None, seed: int = 0
) -> Path:
    """Write ``synthetic.inter``, ``synthetic.item`` and the mapping ``synthetic.toml`` into ``folder``.

    ``users`` and ``items`` default to ML-20M's ratios to ``interactions``. The ``.inter`` file is
    ordered by user (as ML-20M's ratings file is); every interacted item is in ``.item``.
    Returns the folder.
    """
    import pyarrow as pa
    import pyarrow.csv as pa_csv

    if interactions < 2:
        raise ValueError(f"interactions must be >= 2, got {interactions}")
    users = users or synthetic_shape(interactions)[0]
    items = items or synthetic_shape(interactions)[1]
    rng = np.random.default_rng(seed)
    counts = _activity(rng, interactions, users)
    user_of = np.repeat(np.arange(1, users + 1, dtype=np.int64), counts)
    popularity = 1.0 / (np.arange(items) + 10.0) ** 0.9
    item_of = rng.choice(np.arange(1, items + 1, dtype=np.int64), size=interactions, p=popularity / popularity.sum())
    rating = rng.integers(1, 11, interactions) / 2.0
    low, high = ML20M_TIME_RANGE
    start = rng.integers(low, high - 10**8, users)
    timestamp = np.repeat(start, counts) + rng.integers(0, 10**8, interactions)

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    options = pa_csv.WriteOptions(include_header=False, delimiter="\t", quoting_style="none")
    inter = folder / f"{SYNTHETIC}.inter"
    with inter.open("wb") as f:
        f.write(b"user_id:token\titem_id:token\trating:float\ttimestamp:float\n")
        table = pa.table({"u": user_of, "i": item_of, "r": rating, "t": timestamp})
        pa_csv.write_csv(table, f, options)
    ids = np.arange(1, items + 1)
    item_table = pa.table(
        {
            "id": ids,
            "title": pa.array([f"Synthetic Movie {i}" for i in ids]),
            "year": 1920 + ids % 95,
            "class": pa.array(["Drama"] * items),
        }
    )
    with (folder / f"{SYNTHETIC}.item").open("wb") as f:
        f.write(b"item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n")
        pa_csv.write_csv(item_table, f, options)
    (folder / f"{SYNTHETIC}.toml").write_text(_MAPPING, encoding="utf-8")
    logger.info("wrote %d interactions of %d users on %d items into %s", interactions, users, items, folder)
    return folder


def prepare_at_size(
    interactions: int = ML20M_INTERACTIONS,
    task: str = "tallrec",
    max_users: int | None = 1000,
    seed: int = 0,
    workdir: Path | str | None = None,
    say: Say | None = None,
) -> dict[str, Any]:
    """Write a synthetic dataset of ``interactions``, then time and measure loading it and
    ``prepare`` of ``task`` on its first ``max_users`` users (None: every user).

    Everything is written under a temporary folder in ``workdir`` (default: the system's) and
    removed at the end, also on failure.
    """
    from rec_eraser.data import load_dataset
    from rec_eraser.memory import PeakMemory  # imports torch: not at the CLI's start
    from rec_eraser.tasks.prepare import prepare

    say = say or (lambda _msg: None)
    scratch = Path(tempfile.mkdtemp(prefix="rec-eraser-data-size-", dir=workdir))
    try:
        say(f"writing a synthetic dataset of {interactions:,} interactions into {scratch}")
        t0 = time.perf_counter()
        folder = write_synthetic_dataset(scratch / "data", interactions, seed=seed)
        generate_seconds = time.perf_counter() - t0
        file_mb = (folder / f"{SYNTHETIC}.inter").stat().st_size / 2**20

        say("loading it (read, checks, the interactions of the chosen users)")
        memory = PeakMemory(host=True)
        with memory.watch():
            t0 = time.perf_counter()
            dataset = load_dataset(folder, max_users=max_users)
            load_seconds = time.perf_counter() - t0
        loaded = {"users": len(dataset.users), "interactions": len(dataset.interactions)}
        del dataset
        load = {"seconds": load_seconds, "peak_mb": memory.peak_mb, "start_mb": memory.start_mb, **loaded}

        say(f"prepare {task} on the first {max_users or 'all'} users")
        memory = PeakMemory(host=True)
        out = scratch / "run"
        with memory.watch():
            t0 = time.perf_counter()
            summary = prepare(folder, task, out, seed=seed, max_users=max_users)
            prepare_seconds = time.perf_counter() - t0
        run_bytes = sum(p.stat().st_size for p in (out / "data").iterdir())
        instances = sum(summary[s] for s in ("train", "valid", "test"))
        per_instance = run_bytes / instances if instances else None
        manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    # every user with n >= 2 interactions makes n - 1 instances (the first is never a target)
    all_instances = interactions - synthetic_shape(interactions)[0]
    return {
        "interactions": interactions,
        "task": task,
        "max_users": max_users,
        "file_mb": file_mb,
        "generate_seconds": generate_seconds,
        "load": load,
        "prepare": {
            "seconds": prepare_seconds,
            "peak_mb": memory.peak_mb,
            "start_mb": memory.start_mb,
            "users": summary["users"],
            "interactions": summary["interactions"],
            "instances": instances,
            "run_mb": run_bytes / 2**20,
            "bytes_per_instance": per_instance,
            "data_hash": manifest["data_hash"],
        },
        "every_user_estimate": {
            "instances": all_instances,
            "run_gb": per_instance * all_instances / 2**30 if per_instance else None,
        },
    }


def _mb(value: float | None) -> str:
    return "–" if value is None else f"{value:.0f}"


def markdown(result: dict[str, Any]) -> str:
    """The study's result as a Markdown table (for the docs)."""
    load, prep, every = result["load"], result["prepare"], result["every_user_estimate"]
    lines = [
        f"Synthetic dataset of {result['interactions']:,} interactions ({result['file_mb']:.0f} MB `.inter` file), "
        f"`prepare` of {result['task']} on the first {result['max_users'] or 'all'} users.",
        "",
        "| stage | seconds | resident MB at the start | peak resident MB | users | interactions | instances |",
        "|---|---|---|---|---|---|---|",
        f"| load (read, check, keep the users) | {load['seconds']:.1f} | {_mb(load['start_mb'])} | "
        f"{_mb(load['peak_mb'])} | {load['users']:,} | {load['interactions']:,} | – |",
        f"| prepare (load, build, write) | {prep['seconds']:.1f} | {_mb(prep['start_mb'])} | {_mb(prep['peak_mb'])} "
        f"| {prep['users']:,} | {prep['interactions']:,} | {prep['instances']:,} |",
        "",
        "(Resident memory is the whole process's: the Python interpreter and torch are in it before either stage.)",
        "",
    ]
    if prep["bytes_per_instance"]:
        lines.append(
            f"{prep['bytes_per_instance']:.0f} bytes per prepared instance ({prep['run_mb']:.0f} MB of instance "
            f"files); every user's {every['instances']:,} instances would take about {every['run_gb']:.0f} GB "
            "(an estimate)."
        )
    return "\n".join(lines) + "\n"
