"""GPT-2's byte-level BPE: text <-> ids, the same ids as GPT-2, from scratch and fast.

How GPT-2 turns text into ids, in three steps:

1. **Pre-tokenise.** A regular expression (``GPT2_PATTERN``) cuts the text into pieces: words with
   their leading space (``" hello"``), runs of digits, runs of punctuation, whitespace, and the
   English contractions ``'s 't 're 've 'm 'll 'd``. No token ever crosses a piece boundary, so
   each piece can be encoded (and cached) on its own.
2. **Bytes.** Each piece is encoded as UTF-8. The alphabet is the 256 byte values, so any text at
   all can be encoded: there is no "unknown token".
3. **Merge.** Start from single bytes and repeatedly join the adjacent pair whose joined bytes are
   the *oldest* token in the vocabulary (the lowest rank), until no adjacent pair is a token.
   The ranks come from training (``Tokenizer.train``): the pair merged first gets the lowest rank.

Decoding is the reverse of step 2 only: join the bytes of the ids and decode them as UTF-8.

Two backends give the same ids: ``"python"``, the reference written out below, and ``"tiktoken"``
(the default), which hands the same ranks to tiktoken's Rust implementation. ``Tokenizer`` has the
method names of ``tiktoken.Encoding``, so either drops in for the other.

File formats (all hold the same information, see ``Tokenizer.from_file``): tiktoken's ``.tiktoken``
ranks, Hugging Face's ``vocab.json`` + ``merges.txt`` or ``tokenizer.json``, and OpenAI's original
``encoder.json`` + ``vocab.bpe``.
"""

from __future__ import annotations

import base64
import heapq
import json
import os
from collections import Counter, defaultdict
from collections.abc import Collection, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path
from typing import Literal

# The third-party ``regex`` module (already a dependency of tiktoken) because GPT-2's pattern needs
# Unicode classes (\p{L} letters, \p{N} numbers) that Python's built-in ``re`` does not have.
import regex

from .errors import TokenizerError
from .files import atomic_write_bytes, looks_like_path

# GPT-2's pre-tokenisation pattern, from OpenAI's encoder.py. Read the alternatives left to right:
# contractions; an optional space then letters; an optional space then digits; an optional space
# then other symbols; whitespace not followed by a non-space (so "  hello" gives " " and " hello":
# the last space stays with the word); any other whitespace.
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
ENDOFTEXT = "<|endoftext|>"
# tiktoken's r50k_base is GPT-2's vocabulary; this is where tiktoken downloads it from, and its hash.
R50K_URL = "https://openaipublic.blob.core.windows.net/encodings/r50k_base.tiktoken"
GPT2_VOCAB_SHA256 = "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"
HOW_TO_GET_GPT2 = (
    "pass a vocabulary path (--tokenizer PATH), or set GPT2LAB_VOCAB to a gpt2.tiktoken, vocab.json+merges.txt "
    "or tokenizer.json; offline, `pip download --no-deps openai-whisper==20250625` holds whisper/assets/gpt2.tiktoken; "
    "online, tiktoken downloads it (r50k_base) by itself"
)

Backend = Literal["tiktoken", "python"]
BACKENDS = ("tiktoken", "python")

# ---------------------------------------------------------------------------------------------
# Bytes as printable characters (how vocab.json and merges.txt spell tokens)
# ---------------------------------------------------------------------------------------------


@lru_cache(maxsize=None)
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's table from each of the 256 byte values to a printable character.

    ``vocab.json`` and ``merges.txt`` are text files, and a merges line is two tokens separated by a
    space, so token bytes cannot appear raw (a space, a newline, or half of a UTF-8 character would
    break the file). Printable Latin-1 bytes stand for themselves; the other 68 bytes (controls,
    space, and a few more) are moved to the characters from U+0100 upwards, in byte order. That is
    why GPT-2's space appears as ``Ġ`` (U+0120, byte 32 = the 33rd moved byte) and newline as ``Ċ``.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, moved = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + moved)
            moved += 1
    return table


@lru_cache(maxsize=None)
def unicode_to_bytes() -> dict[str, int]:
    """The inverse of ``bytes_to_unicode``."""
    return {c: b for b, c in bytes_to_unicode().items()}


def token_to_str(token: bytes) -> str:
    """Token bytes as spelled in ``vocab.json``: ``b" the"`` -> ``"Ġthe"``."""
    table = bytes_to_unicode()
    return "".join(table[b] for b in token)


def str_to_token(text: str) -> bytes:
    """The inverse of ``token_to_str``; a character outside the table raises ``KeyError``."""
    table = unicode_to_bytes()
    return bytes(table[c] for c in text)


# ---------------------------------------------------------------------------------------------
# The reference BPE (backend="python")
# ---------------------------------------------------------------------------------------------


def bpe_merge(ranks: dict[bytes, int], piece: bytes, max_rank: int | None = None) -> list[bytes]:
    """Split one piece into tokens: start from single bytes, join the lowest-rank pair, repeat.

    "Lowest rank" means the joined bytes are the oldest token; ties go to the leftmost pair. With
    ``max_rank`` only tokens older than it may form, which recovers how a token was made (its
    merge) from the ranks alone. The loop is quadratic in the piece length, which is fine for the
    words of ordinary text; ``_bpe_merge_long`` computes the same result in O(n log n).
    """
    parts = [piece[i : i + 1] for i in range(len(piece))]
    while len(parts) > 1:
        best_rank, best_i = None, -1
        for i in range(len(parts) - 1):
            rank = ranks.get(parts[i] + parts[i + 1])
            if rank is not None and (max_rank is None or rank < max_rank) and (best_rank is None or rank < best_rank):
                best_rank, best_i = rank, i
        if best_rank is None:
            break
        parts[best_i : best_i + 2] = [parts[best_i] + parts[best_i + 1]]
    return parts


