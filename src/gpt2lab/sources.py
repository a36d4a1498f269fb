"""The inputs of ``prepare``, found and read as a stream of text: files and folders (text, JSONL,
JSON, Parquet) and Hugging Face datasets (``hf:NAME[:split]``).

    find_sources(inputs)         -> [Source]: folders walked (sorted, hidden entries skipped), hf: names
    iter_pieces(sources, field)  -> (piece, starts_document), ...: each document, a long one in pieces

A text file is read and decoded a chunk at a time, and cut only where the cut cannot change how GPT-2
tokenises it (``_safe_cut``), so memory stays flat and the ids equal those of the whole text.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import hub
from .errors import DataError

# Suffixes taken when walking a folder. A file named on the command line is read whatever its suffix.
TEXT_SUFFIXES = frozenset(
    ".txt .text .md .markdown .rst .tex .csv .tsv .html .htm .xml .yaml .yml .toml .ini .cfg"
    " .py .pyi .c .h .cc .cpp .hpp .java .js .ts .go .rs .rb .sh .sql .css".split()
)
RECORD_SUFFIXES = frozenset({".jsonl", ".json", ".parquet"})
SUFFIXES = TEXT_SUFFIXES | RECORD_SUFFIXES

CHUNK_CHARS = 1 << 20  # text handed to a worker at a time (~1 MB: big enough to amortise the hand-off)


# ---------------------------------------------------------------------------------------------
# Finding the sources
# ---------------------------------------------------------------------------------------------


@dataclass
class Source:
    """One input: a file on disk or a Hugging Face dataset split."""

    kind: str  # "text", "jsonl", "json", "parquet" or "hf"
    name: str  # path (absolute) or "hf:NAME:split"
    size: int = 0  # bytes on disk (0 for hf)
    mtime_ns: int = 0
    explicit: bool = True  # named by the user (a mistake in it is an error) rather than found in a folder
    # an hf source's dataset once loaded: the fingerprint and the reading share one load (each asks the hub)
    dataset: Any = field(default=None, repr=False, compare=False)

    def key(self) -> list:
        return [self.kind, self.name, self.size, self.mtime_ns]

    def hf_dataset(self) -> Any:
        """The dataset an ``hf:`` source names, loaded on the first call."""
        if self.dataset is None:
            _, name, split = self.name.split(":", 2)
            # memory-mapped Arrow on disk (cached after the first download), so rows stream from disk
            self.dataset = hub.load_dataset(name, split)
        return self.dataset


def _kind(path: Path) -> str:
    return {".jsonl": "jsonl", ".json": "json", ".parquet": "parquet"}.get(path.suffix.lower(), "text")


def find_sources(inputs: Sequence[str | os.PathLike], suffixes: Iterable[str] = SUFFIXES) -> list[Source]:
    """Expand files, folders (recursively, sorted, hidden entries skipped) and ``hf:`` names."""
    suffixes = {s.lower() for s in suffixes}
    sources: list[Source] = []
    if not inputs:
        raise DataError("no input given: name files, folders or hf:NAME[:split]")
    for item in inputs:
        text = str(item)
        if text.startswith("hf:"):
            name, _, split = text[3:].partition(":")
            if not name:
                raise DataError(f"{text!r}: expected hf:NAME or hf:NAME:split")
            sources.append(Source("hf", f"hf:{name}:{split or 'train'}"))
            continue
        path = Path(text).expanduser()
        if path.is_file():
            files = [path]
        elif path.is_dir():
            files = []
            for root, dirs, names in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "__pycache__")
                files += [Path(root, n) for n in sorted(names) if not n.startswith(".") and Path(n).suffix.lower() in suffixes]
            files.sort()  # path order, as `find | sort` lists them
            if not files:
                raise DataError(f"no text files in {path} (looked for {', '.join(sorted(suffixes))})")
        else:
            raise DataError(f"no such file or folder: {text}")
        for f in files:
            st = f.stat()
            sources.append(Source(_kind(f), str(f.resolve()), st.st_size, st.st_mtime_ns, explicit=path.is_file()))
    return sources


# ---------------------------------------------------------------------------------------------
# Reading documents, streamed
# ---------------------------------------------------------------------------------------------


def _incomplete_tail(data: bytes) -> int:
    """How many bytes at the end of ``data`` start a UTF-8 sequence that the next read completes."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte < 0x80:
            return 0  # ASCII: nothing pending
        if byte >= 0xC0:  # a lead byte: how long should its sequence be?
            need = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            return back if back < need else 0
    return 0


def _safe_cut(text: str, limit: int) -> int:
    """A position near ``limit`` where cutting ``text`` in two does not change how it tokenises.

    GPT-2's pre-tokeniser treats runs of whitespace specially (a run before a word gives its last
    space to the word), so we cut only just after a single newline that sits between two
    non-space characters: on both sides of such a cut the pieces are the same as in the whole.
    Returns 0 when there is no such newline before ``limit``.
    """
    pos = text.rfind("\n", 0, limit)
    while pos > 0:
        if pos + 1 < len(text) and not text[pos - 1].isspace() and not text[pos + 1].isspace():
            return pos + 1
        pos = text.rfind("\n", 0, pos)
    return 0


class _Stats:
    def __init__(self) -> None:
        self.documents = 0
        self.empty: list[str] = []
        self.invalid_utf8: list[str] = []
        self.skipped: list[str] = []  # record files found in a folder that are not records of text


