"""Instruction data: the template, ``prepare --format instruct`` (round trip, masks, errors), and
training on it: the loss counts the response tokens only."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import gpt2lab
from gpt2lab import GPT2
from gpt2lab.data import IGNORE_INDEX, MASKS, BatchSampler, open_data, prepare, windows
from gpt2lab.errors import DataError
from gpt2lab.instruct import DEFAULT_SYSTEM, Conversation, conversation_from_record, render
from gpt2lab.train import TrainConfig, Trainer

ROOT = Path(__file__).resolve().parents[1]

ALPACA = [
    {"instruction": "Name the capital of France.", "input": "", "output": "Paris."},
    {"instruction": "Translate to German.", "input": "Good morning", "output": "Guten Morgen"},
    {"instruction": "Give a synonym of fast.", "output": "quick"},  # no input field at all
    {"messages": [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hi"},
                  {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Bye <|endoftext|>"},
                  {"role": "assistant", "content": "Goodbye."}]},
    {"instruction": "Count to three.", "input": None, "output": "1, 2, 3"},
    {"messages": [{"role": "user", "content": "What is 2 + 2?"}, {"role": "assistant", "content": "4"}]},
]


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def cli(*args, input=None, timeout=120):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run([sys.executable, "-m", "gpt2lab", *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          env=env, input=input)


# ---------------------------------------------------------------------------------------------
# The template
# ---------------------------------------------------------------------------------------------


def test_alpaca_record_renders_the_books_layout(tokenizer):
    """Chapter 7's format_input + "\\n\\n### Response:\\n" + output, then <|endoftext|>; the mask
    covers exactly the output and its <|endoftext|>."""
    record = {"instruction": "Translate to German.", "input": "Good morning", "output": "Guten Morgen"}
    book_prompt = (
        "Below is an instruction that describes a task. Write a response that appropriately completes the request."
        f"\n\n### Instruction:\n{record['instruction']}"
        f"\n\n### Input:\n{record['input']}"
        "\n\n### Response:\n"
    )
    ids, mask = render(tokenizer, conversation_from_record(record, "x:1"))
    assert len(ids) == len(mask)
    assert tokenizer.decode(ids) == book_prompt + "Guten Morgen<|endoftext|>"
    n_prompt = len(tokenizer.encode_ordinary(book_prompt))
    assert mask == [0] * n_prompt + [1] * (len(ids) - n_prompt)
    assert ids[n_prompt:] == tokenizer.encode_ordinary("Guten Morgen") + [tokenizer.eot_token]
    # without an input the "### Input:" section is left out, as in the book
    ids, _ = render(tokenizer, conversation_from_record({"instruction": "Say hi.", "input": "", "output": "hi"}, "x:2"))
    assert "### Input:" not in tokenizer.decode(ids)


def test_messages_render_every_turn_and_mask_every_answer(tokenizer):
    conversation = conversation_from_record(ALPACA[3], "x:4")
    assert conversation.system == "You are terse." and len(conversation.turns) == 2
    ids, mask = render(tokenizer, conversation)
    text = tokenizer.decode(ids)
    assert text == ("You are terse.\n\n### Instruction:\nHi\n\n### Response:\nHello!<|endoftext|>"
                    "\n\n### Instruction:\nBye <|endoftext|>\n\n### Response:\nGoodbye.<|endoftext|>")
    # "<|endoftext|>" typed in a message is text, not the special token: only the two answers end with it
    assert ids.count(tokenizer.eot_token) == 2
    taught = [i for i, m in zip(ids, mask) if m]
    assert taught == tokenizer.encode_ordinary("Hello!") + [tokenizer.eot_token] + tokenizer.encode_ordinary("Goodbye.") + [tokenizer.eot_token]
    # a messages record without a system message gets the template's sentence
    assert conversation_from_record(ALPACA[5], "x:6").system == DEFAULT_SYSTEM


def test_a_chat_prompt_is_the_training_layout_up_to_the_answer(tokenizer):
    trained, _ = render(tokenizer, Conversation("S", [("question", "answer")]))
    prompt, mask = render(tokenizer, Conversation("S", [("question", None)]))
    assert trained[: len(prompt)] == prompt and not any(mask)
    assert tokenizer.decode(prompt).endswith("### Response:\n")


# ---------------------------------------------------------------------------------------------
# prepare --format instruct
# ---------------------------------------------------------------------------------------------


def test_prepare_round_trip(tokenizer, gpt2_vocab_path, tmp_path):
    source = write_jsonl(tmp_path / "alpaca.jsonl", ALPACA)
    result = gpt2lab.prepare(source, tmp_path / "data", tokenizer=gpt2_vocab_path, format="instruct", val_fraction=0.3, progress=False)
    data = open_data(tmp_path / "data")
    assert data.train_mask is not None and data.val_mask is not None
    assert len(data.train_mask) == len(data.train) and len(data.val_mask) == len(data.val)

    rendered = [render(tokenizer, conversation_from_record(r, "")) for r in ALPACA]
    held_out = [1, 4]  # 30% of 6 examples = 2, evenly spread (int((i + 0.5) * 6 / 2) for i = 0, 1)
    expected = {
        "train": [e for i, e in enumerate(rendered) if i not in held_out],
        "val": [e for i, e in enumerate(rendered) if i in held_out],
    }
    for split, ids, mask in (("train", data.train, data.train_mask), ("val", data.val, data.val_mask)):
        assert ids.tolist() == [t for e, _ in expected[split] for t in e]
        assert mask.tolist() == [m for _, ms in expected[split] for m in ms]
        # every response is followed by <|endoftext|>, and <|endoftext|> is always a target
        eot_positions = np.flatnonzero(np.asarray(ids) == tokenizer.eot_token)
        assert len(eot_positions) == sum(len(conversation_from_record(ALPACA[i], "").turns)
                                         for i in range(len(ALPACA)) if (i in held_out) == (split == "val"))
        assert all(mask[p] == 1 for p in eot_positions)
    meta = result.meta
    assert meta["loss_mask"] is True and meta["instruct"]["examples"] == 6 and meta["instruct"]["val_examples"] == 2
    assert meta["instruct"]["train_targets"] == int(np.sum(data.train_mask))
    assert "instruction examples" in result.summary()

    # unchanged inputs: nothing to do; a damaged mask file: done again
    train_mask = data.train_mask.tolist()
    del data  # let go of the memory maps before the files change under them
    assert prepare(source, tmp_path / "data", tokenizer=gpt2_vocab_path, format="instruct", val_fraction=0.3, progress=False).skipped
    (tmp_path / "data" / MASKS["train.bin"]).write_bytes(b"\x01")
    again = prepare(source, tmp_path / "data", tokenizer=gpt2_vocab_path, format="instruct", val_fraction=0.3, progress=False)
    assert not again.skipped and open_data(tmp_path / "data").train_mask.tolist() == train_mask
    # the same directory prepared as plain text loses its masks
    (tmp_path / "doc.txt").write_text("plain text " * 50)
    prepare(tmp_path / "doc.txt", tmp_path / "data", tokenizer=gpt2_vocab_path, progress=False)
    assert open_data(tmp_path / "data").train_mask is None and not (tmp_path / "data" / MASKS["train.bin"]).exists()


def test_prepare_from_the_command_line(gpt2_vocab_path, tmp_path):
    source = write_jsonl(tmp_path / "alpaca.jsonl", ALPACA)
    run = cli("prepare", "--format", "instruct", source, "--out", tmp_path / "data", "--tokenizer", gpt2_vocab_path, "--quiet")
    assert run.returncode == 0, run.stderr
    assert "6 instruction examples" in run.stdout and "response tokens" in run.stdout
    assert json.loads((tmp_path / "data" / "meta.json").read_text())["instruct"]["template"] == "alpaca-v1"


def test_parquet_and_hub_records_give_the_same_data(tokenizer, gpt2_vocab_path, tmp_path, monkeypatch):
    """A Parquet file and a Hugging Face dataset (rows as dicts; here a stand-in, no network) of
    the same records prepare to the same tokens and masks as the JSONL file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    import gpt2lab.hub

    alpaca = [r for r in ALPACA if "instruction" in r]
    rows = [{"instruction": r["instruction"], "input": r.get("input"), "output": r["output"]} for r in alpaca]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "alpaca.parquet")

    def stand_in_hub(name: str, split: str) -> list[dict]:
        assert (name, split) == ("tatsu-lab/alpaca", "train")  # the default split of an hf: name
        return rows

    monkeypatch.setattr(gpt2lab.hub, "load_dataset", stand_in_hub)
    made = {}
    for name, source in (("jsonl", write_jsonl(tmp_path / "alpaca.jsonl", alpaca)), ("parquet", tmp_path / "alpaca.parquet"),
                         ("hf", "hf:tatsu-lab/alpaca")):
        prepare(source, tmp_path / name, tokenizer=gpt2_vocab_path, format="instruct", val_fraction=0.25, progress=False)
        data = open_data(tmp_path / name)
        made[name] = (data.train.tolist(), data.val.tolist(), data.train_mask.tolist(), data.val_mask.tolist())
    assert made["parquet"] == made["jsonl"] == made["hf"]


