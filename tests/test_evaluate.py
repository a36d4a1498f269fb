"""Sliding-window loss and perplexity: equal to transformers' perplexity-guide loop, CLI, errors."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import gpt2lab.evaluate
from conftest import TINY, LogitRows
from gpt2lab import GPT2
from gpt2lab.data import save_tokens
from gpt2lab.errors import ConfigError, DataError
from gpt2lab.evaluate import evaluate, evaluate_path, sliding_windows

ROOT = Path(__file__).resolve().parents[1]


def hf_guide_nll(hf, ids: torch.Tensor, max_length: int, stride: int) -> float:
    """transformers' perplexity guide (docs/source/en/perplexity.md) with batch size 1.

    One fix: the guide weights each window's mean loss by ``valid labels - batch_size``, which is
    the number of scored tokens only when the first label is valid (the first window). The weight
    here is exactly the number of labels transformers' loss averaged over."""
    seq_len = ids.size(1)
    nll_sum, n_tokens, prev_end_loc = 0.0, 0, 0
    for begin_loc in range(0, seq_len, stride):
        end_loc = min(begin_loc + max_length, seq_len)
        trg_len = end_loc - prev_end_loc
        input_ids = ids[:, begin_loc:end_loc]
        target_ids = input_ids.clone()
        target_ids[:, :-trg_len] = -100
        with torch.no_grad():
            outputs = hf(input_ids, labels=target_ids)
            neg_log_likelihood = outputs.loss
        num_loss_tokens = (target_ids[:, 1:] != -100).sum().item()  # labels with a logit before them
        nll_sum += neg_log_likelihood.item() * num_loss_tokens
        n_tokens += num_loss_tokens
        prev_end_loc = end_loc
        if end_loc == seq_len:
            break
    return nll_sum / n_tokens


@pytest.mark.parametrize("n, block, stride", [(300, 128, 64), (300, 128, 128), (300, 100, 37), (90, 128, 64)])
def test_equals_transformers_perplexity_guide(hf_tiny, n, block, stride, monkeypatch):
    hf, path = hf_tiny
    model = GPT2.from_pretrained(path)
    ids = torch.randint(0, TINY["vocab_size"], (1, n), generator=torch.Generator().manual_seed(n + stride))
    monkeypatch.setattr(gpt2lab.evaluate, "HEAD_CHUNK", 50)  # the LM head 50 positions at a time
    with LogitRows((TINY["vocab_size"],)) as seen:
        ours = evaluate(model, ids[0].numpy(), block_size=block, stride=stride, batch_size=3)
    assert 0 < seen.most <= 50  # never the whole (3 x block, V) logits
    ref = hf_guide_nll(hf, ids, block, stride)
    assert ours.loss == pytest.approx(ref, abs=1e-5)
    assert ours.perplexity == pytest.approx(math.exp(ref), rel=1e-5)
    # every token but the first is scored once; with disjoint windows (stride == block) the first
    # token of each window has no context inside it and is not scored, as in transformers' loop
    assert ours.tokens == (n - 1 if stride < block else n - math.ceil(n / block))


def test_windows_score_each_token_once():
    for n, block, stride in [(10, 4, 2), (11, 4, 3), (3, 8, 4), (2, 2, 1)]:
        scored = [t for begin, end, first in sliding_windows(n, block, stride) for t in range(first, end)]
        assert scored == list(range(1, n))
        assert all(end - begin <= block for begin, end, _ in sliding_windows(n, block, stride))
    scored = [t for begin, end, first in sliding_windows(10, 4, 4) for t in range(first, end)]
    assert scored == [1, 2, 3, 5, 6, 7, 9]  # disjoint windows: each window's first token has no context


def test_cli_on_a_data_dir_and_a_text_file(hf_tiny, tmp_path, gpt2_vocab_path):
    _, path = hf_tiny
    ids = np.random.default_rng(0).integers(0, TINY["vocab_size"], 400)
    save_tokens(tmp_path / "data", ids[:100], ids[100:], n_vocab=TINY["vocab_size"])
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    run = lambda *a: subprocess.run([sys.executable, "-m", "gpt2lab", "eval", *map(str, a)], capture_output=True, text=True, env=env)  # noqa: E731
    out = run("--model", path, "--data", tmp_path / "data", "--stride", 64, "--quiet")
    assert out.returncode == 0, out.stderr
    expected = evaluate(GPT2.from_pretrained(path), ids[100:], stride=64)
    assert f"loss {expected.loss:.4f}" in out.stdout and "perplexity" in out.stdout and "299 tokens scored" in out.stdout
    # a text file, tokenised with GPT-2's vocabulary (ids beyond the tiny model's 1000 are refused)
    (tmp_path / "t.txt").write_text("the the the the")
    out = run("--model", path, "--data", tmp_path / "t.txt", "--tokenizer", gpt2_vocab_path, "--quiet")
    assert out.returncode == 2 and "vocabulary mismatch" in out.stderr and out.stderr.count("\n") == 1
    out = run("--model", path, "--data", tmp_path / "missing", "--quiet")
    assert out.returncode == 2 and "no such data directory or text file" in out.stderr


def test_text_file_with_the_model_tokenizer(tmp_path):
    from gpt2lab import GPT2Config
    from gpt2lab.tokenizer import Tokenizer

    text = "a small text to evaluate, a small text to evaluate again. " * 20
    tok = Tokenizer.train(text, 300, progress=False)
    torch.manual_seed(0)
    model = GPT2(GPT2Config(vocab_size=tok.n_vocab, block_size=32, n_layer=1, n_head=2, n_embd=16))
    model.save_pretrained(tmp_path / "m")
    tok.save(tmp_path / "m")
    (tmp_path / "t.txt").write_text(text)
    result = evaluate_path(tmp_path / "m", tmp_path / "t.txt", stride=16)
    assert result.loss == pytest.approx(evaluate(model, tok.encode_ordinary(text), stride=16).loss, abs=1e-6)


def test_errors(hf_tiny, tmp_path):
    _, path = hf_tiny
    model = GPT2.from_pretrained(path)
    with pytest.raises(ConfigError, match="over the model's context of 128"):
        evaluate(model, [1, 2, 3], block_size=256)
    with pytest.raises(DataError, match="at least 2"):
        evaluate(model, [1])
    with pytest.raises(ConfigError, match="stride must be between"):
        evaluate(model, [1, 2, 3], stride=500)
    save_tokens(tmp_path / "big", [1, 2, 3], [1500, 2], n_vocab=2000)
    with pytest.raises(DataError, match="vocabulary mismatch"):
        evaluate_path(path, tmp_path / "big")
    save_tokens(tmp_path / "noval", [1, 2, 3], [], n_vocab=1000)
    with pytest.raises(DataError, match="no validation tokens"):
        evaluate_path(path, tmp_path / "noval")
    (tmp_path / "folder").mkdir()
    with pytest.raises(DataError, match="without meta.json"):
        evaluate_path(path, tmp_path / "folder")
