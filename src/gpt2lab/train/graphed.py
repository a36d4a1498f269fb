"""``train --cuda-graph``: the whole optimizer step recorded once as a CUDA graph, then replayed.

Even compiled, a GPT-2 training step launches several hundred kernels from Python. The products
keep the GPU busy for hundreds of microseconds each, but most of the elementwise kernels between
them (LayerNorm, GELU, residual adds, the optimizer's pieces) finish in a few microseconds, less
than the host needs to launch the next one. So in those stretches the GPU waits for Python. On an
H200, at batch 16 x 1024, the GPU was busy for 33.5 ms of a 36.5 ms step (``benchmarks/README.md``).
A CUDA graph launches the whole recorded step (forward, backward, clipping, the AdamW update) at
once, and the host's only work per step is to copy the batch in.

What a recording needs, and how the step gives it:

* **Fixed addresses.** A replay reads and writes exactly the memory the recording did. So the
  batch is copied into buffers of the graph's own (``x``, ``y``, ``shares``). The gradients also
  stay allocated between steps, in the graph's memory: each replay overwrites them, where a plain
  step frees them. Nothing else moves: the weights and AdamW's moments are updated in place.
* **No Python number that changes.** A recorded kernel keeps the arguments it was launched with.
  So the learning rate is one device tensor that every param group shares, filled before each
  replay (fused AdamW takes a tensor ``lr`` when ``capturable``). The step count that the
  non-finite bookkeeping writes lives on the device (``Trainer.step_on_device``).
* **No host sync inside.** A non-finite step is skipped on the device, through fused AdamW's
  ``found_inf``, as in every GPU step.
* **Warm-up first.** The first ``WARMUP_STEPS`` steps run plainly: compilation, the optimizer's
  lazily made state, cuBLAS and cuDNN workspaces. The step after them is recorded, then replayed.

If recording fails (an operation a graph cannot hold), that step and all later ones run plainly,
with one warning. The losses are the plain step's: the same kernels run on the same numbers.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from .trainer import Trainer

WARMUP_STEPS = 3  # plain steps before the recording (PyTorch's CUDA-graph notes use 3 for one process)


class GraphedTrainStep:
    """A trainer's optimizer step (``Trainer.step_on_device``), recorded once as a CUDA graph and
    replayed at every later step. Called as ``Trainer.plain_step`` is: host batches, the micro-batch
    shares (on the device), the learning rate. Returns the step's loss (), a tensor of the recording
    that the next replay overwrites."""

    def __init__(self, trainer: Trainer) -> None:
        self.trainer = trainer
        self.graph: Any = None  # torch.cuda.CUDAGraph once recorded
        self.plain_steps = 0
        self.failed = False  # recording failed: every step runs plainly

    def __call__(self, batches: list[tuple[torch.Tensor, torch.Tensor]], shares: torch.Tensor, lr: float) -> torch.Tensor:
        if self.graph is None:
            if self.failed or self.plain_steps < WARMUP_STEPS:
                self.plain_steps += 1
                return self.trainer.plain_step(batches, shares, lr)
            try:
                self._record(batches, shares)
            except RuntimeError as err:  # not recordable here: train step by step, as correct, slower
                self._forget()
                warnings.warn(f"training without a CUDA graph ({str(err).splitlines()[0] if str(err) else type(err).__name__})",
                              RuntimeWarning, stacklevel=3)
                return self.trainer.plain_step(batches, shares, lr)
        self.lr.fill_(lr)
        for i, batch in enumerate(batches):  # (B, T) each, moved as a plain step moves them, into the recording's buffers
            x, y = self.trainer.to_device(*batch)
            self.x[i].copy_(x)
            self.y[i].copy_(y)
        self.shares.copy_(shares)
        self.graph.replay()  # the step after the warm-up, then every step: all of its kernels in one launch
        return self.loss

    def _record(self, batches: list[tuple[torch.Tensor, torch.Tensor]], shares: torch.Tensor) -> None:
        """Record the step on buffers of its own (the caller fills them and replays: recording runs nothing)."""
        trainer = self.trainer
        device = trainer.device
        # a tensor per micro-batch, each (B, T), as the plain steps' were (so the compiled model sees its warm-up inputs' layout)
        self.x = [x.to(device) for x, _ in batches]
        self.y = [y.to(device) for _, y in batches]
        self.shares = shares.clone()  # (grad_accum,)
        self.lr = torch.zeros((), device=device)  # ()
        for group in trainer.optimizer.param_groups:
            group["lr"] = self.lr
            group["capturable"] = True  # AdamW may then be recorded: its step count and lr stay on the device
        trainer.optimizer.zero_grad(set_to_none=True)  # backward makes them anew, in the graph's memory
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.loss = trainer.step_on_device(list(zip(self.x, self.y)), self.shares)

    def _forget(self) -> None:
        """Undo a failed recording: it ran nothing, but the gradients it made hold no numbers."""
        self.graph = None
        self.failed = True
        self.trainer.optimizer.zero_grad(set_to_none=True)
        for group in self.trainer.optimizer.param_groups:
            group["capturable"] = False  # plain_step sets the lr back to a number

    def release(self) -> None:
        """Let the recording and its memory go (the run is over): the graph, its buffers, the gradients it kept."""
        self.graph = None
        self.x, self.y = [], []
        self.trainer.optimizer.zero_grad(set_to_none=True)

    def memory_pool(self) -> Any:
        """The recording's memory pool (``torch.cuda.CUDAGraph.pool``), None before it is made."""
        return self.graph.pool() if self.graph is not None else None


__all__ = ["GraphedTrainStep", "WARMUP_STEPS"]
