"""Trace: the recorded points are the real forward pass, stage by stage."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from gpt2lab import GPT2, GPT2Config, GPT2LabError
from gpt2lab.cli import main
from gpt2lab.model import gelu_tanh
from gpt2lab.trace import trace

KINDS = ["ln_1", "attn", "resid_mid", "ln_2", "mlp.fc", "mlp.act", "mlp", "resid_out"]


@pytest.fixture(scope="module")
def model(hf_tiny):
    return GPT2.from_pretrained(hf_tiny[1])  # perturbed random weights, 2 layers, width 64, vocab 1000


@pytest.fixture(scope="module")
def ids():
    return torch.randint(0, 1000, (23,), generator=torch.Generator().manual_seed(3)).tolist()


def test_logits_are_exactly_the_models(model, ids):
    idx = torch.tensor([ids])
    with torch.no_grad():
        expected = model(idx)
        model.explicit = True
        expected_explicit = model(idx)
        model.explicit = False
    tr = trace(model, None, ids)
    assert torch.equal(tr.logits, expected)
    assert torch.equal(tr["logits"].tensor if tr["logits"].tensor is not None else tr.logits, expected)
    assert torch.equal(trace(model, None, idx, explicit=True).logits, expected_explicit)
    assert not model.explicit and not model.points.fns  # the model is left as it was
    top = torch.topk(torch.softmax(expected[0, -1], -1), 5)
    assert [i for i, _, _ in tr.top_next] == top.indices.tolist()
    assert [p for _, _, p in tr.top_next] == pytest.approx(top.values.tolist())


def test_points_in_order_with_shapes_from_the_config(model, ids):
    cfg, T = model.config, len(ids)
    tr = trace(model, None, ids)
    expected = ["embed.tok", "embed.pos", "embed.sum"] + [f"h.{i}.{k}" for i in range(cfg.n_layer) for k in KINDS] + ["ln_f", "logits"]
    assert tr.names() == expected
    C, F_, V = cfg.n_embd, cfg.mlp_dim, cfg.vocab_size
    for p in tr.points:
        want = {"embed.pos": (1, T, C), "mlp.fc": (1, T, F_), "mlp.act": (1, T, F_), "logits": (1, T, V)}.get(p.kind, (1, T, C))
        assert p.shape == want, p.name
        assert p.tensor is None  # not asked for
    sub = trace(model, None, ids, layers="1")
    assert [p.name for p in sub.points if p.layer is not None] == [f"h.1.{k}" for k in KINDS]
    assert torch.equal(sub.logits, tr.logits)  # tracing fewer layers changes nothing in the pass


def test_points_are_what_the_stages_compute(model, ids):
    tr = trace(model, None, ids, tensors=True)
    t = {p.name: p.tensor for p in tr.points}
    assert torch.equal(t["embed.sum"], t["embed.tok"] + t["embed.pos"])
    for i in range(model.config.n_layer):
        stream_in = t["embed.sum"] if i == 0 else t[f"h.{i - 1}.resid_out"]
        assert torch.equal(t[f"h.{i}.resid_mid"], stream_in + t[f"h.{i}.attn"])  # the first residual add
        assert torch.equal(t[f"h.{i}.resid_out"], t[f"h.{i}.resid_mid"] + t[f"h.{i}.mlp"])  # the second
        torch.testing.assert_close(t[f"h.{i}.mlp.act"], gelu_tanh(t[f"h.{i}.mlp.fc"]), atol=1e-5, rtol=1e-5)
        ln = model.transformer.h[i].ln_1
        torch.testing.assert_close(t[f"h.{i}.ln_1"], F.layer_norm(stream_in, (stream_in.size(-1),), ln.weight, ln.bias, ln.eps))
    for p in tr.points:  # statistics describe the tensor
        assert p.mean == pytest.approx(p.tensor.mean().item(), abs=1e-6)
        assert p.max == p.tensor.max().item() and p.min == p.tensor.min().item()
        assert p.norm == pytest.approx(p.tensor.norm().item(), rel=1e-5)


def test_layernorm_points_normalise_each_token(model, ids):
    tr = trace(model, None, ids, tensors=True)
    ln_points = [p for p in tr.points if p.kind in ("ln_1", "ln_2", "ln_f")]
    assert len(ln_points) == 2 * model.config.n_layer + 1
    stream = {"ln_1": "embed.sum", "ln_2": "h.0.resid_mid"}
    for p in ln_points:
        assert len(p.ln_token_mean) == len(p.ln_token_var) == len(ids)
        assert max(abs(m) for m in p.ln_token_mean) < 1e-5
        assert all(abs(v - 1) < 5e-3 for v in p.ln_token_var)  # var / (var + eps), eps = 1e-5
    # checked independently of the trace's own arithmetic: undo the affine step of the model's output
    for p in (tr["h.0.ln_1"], tr["h.0.ln_2"]):
        ln = getattr(model.transformer.h[0], p.kind)
        x_hat = (p.tensor - ln.bias) / ln.weight  # (1, T, C), before scale and shift
        assert x_hat.mean(-1).abs().max() < 1e-4
        torch.testing.assert_close(x_hat.var(-1, unbiased=False), torch.tensor(p.ln_token_var)[None], atol=1e-3, rtol=1e-3)
        assert stream[p.kind] in tr.names()
    assert any(p.ln_token_mean is not None for p in tr.points) and tr["h.0.attn"].ln_token_mean is None


MEMORY_SCRIPT = textwrap.dedent("""
    import sys, torch
    from gpt2lab import GPT2, GPT2Config
    from gpt2lab.trace import trace
    torch.manual_seed(0)
    model = GPT2(GPT2Config(n_layer=8, n_head=4, n_embd=256, vocab_size=64, block_size=1024)).eval()
    ids = torch.randint(0, 64, (1024,))
    with torch.no_grad():
        model(ids[None])  # warm up the allocator and lazy initialisation
    def status(key):  # kB, from the kernel's view of this process
        line = next(l for l in open("/proc/self/status") if l.startswith(key + ":"))
        return int(line.split()[1])
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak resident size (VmHWM) to the current one
    before = status("VmRSS")
    layers = None if sys.argv[1] == "all" else [int(sys.argv[1])]
    trace(model, None, ids, layers=layers, tensors=sys.argv[2] == "1")
    print((status("VmHWM") - before) / 1024)  # MiB of peak growth during the trace
