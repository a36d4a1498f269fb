"""Hook points: names, shapes, the activation cache, and interventions (plain forward, cache, generate)."""

import math

import pytest
import torch
import torch.nn.functional as F

from conftest import perturbed_model
from gpt2lab import GPT2, GPT2Config, kernels
from gpt2lab.errors import InputError
from gpt2lab.model import FINAL_POINTS, LAYER_POINTS

CFG = dict(n_layer=3, n_head=4, n_embd=32, vocab_size=101, block_size=48)
B, T, H, D, C = 2, 9, 4, 8, 32


@pytest.fixture
def model() -> GPT2:
    return perturbed_model(GPT2Config(**CFG))


@pytest.fixture
def idx() -> torch.Tensor:
    return torch.randint(0, CFG["vocab_size"], (B, T), generator=torch.Generator().manual_seed(1))


SHAPES = {
    "resid_pre": (B, T, C), "ln_1.scale": (B, T, 1), "attn.q": (B, H, T, D), "attn.k": (B, H, T, D), "attn.v": (B, H, T, D),
    "attn.scores": (B, H, T, T), "attn.probs": (B, H, T, T), "attn.z": (B, H, T, D), "attn.out": (B, T, C),
    "resid_mid": (B, T, C), "ln_2.scale": (B, T, 1), "mlp.pre": (B, T, 4 * C), "mlp.post": (B, T, 4 * C),
    "mlp.out": (B, T, C), "resid_post": (B, T, C),
}


def test_names_are_the_documented_contract(model):
    names = model.hook_names()
    assert len(names) == len(set(names)) == CFG["n_layer"] * len(LAYER_POINTS) + len(FINAL_POINTS)
    assert names[:3] == ["h.0.resid_pre", "h.0.ln_1.scale", "h.0.attn.q"]
    assert names[-2:] == ["ln_f.scale", "ln_f.out"]
    assert set(LAYER_POINTS) == set(SHAPES)
    doc = __import__("gpt2lab.model", fromlist=["x"]).__doc__
    for point in LAYER_POINTS:  # each documented once, in model.py's docstring
        assert f"h.{{i}}.{point}" in doc or f"h.{{i}}.{point.split('.')[0]}.q|k|v" in doc


def test_cache_holds_every_point_with_its_shape_and_meaning(model, idx):
    with torch.no_grad():
        plain = model(idx)
        logits, cache = model.run_with_cache(idx)
    torch.testing.assert_close(logits, plain, atol=1e-5, rtol=0)  # scores/probs asked: explicit path, same function
    assert list(cache) == model.hook_names()
    for name, tensor in cache.items():
        expected = SHAPES[name.split(".", 2)[2]] if name.startswith("h.") else {"ln_f.scale": (B, T, 1), "ln_f.out": (B, T, C)}[name]
        assert tuple(tensor.shape) == expected, name
    for i in range(CFG["n_layer"]):
        x = cache[f"h.{i}.resid_pre"]
        torch.testing.assert_close(cache[f"h.{i}.ln_1.scale"], torch.sqrt(x.var(-1, keepdim=True, unbiased=False) + 1e-5))
        probs = cache[f"h.{i}.attn.probs"]
        torch.testing.assert_close(probs, cache[f"h.{i}.attn.scores"].softmax(-1))
        torch.testing.assert_close(probs.sum(-1), torch.ones(B, H, T))
        assert torch.all(probs.triu(1) == 0)
        torch.testing.assert_close(cache[f"h.{i}.attn.z"], probs @ cache[f"h.{i}.attn.v"])
        q, k = cache[f"h.{i}.attn.q"], cache[f"h.{i}.attn.k"]
        torch.testing.assert_close(cache[f"h.{i}.attn.scores"].tril(), (q @ k.transpose(-1, -2) / math.sqrt(D)).tril())
        attn = model.transformer.h[i].attn
        z = cache[f"h.{i}.attn.z"].transpose(1, 2).reshape(B, T, C)
        torch.testing.assert_close(cache[f"h.{i}.attn.out"], attn.c_proj(z))
        torch.testing.assert_close(cache[f"h.{i}.resid_mid"], x + cache[f"h.{i}.attn.out"])
        torch.testing.assert_close(cache[f"h.{i}.mlp.post"], F.gelu(cache[f"h.{i}.mlp.pre"], approximate="tanh"))
        torch.testing.assert_close(cache[f"h.{i}.resid_post"], cache[f"h.{i}.resid_mid"] + cache[f"h.{i}.mlp.out"])
        if i + 1 < CFG["n_layer"]:
            assert torch.equal(cache[f"h.{i}.resid_post"], cache[f"h.{i + 1}.resid_pre"])
    torch.testing.assert_close(model.lm_head(cache["ln_f.out"]), plain, atol=1e-5, rtol=0)


