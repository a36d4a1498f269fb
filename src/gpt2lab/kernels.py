"""Faster matrix products for CPU inference: weights packed once for oneDNN.

Nearly all of GPT-2's inference time on a CPU is ``x Wᵀ + b`` (``F.linear``): four per block and the
LM head, each reading a large weight matrix for a few rows of ``x``. PyTorch sends a dense fp32
``F.linear`` to the BLAS (MKL on x86 wheels). oneDNN, also inside every x86 PyTorch, has its own
kernels for the same product, and they are faster when the weight has first been re-laid ("packed")
into the blocked order they stream: on the 2-core AMD EPYC (AVX-512) we develop on, 1.8x for one
token per row, 3x for eight, 2.5x for a 512-token prompt (``benchmarks/README.md``). The numbers are
the same function to float rounding (a different summation order: ~1e-6 relative in fp32).

``with packed(model): ...`` makes that packed copy of every ``model.Linear`` weight (once: it is
kept for the next time) and, inside the block, each Linear uses it whenever nothing needs its
gradient (``torch.no_grad()``, eval, generation). ``generate`` and ``evaluate`` do this by themselves
on a CPU where it pays (``worthwhile``); ``packed(model, force=True)`` tries it anywhere. Outside
such a block every product is plain ``F.linear``, so editing the weights can never meet a stale
copy: each block first checks every kept copy against a fingerprint of its dense weight (one read of
the weights, like one decoding step) and re-packs what changed, even through ``.data``. The cost: one
copy of the weight matrices in memory (``unpack(model)`` frees it) and a one-off re-layout (0.3-1 s
for the 124M model). Training never uses it, and neither does anything on a GPU, in a dtype the
CPU's oneDNN cannot do, or inside ``torch.compile``.

Where it pays: MKL takes its generic code path on non-Intel x86 CPUs, so there oneDNN wins big
(AMD EPYC: the numbers above); on an Intel Xeon, MKL is as good as oneDNN for eight rows and better
for one (0.8x measured), so Intel CPUs keep the dense path. Other architectures keep it too, unmeasured.
``GPT2LAB_PACKED_LINEAR=1`` packs anyway, ``=0`` never (default ``auto``). Where the oneDNN
operators are missing (a PyTorch built without them) or disagree with ``F.linear`` on a small
self-check, nothing is packed and every product stays dense: same results, old speed.
"""

from __future__ import annotations

import contextlib
import functools
import os
import platform
import warnings
import weakref
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

# oneDNN picks its blocking from the expected number of rows; 8 measured best for 1 to 8 rows and
# no worse for prompts (one pack serves every batch size)
ROWS_HINT = 8


@dataclass
class PackedWeight:
    """A linear layer's weight in oneDNN's blocked order, and the dense weight it was made from."""

    weight: torch.Tensor  # opaque mkldnn tensor, logically (out, in)
    source: torch.Tensor  # an alias of the dense weight: keeps its memory, so no other tensor takes its address
    version: int  # the dense weight's in-place version counter when packed
    fingerprint: float  # a random projection of the dense weight's numbers (see _fingerprint)
    active: int = 0  # how many packed(...) blocks use it now

    def is_current(self, dense: torch.Tensor) -> bool:
        """Cheap check, every product: same memory, no in-place change seen by autograd's counter."""
        return dense.data_ptr() == self.source.data_ptr() and _version(dense) == self.version


def _version(t: torch.Tensor) -> int:
    """Autograd's in-place version counter; tensors made under ``torch.inference_mode()`` have none
    (-1: only the fingerprint at each ``packed`` entry watches them)."""
    return -1 if t.is_inference() else t._version


# one entry per packed nn.Linear; weak, so a dropped model takes its packs with it (and a deepcopy or
# pickle of the model never meets the opaque tensors)
_PACKS: weakref.WeakKeyDictionary[nn.Linear, PackedWeight] = weakref.WeakKeyDictionary()
_WORKS: dict[torch.dtype, bool] = {}  # self-check result per dtype, once per process

# the spellings of these two checks changed across the PyTorch versions we support (>= 2.1)
_is_compiling = getattr(getattr(torch, "compiler", None), "is_compiling", None) or torch._dynamo.is_compiling


