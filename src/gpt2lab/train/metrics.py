"""RUN/metrics.jsonl, the run's record: one JSON line per logged step, and what else each record feeds.

A record is appended as soon as its step is logged, so a crash loses nothing that was shown; a line
cut short by one is skipped when the file is read back. A resumed run first cuts the file back to
its checkpoint's step (the steps after it are trained again, to the same numbers), so no step is
ever written twice. Every record also goes to the dashboards (TensorBoard, W&B:
``train.dashboards``) and to the ``on_log`` hook, and its loss, speed and MFU to the progress bar.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..files import atomic_write
from .dashboards import Dashboards


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl file, in order (a line a crash cut short is left out)."""
    records = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a crash
        if isinstance(record, dict):
            records.append(record)
    return records


class MetricsLog:
    """metrics.jsonl of one run (on the main process), the records written so far in ``records``."""

    def __init__(self, path: str | os.PathLike, on_log: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.path = Path(path)
        self.records: list[dict[str, Any]] = []
        self.on_log = on_log
        self.dashboards: Dashboards | None = None  # set once the run's settings are all checked

    def start(self, resumed_at: int | None) -> None:
        """Begin the file: empty for a new run, cut back to step ``resumed_at`` for a resumed one.
        Written atomically: an OSError (a full disk) leaves the file as it was."""
        self.records = self._read(resumed_at) if resumed_at is not None else []
        text = "".join(json.dumps(r) + "\n" for r in self.records)
        atomic_write(self.path, lambda tmp: tmp.write_text(text, encoding="utf-8"))

    def _read(self, up_to: int) -> list[dict[str, Any]]:
        return [r for r in read_metrics(self.path) if r.get("step", 0) <= up_to] if self.path.is_file() else []

    def append(self, record: dict[str, Any]) -> None:
        """Write ``record`` as the file's next line (an OSError if it cannot be), then hand it to the
        dashboards and the hook."""
        self.records.append(record)
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        if self.dashboards is not None:
            self.dashboards.log(record)
        if self.on_log is not None:
            self.on_log(record)

    def close(self) -> None:
        """Flush and close the dashboards."""
        if self.dashboards is not None:
            self.dashboards.close()
            self.dashboards = None


def show_step(bar: Any, loss: float, tok_per_s: float, record: dict[str, Any] | None) -> None:
    """A read step's loss, speed and (from its metrics line, when it has one) gradient norm and MFU beside the
    progress bar."""
    shown = {"norm": f"{record['grad_norm']:.3g}"} if record and "grad_norm" in record else {}
    if record and "mfu" in record:
        shown["mfu"] = f"{record['mfu']:.1%}"
    bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{tok_per_s:,.0f}", **shown)


__all__ = ["MetricsLog", "read_metrics", "show_step"]