def _bpe_merge_long(ranks: dict[bytes, int], piece: bytes) -> list[bytes]:
    """``bpe_merge`` for long pieces (a run of 100,000 spaces is one piece): same result, O(n log n).

    The parts are a linked list of byte offsets (part ``i`` spans ``piece[i:nxt[i]]``) and the
    candidate joins sit in a heap keyed ``(rank, start)``, so the heap's top is the lowest-rank,
    leftmost pair, as in ``bpe_merge``. A join changes its neighbours, so entries go stale; a popped
    entry is used only if a part still starts at ``start`` and the part after it still ends at ``end``.
    """
    n = len(piece)
    nxt = list(range(1, n + 1))
    prv = list(range(-1, n - 1))
    alive = [True] * n
    heap = [(r, i, i + 2) for i in range(n - 1) if (r := ranks.get(piece[i : i + 2])) is not None]
    heapq.heapify(heap)
    while heap:
        _, start, end = heapq.heappop(heap)
        if not alive[start]:
            continue
        mid = nxt[start]
        if mid >= n or nxt[mid] != end:
            continue  # stale: one of the two parts has grown since this entry was pushed
        alive[mid] = False
        nxt[start] = end
        if end < n:
            prv[end] = start
        # the joined part makes two new pairs, with its left and its right neighbour
        if (left := prv[start]) >= 0 and (r := ranks.get(piece[left:end])) is not None:
            heapq.heappush(heap, (r, left, end))
        if end < n and (r := ranks.get(piece[start : nxt[end]])) is not None:
            heapq.heappush(heap, (r, start, nxt[end]))
    parts, i = [], 0
    while i < n:
        parts.append(piece[i : nxt[i]])
        i = nxt[i]
    return parts


def _fix_surrogates(text: str) -> str:
    """Python strings may hold lone surrogates, which have no UTF-8 form; like tiktoken, replace them with U+FFFD."""
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


class PythonBPE:
    """Byte-level BPE in plain Python: the readable reference for ``backend="python"``.

    Keeps a cache from piece to ids: natural text repeats its words, so after the first few
    kilobytes almost every piece is a dictionary look-up and the merge loop rarely runs.
    """

    LONG = 64  # pieces longer than this (bytes) take the O(n log n) merge and are not cached
    CACHE_SIZE = 1 << 18  # entries; the cache is emptied when full, which keeps memory bounded

    def __init__(self, mergeable_ranks: dict[bytes, int], pattern: str):
        self.ranks = mergeable_ranks
        self.pattern = regex.compile(pattern)
        self.cache: dict[str, list[int]] = {}

    def encode_piece(self, piece: bytes) -> list[int]:
        if (rank := self.ranks.get(piece)) is not None:  # the whole piece is one token
            return [rank]
        merge = bpe_merge if len(piece) <= self.LONG else _bpe_merge_long
        return [self.ranks[part] for part in merge(self.ranks, piece)]

    def encode_ordinary(self, text: str) -> list[int]:
        try:
            return self._encode(text)
        except UnicodeEncodeError:
            return self._encode(_fix_surrogates(text))

    def _encode(self, text: str) -> list[int]:
        ids: list[int] = []
        cache = self.cache
        for piece in self.pattern.findall(text):
            cached = cache.get(piece)
            if cached is None:
                cached = self.encode_piece(piece.encode("utf-8"))
                if len(piece) <= self.LONG:
                    if len(cache) >= self.CACHE_SIZE:
                        cache.clear()
                    cache[piece] = cached
            ids.extend(cached)
        return ids


# ---------------------------------------------------------------------------------------------
# The tokenizer
# ---------------------------------------------------------------------------------------------


@lru_cache(maxsize=64)
def _special_regex(tokens: frozenset[str]) -> regex.Pattern:
    # longest first, so that a special token that is a prefix of another never wins
    return regex.compile("|".join(regex.escape(t) for t in sorted(tokens, key=lambda t: (-len(t), t))))


