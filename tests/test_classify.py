"""Classification (``gpt2lab.classify``, ``train --task classify``, ``eval --task classify``): a head on the
last real token learns string labels; the saved model is transformers' ``GPT2ForSequenceClassification``
with the same logits and the same accuracy; resume is exact; user mistakes are one line, exit 2."""

from __future__ import annotations

import csv
import json
import logging
import random
import shutil
from pathlib import Path

import pytest
import torch
import transformers  # a test dependency: the reference the saved model is proven in

from gpt2lab.classify import GPT2Classifier, held_out, read_examples
from gpt2lab.cli import main
from gpt2lab.config import GPT2Config
from gpt2lab.evaluate import evaluate_task
from gpt2lab.model import GPT2
from gpt2lab.train import TrainConfig, train

POSITIVE = ["good", "great", "lovely", "fine"]
NEGATIVE = ["bad", "awful", "poor", "sad"]
FILLER = ["the", "food", "was", "and", "service", "we", "had", "a", "day", "very", "our", "room", "view", "time"]


def examples(n: int, seed: int = 0) -> list[dict[str, str]]:
    """Texts with one sentiment word somewhere among filler words; labels are strings."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        positive = i % 2 == 0
        words = [rng.choice(FILLER) for _ in range(rng.randint(2, 7))]
        words.insert(rng.randint(0, len(words)), rng.choice(POSITIVE if positive else NEGATIVE))
        rows.append({"text": " ".join(words), "label": "positive" if positive else "negative"})
    return rows


def write_csv(path: Path, rows: list[dict[str, str]], columns: tuple[str, str] = ("text", "label")) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for row in rows:
            writer.writerow([row["text"], row["label"]])
    return path


def write_jsonl(path: Path, rows: list[dict[str, str]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def base_dir(gpt2_vocab_model_dir, tokenizer, tmp_path_factory) -> Path:
    """The small GPT-2-vocabulary model with its tokenizer files beside it, as a real model directory has."""
    path = tmp_path_factory.mktemp("classify_base") / "model"
    shutil.copytree(gpt2_vocab_model_dir, path)
    tokenizer.save(path)
    return path


@pytest.fixture(scope="module")
def trained(base_dir, tmp_path_factory) -> tuple[Path, Path]:
    """(the CSV, the run directory) of one short classification run."""
    root = tmp_path_factory.mktemp("classify_run")
    data = write_csv(root / "reviews.csv", examples(200))
    run = root / "run"
    train(TrainConfig(data=data, out=run, task="classify", init=str(base_dir), max_steps=120, batch_size=16, lr=3e-3,
                      eval_every=40, checkpoint_every=0, device="cpu", progress=False, seed=0))
    return data, run


def hf_accuracy(model_dir: Path, data: Path, tokenizer) -> tuple[float, int]:
    """A plain transformers loop: each text alone through GPT2ForSequenceClassification, argmax, compare."""
    hf = transformers.GPT2ForSequenceClassification.from_pretrained(model_dir).eval()
    rows = read_examples(data)
    correct = 0
    with torch.no_grad():
        for text, label in rows:
            logits = hf(torch.tensor([tokenizer.encode_ordinary(text)])).logits[0]
            correct += hf.config.id2label[int(logits.argmax())] == label
    return correct / len(rows), len(rows)


def test_training_learns_the_labels_and_logs_accuracy(trained):
    data, run = trained
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    evaluated = [r for r in records if "val_acc" in r]
    assert [r["step"] for r in evaluated] == [40, 80, 120]
    assert all("val_loss" in r for r in evaluated)
    assert evaluated[-1]["val_acc"] >= 0.9  # the held-out 20 texts of a learnable file
    assert evaluated[-1]["val_loss"] < evaluated[0]["val_loss"] or evaluated[0]["val_acc"] >= 0.9


def test_export_is_transformers_classifier_with_the_same_logits(trained, tokenizer):
    _, run = trained
    config = json.loads((run / "model" / "config.json").read_text())
    assert config["architectures"] == ["GPT2ForSequenceClassification"]
    assert config["num_labels"] == 2
    assert config["id2label"] == {"0": "negative", "1": "positive"}  # sorted label strings
    assert config["label2id"] == {"negative": 0, "positive": 1}
    assert config["pad_token_id"] == 50256
    ours = GPT2Classifier.from_pretrained(run / "model").eval()
    assert ours.labels == ["negative", "positive"]
    hf = transformers.GPT2ForSequenceClassification.from_pretrained(run / "model").eval()
    assert hf.config.pad_token_id == 50256
    texts = ["the food was good", "we had a very awful day and the room", "bad"]
    rows = [tokenizer.encode_ordinary(t) for t in texts]
    x = torch.full((len(rows), max(map(len, rows))), 50256)  # right-padded with <|endoftext|>
    for i, row in enumerate(rows):
        x[i, : len(row)] = torch.tensor(row)
    with torch.no_grad():
        a, b = ours(x), hf(x).logits
    assert a.shape == (3, 2)
    assert (a - b).abs().max().item() <= 1e-4
    with torch.no_grad():  # padding changes nothing: each row alone gives the same logits
        alone = torch.cat([ours(torch.tensor([row])) for row in rows])
    assert (alone - a).abs().max().item() <= 1e-4


def test_accuracy_equals_transformers_on_the_export(trained, tokenizer):
    data, run = trained
    ours = evaluate_task(str(run / "model"), None, "classify", str(data), batch_size=7)
    theirs, n = hf_accuracy(run / "model", data, tokenizer)
    assert ours["n"] == n == 200
    assert ours["acc"] == theirs
    assert ours["acc"] >= 0.9


def test_eval_cli_reports_accuracy_as_json(trained, tokenizer, capsys):
    data, run = trained
    assert main(["eval", "--model", str(run / "model"), "--task", "classify", "--data", str(data), "--limit", "50",
                 "--json", "--quiet", "--device", "cpu"]) == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last["n"] == 50
    model = GPT2Classifier.from_pretrained(run / "model")
    assert last["acc"] == evaluate_task(model, tokenizer, "classify", str(data), limit=50)["acc"]


def test_jsonl_with_lora_through_the_cli(base_dir, tmp_path, tokenizer, capsys):
    """A JSONL file, other column names, LoRA, a padded vocabulary: the adapters and the new head train,
    the rest of the base stays."""
    rows = [{"review": r["text"], "stars": r["label"]} for r in examples(200, seed=1)]
    data = write_jsonl(tmp_path / "reviews.jsonl", [{"review": r["review"], "stars": r["stars"]} for r in rows])
    run = tmp_path / "run"
    code = main(["train", "--task", "classify", "--data", str(data), "--out", str(run), "--init", str(base_dir), "--text-field", "review",
                 "--label-field", "stars", "--lora-rank", "4", "--lora-alpha", "8", "--max-steps", "200", "--batch-size", "16",
                 "--lr", "1e-2", "--eval-every", "100", "--device", "cpu", "--quiet", "--seed", "0",
                 "--pad-vocab", "64"])  # the padded vocabulary of a GPU run: model/ still has the real one
    assert code == 0
    assert "val acc" in capsys.readouterr().out
    saved = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert "score.weight" in saved["model"] and any(".lora_A." in k for k in saved["model"])
    assert not any(k.startswith("transformer.wte") for k in saved["model"])  # the base is read again from --init
    record = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()][-1]
    assert record["val_acc"] >= 0.8
    merged = GPT2Classifier.from_pretrained(run / "model")
    base = GPT2Classifier.from_body(GPT2.from_pretrained(base_dir), ["a", "b"], 50256)
    assert not torch.equal(merged.transformer.h[0].attn.c_attn.weight, base.transformer.h[0].attn.c_attn.weight)
    assert torch.equal(merged.transformer.wte.weight, base.transformer.wte.weight)  # not a LoRA target: untouched
    ours = evaluate_task(merged, tokenizer, "classify", str(data), text_field="review", label_field="stars")
    theirs, _ = hf_accuracy_fields(run / "model", data, tokenizer)
    assert ours["acc"] == theirs

    # RUN/adapter in PEFT's sequence-classification format (the adapters and the whole new head): PEFT puts it
    # on transformers' classifier built from the base, and its logits are the merged model's; so do we
    from peft import PeftModel

    from gpt2lab.lora import load_adapter, merge_lora

    assert json.loads((run / "adapter" / "adapter_config.json").read_text())["task_type"] == "SEQ_CLS"
    hf_base = transformers.GPT2ForSequenceClassification.from_pretrained(base_dir, num_labels=len(merged.labels), pad_token_id=50256)
    peft_model = PeftModel.from_pretrained(hf_base, str(run / "adapter")).eval()
    hf_merged = transformers.GPT2ForSequenceClassification.from_pretrained(run / "model").eval()
    encoded = [tokenizer.encode_ordinary(r["review"]) for r in rows]
    shortest = min(len(e) for e in encoded)
    ids = torch.tensor([e[:shortest] for e in encoded[:8]])  # (8, shortest): no padding, every row's last token is real
    with torch.no_grad():
        torch.testing.assert_close(peft_model(ids).logits, hf_merged(ids).logits, atol=1e-5, rtol=0)
        reloaded = merge_lora(load_adapter(GPT2Classifier.from_body(GPT2.from_pretrained(base_dir), merged.labels, 50256), run / "adapter"))
        torch.testing.assert_close(reloaded.eval()(ids), merged.eval()(ids), atol=1e-5, rtol=0)


def hf_accuracy_fields(model_dir: Path, data: Path, tokenizer) -> tuple[float, int]:
    hf = transformers.GPT2ForSequenceClassification.from_pretrained(model_dir).eval()
    rows = read_examples(data, "review", "stars")
    with torch.no_grad():
        correct = sum(hf.config.id2label[int(hf(torch.tensor([tokenizer.encode_ordinary(t)])).logits[0].argmax())] == y for t, y in rows)
    return correct / len(rows), len(rows)


def test_resume_is_exact(base_dir, tmp_path):
    data = write_csv(tmp_path / "reviews.csv", examples(60, seed=2))
    common = dict(data=data, task="classify", init=str(base_dir), batch_size=8, lr=3e-3, warmup_steps=2, lr_decay_steps=12,
                  eval_every=4, checkpoint_every=0, device="cpu", progress=False, seed=5, dropout=0.1)
    straight = train(TrainConfig(out=tmp_path / "straight", max_steps=12, **common))
    train(TrainConfig(out=tmp_path / "split", max_steps=5, **common))
    resumed = train(TrainConfig(data=data, out=tmp_path / "split", max_steps=12, resume=True, eval_every=4, checkpoint_every=0,
                                device="cpu", progress=False))
    assert [(r["step"], r["loss"]) for r in resumed.metrics] == [(r["step"], r["loss"]) for r in straight.metrics]
    # the evaluations at the same steps agree too (the first run also evaluated where it stopped, at 5)
    evaluations = [(r["step"], r["val_loss"], r["val_acc"]) for r in straight.metrics if "val_acc" in r]
    assert [s for s, _, _ in evaluations] == [4, 8, 12]
    assert [(r["step"], r["val_loss"], r["val_acc"]) for r in resumed.metrics if "val_acc" in r and r["step"] != 5] == evaluations
    for k, v in straight.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k


def test_epochs_count_the_training_examples(base_dir, tmp_path):
    data = write_csv(tmp_path / "reviews.csv", examples(60, seed=2))  # 6 held out (val_fraction 0.1), 54 to train on
    result = train(TrainConfig(data=data, out=tmp_path / "run", task="classify", init=str(base_dir), batch_size=8, epochs=1,
                               eval_every=0, checkpoint_every=0, device="cpu", progress=False))
    assert result.step == 7  # ceil(54 / 8)
    assert result.metrics[-1]["epoch"] == round(7 * 8 / 54, 4)


def test_held_out_split_is_seeded():
    assert held_out(100, 0.1, 3).tolist() == held_out(100, 0.1, 3).tolist()
    assert held_out(100, 0.1, 3).tolist() != held_out(100, 0.1, 4).tolist()
    assert len(held_out(100, 0.1, 3)) == 10 and len(held_out(3, 0.01, 0)) == 1


def test_long_texts_are_truncated_with_a_warning(base_dir, tmp_path, caplog):
    rows = examples(40, seed=3)
    rows[0]["text"] = "good " + "very " * 40
    data = write_csv(tmp_path / "long.csv", rows)
    with caplog.at_level(logging.WARNING, logger="gpt2lab.classify"):
        result = train(TrainConfig(data=data, out=tmp_path / "run", task="classify", init=str(base_dir), block_size=16,
                                   max_steps=2, batch_size=4, device="cpu", progress=False))
    assert result.step == 2
    assert any("longer than the context of 16 tokens" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("case", ["missing column", "one label", "no init", "fields without task", "unknown eval label"])
def test_mistakes_are_one_line_exit_2(case, base_dir, tmp_path, capsys, trained):
    rows = examples(20)
    if case == "missing column":
        data = write_csv(tmp_path / "d.csv", rows, columns=("text", "sentiment"))
        argv = ["train", "--task", "classify", "--data", str(data), "--init", str(base_dir)]
        expected = "no column 'label'"
    elif case == "one label":
        data = write_csv(tmp_path / "d.csv", [{**r, "label": "positive"} for r in rows])
        argv = ["train", "--task", "classify", "--data", str(data), "--init", str(base_dir)]
        expected = "one label only"
    elif case == "no init":
        data = write_csv(tmp_path / "d.csv", rows)
        argv = ["train", "--task", "classify", "--data", str(data)]
        expected = "--task classify needs --init"
    elif case == "fields without task":
        argv = ["train", "--data", str(tmp_path), "--text-field", "review"]
        expected = "add --task classify"
    else:
        data = write_csv(tmp_path / "d.csv", [{**r, "label": "neutral"} for r in rows])
        argv = ["eval", "--task", "classify", "--model", str(trained[1] / "model"), "--data", str(data)]
        expected = "label(s) the model does not know"
    assert main([*argv, "--out", str(tmp_path / "run"), "--device", "cpu"] if argv[0] == "train" else argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expected in err, err


def test_classifier_config_round_trip(tmp_path):
    body = GPT2(GPT2Config(n_layer=1, n_head=2, n_embd=32, vocab_size=300, block_size=32))
    model = GPT2Classifier.from_body(body, ["x", "y", "z"], 299).eval()
    model.save_pretrained(tmp_path)
    back = GPT2Classifier.from_pretrained(tmp_path)
    assert back.labels == ["x", "y", "z"] and back.pad_token_id == 299
    x = torch.tensor([[1, 2, 3, 299], [4, 5, 6, 7]])
    with torch.no_grad():
        assert torch.equal(back(x), model(x))
