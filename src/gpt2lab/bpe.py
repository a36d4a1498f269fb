"""GPT-2's byte-level BPE in plain Python: the readable reference (``Tokenizer(backend="python")``).

How GPT-2 turns text into ids, in three steps:

1. **Pre-tokenise.** A regular expression (``GPT2_PATTERN``) cuts the text into pieces: words with
   their leading space (``" hello"``), runs of digits, runs of punctuation, whitespace, and the
   English contractions ``'s 't 're 've 'm 'll 'd``. No token ever crosses a piece boundary, so
   each piece can be encoded (and cached) on its own.
2. **Bytes.** Each piece is encoded as UTF-8. The alphabet is the 256 byte values, so any text at
   all can be encoded: there is no "unknown token".
3. **Merge.** Start from single bytes and repeatedly join the adjacent pair whose joined bytes are
   the *oldest* token in the vocabulary (the lowest rank), until no adjacent pair is a token.
   The ranks come from training (``bpe_train``): the pair merged first gets the lowest rank.

Decoding is the reverse of step 2 only: join the bytes of the ids and decode them as UTF-8.

Special tokens (``<|endoftext|>``) are never made by merging: ``encode`` cuts the text at each
allowed special token first and gives it its own id.

This module is what tiktoken's Rust core computes, written to be read; ``tokenizer.Tokenizer``
puts either behind ``tiktoken.Encoding``'s methods. The tests hold both to the same ids.
"""

from __future__ import annotations

import heapq
from bisect import bisect_left
from collections.abc import Collection
from functools import lru_cache

import numpy as np

# The third-party ``regex`` module (already a dependency of tiktoken) because GPT-2's pattern needs
# Unicode classes (\p{L} letters, \p{N} numbers) that Python's built-in ``re`` does not have.
import regex

# GPT-2's pre-tokenisation pattern, from OpenAI's encoder.py. Read the alternatives left to right:
# contractions; an optional space then letters; an optional space then digits; an optional space
# then other symbols; whitespace not followed by a non-space (so "  hello" gives " " and " hello":
# the last space stays with the word); any other whitespace.
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
# the separator between documents, GPT-2's only special token (id 50256)
ENDOFTEXT = "<|endoftext|>"


def bpe_merge(ranks: dict[bytes, int], piece: bytes, max_rank: int | None = None) -> list[bytes]:
    """Split one piece into tokens: start from single bytes, join the lowest-rank pair, repeat.

    "Lowest rank" means the joined bytes are the oldest token; ties go to the leftmost pair. With
    ``max_rank`` only tokens older than it may form, which recovers how a token was made (its
    merge) from the ranks alone. The loop is quadratic in the piece length, which is fine for the
    words of ordinary text; ``bpe_merge_long`` computes the same result in O(n log n).
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


def bpe_merge_long(ranks: dict[bytes, int], piece: bytes) -> list[bytes]:
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


def replace_lone_surrogates(text: str) -> str:
    """Python strings may hold lone surrogates, which have no UTF-8 form; like tiktoken, replace them with U+FFFD."""
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


@lru_cache(maxsize=1)
def unknown_to_tiktoken() -> dict[int, int]:
    """A ``str.translate`` table: each code point ``regex`` knows but tiktoken's Unicode leaves unassigned -> U+FFFF.

    Unicode assigns new letters and digits every year, and each regex engine carries the tables of
    one version: tiktoken 0.14's Rust engine has Unicode 16.0, ``regex`` 2025.11 has 17.0. A code
    point that one calls a letter and the other unassigned cuts text differently (U+3F076 before 技 is
    one piece or two), so the ids differ. tiktoken is the reference, so the pattern is shown such a
    code point as U+FFFF, a noncharacter that no version will ever assign: neither letter, digit nor
    space, which is what tiktoken sees. Asked of the installed tiktoken once (0.3 s), so the two
    agree whichever versions are installed, as long as ``regex`` is the newer.
    """
    import tiktoken  # only here: this module is the reference and needs tiktoken for nothing else

    every_character = "".join(chr(c) for c in range(0x110000) if not 0xD800 <= c < 0xE000)  # no surrogates
    byte_ranks = {bytes([b]): b for b in range(256)}  # no merges: the ids are the matched bytes
    unassigned = tiktoken.Encoding(name="unassigned", pat_str=r"\p{Cn}+", mergeable_ranks=byte_ranks, special_tokens={})
    theirs = bytes(unassigned.encode_ordinary(every_character)).decode("utf-8")  # text outside the pattern is dropped
    return {ord(c): 0xFFFF for c in regex.findall(r"\P{Cn}", theirs)}


@lru_cache(maxsize=1)
def _is_unknown_to_tiktoken() -> np.ndarray:
    """``unknown_to_tiktoken``'s code points as a table: entry c is True for each (0x110000 bools, 1.1 MB)."""
    table = np.zeros(0x110000, dtype=bool)
    table[list(unknown_to_tiktoken())] = True
    return table


