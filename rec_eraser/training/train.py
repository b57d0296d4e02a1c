"""Train a LoRA adapter (and, for LLaRA, the item projector) on a prepared run folder.

The result is version ``v0000`` of the run's adapter registry: a standard PEFT adapter
folder (``adapter_config.json`` + ``adapter_model.safetensors``, loadable with
``PeftModel.from_pretrained``), ``projector.safetensors`` when the model has item tokens,
and a ``manifest.json`` (base model, data hash, recipe, training cost). It is written into a
temporary folder and renamed into place, so a crash never leaves a half-written version.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from rec_eraser.core import distributed
from rec_eraser.errors import EXIT_CODES, RecEraserError
from rec_eraser.files import run_lock, write_folder_atomically
from rec_eraser.memory import PeakMemory
from rec_eraser.models import load_causal_lm
from rec_eraser.models.embedded import embedded_model_dir
from rec_eraser.tasks.instance import Instance
from rec_eraser.tasks.prepare import load_instances, load_manifest
from rec_eraser.tasks.prompt_registry import prompts_of
from rec_eraser.training.batching import epoch_order
from rec_eraser.training.checkpoint import DEFAULT_INTERVAL, LoopState, load_checkpoint, save_checkpoint
from rec_eraser.training.encode import collate, encode_instance
from rec_eraser.training.manifest import VERSION_NAME, VersionRecord
from rec_eraser.training.model import RecModel
from rec_eraser.training.precision import precision_warning
from rec_eraser.training.recipe import Recipe, RecipeError, load_recipe
from rec_eraser.training.versions import (
    PROJECTOR_FILE,
    TRAIN_IDS,
    BaseModelMismatch,
    VersionIntegrityError,
    base_model_fingerprint,
    base_model_weights_fingerprint,
    instance_ids_hash,
    instances_content_hash,
    save_version,
    train_ids_json,
    verified_file,
    verify_version,
    version_name,
)

logger = logging.getLogger(__name__)

ENCODER_DIR = "item_encoder"
Progress = Callable[[int, int, float], None]  # (step, total steps, loss)


@dataclass
class LoadedModel:
    """A :class:`RecModel` ready to use, with what is needed to feed it."""

    model: RecModel
    tokenizer: Any
    item_index: dict[str, int] | None
    recipe: Recipe
    base_model: Path
    #: the ``ItemEncoder`` its projector reads when not the run's (a version whose deletion
    #: retrained it); None: the run's, or no item tokens
    item_encoder: Any = None


def base_model_path(recipe: Recipe) -> Path:
    return Path(recipe.base_model) if recipe.base_model else embedded_model_dir()


def uses_item_tokens(run_dir: Path, recipe: Recipe) -> bool:
    return recipe.item_tokens and prompts_of(load_manifest(run_dir)["task"]).item_tokens


def encoder_dataset(run_dir: Path) -> Any:
    """The dataset the run's item encoder trains on: the files prepare read (their hashes are in
    the run's manifest), with the interactions the run was built from where a benchmark changed them."""
    from rec_eraser.data import load_dataset
    from rec_eraser.tasks.prepare import run_interactions

    manifest = load_manifest(run_dir)
    dataset = load_dataset(
        manifest["dataset"]["name"],
        root=manifest["dataset"]["root"],
        mapping=Path(manifest["mapping"]["path"]),
        max_users=manifest.get("max_users") or None,
    )
    recorded = manifest["dataset"].get("files") or {}
    changed = sorted(name for name, digest in recorded.items() if dataset.files.get(name, digest) != digest)
    if changed:
        raise RecEraserError(
            f"{run_dir}: the dataset's {', '.join(changed)} changed since the run was prepared (its SHA-256 "
            "differs from the run's manifest): restore the files the run was prepared from"
        )
    if manifest.get("transform"):
        # the run was built from changed interactions (a benchmark's corruption): the encoder
        # learns from those, as the adapter does, read back from the instances' provenance
        dataset = dataclasses.replace(dataset, interactions=run_interactions(run_dir))
    return dataset


