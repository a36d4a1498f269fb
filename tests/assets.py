"""Offline test assets that are too large (or not ours) to commit.

GPT-2's vocabulary: tiktoken's r50k_base ranks ship inside the ``openai-whisper`` source archive on
PyPI as ``whisper/assets/gpt2.tiktoken``. ``gpt2_vocab()`` downloads that archive with pip (no
install, no dependencies), extracts the one file, checks its hash, and caches it outside the repo
(``$GPT2LAB_TEST_CACHE``, default ``~/.cache/gpt2lab-test``). Also runnable: ``python tests/assets.py``.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

WHISPER = "openai-whisper==20250625"
MEMBER = "whisper/assets/gpt2.tiktoken"
SHA256 = "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"


def cache_dir() -> Path:
    return Path(os.environ.get("GPT2LAB_TEST_CACHE") or Path.home() / ".cache" / "gpt2lab-test")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _extract(archive: Path) -> bytes:
    """The vocabulary's bytes from a source archive (.tar.gz) or, should pip pick one, a wheel."""
    if archive.name.endswith((".whl", ".zip")):
        with zipfile.ZipFile(archive) as zf:
            name = next(n for n in zf.namelist() if n.endswith(MEMBER))
            return zf.read(name)
    with tarfile.open(archive) as tf:
        member = next(m for m in tf.getmembers() if m.name.endswith(MEMBER))
        return tf.extractfile(member).read()


def gpt2_vocab() -> Path:
    """Path to GPT-2's ``gpt2.tiktoken`` (fetched once, then cached); raises if it cannot be had."""
    target = cache_dir() / "gpt2.tiktoken"
    if target.is_file() and _sha256(target.read_bytes()) == SHA256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        result = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--disable-pip-version-check", WHISPER, "-d", tmp],
            capture_output=True,
            text=True,
        )
        archives = [p for p in Path(tmp).iterdir() if p.name.endswith((".tar.gz", ".whl", ".zip"))]
        if result.returncode != 0 or not archives:
            raise RuntimeError(f"could not download {WHISPER} for GPT-2's vocabulary:\n{result.stderr[-2000:]}")
        data = _extract(archives[0])
        if _sha256(data) != SHA256:
            raise RuntimeError(f"{MEMBER} in {archives[0].name} has sha256 {_sha256(data)}, expected {SHA256}")
        # write then rename: a concurrent test run sees the whole file or none
        partial = Path(tmp) / "gpt2.tiktoken"
        partial.write_bytes(data)
        os.replace(partial, target)
    return target


if __name__ == "__main__":
    print(gpt2_vocab())
