"""bpe_train.py: learning merges from text, the fast incremental way checked against the slow obvious one, and a
trained vocabulary that round-trips, saves in every format and loads in transformers."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gpt2lab import Tokenizer, TokenizerError
from gpt2lab.bpe import GPT2_PATTERN
from gpt2lab.bpe_train import count_pieces, learn_bpe
from gpt2lab.vocab_files import read_tiktoken_ranks
from test_tokenizer import EOT, HYPOTHESIS, TEXTS, TRICKY, corpus, stdlib_text, trained  # noqa: F401 (corpus, trained: fixtures)

# ---------------------------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------------------------


def naive_bpe(pieces: Counter, n_merges: int) -> list[tuple[bytes, bytes]]:
    """Training the slow, obvious way: recount every pair of the whole corpus before each merge."""
    words = {tuple(bytes([b]) for b in piece): count for piece, count in pieces.items()}
    merges = []
    ids = {bytes([b]): b for b in range(256)}
    for _ in range(n_merges):
        stats: Counter = Counter()
        for word, count in words.items():
            for pair in zip(word, word[1:]):
                stats[pair] += count
        if not stats:
            break
        best = max(stats.items(), key=lambda kv: (kv[1], -ids[kv[0][0]], -ids[kv[0][1]]))[0]
        merges.append(best)
        ids[best[0] + best[1]] = len(ids)
        new_words: Counter = Counter()
        for word, count in words.items():
            out, i = [], 0
            while i < len(word):
                if i + 1 < len(word) and (word[i], word[i + 1]) == best:
                    out.append(word[i] + word[i + 1])
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            new_words[tuple(out)] += count
        words = new_words
    return merges


def test_incremental_training_matches_naive():
    text = stdlib_text(("textwrap.py",)) + " aaaa aaaaa abab ababab " * 5
    pieces = count_pieces([text], GPT2_PATTERN)
    ranks, merges = learn_bpe(pieces, 120, progress=False)
    assert merges == naive_bpe(pieces, 120)
    assert [ranks[a + b] for a, b in merges] == list(range(256, 256 + len(merges)))


def test_trained_vocabulary(trained, corpus):
    assert len(trained.merges) == 500 and trained.n_vocab == 757 and trained.eot_token == 756
    ids = trained.encode(corpus, allowed_special="all")
    assert trained.decode(ids) == corpus
    assert len(ids) < len(corpus.encode()) / 2  # it compresses the text it was trained on
    py = trained.with_backend("python")
    for text in [corpus, *TEXTS.values()]:
        assert py.encode(text, disallowed_special=()) == trained.encode(text, disallowed_special=())


@HYPOTHESIS
@given(text=st.one_of(st.text(), TRICKY))
def test_trained_round_trip_both_backends(trained, text):
    ids = trained.encode(text, disallowed_special=())
    assert trained.decode(ids) == text
    assert trained.with_backend("python").encode(text, disallowed_special=()) == ids


def test_training_is_deterministic(corpus, trained):
    half = len(corpus) // 2
    again = Tokenizer.train([corpus[half:], corpus[:half]], 256 + 500 + 1, progress=False)
    assert again.mergeable_ranks == trained.mergeable_ranks and again.merges == trained.merges


def test_training_special_tokens_and_files(tmp_path, corpus):
    path = tmp_path / "corpus.txt"
    path.write_text(("<|pad|>" + corpus[:20000]) * 3, encoding="utf-8")
    tok = Tokenizer.train([path], 300, special_tokens=[EOT, "<|pad|>"], progress=False)
    assert tok.special_tokens == {EOT: 298, "<|pad|>": 299} and tok.n_vocab == 300
    assert not any(b"<|" in t for t in tok.mergeable_ranks)  # no merge learned across a special token
    assert tok.encode("<|pad|>hi", allowed_special="all")[0] == 299


def test_training_errors(tmp_path):
    with pytest.raises(TokenizerError, match="too small"):
        Tokenizer.train("text", 200)
    with pytest.raises(TokenizerError, match="no training file"):
        Tokenizer.train([tmp_path / "missing.txt"], 300)
    with pytest.raises(TokenizerError, match="str"):
        Tokenizer.train([b"bytes"], 300)


def test_small_corpus_stops_early():
    tok = Tokenizer.train("ab ab ab", 1000, progress=False)
    assert [(a, b) for a, b in tok.merges] == [(b"a", b"b"), (b" ", b"ab")]
    assert tok.eot_token == 258 and tok.encode("ab ab") == [256, 257]


def test_trained_saves_and_loads_in_both_formats(trained, tmp_path, corpus):
    trained.save(tmp_path / "hf")
    trained.save(tmp_path / "hf" / "tokenizer.tiktoken")
    for path in (tmp_path / "hf", tmp_path / "hf" / "vocab.json", tmp_path / "hf" / "tokenizer.tiktoken"):
        loaded = Tokenizer.from_file(path)
        assert loaded.mergeable_ranks == trained.mergeable_ranks
        assert loaded.special_tokens == trained.special_tokens
        assert loaded.merges == trained.merges
    assert read_tiktoken_ranks(tmp_path / "hf" / "tokenizer.tiktoken") == trained.mergeable_ranks


def test_trained_loads_in_transformers(trained, tmp_path, corpus):
    from transformers import GPT2TokenizerFast

    trained.save(tmp_path)
    hf = GPT2TokenizerFast.from_pretrained(str(tmp_path))
    for text in [corpus, *TEXTS.values(), f"x{EOT}y"]:
        assert hf.encode(text) == trained.encode(text, allowed_special="all"), text[:40]
    assert hf.eos_token_id == trained.eot_token
    assert hf.decode(trained.encode(corpus[:2000])) == corpus[:2000]
