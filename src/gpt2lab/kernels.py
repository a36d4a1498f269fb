"""Faster matrix products for CPU inference: weights packed once for oneDNN.

Nearly all of GPT-2's inference time on a CPU is ``x Wᵀ + b`` (``F.linear``): four per block and the
LM head, each reading a large weight matrix for a few rows of ``x``. PyTorch sends a dense fp32
``F.linear`` to the BLAS (MKL on x86 wheels). oneDNN, also inside every x86 PyTorch, has its own
kernels for the same product, and they are faster when the weight has first been re-laid ("packed")
into the blocked order they stream: on the 2-core AMD EPYC (AVX-512) we develop on, 1.8x for one
token per row, 3x for eight, 2.5x for a 512-token prompt (``benchmarks/README.md``). The numbers are
the same function to float rounding (a different summation order: ~1e-6 relative in fp32).

``pack(model)`` makes that packed copy of every ``model.Linear`` weight; from then on each Linear
uses it whenever nothing needs its gradient (``torch.no_grad()``, eval, generation) and its dense
weight is unchanged. ``generate`` and ``evaluate`` pack a CPU model by themselves where it pays
(``worthwhile``); call ``pack(model, force=True)`` to try it anywhere. The cost: one copy of the
weight matrices in memory (``unpack(model)`` frees it) and a one-off re-layout (0.3-1 s for the
124M model). Training never uses it, and neither does anything on a GPU, in a dtype the CPU's
oneDNN cannot do, or inside ``torch.compile``.

Where it pays: MKL takes its generic code path on non-Intel x86 CPUs, so there oneDNN wins big
(AMD EPYC: the numbers above); on an Intel Xeon, MKL is as good as oneDNN for eight rows and better
for one (0.8x measured), so Intel CPUs keep the dense path. Other architectures keep it too, unmeasured.
``GPT2LAB_PACKED_LINEAR=1`` packs anyway, ``=0`` never (default ``auto``). Where the oneDNN
operators are missing (a PyTorch built without them) or disagree with ``F.linear`` on a small
self-check, nothing is packed and every product stays dense: same results, old speed.
"""

from __future__ import annotations

import os
import platform
import warnings
import weakref
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

# oneDNN picks its blocking from the expected number of rows; 8 measured best for 1 to 8 rows and
# no worse for prompts (one pack serves every batch size)
ROWS_HINT = 8


@dataclass(frozen=True)
class PackedWeight:
    """A linear layer's weight in oneDNN's blocked order, and which dense weight it came from."""

    weight: torch.Tensor  # opaque mkldnn tensor, logically (out, in)
    source_ptr: int  # the dense weight's storage address when packed ...
    source_version: int  # ... and its in-place version counter: a change to either makes it stale

    def is_current(self, dense: torch.Tensor) -> bool:
        return dense.data_ptr() == self.source_ptr and dense._version == self.source_version


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


def worthwhile() -> bool:
    """Do packed weights beat dense ``F.linear`` on this machine? (see the module docstring)"""
    if setting() != "auto":
        return setting() == "1"
    is_x86 = platform.machine().lower() in ("x86_64", "amd64")
    return is_x86 and cpu_vendor() not in ("GenuineIntel", "")


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


def pack(model: nn.Module, *, force: bool = False) -> int:
    """Pack every CPU ``nn.Linear`` weight of ``model`` for oneDNN (those already current are kept),
    if ``worthwhile()`` here or ``force`` (``GPT2LAB_PACKED_LINEAR=0`` still wins).

    Returns the number of bytes the packed copies hold (0 when nothing could be packed). Cheap to
    call again: only weights that changed since are packed anew. When the copies would take more
    than half the memory still available, nothing is packed (with a warning): speed is not worth
    swapping. A model loaded from safetensors is mapped from the file, so its dense pages stay
    reclaimable while the packed copy is in use.
    """
    if setting() == "0" or not (force or worthwhile()) or _ops() is None:
        return 0
    reorder = _ops()[0]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear) and m.weight.device.type == "cpu" and m.weight.dim() == 2]
    linears = [m for m in linears if works(m.weight.dtype)]
    todo = [m for m in linears if not is_packed(m)]
    needed = sum(m.weight.numel() * m.weight.element_size() for m in todo)
    free = available_memory()
    if todo and free is not None and needed > free // 2:
        warnings.warn(
            f"not packing the weights for faster CPU inference: the copy needs {needed / 2**30:.1f} GiB and "
            f"{free / 2**30:.1f} GiB is available; products stay on the slower dense path",
            stacklevel=2,
        )
        return sum(m.weight.numel() * m.weight.element_size() for m in linears if is_packed(m))
    with torch.no_grad():
        for module in todo:
            w = module.weight
            # read the dense weight as it sits in memory: our Conv1D order is the transpose of a
            # contiguous (in, out) matrix, which oneDNN reorders directly (no dense copy first)
            _PACKS[module] = PackedWeight(reorder(w.detach(), ROWS_HINT), w.data_ptr(), w._version)
    return sum(m.weight.numel() * m.weight.element_size() for m in linears)


def unpack(model: nn.Module) -> None:
    """Drop the packed copies of ``model``'s weights (every product goes back to dense ``F.linear``)."""
    for module in model.modules():
        _PACKS.pop(module, None)


def is_packed(module: nn.Linear) -> bool:
    """Whether ``module`` has a current packed weight."""
    packed = _PACKS.get(module)
    return packed is not None and packed.is_current(module.weight)


def linear(module: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """``module(x)``: x Wᵀ + b (..., in) -> (..., out), from the packed weight when it may be used."""
    if not _is_compiling() and _PACKS:
        packed = _PACKS.get(module)
        if (
            packed is not None
            and not (torch.is_grad_enabled() and (module.weight.requires_grad or x.requires_grad))
            and x.device.type == "cpu"
            and x.dtype == module.weight.dtype
            and not _cpu_autocast()
        ):
            if packed.is_current(module.weight):
                return _OPS[0][1](x, packed.weight, module.bias, "none", [], "")
            del _PACKS[module]  # the weight changed in place or was replaced: the copy is stale
    return F.linear(x, module.weight, module.bias)
