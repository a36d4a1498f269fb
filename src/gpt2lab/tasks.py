"""Downstream benchmarks, scored the way GPT-2 is scored in the papers and in llm.c: a model reads a
context and we ask how likely it finds each candidate continuation.

Everything here reduces to one question, answered in batches by ``score_continuations``: given
context ids and continuation ids, what total log-probability does the model give the continuation,
token by token, and is every continuation token the model's first choice (its argmax)?

    HellaSwag (completion style). Context = the item's ``ctx``; the four candidates are
        ``" " + ending``. ``acc``: the ending with the highest total log-probability (lowest total
        loss) is the labelled one. ``acc_norm``: the same with the mean log-probability per ending
        token, which stops long endings from losing merely for being long. Published figures for
        the released 124M GPT-2 with this scheme: acc 0.2859, acc_norm 0.2955 (10,042 validation
        items, llm.c's hellaswag.py). Chance is 0.25.
    LAMBADA (OpenAI's version). Context = the text up to its last space, target = ``" " + last word``.
        ``acc``: every target token is the argmax given what precedes it (the word would be produced
        by greedy decoding); ``ppl`` = exp(-mean over documents of the target's total log-probability):
        a perplexity per *word*, not per token.
    WikiText: the sliding-window token perplexity of ``gpt2lab.evaluate.evaluate`` (lives there).

ARC (Easy and Challenge), PIQA and Winogrande are scored as EleutherAI's lm-evaluation-harness scores
them zero-shot, so the numbers sit beside the figures it publishes:

    ARC. Context ``"Question: {question}\nAnswer:"``, candidates ``" " + choice`` (3 to 5 of them).
        ``acc``: the highest total log-probability; ``acc_norm``: the highest log-probability per
        *character* of the choice (the harness's normalisation, which does not depend on the
        tokenizer; HellaSwag's above is llm.c's, per token).
    PIQA. Context ``"Question: {goal}\nAnswer:"``, candidates ``" " + sol1`` and ``" " + sol2``; ``acc``
        and ``acc_norm`` as for ARC. Chance is 0.5.
    HellaSwag, the harness's way (``hellaswag_harness``). Context ``"{activity_label}: {ctx_a} {Ctx_b}"``,
        candidates ``" " + ending``, both cleaned of WikiHow's ``[title]`` / ``[step]`` marks; ``acc_norm``
        per character. These are the figures lm-evaluation-harness and the leaderboards built on it
        report; ``hellaswag`` above gives llm.c's (0.2955), which from-scratch training runs quote.
    Winogrande. The sentence has a blank (``_``) that one of two names fills. Each option makes its own
        context (the sentence up to the blank, the option in it); the candidate is the same for both:
        ``" " +`` the rest of the sentence. ``acc``: the option under which the rest is more likely.
        Chance is 0.5.

Inputs are the datasets' JSONL files (one record a line) or, when the network allows, the Hugging
Face hub's copies through the ``datasets`` library (imported only then).

Batching: requests are sorted by length (longest first) and padded on the right. Attention is causal,
so padding after a sequence cannot change any position before it: no attention mask is needed and a
batched score equals the one-at-a-time score to float rounding.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from . import hub, kernels
from .devices import autocast
from .errors import DataError
from .model import GPT2

TASKS = ("hellaswag", "lambada", "wikitext", "arc_easy", "arc_challenge", "piqa", "winogrande", "hellaswag_harness")

# (dataset, configuration, split) of each task on the Hugging Face hub
HUB = {
    "hellaswag": ("Rowan/hellaswag", None, "validation"),
    "lambada": ("EleutherAI/lambada_openai", "default", "test"),
    "wikitext": ("Salesforce/wikitext", "wikitext-2-raw-v1", "test"),
    "arc_easy": ("allenai/ai2_arc", "ARC-Easy", "test"),
    "arc_challenge": ("allenai/ai2_arc", "ARC-Challenge", "test"),
    "piqa": ("baber/piqa", None, "validation"),  # the original ybisk/piqa is a loading script, which datasets 4 no longer runs
    "winogrande": ("allenai/winogrande", "winogrande_xl", "validation"),
    "hellaswag_harness": ("Rowan/hellaswag", None, "validation"),
}

# what a --data file holds, for the error that asks for one
FILE_FORMAT = {
    "hellaswag": "a JSONL file with ctx, endings and label per line",
    "lambada": "a JSONL file with text per line",
    "wikitext": "a text file (wiki.test.raw) or a JSONL file with text per line",
    "arc_easy": "a JSONL file with question, choices (text and label lists) and answerKey per line, or AI2's own ARC JSONL",
    "arc_challenge": "a JSONL file with question, choices (text and label lists) and answerKey per line, or AI2's own ARC JSONL",
    "piqa": "a JSONL file with goal, sol1, sol2 and label per line",
    "winogrande": "a JSONL file with sentence (one _ blank), option1, option2 and answer (1 or 2) per line",
    "hellaswag_harness": "HellaSwag's JSONL file (hellaswag_val.jsonl: activity_label, ctx_a, ctx_b, endings and label per line)",
}


# ---------------------------------------------------------------------------------------------
# Items
# ---------------------------------------------------------------------------------------------


@dataclass
class MultipleChoice:
    """One HellaSwag item: a context, candidate endings, the index of the right one."""

    context: str
    endings: list[str]
    label: int


@dataclass
class Cloze:
    """One LAMBADA item: a context and the word that ends it (with its leading space)."""

    context: str
    target: str


def hellaswag_item(record: dict[str, Any], where: str) -> MultipleChoice:
    """A HellaSwag record as llm.c's JSONL writes it (``ctx``, ``endings``, ``label``) or as the hub
    stores it (the same, or only ``ctx_a`` / ``ctx_b``; the label a string)."""
    if "ctx" in record:
        context = record["ctx"]
    elif "ctx_a" in record:
        # the hub's ctx is ctx_a + " " + ctx_b with ctx_b capitalised (lm-evaluation-harness does the same)
        ctx_b = record.get("ctx_b") or ""
        context = record["ctx_a"] + (" " + ctx_b[:1].upper() + ctx_b[1:] if ctx_b else "")
    else:
        raise DataError(f"{where}: a HellaSwag record needs ctx (or ctx_a and ctx_b), endings and label")
    if not isinstance(context, str):
        raise DataError(f"{where}: a HellaSwag record needs a text ctx")
    endings, label = _endings_and_label(record, where)
    return MultipleChoice(context, endings, label)


def _endings_and_label(record: dict[str, Any], where: str) -> tuple[list[str], int]:
    """A HellaSwag record's endings and the index of the right one."""
    endings = record.get("endings")
    if not isinstance(endings, list) or len(endings) < 2 or not all(isinstance(e, str) for e in endings):
        raise DataError(f"{where}: a HellaSwag record needs a list of at least two text endings")
    try:
        label = int(record["label"])
    except (KeyError, TypeError, ValueError):
        raise DataError(f"{where}: no usable label ({record.get('label')!r}); the test split has none, use the validation split") from None
    if not 0 <= label < len(endings):
        raise DataError(f"{where}: label {label} is not the index of one of the {len(endings)} endings")
    return endings, label


