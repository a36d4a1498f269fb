"""A stand-in for ``torch.cuda``'s graphs on a CPU, so that CI (no GPU) runs the code paths that record
and replay them: ``generate``'s decode step and ``train --cuda-graph``'s optimizer step.

A recording keeps every operation run while it is on, with its very tensors; a replay runs them again
on those same tensors, writing each result into the recorded output: what a CUDA graph does with its
kernels and fixed addresses. Code that read anything but its tensors (a Python number that changes
between calls, a tensor made anew each call) would replay the recording's stale value and so give
other results than the same code run plainly. Compiled code is not recorded (its kernels are no
operations of the dispatcher): what runs under it here is eager."""

from __future__ import annotations

import contextlib

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map

# operations that hand a tensor's value to the host (.item(), bool(t), torch.equal): a sync on a GPU
HOST_READS = {torch.ops.aten._local_scalar_dense.default, torch.ops.aten.is_nonzero.default, torch.ops.aten.equal.default}


class Recorder(TorchDispatchMode):
    """Every operation run while it is on, with its very tensors. A real capture runs nothing, so the
    memory it writes keeps its contents: here each tensor an operation writes in place is copied before
    its first write, and ``undo`` puts every such tensor back when recording ends."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list = []
        self.before: list[tuple[torch.Tensor, torch.Tensor]] = []  # (a written tensor, its contents before)
        self.written: set[tuple] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in HOST_READS:  # a value read by the host: a capture cannot hold it, and CUDA refuses it
            raise RuntimeError(f"operation not permitted when stream is capturing ({func})")
        kwargs = kwargs or {}
        for i, argument in enumerate(func._schema.arguments):
            if argument.alias_info is None or not argument.alias_info.is_write:
                continue
            value = kwargs.get(argument.name, args[i] if i < len(args) else None)
            for t in value if isinstance(value, (list, tuple)) else [value]:
                key = (t.data_ptr(), t.shape, t.stride()) if isinstance(t, torch.Tensor) else None
                if key is not None and key not in self.written:
                    self.written.add(key)
                    self.before.append((t, t.detach().clone()))
        out = func(*args, **kwargs)
        self.ops.append((func, args, kwargs, out))
        return out

    def undo(self) -> None:
        with torch.no_grad():
            for t, contents in reversed(self.before):
                t.detach().copy_(contents)


class FakeCUDAGraph:
    """``torch.cuda.CUDAGraph`` for a CPU (see the module docstring)."""

    fail = False  # make recording fail, as an operation CUDA graphs cannot hold would
    made: list[FakeCUDAGraph] = []  # every recording made since the stand-in was put in place

    def __init__(self) -> None:
        self.recorder = Recorder()
        self.replays = 0
        FakeCUDAGraph.made.append(self)

    def replay(self) -> None:
        self.replays += 1
        # on the tensors' memory alone, as kernels see it: the autograd history recorded with them plays no part
        bare = lambda tree: tree_map(lambda t: t.detach() if isinstance(t, torch.Tensor) else t, tree)  # noqa: E731
        with torch.no_grad():
            for func, args, kwargs, out in self.recorder.ops:
                new = func(*bare(args), **bare(kwargs))
                for o, n in zip(out if isinstance(out, (tuple, list)) else [out], new if isinstance(new, (tuple, list)) else [new]):
                    if isinstance(o, torch.Tensor) and isinstance(n, torch.Tensor) and o.data_ptr() != n.data_ptr():
                        o.detach().copy_(n)

    def pool(self) -> tuple[int, int]:
        return (0, id(self))


def use_fake_cuda_graphs(monkeypatch) -> None:
    """Put the stand-in in place of torch.cuda's graph capture for the rest of the test; streams become no-ops."""

    @contextlib.contextmanager
    def capture(graph: FakeCUDAGraph):
        if FakeCUDAGraph.fail:
            raise RuntimeError("operation not permitted when stream is capturing")
        try:
            with graph.recorder:
                yield
        finally:
            graph.recorder.undo()

    class Stream:
        def wait_stream(self, other) -> None:
            pass

    monkeypatch.setattr(torch.cuda, "CUDAGraph", FakeCUDAGraph)
    monkeypatch.setattr(torch.cuda, "graph", capture)
    monkeypatch.setattr(torch.cuda, "Stream", Stream)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda: Stream())
    monkeypatch.setattr(torch.cuda, "stream", lambda stream: contextlib.nullcontext())
    monkeypatch.setattr(FakeCUDAGraph, "fail", False)
    monkeypatch.setattr(FakeCUDAGraph, "made", [])