class Tokenizer:
    """Text <-> ids with GPT-2's byte-level BPE, with the methods of ``tiktoken.Encoding``.

        >>> tok = Tokenizer.gpt2()                      # GPT-2's vocabulary (see ``gpt2`` for where from)
        >>> tok.encode("Hello world")
        [15496, 995]
        >>> tok.decode([15496, 995])
        'Hello world'
        >>> tok.encode("<|endoftext|>", allowed_special="all")
        [50256]

    Args:
        mergeable_ranks: token bytes -> rank; the rank is also the token's id. Must hold all 256 bytes.
        special_tokens: text -> id for tokens such as ``<|endoftext|>`` that are never produced by
            merging; they are recognised in text only when ``encode`` is allowed to.
        pattern: the pre-tokenisation regular expression (GPT-2's by default).
        backend: ``"tiktoken"`` (default, fast) or ``"python"`` (the reference above); same ids.
        merges: the pairs that made each merged token, in rank order, when known (training, or a
            merges file); otherwise they are recovered from the ranks when needed (``save``).
    """

    def __init__(
        self,
        mergeable_ranks: dict[bytes, int],
        special_tokens: dict[str, int] | None = None,
        *,
        pattern: str = GPT2_PATTERN,
        name: str = "gpt2",
        backend: Backend | None = None,
        merges: list[tuple[bytes, bytes]] | None = None,
    ):
        backend = backend or "tiktoken"
        if backend not in BACKENDS:
            raise TokenizerError(f"unknown tokenizer backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        special_tokens = dict(special_tokens or {})
        missing = [b for b in range(256) if bytes([b]) not in mergeable_ranks]
        if missing:
            raise TokenizerError(f"a byte-level BPE vocabulary needs all 256 single bytes; {len(missing)} are missing (e.g. byte {missing[0]})")
        ids = [*mergeable_ranks.values(), *special_tokens.values()]
        if len(set(ids)) != len(ids):
            raise TokenizerError("two tokens of the vocabulary share an id")
        if min(ids) < 0:
            raise TokenizerError("token ids must not be negative")

        self.name = name
        self.backend: Backend = backend
        self.pattern = pattern
        self.mergeable_ranks = mergeable_ranks
        self.special_tokens = special_tokens
        self.special_tokens_set = frozenset(special_tokens)
        self.max_token_value = max(ids)
        self.n_vocab = self.max_token_value + 1
        self._merges = merges
        self._decoder: dict[int, bytes] = {rank: token for token, rank in mergeable_ranks.items()}
        self._decoder.update((i, text.encode("utf-8")) for text, i in special_tokens.items())
        if backend == "tiktoken":
            import tiktoken

            self._enc = tiktoken.Encoding(name, pat_str=pattern, mergeable_ranks=mergeable_ranks, special_tokens=special_tokens)
            self._py = None
        else:
            self._enc = None
            self._py = PythonBPE(mergeable_ranks, pattern)

    def __repr__(self) -> str:
        return f"<Tokenizer {self.name!r} n_vocab={self.n_vocab} backend={self.backend!r}>"

    def __reduce__(self):
        # pickled (for worker processes) as the vocabulary alone; the backend is rebuilt on arrival
        return _rebuild, (self.mergeable_ranks, self.special_tokens, self.pattern, self.name, self.backend, self._merges)

    def with_backend(self, backend: Backend | None) -> Tokenizer:
        """The same vocabulary on another backend."""
        return Tokenizer(self.mergeable_ranks, self.special_tokens, pattern=self.pattern, name=self.name, backend=backend, merges=self._merges)

    @property
    def eot_token(self) -> int:
        """The id of ``<|endoftext|>`` (50256 for GPT-2): the separator between documents."""
        if ENDOFTEXT not in self.special_tokens:
            raise TokenizerError(f"this vocabulary has no {ENDOFTEXT} token")
        return self.special_tokens[ENDOFTEXT]

    # -- encoding -------------------------------------------------------------------------------

    def encode_ordinary(self, text: str) -> list[int]:
        """Text -> ids, treating special-token text (``<|endoftext|>``) as ordinary text."""
        if self._enc is not None:
            return self._enc.encode_ordinary(text)
        return self._py.encode_ordinary(text)

    def encode(
        self,
        text: str,
        *,
        allowed_special: Literal["all"] | Collection[str] = frozenset(),
        disallowed_special: Literal["all"] | Collection[str] = "all",
    ) -> list[int]:
        """Text -> ids, as ``tiktoken.Encoding.encode``.

        Special tokens in ``allowed_special`` become their id. By default every other special
        token is *disallowed*: its text in the input raises ``TokenizerError`` (a ``ValueError``),
        because text from a user that contains ``<|endoftext|>`` is usually a mistake or an
        injection. ``disallowed_special=()`` encodes such text as ordinary text instead.
        """
        allowed = self._check_special(text, allowed_special, disallowed_special)
        if self._enc is not None:
            return self._enc.encode(text, allowed_special=allowed, disallowed_special=())
        if not allowed:
            return self._py.encode_ordinary(text)
        ids: list[int] = []
        start = 0
        for match in _special_regex(allowed).finditer(text):
            ids.extend(self._py.encode_ordinary(text[start : match.start()]))
            ids.append(self.special_tokens[match.group()])
            start = match.end()
        ids.extend(self._py.encode_ordinary(text[start:]))
        return ids

    def _check_special(self, text: str, allowed_special, disallowed_special) -> frozenset[str]:
        allowed = self.special_tokens_set if allowed_special == "all" else frozenset(allowed_special)
        if unknown := allowed - self.special_tokens_set:
            raise TokenizerError(f"not a special token of this vocabulary: {sorted(unknown)[0]!r}")
        disallowed = self.special_tokens_set - allowed if disallowed_special == "all" else frozenset(disallowed_special)
        if disallowed and (match := _special_regex(disallowed).search(text)):
            token = match.group()
            raise TokenizerError(
                f"the text contains the special token {token!r}: pass allowed_special={{{token!r}}} to encode it as "
                f"the special token, or disallowed_special=() to encode it as ordinary text"
            )
        return allowed

    def encode_batch(
        self,
        texts: Sequence[str],
        *,
        num_threads: int = 8,
        allowed_special: Literal["all"] | Collection[str] = frozenset(),
        disallowed_special: Literal["all"] | Collection[str] = "all",
    ) -> list[list[int]]:
        """``encode`` for many texts. The tiktoken backend releases the GIL, so threads use every core."""
        allowed = frozenset()
        for text in texts:
            allowed = self._check_special(text, allowed_special, disallowed_special)
        if self._enc is not None:
            return self._enc.encode_batch(list(texts), num_threads=num_threads, allowed_special=allowed, disallowed_special=())
        # the reference is pure Python: threads would only take turns holding the GIL
        return [self.encode(text, allowed_special=allowed, disallowed_special=()) for text in texts]

    def encode_ordinary_batch(self, texts: Sequence[str], *, num_threads: int = 8) -> list[list[int]]:
        """``encode_ordinary`` for many texts, in parallel threads (tiktoken backend)."""
        if self._enc is not None:
            with ThreadPoolExecutor(num_threads) as pool:
                return list(pool.map(self._enc.encode_ordinary, texts))
        return [self._py.encode_ordinary(text) for text in texts]

    def encode_single_token(self, text_or_bytes: str | bytes) -> int:
        """The id of a text that is exactly one token; ``TokenizerError`` otherwise."""
        if isinstance(text_or_bytes, str):
            if text_or_bytes in self.special_tokens:
                return self.special_tokens[text_or_bytes]
            text_or_bytes = text_or_bytes.encode("utf-8")
        if text_or_bytes not in self.mergeable_ranks:
            raise TokenizerError(f"{text_or_bytes!r} is not a single token of this vocabulary")
        return self.mergeable_ranks[text_or_bytes]

    # -- decoding -------------------------------------------------------------------------------

    def decode_bytes(self, ids: Sequence[int]) -> bytes:
        """Ids -> the bytes they stand for. An id outside the vocabulary raises ``TokenizerError``."""
        ids = _as_list(ids)
        try:
            if self._enc is not None:
                return self._enc.decode_bytes(ids)
            decoder = self._decoder
            return b"".join([decoder[i] for i in ids])
        except (KeyError, OverflowError, TypeError):
            pass  # find the culprit outside the fast path, for a clear message
        raise self._unknown(ids)

    def decode(self, ids: Sequence[int], errors: str = "replace") -> str:
        """Ids -> text. Ids can cut a character's UTF-8 bytes in two (a model may emit any ids);
        ``errors="replace"`` shows such bytes as U+FFFD, ``errors="strict"`` raises ``UnicodeDecodeError``."""
        return self.decode_bytes(ids).decode("utf-8", errors=errors)

    def decode_single_token_bytes(self, token: int) -> bytes:
        """The bytes of one id: ``decode_single_token_bytes(995) == b" world"``."""
        try:
            return self._decoder[token]
        except (KeyError, TypeError):
            raise self._unknown([token]) from None

    def decode_tokens_bytes(self, ids: Sequence[int]) -> list[bytes]:
        """The bytes of each id, one entry per id: where the token boundaries are."""
        return [self.decode_single_token_bytes(i) for i in _as_list(ids)]

    def decode_batch(self, batch: Sequence[Sequence[int]], *, errors: str = "replace") -> list[str]:
        return [self.decode(ids, errors=errors) for ids in batch]

    def _unknown(self, ids: list) -> TokenizerError:
        for i in ids:
            if not isinstance(i, int) or i not in self._decoder:
                return TokenizerError(f"token id {i!r} is not in this vocabulary (ids are integers from 0 to {self.max_token_value})")
        return TokenizerError("could not decode these ids")  # pragma: no cover (every id was fine)

    # -- merges ---------------------------------------------------------------------------------

    @property
    def merges(self) -> list[tuple[bytes, bytes]]:
        """The pair that made each merged token, in rank order (what ``merges.txt`` lists).

        Known from training or a merges file; for a ``.tiktoken`` vocabulary it is recovered by
        encoding each token with only the tokens older than it, which leaves exactly two parts.
        """
        if self._merges is None:
            merges = []
            for token, rank in sorted(self.mergeable_ranks.items(), key=lambda kv: kv[1]):
                if len(token) == 1:
                    continue
                parts = bpe_merge(self.mergeable_ranks, token, max_rank=rank)
                if len(parts) != 2:
                    raise TokenizerError(f"token {token!r} (rank {rank}) cannot be made by merging two older tokens")
                merges.append((parts[0], parts[1]))
            self._merges = merges
        return self._merges

    # -- loading --------------------------------------------------------------------------------

    @classmethod
    def from_file(
        cls,
        path: str | os.PathLike,
        backend: Backend | None = None,
        *,
        special_tokens: dict[str, int] | None = None,
        pattern: str | None = None,
    ) -> Tokenizer:
        """Load a vocabulary from any of the formats GPT-2's vocabulary is shipped in.

        ``path`` is a file or a directory holding one of (looked for in this order):

        - ``tokenizer.json``: a Hugging Face fast tokenizer (byte-level BPE only);
        - ``vocab.json`` + ``merges.txt``: a Hugging Face GPT-2 tokenizer;
        - ``encoder.json`` + ``vocab.bpe``: OpenAI's original GPT-2 release;
        - ``*.tiktoken``: tiktoken's ranks (``base64(token) rank`` per line). The format has no place
          for special tokens, so ``<|endoftext|>`` is given the id after the last rank (50256 for
          GPT-2) unless ``special_tokens`` says otherwise.

        A path to one file of a pair finds its partner in the same directory.
        """
        path = Path(path)
        if not path.exists():
            raise TokenizerError(f"no tokenizer vocabulary at {path}")
        files = _find_vocab_files(path)
        if files is None:
            where = f"in {path}" if path.is_dir() else f"for {path}"
            raise TokenizerError(
                f"no tokenizer files {where}: expected tokenizer.json, vocab.json+merges.txt, encoder.json+vocab.bpe or a .tiktoken file"
            )
        kind, first, second = files
        try:
            if kind == "tiktoken":
                ranks = read_tiktoken_ranks(first)
                specials = {ENDOFTEXT: max(ranks.values()) + 1} if special_tokens is None else special_tokens
                return cls(ranks, specials, pattern=pattern or GPT2_PATTERN, name=first.stem, backend=backend)
            if kind == "tokenizer.json":
                ranks, specials, merges, file_pattern = read_tokenizer_json(first)
            else:  # vocab.json + merges.txt, or encoder.json + vocab.bpe: the same two formats
                ranks, specials, merges = read_vocab_and_merges(first, second)
                file_pattern = GPT2_PATTERN
                specials.update(_added_special_tokens(first.parent, specials, ranks))
        except (OSError, ValueError, KeyError, TypeError, json.JSONDecodeError) as err:
            if isinstance(err, TokenizerError):
                raise
            raise TokenizerError(f"could not read the tokenizer files {first}: {type(err).__name__}: {err}") from None
        if special_tokens is not None:
            specials = special_tokens
        return cls(ranks, specials, pattern=pattern or file_pattern, name=first.parent.name or "bpe", backend=backend, merges=merges)

    @classmethod
    def gpt2(cls, path: str | os.PathLike | None = None, *, backend: Backend | None = None) -> Tokenizer:
        """GPT-2's own vocabulary (n_vocab 50257, ``<|endoftext|>`` = 50256), found in this order:

        1. ``path``, if given: any format ``from_file`` reads, or a model directory holding one;
        2. the environment variable ``GPT2LAB_VOCAB``, likewise;
        3. the Hugging Face hub cache of ``gpt2`` (files already downloaded, no network);
        4. tiktoken's cache of ``r50k_base`` (the same ranks), then tiktoken's download of it,
           unless ``GPT2LAB_OFFLINE=1`` (or ``HF_HUB_OFFLINE=1``) says not to use the network.

        Otherwise ``TokenizerError`` says how to get the file.
        """
        if path is not None:
            return cls.from_file(path, backend=backend)
        if env := os.environ.get("GPT2LAB_VOCAB"):
            if not Path(env).exists():
                raise TokenizerError(f"GPT2LAB_VOCAB={env} does not exist; {HOW_TO_GET_GPT2}")
            return cls.from_file(env, backend=backend)
        # "gpt2" is the hub's old name for "openai-community/gpt2"; a download may sit under either
        for repo_id in ("openai-community/gpt2", "gpt2"):
            if (cached := _hub_cache_dir(repo_id)) is not None:
                return cls.from_file(cached, backend=backend)
        ranks = _tiktoken_r50k()
        if ranks is None:
            raise TokenizerError(f"GPT-2's vocabulary was not found: {HOW_TO_GET_GPT2}")
        return cls(ranks, {ENDOFTEXT: 50256}, name="gpt2", backend=backend)

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, *, backend: Backend | None = None) -> Tokenizer:
        """The tokenizer of a model: its own tokenizer files when its directory (or its hub cache)
        holds them, otherwise GPT-2's vocabulary, which every released GPT-2 size shares."""
        path = Path(name_or_path)
        if path.is_dir():
            if _find_vocab_files(path) is not None:
                return cls.from_file(path, backend=backend)
        elif path.is_file():
            return cls.from_file(path, backend=backend)
        elif looks_like_path(name_or_path):
            raise TokenizerError(f"no such model directory or tokenizer file: {name_or_path}")
        elif (cached := _hub_cache_dir(str(name_or_path))) is not None:
            return cls.from_file(cached, backend=backend)
        return cls.gpt2(backend=backend)

    # -- saving ---------------------------------------------------------------------------------

    def save(self, path: str | os.PathLike) -> list[Path]:
        """Write the vocabulary; returns the files written (each atomically).

        A path ending in ``.tiktoken`` gets tiktoken's ranks file (no special tokens: see
        ``from_file``). Any other path is a directory that gets Hugging Face's files:
        ``vocab.json`` + ``merges.txt`` (which ``GPT2Tokenizer``/``GPT2TokenizerFast`` load) and
        ``tokenizer_config.json`` + ``special_tokens_map.json`` marking the special tokens.
        """
        path = Path(path)
        if path.suffix == ".tiktoken":
            return [write_tiktoken_ranks(path, self.mergeable_ranks)]
        if path.exists() and not path.is_dir():
            raise TokenizerError(f"{path} is a file; save the Hugging Face format into a directory, or name a .tiktoken file")
        vocab = {token_to_str(token): rank for token, rank in sorted(self.mergeable_ranks.items(), key=lambda kv: kv[1])}
        vocab.update(sorted(self.special_tokens.items(), key=lambda kv: kv[1]))
        merges = "".join(f"{token_to_str(a)} {token_to_str(b)}\n" for a, b in self.merges)
        eot = ENDOFTEXT if ENDOFTEXT in self.special_tokens else None
        config = {
            "tokenizer_class": "GPT2Tokenizer",
            "add_prefix_space": False,
            "bos_token": eot,
            "eos_token": eot,
            "unk_token": eot,
            "added_tokens_decoder": {
                str(i): {"content": text, "lstrip": False, "rstrip": False, "normalized": False, "single_word": False, "special": True}
                for text, i in sorted(self.special_tokens.items(), key=lambda kv: kv[1])
            },
        }
        special_map = {"bos_token": eot, "eos_token": eot, "unk_token": eot} if eot else {}
        others = [t for t in self.special_tokens if t != ENDOFTEXT]
        if others:
            special_map["additional_special_tokens"] = others
            config["additional_special_tokens"] = others
        written = [
            atomic_write_bytes(path / "vocab.json", json.dumps(vocab, ensure_ascii=False).encode("utf-8")),
            atomic_write_bytes(path / "merges.txt", ("#version: 0.2\n" + merges).encode("utf-8")),
            atomic_write_bytes(path / "tokenizer_config.json", (json.dumps(config, indent=2, ensure_ascii=False) + "\n").encode("utf-8")),
            atomic_write_bytes(path / "special_tokens_map.json", (json.dumps(special_map, indent=2, ensure_ascii=False) + "\n").encode("utf-8")),
        ]
        return written

    # -- training -------------------------------------------------------------------------------

    @classmethod
    def train(
        cls,
        texts_or_files: str | os.PathLike | Iterable[str | os.PathLike],
        vocab_size: int,
        *,
        special_tokens: Sequence[str] = (ENDOFTEXT,),
        backend: Backend | None = None,
        name: str = "bpe",
        progress: bool = True,
    ) -> Tokenizer:
        """Learn a byte-level BPE vocabulary of ``vocab_size`` tokens with GPT-2's pre-tokenisation.

        ``texts_or_files`` is a text (``str``), a file (``pathlib.Path``), or an iterable of either.
        ``vocab_size`` counts the 256 byte tokens, the merges and the special tokens (which get the
        last ids, and whose text is cut out of the corpus so no merge spans them). Deterministic:
        ties between equally frequent pairs go to the pair of lower ids. See ``learn_bpe``.
        """
        specials = list(dict.fromkeys(special_tokens))
        n_merges = vocab_size - 256 - len(specials)
        if n_merges < 0:
            raise TokenizerError(f"vocab_size {vocab_size} is too small: it must hold the 256 byte tokens and {len(specials)} special token(s)")
        words = count_pieces(_iter_texts(texts_or_files), GPT2_PATTERN, specials)
        ranks, merges = learn_bpe(words, n_merges, progress=progress)
        first_special = len(ranks)
        return cls(
            ranks,
            {text: first_special + i for i, text in enumerate(specials)},
            name=name,
            backend=backend,
            merges=merges,
        )