def test_cache_keeps_only_what_was_asked(model, idx):
    with torch.no_grad():
        plain = model(idx)
        logits, cache = model.run_with_cache(idx, names=["h.1.attn.z", "h.0.resid_pre"])
    assert list(cache) == ["h.0.resid_pre", "h.1.attn.z"]  # forward order, whatever order was asked
    torch.testing.assert_close(logits, plain, atol=1e-5, rtol=0)  # (packed products on some CPUs: float rounding)
    with torch.no_grad(), kernels.packed(model):  # the same products as run_with_cache: bit for bit
        assert torch.equal(model.run_with_cache(idx, names=["h.1.attn.z"])[0], model(idx))
    _, cache = model.run_with_cache(idx, names=lambda n: n.endswith(".mlp.post"))
    assert list(cache) == [f"h.{i}.mlp.post" for i in range(CFG["n_layer"])]
    assert not cache["h.0.mlp.post"].requires_grad
    _, one = model.run_with_cache(idx, names="ln_f.scale", device="meta")
    assert one["ln_f.scale"].device.type == "meta"
    (logits, loss), _ = model.run_with_cache(idx, names=[], targets=idx)
    assert loss.ndim == 0
    assert not model.points.fns  # nothing left registered


def test_unknown_names_fail_with_a_suggestion(model, idx):
    with pytest.raises(InputError, match="did you mean h.0.attn.probs"):
        model.run_with_cache(idx, names=["h.0.attn.prob"])
    with pytest.raises(InputError, match="no hook point named 'h.9.resid_pre'"):
        with model.hooks({"h.9.resid_pre": lambda x, n: None}):
            pass
    with pytest.raises(InputError, match="not a function"):
        with model.hooks({"h.0.resid_pre": 3}):
            pass
    assert not model.points.fns


def test_a_replacement_changes_what_follows_and_is_removed_after(model, idx):
    with torch.no_grad():
        clean = model(idx)
        seen = []

        def zero_head(z, name):
            seen.append(name)
            z = z.clone()
            z[:, 2] = 0
            return z

        with model.hooks({"h.1.attn.z": zero_head}):
            ablated = model(idx)
        # by hand: the same forward with head 2 of layer 1 removed before c_proj
        _, cache = model.run_with_cache(idx, names=["h.1.attn.z", "h.1.resid_pre"])
        z = cache["h.1.attn.z"].clone()
        z[:, 2] = 0
        block = model.transformer.h[1]
        x = cache["h.1.resid_pre"] + block.attn.c_proj(z.transpose(1, 2).reshape(B, T, C))
        x = x + block.mlp(block.ln_2(x))
        for later in model.transformer.h[2:]:
            x = later(x, None)
        torch.testing.assert_close(ablated, model.lm_head(model.transformer.ln_f(x)), atol=1e-5, rtol=0)
    assert seen == ["h.1.attn.z"]
    assert (ablated - clean).abs().max() > 1e-3
    assert torch.equal(model(idx), clean) and not model.points.fns


