"""batches: a DATA_DIR read back (and its errors), the seeded, resumable batch sampler, evaluation windows;
and the names gpt2lab.data keeps re-exporting."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import gpt2lab.batches
import gpt2lab.data
from gpt2lab.batches import BatchSampler, eval_starts, open_data
from gpt2lab.data import save_tokens
from gpt2lab.errors import DataError


def test_gpt2lab_data_keeps_the_reading_names():
    """Code written against gpt2lab.data before the reading side became gpt2lab.batches still works."""
    for name in ("META", "TRAIN", "VAL", "MASKS", "IGNORE_INDEX", "TokenData", "open_data", "BatchSampler", "windows", "eval_starts"):
        assert getattr(gpt2lab.data, name) is getattr(gpt2lab.batches, name), name


def test_open_data_errors(tmp_path):
    with pytest.raises(DataError, match="no such data directory"):
        open_data(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="not a prepared data directory"):
        open_data(tmp_path / "empty")
    save_tokens(tmp_path / "d", [1, 2, 3, 4], [5, 6], n_vocab=10)
    (tmp_path / "d" / "train.bin").write_bytes(b"\x00\x00")
    with pytest.raises(DataError, match="holds 1 tokens but meta.json says 4"):
        open_data(tmp_path / "d")
    save_tokens(tmp_path / "z", [], [5, 6], n_vocab=10)
    with pytest.raises(DataError, match="train.bin is empty"):
        open_data(tmp_path / "z")


def test_sampler_windows_resume_and_ranks():
    data = np.arange(1000, dtype=np.uint16)
    s = BatchSampler(data, block_size=10, batch_size=4, seed=3)
    assert s.n_windows == 98
    x, y = s.next_batch()
    assert x.shape == (4, 10) and x.dtype == torch.int64 and torch.equal(y, x + 1)  # targets: the next token
    # exactly resumable from its state
    state = s.state_dict()
    expected = [s.next_batch()[0] for _ in range(60)]  # crosses into later epochs
    t = BatchSampler(data, block_size=10, batch_size=4, seed=0)
    t.load_state_dict(state)
    assert all(torch.equal(a, t.next_batch()[0]) for a in expected)
    # two ranks together see what one process with twice the batch sees
    one = BatchSampler(data, block_size=10, batch_size=8, seed=5)
    ranks = [BatchSampler(data, block_size=10, batch_size=4, seed=5, rank=r, world_size=2) for r in range(2)]
    for _ in range(30):
        assert torch.equal(one.next_batch()[0], torch.cat([r.next_batch()[0] for r in ranks]))
    # an epoch deals every window once, on one shifted grid
    e = BatchSampler(data, block_size=10, batch_size=1, seed=1)
    starts = e.window_starts(0, e.n_windows)
    assert len(set(starts.tolist())) == e.n_windows and len({int(a) % 10 for a in starts}) == 1
    assert starts.max() + 11 <= len(data)


def test_sampler_rejects_a_corpus_shorter_than_one_window():
    with pytest.raises(DataError, match="fewer than one window"):
        BatchSampler(np.arange(10, dtype=np.uint16), block_size=10, batch_size=1)
    assert BatchSampler(np.arange(11, dtype=np.uint16), block_size=10, batch_size=2).n_windows == 1


def test_eval_starts_are_fixed_and_spread():
    data = np.zeros(1001, dtype=np.uint16)
    starts = eval_starts(data, 10, 5)
    assert starts.tolist() == [0, 250, 500, 740, 990]
    assert eval_starts(data, 10, 1000).size == 100 and eval_starts(data[:5], 10, 3).size == 0
