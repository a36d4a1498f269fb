"""The architecture explainer: counts for presets and for printed trees, memory and FLOPs against
hand arithmetic and against a real forward pass, renderers and the command line."""

from __future__ import annotations

import json
import re

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from gpt2lab import GPT2, ConfigError, GPT2Config
from gpt2lab.cli import main
from gpt2lab.explain import explain, explain_repr, parse_repr
from gpt2lab.flops import flops_per_token

PRESET_TOTALS = {"gpt2": 124_439_808, "gpt2-medium": 354_823_168, "gpt2-large": 774_030_080, "gpt2-xl": 1_557_611_200}


def hf_repr(**config) -> tuple[str, int]:
    """print(model) of a transformers GPT2LMHeadModel of this shape, and its real parameter count."""
    from transformers import GPT2Config as HFConfig
    from transformers import GPT2LMHeadModel

    with torch.device("meta"):  # only the shapes matter
        hf = GPT2LMHeadModel(HFConfig(**config))
    return repr(hf), sum(p.numel() for p in hf.parameters())  # parameters() yields the tied matrix once


def strip_indent(text: str) -> str:
    return "\n".join(line.strip() for line in text.splitlines())


# -- presets ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(PRESET_TOTALS))
def test_preset_counts(name):
    ex = explain(name)
    cfg = GPT2Config.from_preset(name)
    assert ex.params["total"] == PRESET_TOTALS[name]
    assert ex.params["total_untied"] == PRESET_TOTALS[name] + cfg.vocab_size * cfg.n_embd
    assert ex.tree[0].params == PRESET_TOTALS[name]  # the root line of the tree sums all
    with torch.device("meta"):
        model = GPT2(cfg)
    assert ex.params["per_block"] == sum(p.numel() for p in model.transformer.h[0].parameters())
    # every leaf line of the tree carries the real parameters of the module it names (inside the
    # folded "(0-11): 12 x Block(", the lines describe one block, as print(model) does)
    real = {n: sum(p.numel() for p in m.parameters(recurse=False)) for n, m in model.named_modules()}
    assert next(t for t in ex.tree if "(c_attn)" in t.text).params == real["transformer.h.0.attn.c_attn"]
    assert next(t for t in ex.tree if " x Block(" in t.text).params == cfg.n_layer * ex.params["per_block"]
    assert next(t for t in ex.tree if "(wte)" in t.text).params == real["transformer.wte"]


def test_gpt2_arithmetic_in_words():
    text = explain("gpt2").to_text()
    for figure in ("7,087,872", "124,439,808", "163,037,184", "12 x 7,087,872", "768 x 2,304 + 2,304", "50,257 tokens x 768"):
        assert figure in text
    assert "turns each of the 50,257 token ids into a 768-number vector" in text
    for component in ("Token embedding", "Position embedding", "Dropout", "Block", "LayerNorm", "fused QKV",
                      "Conv1D vs Linear", "GELU", "Final LayerNorm", "weight tying"):
        assert component in text
    lm_head = next(t for t in explain("gpt2").tree if "(lm_head)" in t.text)
    assert lm_head.params == 0 and lm_head.note == "tied to wte" and lm_head.output_shape == (1, 1024, 50257)


def test_untied_config_counts_the_head():
    ex = explain(GPT2Config.from_preset("gpt2", tie_word_embeddings=False))
    assert ex.params["total"] == 163_037_184 and ex.params["total_tied"] == 124_439_808
    assert next(t for t in ex.tree if "(lm_head)" in t.text).params == 38_597_376


def test_model_and_checkpoint_directory(hf_tiny):
    hf, path = hf_tiny
    real = sum(p.numel() for p in hf.parameters())
    assert explain(str(path)).params["total"] == real  # reads config.json only
    model = GPT2(GPT2Config.from_json_file(path / "config.json"))
    ex = explain(model, seq_len=7, batch=2)
    assert ex.params["total"] == model.num_parameters() == real and not ex.notes
    assert next(t for t in ex.tree if "(c_fc)" in t.text).output_shape == (2, 7, 4 * 64)
    assert explain(hf).params["total"] == real  # a transformers module is explained from its print()


# -- printed trees ------------------------------------------------------------------------------