def _rebuild(ranks, specials, pattern, name, backend, merges) -> Tokenizer:
    return Tokenizer(ranks, specials, pattern=pattern, name=name, backend=backend, merges=merges)


def _as_list(ids) -> list:
    if isinstance(ids, list):
        return ids
    if hasattr(ids, "tolist"):  # numpy arrays and torch tensors
        ids = ids.tolist()
        return ids if isinstance(ids, list) else [ids]
    return list(ids)


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------


def _iter_texts(texts_or_files) -> Iterable[str]:
    if isinstance(texts_or_files, (str, os.PathLike)):
        texts_or_files = [texts_or_files]
    for item in texts_or_files:
        if isinstance(item, os.PathLike):
            path = Path(item)
            if not path.is_file():
                raise TokenizerError(f"no training file at {path}")
            yield path.read_text(encoding="utf-8", errors="replace")
        elif isinstance(item, str):
            yield item
        else:
            raise TokenizerError(f"training input must be text (str) or a file (pathlib.Path), not {type(item).__name__}")


def count_pieces(texts: Iterable[str], pattern: str, special_tokens: Sequence[str] = ()) -> Counter[bytes]:
    """Pre-tokenise the corpus and count each distinct piece (as UTF-8 bytes).

    This is the only pass over the corpus: training works on the distinct pieces and their counts,
    which for natural text are a few hundred thousand however large the corpus.
    """
    compiled = regex.compile(pattern)
    cut = _special_regex(frozenset(special_tokens)) if special_tokens else None
    counts: Counter[str] = Counter()
    for text in texts:
        text = _fix_surrogates(text)
        for part in cut.split(text) if cut else (text,):
            counts.update(compiled.findall(part))
    return Counter({piece.encode("utf-8"): n for piece, n in counts.items()})


