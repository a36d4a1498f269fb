"""Training data, text in and token ids out: ``prepare`` turns files, folders or a Hugging Face
dataset into a DATA_DIR holding

    train.bin   the training token ids, one flat array (uint16, or uint32 for vocabularies > 65536)
    val.bin     the validation token ids, same format
    meta.json   the tokenizer, the counts, the sources and a fingerprint of the inputs

Documents are separated by ``<|endoftext|>``. Instruction data (``format="instruct"``, records laid
out by ``gpt2lab.instruct``'s template) adds ``train.mask.bin`` and ``val.mask.bin``: which tokens
are targets (the responses) and which are context only. ``prepare`` streams (text is read in chunks
and tokenised by a pool of worker processes, a bounded number of chunks in flight), so its memory
stays flat however large the corpus.

Finding and reading the inputs is ``gpt2lab.sources``. Reading a DATA_DIR back and cutting it into
batches is ``gpt2lab.batches`` (``open_data``, ``BatchSampler``); its names are re-exported here, so
``from gpt2lab.data import BatchSampler`` works.
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# the reading side (``batches``), re-exported so that ``from gpt2lab.data import BatchSampler`` keeps working
from .batches import IGNORE_INDEX, MASKS, META, TRAIN, VAL, BatchSampler, TokenData, eval_starts, open_data, windows
from .errors import DataError
from .files import atomic_write, atomic_write_bytes
from .sources import CHUNK_CHARS, RECORD_SUFFIXES, Source, _record_objects, _Stats, find_sources, iter_pieces

FORMAT_VERSION = 1
FORMATS = ("text", "instruct")


# ---------------------------------------------------------------------------------------------
# The tokenizer, named so that worker processes can rebuild it
# ---------------------------------------------------------------------------------------------


def load_tokenizer(spec: str | os.PathLike | None):
    """``None`` or ``"gpt2"``: GPT-2's vocabulary; otherwise a tokenizer file or a model directory."""
    from .tokenizer import Tokenizer

    if spec is None or str(spec) == "gpt2":
        return Tokenizer.gpt2()
    path = Path(spec)
    if path.is_dir():
        return Tokenizer.from_pretrained(path)
    if not path.exists():
        raise DataError(f"no such tokenizer file: {spec}")
    return Tokenizer.from_file(path)


def tokenizer_fingerprint(tok) -> str:
    """A short hash of what the tokenizer maps: its tokens' bytes, special tokens and pattern.

    Two tokenizers with the same fingerprint give the same ids for every text, so it is what
    ``meta.json`` records and what training and evaluation compare with a model's own tokenizer.
    """
    h = hashlib.sha256()
    for token, rank in sorted(tok.mergeable_ranks.items(), key=lambda kv: kv[1]):
        h.update(rank.to_bytes(4, "little") + len(token).to_bytes(2, "little") + token)
    h.update(json.dumps(sorted(tok.special_tokens.items())).encode())
    h.update(tok.pattern.encode())
    return h.hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# Tokenising, in worker processes
# ---------------------------------------------------------------------------------------------

_WORKER_TOKENIZER = None


def _worker_init(spec) -> None:
    global _WORKER_TOKENIZER
    _WORKER_TOKENIZER = load_tokenizer(spec)


def _encode_task(task: list[tuple[str, bool]], eot: int, dtype: str, tok=None) -> np.ndarray:
    """Token ids of a list of (piece, put <|endoftext|> before it)."""
    tok = tok or _WORKER_TOKENIZER
    ids: list[int] = []
    for text, sep in task:
        if sep:
            ids.append(eot)
        ids.extend(tok.encode_ordinary(text))  # "<|endoftext|>" inside a text is plain text, not the token
    return np.asarray(ids, dtype=dtype)


def _tasks(pieces: Iterator[tuple[str, bool]], target: int = CHUNK_CHARS) -> Iterator[list[tuple[str, bool]]]:
    """Group pieces into tasks of about ``target`` characters, each piece marked with whether an
    ``<|endoftext|>`` goes before it (a new document other than the very first)."""
    task: list[tuple[str, bool]] = []
    size = 0
    first = True
    for text, starts in pieces:
        task.append((text, starts and not first))
        first = False
        size += len(text)
        if size >= target:
            yield task
            task, size = [], 0
    if task:
        yield task


# ---------------------------------------------------------------------------------------------
# prepare
# ---------------------------------------------------------------------------------------------