def ensure_item_encoder(run_dir: Path, recipe: Recipe, seed: int) -> Any:
    """The run's collaborative item encoder (SASRec), trained once on the training interactions."""
    from rec_eraser.encoders.sasrec import ItemEncoder
    from rec_eraser.encoders.sasrec_train import train_sasrec

    folder = Path(run_dir) / ENCODER_DIR
    if distributed.agree(folder.exists()):  # rank 0's view, so that every rank takes the same branch
        return ItemEncoder.load(folder)
    if not distributed.is_main():  # rank 0 trains and writes it (below); the others read that
        distributed.barrier()
        return ItemEncoder.load(folder)
    encoder = train_sasrec(encoder_dataset(run_dir), epochs=recipe.sasrec_epochs, seed=seed)
    write_folder_atomically(folder, encoder.save)
    distributed.barrier()  # the ranks waiting above read it now
    return encoder


def encoder_holder(manifest: dict[str, Any]) -> Any:
    """The version whose folder holds the retrained item encoder that the version of ``manifest``
    reads (its ``item_encoder.version``), or None: it reads the run's encoder. As the manifest
    holds it, unchecked (:func:`version_item_encoder` checks it names a version)."""
    return (manifest.get("item_encoder") or {}).get("version")


def version_item_encoder(run_dir: Path, record: VersionRecord) -> Any:
    """The item encoder a version's projector reads: the run's, or the one retrained for a deletion
    and kept in the folder of the version its manifest names (``item_encoder.version``), whose
    files are checked against that version's hashes first."""
    from rec_eraser.encoders.sasrec import META_FILE as ENCODER_META_FILE
    from rec_eraser.encoders.sasrec import WEIGHTS_FILE as ENCODER_WEIGHTS_FILE
    from rec_eraser.encoders.sasrec import ItemEncoder

    holder = encoder_holder(record.details)
    if holder is None:
        return ItemEncoder.load(Path(run_dir) / ENCODER_DIR)
    if not (isinstance(holder, str) and VERSION_NAME.fullmatch(holder)):
        raise VersionIntegrityError(f"{run_dir}/{record.version}: its item encoder names {holder!r}, not a version")
    folder = Path(run_dir) / holder
    for name in (ENCODER_META_FILE, ENCODER_WEIGHTS_FILE):  # those two files only: the rest of that version may go
        verified_file(folder, name)
    return ItemEncoder.load(folder)


def build_model(
    run_dir: Path, recipe: Recipe, lm: nn.Module, seed: int, encoder: Any = None
) -> tuple[RecModel, dict[str, int] | None]:
    """A fresh (untrained) RecModel around a LoRA-wrapped ``lm``; with item tokens, fed by
    ``encoder`` (an ``ItemEncoder``), or by the run's item encoder when None."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    lora = get_peft_model(
        lm,
        LoraConfig(
            r=recipe.rank,
            lora_alpha=recipe.alpha,
            lora_dropout=recipe.dropout,
            target_modules=list(recipe.target_modules),
        ),
    )
    if not uses_item_tokens(run_dir, recipe):
        return RecModel(lora), None
    if encoder is None:
        # training SASRec re-seeds and draws from the global stream, loading it builds modules that
        # draw too: forked, the projector's initialisation and every dropout mask after it are the
        # same whether this process trained the encoder or found it in the run folder
        # (the current CUDA device's generator too where CUDA is up: a GPU LM drew its LoRA init there)
        cuda = [torch.cuda.current_device()] if torch.cuda.is_initialized() else []
        with torch.random.fork_rng(devices=cuda):
            encoder = ensure_item_encoder(run_dir, recipe, seed)
    model, item_index = with_item_tokens(lora, encoder)
    if recipe.projector_init == "scaled":
        tokens = lora.get_input_embeddings().weight.detach()
        model.projector.scale_to(encoder.embeddings, float(tokens.float().norm(dim=-1).mean()))
    return model, item_index


def with_item_tokens(
    lm: nn.Module, encoder: Any, projector_state: dict[str, torch.Tensor] | None = None
) -> tuple[RecModel, dict[str, int]]:
    """A RecModel around ``lm`` fed by ``encoder`` (an ``ItemEncoder``): a projector (fresh, or
    loaded from ``projector_state``), the item table, SASRec's user states; and the item index."""
    from rec_eraser.encoders.projector import ItemProjector

    projector = ItemProjector(encoder.embeddings.shape[1], lm.get_input_embeddings().embedding_dim)
    if projector_state is not None:
        projector.load_state_dict(projector_state)
    users = encoder.user_state_encoder() if encoder.model is not None else None
    item_index = {item: i for i, item in enumerate(encoder.item_ids)}
    return RecModel(lm, encoder.embeddings, projector, users), item_index