def learn_bpe(pieces: dict[bytes, int], n_merges: int, *, progress: bool = True) -> tuple[dict[bytes, int], list[tuple[bytes, bytes]]]:
    """Byte-level BPE training: merge the most frequent adjacent pair, ``n_merges`` times.

    Returns the ranks (ids 0-255 are the byte values, then one id per merge, in order) and the
    merges. Each distinct piece is a list of ids with a count. Three structures make a merge cost
    only the pieces it touches, instead of a pass over the corpus:

    - ``stats``: pair -> how often it occurs in the corpus (summed over pieces, times their count);
    - ``where``: pair -> the pieces that contain it;
    - ``heap``: (-count, pair) entries, so the most frequent pair is found in O(log n). Counts change
      as pieces are merged; instead of updating entries in place, a new entry is pushed and an old
      one is recognised as stale when popped (its count no longer matches ``stats``).

    Ties go to the smaller pair (left id, then right id), which makes training deterministic.
    """
    from tqdm.auto import tqdm

    words = [list(piece) for piece in sorted(pieces)]  # sorted: the result must not depend on input order
    counts = [pieces[piece] for piece in sorted(pieces)]
    vocab: list[bytes] = [bytes([b]) for b in range(256)]
    ranks: dict[bytes, int] = {token: i for i, token in enumerate(vocab)}
    stats: dict[tuple[int, int], int] = defaultdict(int)
    where: dict[tuple[int, int], set[int]] = defaultdict(set)
    for w, (word, count) in enumerate(zip(words, counts)):
        for pair in zip(word, word[1:]):
            stats[pair] += count
            where[pair].add(w)
    heap = [(-count, pair) for pair, count in stats.items()]
    heapq.heapify(heap)

    merges: list[tuple[bytes, bytes]] = []
    with tqdm(total=n_merges, desc="BPE merges", unit="merge", disable=not progress, leave=False) as bar:
        while len(merges) < n_merges and heap:
            neg_count, pair = heapq.heappop(heap)
            if stats.get(pair) != -neg_count:
                continue  # stale entry
            a, b = pair
            joined = vocab[a] + vocab[b]
            # Two different pairs can spell the same bytes ("a"+"bc" and "ab"+"c"); the token
            # then exists already, and the pieces simply switch to it without a new id.
            new = ranks.get(joined)
            if new is None:
                new = len(vocab)
                vocab.append(joined)
                ranks[joined] = new
                merges.append((vocab[a], vocab[b]))
                bar.update(1)
            touched: set[tuple[int, int]] = set()
            for w in where.pop(pair):
                word = words[w]
                merged = _merge_pair(word, a, b, new)
                before, after = Counter(zip(word, word[1:])), Counter(zip(merged, merged[1:]))
                count = counts[w]
                for p in before.keys() | after.keys():
                    change = after[p] - before[p]
                    if change == 0:
                        continue
                    stats[p] += change * count
                    touched.add(p)
                    if p not in after:
                        where[p].discard(w)
                    elif p not in before:
                        where[p].add(w)
                words[w] = merged
            del stats[pair]
            touched.discard(pair)
            for p in touched:
                if stats[p] > 0:
                    heapq.heappush(heap, (-stats[p], p))
                else:
                    del stats[p]
                    where.pop(p, None)
    return ranks, merges


