"""LLaRA's item projector: shapes, architecture and gradients."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rec_eraser.encoders import ItemProjector


def test_shapes_and_architecture() -> None:
    torch.manual_seed(0)
    proj = ItemProjector(64, 96)
    assert isinstance(proj.fc1, nn.Linear) and isinstance(proj.fc2, nn.Linear)
    assert proj.fc1.weight.shape == (96, 64) and proj.fc2.weight.shape == (96, 96)
    assert isinstance(proj.act, nn.GELU)
    assert proj(torch.randn(3, 64)).shape == (3, 96)
    assert proj(torch.randn(2, 5, 64)).shape == (2, 5, 96)
    x = torch.randn(4, 64)
    expected = proj.fc2(nn.functional.gelu(proj.fc1(x)))
    assert torch.allclose(proj(x), expected)
    assert proj.config() == {"in_dim": 64, "out_dim": 96}
    assert ItemProjector(**proj.config()).fc2.weight.shape == (96, 96)


def test_wrong_width_errors() -> None:
    with pytest.raises(ValueError, match="width 32"):
        ItemProjector(64, 8)(torch.randn(2, 32))
    with pytest.raises(ValueError):
        ItemProjector(0, 8)


def test_gradients_reach_every_parameter() -> None:
    torch.manual_seed(0)
    proj = ItemProjector(16, 24)
    names = [n for n, p in proj.named_parameters() if p.requires_grad]
    assert names == ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]
    emb = torch.randn(5, 16)  # e.g. SASRec embeddings: frozen input
    loss = proj(emb).pow(2).mean()
    loss.backward()
    for name, p in proj.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_casts_input_to_its_dtype() -> None:
    proj = ItemProjector(8, 4).to(torch.float64)
    assert proj(torch.randn(2, 8)).dtype == torch.float64


def test_scale_to_gives_distinct_items_at_the_asked_norm() -> None:
    torch.manual_seed(0)
    items = torch.randn(300, 64) / 8  # SASRec-like: 64 wide, norm about 1
    default, scaled = ItemProjector(64, 576), ItemProjector(64, 576)
    scaled.load_state_dict(default.state_dict())
    scaled.scale_to(items, out_norm=3.0)
    assert scaled.fc1.bias.abs().sum() == 0 and scaled.fc2.bias.abs().sum() == 0
    with torch.no_grad():
        assert (items @ scaled.fc1.weight.T).std().item() == pytest.approx(1.0, rel=1e-5)
        out = scaled(items)
        assert out.norm(dim=-1).mean().item() == pytest.approx(3.0, rel=1e-5)

        def mean_cosine(x: torch.Tensor) -> float:
            return nn.functional.cosine_similarity(x[:, None], x[None, :], dim=-1).mean().item()

        # the default start maps items to nearly one vector (its biases dominate), at under a
        # third of the asked norm; the scaled one keeps them apart (0.70 and 0.19 here)
        assert mean_cosine(default(items)) > 0.6 and mean_cosine(out) < 0.3
        assert default(items).norm(dim=-1).mean() < 1.0
    with pytest.raises(ValueError, match="out_norm must be positive"):
        scaled.scale_to(items, out_norm=0.0)
