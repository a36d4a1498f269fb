import math

import pytest
import torch
import torch.nn.functional as F

from conftest import perturbed_model
from gpt2lab import GPT2, GPT2Config
from gpt2lab.hooks import HookPoints
from gpt2lab.model import LayerNorm, attention_mask_bias, attention_scores, gelu_exact, gelu_tanh

SMALL = dict(n_layer=3, n_head=4, n_embd=32, vocab_size=101, block_size=48)


@pytest.fixture
def model() -> GPT2:
    return perturbed_model(GPT2Config(**SMALL))  # LayerNorms and biases off their 1/0 initial values


def ids(B: int, T: int, seed: int = 0, vocab: int = SMALL["vocab_size"]) -> torch.Tensor:
    return torch.randint(0, vocab, (B, T), generator=torch.Generator().manual_seed(seed))


def test_logits_shape_and_loss(model):
    x, y = ids(2, 16), ids(2, 16, seed=1)
    logits = model(x)
    assert logits.shape == (2, 16, SMALL["vocab_size"])
    logits2, loss = model(x, y)
    assert torch.equal(logits, logits2)
    manual = -F.log_softmax(logits, -1).gather(-1, y[..., None]).mean()
    torch.testing.assert_close(loss, manual)
    y_ignored = y.clone()
    y_ignored[:, :8] = -100
    _, loss_half = model(x, y_ignored)
    manual_half = -F.log_softmax(logits[:, 8:], -1).gather(-1, y[:, 8:, None]).mean()
    torch.testing.assert_close(loss_half, manual_half)


def test_fresh_model_loss_is_near_uniform():
    torch.manual_seed(0)
    m = GPT2(GPT2Config(**SMALL)).eval()
    _, loss = m(ids(4, 32), ids(4, 32, seed=3))
    assert abs(loss.item() - math.log(SMALL["vocab_size"])) < 0.3


def explicit(module):
    """The same module computing with the written-out formulas."""
    module.explicit = True
    return module


def test_explicit_and_fused_paths_agree(model):
    x = ids(3, 40)
    fused = model(x)
    torch.testing.assert_close(fused, explicit(model)(x), atol=1e-5, rtol=0)
    model.explicit = False
    assert torch.equal(model(x), fused)


def explicit_layernorm(n: int, eps: float = 1e-5) -> LayerNorm:
    ln = LayerNorm(n, eps=eps)
    ln.points = HookPoints()  # its own registry: the shared default of lone modules stays fused
    ln.points.explicit = True
    return ln


def test_building_blocks_equal_their_fused_kernels():
    x = torch.randn(2, 5, 16)
    ln = explicit_layernorm(16)
    with torch.no_grad():
        ln.weight.normal_()
        ln.bias.normal_()
    torch.testing.assert_close(ln(x), F.layer_norm(x, (16,), ln.weight, ln.bias, 1e-5))
    assert not LayerNorm(16).points.explicit  # a lone module's shared default registry stays fused
    torch.testing.assert_close(gelu_tanh(x), F.gelu(x, approximate="tanh"))
    torch.testing.assert_close(gelu_exact(x), F.gelu(x))
    # the tanh form is not the exact one: that difference is why nanoGPT lacks exact parity
    assert (gelu_tanh(x * 3) - gelu_exact(x * 3)).abs().max() > 1e-4


def test_layernorm_output_is_normalised_before_affine():
    ln = explicit_layernorm(64)
    y = ln(torch.randn(3, 7, 64) * 5 + 2)
    torch.testing.assert_close(y.mean(-1), torch.zeros(3, 7), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.var(-1, unbiased=False), torch.ones(3, 7), atol=1e-3, rtol=0)


def test_attention_probabilities_are_causal_rows_summing_to_one(model):
    _, cache = model.run_with_cache(ids(2, 12), names=lambda n: n.endswith("attn.probs"))
    assert len(cache) == SMALL["n_layer"]
    for p in cache.values():
        assert p.shape == (2, SMALL["n_head"], 12, 12)
        torch.testing.assert_close(p.sum(-1), torch.ones(2, SMALL["n_head"], 12))
        assert torch.all(p.triu(diagonal=1) == 0)  # no position looks at the future
        assert torch.all(p[..., 0, 0] == 1)  # the first token can only look at itself


def test_attention_scores_match_reference_formula():
    q, k, v = (torch.randn(2, 3, 6, 8) for _ in range(3))
    reference = q @ k.transpose(-1, -2) / math.sqrt(8) + torch.full((6, 6), float("-inf")).triu(1)
    scores = attention_scores(q, k, None)
    torch.testing.assert_close(scores.softmax(-1), reference.softmax(-1))
    torch.testing.assert_close(scores.softmax(-1) @ v, F.scaled_dot_product_attention(q, k, v, is_causal=True))
    assert torch.all(scores.triu(1)[..., 0, 1:] == torch.finfo(torch.float32).min)  # finfo.min, not -inf, as transformers


def test_causality_future_tokens_do_not_change_the_past(model):
    x = ids(1, 20)
    x2 = x.clone()
    x2[0, 10:] = (x2[0, 10:] + 1) % SMALL["vocab_size"]
    torch.testing.assert_close(model(x)[:, :10], model(x2)[:, :10])


