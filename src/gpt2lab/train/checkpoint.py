"""What a run directory holds, and the training checkpoint: read safely, written atomically, with
every random number generator's state, and a full disk reported in one line.

    checkpoint.pt   weights, optimizer moments, step, the data sampler's position, every RNG state,
                    the configuration: everything needed to continue exactly (a LoRA run: the
                    adapters' weights and a fingerprint of the base model, read again from ``init``)
    model/          the latest weights in Hugging Face format (a LoRA run: adapters merged in)
    adapter/        a LoRA run's adapters in PEFT's format (adapter_config.json, adapter_model.safetensors)
    metrics.jsonl   one JSON object per logged step
    status.json     running, finished, stopped early, interrupted or failed (``train.status``)
    loss.png        the training and validation curves
"""

from __future__ import annotations

import errno
import os
import random
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from ..errors import CheckpointError
from ..files import RUN_MODEL_DIR, atomic_write

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"
MODEL_DIR = RUN_MODEL_DIR  # run/model: the model in Hugging Face's format (files.run_model_dir reads it back)
ADAPTER_DIR = "adapter"
BEST_DIR = "best"  # run/best: the model of the lowest validation loss so far (train --keep-best)
PLOT = "loss.png"
CHECKPOINT_FORMAT = 1


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a training checkpoint (a file or its run directory); tensors only (``weights_only=True``: no code runs)."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT
    if not path.is_file():
        raise CheckpointError(f"no training checkpoint at {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(f"cannot read {path} ({type(err).__name__}: {str(err)[:200]}); it is damaged or not a gpt2lab checkpoint") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a gpt2lab training checkpoint (format {CHECKPOINT_FORMAT})")
    return ckpt


def peek_checkpoint(path: str | os.PathLike) -> dict[str, Any] | None:
    """A run's checkpoint without reading its tensors (``mmap``: they stay on disk until touched), for its
    step or configuration; None when there is none or it cannot be read (``load_checkpoint`` says why)."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT
    if not path.is_file():
        return None
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 (damaged, cut short, not ours: the caller carries on without it)
        return None
    return ckpt if isinstance(ckpt, dict) else None


def write_checkpoint(path: str | os.PathLike, ckpt: dict[str, Any]) -> Path:
    """Write ``ckpt`` to ``path`` atomically: a crash, a kill or a full disk leaves the previous file whole."""
    return atomic_write(path, lambda tmp: torch.save(ckpt, tmp))


def tensor_bytes(obj: Any) -> int:
    """The bytes of every tensor inside nested dicts, lists and tuples: about what ``torch.save`` writes."""
    def walk(x: Any) -> Iterator[int]:
        if isinstance(x, torch.Tensor):
            yield x.numel() * x.element_size()
        elif isinstance(x, dict):
            for v in x.values():
                yield from walk(v)
        elif isinstance(x, (list, tuple)):
            for v in x:
                yield from walk(v)

    return sum(walk(obj))


def _size(n: float) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} bytes"


def write_failure(err: BaseException, directory: Path, needed: int | None = None) -> str | None:
    """What a failed write means, in a few words, or ``None`` when ``err`` is not a failed write.

    A full disk shows up as ``OSError(ENOSPC)`` from plain writes and from safetensors, but
    ``torch.save`` reports it as ``RuntimeError: [enforce fail at inline_container.cc:...]
    unexpected pos ...``: for that one the free space is compared with what was to be written.
    """
    if isinstance(err, OSError):
        if err.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
            return "out of disk space"
        return err.strerror or str(err)
    text = str(err)
    if isinstance(err, RuntimeError) and ("inline_container" in text or "PytorchStreamWriter" in text):
        try:
            free = shutil.disk_usage(directory).free
        except OSError:
            free = None
        if needed is not None and free is not None and free < needed:
            return f"out of disk space ({_size(needed)} to write, {_size(free)} free)"
        return f"torch.save could not write ({text.strip().splitlines()[0][:160]})"
    return None


# ---------------------------------------------------------------------------------------------
# RNG state: every generator a run draws from, so a resumed run draws the same numbers
# ---------------------------------------------------------------------------------------------


def rng_state(device: torch.device) -> dict[str, Any]:
    """Python's, NumPy's, torch's and (on a GPU) CUDA's generator states, in types ``weights_only`` loads."""
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = cast(tuple[str, np.ndarray, int, int, float], np.random.get_state())
    state = {
        "python": random.getstate(),
        # numpy's state as plain types and a tensor, so torch.load(weights_only=True) accepts it
        "numpy": (np_name, torch.from_numpy(np_keys.astype(np.int64)), np_pos, np_has_gauss, np_gauss),
        "torch": torch.get_rng_state(),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    """Put back what ``rng_state`` took."""
    random.setstate(state["python"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


__all__ = ["CHECKPOINT", "METRICS", "MODEL_DIR", "ADAPTER_DIR", "BEST_DIR", "PLOT", "CHECKPOINT_FORMAT", "load_checkpoint", "peek_checkpoint",
           "write_checkpoint",
           "tensor_bytes", "write_failure", "rng_state", "set_rng_state", "seed_everything"]
