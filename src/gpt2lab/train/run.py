"""``train(config)``: one call that runs, or resumes, a training run: the trainer for its task, run,
then closed (its process group left, its dashboards flushed) however the run ends."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..model import GPT2
from .checkpoint import peek_checkpoint
from .classify import ClassifyTrainer
from .config import TrainConfig, TrainResult
from .trainer import Trainer


def trainer_class(config: TrainConfig) -> type[Trainer]:
    """The ``Trainer`` for ``config``'s task; a resumed run's task is its checkpoint's (read without
    its tensors: ``mmap`` leaves them on disk)."""
    task = config.task
    saved = peek_checkpoint(config.out) if config.resume else None  # (a damaged file: Trainer's load_checkpoint says so)
    if saved is not None:
        task = saved.get("train_config", {}).get("task", "lm")
    return ClassifyTrainer if task == "classify" else Trainer


def train(
    config: TrainConfig,
    *,
    on_eval: Callable[[int, GPT2], None] | None = None,
    on_log: Callable[[dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Run (or resume) training as ``config`` says (``TrainConfig``); the step itself is described in
    ``train.trainer``.

    Args:
        on_eval: called as ``on_eval(step, model)`` on rank 0 after every evaluation, with the
            model in eval mode (real vocabulary): sample some text, save a copy, plot something.
            Random numbers it draws do not disturb the run.
        on_log: called with each metrics record (a dict) as it is written.
    """
    trainer = trainer_class(config)(config, on_eval=on_eval, on_log=on_log)
    try:
        result = trainer.run()
    except BaseException:
        trainer.close()
        raise
    trainer.close(finished=True)
    return result



__all__ = ["train", "trainer_class"]