BAD_RECORDS = [
    ('{"instruction": "x", "output": "y"', "not valid JSON"),
    ('{"instruction": "x"}', "no 'output' field"),
    ('{"prompt": "x", "completion": "y"}', "no 'instruction' and 'output' field (it has prompt, completion)"),
    ('{"instruction": "x", "output": 3}', "field 'output' holds int, not text"),
    ('{"instruction": " ", "output": "y"}', "the instruction is empty"),
    ('["x", "y"]', "expected a JSON object"),
    ('{"messages": []}', "non-empty list"),
    ('{"messages": [{"role": "bot", "content": "x"}]}', "has role 'bot'"),
    ('{"messages": [{"role": "user", "content": "x"}]}', "the last message is the user's"),
    ('{"messages": [{"role": "assistant", "content": "x"}]}', "from the assistant but the user speaks next"),
    ('{"messages": [{"role": "user", "content": "x"}, {"role": "system", "content": "s"}]}', "only the first message may be one"),
    ('{"messages": [{"role": "user", "content": ["x"]}, {"role": "assistant", "content": "y"}]}', "holds list, not text"),
]


@pytest.mark.parametrize("line, message", BAD_RECORDS)
def test_a_malformed_record_names_its_line(line, message, gpt2_vocab_path, tmp_path):
    source = tmp_path / "bad.jsonl"
    source.write_text(json.dumps(ALPACA[0]) + "\n\n" + json.dumps(ALPACA[1]) + "\n" + line + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=f"{source}:4"):
        prepare(source, tmp_path / "data", tokenizer=gpt2_vocab_path, format="instruct", progress=False)
    with pytest.raises(DataError) as err:
        prepare(source, tmp_path / "data", tokenizer=gpt2_vocab_path, format="instruct", progress=False)
    assert message in str(err.value)