@dataclass
class PreparedData:
    """What ``prepare`` wrote (or found already written): the contents of ``meta.json``."""

    directory: Path
    meta: dict[str, Any]
    skipped: bool = False  # True when the inputs were unchanged and nothing was done

    @property
    def train_tokens(self) -> int:
        return int(self.meta["train_tokens"])

    @property
    def val_tokens(self) -> int:
        return int(self.meta["val_tokens"])

    def summary(self) -> str:
        m = self.meta
        if self.skipped:
            return (
                f"{self.directory}: inputs unchanged since the last prepare; nothing to do "
                f"({m['train_tokens']:,} train / {m['val_tokens']:,} val tokens)"
            )
        if m.get("instruct"):
            ins = m["instruct"]
            return (
                f"{self.directory}: {ins['examples']:,} instruction examples ({ins['val_examples']:,} held out for validation), "
                f"{m['train_tokens']:,} train + {m['val_tokens']:,} val tokens ({m['dtype']}), of which "
                f"{ins['train_targets']:,} + {ins['val_targets']:,} are response tokens the loss counts"
            )
        line = (
            f"{self.directory}: {m['train_tokens']:,} train + {m['val_tokens']:,} val tokens ({m['dtype']}) "
            f"from {m['documents']:,} document{'s' * (m['documents'] != 1)} in {m['files']:,} source{'s' * (m['files'] != 1)}"
        )
        notes = []
        if m["empty_files"]:
            notes.append(f"{len(m['empty_files'])} empty skipped")
        if m.get("skipped_files"):
            notes.append(f"{len(m['skipped_files'])} JSON/Parquet file(s) in folders without a {m['text_field']!r} field skipped")
        if m["invalid_utf8_files"]:
            notes.append(f"{len(m['invalid_utf8_files'])} not valid UTF-8 (decoded with replacement characters)")
        return line + (f"; {', '.join(notes)}" if notes else "")