""")


def peak_growth_mib(layers: str, tensors: bool) -> float:
    # a fixed mmap threshold: glibc then hands every large tensor back to the kernel when it is
    # freed, so the peak reflects the tensors alive at once and not the allocator's caching
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
    out = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, layers, "1" if tensors else "0"],
                         capture_output=True, text=True, check=True, env=env)
    return float(out.stdout.strip())


def test_memory_stays_flat_without_tensors():
    # each traced layer holds 14 x T x C floats = 14.7 MB here; 8 layers with tensors ~ 117 MB
    one, every = peak_growth_mib("0", False), peak_growth_mib("all", False)
    kept = peak_growth_mib("all", True)
    assert every < one + 4, (one, every)  # tracing 8 layers costs what tracing 1 does
    assert kept > every + 80, (every, kept)  # and the measurement does see tensors being kept


def test_input_errors(model, ids):
    with pytest.raises(GPT2LabError, match="layer 5 does not exist"):
        trace(model, None, ids, layers=[5])
    with pytest.raises(GPT2LabError, match="layers 0..1"):
        trace(model, None, ids, layers="0,7")
    with pytest.raises(GPT2LabError, match="more than the model.s context of 128"):
        trace(model, None, list(range(129)))
    with pytest.raises(GPT2LabError, match="tokenizer"):
        trace(model, None, "some text")
    with pytest.raises(GPT2LabError, match="outside this model's vocabulary"):
        trace(model, None, [1, 2, 5000])
    assert trace(model, None, ids, layers=[-1]).layers == [1]


@pytest.fixture(scope="module")
def gpt2_vocab_model(tmp_path_factory):
    """A small random model with GPT-2's vocabulary, saved as a checkpoint."""
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("vocab_model")
    GPT2(GPT2Config(n_layer=3, n_head=2, n_embd=32, block_size=64)).save_pretrained(path)
    return path


def test_text_with_the_gpt2_tokenizer(gpt2_vocab_path, gpt2_vocab_model):
    from gpt2lab.tokenizer import Tokenizer

    tok = Tokenizer.from_file(gpt2_vocab_path)
    model = GPT2.from_pretrained(gpt2_vocab_model)
    tr = trace(model, tok, "Hello world, again")
    assert tr.ids == tok.encode("Hello world, again") and "".join(tr.tokens) == "Hello world, again"
    text = tr.to_text()
    assert "␣world" in text and "next token after" in text and "h.2.resid_out" in text
    assert len(tr.top_next) == 5 and all(tok.decode([i]) == s for i, s, _ in tr.top_next)
    with pytest.raises(GPT2LabError, match="more than the model.s context of 64"):
        trace(model, tok, "word " * 100)


def test_png_is_a_valid_image(model, ids, tmp_path):
    path = trace(model, None, ids).plot(tmp_path / "trace.png")
    with Image.open(path) as img:
        assert img.format == "PNG" and img.size == (1600, 480)
        pixels = torch.tensor(list(img.convert("L").tobytes()), dtype=torch.float32)
    assert pixels.std() > 10  # something is drawn, not a blank canvas


def test_cli(gpt2_vocab_path, gpt2_vocab_model, tmp_path, capsys):
    from safetensors.torch import load_file

    out = tmp_path / "out"
    assert main(["trace", "--model", str(gpt2_vocab_model), "--text", "The cat sat", "--tokenizer", str(gpt2_vocab_path),
                 "--layers", "0,2", "--out", str(out), "--tensors"]) == 0
    printed = capsys.readouterr().out
    assert "3 tokens: The ␣cat ␣sat" in printed and "h.2.mlp.act" in printed and "h.1." not in printed
    assert "next token after '␣sat'" in printed and len(printed.split("next token after")[1].splitlines()) == 1 + 5 + 3
    assert Image.open(out / "trace.png").size == (1600, 480)
    saved = load_file(out / "trace_tensors.safetensors")
    assert saved["h.0.mlp.fc"].shape == (1, 3, 128) and saved["logits"].shape == (1, 3, 50257)
    assert main(["trace", "--model", str(gpt2_vocab_model), "--random", "--ids", "1 2 3"]) == 0  # same shape, random weights
    assert "traced all layers of 3" in capsys.readouterr().out


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--ids", "1 2 3", "--layers", "3"], "layer 3 does not exist"),
        (["--ids", "1 x 3"], "--ids must be whole numbers"),
        (["--ids", " ".join(["5"] * 65)], "more than the model's context of 64"),
        (["--ids", "1", "--tensors"], "--tensors needs --out"),
    ],
)
def test_cli_errors(gpt2_vocab_model, extra, message, capsys):
    assert main(["trace", "--model", str(gpt2_vocab_model), *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