def test_malformed_records_on_the_command_line_exit_2_with_one_line(gpt2_vocab_path, tmp_path):
    source = tmp_path / "bad.jsonl"
    source.write_text(json.dumps(ALPACA[0]) + "\n" + '{"instruction": "x"}\n', encoding="utf-8")
    run = cli("prepare", "--format", "instruct", source, "--out", tmp_path / "data", "--tokenizer", gpt2_vocab_path, "--quiet")
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert run.stderr.count("\n") == 1 and f"{source}:2: no 'output' field" in run.stderr
    (tmp_path / "notes.txt").write_text("some text")
    run = cli("prepare", "--format", "instruct", tmp_path / "notes.txt", "--out", tmp_path / "data", "--quiet")
    assert run.returncode == 2 and "must be records" in run.stderr and run.stderr.count("\n") == 1
    run = cli("prepare", "--format", "instruct", source, "--text-field", "body", "--out", tmp_path / "data")
    assert run.returncode == 2 and "--text-field applies to plain text" in run.stderr
    run = cli("prepare", "--format", "chatml", source, "--out", tmp_path / "data")
    assert run.returncode == 2 and "invalid choice" in run.stderr


# ---------------------------------------------------------------------------------------------
# Training on it: the loss counts the responses only
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def instruct_data(tmp_path_factory, gpt2_vocab_path) -> Path:
    path = tmp_path_factory.mktemp("instruct")
    source = write_jsonl(path / "alpaca.jsonl", ALPACA * 4)
    prepare(source, path / "data", tokenizer=gpt2_vocab_path, format="instruct", val_fraction=0.25, progress=False)
    return path / "data"