def lambada_item(record: dict[str, Any], where: str) -> Cloze:
    """A LAMBADA record (``text``): everything before the last space is the context."""
    text = record.get("text")
    if not isinstance(text, str) or " " not in text.strip(" "):
        raise DataError(f"{where}: a LAMBADA record needs a text of at least two words")
    context, word = text.rsplit(" ", 1)
    return Cloze(context, " " + word)


@dataclass
class Choices:
    """One item of ARC, PIQA or Winogrande: each option a (context, continuation) pair to score, the index
    of the right one, and the characters ``acc_norm`` divides each option's log-probability by (None:
    the task reports ``acc`` only)."""

    options: list[tuple[str, str]]
    label: int
    lengths: list[int] | None


def _text(record: dict[str, Any], field: str, where: str, task: str) -> str:
    value = record.get(field)
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{where}: a {task} record needs a text {field}")
    return value


def arc_item(record: dict[str, Any], where: str) -> Choices:
    """An ARC record as the hub stores it (``question``, ``choices: {text: [...], label: [...]}``,
    ``answerKey``) or as AI2's own files do (``question: {stem, choices: [{text, label}, ...]}``)."""
    question = record.get("question")
    if isinstance(question, dict):  # AI2's JSONL
        raw = question.get("choices") or []
        texts, labels = [c.get("text") for c in raw], [c.get("label") for c in raw]
        question = question.get("stem")
    else:
        choices = record.get("choices") or {}
        texts, labels = (choices.get("text") or [], choices.get("label") or []) if isinstance(choices, dict) else ([], [])
    if not isinstance(question, str) or len(texts) < 2 or len(texts) != len(labels) or not all(isinstance(t, str) for t in texts):
        raise DataError(f"{where}: an ARC record needs a text question and at least two choices, each a text and a label")
    key = record.get("answerKey")
    if key not in labels:
        raise DataError(f"{where}: answerKey {key!r} is not one of the choices' labels {labels}")
    context = f"Question: {question}\nAnswer:"
    return Choices([(context, " " + t) for t in texts], labels.index(key), [len(t) for t in texts])


