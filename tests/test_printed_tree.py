"""Reading print(model): the tree parser and the GPT-2 it finds, on their own (test_explain.py checks
the explanation built on them)."""

from __future__ import annotations

import pytest
import torch

from gpt2lab import GPT2, ConfigError, GPT2Config
from gpt2lab.printed_tree import ReprNode, parse_repr, read_tree


def roles(node: ReprNode) -> dict[str, str]:
    """key path -> role, for every node of the tree."""
    out: dict[str, str] = {}

    def walk(n: ReprNode, path: str) -> None:
        out[path] = n.role
        for c in n.children:
            walk(c, f"{path}.{c.key}" if path else str(c.key))

    walk(node, "")
    return out


def test_a_transformers_gpt2model_without_its_head():
    from transformers import GPT2Config as HFConfig
    from transformers import GPT2Model

    with torch.device("meta"):
        hf = GPT2Model(HFConfig(n_layer=3, n_head=2, n_embd=16, vocab_size=40, n_positions=12, n_inner=48))
    root, unknown = parse_repr(repr(hf))
    reading = read_tree(root, unknown)
    cfg = reading.config
    assert (cfg.n_layer, cfg.n_embd, cfg.vocab_size, cfg.block_size, cfg.mlp_dim) == (3, 16, 40, 12, 48)
    assert not reading.has_lm_head and reading.linear_kind == "Conv1D"
    assert reading.unknown == [] and reading.problems == []
    assert any("no lm_head" in n for n in reading.notes)
    r = roles(root)
    assert r[""] == "transformer" and r["wte"] == "wte" and r["ln_f"] == "ln_f"
    block = next(k for k in r if k.startswith("h.") and k.count(".") == 1)  # "h.0-2" folded, or "h.0"
    assert r[block] == "block" and r[f"{block}.attn.c_attn"] == "block.attn.c_attn" and r[f"{block}.mlp.act"] == "block.mlp.act"


def test_gpt2labs_own_print_reads_back_to_its_config():
    config = GPT2Config(n_layer=2, n_head=2, n_embd=8, vocab_size=10, block_size=16)
    with torch.device("meta"):
        model = GPT2(config)
    reading = read_tree(*parse_repr(repr(model)))
    assert reading.has_lm_head and reading.linear_kind == "Linear"
    got = reading.config
    assert (got.n_layer, got.n_embd, got.vocab_size, got.block_size, got.mlp_dim) == (2, 8, 10, 16, 32)


def test_what_is_not_understood_is_listed_with_its_line():
    text = "junk before\nGPT2Model(\n  (wte): Embedding(10, 8)\n  (wpe): Embedding(16, 8)\n  (extra): Widget(3)\n" \
           "  (h): ModuleList(\n    (0): Block(\n      (ln_1): LayerNorm((8,), eps=1e-05, elementwise_affine=True)\n    )\n  )\n)\n"
    root, unknown = parse_repr(text)
    assert unknown == [(1, "junk before")]
    reading = read_tree(root, unknown)
    assert reading.unknown[0] == "line 1: junk before"
    assert any(u.startswith("line 5: (extra): Widget(3)") for u in reading.unknown)
    assert any("block has no (attn)" in p for p in reading.problems)


def test_shapes_that_disagree_are_an_error():
    text = "GPT2Model(\n  (wte): Embedding(10, 8)\n  (wpe): Embedding(16, 6)\n  (h): ModuleList()\n)"
    with pytest.raises(ConfigError, match="position embedding is 6 wide"):
        read_tree(*parse_repr(text))