def _merge_pair(word: list[int], a: int, b: int, new: int) -> list[int]:
    """Replace each occurrence of the pair (a, b) in ``word``, left to right, by ``new``."""
    out, i, n = [], 0, len(word)
    while i < n:
        if i + 1 < n and word[i] == a and word[i + 1] == b:
            out.append(new)
            i += 2
        else:
            out.append(word[i])
            i += 1
    return out


# ---------------------------------------------------------------------------------------------
# File formats
# ---------------------------------------------------------------------------------------------


def read_tiktoken_ranks(path: str | os.PathLike) -> dict[bytes, int]:
    """tiktoken's format: one ``base64(token bytes) rank`` line per token."""
    ranks: dict[bytes, int] = {}
    text = Path(path).read_bytes().decode("ascii", errors="replace")
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            token, rank = line.split()
            ranks[base64.b64decode(token, validate=True)] = int(rank)
        except ValueError:
            raise TokenizerError(f"{path}:{number}: not a tiktoken ranks line ('base64 rank'): {line[:60]!r}") from None
    if not ranks:
        raise TokenizerError(f"{path} holds no tokens")
    return ranks


def write_tiktoken_ranks(path: str | os.PathLike, ranks: dict[bytes, int]) -> Path:
    lines = (f"{base64.b64encode(token).decode('ascii')} {rank}\n" for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]))
    return atomic_write_bytes(path, "".join(lines).encode("ascii"))