def _cpu_autocast() -> bool:
    try:
        return torch.is_autocast_enabled("cpu")
    except TypeError:
        return torch.is_autocast_cpu_enabled()


def setting() -> str:
    """``GPT2LAB_PACKED_LINEAR``: "1" (always pack), "0" (never) or "auto" (where it pays)."""
    value = os.environ.get("GPT2LAB_PACKED_LINEAR", "auto").strip().lower()
    return value if value in ("0", "1") else "auto"


@functools.cache  # read once: generate asks on every call
def cpu_vendor() -> str:
    """The x86 vendor string ("GenuineIntel", "AuthenticAMD", ...), or "" where unknown."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("vendor_id"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    name = platform.processor()  # Windows: "Intel64 Family 6 ...", "AMD64 Family 25 ..."
    return "GenuineIntel" if "Intel" in name else "AuthenticAMD" if name.startswith("AMD") else ""


def is_x86() -> bool:
    """Is this an x86-64 machine (whose PyTorch wheels carry oneDNN's packed linear operators)?"""
    return platform.machine().lower() in ("x86_64", "amd64")


def worthwhile() -> bool:
    """Do packed weights beat dense ``F.linear`` on this machine? (see the module docstring)"""
    if setting() != "auto":
        return setting() == "1"
    return is_x86() and cpu_vendor() not in ("GenuineIntel", "")


_OPS: list = []  # [(reorder, linear_pointwise) or None], looked up once


def _ops():
    """oneDNN's two operators, or None where this PyTorch lacks them or oneDNN is switched off."""
    if not _OPS:
        try:
            mkldnn = torch.ops.mkldnn
            _OPS.append((mkldnn._reorder_linear_weight, mkldnn._linear_pointwise) if torch.backends.mkldnn.is_available() else None)
        except (AttributeError, RuntimeError):
            _OPS.append(None)
    return _OPS[0] if torch.backends.mkldnn.enabled else None


def works(dtype: torch.dtype) -> bool:
    """Does this PyTorch pack and multiply ``dtype`` weights correctly on this CPU? Checked once on a
    small random layer against ``F.linear``."""
    if dtype not in _WORKS:
        _WORKS[dtype] = _self_check(dtype)
    return _WORKS[dtype]


def _self_check(dtype: torch.dtype) -> bool:
    ops = _ops()
    if ops is None or dtype not in (torch.float32, torch.bfloat16):
        return False
    reorder, linear_pointwise = ops
    g = torch.Generator().manual_seed(0)
    w = torch.randn(40, 24, generator=g).to(dtype)  # (out, in)
    b = torch.randn(40, generator=g).to(dtype)
    x = torch.randn(3, 5, 24, generator=g).to(dtype)  # (B, T, in)
    try:
        with torch.no_grad():
            got = linear_pointwise(x, reorder(w, ROWS_HINT), b, "none", [], "")
            want = F.linear(x, w, b)
    except (RuntimeError, NotImplementedError, TypeError):
        return False
    tol = 1e-4 if dtype == torch.float32 else 0.1  # |values| ~ 5: bf16 keeps 8 bits of mantissa
    return got.shape == want.shape and got.dtype == want.dtype and bool(((got - want).abs() <= tol).all())


def available_memory() -> int | None:
    """Bytes the OS could hand out now without swapping (Linux's MemAvailable), or None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


_PROBES: dict[int, torch.Tensor] = {}  # fixed random vectors by length, for fingerprints


def _probe(n: int) -> torch.Tensor:
    if n not in _PROBES:
        _PROBES[n] = torch.randn(n, generator=torch.Generator().manual_seed(n), dtype=torch.float32)
    return _PROBES[n]


def _fingerprint(w: torch.Tensor) -> float:
    """uᵀ W v for fixed random u, v, over the weight in its memory order: one read of W (a matrix-
    vector product). Any change to the numbers (one element, a zeroed row, two rows swapped) moves
    it, and the same numbers give the same value bit for bit (same kernel, same order)."""
    with torch.no_grad():
        m = w.detach()
        if not m.is_contiguous() and m.t().is_contiguous():
            m = m.t()  # our Conv1D order: read it as the contiguous (in, out) matrix it is
        m = m.float() if m.dtype != torch.float32 else m
        return float((m @ _probe(m.size(1))) @ _probe(m.size(0)))


def _linears(model: nn.Module) -> list[nn.Linear]:
    return [
        m for m in model.modules()
        if isinstance(m, nn.Linear) and m.weight.device.type == "cpu" and m.weight.dim() == 2 and works(m.weight.dtype)
    ]


def pack(model: nn.Module, *, force: bool = False) -> int:
    """Make (or refresh) the packed copy of every CPU ``nn.Linear`` weight of ``model``, if
    ``worthwhile()`` here or ``force`` (``GPT2LAB_PACKED_LINEAR=0`` still wins).

    Copies kept from before are checked against their dense weight's fingerprint and re-packed if
    it changed. Returns the bytes the packed copies hold (0 when nothing could be packed). When new
    copies would take more than half the memory still available, none is made (with a warning):
    speed is not worth swapping. A model loaded from safetensors is mapped from the file, so its
    dense pages stay reclaimable while the packed copy is in use. ``packed(model)`` calls this.
    """
    return _weight_bytes(_pack(model, force))


def _weight_bytes(layers: list[nn.Linear]) -> int:
    return sum(m.weight.numel() * m.weight.element_size() for m in layers)


def _pack(model: nn.Module, force: bool) -> list[nn.Linear]:
    """``pack``'s work; returns the layers that now hold a current packed copy."""
    if setting() == "0" or not (force or worthwhile()) or _ops() is None:
        return []
    reorder = _ops()[0]
    linears = _linears(model)
    with torch.no_grad():
        prints = {m: _fingerprint(m.weight) for m in linears}
        for m in linears:
            kept = _PACKS.get(m)
            if kept is not None and not (kept.is_current(m.weight) and kept.fingerprint == prints[m]):
                del _PACKS[m]  # changed since: in place, replaced, or through .data
        todo = [m for m in linears if m not in _PACKS]
        needed = _weight_bytes(todo)
        free = available_memory()
        if todo and free is not None and needed > free // 2:
            warnings.warn(
                f"not packing the weights for faster CPU inference: the copy needs {needed / 2**30:.1f} GiB and "
                f"{free / 2**30:.1f} GiB is available; products stay on the slower dense path",
                stacklevel=3,
            )
            todo = []
        for m in todo:
            w = m.weight.detach()
            # read the dense weight as it sits in memory: our Conv1D order is the transpose of a
            # contiguous (in, out) matrix, which oneDNN reorders directly (no dense copy first)
            _PACKS[m] = PackedWeight(reorder(w, ROWS_HINT), w, _version(m.weight), prints[m])
    return [m for m in linears if m in _PACKS]


@contextlib.contextmanager
def packed(model: nn.Module, *, force: bool = False) -> Iterator[int]:
    """Inside the block, ``model``'s Linear layers multiply with packed weights (see ``pack``) when no
    gradient is needed; yields the bytes packed (0: everything stays dense, as for a model on a GPU).
    Blocks may nest."""
    layers = _pack(model, force)
    using = [_PACKS[m] for m in layers]
    for p in using:
        p.active += 1
    try:
        yield _weight_bytes(layers)
    finally:
        for p in using:
            p.active -= 1


def unpack(model: nn.Module) -> None:
    """Drop the packed copies of ``model``'s weights and the memory they hold."""
    for module in model.modules():
        if isinstance(module, nn.Linear):
            _PACKS.pop(module, None)


def is_packed(module: nn.Linear) -> bool:
    """Whether ``module`` has a packed copy of its present weight (by the cheap check)."""
    kept = _PACKS.get(module)
    return kept is not None and kept.is_current(module.weight)


def linear(module: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """``module(x)``: x Wᵀ + b (..., in) -> (..., out), from the packed weight when it may be used."""
    if not _is_compiling() and _PACKS:
        kept = _PACKS.get(module)
        if (
            kept is not None
            and kept.active
            and not (torch.is_grad_enabled() and (module.weight.requires_grad or x.requires_grad))
            and x.device.type == "cpu"
            and x.dtype == module.weight.dtype
            and not _cpu_autocast()
            and kept.is_current(module.weight)  # an in-place change inside the block: dense from here on
        ):
            return _OPS[0][1](x, kept.weight, module.bias, "none", [], "")
    return F.linear(x, module.weight, module.bias)