HF_SHAPES = [
    dict(n_layer=2, n_head=4, n_embd=64, vocab_size=1000, n_positions=128),
    dict(n_layer=5, n_head=3, n_embd=96, vocab_size=777, n_positions=50, n_inner=200, activation_function="gelu"),
    dict(n_layer=12, n_head=12, n_embd=768, vocab_size=50257, n_positions=1024),  # the shapes of gpt2
    dict(n_layer=1, n_head=25, n_embd=1600, vocab_size=50257, n_positions=1024),
]


@pytest.mark.parametrize("shape", HF_SHAPES, ids=lambda s: f"L{s['n_layer']}C{s['n_embd']}")
def test_counts_from_transformers_print(shape):
    text, real = hf_repr(**shape)
    for variant in (text, strip_indent(text), " ".join(strip_indent(text).splitlines())):
        ex = explain_repr(variant)
        assert ex.params["total"] == real
        cfg = ex.config
        assert (cfg.n_layer, cfg.n_embd, cfg.vocab_size, cfg.block_size) == (
            shape["n_layer"], shape["n_embd"], shape["vocab_size"], shape["n_positions"])
        assert cfg.mlp_dim == shape.get("n_inner") or 4 * shape["n_embd"]
        assert cfg.activation == ("gelu" if shape.get("activation_function") == "gelu" else "gelu_tanh")
        assert ex.unknown == [] and ex.linear_kind == "Conv1D"
        assert ex.tree[0].params == real


def test_older_transformers_conv1d_without_shapes_is_inferred_and_said():
    text, real = hf_repr(n_layer=3, n_head=2, n_embd=48, vocab_size=300, n_positions=40)
    old = re.sub(r"Conv1D\(nf=\d+, nx=\d+\)", "Conv1D()", text)
    assert "Conv1D()" in old and "nf=" not in old
    ex = explain_repr(old)
    assert ex.params["total"] == real
    assert any("Conv1D() lines carry no shapes" in n and "48 -> 144" in n for n in ex.notes)
    assert sum("shape inferred" in t.note for t in ex.tree) == 4  # the four Conv1D lines of the folded block
    assert "inferred" in ex.to_text()


# print(model) of transformers 2.x-3.x: one line per block, Attention/MLP without the GPT2 prefix,
# no activation module, Conv1D() without shapes, LayerNorm without the bias flag, and no indentation.
OLD_TRANSFORMERS = """
GPT2LMHeadModel(
(transformer): GPT2Model(
(wte): Embedding(50257, 768)
(wpe): Embedding(1024, 768)
(drop): Dropout(p=0.1, inplace=False)
(h): ModuleList(
""" + "".join(f"""({i}): Block(
(ln_1): LayerNorm((768,), eps=1e-05, elementwise_affine=True)
(attn): Attention(
(c_attn): Conv1D()
(c_proj): Conv1D()
(attn_dropout): Dropout(p=0.1, inplace=False)
(resid_dropout): Dropout(p=0.1, inplace=False)
)
(ln_2): LayerNorm((768,), eps=1e-05, elementwise_affine=True)
(mlp): MLP(
(c_fc): Conv1D()
(c_proj): Conv1D()
(dropout): Dropout(p=0.1, inplace=False)
)
)
""" for i in range(12)) + """)
(ln_f): LayerNorm((768,), eps=1e-05, elementwise_affine=True)
)
(lm_head): Linear(in_features=768, out_features=50257, bias=False)
)
"""


def test_old_transformers_print_of_gpt2():
    ex = explain_repr(OLD_TRANSFORMERS)
    assert ex.params["total"] == 124_439_808 and ex.params["per_block"] == 7_087_872
    assert ex.config.n_layer == 12 and ex.unknown == []
    assert any("activation is not printed" in n for n in ex.notes)
    blocks = [t for t in ex.tree if re.match(r"\(\d+\): Block\(", t.text)]
    assert len(blocks) == 12 and all(t.params == 7_087_872 for t in blocks)


