"""Training a LoRA adapter on a prepared run: a loadable, deterministic, atomic version."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from rec_eraser.models.lm_loss import first_response_logits
from rec_eraser.tasks.prepare import load_instances
from rec_eraser.training.encode import collate, encode_instance
from rec_eraser.training.model import rec_loss
from rec_eraser.training.recipe import Recipe
from rec_eraser.training.scoring import instance_losses, yes_no_scores, yes_no_scores_and_losses
from rec_eraser.training.train import load_version, train_run


def copy_run(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def recipe_for(model_dir) -> Recipe:
    return Recipe(rank=4, alpha=8, epochs=2, batch_size=4, lr=5e-3, max_train=12, base_model=str(model_dir))


def test_trained_version_is_a_loadable_peft_adapter_and_training_is_deterministic(
    tmp_path, tallrec_run, tiny_model_dir
):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    run_a, run_b = copy_run(tallrec_run, tmp_path / "a"), copy_run(tallrec_run, tmp_path / "b")
    steps = []
    v_a = train_run(run_a, recipe_for(tiny_model_dir), progress=lambda s, t, loss: steps.append((s, t)))
    v_b = train_run(run_b, recipe_for(tiny_model_dir))
    assert steps[-1] == (6, 6)  # 12 instances, batch 4, 2 epochs
    assert (v_a / "adapter_config.json").is_file() and (v_a / "adapter_model.safetensors").is_file()
    assert [p.name for p in run_a.iterdir() if p.name.startswith(".") and p.name != ".lock"] == []  # no staging left
    manifest = json.loads((v_a / "manifest.json").read_text())
    assert manifest["train_instances"] == 12 and manifest["training"]["seconds"] > 0
    assert manifest["data_hash"] == json.loads((run_a / "manifest.json").read_text())["data_hash"]
    # plain PEFT can load it
    base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    PeftModel.from_pretrained(base, str(v_a))
    # same seed, same adapter
    from safetensors.torch import load_file

    wa, wb = load_file(str(v_a / "adapter_model.safetensors")), load_file(str(v_b / "adapter_model.safetensors"))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert any(k.endswith("lora_B.weight") and wa[k].abs().sum() > 0 for k in wa)  # it did train
    # reloaded model scores instances the same way twice, and refuses to retrain over v0000
    test = load_instances(run_a, "test")
    loaded = load_version(run_a, "v0000")
    assert loaded.model.lm.base_model.model.model.layers[0].self_attn.q_proj.lora_A["default"].weight.requires_grad
    assert yes_no_scores(loaded, test).shape == (len(test),)
    assert (instance_losses(loaded, test) > 0).all()
    # the one-pass readout the benchmark uses gives the full pass's Yes/No margins and instance_losses' values
    scores, losses = yes_no_scores_and_losses(loaded, test, batch_size=3)
    yes, no = (loaded.tokenizer(w, add_special_tokens=False)["input_ids"][0] for w in (" Yes", " No"))
    with torch.no_grad():
        batch = collate(
            [encode_instance(z, loaded.tokenizer, loaded.item_index, loaded.recipe.max_length) for z in test]
        )
        at = first_response_logits(loaded.model(batch), batch)
    np.testing.assert_allclose(scores, (at[:, yes] - at[:, no]).numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(losses, instance_losses(loaded, test), rtol=1e-5, atol=1e-6)
    # the engine's batched per-instance gradients (padded prompts of different lengths) equal one pass per instance
    assert_batched_fisher_matches(loaded, load_instances(run_a, "train")[:5], passes=2)
    with pytest.raises(FileExistsError, match="trained already"):
        train_run(run_a, recipe_for(tiny_model_dir))


def test_unknown_version_is_refused(tallrec_run):
    with pytest.raises(FileNotFoundError, match="no such adapter version"):
        load_version(tallrec_run, "v0042")


def test_llara_with_item_tokens_trains_the_projector_and_scores_candidates(tmp_path, tiny_model_dir):
    from rec_eraser.tasks.prepare import load_titles, prepare
    from rec_eraser.training.scoring import candidate_scores

    run = tmp_path / "llara"
    prepare("ml-100k", "llara", run, max_users=6, negatives=4)
    recipe = Recipe(
        rank=4,
        alpha=8,
        epochs=1,
        batch_size=4,
        lr=5e-3,
        max_train=8,
        base_model=str(tiny_model_dir),
        sasrec_epochs=2,
        schedule="cosine",
        warmup=0.25,
        precision="bfloat16",
    )
    version = train_run(run, recipe)
    assert (version / "projector.safetensors").is_file() and (run / "item_encoder").is_dir()
    loaded = load_version(run, "v0000")
    assert loaded.model.projector is not None and loaded.item_index
    assert all(p.requires_grad for p in loaded.model.projector.parameters())
    test = load_instances(run, "test")[:2]
    # the prompt ends with the user token, whose input is the projected SASRec state after the history
    z = test[0]
    sample = encode_instance(z, loaded.tokenizer, loaded.item_index, loaded.recipe.max_length)
    with torch.no_grad():
        embeds = loaded.model.input_embeddings(collate([sample]))
        state = loaded.model.user_encoder(torch.tensor([[loaded.item_index[i] for i in z.history_items]]))
        expected = loaded.model.projector(state)[0]
    assert sample["user_pos"].tolist() == [int((sample["labels"] == -100).sum()) - 1]
    torch.testing.assert_close(embeds[0, int(sample["user_pos"][0])], expected)
    assert state.abs().sum() > 0
    # training's loss computes logits on the response positions only; value and gradient are the full pass's
    from rec_eraser.models.lm_loss import per_instance_response_loss

    batch = collate(
        [
            encode_instance(z, loaded.tokenizer, loaded.item_index, loaded.recipe.max_length)
            for z in load_instances(run, "train")[:3]
        ]
    )
    assert len(set((batch["labels"] != -100).int().argmax(1).tolist())) > 1  # responses start at different positions
    params = [p for p in loaded.model.parameters() if p.requires_grad]
    fast = loaded.model.response_losses(batch)
    full = per_instance_response_loss(loaded.model(batch), batch)
    torch.testing.assert_close(fast, full)
    for g_fast, g_full in zip(torch.autograd.grad(fast.sum(), params), torch.autograd.grad(full.sum(), params)):
        torch.testing.assert_close(g_fast, g_full)
    # the engine's loss reads the same response-only logits: same value and gradient as the full pass
    # the projector sees every item token of a batch at once, so its gradient cannot be split by
    # instance: the first batched pass finds that, then one pass per instance
    assert_batched_fisher_matches(loaded, load_instances(run, "train")[:3], passes=1 + 3)
    engine_loss, full = rec_loss(), per_instance_response_loss(loaded.model(batch), batch).mean()
    assert engine_loss.outputs(loaded.model, batch).shape[1] < batch["labels"].shape[1]
    torch.testing.assert_close(engine_loss(loaded.model, batch), full)
    for g_fast, g_full in zip(
        torch.autograd.grad(engine_loss(loaded.model, batch), params), torch.autograd.grad(full, params)
    ):
        torch.testing.assert_close(g_fast, g_full)
    titles = load_titles(run)
    scores = candidate_scores(loaded, test, titles)
    assert scores.shape == (2, 5) and (scores < 0).all()
    # the shared prompt cache must give what one full pass per candidate gives
    for row, z in zip(scores, test):
        with torch.no_grad():
            batch = collate(
                [
                    encode_instance(
                        z, loaded.tokenizer, loaded.item_index, loaded.recipe.max_length, response=" " + titles[c]
                    )
                    for c in z.candidates
                ]
            )
            full = -per_instance_response_loss(loaded.model(batch), batch).numpy()
        np.testing.assert_allclose(row, full, rtol=1e-4, atol=1e-5)
    # the item encoder alone is a baseline of such a run, on the same prompts and candidates
    from rec_eraser.encoders.sasrec import ItemEncoder
    from rec_eraser.evaluation.evaluate import evaluate_version

    result = evaluate_version(run, "v0000", limit=3, generate=False, loaded=loaded)
    encoder = ItemEncoder.load(run / "item_encoder")
    z = load_instances(run, "test")[0]
    after = encoder.next_item_scores([list(z.history_items)])[0]
    first_hit = float(max(z.candidates, key=lambda c: after[encoder.indices([c])[0]].item()) == z.target_item)
    sasrec = result["baselines"]["sasrec"]
    assert sasrec["n"] == 3 and 0 <= sasrec["hit@1"] <= 1 and 0 <= sasrec["ndcg@10"] <= 1
    single = evaluate_version(run, "v0000", limit=1, generate=False, loaded=loaded)["baselines"]["sasrec"]
    assert single["hit@1"] == first_hit


def test_the_projector_has_its_own_learning_rate() -> None:
    from torch import nn

    from rec_eraser.encoders.projector import ItemProjector
    from rec_eraser.training.model import RecModel
    from rec_eraser.training.train import parameter_groups

    lm = nn.Linear(3, 3)
    lm.bias.requires_grad_(False)
    model = RecModel(lm, torch.zeros(2, 4), ItemProjector(4, 3))
    groups = parameter_groups(model, Recipe(lr=1e-3, projector_lr=2e-2))
    assert [g["lr"] for g in groups] == [1e-3, 2e-2]
    assert [len(g["params"]) for g in groups] == [1, 4]  # lm.weight; the projector's two weights and biases
    assert [g["lr"] for g in parameter_groups(model, Recipe(lr=1e-3))] == [1e-3, 1e-3]
    assert [g["lr"] for g in parameter_groups(RecModel(lm), Recipe(lr=1e-3, projector_lr=2e-2))] == [1e-3]


def test_greedy_answers_come_back_as_text(tallrec_run, tiny_model_dir, tmp_path):
    from rec_eraser.training.scoring import generate_answers

    run = copy_run(tallrec_run, tmp_path / "gen")
    train_run(run, Recipe(rank=4, alpha=8, epochs=1, batch_size=4, max_train=4, base_model=str(tiny_model_dir)))
    loaded = load_version(run, "v0000")
    answers = generate_answers(loaded, load_instances(run, "test")[:2], max_new_tokens=3)
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)


def test_a_failed_measurement_does_not_lose_the_training(tmp_path, tallrec_run, tiny_model_dir):
    run = copy_run(tallrec_run, tmp_path / "run")

    def broken(_loaded, _instances):
        raise ZeroDivisionError("a broken measurement")

    version = train_run(
        run,
        Recipe(rank=4, alpha=8, epochs=1, batch_size=4, max_train=4, base_model=str(tiny_model_dir)),
        measure=broken,
    )
    manifest = json.loads((version / "manifest.json").read_text())
    assert (
        manifest["version"] == "v0000" and "metrics" not in manifest and "measure_seconds" not in manifest["training"]
    )


def test_train_and_evaluate_commands(tmp_path, tallrec_run, tiny_model_dir):
    from typer.testing import CliRunner

    from rec_eraser.cli import app

    run = copy_run(tallrec_run, tmp_path / "cli")
    recipe = tmp_path / "r.toml"
    recipe.write_text("[train]\nmax_train = 4\nbatch_size = 4\n")
    runner = CliRunner()
    trained = runner.invoke(
        app, ["train", str(run), "--recipe", str(recipe), "--base-model", str(tiny_model_dir), "--json"]
    )
    assert trained.exit_code == 0, trained.output
    data = json.loads(trained.stdout)
    assert data["version"] == "v0000"
    # the memorisation gap is measured at training and recorded where unlearning requests find it
    manifest = json.loads((run / "v0000" / "manifest.json").read_text())
    assert data["memorisation_gap"]["measured_on"] == "v0000"
    assert data["memorisation_gap"] == manifest["metrics"]["calibration"]["memorisation_gap"]
    assert manifest["training"]["measure_seconds"] > 0 and manifest["training"]["peak_mb"] > 0
    skipped = copy_run(tallrec_run, tmp_path / "cli-no-gap")
    args = [
        "train",
        str(skipped),
        "--recipe",
        str(recipe),
        "--base-model",
        str(tiny_model_dir),
        "--no-measure-gap",
        "--json",
    ]
    no_gap = runner.invoke(app, args)
    assert no_gap.exit_code == 0, no_gap.output
    assert json.loads(no_gap.stdout)["memorisation_gap"] is None
    assert "metrics" not in json.loads((skipped / "v0000" / "manifest.json").read_text())
    evaluated = runner.invoke(app, ["evaluate", str(run), "--json"])
    assert evaluated.exit_code == 0, evaluated.output
    result = json.loads(evaluated.stdout)
    assert 0 <= result["auc"] <= 1 and result["baselines"]["random"]["auc"] == 0.5 and result["n"] == 6
    missing = runner.invoke(app, ["evaluate", str(run), "--version", "v0009"])
    assert missing.exit_code == 1 and "no adapter version" in missing.stderr


def test_the_training_loss_falls_back_to_every_position_for_models_without_logits_to_keep() -> None:
    from types import SimpleNamespace

    from torch import nn

    from rec_eraser.models.lm_loss import IGNORE, pad_collate, per_instance_response_loss
    from rec_eraser.training.model import RecModel

    class PlainLM(nn.Module):  # a causal LM whose forward takes no logits_to_keep
        def __init__(self) -> None:
            super().__init__()
            self.embed, self.head = nn.Embedding(10, 4), nn.Linear(4, 10)

        def get_input_embeddings(self) -> nn.Module:
            return self.embed

        def forward(self, inputs_embeds, attention_mask=None):
            return SimpleNamespace(logits=self.head(inputs_embeds))

    torch.manual_seed(0)
    model = RecModel(PlainLM())
    batch = pad_collate(
        [
            {"input_ids": torch.tensor([1, 2, 3, 4]), "labels": torch.tensor([IGNORE, IGNORE, 3, 4])},
            {"input_ids": torch.tensor([5, 6, 7]), "labels": torch.tensor([IGNORE, 6, 7])},
        ]
    )
    torch.testing.assert_close(model.response_losses(batch), per_instance_response_loss(model(batch), batch))


@pytest.mark.parametrize("init", ["scaled", "default"])
def test_fresh_projector_starts_at_the_token_norm_when_scaled(tmp_path, tiny_model_dir, init):
    from rec_eraser.models.embedded import load_causal_lm
    from rec_eraser.tasks.prepare import prepare
    from rec_eraser.training.train import build_model

    run = tmp_path / "llara"
    prepare("ml-100k", "llara", run, max_users=6, negatives=4)
    recipe = Recipe(rank=4, alpha=8, base_model=str(tiny_model_dir), sasrec_epochs=1, projector_init=init)
    lm, _ = load_causal_lm(tiny_model_dir)
    model, _ = build_model(run, recipe, lm, seed=0)
    tokens = model.lm.get_input_embeddings().weight.detach()
    with torch.no_grad():
        norm = model.projector(model.item_embeddings).norm(dim=-1).mean().item()
    biases = float(model.projector.fc1.bias.detach().abs().sum() + model.projector.fc2.bias.detach().abs().sum())
    if init == "scaled":
        assert norm == pytest.approx(tokens.norm(dim=-1).mean().item(), rel=1e-4) and biases == 0
    else:
        assert biases > 0


def test_a_fresh_llara_model_is_the_same_whether_its_encoder_was_trained_or_found(tmp_path, tiny_model_dir):
    """Training SASRec draws from the global random stream and loading it builds modules that draw
    too; the projector's initialisation and the stream training goes on with must not depend on which."""
    from rec_eraser.models.embedded import load_causal_lm
    from rec_eraser.tasks.prepare import prepare
    from rec_eraser.training.train import ENCODER_DIR, build_model

    run = tmp_path / "llara"
    prepare("ml-100k", "llara", run, max_users=6, negatives=4)
    recipe = Recipe(rank=4, alpha=8, base_model=str(tiny_model_dir), sasrec_epochs=1, projector_init="default")

    def fresh() -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        model, _ = build_model(run, recipe, load_causal_lm(tiny_model_dir)[0], seed=0)
        return {k: v.clone() for k, v in model.projector.state_dict().items()}, torch.rand(4)

    assert not (run / ENCODER_DIR).exists()
    trained, next_draw = fresh()  # trains the encoder and writes it
    assert (run / ENCODER_DIR).exists()
    found, next_draw_again = fresh()  # reads it
    for name, tensor in trained.items():
        torch.testing.assert_close(found[name], tensor, rtol=0, atol=0)
    torch.testing.assert_close(next_draw_again, next_draw, rtol=0, atol=0)


