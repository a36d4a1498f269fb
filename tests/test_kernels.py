"""The oneDNN-packed linear layers: same numbers as F.linear, used only inside ``packed(model)`` and
only while they match the dense weights, and a clean fallback to dense products wherever they cannot be."""

from __future__ import annotations

import copy
import platform

import pytest
import torch
import torch.nn.functional as F

from conftest import WIDE, perturbed_model
from gpt2lab import GPT2, GPT2Config, kernels
from gpt2lab.model import Linear

SMALL = GPT2Config(n_layer=2, n_head=4, n_embd=64, block_size=64, vocab_size=500)

# oneDNN's packed linear operators ship in x86 PyTorch wheels; elsewhere nothing packs, and the tests
# that watch packed products skip (the dense fallback is tested everywhere)
ONEDNN = kernels.works(torch.float32)
NO_ONEDNN = f"no working oneDNN packed linear in this PyTorch on {platform.machine()} (x86 CPU wheels have it)"
needs_onednn = pytest.mark.skipif(not ONEDNN, reason=NO_ONEDNN)


def linears(model: GPT2) -> list[Linear]:
    return [m for m in model.modules() if isinstance(m, Linear)]


def ids(B: int = 2, T: int = 10) -> torch.Tensor:
    return torch.randint(0, SMALL.vocab_size, (B, T), generator=torch.Generator().manual_seed(B * 100 + T))


@pytest.fixture
def calls(monkeypatch):
    """Count the packed products that run (the oneDNN operator, wrapped)."""
    if not ONEDNN:
        pytest.skip(NO_ONEDNN)
    ops = kernels._ops()
    count = {"n": 0}

    def counting(*args):
        count["n"] += 1
        return ops[1](*args)

    monkeypatch.setattr(kernels, "_OPS", [(ops[0], counting)])
    return count


@torch.no_grad()
def dense_logits(model: GPT2, idx: torch.Tensor) -> torch.Tensor:
    """The model's logits with no packed copy anywhere (for reference)."""
    twin = copy.deepcopy(model)  # packs live outside the modules: the copy has none
    return twin(idx)


@pytest.mark.skipif(not kernels.is_x86(), reason="oneDNN's packed linear is only expected in x86 PyTorch wheels")
def test_an_x86_machine_packs_fp32():
    # were this False on x86, the tests below that need oneDNN would skip and test nothing
    assert kernels.works(torch.float32)


@pytest.mark.slow  # a 768-wide model with GPT-2's vocabulary
def test_packed_logits_match_dense_at_full_width(calls):
    model = perturbed_model(GPT2Config(n_layer=2, n_head=12, n_embd=768, block_size=64, vocab_size=WIDE["vocab_size"]))
    idx = torch.randint(0, WIDE["vocab_size"], (3, 40), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        dense = model(idx)
        with kernels.packed(model, force=True) as nbytes:
            got = model(idx)
    layers = linears(model)
    assert nbytes == sum(m.weight.numel() * 4 for m in layers)
    assert calls["n"] == len(layers)  # every product of the pass went through the packed weights
    assert (got - dense).abs().max().item() <= 1e-4


def test_outside_the_block_products_are_dense_and_the_packs_are_kept(calls):
    model = perturbed_model(SMALL)
    with kernels.packed(model, force=True):
        pass
    with torch.no_grad():
        model(ids())
    assert calls["n"] == 0
    assert all(kernels.is_packed(m) for m in linears(model))
    kept = {id(m): kernels._PACKS[m] for m in linears(model)}
    with kernels.packed(model, force=True), torch.no_grad():
        model(ids())
    assert calls["n"] == len(linears(model))
    assert all(kernels._PACKS[m] is kept[id(m)] for m in linears(model))  # unchanged weights: not re-packed


@needs_onednn
def test_blocks_nest():
    model = perturbed_model(SMALL)
    with kernels.packed(model, force=True):
        with kernels.packed(model, force=True):
            assert kernels._PACKS[model.lm_head].active == 2
        assert kernels._PACKS[model.lm_head].active == 1
    assert kernels._PACKS[model.lm_head].active == 0


@needs_onednn
@pytest.mark.parametrize(
    "edit",
    [
        lambda m: m.transformer.h[0].mlp.c_fc.weight.mul_(2.0),  # in place: autograd's counter moves
        lambda m: m.transformer.h[0].mlp.c_fc.weight.data[:, 3].zero_(),  # through .data: the counter does not
        lambda m: m.transformer.h[1].attn.c_attn.weight.data.copy_(m.transformer.h[1].attn.c_attn.weight.data.flip(0)),
        lambda m: setattr(m.transformer.h[0].attn.c_proj, "weight", torch.nn.Parameter(torch.zeros(64, 64))),
        lambda m: m.double().float(),  # new memory, possibly at the old address
    ],
    ids=["in-place", "data-column", "data-permuted", "replaced", "dtype-round-trip"],
)
def test_an_edited_weight_is_never_read_stale(edit):
    model = perturbed_model(SMALL)
    idx = ids()
    with kernels.packed(model, force=True):
        pass
    with torch.no_grad():
        edit(model)
        want = dense_logits(model, idx)
        with kernels.packed(model, force=True):
            got = model(idx)
    assert (got - want).abs().max().item() <= 1e-5


def test_an_in_place_edit_inside_the_block_turns_that_layer_dense(calls):
    model = perturbed_model(SMALL)
    idx = ids()
    with kernels.packed(model, force=True), torch.no_grad():
        model.transformer.h[0].mlp.c_fc.weight.mul_(2.0)
        got = model(idx)
        assert calls["n"] == len(linears(model)) - 1
    assert torch.allclose(got, dense_logits(model, idx), atol=1e-5)


def test_a_model_made_under_inference_mode_packs_and_generates(calls):
    with torch.inference_mode():
        model = perturbed_model(SMALL)
        idx = ids()
        want = dense_logits(model, idx)
        with kernels.packed(model, force=True):
            got = model(idx)
        assert calls["n"] == len(linears(model))
        assert (got - want).abs().max().item() <= 1e-5
        model.generate(idx, 3, temperature=0)  # no version counters to read: still works


def test_training_takes_the_dense_path_and_gets_the_same_gradients(calls):
    model = perturbed_model(SMALL)
    idx = ids(2, 12)
    _, loss = model(idx, idx)
    loss.backward()
    want = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    with kernels.packed(model, force=True):
        _, loss = model(idx, idx)
        loss.backward()
    assert calls["n"] == 0
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), want))


