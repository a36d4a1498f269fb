"""The tokenizer: GPT-2's ids on every kind of text, both backends, tiktoken's behaviour, the CLI. (The file formats
and finding GPT-2's vocabulary: test_vocab_files.py; learning merges: test_bpe_train.py; their shared fixtures are here.)

The reference is tiktoken's r50k_base (GPT-2's vocabulary) built straight from the same ranks file
(``gpt2_vocab_path``, fetched offline by ``tests/assets.py``) with GPT-2's pattern.
"""

from __future__ import annotations

import re
import sysconfig
from pathlib import Path

import pytest
import tiktoken
import tiktoken.load
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpt2lab import Tokenizer, TokenizerError
from gpt2lab.bpe import GPT2_PATTERN, Pretokenizer, PythonBPE
from gpt2lab.bpe_train import learn_bpe
from gpt2lab.cli import main

BACKENDS = ["tiktoken", "python"]
EOT = "<|endoftext|>"
HYPOTHESIS = settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# ---------------------------------------------------------------------------------------------
# fixtures
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def reference(gpt2_vocab_path) -> tiktoken.Encoding:
    """tiktoken's GPT-2 encoding (r50k_base's ranks, named "gpt2" as tiktoken names it), built from the file rather than downloaded."""
    ranks = tiktoken.load.load_tiktoken_bpe(str(gpt2_vocab_path))
    return tiktoken.Encoding("gpt2", pat_str=GPT2_PATTERN, mergeable_ranks=ranks, special_tokens={EOT: 50256})


@pytest.fixture(scope="session")
def gpt2(gpt2_vocab_path) -> dict[str, Tokenizer]:
    fast = Tokenizer.from_file(gpt2_vocab_path)
    return {"tiktoken": fast, "python": fast.with_backend("python")}


@pytest.fixture(scope="session")
def gpt2_hf_dir(gpt2, tmp_path_factory) -> Path:
    """GPT-2's vocabulary written by ``save`` in Hugging Face's format."""
    path = tmp_path_factory.mktemp("gpt2_hf")
    gpt2["tiktoken"].save(path)
    return path


def stdlib_text(names: tuple[str, ...] = ("argparse.py", "textwrap.py", "json/decoder.py")) -> str:
    lib = Path(sysconfig.get_paths()["stdlib"])
    return "".join((lib / n).read_text(encoding="utf-8") for n in names)


@pytest.fixture(scope="session")
def corpus() -> str:
    """~150 KB of English prose and code, the same on every machine with this Python."""
    return stdlib_text()


@pytest.fixture(scope="session")
def trained(corpus) -> Tokenizer:
    return Tokenizer.train(corpus, 256 + 500 + 1, progress=False)


# ---------------------------------------------------------------------------------------------
# identical ids, many kinds of text
# ---------------------------------------------------------------------------------------------

