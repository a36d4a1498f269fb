"""prepare (files, folders, records, streaming, workers, no-op re-runs, errors); reading back and sampling: test_batches."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

import gpt2lab.data as data_mod
import gpt2lab.sources
from gpt2lab import hub
from gpt2lab.data import DataError, open_data, prepare, val_ranges
from gpt2lab.tokenizer import Tokenizer

CORPUS = "the cat sat on the mat. the dog ate the bone! 12 apples, 7 pears; déjà vu, naïve café — ünïcödé 😀\n" * 20


@pytest.fixture(scope="module")
def tok_path(tmp_path_factory):
    """A small trained BPE vocabulary saved in Hugging Face's format."""
    path = tmp_path_factory.mktemp("tok") / "tok"
    Tokenizer.train(CORPUS, 320, progress=False).save(path)
    return path


def read_ids(directory, split="train"):
    return open_data(directory).__dict__[split].tolist()


def test_folder_records_and_separators_round_trip(tmp_path, tok_path):
    tok = Tokenizer.from_file(tok_path)
    src = tmp_path / "in"
    (src / "sub" / ".hidden").mkdir(parents=True)
    (src / "a.txt").write_text("first document.\nline two")
    (src / "sub" / "b.md").write_text("# second\n\ndocument")
    (src / "sub" / ".hidden" / "c.txt").write_text("hidden: skipped")
    (src / "sub" / "ignored.bin").write_bytes(b"\x00\x01")
    (src / "sub" / "d.jsonl").write_text(json.dumps({"text": "record one"}) + "\n\n" + json.dumps({"text": "record <|endoftext|> two"}) + "\n")
    (src / "z.json").write_text(json.dumps([{"body": "x"}, "plain string record"]).replace('"body"', '"text"'))
    (src / "sub" / "config.json").write_text('{"version": 1}')  # JSON in a folder that is not a corpus: skipped
    result = prepare([src], tmp_path / "out", tokenizer=tok_path, val_fraction=0.0, progress=False)
    docs = ["first document.\nline two", "# second\n\ndocument", "record one", "record <|endoftext|> two", "x", "plain string record"]
    ids = read_ids(tmp_path / "out")
    # documents in sorted walk order, one <|endoftext|> between each; the literal text inside a record is not the token
    assert ids.count(tok.eot_token) == len(docs) - 1
    assert tok.decode(ids) == "<|endoftext|>".join(docs)
    assert result.meta["documents"] == len(docs) and result.meta["files"] == 5 and result.val_tokens == 0
    assert len(result.meta["skipped_files"]) == 1 and "config.json" in result.meta["skipped_files"][0]
    assert "1 JSON/Parquet file(s) in folders without a 'text' field skipped" in result.summary()
    assert result.meta["tokenizer"]["n_vocab"] == tok.n_vocab and result.meta["dtype"] == "uint16"
    assert Tokenizer.from_file(tmp_path / "out" / "tokenizer").encode("the cat") == tok.encode("the cat")


def test_invalid_utf8_and_empty_files_are_counted(tmp_path, tok_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "bad.txt").write_bytes(b"caf\xe9 ok \xff end")  # latin-1 bytes: not UTF-8
    (tmp_path / "in" / "empty.txt").write_bytes(b"")
    (tmp_path / "in" / "good.txt").write_text("good text")
    result = prepare([tmp_path / "in"], tmp_path / "out", tokenizer=tok_path, val_fraction=0.0, progress=False)
    assert [p.rsplit("/", 1)[-1] for p in result.meta["invalid_utf8_files"]] == ["bad.txt"]
    assert [p.rsplit("/", 1)[-1] for p in result.meta["empty_files"]] == ["empty.txt"]
    assert result.meta["documents"] == 2
    text = Tokenizer.from_file(tok_path).decode(read_ids(tmp_path / "out"))
    assert text == "caf\ufffd ok \ufffd end<|endoftext|>good text"
    assert "1 empty skipped" in result.summary() and "1 not valid UTF-8" in result.summary()


