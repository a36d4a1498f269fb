"""Writing files so that a crash never leaves a half-written one behind; what a path names."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from .errors import CheckpointError


def atomic_write(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp_path)``, fsync the result, then rename it over ``path``.

    A reader (or a crash, or ``kill -9``) sees either the old file or the new one, never a mix:
    the rename is atomic on POSIX and Windows when both names are on the same file system, which
    is why the temporary file is created in the destination's own directory.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        # mkstemp makes 0600 (and a writer may replace the file); the result reads like any other file
        os.chmod(tmp, 0o666 & ~_umask())
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass  # some file systems (and Windows) do not fsync directories
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def looks_like_path(name: str | os.PathLike) -> bool:
    """Whether ``name`` can only mean a local path: a hub id is ``name`` or ``owner/name``, so a name that
    starts with ``.``, ``/`` or ``~``, has more than one ``/``, a backslash, or a file suffix is a path
    (and, when it does not exist, a mistyped one rather than something to look up on the hub)."""
    text = str(name)
    return (text.startswith((".", "/", "~")) or text.count("/") > 1 or "\\" in text
            or Path(text).suffix in (".safetensors", ".bin", ".json", ".tiktoken", ".txt"))


RUN_MODEL_DIR = "model"  # where a training run (``train --out DIR``) saves its model: DIR/model


ADAPTER_CONFIG = "adapter_config.json"  # what makes a directory a PEFT adapter (LoRA's A and B, not a whole model)


def adapter_base(directory: str | os.PathLike) -> str | None:
    """The base model a PEFT adapter directory names (its ``base_model_name_or_path``: a hub id or a
    path), or None when ``directory`` is not one (no ``adapter_config.json``, or a ``config.json`` of
    its own: a whole model)."""
    directory = Path(directory)
    if (directory / "config.json").exists() or not (directory / ADAPTER_CONFIG).is_file():
        return None
    try:
        base = json.loads((directory / ADAPTER_CONFIG).read_text(encoding="utf-8")).get("base_model_name_or_path")
    except (OSError, ValueError, AttributeError) as err:
        raise CheckpointError(f"cannot read {directory / ADAPTER_CONFIG} ({err}); is this a PEFT adapter directory?") from None
    if not isinstance(base, str) or not base:
        raise CheckpointError(f"{directory} is a LoRA adapter that names no base model (base_model_name_or_path); load the base with "
                              "GPT2.from_pretrained and attach the adapter with gpt2lab.lora.load_adapter")
    return base


def run_model_dir(path: str | os.PathLike) -> Path:
    """A training run's directory stands for the model it saved: ``run/`` (no config.json of its own, a
    ``run/model/config.json``) is ``run/model``, so ``--model run/`` and ``--init run/`` work as users pass
    them; any other path is itself."""
    path = Path(path).expanduser()
    if path.is_dir() and not (path / "config.json").exists() and (path / RUN_MODEL_DIR / "config.json").is_file():
        return path / RUN_MODEL_DIR
    return path
