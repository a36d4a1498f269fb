"""GPT-2's tokenizer: text <-> ids, the same ids as GPT-2, with the methods of ``tiktoken.Encoding``.

``Tokenizer`` is the public surface; the work is done in three modules beside it:

- ``bpe``: the byte-level BPE written out in plain Python, with how it works (start there to learn it);
- ``bpe_train``: learning a vocabulary (the merges) from text;
- ``vocab_files``: the file formats a vocabulary comes in, and where GPT-2's is found.

Two backends give the same ids: ``"tiktoken"`` (the default), which hands the ranks to tiktoken's
Rust core, and ``"python"``, the reference in ``bpe``. Every method of ``tiktoken.Encoding`` is
here with its behaviour (results, special-token rules, the exceptions it raises), so either drops
in for the other; ``tests/test_tokenizer.py`` makes the same calls on both.

The names below ``Tokenizer`` are re-exported from their modules, so ``from gpt2lab.tokenizer
import GPT2_PATTERN, learn_bpe, read_tiktoken_ranks`` keeps working.
"""

from __future__ import annotations

import operator
import os
from collections.abc import Collection, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from .bpe import ENDOFTEXT, GPT2_PATTERN, PythonBPE, bpe_merge, special_token_regex
from .bpe_train import count_pieces, learn_bpe, train_bpe
from .errors import TokenizerError
from .files import ADAPTER_CONFIG, adapter_base, looks_like_path, run_model_dir
from .vocab_files import (
    GPT2_VOCAB_SHA256,
    HOW_TO_GET_GPT2,
    R50K_URL,
    VOCAB_PAIRS,
    bytes_to_unicode,
    find_vocab_files,
    hub_cache_dir,
    hub_cached_file,
    ranks_from_vocab_and_merges,
    read_tiktoken_ranks,
    read_tokenizer_json,
    read_vocab_and_merges,
    read_vocabulary,
    str_to_token,
    str_to_token_or_none,
    tiktoken_r50k_ranks,
    token_to_str,
    unicode_to_bytes,
    write_hf_vocabulary,
    write_tiktoken_ranks,
)

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

Backend = Literal["tiktoken", "python"]
BACKENDS = ("tiktoken", "python")
AllowedSpecial = Literal["all"] | Collection[str]

# ---------------------------------------------------------------------------------------------
# The exceptions tiktoken raises, with a message that says what to do
# ---------------------------------------------------------------------------------------------


class UnknownTokenError(TokenizerError, KeyError):
    """An id or token bytes not in the vocabulary: a ``KeyError``, as tiktoken raises."""

    def __str__(self) -> str:
        return Exception.__str__(self)  # KeyError would print the message inside quotes


class TokenIdRangeError(TokenizerError, OverflowError):
    """A token id below 0 or of more than 32 bits: an ``OverflowError``, as tiktoken raises."""


class TokenTypeError(TokenizerError, TypeError):
    """A token id that is not an integer (or a token that is neither text nor bytes): a ``TypeError``."""