def test_rerun_is_a_noop_until_the_input_changes(tmp_path, tok_path):
    f = tmp_path / "a.txt"
    f.write_text(CORPUS)
    first = prepare([f], tmp_path / "out", tokenizer=tok_path, progress=False)
    assert not first.skipped
    stamp = (tmp_path / "out" / "train.bin").stat().st_mtime_ns
    again = prepare([f], tmp_path / "out", tokenizer=tok_path, progress=False)
    assert again.skipped and "nothing to do" in again.summary()
    assert (tmp_path / "out" / "train.bin").stat().st_mtime_ns == stamp
    f.write_text(CORPUS + "more")
    changed = prepare([f], tmp_path / "out", tokenizer=tok_path, progress=False)
    assert not changed.skipped and changed.train_tokens + changed.val_tokens > first.train_tokens + first.val_tokens
    other_split = prepare([f], tmp_path / "out", tokenizer=tok_path, val_fraction=0.2, progress=False)
    assert not other_split.skipped  # a different setting is a different result


@pytest.mark.parametrize("workers", [1, pytest.param(2, marks=pytest.mark.multiprocess)])
def test_streamed_chunks_and_workers_give_the_ids_of_the_whole_text(tmp_path, tok_path, monkeypatch, workers):
    # small chunks: a file is read, decoded (multi-byte characters cut across reads) and tokenised in ~40 pieces
    monkeypatch.setattr(data_mod, "CHUNK_CHARS", 256)  # when workers pay off
    monkeypatch.setattr(gpt2lab.sources, "CHUNK_CHARS", 256)  # how much of a file is read at a time
    f = tmp_path / "long.txt"
    f.write_text(CORPUS * 5, encoding="utf-8")
    prepare([f], tmp_path / "out", tokenizer=tok_path, val_fraction=0.0, num_workers=workers, progress=False)
    assert read_ids(tmp_path / "out") == Tokenizer.from_file(tok_path).encode_ordinary(CORPUS * 5)


def test_validation_split(tmp_path, tok_path):
    f = tmp_path / "a.txt"
    f.write_text(CORPUS * 3)
    result = prepare([f], tmp_path / "out", tokenizer=tok_path, val_fraction=0.1, progress=False)
    everything = Tokenizer.from_file(tok_path).encode_ordinary(CORPUS * 3)
    n = len(everything)
    assert result.val_tokens == round(0.1 * n) and result.train_tokens + result.val_tokens == n
    assert read_ids(tmp_path / "out", "val") == everything[n - result.val_tokens :]  # small corpus: the tail
    assert read_ids(tmp_path / "out", "train") == everything[: n - result.val_tokens]


def test_val_ranges_spread_over_a_large_stream():
    n = 10_000_000
    ranges = val_ranges(n, 0.05)
    assert len(ranges) == 7  # 500k val tokens in segments of ~64k
    assert sum(b - a for a, b in ranges) == 500_000
    assert all(0 <= a < b <= n for a, b in ranges) and all(b1 <= a2 for (_, b1), (a2, _) in zip(ranges, ranges[1:]))
    assert ranges[-1][1] == n and ranges[0][0] > n // 10  # spread, not bunched at the start
    assert val_ranges(100, 0.0) == [] and val_ranges(10, 0.01) == [(9, 10)]
    assert len(val_ranges(10**10, 0.5)) == 100


def test_large_vocabulary_uses_uint32(tmp_path):
    tok = Tokenizer({bytes([i]): i for i in range(256)}, {"<|endoftext|>": 70000})
    tok.save(tmp_path / "big")
    (tmp_path / "a.txt").write_text("hi")
    (tmp_path / "b.txt").write_text("yo")
    result = prepare([tmp_path / "a.txt", tmp_path / "b.txt"], tmp_path / "out", tokenizer=tmp_path / "big", val_fraction=0.0, progress=False)
    assert result.meta["dtype"] == "uint32"
    assert read_ids(tmp_path / "out") == [104, 105, 70000, 121, 111]


