"""Dashboards people already use: every metrics.jsonl record also goes to TensorBoard
(``--tensorboard DIR``, PyTorch's ``SummaryWriter``) and/or Weights & Biases (``--wandb PROJECT``).

Both are optional packages, imported only when asked for; a missing one is a one-line error before
training starts. Each record's numbers are logged under their metrics.jsonl names (``loss``,
``val_loss``, ``lr``, ``tok_per_s``, ``mfu``, ``hellaswag_acc_norm``...) at the record's ``step``; TensorBoard
also gets its texts (``sample``, ``train --sample``'s continuation).
W&B's offline mode (``WANDB_MODE=offline``) needs no network: it writes RUN_DIR/wandb/ for a later
``wandb sync``. A resumed run continues the same W&B run (its id is kept in RUN_DIR/wandb_id).
"""

from __future__ import annotations

import os
import secrets
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .config import TrainConfig

WANDB_ID = "wandb_id"  # RUN_DIR/wandb_id: the W&B run a resumed training continues


class Dashboards:
    """The dashboards a run writes to, each fed every metrics record."""

    def __init__(self, config: TrainConfig, run_dir: str | os.PathLike) -> None:
        self.writer: Any = None  # torch.utils.tensorboard.SummaryWriter
        self.wandb_run: Any = None
        if config.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise ConfigError("--tensorboard needs the tensorboard package: pip install tensorboard") from None
            self.writer = SummaryWriter(log_dir=str(config.tensorboard), flush_secs=10)
        if config.wandb:
            try:
                import wandb
            except ImportError:
                self.close()
                raise ConfigError("--wandb needs the wandb package: pip install wandb (or leave --wandb out)") from None
            run_dir = Path(run_dir)
            id_file = run_dir / WANDB_ID
            # a new run gets a fresh id (W&B's ids: lower-case letters and digits); a resumed one its own
            run_id = id_file.read_text().strip() if config.resume and id_file.is_file() else secrets.token_hex(6)
            run_dir.mkdir(parents=True, exist_ok=True)
            id_file.write_text(run_id + "\n")
            self.wandb_run = wandb.init(project=config.wandb, dir=str(run_dir), id=run_id, resume="allow",
                                        name=run_dir.resolve().name, config=asdict(config))

    def log(self, record: dict[str, Any]) -> None:
        """Log a metrics.jsonl record's numbers at its step (and, to TensorBoard, its texts: ``sample``)."""
        step = int(record["step"])
        scalars = {k: v for k, v in record.items() if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)}
        if self.writer is not None:
            for name, value in scalars.items():
                self.writer.add_scalar(name, value, step)
            for name, text in record.items():
                if isinstance(text, str):
                    self.writer.add_text(name, text, step)
        if self.wandb_run is not None:
            self.wandb_run.log(scalars, step=step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        if self.wandb_run is not None:
            self.wandb_run.finish()
            self.wandb_run = None


__all__ = ["Dashboards", "WANDB_ID"]
