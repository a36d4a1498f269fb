"""vocab_files.py: the four vocabulary formats (Hugging Face's vocab.json + merges.txt and tokenizer.json, OpenAI's
encoder.json + vocab.bpe, tiktoken's ranks) read and written, transformers reading ours, and where GPT-2's vocabulary
is found (a path, GPT2LAB_VOCAB, the caches, tiktoken's download)."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest

from gpt2lab import Tokenizer, TokenizerError
from gpt2lab.bpe import GPT2_PATTERN
from gpt2lab.vocab_files import R50K_URL, bytes_to_unicode, token_to_str
from test_tokenizer import EOT, TEXTS, corpus, gpt2, gpt2_hf_dir, trained  # noqa: F401 (corpus, gpt2, gpt2_hf_dir, trained: fixtures)

# ---------------------------------------------------------------------------------------------
# file formats and finding GPT-2's vocabulary
# ---------------------------------------------------------------------------------------------


def test_byte_table():
    table = bytes_to_unicode()
    assert len(set(table.values())) == 256
    assert table[ord(" ")] == "Ġ" and table[ord("\n")] == "Ċ" and table[ord("a")] == "a"
    assert token_to_str(b" the") == "Ġthe"


def test_hf_format_round_trip(gpt2, gpt2_hf_dir):
    tok = gpt2["tiktoken"]
    vocab = json.loads((gpt2_hf_dir / "vocab.json").read_text(encoding="utf-8"))
    merges = (gpt2_hf_dir / "merges.txt").read_text(encoding="utf-8").splitlines()
    # the same files as OpenAI's / Hugging Face's GPT-2
    assert len(vocab) == 50257 and vocab["Ġthe"] == 262 and vocab["!"] == 0 and vocab[EOT] == 50256
    assert merges[0] == "#version: 0.2" and len(merges) == 50001
    assert merges[1:7] == ["Ġ t", "Ġ a", "h e", "i n", "r e", "o n"]
    for path in (gpt2_hf_dir, gpt2_hf_dir / "vocab.json", gpt2_hf_dir / "merges.txt"):
        loaded = Tokenizer.from_file(path)
        assert loaded.mergeable_ranks == tok.mergeable_ranks
        assert loaded.special_tokens == {EOT: 50256}


def test_openai_format(gpt2, gpt2_hf_dir, tmp_path):
    shutil.copy(gpt2_hf_dir / "vocab.json", tmp_path / "encoder.json")
    shutil.copy(gpt2_hf_dir / "merges.txt", tmp_path / "vocab.bpe")
    for path in (tmp_path, tmp_path / "encoder.json", tmp_path / "vocab.bpe"):
        loaded = Tokenizer.from_file(path, backend="python")
        assert loaded.mergeable_ranks == gpt2["tiktoken"].mergeable_ranks and loaded.eot_token == 50256


def test_tiktoken_format_round_trip(gpt2, gpt2_vocab_path, tmp_path):
    written = gpt2["tiktoken"].save(tmp_path / "copy.tiktoken")
    assert written[0].read_bytes() == gpt2_vocab_path.read_bytes()  # byte for byte the original file


def test_transformers_reads_our_hf_files(gpt2, gpt2_hf_dir, corpus, tmp_path):
    from transformers import AutoTokenizer, GPT2TokenizerFast

    hf = GPT2TokenizerFast.from_pretrained(str(gpt2_hf_dir))
    text = corpus[:50000] + "".join(TEXTS.values())
    assert hf.encode(text) == gpt2["tiktoken"].encode(text, allowed_special="all")
    assert hf.eos_token_id == 50256 and hf.convert_tokens_to_ids(EOT) == 50256
    assert AutoTokenizer.from_pretrained(str(gpt2_hf_dir)).encode("Hello world") == [15496, 995]
    # and a tokenizer.json written by transformers reads back into the same vocabulary
    hf.save_pretrained(str(tmp_path))
    assert (tmp_path / "tokenizer.json").is_file()
    for path in (tmp_path, tmp_path / "tokenizer.json"):
        loaded = Tokenizer.from_file(path)
        assert loaded.mergeable_ranks == gpt2["tiktoken"].mergeable_ranks
        assert loaded.special_tokens == {EOT: 50256} and loaded.pattern == GPT2_PATTERN


def test_from_file_errors(tmp_path, gpt2_hf_dir):
    with pytest.raises(TokenizerError, match="no tokenizer vocabulary"):
        Tokenizer.from_file(tmp_path / "missing")
    with pytest.raises(TokenizerError, match="no tokenizer files"):
        Tokenizer.from_file(tmp_path)
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    shutil.copy(gpt2_hf_dir / "vocab.json", lonely / "vocab.json")
    with pytest.raises(TokenizerError, match="partner"):
        Tokenizer.from_file(lonely / "vocab.json")
    bad = tmp_path / "bad.tiktoken"
    bad.write_text("not base64!! x\n")
    with pytest.raises(TokenizerError, match="bad.tiktoken:1"):
        Tokenizer.from_file(bad)
    few = tmp_path / "few.tiktoken"
    few.write_text("YQ== 0\nYg== 1\n")
    with pytest.raises(TokenizerError, match="256 single bytes"):
        Tokenizer.from_file(few)
    wordpiece = tmp_path / "wp" / "tokenizer.json"
    wordpiece.parent.mkdir()
    wordpiece.write_text(json.dumps({"model": {"type": "WordPiece", "vocab": {}}}))
    with pytest.raises(TokenizerError, match="not byte-level BPE"):
        Tokenizer.from_file(wordpiece)
    garbled = tmp_path / "garbled"
    garbled.mkdir()
    (garbled / "vocab.json").write_text("{not json")
    (garbled / "merges.txt").write_text("#version: 0.2\n")
    with pytest.raises(TokenizerError, match="could not read"):
        Tokenizer.from_file(garbled)
    with pytest.raises(TokenizerError, match="unknown tokenizer backend"):
        Tokenizer.from_file(gpt2_hf_dir, backend="rust")


@pytest.fixture
def no_vocab_anywhere(monkeypatch, tmp_path):
    """An environment where none of gpt2()'s places holds GPT-2's vocabulary and the network is off."""
    monkeypatch.delenv("GPT2LAB_VOCAB", raising=False)
    monkeypatch.setenv("GPT2LAB_OFFLINE", "1")
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "tiktoken-cache"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    return tmp_path


def test_gpt2_lookup_chain(no_vocab_anywhere, monkeypatch, gpt2_vocab_path, gpt2_hf_dir, tmp_path):
    with pytest.raises(TokenizerError, match="GPT2LAB_VOCAB") as err:
        Tokenizer.gpt2()
    assert "openai-whisper" in str(err.value) and "\n" not in str(err.value)
    # 1. an explicit path, a model directory holding tokenizer files included
    assert Tokenizer.gpt2(gpt2_vocab_path).n_vocab == 50257
    assert Tokenizer.gpt2(gpt2_hf_dir).n_vocab == 50257
    # 2. the environment
    monkeypatch.setenv("GPT2LAB_VOCAB", str(gpt2_vocab_path))
    assert Tokenizer.gpt2().encode("Hello world") == [15496, 995]
    monkeypatch.setenv("GPT2LAB_VOCAB", str(tmp_path / "nowhere.tiktoken"))
    with pytest.raises(TokenizerError, match="does not exist"):
        Tokenizer.gpt2()
    monkeypatch.delenv("GPT2LAB_VOCAB")
    # 3. the Hugging Face hub cache of "gpt2" (a snapshot, as huggingface_hub lays it out)
    repo = no_vocab_anywhere / "hf-cache" / "models--gpt2"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0123abcd")
    shutil.copytree(gpt2_hf_dir, repo / "snapshots" / "0123abcd")
    assert Tokenizer.gpt2().eot_token == 50256
    shutil.rmtree(repo)
    # 4. tiktoken's cache of r50k_base: a file named by the SHA-1 of the URL
    cache = no_vocab_anywhere / "tiktoken-cache"
    cache.mkdir()
    (cache / hashlib.sha1(R50K_URL.encode()).hexdigest()).write_bytes(gpt2_vocab_path.read_bytes())
    assert Tokenizer.gpt2(backend="python").encode("Hello world") == [15496, 995]


def test_from_pretrained(no_vocab_anywhere, monkeypatch, gpt2_vocab_path, trained, tmp_path):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")
    trained.save(model_dir)
    assert Tokenizer.from_pretrained(model_dir).mergeable_ranks == trained.mergeable_ranks  # its own files
    bare = tmp_path / "bare"
    bare.mkdir()
    with pytest.raises(TokenizerError, match="not found"):
        Tokenizer.from_pretrained(bare)
    monkeypatch.setenv("GPT2LAB_VOCAB", str(gpt2_vocab_path))
    assert Tokenizer.from_pretrained(bare).n_vocab == 50257  # no files: GPT-2's vocabulary
    assert Tokenizer.from_pretrained("gpt2").n_vocab == 50257


def test_from_pretrained_with_a_mistyped_path_is_an_error_not_a_fallback(tmp_path):
    with pytest.raises(TokenizerError, match="no such model directory"):
        Tokenizer.from_pretrained(str(tmp_path / "typo"))
    with pytest.raises(TokenizerError, match="no such model directory"):
        Tokenizer.from_pretrained("./typo")