class Pretokenizer:
    """Step 1 of the module docstring: a pattern's pieces of a text, as tiktoken cuts them.

    ``findall`` is ``regex.findall`` with one difference, for characters newer than tiktoken's
    Unicode tables (``unknown_to_tiktoken``): the pattern matches against a copy of the text with
    those characters masked, and the pieces are cut from the original at the same places (one
    code point for one, so the positions agree).
    """

    def __init__(self, pattern: str):
        self.regex = regex.compile(pattern)
        self.unknown = unknown_to_tiktoken()
        self.is_unknown = _is_unknown_to_tiktoken()

    def findall(self, text: str) -> list[str]:
        # ASCII is in every Unicode version: the common case costs nothing more (and a non-str gets regex's TypeError)
        if not isinstance(text, str) or text.isascii():
            return self.regex.findall(text)
        # other text is looked up in the table, a few ms a million characters: a copy is masked only when it needs one
        code_points = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)  # (len(text),)
        if not self.is_unknown[code_points].any():
            return self.regex.findall(text)
        masked = text.translate(self.unknown)
        return [text[m.start() : m.end()] for m in self.regex.finditer(masked)]


@lru_cache(maxsize=64)
def special_token_regex(tokens: frozenset[str]) -> regex.Pattern:
    """A regex matching any of ``tokens`` (special-token texts)."""
    # longest first, so that a special token that is a prefix of another never wins
    return regex.compile("|".join(regex.escape(t) for t in sorted(tokens, key=lambda t: (-len(t), t))))