def training_instances(run_dir: Path, recipe: Recipe, train_split: list[Instance] | None = None) -> list[Instance]:
    """The training split, or a seeded sub-sample of ``max_train`` of it (in file order), without
    the instances of the recipe's ``holdout_users``.

    ``train_split``: the run's training split when the caller has read it already.
    """
    return _drawn(run_dir, recipe, train_split)[0]


def held_out_instances(run_dir: Path, recipe: Recipe, train_split: list[Instance] | None = None) -> list[Instance]:
    """The sub-sample's instances of the recipe's ``holdout_users``: drawn exactly as the training
    instances were, then kept out, so they are what a deleted user's instances are to a model
    retrained without them (empty when ``holdout_users`` is 0)."""
    return _drawn(run_dir, recipe, train_split)[1]


def _drawn(run_dir: Path, recipe: Recipe, train_split: list[Instance] | None) -> tuple[list[Instance], list[Instance]]:
    instances = load_instances(run_dir, "train") if train_split is None else train_split
    if recipe.max_train is not None and recipe.max_train < len(instances):
        keep = np.sort(np.random.default_rng(recipe.seed).choice(len(instances), recipe.max_train, replace=False))
        instances = [instances[i] for i in keep]
    if not recipe.holdout_users:
        return instances, []
    users = sorted({z.user for z in instances}, key=lambda u: (len(u), u))
    if recipe.holdout_users >= len(users):
        raise RecipeError(
            f"recipe: holdout_users {recipe.holdout_users} would hold out every one of the {len(users)} users drawn"
        )
    # a stream of its own, so that holding users out leaves the instance draw above unchanged
    held = {
        users[i]
        for i in np.random.default_rng([recipe.seed, 7]).choice(len(users), recipe.holdout_users, replace=False)
    }
    return [z for z in instances if z.user not in held], [z for z in instances if z.user in held]


def checkpoint_path(run_dir: Path, name: str) -> Path:
    """Where the training of the adapter ``name`` keeps its resumable state in ``run_dir``."""
    return run_dir / f".training-{name}.pt"


def fit_adapter(
    run_dir: Path,
    recipe: Recipe,
    instances: list[Instance],
    progress: Progress | None = None,
    checkpoint: Path | None = None,
    encoder: Any = None,
) -> tuple[RecModel, dict[str, Any]]:
    """Train a fresh adapter (LoRA + projector) on ``instances``; the model and the training record.

    ``encoder``: the item encoder (``ItemEncoder``) the projector reads, when not the run's.

    ``checkpoint``: a file the training saves its state to every few minutes and resumes from
    (the same recipe, instances and base model); the caller removes it once the adapter is saved,
    so that a crash between the training's end and the save loses at most one interval."""
    loaded, record = fit_loaded(run_dir, recipe, instances, progress, checkpoint, encoder=encoder)
    return loaded.model, record


def fit_loaded(
    run_dir: Path,
    recipe: Recipe,
    instances: list[Instance],
    progress: Progress | None = None,
    checkpoint: Path | None = None,
    encoder: Any = None,
) -> tuple[LoadedModel, dict[str, Any]]:
    """:func:`fit_adapter`, the model returned ready to score (with its tokenizer and item index)."""
    return _fit(run_dir, recipe, instances, progress, checkpoint, encoder=encoder)


