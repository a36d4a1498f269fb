"""The training loop (``Trainer.run``): step after step to ``max_steps``, and around the steps what a
run needs: progress, metrics, evaluation, checkpoints, a clean stop.

    while step < max_steps:
        one optimizer step                  (Trainer.train_step_no_sync: queued, the host does not wait)
        at a logged step: read its loss     (on a GPU one step late: it travels while the next step runs)
        at an evaluated step: val loss, benchmark scores, a sample, the on_eval hook; early stop?
        at a saved step: checkpoint.pt and model/ (atomically)
        Ctrl-C / SIGTERM: save and stop    (ranks agree at read steps)

The host reads from the device only at those steps: every read waits for the GPU to finish what it
was given, and a loop that read every step would leave the GPU idle while Python catches up.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import torch

from ..config import parameter_counts
from ..lora import describe
from .checkpoint import BEST_DIR, CHECKPOINT
from .config import TrainResult
from .metrics import show_step
from .signals import StopFlag

if TYPE_CHECKING:
    from .trainer import Trainer

# with several processes, how often (in steps) at the most the ranks tell each other whether one was
# asked to stop, when no logged, evaluated or saved step comes sooner (each time is a host sync)
STOP_CHECK_EVERY = 50


def run_loop(trainer: Trainer) -> TrainResult:
    """Train ``trainer`` from its step to ``max_steps`` (or an early stop, or a stop asked for), saving at
    the end; returns the result with the model in eval mode (real vocabulary)."""
    cfg = trainer.config
    main = trainer.dist.is_main
    trainer.lr = trainer.lr_at(trainer.step)
    bar = None
    if main and cfg.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.max_steps, initial=trainer.step, desc="train", unit="step", dynamic_ncols=True)
        for line in opening_lines(trainer):
            bar.write(line)
    # torch.compile works inside the first step (a minute or more for a large model, on a CPU too): say so
    compiling = bar if cfg.compile else None  # the bar that says so, until the first step is done
    if compiling is not None:
        compiling.set_postfix_str("compiling the step (torch.compile): the first step takes a while")
    loss = val_loss = None
    interrupted = False
    try:
        with StopFlag() as trainer.stop_flag:
            steps_unread, time_unread = 0, 0.0  # steps since the loss was last read, and their time
            # a step that is only logged: its loss comes to the host while the next step runs
            # (step, lr, snapshot, steps it closes), and is written after that step is queued
            on_its_way: tuple[int, float, tuple[torch.Tensor, Any], int] | None = None
            stop_all = False  # whether any rank was asked to stop, as of the latest read
            while trainer.step < cfg.max_steps:
                t0 = time.perf_counter()
                trainer.train_step_no_sync()
                if compiling is not None:  # (the host compiles before it queues the step, so that is done now)
                    compiling.set_postfix_str("")
                    compiling = None
                if on_its_way is not None:
                    step, lr, snapshot, steps = on_its_way
                    on_its_way = None
                    loss = trainer.read_snapshot(snapshot)
                    # the window closes when that step is done, about now; this step's time so far is its own
                    window = time_unread + (time.perf_counter() - t0)
                    log_step(trainer, step, lr, loss, trainer.tokens_per_step * steps / window, window / steps, bar)
                    steps_unread, time_unread = steps_unread - steps, -(time.perf_counter() - t0)
                last = trainer.step == cfg.max_steps
                evaluating = bool(cfg.eval_every and trainer.step % cfg.eval_every == 0) or last
                saving = bool(cfg.checkpoint_every and trainer.step % cfg.checkpoint_every == 0) or last
                # the host waits for the device only where it must look: a logged, evaluated or saved
                # step, every STOP_CHECK_EVERY steps (the ranks' stop signals), or a stop asked here
                must_look = (evaluating or saving or trainer.step % STOP_CHECK_EVERY == 0
                             or (not trainer.dist.enabled and trainer.stop_flag.requested))
                read = must_look or trainer.step % cfg.log_every == 0
                if read and not must_look and trainer.defer_logged_reads:
                    on_its_way = (trainer.step, trainer.lr, trainer.loss_snapshot(), steps_unread + 1)
                    read = False
                if read:
                    loss = trainer.read_loss()
                    stop_all = trainer.stop_requested()
                dt = time.perf_counter() - t0
                trainer.elapsed += dt
                steps_unread, time_unread = steps_unread + 1, time_unread + dt
                if not read:
                    if bar is not None:
                        bar.update(1)
                    continue
                assert loss is not None
                # over the steps since the last read: one step's own time means nothing without a sync
                tok_per_s = trainer.tokens_per_step * steps_unread / time_unread
                step_time = time_unread / steps_unread
                steps_unread, time_unread = 0, 0.0
                record = None
                if main and (trainer.step % cfg.log_every == 0 or last or evaluating):  # an evaluation is always logged
                    record = trainer.step_record(trainer.step, trainer.lr, loss, tok_per_s, step_time)
                stopping_early = False
                if evaluating:
                    val_loss = trainer.evaluate()
                    if record is not None and val_loss is not None:
                        record["val_loss"] = round(val_loss, 6)
                    best = val_loss is not None and trainer.note_val_loss(val_loss) and cfg.keep_best
                    stopping_early = bool(cfg.early_stop and trainer.evals_since_best >= cfg.early_stop and not last)
                    scores = trainer.eval_scores() if main else {}
                    if record is not None:
                        record.update(scores)
                    if bar is not None:
                        bar.write(f"step {trainer.step}: train loss {loss:.4f}" + (f", val loss {val_loss:.4f}" if val_loss is not None else "")
                                  + "".join(f", {name} {value:.4f}" for name, value in scores.items())
                                  + (f" (the best so far: model in {trainer.run_dir / BEST_DIR})" if best else ""))
                    if main and cfg.sample is not None:
                        sample = trainer.sample_text()
                        if record is not None:
                            record["sample"] = sample
                        if bar is not None:
                            bar.write(f"  sample: {cfg.sample}{sample}")
                    if main and trainer.on_eval is not None:
                        trainer.call_on_eval()
                if record is not None:
                    trainer.log_record(record)
                if bar is not None:
                    bar.update(1)
                    show_step(bar, loss, tok_per_s, record)
                if saving:
                    trainer.save_checkpoint()
                if stopping_early:  # (saved below)
                    trainer.stopped_early = True
                    if bar is not None:
                        assert trainer.best is not None
                        bar.write(f"stopped early at step {trainer.step}: no val loss below {trainer.best[1]:.4f} (step {trainer.best[0]}) "
                                  f"in {cfg.early_stop} evaluations")
                    break
                if stop_all:
                    interrupted = True
                    if trainer.last_saved != trainer.step:
                        trainer.save_checkpoint()
                    if bar is not None:
                        bar.write(f"stopped at step {trainer.step}; checkpoint saved in {trainer.run_dir} (continue with --resume)")
                    break
            if trainer.last_saved != trainer.step:  # e.g. resumed at or past max_steps
                trainer.save_checkpoint()
    finally:
        if bar is not None:
            bar.close()
    peaks = trainer.peak_memory_per_rank()  # of the training (an FSDP run's export below gathers a whole model)
    model = trainer.export_model().eval()
    kept = trainer.best if cfg.keep_best else None
    return TrainResult(trainer.run_dir, trainer.step, loss, val_loss, model, interrupted, list(trainer.metrics), peaks,
                       best_step=kept[0] if kept else None, best_val_loss=kept[1] if kept else None,
                       stopped_early=trainer.stopped_early)


def opening_lines(trainer: Trainer) -> list[str]:
    """What a run says before its first step: the model and the machine, the run's length in epochs, a LoRA
    run's trained share, where a resumed run goes on from."""
    padded = trainer.model.config.vocab_size
    processes = f"{trainer.dist.world_size} process{'es' if trainer.dist.world_size > 1 else ''}"
    lines = [f"training {parameter_counts(trainer.model_config)['total'] / 1e6:.2f}M parameters on {trainer.device} "
             f"({processes}, {str(trainer.dtype).removeprefix('torch.')}), {trainer.tokens_per_step:,} tokens per step"
             + (f", vocabulary padded to {padded}" if trainer.vocab != padded else "")]
    if trainer.lora_base is not None:
        lines.append(describe(trainer.model))
    lines.append(trainer.length_line())
    if trainer.resumed_at is not None:
        left_out = " ".join(trainer.switches_left_out)
        lines.append(f"resumed at step {trainer.resumed_at:,} from {trainer.run_dir / CHECKPOINT}" + (
            f"; without {left_out}, which the run used until now (give them again for its speed and memory)" if left_out else ""))
    return lines


def log_step(trainer: Trainer, step: int, lr: float, loss: float, tok_per_s: float, step_time: float, bar: Any) -> None:
    """Write the metrics line of a step whose loss was read one step late, and show it."""
    record = trainer.step_record(step, lr, loss, tok_per_s, step_time)
    if trainer.dist.is_main:
        trainer.log_record(record)
    if bar is not None:
        show_step(bar, loss, tok_per_s, record)


__all__ = ["run_loop", "opening_lines", "log_step", "STOP_CHECK_EVERY"]
