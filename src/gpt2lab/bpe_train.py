"""Learning a byte-level BPE vocabulary from text: the merges, most frequent pair first.

``train_bpe`` is what ``Tokenizer.train`` runs: pre-tokenise the corpus once with GPT-2's pattern
(``count_pieces``), then merge the most frequent adjacent pair again and again (``learn_bpe``),
each merge becoming the next token. Deterministic: ties go to the pair of lower ids.
"""

from __future__ import annotations

import heapq
import os
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

from .bpe import GPT2_PATTERN, Pretokenizer, replace_lone_surrogates, special_token_regex
from .errors import TokenizerError


def train_bpe(
    texts_or_files: str | os.PathLike | Iterable[str | os.PathLike],
    vocab_size: int,
    special_tokens: Sequence[str],
    *,
    pattern: str = GPT2_PATTERN,
    progress: bool = True,
) -> tuple[dict[bytes, int], dict[str, int], list[tuple[bytes, bytes]]]:
    """Learn ``vocab_size`` tokens: (ranks, special tokens, merges).

    ``texts_or_files`` is a text (``str``), a file (``pathlib.Path``), or an iterable of either.
    ``vocab_size`` counts the 256 byte tokens, the merges and the special tokens (which get the
    last ids, and whose text is cut out of the corpus so no merge spans them).
    """
    specials = list(dict.fromkeys(special_tokens))
    n_merges = vocab_size - 256 - len(specials)
    if n_merges < 0:
        raise TokenizerError(f"vocab_size {vocab_size} is too small: it must hold the 256 byte tokens and {len(specials)} special token(s)")
    pieces = count_pieces(_iter_texts(texts_or_files), pattern, specials)
    ranks, merges = learn_bpe(pieces, n_merges, progress=progress)
    first_special = len(ranks)
    return ranks, {text: first_special + i for i, text in enumerate(specials)}, merges


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
    compiled = Pretokenizer(pattern)
    cut = special_token_regex(frozenset(special_tokens)) if special_tokens else None
    counts: Counter[str] = Counter()
    for text in texts:
        text = replace_lone_surrogates(text)
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