def _fit(
    run_dir: Path,
    recipe: Recipe,
    instances: list[Instance],
    progress: Progress | None,
    checkpoint: Path | None = None,
    checkpoint_interval: float = DEFAULT_INTERVAL,
    encoder: Any = None,
) -> tuple[LoadedModel, dict[str, Any]]:
    base_path = base_model_path(recipe)
    lm, tokenizer = load_causal_lm(base_path)
    model, item_index = build_model(run_dir, recipe, lm, recipe.seed, encoder=encoder)
    samples = [encode_instance(z, tokenizer, item_index, recipe.max_length) for z in instances]
    lengths = [len(sample["input_ids"]) for sample in samples]
    optimizer = torch.optim.AdamW(parameter_groups(model, recipe), weight_decay=0.0)
    gen = torch.Generator().manual_seed(recipe.seed)
    steps_per_epoch = -(-len(samples) // recipe.batch_size)
    total = steps_per_epoch * recipe.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, learning_rate_factor(recipe, total))
    fingerprints = {  # the checkpoint's key and the trained version's record
        "base_model_sha256": base_model_fingerprint(base_path),
        "base_model_weights_sha256": base_model_weights_fingerprint(base_path),
    }
    key = {"recipe": recipe.to_dict(), "instances_sha256": instances_content_hash(instances), **fingerprints}
    loop = (
        load_checkpoint(checkpoint, key, model, optimizer, scheduler, gen, len(samples)) if checkpoint else None
    ) or LoopState()
    # data-parallel ranks start from rank 0's model (each rank draws its own initialisation; the
    # same seed makes them equal today, the broadcast keeps them so whatever a rank draws first)
    distributed.broadcast_module_state(model)
    device = next(model.parameters()).device.type
    warning = precision_warning(recipe.precision, device)
    if warning:
        logger.warning(warning)
    model.train()
    t0 = last_save = time.perf_counter()
    for epoch in range(loop.epoch, recipe.epochs):
        if epoch != loop.epoch or not loop.order:  # a resumed epoch keeps the order it was drawn with
            loop.epoch, loop.position = epoch, 0
            loop.order = epoch_order(lengths, recipe.batch_size, gen, recipe.length_bucketing)
        while loop.position < len(loop.order):
            step_ids = loop.order[loop.position : loop.position + recipe.batch_size]
            optimizer.zero_grad()
            loss = backward_step(model, [samples[i] for i in step_ids], device, recipe.precision)
            if not torch.isfinite(loss):
                raise TrainingDiverged(
                    f"training diverged at step {loop.step} (loss {float(loss)}): lower the recipe's lr"
                )
            optimizer.step()
            scheduler.step()
            loop.step += 1
            loop.position += recipe.batch_size
            loop.losses.append(float(loss.detach()))
            if progress:
                progress(loop.step, total, loop.losses[-1])
            if (
                checkpoint
                and distributed.is_main()  # one writer; every rank holds the same state
                and time.perf_counter() - last_save >= checkpoint_interval
                and loop.step < total
            ):
                saved_seconds, loop.seconds = loop.seconds, loop.seconds + time.perf_counter() - t0
                save_checkpoint(checkpoint, key, loop, model, optimizer, scheduler, gen)
                loop.seconds, last_save = saved_seconds, time.perf_counter()
    step, losses = loop.step, loop.losses
    seconds = (
        loop.seconds + time.perf_counter() - t0
    )  # the checkpoint is removed by the caller, once the adapter is saved
    model.eval()
    manifest = load_manifest(run_dir)
    record = {
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "base_model": str(base_path),
        **fingerprints,
        "task": manifest["task"],
        "data_hash": manifest["data_hash"],
        "recipe": recipe.to_dict(),
        "train_instances": len(samples),
        "train_ids_sha256": instance_ids_hash(instances),
        "training": {
            "seconds": seconds,
            "steps": step,
            "seconds_per_instance_step": seconds / max(1, step * recipe.batch_size),
            "final_loss": float(np.mean(losses[-steps_per_epoch:])) if losses else None,
        },
    }
    if loop.resumed_at:  # the seconds then add up the processes' training time
        record["training"]["resumed_at_steps"] = loop.resumed_at
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        item_index=item_index,
        recipe=recipe,
        base_model=base_path,
        item_encoder=encoder,
    ), record