def test_cpu_autocast_takes_the_dense_path(calls):
    model = perturbed_model(SMALL)
    with kernels.packed(model, force=True), torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        got = model(ids())
    assert calls["n"] == 0
    assert got.dtype == torch.bfloat16


def test_generate_and_evaluate_use_the_packs_and_change_nothing(monkeypatch, calls):
    from gpt2lab.evaluate import evaluate

    model = perturbed_model(SMALL, seed=3)
    idx = ids(2, 8)
    text = ids(1, 150)[0]
    monkeypatch.setenv("GPT2LAB_PACKED_LINEAR", "0")
    dense = model.generate(idx, 20, temperature=0)
    dense_eval = evaluate(model, text, block_size=32)
    assert calls["n"] == 0 and not any(kernels.is_packed(m) for m in linears(model))
    monkeypatch.setenv("GPT2LAB_PACKED_LINEAR", "1")
    packed = model.generate(idx, 20, temperature=0)
    assert calls["n"] > 0
    n = calls["n"]
    packed_eval = evaluate(model, text, block_size=32)
    assert calls["n"] > n
    assert torch.equal(packed, dense)
    assert packed_eval.loss == pytest.approx(dense_eval.loss, abs=1e-5)


def test_env_zero_wins_over_force(monkeypatch):
    monkeypatch.setenv("GPT2LAB_PACKED_LINEAR", "0")
    model = perturbed_model(SMALL)
    with kernels.packed(model, force=True) as nbytes:
        assert nbytes == 0
    assert not any(kernels.is_packed(m) for m in linears(model))


def test_unpack_and_copies():
    model = perturbed_model(SMALL)
    kernels.pack(model, force=True)
    twin = copy.deepcopy(model)
    assert not any(kernels.is_packed(m) for m in linears(twin))
    kernels.unpack(model)
    assert not any(kernels.is_packed(m) for m in linears(model))


def test_without_onednn_nothing_is_packed_and_results_are_unchanged(monkeypatch):
    model = perturbed_model(SMALL)
    with torch.no_grad():
        want = model(ids())
    monkeypatch.setattr(kernels, "_OPS", [None])
    with kernels.packed(model, force=True) as nbytes, torch.no_grad():
        assert nbytes == 0
        assert torch.equal(model(ids()), want)


@needs_onednn
def test_a_failing_self_check_disables_packing(monkeypatch):
    ops = kernels._ops()

    def wrong(x, w, b, *rest):
        return ops[1](x, w, b, *rest) + 1.0

    monkeypatch.setattr(kernels, "_OPS", [(ops[0], wrong)])
    monkeypatch.setattr(kernels, "_WORKS", {})
    assert not kernels.works(torch.float32)
    assert kernels.pack(perturbed_model(SMALL), force=True) == 0


@needs_onednn
def test_too_little_memory_packs_nothing_with_a_warning(monkeypatch):
    model = perturbed_model(SMALL)
    monkeypatch.setattr(kernels, "available_memory", lambda: 1000)
    with pytest.warns(UserWarning, match="not packing the weights"):
        assert kernels.pack(model, force=True) == 0
    assert not any(kernels.is_packed(m) for m in linears(model))


def test_bf16_packs_when_the_cpu_can_and_stays_close():
    model = perturbed_model(SMALL).to(torch.bfloat16)
    idx = ids()
    with torch.no_grad():
        dense = model(idx).float()
        with kernels.packed(model, force=True) as nbytes:
            got = model(idx).float()
    assert (nbytes > 0) == kernels.works(torch.bfloat16)
    assert (got - dense).abs().max().item() <= 0.1 * dense.abs().max().item()


def test_fingerprint_sees_any_change_and_only_a_change():
    w = torch.randn(48, 32).t()  # Conv1D memory order
    before = kernels._fingerprint(w)
    assert kernels._fingerprint(w) == before
    w2 = w.clone()
    w2[5, 7] += 1e-3
    assert kernels._fingerprint(w2) != before
    assert kernels._fingerprint(w[[1, 0] + list(range(2, 32))]) != before  # two rows swapped


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
    if not ONEDNN:
        pytest.skip(NO_ONEDNN)
    model = perturbed_model(SMALL)
    assert (kernels.pack(model) > 0) is expected
    assert all(kernels.is_packed(m) is expected for m in linears(model))


@pytest.mark.skipif(not kernels.is_x86(), reason="the vendor string is read on x86 machines only")
def test_an_x86_machine_reports_its_vendor():
    assert kernels.cpu_vendor() in ("GenuineIntel", "AuthenticAMD")
