"""Where a run stands, in one small file beside its metrics (``run/status.json``): running, finished,
stopped early, interrupted, or failed with its error. ``gpt2lab runs`` reads it to tell a sweep's
finished runs from the one that is still going and the one that died.

A process killed outright (``kill -9``, the kernel's out-of-memory killer, a lost machine) writes
nothing: its file still says "running". So the file names the process (host and pid) that wrote it,
and a reader on the same host that finds no such process calls the run "died". (A reader on another
host cannot look: such a run stays "running".)

    {"state": "running", "max_steps": 5000, "host": "node7", "pid": 4711, "time": 1764300000.0}
    {"state": "failed", "step": 1234, "max_steps": 5000, "error": "the loss became nan at step 1234; ...", ...}
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from ..errors import GPT2LabError, TrainingError
from ..files import atomic_write_bytes

STATUS = "status.json"

RUNNING = "running"
FINISHED = "finished"
STOPPED_EARLY = "stopped early"  # train --early-stop
INTERRUPTED = "interrupted"  # Ctrl-C or SIGTERM: the checkpoint was saved
FAILED = "failed"  # an exception ended the run; its first line is kept
DIED = "died"  # (read only) "running", but its process is gone without a word


def _started(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot, from Linux's /proc; None elsewhere): with the
    pid it names one process, where a pid alone may be reused by another after the run's is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat[stat.rindex(")") + 2:].split()[19])  # field 22; the name before ")" may hold spaces
    except (OSError, ValueError, IndexError):
        return None


def write_status(run_dir: Path, state: str, *, step: int, max_steps: int, error: str | None = None) -> None:
    """Record ``state`` for the run in ``run_dir`` (atomically). A write that fails (a full disk) is
    let go: the file only informs, and the checkpoint's own write reports the disk."""
    record: dict[str, Any] = {"state": state, "step": step, "max_steps": max_steps, "host": socket.gethostname(), "pid": os.getpid(),
                              "started": _started(os.getpid()), "time": round(time.time(), 1)}
    if error is not None:
        record["error"] = error
    try:
        atomic_write_bytes(run_dir / STATUS, (json.dumps(record) + "\n").encode())
    except OSError:
        pass


def error_line(err: BaseException) -> str:
    """An exception as the one line a status keeps: gpt2lab's own errors are already worded for the user."""
    text = (str(err).strip().splitlines() or [""])[0][:300]
    return text if isinstance(err, GPT2LabError) and text else f"{type(err).__name__}: {text}".rstrip(": ")


def _alive(pid: int, started: int | None) -> bool:
    """Whether the process that wrote a status (``pid``, started at ``started``) still runs."""
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        pass
    now = _started(pid)
    return started is None or now is None or now == started  # another start time: a new process with the old pid


def read_status(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The run's status record (None: no status.json, e.g. a run of an older gpt2lab), with "running"
    turned into "died" where its process is known to be gone."""
    path = Path(run_dir) / STATUS
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or "state" not in record:
        return None
    if record["state"] == RUNNING and record.get("host") == socket.gethostname() and isinstance(record.get("pid"), int) \
            and not _alive(record["pid"], record.get("started")):
        record["state"] = DIED
    return record


def check_not_running(run_dir: str | os.PathLike) -> None:
    """Refuse to start a run in ``run_dir`` while another process on this host trains there: two
    trainers would overwrite each other's checkpoint and metrics. (A process on another host cannot be
    looked at; its run is not stopped here.)"""
    record = read_status(run_dir)
    if record is None or record["state"] != RUNNING or record.get("host") != socket.gethostname() or record.get("pid") == os.getpid():
        return
    raise TrainingError(f"{run_dir} is being trained by process {record['pid']} on this machine (status.json); "
                        "stop it first (Ctrl-C saves), or choose another --out")


__all__ = ["STATUS", "RUNNING", "FINISHED", "STOPPED_EARLY", "INTERRUPTED", "FAILED", "DIED", "write_status", "read_status", "error_line",
           "check_not_running"]