class PythonBPE:
    """Byte-level BPE in plain Python, with the encoding methods of tiktoken's core.

    Keeps a cache from piece to ids: natural text repeats its words, so after the first few
    kilobytes almost every piece is a dictionary look-up and the merge loop rarely runs.

    Args:
        mergeable_ranks: token bytes -> rank (= id); all 256 single bytes included.
        pattern: the pre-tokenisation regular expression.
        special_tokens: special-token text -> id; recognised only where ``encode`` allows them.
    """

    LONG = 64  # pieces longer than this (bytes) take the O(n log n) merge and are not cached
    CACHE_SIZE = 1 << 18  # entries; the cache is emptied when full, which keeps memory bounded

    def __init__(self, mergeable_ranks: dict[bytes, int], pattern: str, special_tokens: dict[str, int] | None = None):
        self.ranks = mergeable_ranks
        self.special_tokens = dict(special_tokens or {})
        self.pattern = Pretokenizer(pattern)
        self.cache: dict[str, list[int]] = {}
        # built on the first encode_with_unstable: id -> bytes, and every token's bytes in sorted order
        self._decoder: dict[int, bytes] | None = None
        self._sorted_tokens: list[bytes] = []

    def encode_piece(self, piece: bytes) -> list[int]:
        """The ids of one pre-tokenised piece (step 3 of the module docstring)."""
        if (rank := self.ranks.get(piece)) is not None:  # the whole piece is one token
            return [rank]
        return self.merge_piece(piece)

    def merge_piece(self, piece: bytes) -> list[int]:
        """The ids the merge loop gives ``piece``, without looking the whole piece up first."""
        merge = bpe_merge if len(piece) <= self.LONG else bpe_merge_long
        return [self.ranks[part] for part in merge(self.ranks, piece)]

    def encode_ordinary(self, text: str) -> list[int]:
        """Text -> ids, special-token text encoded as ordinary text."""
        try:
            return self._encode_ordinary(text)
        except UnicodeEncodeError:
            return self._encode_ordinary(replace_lone_surrogates(text))

    def _encode_ordinary(self, text: str) -> list[int]:
        return self._encode_pieces(self.pattern.findall(text))

    def _encode_pieces(self, pieces: list[str]) -> list[int]:
        """The ids of pre-tokenised pieces."""
        ids: list[int] = []
        cache = self.cache
        for piece in pieces:
            cached = cache.get(piece)
            if cached is None:
                cached = self.encode_piece(piece.encode("utf-8"))
                if len(piece) <= self.LONG:
                    if len(cache) >= self.CACHE_SIZE:
                        cache.clear()
                    cache[piece] = cached
            ids.extend(cached)
        return ids

    def encode(self, text: str, allowed_special: Collection[str] = frozenset()) -> list[int]:
        """Text -> ids, each allowed special token's text given its id. (Refusing disallowed
        special-token text is the caller's job, as it is in tiktoken's Python layer.)"""
        try:
            return self._encode(text, allowed_special)[0]
        except UnicodeEncodeError:
            return self._encode(replace_lone_surrogates(text), allowed_special)[0]

    def _encode(self, text: str, allowed_special: Collection[str]) -> tuple[list[int], str | None]:
        """(ids, the text's last regex piece; None when the text is empty or ends in a special token)."""
        allowed = frozenset(allowed_special).intersection(self.special_tokens)  # unknown names are ignored, as tiktoken does
        if not allowed:
            pieces = self.pattern.findall(text)
            return self._encode_pieces(pieces), pieces[-1] if pieces else None
        ids: list[int] = []
        start = 0
        for match in special_token_regex(allowed).finditer(text):
            ids.extend(self._encode_pieces(self.pattern.findall(text[start : match.start()])))
            ids.append(self.special_tokens[match.group()])
            start = match.end()
        pieces = self.pattern.findall(text[start:])
        ids.extend(self._encode_pieces(pieces))
        return ids, pieces[-1] if pieces else None

    # -- completions ----------------------------------------------------------------------------

    def encode_with_unstable(self, text: str, allowed_special: Collection[str] = frozenset()) -> tuple[list[int], list[list[int]]]:
        """(stable ids, possible continuations), as ``tiktoken.Encoding.encode_with_unstable``.

        The ids of the last piece may change when more text follows ("hello fanta" + "stic"), so
        they are held back: the stable ids cover a prefix of the text, and each continuation is a
        way the held-back bytes may be encoded once the text goes on. Used to complete text token by
        token; tiktoken's own notes call the method experimental. The continuations come sorted.
        """
        ids, last_piece = self._encode(text, allowed_special)
        if last_piece is None:  # the text ends in a special token (or is empty): nothing is unstable
            return ids, []
        last = len(self.encode_piece(last_piece.encode("utf-8")))  # the ids the last piece gave
        if self._decoder is None:
            self._decoder = {rank: token for token, rank in self.ranks.items()}
            self._sorted_tokens = sorted(self.ranks)
        decoder, tokens = self._decoder, self._sorted_tokens

        def all_space(token_id: int) -> bool:
            return token_id in decoder and all(b in b" \n\t" for b in decoder[token_id])

        # a regex split inside a run of whitespace may disappear as text follows: hold back the whole run
        if all_space(ids[-last]):
            while last < len(ids) and all_space(ids[-last - 1]):
                last += 1
        unstable = b"".join(decoder[i] for i in ids[-last:])
        stable = ids[:-last]
        completions: set[tuple[int, ...]] = set()

        # 1. one token that starts with all the held-back bytes
        at = bisect_left(tokens, unstable)
        while at < len(tokens) and tokens[at].startswith(unstable):
            completions.add((self.ranks[tokens[at]],))
            at += 1
        # 2. a token straddling the end of the text: the held-back bytes up to i, then a token that
        #    starts with the rest, encoded again (a regex split may appear), cut once it covers them
        for i in range(1, len(unstable)):
            prefix, suffix = unstable[:i], unstable[i:]
            at = bisect_left(tokens, suffix)
            while at < len(tokens) and tokens[at].startswith(suffix):
                possibility = prefix + tokens[at]
                try:
                    encoded = self.encode_ordinary(possibility.decode("utf-8"))
                except UnicodeDecodeError:  # cut inside a character: no regex split to respect
                    encoded = self.merge_piece(possibility)
                sequence, covered = [], 0
                for token_id in encoded:
                    sequence.append(token_id)
                    covered += len(decoder[token_id])
                    if covered >= len(unstable):
                        break
                completions.add(tuple(sequence))
                at += 1
        # 3. whitespace at the end may split off ("\n\n" + "0" gives "\n", "\n", "0")
        if len(unstable) > 1:
            last_char, size = _last_character(unstable)
            if last_char is not None and len(unstable) > size and regex.fullmatch(r"\p{White_Space}", last_char):
                completions.add((*self.merge_piece(unstable[:-size]), *self.merge_piece(unstable[-size:])))
        return stable, sorted(list(c) for c in completions)


def _last_character(data: bytes) -> tuple[str | None, int]:
    """The last UTF-8 character of ``data`` and its length in bytes; ``None`` if the end is not valid UTF-8."""
    for size in range(1, min(4, len(data)) + 1):
        try:
            return data[-size:].decode("utf-8"), size
        except UnicodeDecodeError:
            continue
    return None, 1