TEXTS = {
    "empty": "",
    "prose": "The quick brown fox jumps over the lazy dog. It was the best of times, it was the worst of times.",
    "code": 'def f(x: int) -> list[int]:\n    """Doc."""\n    return [i ** 2 for i in range(x) if i % 3 == 0]  # squares\n',
    "whitespace runs": "a  b   c    d\t\te\n\n\nf \n \n g\r\n\r\nh\x0b\x0ci",
    "trailing whitespace": "trailing spaces   \ntrailing newline\n\n\n   ",
    "leading whitespace": "   \n\t leading",
    "contractions": "I'm you're he's we've they'll I'd don't I'M YOU'RE HE'S WE'VE THEY'LL I'D DON'T We'Ve 'S 's 'tis rock'n'roll",
    "contractions alone": "'s't're've'm'll'd ' '' '''",
    "digits": "0 1 12 123 1234 12345 3.14159 1,000,000 2026-11-22 0x1F 1e-9 ٠١٢٣ १२३ ½ ² Ⅻ",
    "punctuation": "!!! ??? ... --- ''' \"\"\" ((( ))) {{{ }}} <<< >>> ~~~ @#$%^&*",
    "emoji": "👍 👍🏽 👨‍👩‍👧‍👦 🏳️‍🌈 🇫🇷🇩🇪 ❤️ 🤷‍♂️ 😀😃😄",
    "combining marks": "e\u0301 cafe\u0301 n\u0303 Z\u0351\u0337\u0353a\u0308\u0324l\u0316g\u0342o \u0301lonely",
    "CJK": "日本語のテキストと中文文本和한국어 텍스트",
    "Arabic": "مرحبا بالعالم، كيف حالك؟ السَّلَامُ عَلَيْكُمْ",
    "Devanagari": "नमस्ते दुनिया, यह हिंदी का वाक्य है। क्षत्रिय",
    "Cyrillic and Greek": "Привет, мир! Γειά σου Κόσμε ΑΒΓ",
    "zero-width": "zero\u200bwidth\u200cnon\u200djoiner\ufeffbom\u2060wj",
    "non-breaking spaces": "a\u00a0b \u00a0c\u202fd\u2009e\u3000f\u2007g\u1680h\u00a0\u00a0",
    "line separators": "a\u2028b\u2029c\x85d\x1ce\x1df",
    "special token text": f"before {EOT} after <|endoftext <|endoftext|>|> <|fim_prefix|>",
    "control characters": "\x00\x01\x02\x7f\x1b[31mred\x1b[0m",
    "long space run": " " * 5000 + "x",
    "long letter run": "a" * 20000,
    "long digit run": "7" * 20000,
    "long newline run": "\n" * 10000,
    "long punctuation run": "!" * 10000,
    "long accent run": "é" * 10000,
    "long nbsp run": "\u00a0" * 5000,
    "long emoji run": "😀" * 3000,
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", list(TEXTS))
def test_ids_identical_to_tiktoken(gpt2, reference, backend, name):
    text = TEXTS[name]
    tok = gpt2[backend]
    expected = reference.encode_ordinary(text)
    assert tok.encode_ordinary(text) == expected
    assert tok.encode(text, disallowed_special=()) == reference.encode(text, disallowed_special=())
    assert tok.encode(text, allowed_special="all") == reference.encode(text, allowed_special="all")
    assert tok.decode(expected) == text


@pytest.mark.parametrize("backend", BACKENDS)
def test_known_ids(gpt2, backend):
    tok = gpt2[backend]
    assert tok.encode("Hello world") == [15496, 995]
    assert tok.encode(EOT, allowed_special="all") == [50256]
    assert tok.n_vocab == 50257 and tok.eot_token == 50256 and tok.max_token_value == 50256
    assert tok.special_tokens_set == {EOT}
    assert tok.decode_single_token_bytes(995) == b" world"
    assert tok.decode_tokens_bytes([15496, 995]) == [b"Hello", b" world"]
    assert tok.encode_single_token(" world") == 995 and tok.encode_single_token(EOT) == 50256
    assert f"backend={backend!r}" in repr(tok)


def test_pickles(gpt2, trained):
    import pickle

    for tok in [*gpt2.values(), trained]:
        copy = pickle.loads(pickle.dumps(tok))
        assert (copy.backend, copy.special_tokens, copy.mergeable_ranks) == (tok.backend, tok.special_tokens, tok.mergeable_ranks)
        assert copy.encode(TEXTS["prose"]) == tok.encode(TEXTS["prose"])


def test_every_code_point(gpt2, reference):
    """The pre-tokenisation regex classifies every character as tiktoken's Rust regex does:
    each code point next to a letter, a space, a digit and an apostrophe."""
    # every code point of the planes that hold assigned characters (0-3, 14), a sample of the rest
    codes = [*range(0xD800), *range(0xE000, 0x40000), *range(0xE0000, 0xE1000), *range(0x40000, 0x110000, 97)]
    chars = [chr(c) for c in codes]
    for chunk in range(0, len(chars), 1 << 16):
        text = "".join(f"{c}a {c}{c}1'{c}\n" for c in chars[chunk : chunk + (1 << 16)])
        assert gpt2["python"].encode_ordinary(text) == reference.encode_ordinary(text), f"block at U+{chunk:04X}"


@pytest.mark.parametrize("unicode_class", [r"\p{L}", r"\p{N}", r"\s", r"\p{Cn}"])
def test_character_classes_as_tiktoken(unicode_class):
    """Each class of GPT-2's pattern holds the same characters for the python backend as for tiktoken,
    though ``regex`` carries a newer Unicode than tiktoken's Rust engine (ids alone can hide a
    difference: a piece cut in two often merges to the same ids)."""
    every_character = "".join(chr(c) for c in range(0x110000) if not 0xD800 <= c < 0xE000)
    byte_ranks = {bytes([b]): b for b in range(256)}  # no merges: the ids are the bytes the class matched
    theirs = tiktoken.Encoding(name="class", pat_str=unicode_class, mergeable_ranks=byte_ranks, special_tokens={})
    expected = bytes(theirs.encode_ordinary(every_character)).decode("utf-8")
    ours = "".join(Pretokenizer(unicode_class).findall(every_character))
    assert len(ours) == len(expected) and ours == expected


@pytest.mark.parametrize("backend", BACKENDS)
def test_characters_newer_than_tiktoken(gpt2, reference, backend):
    """U+3F076 is unassigned in tiktoken's Unicode, a letter to ``regex`` 2026.9+: with 技 after it,
    one piece or two give different ids. (Found by hypothesis.)"""
    for text in ["\U0003f076技", "a\U0003f076技 \U0003f076\U0003f076 1\U0003f0762"]:
        assert gpt2[backend].encode(text) == reference.encode(text)


def test_lone_surrogates_as_tiktoken(gpt2, reference):
    text = "a\ud800b \udfff"
    for tok in gpt2.values():
        assert tok.encode(text) == reference.encode(text)
        assert tok.decode(tok.encode(text)) == "a\ufffdb \ufffd"


# a small alphabet that hits the pattern's corners far more often than random Unicode does
TRICKY = st.lists(
    st.sampled_from(list(" \t\n\r\x0b\u00a0\u2009\u3000\u200b'sStTdDmMlLvVrReE019٣.,!?-_ aZé\u0301😀\u200d日ب") + [EOT, "'ll", "'re"]),
    max_size=40,
).map("".join)


@pytest.mark.parametrize("backend", BACKENDS)
@HYPOTHESIS
@given(text=st.text())
def test_round_trip_and_ids_any_text(gpt2, reference, backend, text):
    ids = gpt2[backend].encode(text, disallowed_special=())
    assert gpt2[backend].decode(ids) == text
    assert ids == reference.encode(text, disallowed_special=())


@pytest.mark.parametrize("backend", BACKENDS)
@HYPOTHESIS
@given(text=TRICKY)
def test_round_trip_and_ids_tricky_text(gpt2, reference, backend, text):
    tok = gpt2[backend]
    assert tok.decode(tok.encode(text, disallowed_special=())) == text
    assert tok.encode_ordinary(text) == reference.encode_ordinary(text)
    assert tok.encode(text, allowed_special="all") == reference.encode(text, allowed_special="all")


# ---------------------------------------------------------------------------------------------
# the tiktoken.Encoding API, call for call: same results, same exception types
# ---------------------------------------------------------------------------------------------

NOPE = "<|nope|>"  # looks like a special token, is not one of GPT-2's
HI = [15496, 995]  # "Hello world"
JAPANESE = "日本語 héllo wörld 👍🏽"
CUT = [33768]  # the first two of 日's three bytes: not valid UTF-8 on its own


def outcome(call, enc):
    """("value", result) or ("raises", exception) of ``call(enc)``."""
    try:
        return "value", call(enc)
    except Exception as err:  # the exception is the result under test
        return "raises", err


# One row per call: the same lambda runs on tiktoken.Encoding and on our Tokenizer.
SAME_AS_TIKTOKEN = {
    # encode and the special-token rules
    "encode": lambda e: e.encode("Hello world"),
    "encode empty": lambda e: e.encode(""),
    "encode special text refused by default": lambda e: e.encode(f"a{EOT}b"),
    "encode allowed_special='all'": lambda e: e.encode(f"a{EOT}b", allowed_special="all"),
    "encode allowed_special=set": lambda e: e.encode(f"a{EOT}b", allowed_special={EOT}),
    "encode allowed_special=special_tokens_set": lambda e: e.encode(f"a{EOT}b", allowed_special=e.special_tokens_set),
    "encode allowed_special=frozenset": lambda e: e.encode(f"a{EOT}b", allowed_special=frozenset({EOT})),
    "encode allowed_special=unknown name is ignored": lambda e: e.encode(f"a{NOPE}b", allowed_special={NOPE}),
    "encode allowed_special=unknown name, special text": lambda e: e.encode(f"a{EOT}b", allowed_special={NOPE}),
    "encode disallowed_special=()": lambda e: e.encode(f"a{EOT}b", disallowed_special=()),
    "encode disallowed_special=set()": lambda e: e.encode(f"a{EOT}b", disallowed_special=set()),
    "encode disallowed_special=frozenset()": lambda e: e.encode(f"a{EOT}b", disallowed_special=frozenset()),
    "encode disallowed beats allowed": lambda e: e.encode(f"a{EOT}b", allowed_special="all", disallowed_special={EOT}),
    "encode disallowed_special=unknown name found": lambda e: e.encode(f"a{NOPE}b", disallowed_special={NOPE}),
    "encode disallowed_special=unknown name absent": lambda e: e.encode("a b", disallowed_special={NOPE}),
    "encode allowed 'all', disallowed 'all'": lambda e: e.encode(f"{EOT}{EOT}", allowed_special="all", disallowed_special="all"),
    "encode lone surrogates": lambda e: e.encode("a\ud800b \udfff"),
    "encode lone surrogates, special allowed": lambda e: e.encode(f"a\ud800{EOT}", allowed_special="all"),
    "encode bytes": lambda e: e.encode(b"bytes"),
    "encode None": lambda e: e.encode(None),
    "encode_ordinary": lambda e: e.encode_ordinary(f"{JAPANESE}{EOT}"),
    "encode_ordinary lone surrogate": lambda e: e.encode_ordinary("\udc80x"),
    "encode_ordinary None": lambda e: e.encode_ordinary(None),
    "encode_to_numpy": lambda e: (lambda a: (a.tolist(), str(a.dtype)))(e.encode_to_numpy(f"{JAPANESE}{EOT}", allowed_special="all")),
    "encode_to_numpy refuses special text": lambda e: e.encode_to_numpy(EOT),
    "encode_to_numpy lone surrogate": lambda e: e.encode_to_numpy("a\ud800"),
    "encode_with_unstable lone surrogate": lambda e: e.encode_with_unstable("a\ud800"),
    # batches
    "encode_batch": lambda e: e.encode_batch(["Hello world", JAPANESE, ""]),
    "encode_batch allowed 'all'": lambda e: e.encode_batch([f"a{EOT}", "b"], allowed_special="all", num_threads=1),
    "encode_batch refuses special text": lambda e: e.encode_batch(["fine", f"a{EOT}"]),
    "encode_batch disallowed_special=()": lambda e: e.encode_batch([f"a{EOT}"], disallowed_special=()),
    "encode_ordinary_batch": lambda e: e.encode_ordinary_batch(["Hello world", f"a{EOT}", JAPANESE], num_threads=2),
    # completions
    "encode_with_unstable": lambda e: e.encode_with_unstable("hello fanta"),
    "encode_with_unstable space": lambda e: e.encode_with_unstable("hello "),
    "encode_with_unstable newlines": lambda e: e.encode_with_unstable("one\n\n"),
    "encode_with_unstable inside a character": lambda e: e.encode_with_unstable("x 日"),
    "encode_with_unstable digits": lambda e: e.encode_with_unstable("in 2026"),
    "encode_with_unstable ends in special": lambda e: e.encode_with_unstable(f"a{EOT}", allowed_special="all"),
    "encode_with_unstable empty": lambda e: e.encode_with_unstable(""),
    "encode_with_unstable refuses special text": lambda e: e.encode_with_unstable(f"a{EOT}"),
    # single tokens
    "encode_single_token str": lambda e: e.encode_single_token(" world"),
    "encode_single_token bytes": lambda e: e.encode_single_token(b" world"),
    "encode_single_token special str": lambda e: e.encode_single_token(EOT),
    "encode_single_token special bytes": lambda e: e.encode_single_token(EOT.encode()),
    "encode_single_token two tokens": lambda e: e.encode_single_token("hello world"),
    "encode_single_token invalid UTF-8": lambda e: e.encode_single_token(b"\xff\xfe"),
    "encode_single_token byte": lambda e: e.encode_single_token(b"\xff"),
    "encode_single_token int": lambda e: e.encode_single_token(5),
    "encode_single_token bytearray": lambda e: e.encode_single_token(bytearray(b"a")),
    "encode_single_token unknown special": lambda e: e.encode_single_token(NOPE),
    "encode_single_token lone surrogate": lambda e: e.encode_single_token("\ud800"),
    # decoding
    "decode": lambda e: e.decode(HI),
    "decode tuple": lambda e: e.decode(tuple(HI)),
    "decode special": lambda e: e.decode([64, 50256]),
    "decode empty": lambda e: e.decode([]),
    "decode cut character": lambda e: e.decode(CUT),
    "decode errors='strict'": lambda e: e.decode(CUT, errors="strict"),
    "decode errors='ignore'": lambda e: e.decode(CUT, errors="ignore"),
    "decode errors='backslashreplace'": lambda e: e.decode(CUT, errors="backslashreplace"),
    "decode errors=unknown handler": lambda e: e.decode(CUT, errors="bogus"),
    "decode errors positional": lambda e: e.decode(CUT, "ignore"),
    "decode id past the vocabulary": lambda e: e.decode([15496, 50257]),
    "decode largest 32-bit id": lambda e: e.decode([2**32 - 1]),
    "decode 33-bit id": lambda e: e.decode([2**32]),
    "decode negative id": lambda e: e.decode([15496, -1]),
    "decode huge id": lambda e: e.decode([10**20]),
    "decode str id": lambda e: e.decode(["a"]),
    "decode float id": lambda e: e.decode([1.5]),
    "decode integral float id": lambda e: e.decode([1.0]),
    "decode None id": lambda e: e.decode([None]),
    "decode bool id": lambda e: e.decode([True]),
    "decode_bytes": lambda e: e.decode_bytes([*HI, *CUT, 50256]),
    "decode_bytes bad id": lambda e: e.decode_bytes([50257]),
    "decode_bytes negative id": lambda e: e.decode_bytes([-5]),
    "decode_single_token_bytes": lambda e: e.decode_single_token_bytes(995),
    "decode_single_token_bytes special": lambda e: e.decode_single_token_bytes(50256),
    "decode_single_token_bytes past the vocabulary": lambda e: e.decode_single_token_bytes(50257),
    "decode_single_token_bytes negative": lambda e: e.decode_single_token_bytes(-1),
    "decode_single_token_bytes str": lambda e: e.decode_single_token_bytes("995"),
    "decode_single_token_bytes float": lambda e: e.decode_single_token_bytes(995.0),
    "decode_tokens_bytes": lambda e: e.decode_tokens_bytes([*HI, *CUT, 50256]),
    "decode_tokens_bytes bad id": lambda e: e.decode_tokens_bytes([1, 50257]),
    "decode_with_offsets": lambda e: e.decode_with_offsets(e.encode_ordinary(JAPANESE)),
    "decode_with_offsets special": lambda e: e.decode_with_offsets([64, 50256, 65]),
    "decode_with_offsets empty": lambda e: e.decode_with_offsets([]),
    "decode_with_offsets cut character": lambda e: e.decode_with_offsets(CUT),
    "decode_with_offsets bad id": lambda e: e.decode_with_offsets([50257]),
    "decode_batch": lambda e: e.decode_batch([HI, CUT, []]),
    "decode_batch errors='strict'": lambda e: e.decode_batch([HI, CUT], errors="strict", num_threads=1),
    "decode_batch bad id": lambda e: e.decode_batch([HI, [50257]]),
    "decode_bytes_batch": lambda e: e.decode_bytes_batch([HI, CUT, [50256]], num_threads=2),
    "decode_bytes_batch bad id": lambda e: e.decode_bytes_batch([[-1]]),
    # the vocabulary
    "token_byte_values": lambda e: e.token_byte_values(),
    "is_special_token special": lambda e: e.is_special_token(50256),
    "is_special_token merged": lambda e: e.is_special_token(995),
    "is_special_token past the vocabulary": lambda e: e.is_special_token(10**6),
    "n_vocab": lambda e: e.n_vocab,
    "max_token_value": lambda e: e.max_token_value,
    "eot_token": lambda e: e.eot_token,
    "special_tokens_set": lambda e: e.special_tokens_set,
    "name": lambda e: e.name,
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("row", list(SAME_AS_TIKTOKEN))
def test_same_as_tiktoken(gpt2, reference, backend, row):
    """Each row makes one call on tiktoken.Encoding and on our Tokenizer: the same value, or an
    exception of the type tiktoken raises (ours may be a subclass that also is a TokenizerError)."""
    call = SAME_AS_TIKTOKEN[row]
    theirs, ours = outcome(call, reference), outcome(call, gpt2[backend])
    if row.startswith("encode_with_unstable") and theirs[0] == ours[0] == "value":
        # the possible continuations are a set (tiktoken lists them in hash order)
        theirs = ("value", (theirs[1][0], sorted(theirs[1][1])))
        ours = ("value", (ours[1][0], sorted(ours[1][1])))
    assert ours[0] == theirs[0], f"tiktoken gives {theirs!r}, we give {ours!r}"
    if theirs[0] == "raises":
        assert isinstance(ours[1], type(theirs[1])), f"tiktoken raises {theirs[1]!r}, we raise {ours[1]!r}"
        if isinstance(ours[1], TokenizerError):
            assert "\n" not in str(ours[1]) and str(ours[1]) == ours[1].args[0]  # one line for the CLI, no KeyError quotes
    else:
        assert ours[1] == theirs[1]


def test_same_methods_and_signatures_as_tiktoken(gpt2):
    """Every public name of tiktoken.Encoding exists on Tokenizer, methods with the same parameters
    (names, kinds, defaults), so keyword calls written for tiktoken work unchanged."""
    import inspect

    public = [name for name in vars(tiktoken.Encoding) if not name.startswith("_")]
    assert len(public) >= 15  # the methods and properties; name and max_token_value are instance attributes (rows above)
    for name in public:
        assert hasattr(gpt2["python"], name), name
        theirs = getattr(tiktoken.Encoding, name)
        if inspect.isfunction(theirs):
            params = [(p.name, p.kind, p.default) for p in inspect.signature(theirs).parameters.values()]
            assert [(p.name, p.kind, p.default) for p in inspect.signature(getattr(Tokenizer, name)).parameters.values()] == params, name


@pytest.mark.parametrize("backend", BACKENDS)
def test_vocabulary_without_endoftext_as_tiktoken(backend):
    ranks = {bytes([b]): b for b in range(256)}
    ours, theirs = Tokenizer(ranks, backend=backend), tiktoken.Encoding("bytes", pat_str=GPT2_PATTERN, mergeable_ranks=ranks, special_tokens={})
    for tok in (ours, theirs):
        with pytest.raises(KeyError):
            _ = tok.eot_token
        with pytest.raises(ValueError):
            tok.encode(EOT, disallowed_special={EOT})
    with pytest.raises(TokenizerError, match=re.escape(f"no {EOT} token")):
        _ = ours.eot_token
    assert ours.encode(EOT, allowed_special="all") == theirs.encode(EOT, allowed_special="all")
    assert (ours.n_vocab, ours.max_token_value, ours.special_tokens_set) == (theirs.n_vocab, theirs.max_token_value, theirs.special_tokens_set)


@HYPOTHESIS
@given(text=TRICKY)
def test_encode_with_unstable_reference_as_tiktoken(gpt2, reference, text):
    """The Python reference's completions equal tiktoken's on the pattern's corner cases."""
    stable, completions = gpt2["python"].encode_with_unstable(text, disallowed_special=())
    expected_stable, expected = reference.encode_with_unstable(text, disallowed_special=())
    assert (stable, completions) == (expected_stable, sorted(expected))


def test_python_bpe_stands_alone(gpt2):
    """The reference in gpt2lab.bpe is usable without Tokenizer, as tiktoken's core is."""
    core = PythonBPE(gpt2["python"].mergeable_ranks, GPT2_PATTERN, {EOT: 50256})
    assert core.encode_ordinary(f"Hello world{EOT}") == gpt2["tiktoken"].encode_ordinary(f"Hello world{EOT}")
    assert core.encode(f"Hello world{EOT}", {EOT}) == [15496, 995, 50256]


def test_public_names_still_import_from_tokenizer():
    """Cutting tokenizer.py into bpe / bpe_train / vocab_files kept its public import paths."""
    import gpt2lab.tokenizer as tokenizer

    for name in tokenizer.__all__:
        assert getattr(tokenizer, name) is not None, name
    assert tokenizer.learn_bpe is learn_bpe and tokenizer.GPT2_PATTERN == GPT2_PATTERN


# ---------------------------------------------------------------------------------------------
# special tokens
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_special_tokens_as_tiktoken(gpt2, reference, backend):
    tok = gpt2[backend]
    text = f"one{EOT}two"
    # by default the text of a special token is refused, as tiktoken does (a ValueError)
    with pytest.raises(ValueError):
        reference.encode(text)
    with pytest.raises(TokenizerError, match="allowed_special"):
        tok.encode(text)
    assert tok.encode(text, allowed_special="all") == reference.encode(text, allowed_special="all") == [505, 50256, 11545]
    assert tok.encode(text, allowed_special={EOT}) == [505, 50256, 11545]
    assert tok.encode(text, disallowed_special=()) == reference.encode(text, disallowed_special=())
    assert tok.encode_ordinary(text) == reference.encode_ordinary(text)
    assert 50256 not in tok.encode_ordinary(text)


@pytest.mark.parametrize("backend", BACKENDS)
def test_encode_batch(gpt2, backend):
    tok = gpt2[backend]
    texts = [TEXTS[k] for k in ("prose", "code", "CJK", "empty", "emoji")] + [f"a{EOT}b"]
    assert tok.encode_batch(texts, allowed_special="all") == [tok.encode(t, allowed_special="all") for t in texts]
    assert tok.encode_ordinary_batch(texts, num_threads=2) == [tok.encode_ordinary(t) for t in texts]
    with pytest.raises(TokenizerError):
        tok.encode_batch(texts)


# ---------------------------------------------------------------------------------------------
# decoding arbitrary ids
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_decode_invalid_utf8(gpt2, backend):
    tok = gpt2[backend]
    ids = tok.encode("日")  # three bytes, more than one token
    assert len(ids) > 1
    assert tok.decode(ids[:1]) == "\ufffd"
    with pytest.raises(UnicodeDecodeError):
        tok.decode(ids[:1], errors="strict")
    assert tok.decode(ids[:1], errors="ignore") == ""
    assert tok.decode_bytes(ids[:1]) == "日".encode()[: len(tok.decode_single_token_bytes(ids[0]))]


@pytest.mark.parametrize("backend", BACKENDS)
@HYPOTHESIS
@given(ids=st.lists(st.integers(0, 50256), max_size=40))
def test_decode_arbitrary_ids(gpt2, reference, backend, ids):
    assert gpt2[backend].decode(ids) == reference.decode(ids)
    assert gpt2[backend].decode_bytes(ids) == reference.decode_bytes(ids)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("bad", [50257, -1, 10**20, "a", 1.5])
def test_unknown_ids_raise_clearly(gpt2, backend, bad):
    tok = gpt2[backend]
    with pytest.raises(TokenizerError, match="not in this vocabulary"):
        tok.decode([15496, bad])
    with pytest.raises(TokenizerError, match="not in this vocabulary"):
        tok.decode_single_token_bytes(bad)


def test_decode_accepts_arrays(gpt2):
    import numpy as np
    import torch

    ids = gpt2["tiktoken"].encode("Hello world")
    for tok in gpt2.values():
        assert tok.decode(np.array(ids)) == "Hello world"
        assert tok.decode(torch.tensor(ids)) == "Hello world"


# ---------------------------------------------------------------------------------------------
# the command line
# ---------------------------------------------------------------------------------------------


def test_cli_encode_decode(gpt2_vocab_path, capsys):
    vocab = ["--tokenizer", str(gpt2_vocab_path)]
    assert main(["tokenizer", "encode", "Hello world!", *vocab]) == 0
    out = capsys.readouterr().out
    assert "Hello|␣world|!" in out and "b' world'" in out and "ids: 15496 995 0" in out
    assert main(["tokenizer", "encode", "--ids", "--special", f"a{EOT}", *vocab]) == 0
    assert capsys.readouterr().out.split() == ["64", "50256"]
    assert main(["tokenizer", "encode", "--ids", "--text", "Hello world!", *vocab]) == 0  # --text, as lens, trace and attention take it
    assert capsys.readouterr().out.split() == ["15496", "995", "0"]
    assert main(["tokenizer", "decode", "--text", "15496,", "995", *vocab]) == 0
    assert capsys.readouterr().out == "Hello world\n"
    assert main(["tokenizer", "decode", "[15496, 10545]", *vocab, "--backend", "python"]) == 0
    out = capsys.readouterr().out
    assert "part of a character" in out and "'Hello \ufffd'" in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["tokenizer", "decode", "50257"], "not in this vocabulary"),
        (["tokenizer", "decode", "1", "two"], "must be integers"),
        (["tokenizer", "encode", "a", "--text", "b"], "give the text once"),
        (["tokenizer", "encode", "x", "--tokenizer", "/nonexistent/vocab"], "no tokenizer vocabulary"),
        (["tokenizer", "train", "/nonexistent.txt", "--vocab-size", "300", "--out", "x"], "no such file"),
    ],
)
def test_cli_mistakes(gpt2_vocab_path, monkeypatch, capsys, argv, message):
    monkeypatch.setenv("GPT2LAB_VOCAB", str(gpt2_vocab_path))
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_cli_train(tmp_path, corpus, capsys):
    text = tmp_path / "corpus.txt"
    text.write_text(corpus[:30000], encoding="utf-8")
    out = tmp_path / "vocab"
    assert main(["tokenizer", "train", str(text), "--vocab-size", "400", "--out", str(out)]) == 0
    assert "learned 143 merges" in capsys.readouterr().out
    assert {p.name for p in out.iterdir()} >= {"vocab.json", "merges.txt", "tokenizer.tiktoken", "tokenizer_config.json"}
    assert main(["tokenizer", "encode", "--ids", "def __init__(self):", "--tokenizer", str(out)]) == 0
    ids = [int(i) for i in capsys.readouterr().out.split()]
    assert Tokenizer.from_file(out).decode(ids) == "def __init__(self):"
    assert main(["tokenizer", "train", str(text), "--vocab-size", "10", "--out", str(out)]) == 2
    assert "too small" in capsys.readouterr().err