def test_batches_carry_minus_100_exactly_where_the_mask_is_0(instruct_data):
    data = open_data(instruct_data)
    starts = np.array([0, 5, 37])
    x, y = windows(data.train, starts, 24, data.train_mask)  # (3, 24) each
    plain_x, plain_y = windows(data.train, starts, 24)
    assert torch.equal(x, plain_x)
    for row, s in enumerate(starts):
        target_is_response = torch.from_numpy(np.asarray(data.train_mask[s + 1 : s + 25], dtype=bool))  # (24,)
        assert torch.equal(y[row][target_is_response], plain_y[row][target_is_response])
        assert bool((y[row][~target_is_response] == IGNORE_INDEX).all())
    sampler = BatchSampler(data.train, 24, 4, seed=3, mask=data.train_mask)
    _, y = sampler.next_batch()
    assert bool((y == IGNORE_INDEX).any()) and bool((y != IGNORE_INDEX).any())


def test_the_trainer_loss_counts_only_response_tokens(instruct_data, gpt2_vocab_model_dir, tmp_path):
    """Computed by hand from the token and mask files: the trainer's training and validation loss
    are the mean cross-entropy over response positions, and differ from the loss over every token."""
    config = TrainConfig(data=instruct_data, out=tmp_path / "run", init=str(gpt2_vocab_model_dir), block_size=32, batch_size=4,
                         max_steps=2, eval_every=1, eval_batches=2, lr=1e-3, warmup_steps=0, progress=False, seed=5, device="cpu")
    trainer = Trainer(config)
    data = open_data(instruct_data)
    model = GPT2.from_pretrained(gpt2_vocab_model_dir).eval()

    def by_hand(ids: np.ndarray, mask: np.ndarray, starts: np.ndarray) -> tuple[float, float]:
        rows = torch.tensor(np.stack([ids[s : s + 33] for s in starts]).astype(np.int64))  # (B, 33)
        taught = torch.tensor(np.stack([mask[s + 1 : s + 33] for s in starts]).astype(bool))  # (B, 32)
        with torch.no_grad():
            log_probs = model(rows[:, :-1]).log_softmax(-1)  # (B, 32, V)
        nll = -log_probs.gather(-1, rows[:, 1:, None]).squeeze(-1)  # (B, 32)
        return nll[taught].mean().item(), nll.mean().item()

    starts = trainer.sampler.window_starts(0, 4)  # the first step's windows
    response_only, every_token = by_hand(data.train, data.train_mask, starts)
    assert trainer.train_step() == pytest.approx(response_only, abs=1e-5)
    assert abs(response_only - every_token) > 1e-3

    from gpt2lab.data import eval_starts

    trainer.model.load_state_dict(model.state_dict())  # back to the weights the hand computation used
    val_starts = eval_starts(data.val, 32, 2 * 4)
    val_response_only, _ = by_hand(data.val, data.val_mask, val_starts)
    assert trainer.evaluate() == pytest.approx(val_response_only, abs=1e-5)