def test_hooks_are_removed_after_an_exception_and_nest(model, idx):
    calls = []
    outer = lambda x, n: calls.append(("outer", n))  # noqa: E731
    inner = lambda x, n: calls.append(("inner", n))  # noqa: E731
    with pytest.raises(RuntimeError, match="boom"):
        with model.hooks({"h.0.resid_pre": outer}):
            with model.hooks({"h.0.resid_pre": inner, "ln_f.out": inner}):
                model(idx)
                assert calls == [("outer", "h.0.resid_pre"), ("inner", "h.0.resid_pre"), ("inner", "ln_f.out")]
            assert model.points.fns == {"h.0.resid_pre": [outer]}
            raise RuntimeError("boom")
    assert model.points.fns == {}


def test_a_wrong_shape_is_a_clear_error(model, idx):
    with pytest.raises(ValueError, match=r"hook at 'h.0.attn.q' returned \(2, 4\)"):
        with model.hooks({"h.0.attn.q": lambda q, n: q[:, :, 0, 0]}):
            model(idx)


def test_scale_and_probs_hooks_take_effect(model, idx):
    with torch.no_grad():
        clean = model(idx)
        with model.hooks({"ln_f.scale": lambda s, n: s * 2}):
            halved = model(idx)
        # doubling ln_f's divisor halves the normalised stream: logits = (x_hat / 2 * w + b) Wᵀ
        _, cache = model.run_with_cache(idx, names=["ln_f.out"])
        ln_f = model.transformer.ln_f
        x_hat = (cache["ln_f.out"] - ln_f.bias) / ln_f.weight
        torch.testing.assert_close(halved, model.lm_head(x_hat / 2 * ln_f.weight + ln_f.bias), atol=1e-5, rtol=0)
        uniform = lambda p, n: torch.tril(torch.ones_like(p)) / torch.arange(1, T + 1).view(T, 1)  # noqa: E731
        with model.hooks({"h.0.attn.probs": uniform}):
            flat = model(idx)
        assert (flat - clean).abs().max() > 1e-3


def test_hooks_act_at_every_generation_step(model):
    prompt = torch.randint(0, CFG["vocab_size"], (1, 5), generator=torch.Generator().manual_seed(2))
    shapes = []
    target = 7
    push = model.transformer.wte.weight[target].detach() * 100

    def steer(x, name):  # every position's final stream pushed towards token 7's embedding
        shapes.append(tuple(x.shape))
        return x + push

    with model.hooks({"ln_f.out": steer, "h.0.attn.k": lambda k, n: shapes.append(("k", *k.shape))}):
        out = model.generate(prompt, 4, temperature=0)
    assert out[0, 5:].tolist() == [target] * 4
    assert ("k", 1, H, 5, D) in shapes and ("k", 1, H, 1, D) in shapes  # the prompt, then one new position a step
    assert sum(1 for s in shapes if s[0] != "k") == 4  # one ln_f.out per step (last position only)
    assert model.generate(prompt, 4, temperature=0)[0, 5:].tolist() != [target] * 4


def test_explicit_is_chosen_once_per_model(model, idx):
    with torch.no_grad():
        fused = model(idx)
        model.explicit = True
        assert all(m.points.explicit for m in model.modules() if hasattr(m, "points"))
        torch.testing.assert_close(model(idx), fused, atol=1e-5, rtol=0)
    other = GPT2(GPT2Config(**CFG))
    assert not other.explicit  # each model has its own registry


def test_hooks_act_on_the_static_and_compiled_paths_too(model):
    prompt = torch.randint(0, CFG["vocab_size"], (1, 5), generator=torch.Generator().manual_seed(2))
    push = model.transformer.wte.weight[7].detach() * 100
    seen = []
    with model.hooks({"ln_f.out": lambda x, n: seen.append(n) or x + push}):
        out = model.generate(prompt, 3, temperature=0, static_cache=True)
    assert out[0, 5:].tolist() == [7, 7, 7] and len(seen) == 3
