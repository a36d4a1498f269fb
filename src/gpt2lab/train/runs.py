"""Several training runs side by side (``gpt2lab runs``): what each reached, as a table, and their loss
curves on one chart, read from each run's metrics.jsonl.

For the question a sweep asks (``--lr 3e-4`` or ``1e-3``? 4 layers or 8?) the runs' last train losses
alone mislead: one step's loss is noisy, and a run that overfits has the lowest train loss and not the
lowest validation loss. So the table gives the mean of the last logged losses, the last and the lowest
validation loss (with its step), how far each run got (steps, epochs, tokens), its speed, and the last
benchmark scores of runs that scored one (``train --eval-task``: ``hellaswag_acc_norm``...). And where
each stands (``train.status``): still running (how far), finished, stopped early, interrupted, failed
(with its error, below the table) or died (its process gone without a word: killed, out of memory).
"""

from __future__ import annotations

import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError
from .checkpoint import METRICS, peek_checkpoint
from .metrics import read_metrics
from .plots import is_accuracy, task_metric_names
from .status import DIED, FAILED, INTERRUPTED, RUNNING, STATUS, read_status

LAST = 20  # logged steps the table's train loss averages


@dataclass
class RunSummary:
    """What one run reached, from its metrics.jsonl, and where it stands, from its status.json."""

    name: str  # as the run was named (its directory)
    records: list[dict[str, Any]]
    step: int  # the last logged step
    epoch: float | None  # passes over the training data by then (runs from before epochs were logged: None)
    tokens: int | None  # training tokens seen by then (likewise)
    train_loss: float | None  # mean of the last LAST logged train losses (None: no step logged yet)
    val_loss: float | None  # the last evaluation's
    best: tuple[int, float] | None  # (step, val_loss) of the lowest validation loss
    tok_per_s: float | None  # median over the logged steps
    status: dict[str, Any] | None = None  # train.status.read_status (None: a run of an older gpt2lab)
    saved_step: int | None = None  # the step of its checkpoint, where the run ended before its end (None: none, or not looked)
    scores: dict[str, float] = field(default_factory=dict)  # each benchmark metric's last value (train --eval-task)

    @property
    def state(self) -> str | None:
        """running, finished, stopped early, interrupted, failed or died (None: not recorded)."""
        return self.status["state"] if self.status else None

    def state_cell(self) -> str:
        if self.status is None:
            return "-"
        max_steps = self.status.get("max_steps")
        if self.state == RUNNING and isinstance(max_steps, int) and max_steps > 0:
            done = 100 * self.step / max_steps
            cell = f"{RUNNING} {done:.{1 if done < 10 else 0}f}%"
            if self.tokens and self.tok_per_s and self.step:  # the steps left at its median speed (evaluations not counted)
                cell += f", ~{human_duration((max_steps - self.step) * self.tokens / self.step / self.tok_per_s)} left"
            return cell
        return str(self.state)

    def note(self) -> str | None:
        """A line for below the table where the state needs one: what went wrong, what to do next."""
        status = self.status or {}
        resume = (f"gpt2lab train --resume --out {self.name} goes on from its checkpoint of step {self.saved_step:,}"
                  if self.saved_step is not None else "it saved no checkpoint: start it again")
        if self.state == FAILED:
            return f"{self.name}: failed at step {status.get('step', self.step):,}: {status.get('error', 'no error recorded')}"
        if self.state == DIED:
            return (f"{self.name}: its process (pid {status.get('pid')}) is gone without saying how it ended (killed? out of memory?); "
                    + resume)
        if self.state == INTERRUPTED:
            return f"{self.name}: interrupted at step {status.get('step', self.step):,}; " + resume
        return None

    def to_dict(self) -> dict[str, Any]:
        """The summary as plain values (``gpt2lab runs --json``), without the records."""
        status = self.status or {}
        return {"run": self.name, "state": self.state, "step": self.step, "max_steps": status.get("max_steps"), "epoch": self.epoch,
                "tokens": self.tokens, "train_loss": self.train_loss, "val_loss": self.val_loss,
                "best_step": self.best[0] if self.best else None, "best_val_loss": self.best[1] if self.best else None,
                "tok_per_s": self.tok_per_s, "error": status.get("error"), "saved_step": self.saved_step, **self.scores}

    def row(self, score_names: tuple[str, ...] | list[str] = ()) -> list[str]:
        best = f"{self.best[1]:.4f} (step {self.best[0]:,})" if self.best else "-"
        return [self.name, self.state_cell(), f"{self.step:,}", f"{self.epoch:.2f}" if self.epoch is not None else "-",
                human_count(self.tokens), f"{self.train_loss:.4f}" if self.train_loss is not None else "-",
                f"{self.val_loss:.4f}" if self.val_loss is not None else "-", best,
                f"{self.tok_per_s:,.0f}" if self.tok_per_s is not None else "-",
                *(f"{self.scores[n]:.4f}" if n in self.scores else "-" for n in score_names)]


HEADER = ["run", "state", "step", "epoch", "tokens", f"train loss (last {LAST})", "val loss", "lowest val loss", "tok/s"]
LOWEST = HEADER.index("lowest val loss")