def test_gradient_accumulation_takes_the_mean_over_every_response_token_of_the_step(instruct_data, gpt2_vocab_model_dir, tmp_path):
    """Two micro-batches of 2 that hold different numbers of response tokens: the step's loss (and so its
    gradient) is the mean over all of them, as one batch of 4 makes it, not the mean of the two means."""
    def first_step(batch_size: int, grad_accum: int) -> tuple[float, list[torch.Tensor]]:
        config = TrainConfig(data=instruct_data, out=tmp_path / f"b{batch_size}", init=str(gpt2_vocab_model_dir), block_size=32,
                             batch_size=batch_size, grad_accum=grad_accum, max_steps=2, lr=1e-3, warmup_steps=0, progress=False,
                             seed=5, device="cpu", dropout=0.0)
        trainer = Trainer(config)
        grads: list[torch.Tensor] = []
        trainer.optimizer.step = lambda: grads.extend(p.grad.clone() for p in trainer.model.parameters())
        try:
            return trainer.train_step(), grads
        finally:
            trainer.close()

    data = open_data(instruct_data)
    sampler = BatchSampler(data.train, 32, 2, seed=5, mask=data.train_mask)
    counts = [int((sampler.next_batch()[1] != IGNORE_INDEX).sum()) for _ in range(2)]
    assert counts[0] != counts[1]  # what makes the two ways of averaging differ
    one_batch, one_grads = first_step(4, 1)
    accumulated, accumulated_grads = first_step(2, 2)
    assert accumulated == pytest.approx(one_batch, abs=1e-5)
    for a, b in zip(one_grads, accumulated_grads, strict=True):
        torch.testing.assert_close(b, a, atol=1e-6, rtol=1e-4)


def test_eval_of_instruct_data_scores_the_responses_only(instruct_data, gpt2_vocab_model_dir):
    """``gpt2lab eval`` on an instruction DATA_DIR counts the response tokens only, as training does:
    here against a hand computation over disjoint windows (every token with its own window's context)."""
    from gpt2lab.data import open_data
    from gpt2lab.evaluate import evaluate, evaluate_path

    model = GPT2.from_pretrained(gpt2_vocab_model_dir).eval()
    data = open_data(instruct_data)
    T = 16
    ids = torch.from_numpy(np.asarray(data.val, dtype=np.int64))  # (n,)
    taught = torch.from_numpy(np.asarray(data.val_mask, dtype=bool))  # (n,): 1 where the token is a response
    nll = torch.zeros(len(ids))  # per target position; position 0 is never a target
    with torch.no_grad():
        for begin in range(0, len(ids), T):
            window = ids[begin : begin + T]
            if len(window) < 2:
                break
            log_probs = model(window[None])[0].log_softmax(-1)  # (L, V)
            nll[begin + 1 : begin + len(window)] = -log_probs[:-1].gather(-1, window[1:, None]).squeeze(-1)
    scored = taught.clone()
    scored[0] = False
    scored[T::T] = False  # with disjoint windows a window's first token is scored by none (no context in its own)
    result = evaluate_path(model, instruct_data, block_size=T, stride=T)
    assert result.tokens == int(scored.sum()) < len(ids) - 1
    assert result.loss == pytest.approx(nll[scored].mean().item(), abs=1e-5)
    everything = evaluate(model, data.val, block_size=T, stride=T)
    assert abs(everything.loss - result.loss) > 1e-3


@pytest.mark.slow
def test_train_takes_instruct_data_unchanged(instruct_data, gpt2_vocab_model_dir, tmp_path):
    run = cli("train", "--data", instruct_data, "--out", tmp_path / "run", "--init", gpt2_vocab_model_dir, "--block-size", 32,
              "--batch-size", 2, "--max-steps", 2, "--eval-every", 1, "--eval-batches", 1, "--device", "cpu", "--quiet")
    assert run.returncode == 0, run.stderr
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2] and all(np.isfinite(r["val_loss"]) for r in records)
    assert (tmp_path / "run" / "model" / "config.json").is_file()