def assert_batched_fisher_matches(loaded, instances, passes: int) -> None:
    """EmpiricalFisher rows from micro-batches of 3 equal those of one instance per pass; ``passes`` were made."""
    from rec_eraser.core import EmpiricalFisher, ParameterSpace
    from rec_eraser.core.curvature import deterministic_mode

    samples = [encode_instance(z, loaded.tokenizer, loaded.item_index, loaded.recipe.max_length) for z in instances]
    space = ParameterSpace(loaded.model)
    with deterministic_mode(loaded.model):
        single = EmpiricalFisher.from_samples(loaded.model, rec_loss(), space, samples, collate, batch_size=1)
        batched = EmpiricalFisher.from_samples(loaded.model, rec_loss(), space, samples, collate, batch_size=3)
    assert batched.passes == passes
    scale = float(single.gradients.abs().max())
    torch.testing.assert_close(batched.gradients, single.gradients, rtol=1e-4, atol=1e-5 * scale)


def test_held_out_users_are_drawn_like_trained_ones_and_never_trained(tallrec_run):
    from rec_eraser.training.recipe import RecipeError
    from rec_eraser.training.train import held_out_instances, training_instances

    plain = Recipe(max_train=40, seed=3)
    holding = Recipe(max_train=40, seed=3, holdout_users=2)
    drawn = training_instances(tallrec_run, plain)
    trained, held = training_instances(tallrec_run, holding), held_out_instances(tallrec_run, holding)
    # the same instance draw, split by user: held-out users have no trained instance
    assert sorted(z.id for z in trained + held) == sorted(z.id for z in drawn)
    assert len({z.user for z in held}) == 2 and not {z.user for z in held} & {z.user for z in trained}
    assert held_out_instances(tallrec_run, plain) == []
    with pytest.raises(RecipeError, match="every one of the"):
        training_instances(tallrec_run, Recipe(max_train=40, seed=3, holdout_users=len({z.user for z in drawn})))
    with pytest.raises(RecipeError, match="holdout_users must be >= 0"):
        Recipe(holdout_users=-1)


