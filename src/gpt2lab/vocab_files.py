"""Where a BPE vocabulary lives on disk: the four file formats, read and written, and where to find GPT-2's.

All formats hold the same information (see ``read_vocabulary``): tiktoken's ``.tiktoken`` ranks,
Hugging Face's ``vocab.json`` + ``merges.txt`` or ``tokenizer.json``, and OpenAI's original
``encoder.json`` + ``vocab.bpe``. ``Tokenizer.from_file`` / ``save`` / ``gpt2`` are built on this module.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from .bpe import ENDOFTEXT, GPT2_PATTERN
from .errors import TokenizerError
from .files import atomic_write_bytes

# tiktoken's r50k_base is GPT-2's vocabulary; this is where tiktoken downloads it from, and its hash.
R50K_URL = "https://openaipublic.blob.core.windows.net/encodings/r50k_base.tiktoken"
GPT2_VOCAB_SHA256 = "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"
HOW_TO_GET_GPT2 = (
    "pass a vocabulary path (--tokenizer PATH), or set GPT2LAB_VOCAB to a gpt2.tiktoken, vocab.json+merges.txt "
    "or tokenizer.json; offline, `pip download --no-deps openai-whisper==20250625` holds whisper/assets/gpt2.tiktoken; "
    "online, tiktoken downloads it (r50k_base) by itself"
)

# ---------------------------------------------------------------------------------------------
# Bytes as printable characters (how vocab.json and merges.txt spell tokens)
# ---------------------------------------------------------------------------------------------


@cache
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


@cache
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
            raise TokenizerError(
                f"merge {number} ({left} {right}) makes id {i}, not larger than the previous merge's {previous}; ids must follow merge order"
            )
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


def find_vocab_files(path: Path) -> tuple[str, Path, Path | None] | None:
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


# ---------------------------------------------------------------------------------------------
# A whole vocabulary, whatever its format
# ---------------------------------------------------------------------------------------------


@dataclass
class Vocabulary:
    """What a vocabulary's files hold: ``Tokenizer``'s constructor arguments."""

    mergeable_ranks: dict[bytes, int]
    special_tokens: dict[str, int]
    pattern: str
    name: str
    merges: list[tuple[bytes, bytes]] | None  # None for a .tiktoken file: recovered from the ranks when needed


def read_vocabulary(path: str | os.PathLike, *, special_tokens: dict[str, int] | None = None, pattern: str | None = None) -> Vocabulary:
    """Read a vocabulary in any of the formats GPT-2's vocabulary is shipped in.

    ``path`` is a file or a directory holding one of (looked for in this order):

    - ``tokenizer.json``: a Hugging Face fast tokenizer (byte-level BPE only);
    - ``vocab.json`` + ``merges.txt``: a Hugging Face GPT-2 tokenizer;
    - ``encoder.json`` + ``vocab.bpe``: OpenAI's original GPT-2 release;
    - ``*.tiktoken``: tiktoken's ranks (``base64(token) rank`` per line). The format has no place
      for special tokens, so ``<|endoftext|>`` is given the id after the last rank (50256 for
      GPT-2) unless ``special_tokens`` says otherwise.

    A path to one file of a pair finds its partner in the same directory. ``special_tokens`` and
    ``pattern``, when given, replace what the files say.
    """
    path = Path(path)
    if not path.exists():
        raise TokenizerError(f"no tokenizer vocabulary at {path}")
    files = find_vocab_files(path)
    if files is None:
        where = f"in {path}" if path.is_dir() else f"for {path}"
        raise TokenizerError(
            f"no tokenizer files {where}: expected tokenizer.json, vocab.json+merges.txt, encoder.json+vocab.bpe or a .tiktoken file"
        )
    kind, first, second = files
    merges: list[tuple[bytes, bytes]] | None
    try:
        if kind == "tiktoken":
            ranks = read_tiktoken_ranks(first)
            specials = {ENDOFTEXT: max(ranks.values()) + 1}
            return Vocabulary(ranks, specials if special_tokens is None else special_tokens, pattern or GPT2_PATTERN, first.stem, None)
        if kind == "tokenizer.json":
            ranks, specials, merges, file_pattern = read_tokenizer_json(first)
        else:  # vocab.json + merges.txt, or encoder.json + vocab.bpe: the same two formats
            assert second is not None
            ranks, specials, merges = read_vocab_and_merges(first, second)
            file_pattern = GPT2_PATTERN
            specials.update(_added_special_tokens(first.parent, specials, ranks))
    except (OSError, ValueError, KeyError, TypeError) as err:  # json.JSONDecodeError is a ValueError
        if isinstance(err, TokenizerError):
            raise
        raise TokenizerError(f"could not read the tokenizer files {first}: {type(err).__name__}: {err}") from None
    if special_tokens is not None:
        specials = special_tokens
    return Vocabulary(ranks, specials, pattern or file_pattern, first.parent.name or "bpe", merges)


def write_hf_vocabulary(
    directory: str | os.PathLike, mergeable_ranks: dict[bytes, int], special_tokens: dict[str, int], merges: list[tuple[bytes, bytes]]
) -> list[Path]:
    """Hugging Face's files for a GPT-2-style vocabulary; returns the files written (each atomically).

    ``vocab.json`` + ``merges.txt`` (which ``GPT2Tokenizer``/``GPT2TokenizerFast`` load) and
    ``tokenizer_config.json`` + ``special_tokens_map.json`` marking the special tokens.
    """
    path = Path(directory)
    if path.exists() and not path.is_dir():
        raise TokenizerError(f"{path} is a file; save the Hugging Face format into a directory, or name a .tiktoken file")
    vocab: dict[str, int] = {token_to_str(token): rank for token, rank in sorted(mergeable_ranks.items(), key=lambda kv: kv[1])}
    vocab.update(sorted(special_tokens.items(), key=lambda kv: kv[1]))
    merges_text = "".join(f"{token_to_str(a)} {token_to_str(b)}\n" for a, b in merges)
    eot = ENDOFTEXT if ENDOFTEXT in special_tokens else None
    config: dict[str, object] = {
        "tokenizer_class": "GPT2Tokenizer",
        "add_prefix_space": False,
        "bos_token": eot,
        "eos_token": eot,
        "unk_token": eot,
        "added_tokens_decoder": {
            str(i): {"content": text, "lstrip": False, "rstrip": False, "normalized": False, "single_word": False, "special": True}
            for text, i in sorted(special_tokens.items(), key=lambda kv: kv[1])
        },
    }
    special_map: dict[str, object] = {"bos_token": eot, "eos_token": eot, "unk_token": eot} if eot else {}
    others = [t for t in special_tokens if t != ENDOFTEXT]
    if others:
        special_map["additional_special_tokens"] = others
        config["additional_special_tokens"] = others
    return [
        atomic_write_bytes(path / "vocab.json", json.dumps(vocab, ensure_ascii=False).encode("utf-8")),
        atomic_write_bytes(path / "merges.txt", ("#version: 0.2\n" + merges_text).encode("utf-8")),
        atomic_write_bytes(path / "tokenizer_config.json", (json.dumps(config, indent=2, ensure_ascii=False) + "\n").encode("utf-8")),
        atomic_write_bytes(path / "special_tokens_map.json", (json.dumps(special_map, indent=2, ensure_ascii=False) + "\n").encode("utf-8")),
    ]


# ---------------------------------------------------------------------------------------------
# Finding GPT-2's vocabulary
# ---------------------------------------------------------------------------------------------


def _offline() -> bool:
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes") for v in ("GPT2LAB_OFFLINE", "HF_HUB_OFFLINE"))


def hub_cached_file(repo_id: str, filename: str) -> Path | None:
    """``filename`` of the hub repository ``repo_id`` in the local Hugging Face cache, if it is there."""
    if not repo_id or Path(repo_id).is_absolute() or repo_id.count("/") > 1:
        return None
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover
        return None
    try:
        # the environment is read here, not when huggingface_hub was imported
        found = try_to_load_from_cache(repo_id, filename, cache_dir=os.environ.get("HF_HUB_CACHE") or None)
    except Exception:  # an id the hub library rejects: not a hub name
        return None
    return Path(found) if isinstance(found, str) else None


def hub_cache_dir(repo_id: str) -> Path | None:
    """The snapshot directory of ``repo_id`` in the local Hugging Face cache, if it holds tokenizer files."""
    for name in ("tokenizer.json", "vocab.json"):
        found = hub_cached_file(repo_id, name)
        if found is not None and find_vocab_files(found.parent) is not None:
            return found.parent
    return None


def tiktoken_r50k_ranks() -> dict[bytes, int] | None:
    """GPT-2's ranks from tiktoken's cache, else tiktoken's download (if the network may be used)."""
    from tiktoken.load import load_tiktoken_bpe

    if _offline():
        # tiktoken's cache: $TIKTOKEN_CACHE_DIR, $DATA_GYM_CACHE_DIR or <tmp>/data-gym-cache,
        # a file named by the SHA-1 of the URL. Read it without letting tiktoken reach the network.
        import hashlib
        import tempfile

        default_dir = os.path.join(tempfile.gettempdir(), "data-gym-cache")
        cache_dir = os.environ.get("TIKTOKEN_CACHE_DIR") or os.environ.get("DATA_GYM_CACHE_DIR") or default_dir
        cached = Path(cache_dir) / hashlib.sha1(R50K_URL.encode()).hexdigest()
        if not cached.is_file() or hashlib.sha256(cached.read_bytes()).hexdigest() != GPT2_VOCAB_SHA256:
            return None
        return read_tiktoken_ranks(cached)
    try:
        return load_tiktoken_bpe(R50K_URL, expected_hash=GPT2_VOCAB_SHA256)
    except Exception:  # no network, a proxy, a bad download: all mean "not available here"
        return None