def human_count(n: int | None) -> str:
    """1234567 -> "1.23M" ("-" for None): a column of token counts a reader compares at a glance."""
    if n is None:
        return "-"
    for size, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if n >= size:
            return f"{n / size:.3g}{unit}"
    return str(n)


def human_duration(seconds: float) -> str:
    """4000 -> "1.1 h": a time left, to the precision a reader plans with."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def summarize_run(run_dir: str | os.PathLike, name: str | None = None) -> RunSummary:
    """One run's summary; ``InputError`` when the directory holds no run. A run that has logged no step
    yet (compiling, say) has a row of its state alone."""
    path = Path(run_dir) / METRICS
    status = read_status(run_dir)
    if not path.is_file() and status is None:
        raise InputError(f"{run_dir} holds no training run (no {METRICS}); give directories that gpt2lab train --out wrote")
    records = read_metrics(path) if path.is_file() else []
    logged = [r for r in records if "loss" in r]
    if not logged and status is None:
        raise InputError(f"{path} has no logged step yet")
    ended_short = status is not None and status["state"] in (FAILED, DIED, INTERRUPTED)
    saved = peek_checkpoint(run_dir) if ended_short else None  # where --resume would go on from
    saved_step = saved.get("step") if saved is not None else None
    evaluated = [(r["step"], r["val_loss"]) for r in records if r.get("val_loss") is not None]
    speeds = [r["tok_per_s"] for r in logged if "tok_per_s" in r]
    return RunSummary(
        name=name if name is not None else str(run_dir),
        records=records,
        step=logged[-1]["step"] if logged else 0,
        epoch=logged[-1].get("epoch") if logged else None,
        tokens=logged[-1].get("tokens") if logged else None,
        train_loss=statistics.fmean(r["loss"] for r in logged[-LAST:]) if logged else None,
        val_loss=evaluated[-1][1] if evaluated else None,
        best=min(evaluated, key=lambda e: e[1]) if evaluated else None,
        tok_per_s=statistics.median(speeds) if speeds else None,
        status=status,
        saved_step=saved_step,
        scores={name: [r[name] for r in records if r.get(name) is not None][-1] for name in task_metric_names(records)},
    )


def compare_runs(run_dirs: list[str | os.PathLike]) -> list[RunSummary]:
    """Every run's summary, in the order given. A directory that holds runs rather than being one (a
    sweep's ``runs/``, with ``runs/lr3e-4/``, ``runs/lr1e-3/``...) stands for the runs in it, sorted."""
    if not run_dirs:
        raise InputError("name at least one run directory")

    def is_run(d: Path) -> bool:
        return (d / METRICS).is_file() or (d / STATUS).is_file()

    expanded: list[str | os.PathLike] = []
    for d in run_dirs:
        inner = [] if is_run(Path(d)) else sorted(p for p in Path(d).iterdir() if is_run(p)) if Path(d).is_dir() else []
        expanded += inner or [d]
    return [summarize_run(d) for d in expanded]


SORT_KEYS = {  # gpt2lab runs --sort: the figure each order ranks by, lowest first
    "lowest": lambda s: s.best[1] if s.best else None,
    "val": lambda s: s.val_loss,
    "train": lambda s: s.train_loss,
}


def sort_runs(summaries: list[RunSummary], by: str) -> list[RunSummary]:
    """The summaries ordered by ``by``: a key of ``SORT_KEYS`` (lowest first) or a benchmark metric the
    runs logged (``hellaswag_acc_norm``: best first); runs without that figure (not evaluated yet) last,
    in their order."""
    scored = sorted({name for s in summaries for name in s.scores})
    if by not in SORT_KEYS and by not in scored:
        raise InputError(f"cannot sort by {by!r}; choose one of {', '.join([*SORT_KEYS, *scored])}")
    sign = -1.0 if is_accuracy(by) else 1.0  # accuracies best first from the top; perplexities and losses from the bottom

    def key(s: RunSummary) -> float | None:
        if by in SORT_KEYS:
            return SORT_KEYS[by](s)
        return sign * s.scores[by] if by in s.scores else None

    return sorted(summaries, key=lambda s: (key(s) is None, key(s) or 0.0))


def runs_table(summaries: list[RunSummary]) -> str:
    """The summaries as an aligned text table, the run of the lowest validation loss marked with *, a
    column for each benchmark metric any run logged; below it a line for each run that failed, died or
    was interrupted."""
    score_names = sorted({name for s in summaries for name in s.scores})
    header = HEADER + score_names
    rows = [s.row(score_names) for s in summaries]
    ranked = [s for s in summaries if s.best is not None]
    if len(ranked) > 1:
        lowest = min(ranked, key=lambda s: s.best[1] if s.best else float("inf"))
        rows[summaries.index(lowest)][LOWEST] += " *"
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths, strict=True)))
             for row in [header, *rows]]
    notes = [note for note in (s.note() for s in summaries) if note]
    return "\n".join(lines + ([""] + notes if notes else [])) + "\n"


__all__ = ["RunSummary", "summarize_run", "compare_runs", "sort_runs", "SORT_KEYS", "runs_table", "human_count", "human_duration", "LAST"]