def test_parquet_and_hugging_face_datasets(tmp_path, tok_path, monkeypatch):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": ["pq one", None, "pq two"], "n": [1, 2, 3]}), tmp_path / "x.parquet")
    (tmp_path / "ds").mkdir()  # a local dataset folder, read through datasets.load_dataset
    (tmp_path / "ds" / "train.jsonl").write_text("".join(json.dumps({"text": f"row {i}"}) + "\n" for i in range(3)))
    inputs = [f"hf:{tmp_path / 'ds'}", tmp_path / "x.parquet"]
    loads = []  # each load asks the hub about the dataset: the fingerprint and the reading share one
    monkeypatch.setattr(hub, "load_dataset", lambda *a, real=hub.load_dataset: loads.append(a) or real(*a))
    result = prepare(inputs, tmp_path / "out", tokenizer=tok_path, val_fraction=0.0, progress=False)
    assert loads == [(str(tmp_path / "ds"), "train")]
    assert Tokenizer.from_file(tok_path).decode(read_ids(tmp_path / "out")) == "<|endoftext|>".join(["row 0", "row 1", "row 2", "pq one", "pq two"])
    assert result.meta["sources"][0] == f"hf:{tmp_path / 'ds'}:train"
    assert prepare(inputs, tmp_path / "out", tokenizer=tok_path, val_fraction=0.0, progress=False).skipped
    with pytest.raises(DataError, match="has no column 'body'"):
        prepare([tmp_path / "x.parquet"], tmp_path / "o2", tokenizer=tok_path, text_field="body", progress=False)
    with pytest.raises(DataError, match=re.escape(f"could not load {tmp_path / 'ds'} (nosuchsplit) (")):
        prepare([f"hf:{tmp_path / 'ds'}:nosuchsplit"], tmp_path / "o3", tokenizer=tok_path, progress=False)


def test_parquet_and_hf_without_their_libraries(tmp_path, tok_path, monkeypatch):
    (tmp_path / "x.parquet").write_bytes(b"PAR1")
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)  # as if not installed
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(DataError, match="needs pyarrow: pip install pyarrow"):
        prepare([tmp_path / "x.parquet"], tmp_path / "out", tokenizer=tok_path, progress=False)
    with pytest.raises(DataError, match="loading some/dataset needs the datasets library: pip install"):
        prepare(["hf:some/dataset:train"], tmp_path / "out", tokenizer=tok_path, progress=False)


@pytest.mark.parametrize(
    "setup, inputs, match",
    [
        (lambda p: None, ["missing.txt"], "no such file or folder"),
        (lambda p: (p / "d").mkdir(), ["d"], "no text files in"),
        (lambda p: (p / "e.txt").write_text(""), ["e.txt"], "no text in the inputs"),
        (lambda p: (p / "r.jsonl").write_text('{"body": "x"}\n'), ["r.jsonl"], "has no 'text' field"),
        (lambda p: (p / "r.jsonl").write_text('{"text": "x"}\n{oops\n'), ["r.jsonl"], r"r.jsonl:2 is not valid JSON"),
        (lambda p: None, ["hf:"], "expected hf:NAME"),
    ],
)
def test_prepare_errors(tmp_path, tok_path, setup, inputs, match):
    setup(tmp_path)
    with pytest.raises(DataError, match=match):
        prepare([str(tmp_path / i) if not i.startswith("hf:") else i for i in inputs], tmp_path / "out", tokenizer=tok_path, progress=False)


@pytest.mark.slow  # three CLI processes, each loading GPT-2's vocabulary
def test_prepare_with_gpt2_vocabulary_and_cli(tmp_path, gpt2_vocab_path):
    (tmp_path / "a.txt").write_text("Hello world")
    (tmp_path / "b.txt").write_text(" It works.")
    cli = [sys.executable, "-m", "gpt2lab", "prepare", str(tmp_path / "a.txt"), str(tmp_path / "b.txt"),
           "--out", str(tmp_path / "out"), "--tokenizer", str(gpt2_vocab_path), "--val-fraction", "0", "--quiet"]
    out = subprocess.run(cli, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "from 2 documents in 2 sources" in out.stdout
    assert read_ids(tmp_path / "out") == [15496, 995, 50256, 632, 2499, 13]
    again = subprocess.run(cli, capture_output=True, text=True)
    assert "nothing to do" in again.stdout
    bad = subprocess.run(cli[:4] + [str(tmp_path / "nope.txt")] + cli[5:], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "no such file or folder" in bad.stderr
