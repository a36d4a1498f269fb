"""A DATA_DIR read back: its token files, and the batches of windows that training and evaluation cut from them.

A DATA_DIR (written by ``gpt2lab.data.prepare``) holds

    train.bin   the training token ids, one flat array (uint16, or uint32 for vocabularies > 65536)
    val.bin     the validation token ids, same format
    meta.json   the tokenizer, the counts, the sources and a fingerprint of the inputs

and, for instruction data, ``train.mask.bin`` and ``val.mask.bin``: one uint8 per token, 1 where
the token is a target (a response), 0 where it is context only; batches then carry -100 as the
target of every context position, so the loss counts the responses alone. ``open_data`` maps the
files with ``numpy.memmap``, so training never loads a corpus into memory.

``BatchSampler`` cuts a flat file into windows of ``block_size + 1`` tokens and deals them out in a
seeded random order. Its whole state is one integer (how many windows the run has consumed), so a
resumed run continues with exactly the batches the uninterrupted run would have seen, and under
DistributedDataParallel every rank takes its own slice of each global batch.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import DataError

if TYPE_CHECKING:
    import torch  # at run time imported where it is used, so `prepare` runs without loading it

META = "meta.json"
TRAIN = "train.bin"
VAL = "val.bin"
# Instruction data (``format="instruct"``) also has, for each token file, a loss mask of the same
# length: one uint8 per token, 1 where the token is a target (a response and its <|endoftext|>),
# 0 where it is context only (template, instruction, input). meta.json says "loss_mask": true.
MASKS = {TRAIN: "train.mask.bin", VAL: "val.mask.bin"}
IGNORE_INDEX = -100  # the target of a position that takes no part in the loss (PyTorch's and transformers' convention)


# ---------------------------------------------------------------------------------------------
# Reading a DATA_DIR back
# ---------------------------------------------------------------------------------------------


@dataclass
class TokenData:
    """A prepared DATA_DIR opened for reading: memory-mapped ``train`` and ``val`` id arrays, and
    for instruction data their loss masks (uint8, 1 = a target; ``None`` for plain text)."""

    directory: Path
    meta: dict[str, Any]
    train: np.ndarray
    val: np.ndarray
    train_mask: np.ndarray | None = None
    val_mask: np.ndarray | None = None

    @property
    def n_vocab(self) -> int:
        return int(self.meta["tokenizer"]["n_vocab"])


def open_data(directory: str | os.PathLike) -> TokenData:
    """Open a DATA_DIR written by ``prepare``, with a clear error for what is missing or empty."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(f"no such data directory: {directory}; create one with: gpt2lab prepare INPUT... --out {directory}")
    meta_path = directory / META
    if not meta_path.is_file():
        raise DataError(f"{directory} has no {META}: it is not a prepared data directory; run: gpt2lab prepare INPUT... --out {directory}")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        dtype = np.dtype(meta["dtype"])
        counts = {name: int(meta[f"{name}_tokens"]) for name in ("train", "val")}
    except (ValueError, KeyError, TypeError) as err:
        raise DataError(f"{meta_path} is damaged ({type(err).__name__}: {err}); run gpt2lab prepare again") from None
    arrays = {}
    for name, count in counts.items():
        path = directory / f"{name}.bin"
        if not path.is_file():
            raise DataError(f"{directory} has no {name}.bin; run gpt2lab prepare again")
        if path.stat().st_size != count * dtype.itemsize:
            raise DataError(f"{path} holds {path.stat().st_size // dtype.itemsize} tokens but {META} says {count}; run gpt2lab prepare again")
        arrays[name] = np.memmap(path, dtype=dtype, mode="r", shape=(count,)) if count else np.zeros(0, dtype=dtype)
        if meta.get("loss_mask"):
            mask_path = directory / MASKS[path.name]
            if not mask_path.is_file() or mask_path.stat().st_size != count:
                raise DataError(f"{directory} is instruction data but {mask_path.name} is missing or of the wrong length; run gpt2lab prepare again")
            arrays[f"{name}_mask"] = np.memmap(mask_path, dtype=np.uint8, mode="r", shape=(count,)) if count else np.zeros(0, dtype=np.uint8)
    if counts["train"] == 0:
        raise DataError(f"{directory}/train.bin is empty: prepare it from more text")
    return TokenData(directory, meta, arrays["train"], arrays["val"], arrays.get("train_mask"), arrays.get("val_mask"))


# ---------------------------------------------------------------------------------------------
# Batches
# ---------------------------------------------------------------------------------------------