def test_kv_cache_steps_equal_full_forward(model):
    x = ids(2, 30)
    full = model(x)  # (2, 30, V)
    cache = model.new_kv_cache(2)
    assert cache.k.shape == (SMALL["n_layer"], 2, SMALL["n_head"], SMALL["block_size"], SMALL["n_embd"] // SMALL["n_head"])
    prefix = model(x[:, :10], kv_cache=cache)
    torch.testing.assert_close(prefix, full[:, :10], atol=1e-5, rtol=0)
    assert cache.pos == 10
    # one token at a time: positions must continue at 10, 11, ...
    for t in range(10, 20):
        step = model(x[:, t : t + 1], kv_cache=cache)
        torch.testing.assert_close(step[:, 0], full[:, t], atol=1e-5, rtol=0)
    # a chunk of several tokens after a filled cache (causal mask offset by the past)
    chunk = explicit(model)(x[:, 20:30], kv_cache=cache)
    torch.testing.assert_close(chunk, full[:, 20:30], atol=1e-5, rtol=0)
    assert cache.pos == 30


def test_kv_cache_overflow_and_context_errors(model):
    cache = model.new_kv_cache(1, max_len=8)
    model(ids(1, 6), kv_cache=cache)
    with pytest.raises(ValueError, match="KV cache"):
        model(ids(1, 3), kv_cache=cache)
    with pytest.raises(ValueError, match="block_size"):
        model(ids(1, SMALL["block_size"] + 1))


def test_left_padding_with_mask_matches_unpadded(model):
    x = ids(1, 9)
    pad = 4
    padded = torch.cat([torch.zeros(1, pad, dtype=torch.long), x], dim=1)  # (1, 13)
    mask = torch.cat([torch.zeros(1, pad), torch.ones(1, 9)], dim=1).long()
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    expected = model(x)
    for path in (False, True):
        model.explicit = path
        out = model(padded, attention_mask=mask, position_ids=position_ids)
        torch.testing.assert_close(out[:, pad:], expected, atol=1e-5, rtol=0)


def test_mask_bias_shapes():
    assert attention_mask_bias(5, 0, None, dtype=torch.float32, device=torch.device("cpu")) is None
    assert attention_mask_bias(1, 7, None, dtype=torch.float32, device=torch.device("cpu")) is None
    bias = attention_mask_bias(2, 3, None, dtype=torch.float32, device=torch.device("cpu"))
    assert bias.shape == (1, 1, 2, 5)
    assert (bias[0, 0] == 0).tolist() == [[True, True, True, True, False], [True, True, True, True, True]]


def test_lm_head_is_tied_by_reference_or_untied():
    tied = GPT2(GPT2Config(**SMALL))
    assert tied.lm_head.weight is tied.transformer.wte.weight
    untied = GPT2(GPT2Config(**SMALL, tie_word_embeddings=False))
    assert untied.lm_head.weight is not untied.transformer.wte.weight
    assert untied.num_parameters() - tied.num_parameters() == SMALL["vocab_size"] * SMALL["n_embd"]


def test_initialisation_follows_gpt2():
    torch.manual_seed(0)
    cfg = GPT2Config(n_layer=8, n_head=4, n_embd=256, vocab_size=2000, block_size=64)
    m = GPT2(cfg)
    assert abs(m.transformer.wte.weight.std().item() - 0.02) < 1e-3
    assert abs(m.transformer.h[0].mlp.c_fc.weight.std().item() - 0.02) < 1e-3
    scaled = 0.02 / math.sqrt(2 * cfg.n_layer)
    for proj in (m.transformer.h[3].attn.c_proj.weight, m.transformer.h[3].mlp.c_proj.weight):
        assert abs(proj.std().item() - scaled) < 0.1 * scaled
    assert torch.all(m.transformer.h[0].attn.c_attn.bias == 0)
    assert torch.all(m.transformer.ln_f.weight == 1) and torch.all(m.transformer.ln_f.bias == 0)


def test_bias_free_model_has_no_biases():
    m = GPT2(GPT2Config(**SMALL, bias=False, qkv_bias=False))
    assert not [n for n, _ in m.named_parameters() if n.endswith("bias")]
    assert m(ids(1, 5)).shape == (1, 5, SMALL["vocab_size"])


def test_dropout_is_active_in_training_only():
    torch.manual_seed(0)
    m = GPT2(GPT2Config(**SMALL, embd_pdrop=0.5, attn_pdrop=0.5, resid_pdrop=0.5))
    x = ids(1, 10)
    m.train()
    assert not torch.equal(m(x), m(x))
    m.eval()
    assert torch.equal(m(x), m(x))


def test_gradients_reach_every_parameter(model):
    model.train()
    _, loss = model(ids(2, 12), ids(2, 12, seed=5))
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_greedy_generate_equals_argmax_loop(model):
    x = ids(2, 5)
    out = model.generate(x, 12, temperature=0.0)
    assert out.shape == (2, 17) and torch.equal(out[:, :5], x)
    ref = x
    for _ in range(12):
        ref = torch.cat([ref, model(ref)[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(out, ref)


def test_generate_past_the_context_slides_the_window(model):
    x = ids(1, 40)
    out = model.generate(x, 30, temperature=0.0)  # 70 > block_size 48
    assert out.shape == (1, 70)
    # the first tokens after the prompt are plain greedy steps
    assert out[0, 40].item() == model(x)[0, -1].argmax().item()


def test_sampling_is_reproducible_with_a_seed(model):
    x = ids(1, 4)
    a = model.generate(x, 10, temperature=1.0, top_k=20, seed=7)
    b = model.generate(x, 10, temperature=1.0, top_k=20, seed=7)
    assert torch.equal(a, b)
    assert torch.equal(model.generate(x, 6, temperature=1.0, top_k=1, seed=3), model.generate(x, 6, temperature=0.0))