def _wikihow_clean(text: str) -> str:
    """The harness's clean-up of HellaSwag text: WikiHow's ``[title]`` becomes a full stop, other
    ``[...]`` marks go, double spaces become one (its ``preprocess``, to the character)."""
    text = text.strip().replace(" [title]", ". ")
    return re.sub(r"\[.*?\]", "", text).replace("  ", " ")


def hellaswag_harness_item(record: dict[str, Any], where: str) -> Choices:
    """A HellaSwag record read as lm-evaluation-harness reads it: HellaSwag's own fields
    (``activity_label``, ``ctx_a``, ``ctx_b``, ``endings``, ``label``), as in its ``hellaswag_val.jsonl``
    and on the hub (llm.c's file has them too; a file with ``ctx`` alone serves ``hellaswag``)."""
    activity, ctx_a, ctx_b = (record.get(f) for f in ("activity_label", "ctx_a", "ctx_b"))
    if not (isinstance(activity, str) and isinstance(ctx_a, str) and isinstance(ctx_b, str)):
        raise DataError(f"{where}: hellaswag_harness needs HellaSwag's activity_label, ctx_a and ctx_b (as in hellaswag_val.jsonl "
                        "or on the hub); a file with ctx alone serves --task hellaswag")
    endings, label = _endings_and_label(record, where)
    # str.capitalize also lowercases the rest of ctx_b: the harness's prompt, to the character
    context = _wikihow_clean(f"{activity}: {ctx_a} {ctx_b.capitalize()}")
    choices = [_wikihow_clean(e) for e in endings]
    return Choices([(context, " " + c) for c in choices], label, [len(c) for c in choices])


def piqa_item(record: dict[str, Any], where: str) -> Choices:
    """A PIQA record: ``goal``, ``sol1``, ``sol2``, ``label`` (0 or 1)."""
    goal, solutions = _text(record, "goal", where, "PIQA"), [_text(record, f, where, "PIQA") for f in ("sol1", "sol2")]
    label = record.get("label")
    if label not in (0, 1, "0", "1"):
        raise DataError(f"{where}: a PIQA record needs label 0 or 1, got {label!r} (the test split has none: use validation)")
    context = f"Question: {goal}\nAnswer:"
    return Choices([(context, " " + sol) for sol in solutions], int(label), [len(sol) for sol in solutions])


def winogrande_item(record: dict[str, Any], where: str) -> Choices:
    """A Winogrande record: ``sentence`` with one ``_``, ``option1``, ``option2``, ``answer`` ("1" or "2")."""
    sentence = _text(record, "sentence", where, "Winogrande")
    options = [_text(record, f, where, "Winogrande") for f in ("option1", "option2")]
    if sentence.count("_") != 1:
        raise DataError(f"{where}: a Winogrande sentence needs exactly one _ (the blank an option fills)")
    answer = record.get("answer")
    if str(answer) not in ("1", "2"):
        raise DataError(f"{where}: a Winogrande record needs answer 1 or 2, got {answer!r} (the test split has none: use validation)")
    blank = sentence.index("_")
    rest = " " + sentence[blank + 1 :].strip()
    return Choices([(sentence[:blank] + option, rest) for option in options], int(str(answer)) - 1, None)


# each task's record -> item reader (WikiText is plain text: it has none)
ITEMS: dict[str, Any] = {"hellaswag": hellaswag_item, "lambada": lambada_item, "arc_easy": arc_item, "arc_challenge": arc_item,
                         "piqa": piqa_item, "winogrande": winogrande_item, "hellaswag_harness": hellaswag_harness_item}


def read_jsonl(path: str | os.PathLike, limit: int | None = None) -> list[dict[str, Any]]:
    """The records of a JSONL file (blank lines skipped), at most ``limit`` of them."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"no such file: {path}")
    records: list[dict[str, Any]] = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if limit is not None and len(records) >= limit:
                break
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{path}:{number} is not JSON ({err.msg}); pass a JSONL file, one record a line") from None
            if not isinstance(record, dict):
                raise DataError(f"{path}:{number} is not a JSON object")
            records.append(record)
    return records


def hub_records(task: str, limit: int | None = None) -> list[dict[str, Any]]:
    """The task's standard split from the Hugging Face hub (needs ``datasets`` and the network, or its cache)."""
    name, config, split = HUB[task]
    ds = hub.load_dataset(name, split, config, advice=f"pass --data FILE ({FILE_FORMAT[task]})")
    if limit is not None:
        ds = ds.select(range(min(limit, len(ds))))
    return [dict(r) for r in ds]