@dataclass
class BatchSampler:
    """Windows of a flat token array, dealt in a seeded random order that is exactly resumable.

    Epoch ``e`` shifts the window grid by a random offset in [0, block_size) and shuffles the
    windows, both from ``seed`` and ``e`` alone; the stream of windows is the epochs one after
    another. ``position`` counts windows consumed by all ranks together, so it is the whole state.

    With ``world_size`` ranks, each micro-batch takes the next ``batch_size * world_size`` windows
    of the stream and rank r keeps the r-th slice of ``batch_size``: one process with
    ``batch_size * world_size`` (or with gradient accumulation) sees the same windows.

    ``mask`` (instruction data: 1 = a target) makes every other target -100 (see ``windows``).
    """

    data: np.ndarray
    block_size: int
    batch_size: int
    seed: int = 0
    rank: int = 0
    world_size: int = 1
    position: int = 0
    mask: np.ndarray | None = None
    _epoch: int = field(default=-1, repr=False)
    _order: np.ndarray | None = field(default=None, repr=False)
    _offset: int = field(default=0, repr=False)

    def __post_init__(self) -> None:
        n = len(self.data)
        if n < self.block_size + 1:
            raise DataError(
                f"the corpus has {n:,} tokens, fewer than one window of block_size + 1 = {self.block_size + 1}; "
                "use a smaller --block-size or more text"
            )
        fit = (n - 1) // self.block_size
        # with room for more than one window, keep one spare so every offset in [0, block_size) fits
        self.shifted = fit > 1
        self.n_windows = fit - 1 if self.shifted else fit

    def _prepare_epoch(self, epoch: int) -> np.ndarray:
        """The window order of ``epoch`` (drawn once per epoch, together with its offset)."""
        if epoch != self._epoch or self._order is None:
            rng = np.random.default_rng([self.seed, epoch])
            self._offset = int(rng.integers(self.block_size)) if self.shifted else 0
            self._order = rng.permutation(self.n_windows)
            self._epoch = epoch
        return self._order

    def window_starts(self, start: int, count: int) -> np.ndarray:
        """Token offsets of windows ``start .. start + count - 1`` of the stream."""
        starts = np.empty(count, dtype=np.int64)
        for i in range(count):
            epoch, j = divmod(start + i, self.n_windows)
            order = self._prepare_epoch(epoch)
            starts[i] = self._offset + int(order[j]) * self.block_size
        return starts

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's next (x, y), both (batch_size, block_size) int64; y is x shifted by one."""
        first = self.position + self.rank * self.batch_size
        starts = self.window_starts(first, self.batch_size)
        self.position += self.batch_size * self.world_size
        return windows(self.data, starts, self.block_size, self.mask)

    @property
    def epoch_size(self) -> int:
        """Windows in one pass over the data (an epoch)."""
        return self.n_windows

    def state_dict(self) -> dict[str, int]:
        return {"position": self.position, "seed": self.seed, "n_windows": self.n_windows, "block_size": self.block_size}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state.get("n_windows") != self.n_windows or state.get("block_size") != self.block_size:
            raise DataError(
                "the data does not match the checkpoint's (a different number of windows); "
                "resume with the same --data directory the run started with"
            )
        self.seed = int(state["seed"])
        self.position = int(state["position"])


def windows(
    data: np.ndarray, starts: np.ndarray, block_size: int, mask: np.ndarray | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and next-token targets for windows starting at ``starts``: two (len(starts), block_size) tensors.

    With a loss ``mask`` (instruction data), a target whose token is context only (mask 0) is
    ``IGNORE_INDEX``: the model still reads the prompt, but is not trained to write it.
    """
    import torch

    rows = np.stack([np.asarray(data[s : s + block_size + 1], dtype=np.int64) for s in starts])  # (B, T+1)
    rows_t = torch.from_numpy(rows)
    x, y = rows_t[:, :-1], rows_t[:, 1:]  # (B, T) each
    if mask is not None:
        is_target = np.stack([np.asarray(mask[s + 1 : s + block_size + 1], dtype=bool) for s in starts])  # (B, T)
        y = y.masked_fill(~torch.from_numpy(is_target), IGNORE_INDEX)  # (B, T)
    return x, y


def eval_starts(data: np.ndarray, block_size: int, count: int) -> np.ndarray:
    """``count`` fixed, evenly spread window offsets for validation (the same at every evaluation,
    so the curve compares like with like)."""
    n_fit = (len(data) - 1) // block_size
    if n_fit < 1:
        return np.zeros(0, dtype=np.int64)
    picks = np.unique(np.linspace(0, n_fit - 1, num=min(count, n_fit)).round().astype(np.int64))
    return picks * block_size