def backward_step(model: RecModel, step_samples: list[dict], device: str, precision: str) -> torch.Tensor:
    """One optimiser step's gradients in the trainable parameters' ``.grad``; returns the step's
    mean loss (detached).

    Under torch.distributed (data parallel) each rank takes a contiguous block of the step's
    instances, weights its summed loss by 1 / (the whole step's count) and the ranks'
    gradients are added, which is the single-process mean's gradient up to float rounding (and
    to LoRA dropout, whose masks each rank draws from its own stream: equal results need
    dropout 0). The all-reduce is a plain collective, not DDP: its hooks would fire on the
    scoring passes too, and nothing here needs their overlap on 2 ranks.
    """
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bfloat16")
    if distributed.world()[1] == 1:
        with autocast:
            loss = model.response_losses(collate(step_samples)).float().mean()
        loss.backward()  # outside autocast, as torch recommends
        return loss.detach()
    mine = distributed.my_block(step_samples)
    local = torch.zeros((), device=next(model.parameters()).device)
    if mine:
        with autocast:
            local = model.response_losses(collate(mine)).float().sum() / len(step_samples)
        local.backward()
    trainable = [p for p in model.parameters() if p.requires_grad]
    # a parameter no rank reached keeps no gradient, as alone (AdamW then leaves it and its moments be)
    reached = distributed.all_reduce_sum(torch.tensor([float(p.grad is not None) for p in trainable]))
    for p in trainable:
        if p.grad is None:  # reached elsewhere, or nowhere (dropped again below)
            p.grad = torch.zeros_like(p)
    flat = distributed.all_reduce_sum(torch.cat([p.grad.reshape(-1).float() for p in trainable]))
    offset = 0
    for p, hits in zip(trainable, reached.tolist()):
        p.grad.copy_(flat[offset : offset + p.numel()].view_as(p.grad))
        offset += p.numel()
        if hits == 0:
            p.grad = None
    return distributed.all_reduce_sum(local.detach().float().reshape(1))[0]


def learning_rate_factor(recipe: Recipe, total_steps: int) -> Callable[[int], float]:
    """The learning rate at step ``k`` (0-based) as a multiple of the recipe's: a linear rise over
    ``warmup`` of the steps, then constant or a cosine decay (``schedule``) that reaches 0 after
    the last step."""
    warm = round(recipe.warmup * total_steps)

    def factor(k: int) -> float:
        if k < warm:
            return (k + 1) / (warm + 1)
        if recipe.schedule == "constant":
            return 1.0
        return 0.5 * (1 + math.cos(math.pi * (k - warm) / max(1, total_steps - warm)))

    return factor


def parameter_groups(model: RecModel, recipe: Recipe) -> list[dict[str, Any]]:
    """The trainable parameters with their learning rates: the adapter's at ``lr``, the
    projector's at ``projector_lr`` (it starts from random and is the only path from the
    collaborative embeddings into the LM, so it may learn faster than LoRA's low-rank update)."""
    projector = [p for p in model.projector.parameters() if p.requires_grad] if model.projector is not None else []
    own = {id(p) for p in projector}
    groups = [{"params": [p for p in model.parameters() if p.requires_grad and id(p) not in own], "lr": recipe.lr}]
    if projector:
        groups.append({"params": projector, "lr": recipe.projector_lr or recipe.lr})
    return groups


#: measures the freshly trained model (its training instances given) before v0000 is written;
#: returns the manifest's ``metrics``
Measure = Callable[[LoadedModel, list[Instance]], dict[str, Any]]


def run_recipe(run_dir: Path | str, recipe: Path | str | None = None, base_model: Path | str | None = None) -> Recipe:
    """The recipe ``rec-eraser train`` and ``Run.train`` use: ``recipe`` (a file or a shipped
    recipe's name), by default the shipped ``demo-<task>`` of the run's task; on ``base_model``
    instead of the recipe's own when given."""
    loaded = load_recipe(recipe or f"demo-{load_manifest(run_dir)['task']}")
    return loaded if base_model is None else dataclasses.replace(loaded, base_model=str(base_model))


def train_run(
    run_dir: Path | str, recipe: Recipe, progress: Progress | None = None, measure: Measure | None = None
) -> Path:
    """Train version ``v0000`` of ``run_dir``; returns its folder. Refuses to overwrite one.

    ``measure``: figures of the trained adapter to record in its manifest (``metrics``), taken
    from the model in memory before the version is written, so they are part of it from the start.
    If measuring fails, the version is written without them (and a warning logged): a lineage
    without a recorded gap has it measured by its first calibrated request.
    """
    run_dir = Path(run_dir)
    # no rollback or apply may tidy away the version being written; under torch.distributed
    # rank 0 holds the lock and writes, and every rank trains its share of each step
    with distributed.entered_by_main(lambda: run_lock(run_dir)):
        return _train_run(run_dir, recipe, progress, measure)