def load_records(task: str, data: str | os.PathLike | None, limit: int | None = None) -> list[dict[str, Any]]:
    """The task's records from a JSONL file, or from the hub when ``data`` is None."""
    if limit is not None and limit < 1:
        raise DataError(f"limit must be a positive number of items, got {limit}")
    return hub_records(task, limit) if data is None else read_jsonl(data, limit)


# ---------------------------------------------------------------------------------------------
# Scoring continuations
# ---------------------------------------------------------------------------------------------


@dataclass
class Continuation:
    """How the model scores one continuation after its context."""

    logprob: float  # total log-probability of the continuation's tokens (nats; <= 0)
    tokens: int  # how many tokens the continuation has
    greedy: bool  # every continuation token is the model's argmax at its position


def encode_request(tokenizer: Any, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """(context ids, continuation ids), encoded separately, as llm.c and the GPT-2 paper do. An empty
    context becomes ``<|endoftext|>``: the first continuation token needs something to be predicted from."""
    context_ids = tokenizer.encode_ordinary(context) or [tokenizer.eot_token]
    return context_ids, tokenizer.encode_ordinary(continuation)


@contextlib.contextmanager
def scoring(model: GPT2, total: int, desc: str, unit: str, progress: bool) -> Iterator[Any]:
    """The setting every scoring loop runs in: eval mode (no dropout), the packed products where they
    pay (``kernels.packed``), and a tqdm bar of ``total`` (``None`` without ``progress``); the model
    goes back to the mode it came in, the bar is closed, whatever happens."""
    was_training = model.training
    model.eval()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True)
    try:
        with kernels.packed(model):  # on a CPU, oneDNN-packed weights where they pay; elsewhere nothing
            yield bar
    finally:
        if bar is not None:
            bar.close()
        model.train(was_training)


@torch.no_grad()
def score_continuations(
    model: GPT2,
    requests: Sequence[tuple[list[int], list[int]]],
    *,
    batch_size: int = 16,
    dtype: torch.dtype | None = None,
    progress: bool = False,
    desc: str = "score",
) -> list[Continuation]:
    """Score each (context ids, continuation ids) pair; the results come back in request order.

    A pair longer than the model's context keeps its last ``block_size + 1`` tokens (the context is
    cut from the left; the continuation is always whole). Requests run longest first, ``batch_size``
    rows per forward pass, padded on the right (see the module docstring for why no mask is needed).
    """
    block = model.config.block_size
    vocab = model.config.vocab_size
    rows: list[tuple[list[int], int]] = []  # (input ids, how many continuation tokens end it)
    for context, continuation in requests:
        if not continuation:
            raise DataError("a continuation encodes to no tokens; nothing to score")
        if len(continuation) > block:
            raise DataError(f"a continuation of {len(continuation)} tokens is longer than the model's context of {block}")
        sequence = (context + continuation)[-(block + 1) :]
        if max(sequence) >= vocab:
            raise DataError(f"token id {max(sequence)} is outside the model's vocabulary of {vocab}: tokenizer mismatch")
        rows.append((sequence, len(continuation)))
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i][0]))  # longest first: padding stays small
    results: list[Continuation | None] = [None] * len(rows)
    device = model.device
    with scoring(model, len(rows), desc, "seq", progress) as bar:
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            width = len(rows[batch[0]][0]) - 1  # inputs drop the last token (it is only a target)
            x = torch.zeros(len(batch), width, dtype=torch.long)  # (b, T), right-padded with id 0
            rows_index: list[int] = []  # for each continuation token: its row in the batch,
            positions: list[int] = []  # the input position whose logits predict it,
            targets: list[int] = []  # and its id
            for r, i in enumerate(batch):
                sequence, n_cont = rows[i]
                x[r, : len(sequence) - 1] = torch.tensor(sequence[:-1])
                first = len(sequence) - 1 - n_cont  # the input position whose logits predict the first continuation token
                rows_index += [r] * n_cont
                positions += range(first, first + n_cont)
                targets += sequence[-n_cont:]
            with autocast(device, dtype):
                hidden = model(x.to(device), head=False)  # (b, T, C)
                # the LM head only where a continuation token is predicted: the other positions' logits would go unread
                picked = model.lm_head(hidden[torch.tensor(rows_index, device=device), torch.tensor(positions, device=device)]).float()  # (n, V)
            target = torch.tensor(targets, device=device)  # (n,)
            logprobs = F.log_softmax(picked, dim=-1).gather(1, target[:, None])[:, 0].double().cpu()  # (n,)
            is_argmax = (picked.argmax(dim=-1) == target).cpu()  # (n,)
            offset = 0
            for i in batch:
                n_cont = rows[i][1]
                results[i] = Continuation(logprobs[offset : offset + n_cont].sum().item(), n_cont,
                                          bool(is_argmax[offset : offset + n_cont].all()))
                offset += n_cont
            if bar is not None:
                bar.update(len(batch))
    return [r for r in results if r is not None]


