"""The residual and activation experiments: their numbers and their pictures."""

from __future__ import annotations

import math

import pytest
import torch
from PIL import Image

from gpt2lab import GPT2, GPT2Config, GPT2LabError
from gpt2lab.cli import main
from gpt2lab.experiments import (
    activation_experiment,
    gpt2_forward_without_shortcuts,
    plot_activations,
    plot_residuals,
    residual_experiment,
)


def small_gpt2(n_layer: int = 6) -> GPT2:
    torch.manual_seed(0)
    return GPT2(GPT2Config(n_layer=n_layer, n_head=2, n_embd=32, vocab_size=100, block_size=32))


@pytest.mark.parametrize("depth, width", [(8, 16), (12, 32), (20, 8)])
def test_early_layers_get_less_gradient_without_shortcuts(depth, width):
    r = residual_experiment(depth, width)
    assert len(r.with_shortcuts) == len(r.without_shortcuts) == depth
    assert all(g > 0 and math.isfinite(g) for g in r.with_shortcuts + r.without_shortcuts)
    # without shortcuts the gradient shrinks on its way back: the first layer gets far less
    assert r.without_shortcuts[0] < r.with_shortcuts[0] / 10
    assert r.without_shortcuts[0] < r.without_shortcuts[-1]
    # with shortcuts the first layer keeps a gradient of the same order as the last
    assert r.with_shortcuts[0] > r.with_shortcuts[-1] / 10


def test_gpt2_blocks_with_and_without_shortcuts():
    model = small_gpt2()
    model.train()
    r = residual_experiment(4, 8, model=model, model_name="tiny", seq_len=16)
    assert len(r.gpt2_with) == len(r.gpt2_without) == 6
    assert all(g > 0 and math.isfinite(g) for g in r.gpt2_with + r.gpt2_without)
    assert r.gpt2_with != r.gpt2_without
    assert model.training and all(p.grad is None for p in model.parameters())  # left as found
    text = r.to_text()
    assert "GPT-2 blocks (tiny)" in text and "with shortcuts" in text


def test_forward_without_shortcuts_is_the_ablated_network():
    model = small_gpt2(n_layer=1).eval()
    idx = torch.randint(0, 100, (2, 9))
    block = model.transformer.h[0]
    with torch.no_grad():
        x = model.transformer.wte(idx) + model.transformer.wpe(torch.arange(9))
        x = block.attn(block.ln_1(x), None)  # replaced, not added
        x = block.mlp(block.ln_2(x))
        expected = model.lm_head(model.transformer.ln_f(x))
        got = gpt2_forward_without_shortcuts(model, idx)
        assert torch.equal(got, expected)
        assert not torch.allclose(got, model(idx))  # and it is not the real network


def test_activation_numbers():
    r = activation_experiment()
    g, e, relu = "GELU (tanh, GPT-2's)", "GELU (exact erf)", "ReLU"
    assert r.at(e, 1.0) == pytest.approx(0.5 * (1 + math.erf(1 / math.sqrt(2))), abs=1e-12)  # x Phi(x) at 1
    assert r.at(g, 0.0) == 0.0 and r.at(g, 0.0, derivative=True) == pytest.approx(0.5)
    assert r.at(relu, -1.0, True) == 0.0 and r.at(relu, 2.0, True) == 1.0 and r.at(relu, 2.0) == 2.0
    diff = (r.values[g] - r.values[e]).abs().max().item()
    assert 1e-5 < diff < 1e-3  # close but not the same function
    assert r.values[g].min().item() == pytest.approx(-0.17, abs=2e-3)  # GELU dips below zero near x = -0.75
    text = r.to_text()
    assert "differs from the exact GELU by at most" in text and "gelu_tanh'" in text


def test_pngs_are_valid(tmp_path):
    res = plot_residuals(residual_experiment(6, 8, model=small_gpt2(), seq_len=8), tmp_path / "r.png")
    act = plot_activations(activation_experiment(), tmp_path / "a.png")
    for path, size in ((res, (1300, 460)), (act, (1600, 460))):
        with Image.open(path) as img:
            assert img.format == "PNG" and img.size == size
            assert torch.tensor(list(img.convert("L").tobytes()), dtype=torch.float32).std() > 10


def test_cli(tmp_path, capsys):
    small = tmp_path / "small"
    small_gpt2(n_layer=3).save_pretrained(small)
    assert main(["experiment", "residuals", "--depth", "6", "--width", "8", "--model", str(small), "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "mean |gradient|" in out and "GPT-2 blocks" in out and (tmp_path / "residuals.png").is_file()
    assert main(["experiment", "activations", "--out", str(tmp_path)]) == 0
    assert "GELU" in capsys.readouterr().out and (tmp_path / "activations.png").is_file()
    assert main(["experiment", "residuals", "--depth", "1", "--model", str(small), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "depth must be at least 2" in err


def test_bad_depth_is_a_user_error():
    with pytest.raises(GPT2LabError):
        residual_experiment(1, 8)