def _read_text_file(path: str, stats: _Stats) -> Iterator[tuple[str, bool]]:
    """Yield (piece, starts_document) of one text file, decoded in chunks.

    Bytes that are not valid UTF-8 become U+FFFD (the replacement character) and the file is
    counted; a multi-byte character split across two reads is carried over, not damaged.
    """
    pending = b""
    carry = ""
    first = True
    invalid = False
    with open(path, "rb") as handle:
        while True:
            raw = handle.read(CHUNK_CHARS)
            data = pending + raw
            if raw:
                cut = len(data) - _incomplete_tail(data)
                data, pending = data[:cut], data[cut:]
            else:
                pending = b""
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                text = data.decode("utf-8", errors="replace")
                invalid = True
            text = carry + text
            carry = ""
            if raw:  # more follows: hand on only what ends at a safe cut, carry the rest
                cut = _safe_cut(text, len(text))
                if cut == 0 and len(text) > 16 * CHUNK_CHARS:
                    cut = len(text)  # pages without a single safe newline: cut anyway (rare)
                text, carry = text[:cut], text[cut:]
            if text:
                yield text, first
                first = False
            if not raw:
                break
    if invalid:
        stats.invalid_utf8.append(path)
    if first:
        stats.empty.append(path)
    else:
        stats.documents += 1


def _record_text(record: Any, text_field: str, where: str) -> str:
    if isinstance(record, str):
        return record
    if isinstance(record, dict):
        if text_field not in record:
            raise DataError(f"{where} has no {text_field!r} field (it has {', '.join(map(str, record)) or 'none'}); use --text-field")
        value = record[text_field]
        if value is None:
            return ""
        if not isinstance(value, str):
            raise DataError(f"{where}: field {text_field!r} holds {type(value).__name__}, not text")
        return value
    raise DataError(f"{where}: expected a JSON object with a {text_field!r} field or a string, got {type(record).__name__}")


def _record_objects(source: Source, columns: Sequence[str] | None = None) -> Iterator[tuple[Any, str]]:
    """The records of a record file (JSONL, JSON, Parquet) or a Hugging Face dataset, each with
    where it is (``FILE:LINE``, ``FILE[INDEX]`` or ``hf:NAME:split row N``) for error messages.
    ``columns``: the Parquet columns to read (default all)."""
    if source.kind == "jsonl":
        with open(source.name, "rb") as handle:
            for n, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line.decode("utf-8", errors="replace"))
                except json.JSONDecodeError as err:
                    raise DataError(f"{source.name}:{n} is not valid JSON ({err.msg})") from None
                yield record, f"{source.name}:{n}"
    elif source.kind == "json":  # a JSON document has to be parsed whole; use JSONL for big corpora
        try:
            data = json.loads(Path(source.name).read_bytes().decode("utf-8", errors="replace"))
        except json.JSONDecodeError as err:
            raise DataError(f"{source.name} is not valid JSON ({err.msg} at line {err.lineno})") from None
        records = data if isinstance(data, list) else [data]
        for n, record in enumerate(records):
            yield record, f"{source.name}[{n}]"
    elif source.kind == "parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise DataError(f"reading {source.name} needs pyarrow: pip install pyarrow") from None
        pf = pq.ParquetFile(source.name)
        missing = [c for c in columns or () if c not in pf.schema_arrow.names]
        if missing:
            raise DataError(f"{source.name} has no column {missing[0]!r} (it has {', '.join(pf.schema_arrow.names)}); use --text-field")
        n = 0
        for batch in pf.iter_batches(columns=list(columns) if columns else None, batch_size=1024):
            for record in batch.to_pylist():
                yield record, f"{source.name} row {n}"
                n += 1
    elif source.kind == "hf":
        for n, record in enumerate(source.hf_dataset()):
            yield record, f"{source.name} row {n}"
    else:  # pragma: no cover - kinds are fixed above
        raise AssertionError(source.kind)


def _records(source: Source, text_field: str) -> Iterator[str]:
    """The texts of a record file (JSONL, JSON, Parquet) or a Hugging Face dataset, one per record."""
    for record, where in _record_objects(source, columns=[text_field]):
        yield _record_text(record, text_field, where) or ""


def iter_pieces(sources: Sequence[Source], text_field: str, stats: _Stats, progress=None) -> Iterator[tuple[str, bool]]:
    """Every source's text as (piece, starts_document): a long document comes in several pieces."""
    for source in sources:
        if source.kind == "text":
            if source.size == 0:
                stats.empty.append(source.name)
            else:
                yield from _read_text_file(source.name, stats)
        else:
            any_text = False
            records = _records(source, text_field)
            if not source.explicit:
                # a folder may hold JSON that is configuration, not a corpus: judge by the first record
                try:
                    first = next(records, None)
                except DataError as err:
                    stats.skipped.append(f"{source.name} ({err})")
                    continue
                records = itertools.chain([] if first is None else [first], records)
            for text in records:
                if not text:
                    continue
                any_text = True
                stats.documents += 1
                start = 0
                while start < len(text):  # a very long record is split like a long file
                    end = len(text) if len(text) - start <= CHUNK_CHARS else start + (_safe_cut(text[start:], CHUNK_CHARS) or CHUNK_CHARS)
                    yield text[start:end], start == 0
                    start = end
            if not any_text:
                stats.empty.append(source.name)
        if progress is not None:
            progress.update(source.size)


__all__ = ["Source", "find_sources", "iter_pieces", "TEXT_SUFFIXES", "RECORD_SUFFIXES", "SUFFIXES", "CHUNK_CHARS"]