def perplexity(mean_nll: float) -> float:
    """exp(mean negative log-likelihood), infinite rather than an OverflowError for a hopeless model."""
    return math.exp(mean_nll) if mean_nll < 700 else float("inf")


# ---------------------------------------------------------------------------------------------
# The tasks
# ---------------------------------------------------------------------------------------------


def hellaswag(model: GPT2, tokenizer: Any, items: Sequence[MultipleChoice], *, batch_size: int = 16,
              dtype: torch.dtype | None = None, progress: bool = False) -> dict[str, float]:
    """``acc`` and ``acc_norm`` over ``items`` (see the module docstring), and ``n``: each ending
    ``" " + ending`` after the context, ``acc_norm`` per token (llm.c's)."""
    if not items:
        raise DataError("no HellaSwag items to score")
    options = [Choices([(item.context, " " + ending) for ending in item.endings], item.label, None) for item in items]
    return choose(model, tokenizer, options, batch_size=batch_size, dtype=dtype, progress=progress, desc="hellaswag", per_token=True)


def lambada(model: GPT2, tokenizer: Any, items: Sequence[Cloze], *, batch_size: int = 16,
            dtype: torch.dtype | None = None, progress: bool = False) -> dict[str, float]:
    """``acc`` and ``ppl`` over ``items`` (see the module docstring), and ``n``."""
    if not items:
        raise DataError("no LAMBADA items to score")
    requests = [encode_request(tokenizer, item.context, item.target) for item in items]
    scores = score_continuations(model, requests, batch_size=batch_size, dtype=dtype, progress=progress, desc="lambada")
    mean_nll = -math.fsum(s.logprob for s in scores) / len(scores)
    return {"acc": sum(s.greedy for s in scores) / len(scores), "ppl": perplexity(mean_nll), "n": len(scores)}


def choose(model: GPT2, tokenizer: Any, items: Sequence[Choices], *, batch_size: int = 16, dtype: torch.dtype | None = None,
           progress: bool = False, desc: str = "score", per_token: bool = False) -> dict[str, float]:
    """``acc`` over multiple-choice ``items`` (the option of the highest total log-probability), and
    ``n``; ``acc_norm`` too where the items give lengths (the highest log-probability per character:
    ARC, PIQA) or with ``per_token`` (per token of the option: HellaSwag). See the module docstring."""
    if not items:
        raise DataError(f"no {desc} items to score")
    requests = [encode_request(tokenizer, context, continuation) for item in items for context, continuation in item.options]
    scores = score_continuations(model, requests, batch_size=batch_size, dtype=dtype, progress=progress, desc=desc)
    correct = correct_norm = 0
    offset = 0
    for item in items:
        mine = scores[offset : offset + len(item.options)]
        offset += len(item.options)
        # the highest log-probability (the lowest loss); max() keeps the first of equals, as argmax does
        correct += max(range(len(mine)), key=lambda k: mine[k].logprob) == item.label
        lengths = [s.tokens for s in mine] if per_token else item.lengths
        if lengths is not None:
            correct_norm += max(range(len(mine)), key=lambda k: mine[k].logprob / lengths[k]) == item.label
    metrics = {"acc": correct / len(items)}
    if per_token or items[0].lengths is not None:
        metrics["acc_norm"] = correct_norm / len(items)
    return {**metrics, "n": len(items)}


__all__ = [
    "TASKS", "HUB", "MultipleChoice", "Cloze", "Choices", "Continuation", "hellaswag_item", "lambada_item",
    "arc_item", "piqa_item", "winogrande_item", "hellaswag_harness_item", "ITEMS", "choose", "read_jsonl", "hub_records",
    "load_records", "encode_request", "perplexity", "scoring", "score_continuations", "hellaswag", "lambada",
]