def ranks_from_vocab_and_merges(
    vocab: dict[str, int], merges: list[tuple[str, str]]
) -> tuple[dict[bytes, int], dict[str, int], list[tuple[bytes, bytes]]]:
    """Hugging Face/OpenAI's (vocab, merges) -> (ranks, special tokens, merges as bytes).

    A mergeable token is a single byte or the result of a merge; everything else in the vocabulary
    (``<|endoftext|>``) is a special token. Merges apply in file order while tiktoken (and our
    BPE) apply tokens in id order: the two agree when merge i makes a token of larger id than
    merge i-1, as in every GPT-2-style vocabulary; anything else is refused rather than misread.
    """
    table = unicode_to_bytes()
    mergeable: dict[bytes, int] = {}
    for text, i in vocab.items():
        if len(text) == 1 and text in table:
            mergeable[bytes([table[text]])] = i
    byte_merges: list[tuple[bytes, bytes]] = []
    previous = -1
    for number, (left, right) in enumerate(merges, start=1):
        joined = left + right
        if joined not in vocab:
            raise TokenizerError(f"merge {number} ({left} {right}) makes {joined!r}, which is not in the vocabulary")
        try:
            a, b = str_to_token(left), str_to_token(right)
        except KeyError:
            raise TokenizerError(f"merge {number} ({left} {right}) is not byte-level BPE") from None
        i = vocab[joined]
        if i <= previous:
            raise TokenizerError(f"merge {number} ({left} {right}) makes id {i}, not larger than the previous merge's {previous}; ids must follow merge order")
        previous = i
        mergeable[a + b] = i
        byte_merges.append((a, b))
    ids = set(mergeable.values())
    specials = {text: i for text, i in vocab.items() if i not in ids}
    return mergeable, specials, byte_merges


def _parse_merges_lines(lines: Iterable[str]) -> list[tuple[str, str]]:
    merges = []
    for line in lines:
        if line.startswith("#version") or not line.strip():
            continue
        parts = line.rstrip("\n").split(" ")
        if len(parts) != 2:
            raise TokenizerError(f"not a merges line ('left right'): {line[:60]!r}")
        merges.append((parts[0], parts[1]))
    return merges


def read_vocab_and_merges(vocab_path: Path, merges_path: Path) -> tuple[dict[bytes, int], dict[str, int], list[tuple[bytes, bytes]]]:
    """``vocab.json`` + ``merges.txt`` (Hugging Face), or ``encoder.json`` + ``vocab.bpe`` (OpenAI): one format."""
    vocab = json.loads(Path(vocab_path).read_text(encoding="utf-8"))
    merges = _parse_merges_lines(Path(merges_path).read_text(encoding="utf-8").splitlines())
    return ranks_from_vocab_and_merges(vocab, merges)