# ---------------------------------------------------------------------------------------------
# The tokenizer
# ---------------------------------------------------------------------------------------------


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
        backend: ``"tiktoken"`` (default, fast) or ``"python"`` (the reference in ``bpe``); same ids.
        merges: the pairs that made each merged token, in rank order, when known (training, or a
            merges file); otherwise they are recovered from the ranks when needed (``save``).

    Where it differs from ``tiktoken.Encoding`` on purpose: errors are ``TokenizerError`` subclasses
    of the exception tiktoken raises (so ``except KeyError`` and ``except ValueError`` both work) with a
    one-line message; ``special_tokens_set`` is a frozenset (tiktoken's is a set nobody should change);
    ``allowed_special`` / ``disallowed_special`` take any collection (tiktoken wants a set) and
    ``is_special_token`` refuses a non-integer with ``TypeError`` (tiktoken: ``assert``); the Python
    backend lists ``encode_with_unstable``'s continuations sorted (tiktoken: in hash order).
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
        self._special_ids = frozenset(special_tokens.values())
        self._decoder: dict[int, bytes] = {rank: token for token, rank in mergeable_ranks.items()}
        self._decoder.update((i, text.encode("utf-8")) for text, i in special_tokens.items())
        self._enc: Any = None  # tiktoken.Encoding, for backend="tiktoken"
        self._py: PythonBPE | None = None
        if backend == "tiktoken":
            import tiktoken

            self._enc = tiktoken.Encoding(name, pat_str=pattern, mergeable_ranks=mergeable_ranks, special_tokens=special_tokens)
        else:
            self._py = PythonBPE(mergeable_ranks, pattern, special_tokens)

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
            raise UnknownTokenError(f"this vocabulary has no {ENDOFTEXT} token")
        return self.special_tokens[ENDOFTEXT]

    def is_special_token(self, token: int) -> bool:
        """Whether id ``token`` is a special token (``<|endoftext|>``) rather than a merged one."""
        if not isinstance(token, int):
            raise TokenTypeError(f"a token id is an integer, not {type(token).__name__} ({token!r})")
        return token in self._special_ids

    def token_byte_values(self) -> list[bytes]:
        """The bytes of every mergeable token, sorted (special tokens left out), as tiktoken lists them."""
        return sorted(self.mergeable_ranks)

    # -- encoding -------------------------------------------------------------------------------

    def encode_ordinary(self, text: str) -> list[int]:
        """Text -> ids, treating special-token text (``<|endoftext|>``) as ordinary text."""
        if self._enc is not None:
            return self._enc.encode_ordinary(text)
        assert self._py is not None
        return self._py.encode_ordinary(text)

    def encode(
        self,
        text: str,
        *,
        allowed_special: AllowedSpecial = frozenset(),
        disallowed_special: AllowedSpecial = "all",
    ) -> list[int]:
        """Text -> ids, as ``tiktoken.Encoding.encode``.

        Special tokens in ``allowed_special`` (a set of their texts, or ``"all"``) become their id.
        By default every other special token is *disallowed*: its text in the input raises
        ``TokenizerError`` (a ``ValueError``, as in tiktoken), because text from a user that contains
        ``<|endoftext|>`` is usually a mistake or an injection. ``disallowed_special=()`` encodes such
        text as ordinary text instead. Names that are not special tokens of this vocabulary are
        ignored in ``allowed_special`` and searched for in ``disallowed_special``, as tiktoken does.
        """
        allowed = self._check_special(text, allowed_special, disallowed_special)
        if self._enc is not None:
            return self._enc.encode(text, allowed_special=allowed, disallowed_special=())
        assert self._py is not None
        return self._py.encode(text, allowed)

    def _check_special(self, text: str, allowed_special: AllowedSpecial, disallowed_special: AllowedSpecial) -> frozenset[str]:
        """The allowed special tokens, once the text is known to hold no disallowed one."""
        allowed = self.special_tokens_set if allowed_special == "all" else frozenset(allowed_special)
        disallowed = self.special_tokens_set - allowed if disallowed_special == "all" else frozenset(disallowed_special)
        if disallowed and (match := special_token_regex(disallowed).search(text)):
            token = match.group()
            raise TokenizerError(
                f"the text contains the special token {token!r}: pass allowed_special={{{token!r}}} to encode it as "
                f"the special token, or disallowed_special=() to encode it as ordinary text"
            )
        return allowed

    def encode_to_numpy(
        self,
        text: str,
        *,
        allowed_special: AllowedSpecial = frozenset(),
        disallowed_special: AllowedSpecial = "all",
    ) -> npt.NDArray[np.uint32]:
        """``encode`` into a numpy array of uint32 (no Python list on the tiktoken backend)."""
        import numpy as np

        allowed = self._check_special(text, allowed_special, disallowed_special)
        if self._enc is not None:
            return self._enc.encode_to_numpy(text, allowed_special=allowed, disallowed_special=())
        assert self._py is not None
        text.encode("utf-8")  # tiktoken's encode_to_numpy, unlike encode, raises on lone surrogates instead of replacing them
        return np.array(self._py.encode(text, allowed), dtype=np.uint32)

    def encode_batch(
        self,
        text: Sequence[str],
        *,
        num_threads: int = 8,
        allowed_special: AllowedSpecial = frozenset(),
        disallowed_special: AllowedSpecial = "all",
    ) -> list[list[int]]:
        """``encode`` for many texts. The tiktoken backend releases the GIL, so threads use every core."""
        allowed: frozenset[str] = frozenset()
        for one in text:
            allowed = self._check_special(one, allowed_special, disallowed_special)
        if self._enc is not None:
            return self._enc.encode_batch(list(text), num_threads=num_threads, allowed_special=allowed, disallowed_special=())
        # the reference is pure Python: threads would only take turns holding the GIL
        assert self._py is not None
        return [self._py.encode(one, allowed) for one in text]

    def encode_ordinary_batch(self, text: Sequence[str], *, num_threads: int = 8) -> list[list[int]]:
        """``encode_ordinary`` for many texts, in parallel threads (tiktoken backend)."""
        if self._enc is not None:
            with ThreadPoolExecutor(num_threads) as pool:
                return list(pool.map(self._enc.encode_ordinary, text))
        assert self._py is not None
        return [self._py.encode_ordinary(one) for one in text]

    def encode_with_unstable(
        self,
        text: str,
        *,
        allowed_special: AllowedSpecial = frozenset(),
        disallowed_special: AllowedSpecial = "all",
    ) -> tuple[list[int], list[list[int]]]:
        """(stable ids, the ways the rest may be encoded once more text follows), as tiktoken's
        method of that name (which it calls unstable itself). See ``PythonBPE.encode_with_unstable``."""
        allowed = self._check_special(text, allowed_special, disallowed_special)
        if self._enc is not None:
            return self._enc.encode_with_unstable(text, allowed_special=allowed, disallowed_special=())
        assert self._py is not None
        return self._py.encode_with_unstable(text, allowed)

    def encode_single_token(self, text_or_bytes: str | bytes) -> int:
        """The id of a text (or bytes) that is exactly one token, special tokens included.

        Raises ``UnknownTokenError`` (a ``KeyError``, as tiktoken) if it is not one token.
        """
        if isinstance(text_or_bytes, str):
            token = text_or_bytes.encode("utf-8")
        elif isinstance(text_or_bytes, bytes):
            token = text_or_bytes
        else:
            raise TokenTypeError(f"a token is text (str) or bytes, not {type(text_or_bytes).__name__}")
        # a merged token first, then a special token spelled by the same bytes, as tiktoken looks
        if (rank := self.mergeable_ranks.get(token)) is not None:
            return rank
        try:
            return self.special_tokens[token.decode("utf-8")]
        except (UnicodeDecodeError, KeyError):
            raise UnknownTokenError(f"{text_or_bytes!r} is not a single token of this vocabulary") from None

    # -- decoding -------------------------------------------------------------------------------

    def decode_bytes(self, tokens: Sequence[int]) -> bytes:
        """Ids -> the bytes they stand for. A bad id raises ``UnknownTokenError`` (a ``KeyError``),
        or, as in tiktoken, an ``OverflowError`` / ``TypeError`` for a negative or non-integer one."""
        tokens = _as_list(tokens)
        try:
            if self._enc is not None:
                return self._enc.decode_bytes(tokens)
            decoder, index = self._decoder, operator.index  # index: 1.0 is not an id, numpy integers are
            return b"".join([decoder[index(i)] for i in tokens])
        except (KeyError, OverflowError, TypeError):
            pass  # find the culprit outside the fast path, for a clear message
        raise self._bad_ids(tokens)

    def decode(self, tokens: Sequence[int], errors: str = "replace") -> str:
        """Ids -> text. Ids can cut a character's UTF-8 bytes in two (a model may emit any ids);
        ``errors="replace"`` shows such bytes as U+FFFD, ``errors="strict"`` raises ``UnicodeDecodeError``."""
        return self.decode_bytes(tokens).decode("utf-8", errors=errors)

    def decode_single_token_bytes(self, token: int) -> bytes:
        """The bytes of one id: ``decode_single_token_bytes(995) == b" world"``."""
        try:
            return self._decoder[operator.index(token)]
        except (KeyError, TypeError):
            raise self._bad_ids([token]) from None

    def decode_tokens_bytes(self, tokens: Sequence[int]) -> list[bytes]:
        """The bytes of each id, one entry per id: where the token boundaries are."""
        return [self.decode_single_token_bytes(i) for i in _as_list(tokens)]

    def decode_with_offsets(self, tokens: Sequence[int]) -> tuple[str, list[int]]:
        """(text, where each token starts in it, in characters), as tiktoken's method of that name.

        A token that starts inside a character (its first byte a UTF-8 continuation byte) is given
        that character's index. Ids that do not decode to valid UTF-8 raise ``UnicodeDecodeError``.
        """
        token_bytes = self.decode_tokens_bytes(tokens)
        offsets, length = [], 0  # length: characters so far = bytes so far that start a character
        for token in token_bytes:
            offsets.append(max(0, length - (0x80 <= token[0] < 0xC0)))
            length += sum(1 for b in token if not 0x80 <= b < 0xC0)
        return b"".join(token_bytes).decode("utf-8", errors="strict"), offsets

    def decode_batch(self, batch: Sequence[Sequence[int]], *, errors: str = "replace", num_threads: int = 8) -> list[str]:
        """``decode`` for many id sequences."""
        if self._enc is not None:
            with ThreadPoolExecutor(num_threads) as pool:
                return list(pool.map(lambda tokens: self.decode(tokens, errors=errors), batch))
        return [self.decode(tokens, errors=errors) for tokens in batch]

    def decode_bytes_batch(self, batch: Sequence[Sequence[int]], *, num_threads: int = 8) -> list[bytes]:
        """``decode_bytes`` for many id sequences."""
        if self._enc is not None:
            with ThreadPoolExecutor(num_threads) as pool:
                return list(pool.map(self.decode_bytes, batch))
        return [self.decode_bytes(tokens) for tokens in batch]

    def _bad_ids(self, ids: list) -> TokenizerError:
        """The error for the first id that is not in the vocabulary, of the type tiktoken raises for it."""
        for token in ids:
            try:
                i = operator.index(token)
            except TypeError:
                return TokenTypeError(f"token id {token!r} is not in this vocabulary: ids are integers, not {type(token).__name__}")
            if i not in self._decoder:
                where = f"ids are integers from 0 to {self.max_token_value}"
                # tiktoken's ids are 32-bit unsigned integers: it overflows outside that range, else has no such key
                if not 0 <= i < 1 << 32:
                    return TokenIdRangeError(f"token id {i} is not in this vocabulary ({where})")
                return UnknownTokenError(f"token id {i} is not in this vocabulary ({where})")
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

        ``path`` is a file or a directory holding ``tokenizer.json``, ``vocab.json`` + ``merges.txt``,
        ``encoder.json`` + ``vocab.bpe`` or a ``*.tiktoken`` file (see ``vocab_files.read_vocabulary``
        for the order and for where a ``.tiktoken`` file's ``<|endoftext|>`` comes from).
        """
        vocab = read_vocabulary(path, special_tokens=special_tokens, pattern=pattern)
        return cls(vocab.mergeable_ranks, vocab.special_tokens, pattern=vocab.pattern, name=vocab.name, backend=backend, merges=vocab.merges)

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
            if (cached := hub_cache_dir(repo_id)) is not None:
                return cls.from_file(cached, backend=backend)
        ranks = tiktoken_r50k_ranks()
        if ranks is None:
            raise TokenizerError(f"GPT-2's vocabulary was not found: {HOW_TO_GET_GPT2}")
        return cls(ranks, {ENDOFTEXT: 50256}, name="gpt2", backend=backend)

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, *, backend: Backend | None = None) -> Tokenizer:
        """The tokenizer of a model: its own tokenizer files when its directory (or its hub cache)
        holds them (a training run's directory: its saved model's, ``run/model``; a LoRA adapter's
        directory without them: its base model's), otherwise GPT-2's vocabulary, which every
        released GPT-2 size shares."""
        path = run_model_dir(name_or_path)
        if path.is_dir():
            if find_vocab_files(path) is not None:
                return cls.from_file(path, backend=backend)
            if (base := adapter_base(path)) is not None:
                return cls.from_pretrained(base, backend=backend)
        elif path.is_file():
            return cls.from_file(path, backend=backend)
        elif looks_like_path(name_or_path):
            raise TokenizerError(f"no such model directory or tokenizer file: {name_or_path}")
        elif (cached := hub_cache_dir(str(name_or_path))) is not None:
            return cls.from_file(cached, backend=backend)
        elif (adapter := hub_cached_file(str(name_or_path), ADAPTER_CONFIG)) is not None and (base := adapter_base(adapter.parent)):
            return cls.from_pretrained(base, backend=backend)  # an adapter from the hub, without tokenizer files: its base's
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
        return write_hf_vocabulary(path, self.mergeable_ranks, self.special_tokens, self.merges)

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
        ties between equally frequent pairs go to the pair of lower ids. See ``bpe_train``.
        """
        ranks, specials, merges = train_bpe(texts_or_files, vocab_size, special_tokens, progress=progress)
        return cls(ranks, specials, name=name, backend=backend, merges=merges)


def _rebuild(ranks, specials, pattern, name, backend, merges) -> Tokenizer:
    return Tokenizer(ranks, specials, pattern=pattern, name=name, backend=backend, merges=merges)


def _as_list(ids) -> list:
    if isinstance(ids, list):
        return ids
    if hasattr(ids, "tolist"):  # numpy arrays and torch tensors
        ids = ids.tolist()
        return ids if isinstance(ids, list) else [ids]
    return list(ids)


__all__ = [
    "Tokenizer",
    "Backend",
    "BACKENDS",
    "UnknownTokenError",
    "TokenIdRangeError",
    "TokenTypeError",
    # bpe
    "GPT2_PATTERN",
    "ENDOFTEXT",
    "PythonBPE",
    "bpe_merge",
    # bpe_train
    "count_pieces",
    "learn_bpe",
    # vocab_files
    "R50K_URL",
    "GPT2_VOCAB_SHA256",
    "HOW_TO_GET_GPT2",
    "VOCAB_PAIRS",
    "bytes_to_unicode",
    "unicode_to_bytes",
    "token_to_str",
    "str_to_token",
    "str_to_token_or_none",
    "read_tiktoken_ranks",
    "write_tiktoken_ranks",
    "ranks_from_vocab_and_merges",
    "read_vocab_and_merges",
    "read_tokenizer_json",
    "find_vocab_files",
    "TokenizerError",
]
