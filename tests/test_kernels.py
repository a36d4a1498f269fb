"""The oneDNN-packed linear layers: same numbers as F.linear, used only when they may be, and a
clean fallback to dense products wherever they cannot be."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from conftest import WIDE

from gpt2lab import GPT2, GPT2Config, kernels
from gpt2lab.model import Linear

SMALL = GPT2Config(n_layer=2, n_head=4, n_embd=64, block_size=64, vocab_size=500)


def perturbed(config: GPT2Config = SMALL, seed: int = 0) -> GPT2:
    torch.manual_seed(seed)
    model = GPT2(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def linears(model: GPT2) -> list[Linear]:
    return [m for m in model.modules() if isinstance(m, Linear)]


@pytest.fixture
def calls(monkeypatch):
    """Count the packed products that run (the oneDNN operator, wrapped)."""
    ops = kernels._ops()
    assert ops is not None, "this PyTorch should have oneDNN's linear operators (x86 CPU wheel)"
    count = {"n": 0}

    def counting(*args):
        count["n"] += 1
        return ops[1](*args)

    monkeypatch.setattr(kernels, "_OPS", [(ops[0], counting)])
    return count


def test_this_machine_packs_fp32():
    # the suite runs on x86 CPU wheels; were this False every other test here would pass vacuously
    assert kernels.works(torch.float32)


def test_packed_logits_match_dense_at_full_width(calls):
    model = perturbed(GPT2Config(**{"n_layer": 2, "n_head": 12, "n_embd": 768, "block_size": 64, "vocab_size": WIDE["vocab_size"]}))
    idx = torch.randint(0, WIDE["vocab_size"], (3, 40), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        dense = model(idx)
        assert calls["n"] == 0
        nbytes = kernels.pack(model, force=True)
        packed = model(idx)
    layers = linears(model)
    assert nbytes == sum(m.weight.numel() * 4 for m in layers)
    assert all(kernels.is_packed(m) for m in layers)
    assert calls["n"] == len(layers)  # every product of the pass went through the packed weights
    assert (packed - dense).abs().max().item() <= 1e-4


def test_packing_twice_reuses_the_packs():
    model = perturbed()
    kernels.pack(model, force=True)
    first = {id(m): kernels._PACKS[m] for m in linears(model)}
    kernels.pack(model, force=True)
    assert all(kernels._PACKS[m] is first[id(m)] for m in linears(model))


def test_a_weight_changed_in_place_is_never_read_stale(calls):
    model = perturbed()
    idx = torch.randint(0, 500, (2, 10))
    kernels.pack(model, force=True)
    with torch.no_grad():
        model.transformer.h[0].mlp.c_fc.weight.mul_(2.0)
        changed = model(idx)
    assert not kernels.is_packed(model.transformer.h[0].mlp.c_fc)
    assert kernels.is_packed(model.transformer.h[1].mlp.c_fc)
    kernels.unpack(model)
    with torch.no_grad():
        assert torch.allclose(changed, model(idx), atol=1e-5)


def test_a_replaced_weight_is_never_read_stale():
    model = perturbed()
    idx = torch.randint(0, 500, (2, 10))
    kernels.pack(model, force=True)
    layer = model.transformer.h[0].attn.c_proj
    layer.weight = torch.nn.Parameter(torch.zeros_like(layer.weight))
    with torch.no_grad():
        got = model(idx)
    kernels.unpack(model)
    with torch.no_grad():
        assert torch.allclose(got, model(idx), atol=1e-5)


def test_training_takes_the_dense_path_and_gets_the_same_gradients(calls):
    model = perturbed()
    idx = torch.randint(0, 500, (2, 12))
    _, loss = model(idx, idx)
    loss.backward()
    want = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    kernels.pack(model, force=True)
    _, loss = model(idx, idx)
    loss.backward()
    assert calls["n"] == 0
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), want))


def test_cpu_autocast_takes_the_dense_path(calls):
    model = perturbed()
    idx = torch.randint(0, 500, (2, 12))
    kernels.pack(model, force=True)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        got = model(idx)
    assert calls["n"] == 0
    assert got.dtype == torch.bfloat16


def test_greedy_generation_is_the_same_with_and_without_packs(monkeypatch):
    model = perturbed(seed=3)
    idx = torch.randint(0, 500, (2, 8), generator=torch.Generator().manual_seed(1))
    monkeypatch.setenv("GPT2LAB_PACKED_LINEAR", "0")
    dense = model.generate(idx, 20, temperature=0)
    assert kernels.pack(model, force=True) == 0  # "0" wins over force
    assert not any(kernels.is_packed(m) for m in linears(model))
    monkeypatch.setenv("GPT2LAB_PACKED_LINEAR", "1")
    packed = model.generate(idx, 20, temperature=0)
    assert all(kernels.is_packed(m) for m in linears(model))  # generate packed the CPU model itself
    assert torch.equal(packed, dense)


def test_unpack_and_copies():
    model = perturbed()
    kernels.pack(model, force=True)
    twin = copy.deepcopy(model)  # the opaque packed tensors live outside the modules
    assert not any(kernels.is_packed(m) for m in linears(twin))
    kernels.unpack(model)
    assert not any(kernels.is_packed(m) for m in linears(model))


def test_without_onednn_nothing_is_packed_and_results_are_unchanged(monkeypatch):
    model = perturbed()
    idx = torch.randint(0, 500, (2, 10))
    with torch.no_grad():
        want = model(idx)
    monkeypatch.setattr(kernels, "_OPS", [None])
    assert kernels.pack(model, force=True) == 0
    with torch.no_grad():
        assert torch.equal(model(idx), want)


def test_a_failing_self_check_disables_packing(monkeypatch):
    ops = kernels._ops()

    def wrong(x, w, b, *rest):
        return ops[1](x, w, b, *rest) + 1.0

    monkeypatch.setattr(kernels, "_OPS", [(ops[0], wrong)])
    monkeypatch.setattr(kernels, "_WORKS", {})
    assert not kernels.works(torch.float32)
    assert kernels.pack(perturbed(), force=True) == 0


def test_too_little_memory_packs_nothing_with_a_warning(monkeypatch):
    model = perturbed()
    monkeypatch.setattr(kernels, "available_memory", lambda: 1000)
    with pytest.warns(UserWarning, match="not packing the weights"):
        assert kernels.pack(model, force=True) == 0
    assert not any(kernels.is_packed(m) for m in linears(model))


def test_bf16_packs_when_the_cpu_can_and_stays_close():
    model = perturbed().to(torch.bfloat16)
    idx = torch.randint(0, 500, (2, 10))
    with torch.no_grad():
        dense = model(idx).float()
        packed_bytes = kernels.pack(model, force=True)
        got = model(idx).float()
    assert (packed_bytes > 0) == kernels.works(torch.bfloat16)
    assert (got - dense).abs().max().item() <= 0.1 * dense.abs().max().item()


def test_linear_is_f_linear_in_conv1d_memory_order():
    layer = Linear(6, 10, conv1d=True)
    assert layer.weight.shape == (10, 6) and layer.weight.stride() == (1, 10)
    x = torch.randn(4, 6)
    assert torch.equal(layer(x), F.linear(x, layer.weight, layer.bias))


@pytest.mark.parametrize(
    "env, machine, vendor, expected",
    [
        ("auto", "x86_64", "AuthenticAMD", True),  # MKL's generic path: oneDNN measured 1.8-3.4x
        ("auto", "x86_64", "GenuineIntel", False),  # MKL's own path: oneDNN measured 0.8-1.1x
        ("auto", "aarch64", "", False),  # unmeasured: keep the dense path
        ("1", "aarch64", "", True),
        ("0", "x86_64", "AuthenticAMD", False),
        ("nonsense", "x86_64", "AuthenticAMD", True),  # anything else means auto
    ],
)
def test_where_packing_is_worthwhile(monkeypatch, env, machine, vendor, expected):
    monkeypatch.setenv("GPT2LAB_PACKED_LINEAR", env)
    monkeypatch.setattr(kernels.platform, "machine", lambda: machine)
    monkeypatch.setattr(kernels, "cpu_vendor", lambda: vendor)
    assert kernels.worthwhile() is expected
    model = perturbed()
    assert (kernels.pack(model) > 0) is expected
    assert all(kernels.is_packed(m) is expected for m in linears(model))


def test_this_machine_reports_its_vendor():
    assert kernels.cpu_vendor() in ("GenuineIntel", "AuthenticAMD")  # the x86 machines this suite runs on