def read_tokenizer_json(path: Path) -> tuple[dict[bytes, int], dict[str, int], list[tuple[bytes, bytes]], str]:
    """A Hugging Face ``tokenizer.json`` of a byte-level BPE -> ranks, specials, merges, pattern."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    model = data.get("model") or {}
    if model.get("type") != "BPE":
        raise TokenizerError(f"{path}: a {model.get('type')!r} tokenizer, not byte-level BPE")
    pattern = _pattern_of(data.get("pre_tokenizer"))
    if pattern is None:
        raise TokenizerError(f"{path}: not a byte-level BPE (its pre-tokenizer has no ByteLevel step)")
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model.get("merges", [])]
    ranks, specials, byte_merges = ranks_from_vocab_and_merges(model["vocab"], merges)
    for added in data.get("added_tokens") or []:
        if added["content"] not in specials and str_to_token_or_none(added["content"]) not in ranks:
            specials[added["content"]] = added["id"]
    return ranks, specials, byte_merges, pattern


def str_to_token_or_none(text: str) -> bytes | None:
    try:
        return str_to_token(text)
    except KeyError:
        return None


def _pattern_of(pre: dict | None) -> str | None:
    """The pre-tokenisation regex of a ``tokenizer.json`` pre-tokenizer, if it is byte-level."""
    if not pre:
        return None
    if pre.get("type") == "ByteLevel":
        return GPT2_PATTERN if pre.get("use_regex", True) else None
    if pre.get("type") == "Sequence":
        steps = pre.get("pretokenizers", [])
        split = [s for s in steps if s.get("type") == "Split" and "Regex" in (s.get("pattern") or {})]
        byte_level = [s for s in steps if s.get("type") == "ByteLevel"]
        if byte_level and split and not byte_level[0].get("use_regex", True):
            return split[0]["pattern"]["Regex"]
        if byte_level and not split:
            return GPT2_PATTERN if byte_level[0].get("use_regex", True) else None
    return None


def _added_special_tokens(directory: Path, specials: dict[str, int], ranks: dict[bytes, int]) -> dict[str, int]:
    """Special tokens listed beside vocab.json (``tokenizer_config.json``'s ``added_tokens_decoder``,
    or ``added_tokens.json``) that vocab.json itself does not hold."""
    found: dict[str, int] = {}
    config = directory / "tokenizer_config.json"
    if config.is_file():
        for i, entry in (json.loads(config.read_text(encoding="utf-8")).get("added_tokens_decoder") or {}).items():
            found[entry["content"]] = int(i)
    added = directory / "added_tokens.json"
    if added.is_file():
        found.update(json.loads(added.read_text(encoding="utf-8")))
    return {text: i for text, i in found.items() if text not in specials and i not in ranks.values()}


VOCAB_PAIRS = (("vocab.json", "merges.txt"), ("encoder.json", "vocab.bpe"))


def _find_vocab_files(path: Path) -> tuple[str, Path, Path | None] | None:
    """(kind, first file, second file) for a path to a vocabulary file or a directory holding one."""
    if path.is_file():
        directory, name = path.parent, path.name
        if name == "tokenizer.json":
            return "tokenizer.json", path, None
        for first, second in VOCAB_PAIRS:
            if name in (first, second):
                if not (directory / first).is_file() or not (directory / second).is_file():
                    raise TokenizerError(f"{path} needs its partner: {first} and {second} side by side")
                return "vocab+merges", directory / first, directory / second
        if path.suffix == ".tiktoken" or _looks_like_tiktoken(path):
            return "tiktoken", path, None
        return None
    if not path.is_dir():
        return None
    if (path / "tokenizer.json").is_file():
        return "tokenizer.json", path / "tokenizer.json", None
    for first, second in VOCAB_PAIRS:
        if (path / first).is_file() and (path / second).is_file():
            return "vocab+merges", path / first, path / second
    found = sorted(path.glob("*.tiktoken"))
    if len(found) == 1:
        return "tiktoken", found[0], None
    if len(found) > 1:
        raise TokenizerError(f"{path} holds several .tiktoken files; name one")
    return None


def _looks_like_tiktoken(path: Path) -> bool:
    with open(path, "rb") as handle:
        first = handle.readline(200).split()
    if len(first) != 2 or not first[1].isdigit():
        return False
    try:
        base64.b64decode(first[0], validate=True)
    except ValueError:
        return False
    return True


def _offline() -> bool:
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes") for v in ("GPT2LAB_OFFLINE", "HF_HUB_OFFLINE"))


def _hub_cache_dir(repo_id: str) -> Path | None:
    """The snapshot directory of ``repo_id`` in the local Hugging Face cache, if it holds tokenizer files."""
    if not repo_id or Path(repo_id).is_absolute() or repo_id.count("/") > 1:
        return None
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover
        return None
    for name in ("tokenizer.json", "vocab.json"):
        try:
            # the environment is read here, not when huggingface_hub was imported
            found = try_to_load_from_cache(repo_id, name, cache_dir=os.environ.get("HF_HUB_CACHE") or None)
        except Exception:  # an id the hub library rejects: not a hub name
            return None
        if isinstance(found, str) and _find_vocab_files(Path(found).parent) is not None:
            return Path(found).parent
    return None


def _tiktoken_r50k() -> dict[bytes, int] | None:
    """GPT-2's ranks from tiktoken's cache, else tiktoken's download (if the network may be used)."""
    from tiktoken.load import load_tiktoken_bpe

    if _offline():
        # tiktoken's cache: $TIKTOKEN_CACHE_DIR, $DATA_GYM_CACHE_DIR or <tmp>/data-gym-cache,
        # a file named by the SHA-1 of the URL. Read it without letting tiktoken reach the network.
        import hashlib
        import tempfile

        cache_dir = os.environ.get("TIKTOKEN_CACHE_DIR") or os.environ.get("DATA_GYM_CACHE_DIR") or os.path.join(tempfile.gettempdir(), "data-gym-cache")
        cached = Path(cache_dir) / hashlib.sha1(R50K_URL.encode()).hexdigest()
        if not cached.is_file() or hashlib.sha256(cached.read_bytes()).hexdigest() != GPT2_VOCAB_SHA256:
            return None
        return read_tiktoken_ranks(cached)
    try:
        return load_tiktoken_bpe(R50K_URL, expected_hash=GPT2_VOCAB_SHA256)
    except Exception:  # no network, a proxy, a bad download: all mean "not available here"
        return None


__all__ = [
    "Tokenizer",
    "PythonBPE",
    "GPT2_PATTERN",
    "ENDOFTEXT",
    "bytes_to_unicode",
    "bpe_merge",
    "count_pieces",
    "learn_bpe",
    "read_tiktoken_ranks",
    "write_tiktoken_ranks",
]
