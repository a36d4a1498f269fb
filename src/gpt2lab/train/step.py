"""One optimizer step of a ``Trainer`` (the class ``Trainer`` is made of, with ``train.saving``):

    for each of grad_accum micro-batches:       # a big batch, a micro-batch at a time
        logits = model(x)                       # under autocast (bf16/fp16) when asked
        loss = cross_entropy(logits, y) * share # share: the micro-batch's part of the step's targets
        loss.backward()                         # DDP averages gradients over ranks on the last one
    clip the gradient norm to grad_clip
    lr = warmup then cosine (``lr_at``)
    AdamW step (weight decay on matrices only; the fused kernel when there is one)

The step never waits for the device: its loss comes back as a device tensor, and the host reads it
only at the steps the loop logs (``read_loss``, ``loss_snapshot``). A non-finite loss or gradient is
caught on the device too, and skips the update there.
"""

from __future__ import annotations

import contextlib
import math
from typing import TYPE_CHECKING, Any, cast

import torch

from ..batches import IGNORE_INDEX
from ..devices import attention_kernels, autocast
from ..errors import TrainingError
from .checkpoint import CHECKPOINT
from .optim import lr_at

if TYPE_CHECKING:
    from pathlib import Path

    import torch.nn as nn

    from ..model import GPT2
    from .config import TrainConfig
    from .distributed import Distributed
    from .graphed import GraphedTrainStep