def test_length_bucketing_trains_on_batches_of_the_longest_and_the_shortest(
    tallrec_run, tiny_model_dir, tmp_path, monkeypatch
):
    import rec_eraser.training.train as train_module

    seen: list[list[int]] = []
    real_step = train_module.backward_step

    def recording_step(model, batch, *args, **kwargs):
        seen.append(sorted(len(sample["input_ids"]) for sample in batch))
        return real_step(model, batch, *args, **kwargs)

    monkeypatch.setattr(train_module, "backward_step", recording_step)
    run = copy_run(tallrec_run, tmp_path / "bucketed")
    recipe = Recipe(
        rank=4, alpha=8, epochs=2, batch_size=4, max_train=8, base_model=str(tiny_model_dir), length_bucketing=True
    )
    train_run(run, recipe)
    assert len(seen) == 4  # 8 instances, batches of 4, 2 epochs
    for epoch in (seen[:2], seen[2:]):  # one window holds the epoch: its 4 longest share a batch
        shorter, longer = sorted(epoch, key=max)
        assert max(shorter) <= min(longer), epoch
    manifest = json.loads((run / "v0000" / "manifest.json").read_text())
    assert manifest["recipe"]["length_bucketing"] is True


def test_llara_losses_read_from_the_candidate_pass_equal_their_own_pass(
    llara_run, tiny_model_dir, tmp_path, monkeypatch
):
    import dataclasses

    from rec_eraser.tasks.prepare import load_titles
    from rec_eraser.training import scoring

    run = copy_run(llara_run, tmp_path / "llara")
    train_run(
        run,
        Recipe(rank=4, alpha=8, epochs=1, batch_size=4, max_train=4, base_model=str(tiny_model_dir), sasrec_epochs=1),
    )
    loaded = load_version(run, "v0000")
    titles = load_titles(run)
    test = load_instances(run, "test")
    own_passes: list[int] = []
    real = scoring._instance_losses
    monkeypatch.setattr(
        scoring, "_instance_losses", lambda lm, part, *a: own_passes.append(len(part)) or real(lm, part, *a)
    )
    # every candidate's score, whichever length group scored it, is minus the full pass's loss of that response
    with torch.no_grad():
        for z, row in zip(test[:3], scoring.candidate_scores(loaded, test[:3], titles)):
            batch = collate(
                [
                    encode_instance(z, loaded.tokenizer, loaded.item_index, 10**6, response=" " + titles[c])
                    for c in z.candidates
                ]
            )
            np.testing.assert_allclose(row, -loaded.model.response_losses(batch).numpy(), atol=1e-5)
    lengths = [scoring._prompt_length(loaded, z) for z in test]
    # a limit that cuts the longer prompts: where the longest candidate needs more room than the
    # target, the two encodings cut differently and the loss needs its own pass
    for limit, reused_all in ((loaded.recipe.max_length, True), (sorted(lengths)[len(lengths) // 2] + 4, False)):
        own_passes.clear()
        cut = dataclasses.replace(loaded, recipe=dataclasses.replace(loaded.recipe, max_length=limit))
        scores, losses = scoring.candidate_scores_and_losses(cut, test, titles)
        fallback = sum(own_passes)
        expected_scores = scoring.candidate_scores(cut, test, titles)
        expected_losses = scoring.instance_losses(cut, test)
        np.testing.assert_allclose(scores, expected_scores, atol=1e-5)
        np.testing.assert_allclose(losses, expected_losses, atol=1e-4)
        assert (fallback == 0) if reused_all else (0 < fallback < len(test)), (limit, fallback)