def _train_run(run_dir: Path, recipe: Recipe, progress: Progress | None, measure: Measure | None) -> Path:
    target = run_dir / version_name(0)
    if target.exists():
        raise FileExistsError(f"{target} exists: this run is trained already (see `rec-eraser adapters list`)")
    instances = training_instances(run_dir, recipe)
    # an interrupted `rec-eraser train` resumes where it stopped (a hidden file beside the versions)
    memory = PeakMemory()
    with memory.watch():
        loaded, record = _fit(run_dir, recipe, instances, progress, checkpoint_path(run_dir, version_name(0)))
    record["training"]["peak_mb"] = memory.peak_mb
    if measure is not None:
        t0 = time.perf_counter()
        try:
            record["metrics"] = measure(loaded, instances)
            record["training"]["measure_seconds"] = time.perf_counter() - t0
        except Exception as exc:  # the training is worth more than the figures: save it without them
            logger.warning("v0000 is saved without its measurements, which failed: %s", exc)
    if distributed.is_main():
        save_version(
            loaded.model,
            target,
            {"version": version_name(0), "parent": None, "kind": "trained", **record, "events": []},
            files={TRAIN_IDS: train_ids_json(instances)},
        )
        checkpoint_path(run_dir, version_name(0)).unlink(missing_ok=True)
    return target


class TrainingDiverged(RecEraserError, FloatingPointError):
    """The training loss became non-finite; a lower learning rate is the usual fix."""

    exit_code = EXIT_CODES["computation"]


def load_version(run_dir: Path | str, version: str) -> LoadedModel:
    """The model of ``run_dir/version`` (frozen base + adapter + projector), in eval mode."""
    from peft import PeftModel
    from safetensors.torch import load_file

    run_dir = Path(run_dir)
    folder = run_dir / version
    if not (folder / "manifest.json").is_file() and not folder.is_symlink():
        raise FileNotFoundError(f"{folder}: no such adapter version (see `rec-eraser adapters list {run_dir}`)")
    record = verify_version(folder)  # every file the version holds, as written
    recipe = Recipe.from_dict(record.recipe)
    if record.base_model is None:
        raise BaseModelMismatch(f"{folder}: its manifest names no base model; roll back to an earlier version")
    base_path = Path(record.base_model)
    expected = record.base_model_sha256
    if not base_path.is_dir():
        raise BaseModelMismatch(
            f"{folder} was trained on the base model at {base_path}, which is missing: restore it there"
        )
    if expected and base_model_fingerprint(base_path) != expected:
        raise BaseModelMismatch(
            f"{folder} was trained on another base model than the one now at {base_path} "
            "(its config.json changed): restore that model, or retrain"
        )
    weights = record.base_model_weights_sha256  # versions written before it was recorded have none
    if weights and base_model_weights_fingerprint(base_path) != weights:
        raise BaseModelMismatch(
            f"{folder} was trained on other weights than those of the base model now at {base_path} "
            "(its weight files changed under the same config.json): restore that model, or retrain"
        )
    lm, tokenizer = load_causal_lm(base_path)
    try:
        model = PeftModel.from_pretrained(lm, str(folder), is_trainable=True)
    except (RuntimeError, ValueError, KeyError) as exc:  # size mismatches, missing modules
        raise BaseModelMismatch(
            f"{folder} does not fit the base model at {base_path}: {str(exc).splitlines()[0]}"
        ) from exc
    item_index, encoder = None, None
    if (folder / PROJECTOR_FILE).is_file():
        encoder = version_item_encoder(run_dir, record)
        rec, item_index = with_item_tokens(model, encoder, load_file(str(folder / PROJECTOR_FILE)))
    else:
        rec = RecModel(model)
    rec.eval()
    # a version that names where its encoder lies reads one retrained for a deletion (its own or an ancestor's)
    reads_retrained = encoder_holder(record.details) is not None
    return LoadedModel(
        model=rec,
        tokenizer=tokenizer,
        item_index=item_index,
        recipe=recipe,
        base_model=base_path,
        item_encoder=encoder if reads_retrained else None,
    )