@pytest.mark.parametrize(
    "config",
    [
        GPT2Config(n_layer=2, n_head=2, n_embd=32, vocab_size=101, block_size=20),
        GPT2Config(n_layer=3, n_head=4, n_embd=64, vocab_size=99, block_size=64, n_inner=80, bias=False, qkv_bias=False),
        GPT2Config(n_layer=1, n_head=1, n_embd=16, vocab_size=10, block_size=8, qkv_bias=False),
    ],
)
def test_counts_from_gpt2lab_print(config):
    with torch.device("meta"):
        model = GPT2(config)
    for text in (repr(model), strip_indent(repr(model))):
        ex = explain_repr(text)
        assert ex.params["total"] == model.num_parameters()
        assert (ex.config.bias, ex.config.qkv_bias, ex.config.mlp_dim) == (config.bias, config.qkv_bias, config.mlp_dim)
        assert ex.unknown == [] and ex.linear_kind == "Linear"


def test_unknown_lines_are_reported_not_guessed():
    text, real = hf_repr(n_layer=2, n_head=2, n_embd=32, vocab_size=100, n_positions=16)
    lines = text.splitlines()
    at = next(i for i, line in enumerate(lines) if "(act):" in line)
    lines.insert(at + 1, "          (gate): Mystery(32, 32)")
    lines.insert(0, ">>> print(model)")
    lines.append("this is not part of it")
    ex = explain_repr("\n".join(lines))
    assert ex.params["total"] == real  # the unknown module is not counted
    assert any(u.startswith(f"line {at + 3}: (gate): Mystery(32, 32)") for u in ex.unknown)
    assert "line 1: >>> print(model)" in ex.unknown and any("this is not part of it" in u for u in ex.unknown)
    gate = next(t for t in ex.tree if "(gate)" in t.text)
    assert gate.params is None and "not understood" in gate.note
    assert "Lines not understood" in ex.to_text()


def test_not_a_gpt2_tree_is_an_error():
    with pytest.raises(ConfigError, match="no module tree"):
        explain_repr("just some words\n")
    with pytest.raises(ConfigError, match=r"no \(wte\)"):
        explain_repr("Net(\n  (fc): Linear(in_features=3, out_features=4, bias=True)\n)")
    with pytest.raises(ConfigError, match="cut short"):
        explain_repr(hf_repr(n_layer=1, n_head=2, n_embd=8, vocab_size=10, n_positions=8)[0][:-40])


def test_parse_repr_nesting_comes_from_parentheses():
    root, unknown = parse_repr("A((x): B((y): C(1, 2) (z): D()) (w): E(p=0.5))")
    assert unknown == [] and [c.key for c in root.children] == ["x", "w"]
    assert [(c.key, c.cls, c.args) for c in root.children[0].children] == [("y", "C", "1, 2"), ("z", "D", "")]


# -- memory and FLOPs ---------------------------------------------------------------------------

SMALL = GPT2Config(n_layer=2, n_head=2, n_embd=8, vocab_size=10, block_size=16)


def test_memory_and_flops_against_hand_arithmetic():
    ex = explain(SMALL, seq_len=4, batch=3)
    # parameters: wte 10*8=80, wpe 16*8=128; block: 2 LayerNorms 2*16, c_attn 8*24+24=216,
    # attn.c_proj 8*8+8=72, c_fc 8*32+32=288, mlp.c_proj 32*8+8=264 -> 872; ln_f 16
    assert ex.params["per_block"] == 32 + 216 + 72 + 288 + 264 == 872
    N = 80 + 128 + 2 * 872 + 16
    assert ex.params["total"] == N == 1968
    m = ex.memory
    assert m["weights"] == {"fp32": 4 * N, "bf16": 2 * N, "int8": N}
    assert m["kv_cache"]["per_token_fp32"] == 2 * 2 * 8 * 4 == 128  # K and V, 2 layers, width 8, 4 bytes
    assert m["kv_cache"]["full_context_fp32"] == 128 * 3 * 16  # B=3 sequences of the full 16 positions
    # activations per token: 2 layers x 16 x 8 + 2 x 8 + 2 x 10 = 292 values; B*T = 12 tokens
    assert m["training"]["activations_fp32"] == 292 * 12 * 4
    assert m["training"]["activations_fp32_explicit_attention"] - m["training"]["activations_fp32"] == 12 * 2 * 2 * 4 * 4
    assert m["training"]["total_fp32"] == 16 * N + 292 * 12 * 4
    f = ex.flops
    # matmul weights: 2 x (8*24 + 8*8 + 8*32 + 32*8) + 8*10 = 1616
    assert f["matmul_weights"] == 1616 and f["dense_per_token"] == 3232
    assert f["attention_per_token"] == 4 * 2 * 8 * 4 == 256  # 4 L C T: every token charged all T positions
    assert f["forward_per_token"] == 3232 + 256
    assert f["training_per_token"] == 6 * 1616 + 12 * 2 * 8 * 4 == 3 * (3232 + 256)
    assert f["training_per_token"] == flops_per_token(SMALL, 4)  # the number MFU in training divides by