def val_ranges(n: int, val_fraction: float, segment: int = 1 << 16) -> list[tuple[int, int]]:
    """Where the validation tokens come from in a stream of ``n``: evenly spaced segments.

    A small corpus gives its last ``val_fraction`` (one segment, as nanoGPT's Shakespeare split);
    a large one gives up to 100 segments spread over the whole stream, so validation samples every
    part of the corpus rather than only the last files.
    """
    n_val = int(round(n * val_fraction))
    if val_fraction > 0 and n >= 2:
        n_val = min(max(n_val, 1), n - 1)
    if n_val <= 0:
        return []
    k = max(1, min(100, n_val // segment))
    ranges = []
    for i in range(k):  # segment i ends at the end of the i-th of k equal parts of the stream
        length = n_val // k + (1 if i < n_val % k else 0)
        end = (i + 1) * n // k
        ranges.append((end - length, end))
    return ranges


def _fingerprint(sources: list[Source], tok_fp: str, val_fraction: float, text_field: str, layout: str = "text") -> str:
    keys = []
    for s in sources:
        key = s.key()
        if s.kind == "hf":
            key.append(str(getattr(s.hf_dataset(), "_fingerprint", "")))
        keys.append(key)
    what = [FORMAT_VERSION, tok_fp, val_fraction, text_field, keys] + ([layout] if layout != "text" else [])
    blob = json.dumps(what)
    return hashlib.sha256(blob.encode()).hexdigest()


def prepare(
    inputs: Sequence[str | os.PathLike] | str | os.PathLike,
    out: str | os.PathLike,
    *,
    tokenizer: str | os.PathLike | None = None,
    val_fraction: float = 0.05,
    text_field: str = "text",
    format: str = "text",
    num_workers: int | None = None,
    progress: bool = True,
    force: bool = False,
) -> PreparedData:
    """Tokenise text files, folders, JSON/JSONL/Parquet records or ``hf:NAME[:split]`` into ``out``.

    Args:
        inputs: paths or ``hf:`` names; folders are walked recursively for ``sources.SUFFIXES``.
        out: the DATA_DIR to write ``train.bin``, ``val.bin`` and ``meta.json`` into.
        tokenizer: ``None``/``"gpt2"`` for GPT-2's vocabulary, a tokenizer file, or a model directory.
        val_fraction: share of tokens held out for validation (see ``val_ranges``).
        text_field: the field holding the text in JSON/JSONL/Parquet/dataset records.
        format: ``"text"`` (documents, every token a target) or ``"instruct"``: instruction records
            (Alpaca fields or chat ``messages``) laid out by the template of ``gpt2lab.instruct``,
            with the loss on the responses only (see ``prepare_instruct``).
        num_workers: tokenising processes; default one per CPU (1 means in this process).
        progress: show a progress bar (bytes read).
        force: redo the work even when the inputs are unchanged.

    Returns:
        A ``PreparedData`` whose ``meta`` is what ``meta.json`` holds and whose ``skipped`` says
        the inputs were unchanged since the last run, which then did nothing.
    """
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    if format not in FORMATS:
        raise DataError(f"unknown format {format!r}: choose one of {', '.join(FORMATS)}")
    if not 0.0 <= val_fraction < 1.0:
        raise DataError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if format == "instruct":
        if text_field != "text":
            raise DataError("--text-field applies to plain text; instruction records are read by their own fields "
                            "(instruction/input/output or messages)")
        return prepare_instruct(inputs, out, tokenizer=tokenizer, val_fraction=val_fraction, progress=progress, force=force)
    out = Path(out)
    sources = find_sources(inputs)
    tok = load_tokenizer(tokenizer)
    tok_fp = tokenizer_fingerprint(tok)
    fingerprint = _fingerprint(sources, tok_fp, val_fraction, text_field)

    if not force:
        old = _unchanged(out, fingerprint)
        if old is not None:
            return PreparedData(out, old, skipped=True)

    dtype = token_dtype(tok.n_vocab)
    out.mkdir(parents=True, exist_ok=True)
    for stale in MASKS.values():  # left by an earlier instruct prepare into this directory
        (out / stale).unlink(missing_ok=True)
    stats = _Stats()
    workers = num_workers if num_workers is not None else (os.cpu_count() or 1)
    total_bytes = sum(s.size for s in sources)
    if total_bytes < 4 * CHUNK_CHARS and not any(s.kind == "hf" for s in sources):
        workers = 1  # starting processes would cost more than it saves
    bar = _progress_bar(total_bytes, progress)
    all_path = out / ".all.bin.tmp"
    n = 0
    max_id = -1
    try:
        with open(all_path, "wb") as sink:
            for ids in _encode_all(_tasks(iter_pieces(sources, text_field, stats, bar)), tok, tokenizer, dtype, workers):
                sink.write(ids.tobytes())
                n += ids.size
                if ids.size:
                    max_id = max(max_id, int(ids.max()))
        if n == 0:
            hint = f"; {len(stats.skipped)} record file(s) had no {text_field!r} field (--text-field?)" if stats.skipped else ""
            raise DataError(f"no text in the inputs: all {len(sources)} source(s) are empty{hint}")
        train_n, val_n = _split(all_path, out, n, dtype, val_fraction)
    finally:
        all_path.unlink(missing_ok=True)
        if bar is not None:
            bar.close()

    return _write_meta(out, tok, tokenizer, tok_fp, {
        "dtype": dtype,
        "train_tokens": train_n,
        "val_tokens": val_n,
        "documents": stats.documents,
        "files": len(sources),
        "max_token_id": max_id,
        "val_fraction": val_fraction,
        "text_field": text_field,
        "empty_files": stats.empty,
        "invalid_utf8_files": stats.invalid_utf8,
        "skipped_files": stats.skipped,
        "sources": [s.name for s in sources],
        "fingerprint": fingerprint,
    })


def _write_meta(out: Path, tok, tokenizer: str | os.PathLike | None, tok_fp: str, fields: dict[str, Any]) -> PreparedData:
    """Save the tokenizer beside the data (training copies it next to the model, so the model/ dir
    is complete) and write meta.json, last: a DATA_DIR with a meta.json is whole."""
    tok.save(out / "tokenizer")
    meta = {
        "format": FORMAT_VERSION,
        "tokenizer": {"name": str(tokenizer) if tokenizer is not None else "gpt2", "n_vocab": tok.n_vocab,
                      "eot_token": tok.eot_token, "fingerprint": tok_fp},
        **fields,
    }
    atomic_write_bytes(out / META, (json.dumps(meta, indent=2) + "\n").encode())
    return PreparedData(out, meta)


def token_dtype(n_vocab: int) -> str:
    """The narrowest unsigned type that holds every id of a vocabulary (half the disk of uint32 for GPT-2's)."""
    return "uint16" if n_vocab <= 1 << 16 else "uint32"


def prepare_instruct(
    inputs: Sequence[str | os.PathLike] | str | os.PathLike,
    out: str | os.PathLike,
    *,
    tokenizer: str | os.PathLike | None = None,
    val_fraction: float = 0.05,
    progress: bool = True,
    force: bool = False,
) -> PreparedData:
    """Instruction records (``.jsonl``/``.json``/``.parquet`` files or ``hf:NAME[:split]``) into a DATA_DIR.

    Each record (Alpaca ``instruction``/``input``/``output``, or chat ``messages``) is laid out by
    ``instruct.render``; examples are packed one after another, each response followed by its
    ``<|endoftext|>``, into ``train.bin``/``val.bin`` with the loss masks ``train.mask.bin``/
    ``val.mask.bin`` beside them. Whole examples go to validation (``val_fraction`` of them, evenly
    spread), never half of one. ``train`` reads the masks through ``open_data``, so it takes this
    data unchanged. Records are held in memory while they are split (instruction sets are small:
    Alpaca's 52k examples are about 10M tokens). A malformed record is a ``DataError`` naming it
    (``FILE:LINE``).
    """
    from .instruct import TEMPLATE, conversation_from_record, render

    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    if not 0.0 <= val_fraction < 1.0:
        raise DataError(f"val_fraction must be in [0, 1), got {val_fraction}")
    out = Path(out)
    sources = find_sources(inputs, suffixes=RECORD_SUFFIXES)
    for source in sources:
        if source.kind == "text":
            raise DataError(f"{source.name}: instruction data must be records (.jsonl, .json or .parquet), not plain text")
    tok = load_tokenizer(tokenizer)
    tok_fp = tokenizer_fingerprint(tok)
    fingerprint = _fingerprint(sources, tok_fp, val_fraction, "", layout=f"instruct:{TEMPLATE}")
    if not force:
        old = _unchanged(out, fingerprint)
        if old is not None:
            return PreparedData(out, old, skipped=True)

    examples: list[tuple[list[int], list[int]]] = []
    turns = 0
    bar = _progress_bar(sum(s.size for s in sources), progress)
    try:
        for source in sources:
            for record, where in _record_objects(source):
                conversation = conversation_from_record(record, where)
                turns += len(conversation.turns)
                examples.append(render(tok, conversation))
            if bar is not None:
                bar.update(source.size)
    finally:
        if bar is not None:
            bar.close()
    if not examples:
        raise DataError(f"no records in the inputs: all {len(sources)} source(s) are empty")

    held_out = set(_val_examples(len(examples), val_fraction))
    dtype = token_dtype(tok.n_vocab)
    split = {TRAIN: [e for i, e in enumerate(examples) if i not in held_out], VAL: [e for i, e in enumerate(examples) if i in held_out]}
    out.mkdir(parents=True, exist_ok=True)
    counts, targets, max_id = {}, {}, -1
    for fname, part in split.items():
        ids = np.fromiter((t for e, _ in part for t in e), dtype=np.int64)  # (N,)
        mask = np.fromiter((m for _, ms in part for m in ms), dtype=np.uint8)  # (N,)
        if ids.size:
            max_id = max(max_id, int(ids.max()))
        atomic_write_bytes(out / fname, ids.astype(dtype).tobytes())
        atomic_write_bytes(out / MASKS[fname], mask.tobytes())
        counts[fname], targets[fname] = int(ids.size), int(mask.sum())

    return _write_meta(out, tok, tokenizer, tok_fp, {
        "dtype": dtype,
        "train_tokens": counts[TRAIN],
        "val_tokens": counts[VAL],
        "documents": len(examples),
        "files": len(sources),
        "max_token_id": max_id,
        "val_fraction": val_fraction,
        "text_field": None,
        "empty_files": [],
        "invalid_utf8_files": [],
        "skipped_files": [],
        "sources": [s.name for s in sources],
        "fingerprint": fingerprint,
        "loss_mask": True,
        "instruct": {"template": TEMPLATE, "examples": len(examples), "turns": turns, "val_examples": len(split[VAL]),
                     "train_targets": targets[TRAIN], "val_targets": targets[VAL]},
    })


def _val_examples(n: int, val_fraction: float) -> list[int]:
    """Which of ``n`` examples are held out: ``val_fraction`` of them (at least one when there are
    two or more), evenly spread so validation samples the whole file, not only its end."""
    n_val = int(round(n * val_fraction))
    if val_fraction > 0 and n >= 2:
        n_val = min(max(n_val, 1), n - 1)
    return [int((i + 0.5) * n / n_val) for i in range(n_val)] if n_val > 0 else []


def _unchanged(out: Path, fingerprint: str) -> dict[str, Any] | None:
    """The meta.json of an earlier prepare of the same inputs whose files are all still whole, else None."""
    try:
        old = json.loads((out / META).read_text(encoding="utf-8"))
        itemsize = np.dtype(old["dtype"]).itemsize
        sizes = {TRAIN: old["train_tokens"] * itemsize, VAL: old["val_tokens"] * itemsize}
        if old.get("loss_mask"):
            sizes.update({MASKS[TRAIN]: old["train_tokens"], MASKS[VAL]: old["val_tokens"]})
        same = old.get("fingerprint") == fingerprint and all((out / f).stat().st_size == n for f, n in sizes.items())
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return old if same else None


def _progress_bar(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="B", unit_scale=True, desc="tokenising", dynamic_ncols=True)


def _encode_all(tasks: Iterator[list[tuple[str, bool]]], tok, spec, dtype: str, workers: int) -> Iterator[np.ndarray]:
    """Token ids of each task, in order. With workers > 1 a pool tokenises while this process
    reads; at most ``2 * workers`` tasks are in flight, so memory does not grow with the corpus
    (``Pool.imap`` would read the whole input ahead)."""
    eot = tok.eot_token
    if workers <= 1:
        for task in tasks:
            yield _encode_task(task, eot, dtype, tok)
        return
    import multiprocessing as mp

    with mp.get_context().Pool(workers, initializer=_worker_init, initargs=(spec,)) as pool:
        in_flight: collections.deque = collections.deque()
        for task in tasks:
            in_flight.append(pool.apply_async(_encode_task, (task, eot, dtype)))
            if len(in_flight) >= 2 * workers:
                yield in_flight.popleft().get()
        while in_flight:
            yield in_flight.popleft().get()


def _split(all_path: Path, out: Path, n: int, dtype: str, val_fraction: float) -> tuple[int, int]:
    """Copy the token stream into train.bin and val.bin (streamed, each written atomically)."""
    ranges = val_ranges(n, val_fraction)
    src = np.memmap(all_path, dtype=dtype, mode="r", shape=(n,))
    step = 1 << 22

    def copy(source: np.memmap, spans: list[tuple[int, int]]):
        # the memmap is passed in, not closed over, so that `del src` below really lets go of the file
        def write(tmp: Path) -> None:
            with open(tmp, "wb") as handle:
                for a, b in spans:
                    for i in range(a, b, step):
                        handle.write(np.ascontiguousarray(source[i : min(b, i + step)]).tobytes())

        return write

    train_spans, start = [], 0
    for a, b in ranges:
        train_spans.append((start, a))
        start = b
    train_spans.append((start, n))
    atomic_write(out / TRAIN, copy(src, train_spans))
    atomic_write(out / VAL, copy(src, ranges))
    del src
    return sum(b - a for a, b in train_spans), sum(b - a for a, b in ranges)


def save_tokens(
    out: str | os.PathLike,
    train_ids: Sequence[int] | np.ndarray,
    val_ids: Sequence[int] | np.ndarray,
    *,
    n_vocab: int,
    eot_token: int | None = None,
    name: str = "ids",
) -> PreparedData:
    """Write ids you already have (a synthetic corpus, another tokenizer's output) as a DATA_DIR
    that ``train`` and ``eval`` read like a prepared one."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    dtype = token_dtype(n_vocab)
    arrays = {TRAIN: np.asarray(train_ids).astype(dtype), VAL: np.asarray(val_ids).astype(dtype)}
    max_id = max((int(a.max()) for a in arrays.values() if a.size), default=-1)
    if max_id >= n_vocab:
        raise DataError(f"token id {max_id} is outside a vocabulary of {n_vocab}")
    for fname, arr in arrays.items():
        atomic_write_bytes(out / fname, arr.tobytes())
    digest = hashlib.sha256(b"".join(a.tobytes() for a in arrays.values())).hexdigest()
    meta = {
        "format": FORMAT_VERSION,
        "dtype": dtype,
        "train_tokens": int(arrays[TRAIN].size),
        "val_tokens": int(arrays[VAL].size),
        "documents": None,
        "files": 0,
        "max_token_id": max_id,
        "tokenizer": {"name": name, "n_vocab": n_vocab, "eot_token": eot_token, "fingerprint": f"ids-{n_vocab}"},
        "val_fraction": None,
        "text_field": None,
        "empty_files": [],
        "invalid_utf8_files": [],
        "sources": [],
        "fingerprint": digest,
    }
    atomic_write_bytes(out / META, (json.dumps(meta, indent=2) + "\n").encode())
    return PreparedData(out, meta)


__all__ = [
    "prepare", "prepare_instruct", "save_tokens", "PreparedData", "find_sources", "Source", "load_tokenizer",
    "tokenizer_fingerprint", "token_dtype", "val_ranges", "FORMAT_VERSION", "FORMATS",
    # re-exported from ``batches``
    "META", "TRAIN", "VAL", "MASKS", "IGNORE_INDEX", "TokenData", "open_data", "BatchSampler", "windows", "eval_starts",
]
