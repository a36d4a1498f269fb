"""Benchmarks (HellaSwag, LAMBADA, WikiText): scores equal a plain transformers loop on the same
checkpoint and items; the files' formats, the hub's field names, the CLI, the errors."""

from __future__ import annotations

import json
import math
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import perturbed_hf_model
from gpt2lab import GPT2
from gpt2lab.errors import ConfigError, DataError
from gpt2lab.evaluate import evaluate, evaluate_task, evaluate_tasks
from gpt2lab.tasks import (
    arc_item,
    encode_request,
    hellaswag_harness_item,
    hellaswag_item,
    lambada_item,
    piqa_item,
    score_continuations,
    winogrande_item,
)
from gpt2lab.train.plots import task_metric_names

ROOT = Path(__file__).resolve().parents[1]
# GPT-2's vocabulary (the tasks are text), a small body so a forward pass is quick; 128 positions,
# so the long items below also exercise cutting the context from the left
SMALL_VOCAB_WIDE = dict(n_layer=2, n_head=4, n_embd=64, vocab_size=50257, n_positions=128)
WORDS = ("the man a woman dog runs into kitchen and then slowly picks up ball while outside rain falls on green "
         "house she he they were walking toward river quickly happy old new bright small large red blue").split()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tokenizer) -> tuple[object, Path, object]:
    """A perturbed transformers model saved with GPT-2's tokenizer files, and transformers' own tokenizer of them."""
    from transformers import GPT2TokenizerFast

    hf = perturbed_hf_model(seed=3, **SMALL_VOCAB_WIDE)
    path = tmp_path_factory.mktemp("hf_gpt2_vocab")
    hf.save_pretrained(path)
    tokenizer.save(path)
    return hf, path, GPT2TokenizerFast.from_pretrained(str(path))


def sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def hellaswag_records(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    records = []
    for i in range(n):
        ctx = sentence(rng, 150 if i == 0 else rng.randint(3, 25))  # item 0 is longer than the context
        endings = [sentence(rng, rng.randint(1, 12)) + "." for _ in range(4)]
        records.append({"ctx": ctx, "endings": endings, "label": rng.randrange(4)})
    return records


def lambada_records(hf, hf_tok, n: int, seed: int = 0) -> list[dict]:
    """Half the items end with the word the model itself predicts (so acc is neither 0 nor 1), half
    with a random word."""
    rng = random.Random(seed)
    records = []
    while len(records) < n:
        context = sentence(rng, 160 if not records else rng.randint(4, 30))
        word = rng.choice(WORDS)
        if len(records) % 2 == 0:
            ids = hf_tok(context)["input_ids"][-SMALL_VOCAB_WIDE["n_positions"]:]
            with torch.no_grad():
                top = hf(torch.tensor([ids])).logits[0, -1].topk(200).indices.tolist()
            # the model's first choice, if it is a whole word that a space starts
            piece = hf_tok.decode([top[0]])
            if not (piece.startswith(" ") and piece[1:].isalpha() and hf_tok(piece)["input_ids"] == [top[0]]):
                continue
            word = piece[1:]
        records.append({"text": context + " " + word})
    return records


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


# -- the independent reference: transformers, one sequence at a time, written out plainly ----------


def reference_continuation(hf, hf_tok, context: str, continuation: str) -> tuple[float, int, bool]:
    """(total log-probability of the continuation, its token count, whether each token is the argmax)."""
    n_positions = hf.config.n_positions
    context_ids = hf_tok(context)["input_ids"]
    continuation_ids = hf_tok(continuation)["input_ids"]
    ids = (context_ids + continuation_ids)[-(n_positions + 1):]
    with torch.no_grad():
        logits = hf(torch.tensor([ids[:-1]])).logits[0].double()  # (T, V)
    total, greedy = 0.0, True
    for k in range(len(continuation_ids)):
        position = len(ids) - 1 - len(continuation_ids) + k  # whose logits predict continuation token k
        target = continuation_ids[k]
        total += torch.log_softmax(logits[position], dim=-1)[target].item()
        greedy = greedy and int(logits[position].argmax()) == target
    return total, len(continuation_ids), greedy


def reference_hellaswag(hf, hf_tok, records: list[dict]) -> dict:
    correct = correct_norm = 0
    for record in records:
        scored = [reference_continuation(hf, hf_tok, record["ctx"], " " + ending) for ending in record["endings"]]
        losses = torch.tensor([-logprob for logprob, _, _ in scored])
        mean_losses = torch.tensor([-logprob / n for logprob, n, _ in scored])
        correct += int(losses.argmin()) == record["label"]
        correct_norm += int(mean_losses.argmin()) == record["label"]
    return {"acc": correct / len(records), "acc_norm": correct_norm / len(records), "n": len(records)}


def reference_lambada(hf, hf_tok, records: list[dict]) -> dict:
    logprobs, hits = [], 0
    for record in records:
        words = record["text"].split(" ")
        logprob, _, greedy = reference_continuation(hf, hf_tok, " ".join(words[:-1]), " " + words[-1])
        logprobs.append(logprob)
        hits += greedy
    return {"acc": hits / len(records), "ppl": math.exp(-sum(logprobs) / len(logprobs)), "n": len(records)}


# -- parity ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_hellaswag_equals_transformers(checkpoint, tokenizer, tmp_path):
    hf, path, hf_tok = checkpoint
    records = hellaswag_records(12)
    data = write_jsonl(tmp_path / "hellaswag.jsonl", records)
    ours = evaluate_task(GPT2.from_pretrained(path), tokenizer, "hellaswag", data, batch_size=5)
    ref = reference_hellaswag(hf, hf_tok, records)
    assert ours == ref  # acc, acc_norm and n exactly
    assert ours["acc"] != ours["acc_norm"]  # the length normalisation matters on these items
    # every continuation's log-probability, not only the argmins, within 1e-4
    model = GPT2.from_pretrained(path)
    requests = [encode_request(tokenizer, r["ctx"], " " + e) for r in records for e in r["endings"]]
    scores = score_continuations(model, requests, batch_size=7)
    expected = [reference_continuation(hf, hf_tok, r["ctx"], " " + e) for r in records for e in r["endings"]]
    assert [(s.tokens, s.greedy) for s in scores] == [(n, g) for _, n, g in expected]
    np.testing.assert_allclose([s.logprob for s in scores], [lp for lp, _, _ in expected], atol=1e-4, rtol=0)


def test_lambada_equals_transformers(checkpoint, tokenizer, tmp_path):
    hf, path, hf_tok = checkpoint
    records = lambada_records(hf, hf_tok, 10)
    data = write_jsonl(tmp_path / "lambada.jsonl", records)
    ours = evaluate_task(GPT2.from_pretrained(path), tokenizer, "lambada", data, batch_size=3)
    ref = reference_lambada(hf, hf_tok, records)
    assert ours["acc"] == ref["acc"] and ours["n"] == ref["n"] == 10
    assert 0 < ours["acc"] < 1  # the model's own words are found, the random ones are not (all of them)
    assert ours["ppl"] == pytest.approx(ref["ppl"], rel=1e-4)


def test_batch_size_does_not_change_the_scores(checkpoint, tokenizer, tmp_path):
    _, path, _ = checkpoint
    data = write_jsonl(tmp_path / "h.jsonl", hellaswag_records(6, seed=1))
    model = GPT2.from_pretrained(path)
    one, many = (evaluate_task(model, tokenizer, "hellaswag", data, batch_size=b) for b in (1, 24))
    assert one == many


def test_progress_bar_and_the_models_mode(checkpoint, tokenizer, tmp_path, capsys):
    _, path, _ = checkpoint
    data = write_jsonl(tmp_path / "h.jsonl", hellaswag_records(3, seed=6))
    model = GPT2.from_pretrained(path)
    quiet = evaluate_task(model, tokenizer, "hellaswag", data)
    model.train()  # dropout is 0 in this config, so only the flag can tell
    assert evaluate_task(model, tokenizer, "hellaswag", data, progress=True) == quiet
    assert model.training  # put back as it came
    err = capsys.readouterr().err
    assert "hellaswag" in err and "12/12" in err  # one bar over the 3 x 4 (context, ending) pairs


def arc_records(n: int, seed: int = 0) -> list[dict]:
    """ARC as the hub stores it: 3 to 5 choices labelled A.. or 1.., answers of different lengths."""
    rng = random.Random(seed)
    records = []
    for i in range(n):
        k = rng.randint(3, 5)
        labels = list("ABCDE"[:k]) if i % 2 else [str(j + 1) for j in range(k)]
        texts = [sentence(rng, rng.randint(1, 8)) for _ in range(k)]
        records.append({"question": sentence(rng, 140 if i == 0 else rng.randint(4, 20)) + "?",
                        "choices": {"text": texts, "label": labels}, "answerKey": rng.choice(labels)})
    return records


def piqa_records(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    return [{"goal": sentence(rng, rng.randint(3, 15)), "sol1": sentence(rng, rng.randint(1, 12)), "sol2": sentence(rng, rng.randint(1, 12)),
             "label": rng.randrange(2)} for _ in range(n)]


def winogrande_records(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    return [{"sentence": f"{sentence(rng, rng.randint(3, 12))} _ {sentence(rng, rng.randint(2, 10))}.", "option1": rng.choice(WORDS).title(),
             "option2": rng.choice(WORDS).title(), "answer": rng.choice("12")} for _ in range(n)]


def hellaswag_full_records(n: int, seed: int = 0) -> list[dict]:
    """HellaSwag's own fields, with WikiHow's marks, double spaces and capitals inside ctx_b."""
    rng = random.Random(seed)
    records = []
    for i in range(n):
        ctx_b = sentence(rng, rng.randint(0, 8)) + (" Ball" if i % 3 == 0 else "")
        endings = [("[title] " if rng.random() < 0.3 else "") + sentence(rng, rng.randint(1, 6)) + (" [step]  " if rng.random() < 0.3 else "")
                   + sentence(rng, rng.randint(1, 6)) + "." for _ in range(4)]
        records.append({"activity_label": rng.choice(WORDS).title(), "ctx_a": sentence(rng, rng.randint(3, 15)) + ".",
                        "ctx_b": ctx_b.strip(), "endings": endings, "label": str(rng.randrange(4))})
    return records


def harness_clean(text: str) -> str:
    """lm-evaluation-harness's ``preprocess`` of HellaSwag text, written out again."""
    text = text.strip().replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    return text.replace("  ", " ")


def reference_choices(hf, hf_tok, options: list[tuple[str, str]], lengths: list[int] | None, gold: int) -> tuple[bool, bool]:
    """lm-evaluation-harness's multiple choice, written out: (argmax of the log-likelihoods is gold,
    argmax of the log-likelihoods over the choices' characters is gold)."""
    lls = np.array([reference_continuation(hf, hf_tok, context, continuation)[0] for context, continuation in options])
    return int(np.argmax(lls)) == gold, lengths is not None and int(np.argmax(lls / np.array(lengths, dtype=float))) == gold


def reference_task(hf, hf_tok, task: str, records: list[dict]) -> dict:
    hits = []
    for r in records:
        if task == "hellaswag_harness":
            query = harness_clean(r["activity_label"] + ": " + r["ctx_a"] + " " + r["ctx_b"].capitalize())
            choices = [harness_clean(e) for e in r["endings"]]
            hits.append(reference_choices(hf, hf_tok, [(query, " " + c) for c in choices], [len(c) for c in choices], int(r["label"])))
        elif task == "piqa":
            options = [(f"Question: {r['goal']}\nAnswer:", " " + sol) for sol in (r["sol1"], r["sol2"])]
            hits.append(reference_choices(hf, hf_tok, options, [len(r["sol1"]), len(r["sol2"])], r["label"]))
        elif task == "winogrande":
            blank = r["sentence"].index("_")
            rest = " " + r["sentence"][blank + 1 :].strip()
            options = [(r["sentence"][:blank] + option, rest) for option in (r["option1"], r["option2"])]
            hits.append(reference_choices(hf, hf_tok, options, None, int(r["answer"]) - 1))
        else:
            texts, labels = r["choices"]["text"], r["choices"]["label"]
            options = [(f"Question: {r['question']}\nAnswer:", " " + t) for t in texts]
            hits.append(reference_choices(hf, hf_tok, options, [len(t) for t in texts], labels.index(r["answerKey"])))
    result = {"acc": sum(a for a, _ in hits) / len(hits)}
    if task != "winogrande":
        result["acc_norm"] = sum(b for _, b in hits) / len(hits)
    return {**result, "n": len(hits)}


@pytest.mark.parametrize("task, make", [("arc_easy", arc_records), ("piqa", piqa_records), ("winogrande", winogrande_records),
                                        ("hellaswag_harness", hellaswag_full_records)])
def test_the_harness_tasks_equal_their_formulas_on_transformers(checkpoint, tokenizer, tmp_path, task, make):
    hf, path, hf_tok = checkpoint
    records = make(14, seed=7)
    ours = evaluate_task(GPT2.from_pretrained(path), tokenizer, task, write_jsonl(tmp_path / f"{task}.jsonl", records), batch_size=4)
    assert ours == reference_task(hf, hf_tok, task, records)  # acc (acc_norm) and n exactly
    assert set(ours) == ({"acc", "n"} if task == "winogrande" else {"acc", "acc_norm", "n"})


@pytest.mark.slow
def test_the_harness_tasks_equal_lm_evaluation_harness(checkpoint, tokenizer, tmp_path):
    """The reference itself: lm-evaluation-harness scores the same JSONL items with the same checkpoint,
    through its own task definitions (the installed YAML files, only their dataset swapped for ours)."""
    from importlib.resources import files

    import lm_eval
    from lm_eval.tasks import TaskManager

    _, path, _ = checkpoint
    data = {"arc_easy": arc_records(24, seed=21)[1:], "piqa": piqa_records(24, seed=22), "winogrande": winogrande_records(24, seed=23),
            "hellaswag_harness": hellaswag_full_records(24, seed=24)}
    split = {"arc_easy": "test", "piqa": "validation", "winogrande": "validation", "hellaswag_harness": "validation"}
    shipped = files("lm_eval") / "tasks"
    source = {"arc_easy": shipped / "arc" / "arc_easy.yaml", "piqa": shipped / "piqa" / "piqa.yaml",
              "winogrande": shipped / "winogrande" / "default.yaml", "hellaswag_harness": shipped / "hellaswag" / "hellaswag.yaml"}
    for task, records in data.items():
        kept = [line for line in source[task].read_text().splitlines()
                if not line.startswith(("task:", "dataset_path:", "dataset_name:", "tag:", "  - ai2_arc", "  - multiple_choice",
                                        "training_split", "validation_split", "test_split"))]
        file = write_jsonl(tmp_path / f"{task}.jsonl", records)
        (tmp_path / f"ours_{task}.yaml").write_text(f"task: ours_{task}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
                                                    f"    {split[task]}: {file}\n{split[task]}_split: {split[task]}\n" + "\n".join(kept) + "\n")
    (tmp_path / "preprocess_winogrande.py").write_text((shipped / "winogrande" / "preprocess_winogrande.py").read_text())
    (tmp_path / "utils.py").write_text((shipped / "hellaswag" / "utils.py").read_text())  # HellaSwag's process_docs
    results = lm_eval.simple_evaluate(model="hf", model_args=f"pretrained={path},dtype=float32", tasks=[f"ours_{t}" for t in data],
                                      task_manager=TaskManager(include_path=str(tmp_path)), device="cpu", batch_size=4)["results"]
    model = GPT2.from_pretrained(path)
    for task in data:
        theirs = {key.split(",")[0]: value for key, value in results[f"ours_{task}"].items() if key.startswith("acc") and "stderr" not in key}
        ours = evaluate_task(model, tokenizer, task, tmp_path / f"{task}.jsonl")
        assert {k: v for k, v in ours.items() if k != "n"} == pytest.approx(theirs, abs=1e-12), task
        assert 0 < ours["acc"] < 1


def test_arc_in_ai2s_own_format_and_the_harness_tasks_item_errors(checkpoint, tokenizer, tmp_path):
    _, path, _ = checkpoint
    hub = arc_records(4, seed=8)
    ai2 = [{"question": {"stem": r["question"], "choices": [{"text": t, "label": k} for t, k in zip(r["choices"]["text"], r["choices"]["label"],
                                                                                                    strict=True)]},
            "answerKey": r["answerKey"]} for r in hub]
    model = GPT2.from_pretrained(path)
    assert evaluate_task(model, tokenizer, "arc_easy", write_jsonl(tmp_path / "ai2.jsonl", ai2)) == \
        evaluate_task(model, tokenizer, "arc_easy", write_jsonl(tmp_path / "hub.jsonl", hub))
    item = winogrande_item({"sentence": "Ann gave Bo a cup because _ was thirsty.", "option1": "Ann", "option2": "Bo", "answer": "2"}, "x")
    assert (item.options, item.label, item.lengths) == ([("Ann gave Bo a cup because Ann", " was thirsty."),
                                                         ("Ann gave Bo a cup because Bo", " was thirsty.")], 1, None)
    assert piqa_item({"goal": "Dry a cup", "sol1": "use a towel", "sol2": "use water", "label": "0"}, "x").options[0] == \
        ("Question: Dry a cup\nAnswer:", " use a towel")
    with pytest.raises(DataError, match="x: answerKey 'F' is not one of the choices' labels"):
        arc_item({**hub[0], "answerKey": "F"}, "x")
    with pytest.raises(DataError, match="needs exactly one _"):
        winogrande_item({"sentence": "no blank", "option1": "a", "option2": "b", "answer": "1"}, "x")
    with pytest.raises(DataError, match="needs answer 1 or 2, got ''"):
        winogrande_item({"sentence": "a _ b", "option1": "a", "option2": "b", "answer": ""}, "x")
    with pytest.raises(DataError, match="needs label 0 or 1, got -1"):
        piqa_item({"goal": "g", "sol1": "a", "sol2": "b", "label": -1}, "x")
    with pytest.raises(DataError, match="x: hellaswag_harness needs HellaSwag's activity_label, ctx_a and ctx_b .* serves --task hellaswag"):
        hellaswag_harness_item(hellaswag_records(1)[0], "x")
    item = hellaswag_harness_item({"activity_label": "Roofing", "ctx_a": "A man is on a roof.", "ctx_b": "he pulls up The tiles.",
                                   "endings": ["[title] Use a  bar. [step] Pry.", "stops."], "label": "0"}, "x")
    assert (item.options, item.label, item.lengths) == ([("Roofing: A man is on a roof. He pulls up the tiles.", "  Use a bar. Pry."),
                                                         ("Roofing: A man is on a roof. He pulls up the tiles.", " stops.")], 0, [16, 6])
    with pytest.raises(DataError, match="a PIQA record needs a text sol2"):
        piqa_item({"goal": "g", "sol1": "a", "label": 0}, "x")
    out = run_eval("--model", path, "--task", "winogrande", "--data", write_jsonl(tmp_path / "w.jsonl", winogrande_records(3)), "--json",
                   "--quiet", "--device", "cpu")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0].startswith("winogrande: acc ") and set(json.loads(out.stdout.splitlines()[-1])) == {"acc", "n"}
    assert task_metric_names([{"step": 1, "arc_easy_acc_norm": 0.3, "piqa_acc": 0.5, "val_loss": 2.0}]) == ["arc_easy_acc_norm", "piqa_acc"]


def test_limit_and_the_hubs_field_names(checkpoint, tokenizer, tmp_path):
    _, path, _ = checkpoint
    records = hellaswag_records(5, seed=2)
    # the hub's rows: ctx_a / ctx_b (ctx_b starting lower-case), the label a string
    hub_rows = []
    for r in records:
        head, tail = r["ctx"].split(" ", 1) if " " in r["ctx"] else (r["ctx"], "")
        hub_rows.append({"ctx_a": head, "ctx_b": tail, "endings": r["endings"], "label": str(r["label"])})
        r["ctx"] = head + (" " + tail[:1].upper() + tail[1:] if tail else "")
    model = GPT2.from_pretrained(path)
    ours = evaluate_task(model, tokenizer, "hellaswag", write_jsonl(tmp_path / "hub.jsonl", hub_rows), limit=3)
    plain = evaluate_task(model, tokenizer, "hellaswag", write_jsonl(tmp_path / "plain.jsonl", records[:3]))
    assert ours == plain and ours["n"] == 3
    assert hellaswag_item({"ctx_a": "A man", "ctx_b": "sits down.", "endings": ["x", "y"], "label": 1}, "here").context == "A man Sits down."


def test_wikitext_is_the_sliding_window_perplexity(checkpoint, tokenizer, tmp_path):
    _, path, _ = checkpoint
    rng = random.Random(4)
    rows = [" = Title = \n", "", *(" " + sentence(rng, 30) + " \n" for _ in range(8))]
    model = GPT2.from_pretrained(path)
    raw = tmp_path / "wiki.test.raw"
    raw.write_text("\n\n".join(rows), encoding="utf-8")
    from_rows = evaluate_task(model, tokenizer, "wikitext", write_jsonl(tmp_path / "wiki.jsonl", [{"text": t} for t in rows]))
    from_raw = evaluate_task(model, tokenizer, "wikitext", raw, stride=32)
    expected = evaluate(model, tokenizer.encode_ordinary(raw.read_text()), stride=64)
    assert from_rows == {"loss": expected.loss, "ppl": expected.perplexity, "n": expected.tokens}
    assert from_raw["n"] == expected.tokens and from_raw["loss"] != expected.loss  # another stride, another figure
    limited = evaluate_task(model, tokenizer, "wikitext", raw, limit=50)
    assert limited["n"] == 49


def test_item_errors(tmp_path, checkpoint, tokenizer):
    _, path, _ = checkpoint
    with pytest.raises(DataError, match="no usable label"):
        hellaswag_item({"ctx": "a", "endings": ["b", "c"], "label": ""}, "x")
    with pytest.raises(DataError, match="not the index"):
        hellaswag_item({"ctx": "a", "endings": ["b", "c"], "label": 2}, "x")
    with pytest.raises(DataError, match="at least two words"):
        lambada_item({"text": "word"}, "x")
    assert lambada_item({"text": "a b  c"}, "x").target == " c"
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"ctx": "a"}\nnot json\n')
    with pytest.raises(DataError, match="bad.jsonl:2 is not JSON"):
        evaluate_task(path, tokenizer, "hellaswag", bad)
    with pytest.raises(ConfigError, match="unknown task"):
        evaluate_task(path, tokenizer, "mmlu", bad)


# -- the command line --------------------------------------------------------------------------------


def run_eval(*args, **env) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", **env}
    return subprocess.run([sys.executable, "-m", "gpt2lab", "eval", *map(str, args)], capture_output=True, text=True, env=environment)


def test_cli_json_and_summary(checkpoint, tokenizer, tmp_path):
    _, path, _ = checkpoint
    data = write_jsonl(tmp_path / "h.jsonl", hellaswag_records(8, seed=5))
    out = run_eval("--model", path, "--task", "hellaswag", "--data", data, "--limit", 6, "--json", "--device", "cpu")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == evaluate_task(GPT2.from_pretrained(path), tokenizer, "hellaswag", data, limit=6)
    assert set(result) == {"acc", "acc_norm", "n"} and result["n"] == 6
    out = run_eval("--model", path, "--task", "hellaswag", "--data", data, "--quiet", "--device", "cpu")
    full = evaluate_task(GPT2.from_pretrained(path), tokenizer, "hellaswag", data)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"hellaswag: acc {full['acc']:.4f}  acc_norm {full['acc_norm']:.4f}  (8 items)"


def test_several_tasks_in_one_call_load_the_model_once(checkpoint, tokenizer, tmp_path, monkeypatch):
    _, path, _ = checkpoint
    folder = tmp_path / "evals"
    folder.mkdir()
    write_jsonl(folder / "piqa.jsonl", piqa_records(5, seed=31))
    write_jsonl(folder / "hellaswag.jsonl", hellaswag_records(4, seed=32))
    one_by_one = {task: evaluate_task(GPT2.from_pretrained(path), tokenizer, task, folder / f"{task}.jsonl") for task in ("piqa", "hellaswag")}
    loads = []
    monkeypatch.setattr(GPT2, "from_pretrained", classmethod(lambda cls, *a, real=GPT2.from_pretrained, **k: loads.append(a) or real(*a, **k)))
    assert evaluate_tasks(path, tokenizer, ["piqa", "hellaswag"], folder) == one_by_one and len(loads) == 1
    # HellaSwag's own file (ctx beside ctx_a and ctx_b, as in hellaswag_val.jsonl) serves both ways of scoring it
    full = [{**r, "ctx": r["ctx_a"] + " " + r["ctx_b"]} for r in hellaswag_full_records(4, seed=33)]
    both = tmp_path / "both"
    both.mkdir()
    write_jsonl(both / "hellaswag.jsonl", full)
    scores = evaluate_tasks(path, tokenizer, ["hellaswag", "hellaswag_harness"], both)
    assert scores == {task: evaluate_task(path, tokenizer, task, both / "hellaswag.jsonl") for task in scores}
    with pytest.raises(DataError, match=f"{folder} has no winogrande.jsonl; put each task's file there under that name"):
        evaluate_tasks(path, tokenizer, ["piqa", "winogrande"], folder)
    with pytest.raises(ConfigError, match="unknown task 'classify' among several"):
        evaluate_tasks(path, tokenizer, ["piqa", "classify"], folder)
    out = run_eval("--model", path, "--task", "piqa,hellaswag", "--data", folder, "--json", "--quiet", "--device", "cpu")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert [line.split(":")[0] for line in lines[:2]] == ["piqa", "hellaswag"] and json.loads(lines[-1]) == one_by_one
    out = run_eval("--model", path, "--task", "piqa,mmlu", "--quiet")
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "unknown --task mmlu; choose from hellaswag" in out.stderr
    out = run_eval("--model", path, "--task", "piqa,hellaswag", "--data", folder / "piqa.jsonl", "--quiet")
    assert out.returncode == 2 and "with several tasks --data is a folder of TASK.jsonl files" in out.stderr


def test_cli_errors(checkpoint, tmp_path):
    _, path, _ = checkpoint
    # no --data and no hub: one line that says to pass --data
    out = run_eval("--model", path, "--task", "lambada", "--quiet", "--device", "cpu")
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "pass --data FILE" in out.stderr, out.stderr
    out = run_eval("--model", path, "--quiet")
    assert out.returncode == 2 and "--data" in out.stderr and out.stderr.count("\n") == 1
    out = run_eval("--model", path, "--task", "lambada", "--data", tmp_path / "missing.jsonl", "--quiet")
    assert out.returncode == 2 and "no such file" in out.stderr


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_same_numbers_on_cpu_and_gpu(checkpoint, tokenizer, tmp_path):
    hf, path, hf_tok = checkpoint
    hella = write_jsonl(tmp_path / "h.jsonl", hellaswag_records(12))
    lamb = write_jsonl(tmp_path / "l.jsonl", lambada_records(hf, hf_tok, 10))
    for task, data in (("hellaswag", hella), ("lambada", lamb)):
        cpu = evaluate_task(path, tokenizer, task, data, device="cpu")
        gpu = evaluate_task(path, tokenizer, task, data, device="cuda")
        assert {k: v for k, v in cpu.items() if k != "ppl"} == {k: v for k, v in gpu.items() if k != "ppl"}
        assert cpu.get("ppl", 0) == pytest.approx(gpu.get("ppl", 0), rel=1e-4)


# -- during training (--eval-task) ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def gpt2_vocab_data(tmp_path_factory, tokenizer) -> Path:
    """A DATA_DIR of text in GPT-2's vocabulary, with its tokenizer saved as prepare saves it."""
    from gpt2lab.data import save_tokens

    rng = random.Random(7)
    ids = tokenizer.encode_ordinary(" ".join(sentence(rng, 12) + "." for _ in range(300)))
    path = tmp_path_factory.mktemp("gpt2_vocab_data")
    save_tokens(path, ids[: len(ids) * 9 // 10], ids[len(ids) * 9 // 10 :], n_vocab=tokenizer.n_vocab, eot_token=tokenizer.eot_token)
    tokenizer.save(path / "tokenizer")
    return path


def small_run(data: Path, out: Path, **kw):
    from gpt2lab.train import TrainConfig

    base = dict(data=data, out=out, n_layer=1, n_head=2, n_embd=32, block_size=32, batch_size=4, max_steps=6, eval_every=3,
                eval_batches=2, checkpoint_every=3, lr=3e-3, warmup_steps=2, progress=False, seed=0)
    return TrainConfig(**{**base, **kw})


def test_train_scores_the_task_at_every_evaluation(gpt2_vocab_data, tokenizer, tmp_path):
    from matplotlib.image import imread

    from gpt2lab.train import train

    items = write_jsonl(tmp_path / "h.jsonl", hellaswag_records(5, seed=8))
    result = train(small_run(gpt2_vocab_data, tmp_path / "run", eval_task="hellaswag", eval_task_data=str(items), eval_task_limit=4))
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    scored = [r for r in records if "hellaswag_acc_norm" in r]
    assert [r["step"] for r in scored] == [3, 6] and all("val_loss" in r and "hellaswag_acc" in r for r in scored)
    final = evaluate_task(result.model, tokenizer, "hellaswag", items, limit=4)
    assert scored[-1]["hellaswag_acc"] == round(final["acc"], 6) and scored[-1]["hellaswag_acc_norm"] == round(final["acc_norm"], 6)
    assert imread(tmp_path / "run" / "loss.png").shape[0] == 850  # the loss panel, the gradient norm's and the task's (4 + 1.5 + 3 in)
    # several tasks, from a folder of their files: each metric beside the others, equal to scoring the final model
    folder = tmp_path / "evals"
    folder.mkdir()
    write_jsonl(folder / "piqa.jsonl", piqa_records(4, seed=9))
    write_jsonl(folder / "winogrande.jsonl", winogrande_records(4, seed=10))
    write_jsonl(folder / "hellaswag.jsonl", hellaswag_full_records(4, seed=11))  # HellaSwag's file, read the harness's way
    tasks = ["piqa", "winogrande", "hellaswag_harness"]
    result = train(small_run(gpt2_vocab_data, tmp_path / "two", eval_task=",".join(tasks), eval_task_data=str(folder)))
    last = [json.loads(line) for line in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()][-1]
    final = evaluate_tasks(result.model, tokenizer, tasks, folder)
    names = ("piqa_acc", "piqa_acc_norm", "winogrande_acc", "hellaswag_harness_acc", "hellaswag_harness_acc_norm")
    assert {k: last[k] for k in names} == \
        {f"{t}_{k}": round(v, 6) for t, m in final.items() for k, v in m.items() if k != "n"}


def test_train_task_errors_come_before_training(gpt2_vocab_data, tmp_path):
    from gpt2lab.train import train

    with pytest.raises(DataError, match="no such file"):
        train(small_run(gpt2_vocab_data, tmp_path / "a", eval_task="lambada", eval_task_data=str(tmp_path / "missing.jsonl")))
    with pytest.raises(ConfigError, match="--eval-task must be one of"):
        train(small_run(gpt2_vocab_data, tmp_path / "b", eval_task="mmlu"))
    with pytest.raises(ConfigError, match="or several with commas, each once; got 'piqa,piqa'"):
        train(small_run(gpt2_vocab_data, tmp_path / "b", eval_task="piqa,piqa"))
    (tmp_path / "evals").mkdir()
    write_jsonl(tmp_path / "evals" / "piqa.jsonl", piqa_records(2))
    with pytest.raises(DataError, match="evals has no winogrande.jsonl"):  # several tasks: a folder that lacks one of them
        train(small_run(gpt2_vocab_data, tmp_path / "e", eval_task="piqa,winogrande", eval_task_data=str(tmp_path / "evals")))
    with pytest.raises(ConfigError, match="need --eval-task"):
        train(small_run(gpt2_vocab_data, tmp_path / "c", eval_task_limit=3))
    # a HellaSwag file given for PIQA: its first item says so before any step
    hellaswag_file = write_jsonl(tmp_path / "h.jsonl", hellaswag_records(2))
    with pytest.raises(DataError, match=f"{hellaswag_file} item 1: a PIQA record needs a text goal"):
        train(small_run(gpt2_vocab_data, tmp_path / "d", eval_task="piqa", eval_task_data=str(hellaswag_file)))
    assert not (tmp_path / "a" / "checkpoint.pt").exists() and not (tmp_path / "d" / "checkpoint.pt").exists()