def test_flops_and_memory_match_a_real_model():
    torch.manual_seed(0)
    model = GPT2(SMALL).eval()
    B, T = 3, 4
    ex = explain(model, seq_len=T, batch=B)
    idx = torch.randint(0, SMALL.vocab_size, (B, T))
    model.explicit = True  # the explicit path multiplies the full T x T square, as the convention counts
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(idx)
    assert counter.get_total_flops() == B * T * ex.flops["forward_per_token"]
    # training: backward does two products for each product of the forward, so 3 x forward exactly
    with FlopCounterMode(display=False) as counter:
        model.train()(idx, idx)[1].backward()
    assert counter.get_total_flops() == B * T * ex.flops["training_per_token"]
    assert ex.memory["weights"]["fp32"] == sum(p.numel() * p.element_size() for p in model.parameters())
    cache = model.new_kv_cache(B)
    assert ex.memory["kv_cache"]["full_context_fp32"] == cache.k.numel() * 4 + cache.v.numel() * 4


# -- renderers and command line -----------------------------------------------------------------


def test_markdown_and_dict():
    ex = explain("gpt2", seq_len=256, batch=4)
    md = ex.to_markdown()
    assert md.startswith("# GPT-2 explained: preset gpt2")
    for heading in ("## Module tree", "## What each part does", "## Parameters, step by step", "## Memory", "## FLOPs per token (T=256)"):
        assert heading in md
    assert md.count("```") == 2 and "| part | arithmetic | parameters |" in md
    table = [line for line in md.splitlines() if line.startswith("|")]
    assert len(table) > 30 and all(line.count("|") == 4 for line in table)  # three columns in every table row
    assert "| per block | ln_1 + attn + ln_2 + mlp | 7,087,872 |" in md
    data = json.loads(json.dumps(ex.to_dict()))
    assert data["params"]["total"] == 124_439_808 and data["config"]["n_embd"] == 768 and data["seq_len"] == 256
    assert data["tree"][0]["output_shape"] == [4, 256, 50257]


def test_cli_text_md_and_repr(tmp_path, capsys):
    assert main(["explain", "--model", "gpt2-medium", "--seq-len", "64"]) == 0
    assert "354,823,168" in capsys.readouterr().out
    text, real = hf_repr(n_layer=2, n_head=2, n_embd=32, vocab_size=100, n_positions=16)
    (tmp_path / "model.txt").write_text(strip_indent(text))
    assert main(["explain", "--from-repr", str(tmp_path / "model.txt"), "--format", "md"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# GPT-2 explained: printed model") and f"| {real:,} |" in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--model", "gpt5"], "neither a preset"),
        (["--from-repr", "{missing}"], "No such file"),
        (["--from-repr", "{garbage}"], "no module tree found"),
        (["--from-repr", "{binary}"], "is not UTF-8 text; paste the output of print(model) into a text file"),
        (["--model", "gpt2", "--seq-len", "0"], "--seq-len"),
        (["--model", "gpt2", "--from-repr", "{garbage}"], "not both"),
    ],
)
def test_cli_errors_are_one_line_exit_2(argv, message, tmp_path, capsys):
    (tmp_path / "garbage.txt").write_text("hello\nworld\n")
    (tmp_path / "binary.bin").write_bytes(b"\xff\xfe\x00\x81" * 10)
    paths = {"missing": tmp_path / "nope.txt", "garbage": tmp_path / "garbage.txt", "binary": tmp_path / "binary.bin"}
    argv = [a.format(**paths) for a in argv]
    assert main(["explain", *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and err.startswith("gpt2lab explain: error:")