class OptimizerStep:
    """``Trainer``'s optimizer step, its loss read back from the device, and its learning rate."""

    if TYPE_CHECKING:  # what the step uses of the trainer it is part of (set in ``Trainer._setup``)
        config: TrainConfig
        device: torch.device
        dtype: torch.dtype
        dist: Distributed
        run_dir: Path
        model: GPT2
        forward_model: nn.Module
        optimizer: torch.optim.Optimizer
        scaler: torch.amp.GradScaler | None
        sampler: Any
        graphed: GraphedTrainStep | None
        trained_parameters: list[torch.nn.Parameter]
        step: int
        last_saved: int
        lr: float
        grad_norm: float | None
        _last_loss: torch.Tensor
        _grad_norm: torch.Tensor
        _bad_step: torch.Tensor
        _bad_loss: torch.Tensor
        _bad_norm: torch.Tensor
        _device_step: torch.Tensor

        def _loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor: ...

    def lr_at(self, step: int) -> float:
        """The learning rate of optimizer step ``step`` under this run's schedule (``optim.lr_at``)."""
        cfg = self.config
        assert cfg.min_lr is not None and cfg.warmup_steps is not None and cfg.lr_decay_steps is not None  # resolved()
        return lr_at(step, cfg.lr, cfg.min_lr, cfg.warmup_steps, cfg.lr_decay_steps)

    # -- one step --------------------------------------------------------------------------------

    def train_step(self) -> float:
        """One optimizer step; returns its mean training loss (over every rank). Reading the loss
        waits for the device: the training loop itself calls ``train_step_no_sync`` and reads the
        loss only at the steps it logs (``read_loss``)."""
        self.train_step_no_sync()
        return self.read_loss()

    def train_step_no_sync(self) -> torch.Tensor:
        """One optimizer step that never waits for the device; returns its loss as a () tensor.

        A non-finite loss or gradient must not reach the weights, yet looking at it from the host would stall
        the GPU every step. So the step is skipped on the device: the fused AdamW kernel takes a
        ``found_inf`` flag (GradScaler's mechanism) and leaves weights, moments and step count
        untouched when it is set; fp16's GradScaler already skips steps with non-finite gradients.
        Only an optimizer without that flag (no fused kernel) reads the flag, and on a CPU that read
        costs nothing. The first bad step is remembered on the device and ``read_loss`` raises
        ``TrainingError`` for it, before any checkpoint is written (checkpoint steps read the loss).
        With ``cuda_graph`` the step's device work is a replayed recording (``train.graphed``).
        """
        cfg = self.config
        lr = self.lr_at(self.step)
        if not (self.forward_model.training and self.model.training):  # a walk over every module: only when needed
            self.forward_model.train()
        batches = [self.sampler.next_batch() for _ in range(cfg.grad_accum)]  # (x, y) pairs, still on the host
        shares = self._micro_batch_shares([y for _, y in batches])  # (grad_accum,) on the device
        step_loss = self.graphed(batches, shares, lr) if self.graphed is not None else self.plain_step(batches, shares, lr)
        self.step += 1
        self.lr = lr
        self._last_loss = step_loss
        return step_loss

    def plain_step(self, batches: list[tuple[torch.Tensor, torch.Tensor]], shares: torch.Tensor, lr: float) -> torch.Tensor:
        """One optimizer step from host batches, each operation launched from Python; returns its loss ()."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        step_loss = self.step_on_device([self.to_device(*batch) for batch in batches], shares)
        self.optimizer.zero_grad(set_to_none=True)
        return step_loss

    def step_on_device(self, batches: list[tuple[torch.Tensor, ...]], shares: torch.Tensor) -> torch.Tensor:
        """A step's device work, from batches already on the device: forward and backward of each
        micro-batch, the mean loss over ranks, the non-finite bookkeeping, clipping and the AdamW
        update at the optimizer's current lr. Reads no Python number that changes from step to step
        and never waits for the device, so it can be recorded as a CUDA graph (``train.graphed``).
        Leaves the gradients in ``.grad``; returns the step's loss ()."""
        cfg = self.config
        loss_sum = torch.zeros((), device=self.device)
        for micro, (x, y) in enumerate(batches):  # (B, T) each
            last = micro == len(batches) - 1
            # DDP averages gradients across ranks in backward; only the last micro-batch needs it
            # (forward_model is the DDP wrapper whenever dist is enabled without fsdp); FSDP2 likewise
            # keeps unsharded gradients on each rank until the last one reduce-scatters them
            ddp = self.dist.enabled and not cfg.fsdp
            if cfg.fsdp:
                cast(Any, self.model).set_requires_gradient_sync(last)
            sync = cast(Any, self.forward_model).no_sync() if ddp and not last else contextlib.nullcontext()
            with sync:
                with autocast(self.device, self.dtype), attention_kernels(self.device):
                    loss = self._loss(x, y)
                scaled = loss * shares[micro]
                (self.scaler.scale(scaled) if self.scaler is not None else scaled).backward()
            loss_sum += loss.detach() * shares[micro]
        step_loss = loss_sum  # (): this rank's part of the step's mean, times the number of ranks
        if self.dist.enabled:  # the mean over ranks: a NaN on any rank makes every rank skip the step
            import torch.distributed as dist

            dist.all_reduce(step_loss)
            step_loss /= self.dist.world_size
        if self.scaler is not None:  # fp16: the gradients at their true size before they are measured
            self.scaler.unscale_(self.optimizer)
        # the gradient's global norm (): what clipping measures, taken on every step (one reduction over the
        # gradients) and logged as grad_norm: a norm that climbs is the first sign of a run going unstable
        norm = torch.nn.utils.get_total_norm([p.grad for p in self.trained_parameters if p.grad is not None])
        if hasattr(norm, "full_tensor"):  # FSDP2: each rank holds its shards' part, a DTensor
            norm = cast(Any, norm).full_tensor()
        self._grad_norm.copy_(norm)  # in place: a recording reads it there
        nonfinite = ~torch.isfinite(step_loss)  # () bool, on the device
        if self.scaler is None:  # (fp16's scaler skips non-finite gradients itself, a normal event at its scale's edge)
            nonfinite |= ~torch.isfinite(norm)
        self._device_step += 1  # this step's number, counted where a recorded step can read it
        first_bad = nonfinite & (self._bad_step < 0)  # ()
        torch.where(first_bad, self._device_step, self._bad_step, out=self._bad_step)  # in place: a recording reads it there
        torch.where(first_bad, step_loss, self._bad_loss, out=self._bad_loss)
        torch.where(first_bad, norm, self._bad_norm, out=self._bad_norm)
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grads_with_norm_(self.trained_parameters, cfg.grad_clip, norm)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        elif self.optimizer.defaults.get("fused"):
            opt = cast(Any, self.optimizer)
            opt.found_inf = nonfinite.float()  # the fused kernel skips the update where this is 1
            try:
                self.optimizer.step()
            finally:
                del opt.found_inf
        elif not nonfinite.item():
            self.optimizer.step()
        return step_loss.detach()

    def _micro_batch_shares(self, targets: list[torch.Tensor]) -> torch.Tensor:
        """Each micro-batch's weight in the step's loss (grad_accum,): its counted targets over the
        whole step's, across every rank, times the number of ranks (DDP averages over them).

        The step's loss is then the mean over all its targets, as one large batch would make it,
        even when micro-batches hold different numbers of them (instruction data counts responses
        only); with every target counted, each weight is 1 / grad_accum. The counts are taken on
        the host, from the batches before they move; across ranks they are summed on the device
        (no wait)."""
        counts = torch.tensor([float((y != IGNORE_INDEX).sum()) for y in targets])  # (grad_accum,)
        if not self.dist.enabled:
            return self.to_device(counts / counts.sum().clamp(min=1))[0]
        import torch.distributed as dist

        counts = self.to_device(counts)[0]
        total = counts.sum()  # ()
        dist.all_reduce(total)
        return counts * self.dist.world_size / total.clamp(min=1)

    def to_device(self, *batch: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """A batch on the training device without making the host wait: to a GPU from pinned
        (page-locked) memory, a copy the host only queues, so it can go on to queue the step's
        kernels (from ordinary memory the host would wait for the whole queue to drain first)."""
        if self.device.type != "cuda":
            return batch
        return tuple(t.pin_memory().to(self.device, non_blocking=True) for t in batch)

    def read_loss(self) -> float:
        """The loss of the latest step, read from the device (a host sync); raises ``TrainingError``
        if any step since the last read had a non-finite loss (that step was skipped)."""
        return self.read_snapshot(self.loss_snapshot())

    def loss_snapshot(self) -> tuple[torch.Tensor, Any]:
        """The latest step's loss and gradient norm and the non-finite bookkeeping (5,), on their way to the
        host: on a GPU a copy into pinned memory queued behind the step, with an event that marks it done
        (no wait here)."""
        values = torch.stack([self._last_loss, self._grad_norm, self._bad_step.float(), self._bad_loss, self._bad_norm])  # (5,)
        if self.device.type != "cuda":
            return values, None
        host = torch.empty(5, pin_memory=True)
        host.copy_(values, non_blocking=True)
        done = torch.cuda.Event()
        done.record()
        return host, done

    def read_snapshot(self, snapshot: tuple[torch.Tensor, Any]) -> float:
        """A snapshot's loss (waiting for that step alone, not for work queued after it), its gradient norm
        kept in ``grad_norm``; raises ``TrainingError`` if a step up to it had a non-finite loss or gradient."""
        values, done = snapshot
        if done is not None:
            done.synchronize()
        last_loss, self.grad_norm, bad_step, bad_loss, bad_norm = values.tolist()
        if bad_step >= 0:
            self.optimizer.zero_grad(set_to_none=True)
            what = f"the loss became {bad_loss}" if not math.isfinite(bad_loss) else f"the gradient norm became {bad_norm} (loss {bad_loss:.4f})"
            raise TrainingError(
                f"{what} at step {int(bad_step)}; stopped before it reached the weights. "
                f"The last good checkpoint is {self.run_dir / CHECKPOINT} (step {self.last_saved}); "
                "lower --lr, lengthen --warmup-steps or clip harder (--grad-clip), then --resume"
            )
        return last_loss


__all__ = ["OptimizerStep"]
