"""Sanity check: ``python -m rec_eraser.encoders [--dataset ml-100k] [--epochs 12] [--threads 1] [--save DIR]``.

Trains SASRec on the dataset's training interactions and prints one JSON object: training
time and next-item HitRatio@k on the test targets of SASRec and of item popularity, with and
without excluding items already in the user's history (see ``rec_eraser.encoders.sasrec``).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from typing import Any

from rec_eraser.data import load_dataset
from rec_eraser.encoders.evaluation import hit_at_k, popularity_hit_at_k
from rec_eraser.encoders.sasrec_train import _threads, train_sasrec


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Train on a dataset and print time and HitRatio@k of SASRec vs popularity (one JSON object)."""
    parser = argparse.ArgumentParser(description="Train SASRec and compare its HitRatio@k with popularity.")
    parser.add_argument("--dataset", default="ml-100k", help="a known dataset name or a folder")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 was fastest on 2 cores)")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--save", default=None, help="folder to save the item encoder in")
    args = parser.parse_args(argv)
    data = load_dataset(args.dataset)
    started = time.perf_counter()
    encoder = train_sasrec(data, epochs=args.epochs, seed=args.seed, threads=args.threads)
    seconds = time.perf_counter() - started
    k = args.k
    with _threads(args.threads):
        report = {
            "dataset": data.name,
            "users": len(data.users),
            "items": len(data.items),
            "epochs": args.epochs,
            "threads": args.threads,
            "train_seconds": round(seconds, 1),
            "final_train_loss": encoder.config["final_train_loss"],
            f"sasrec_hit@{k}": round(hit_at_k(encoder, data, k), 4),
            f"popularity_hit@{k}": round(popularity_hit_at_k(data, k), 4),
            f"sasrec_hit@{k}_unfiltered": round(hit_at_k(encoder, data, k, exclude_seen=False), 4),
            f"popularity_hit@{k}_unfiltered": round(popularity_hit_at_k(data, k, exclude_seen=False), 4),
        }
    if args.save:
        encoder.save(args.save)
        report["saved"] = args.save
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
