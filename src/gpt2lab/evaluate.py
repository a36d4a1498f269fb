"""Loss and perplexity of a model on a long text, with a sliding window.

A model sees at most ``block_size`` tokens. Cutting a long text into disjoint windows scores the
first tokens of each window with almost no context, which overstates the loss. A sliding window
moves by ``stride`` < ``block_size`` and scores only the tokens that are new in each window, each
with at least ``block_size - stride`` tokens of context. This is exactly the procedure of
transformers' perplexity guide (https://huggingface.co/docs/transformers/perplexity):

    for begin in 0, stride, 2*stride, ...:
        end = min(begin + block_size, n)
        score tokens [max(prev_end, begin + 1), end)   (token j is predicted from tokens begin..j-1)
        prev_end = end; stop when end == n

loss = mean negative log-likelihood per scored token (nats); perplexity = exp(loss).

``evaluate_task`` adds the benchmarks people quote for GPT-2 (HellaSwag, LAMBADA; ``gpt2lab.tasks``
scores them) and this perplexity on WikiText's standard test split.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .compatibility import check_data_fits_model, check_same_tokenizer, check_tokenizer_fits_model, check_window_fits_model
from .devices import autocast, parse_dtype, pick_device
from .errors import ConfigError, DataError
from .model import GPT2
from .tasks import ITEMS, TASKS, choose, hellaswag, lambada, load_records, perplexity, scoring

# what ``evaluate_task`` scores: the benchmarks, and a classifier's accuracy on a labelled file
EVAL_TASKS = (*TASKS, "classify")
HEAD_CHUNK = 2048  # positions whose logits scoring holds at once (GPT-2's vocabulary: 411 MB in fp32)


def token_losses(lm_head: Callable[[torch.Tensor], torch.Tensor], hidden: torch.Tensor, targets: torch.Tensor, vocab: int,
                 chunk: int | None = None) -> torch.Tensor:
    """Each position's cross-entropy against its target, never holding the whole logits.

    hidden (N, C): the final LayerNorm's output (``model(x, head=False)``); targets (N,); returns (N,)
    in fp32, 0 where the target is -100. ``lm_head`` (``model.lm_head``, called as the model's forward
    calls it: under the caller's autocast, with packed products on a CPU) runs ``chunk`` positions
    (``HEAD_CHUNK``) at a time, and only its first ``vocab`` columns enter the softmax (a training run
    may pad the vocabulary). 16 windows of 1024 tokens would otherwise hold logits of 1.6 GB in bf16,
    then 3.3 GB for their fp32 copy and as much for its log-softmax.
    """
    chunk = chunk or HEAD_CHUNK
    return torch.cat([
        F.cross_entropy(lm_head(hidden[i : i + chunk])[:, :vocab].float(), targets[i : i + chunk], reduction="none")  # (n_c,)
        for i in range(0, hidden.size(0), chunk)
    ])


@dataclass
class EvalResult:
    loss: float  # mean negative log-likelihood per scored token, in nats
    perplexity: float  # exp(loss)
    tokens: int  # tokens scored
    windows: int  # forward passes (windows) it took
    block_size: int
    stride: int

    def summary(self) -> str:
        return (
            f"loss {self.loss:.4f}  perplexity {self.perplexity:.2f}  "
            f"({self.tokens:,} tokens scored in {self.windows:,} windows of {self.block_size}, stride {self.stride})"
        )


def sliding_windows(n: int, block_size: int, stride: int) -> Iterator[tuple[int, int, int]]:
    """(begin, end, first scored position) of each window over ``n`` tokens (see the module docstring)."""
    prev_end = 0
    for begin in range(0, n, stride):
        end = min(begin + block_size, n)
        first = max(prev_end, begin + 1)
        if first < end:
            yield begin, end, first
        prev_end = end
        if end == n:
            break


@torch.no_grad()
def evaluate(
    model: GPT2,
    ids: np.ndarray | torch.Tensor | list[int],
    *,
    block_size: int | None = None,
    stride: int | None = None,
    batch_size: int = 4,
    dtype: torch.dtype | None = None,
    progress: bool = False,
    mask: np.ndarray | None = None,
) -> EvalResult:
    """Sliding-window loss and perplexity of ``model`` on the token ids ``ids`` (1-D, any length >= 2).

    Args:
        block_size: window length; default (and at most) the model's context.
        stride: how far each window moves; default ``block_size // 2`` (each scored token sees at
            least half a window of context). ``stride == block_size`` gives disjoint windows.
        batch_size: windows per forward pass.
        dtype: autocast precision for the forward pass (default: the model's own).
        mask: one flag per id, scoring only the ids flagged 1 (instruction data: the responses;
            the prompts are still read as context), as training counts them. Default: every id.
    """
    block_size = block_size or model.config.block_size
    check_window_fits_model(block_size, model.config)
    if block_size < 2:
        raise ConfigError("block_size must be at least 2")
    stride = stride or max(1, block_size // 2)
    if not 1 <= stride <= block_size:
        raise ConfigError(f"stride must be between 1 and block_size ({block_size}), got {stride}")
    if isinstance(ids, list):
        ids = np.asarray(ids, dtype=np.int64)
    n = len(ids)
    if mask is not None and len(mask) != n:
        raise DataError(f"the mask has {len(mask)} flags for {n} token ids; it needs one per id")
    if n < 2:
        raise DataError(f"the text has {n} token(s); it takes at least 2 to score one")
    vocab = model.config.vocab_size
    device = model.device
    plan = list(sliding_windows(n, block_size, stride))
    nll = torch.zeros((), dtype=torch.float64)
    scored = 0
    i = 0
    with scoring(model, len(plan), "eval", "window", progress) as bar:
        while i < len(plan):
            # windows of equal length go through together (all but the last one, usually)
            length = plan[i][1] - plan[i][0]
            group = [plan[i]]
            while i + len(group) < len(plan) and len(group) < batch_size and plan[i + len(group)][1] - plan[i + len(group)][0] == length:
                group.append(plan[i + len(group)])
            rows = np.stack([np.asarray(ids[b:e], dtype=np.int64) for b, e, _ in group])  # (b, L)
            x = torch.from_numpy(rows).to(device)
            if int(x.max()) >= vocab:
                raise DataError(f"token id {int(x.max())} is outside the model's vocabulary of {vocab}: tokenizer mismatch")
            with autocast(device, dtype):
                hidden = model(x, head=False)  # (b, L, C)
                # position t's logits predict token t + 1
                per_token = token_losses(model.lm_head, hidden[:, :-1].flatten(0, 1), x[:, 1:].flatten(), vocab).view(len(group), -1)  # (b, L-1)
            for row, (begin, _, first) in enumerate(group):
                keep = per_token[row, first - begin - 1 :]  # targets first..end-1
                if mask is not None:
                    end = begin + length
                    keep = keep[torch.from_numpy(np.asarray(mask[first:end], dtype=bool)).to(keep.device)]
                nll += keep.double().sum().cpu()
                scored += keep.numel()
            i += len(group)
            if bar is not None:
                bar.update(len(group))
    if scored == 0:
        raise DataError("no token to score: the mask flags none of them")
    loss = (nll / scored).item()
    return EvalResult(loss, perplexity(loss), scored, len(plan), block_size, stride)


def evaluate_path(
    model: GPT2 | str | os.PathLike,
    data: str | os.PathLike,
    *,
    tokenizer: str | os.PathLike | None = None,
    block_size: int | None = None,
    stride: int | None = None,
    batch_size: int = 4,
    max_tokens: int | None = None,
    device: str | torch.device | None = None,
    dtype: str | None = None,
    progress: bool = False,
) -> EvalResult:
    """``gpt2lab eval``: a model (or its directory / hub id) on a prepared DATA_DIR's validation
    split or on a text file.

    A text file is tokenised with ``tokenizer``, else the model directory's own tokenizer, else
    GPT-2's. A DATA_DIR's ids are checked against the model's vocabulary (and its tokenizer, when
    the model directory has one): the same checks training makes (``gpt2lab.compatibility``).

    ``device``: where a model named by path is loaded (default ``"auto"``: CUDA, then MPS, then the
    CPU); a ``GPT2`` passed in stays where it is unless a device is given. ``dtype``: the autocast
    precision (fp32, bf16, fp16 or auto; default fp32).
    """
    from .batches import META, open_data

    model, model_dir = _resolve_model(model, device)
    amp = parse_dtype(dtype, model.device)
    data = Path(data)
    val_mask = None
    if data.is_dir():
        if not (data / META).is_file():
            raise DataError(f"{data} is a folder without {META}: pass a prepared DATA_DIR (gpt2lab prepare) or a text file")
        prepared = open_data(data)
        check_data_fits_model(prepared.meta, model.config, data)
        if model_dir is not None:
            check_same_tokenizer(model_dir, prepared.meta, data)
        ids = prepared.val
        val_mask = prepared.val_mask  # instruction data: score the responses, as training does
        if len(ids) < 2:
            raise DataError(f"{data} has no validation tokens (prepared with --val-fraction 0?); evaluate a text file instead")
    elif data.is_file():
        tok = _resolve_tokenizer(tokenizer, model_dir, model)
        text = data.read_bytes().decode("utf-8", errors="replace")
        ids = np.asarray(tok.encode_ordinary(text), dtype=np.int64)
    else:
        raise DataError(f"no such data directory or text file: {data}")
    if max_tokens is not None:
        ids = ids[:max_tokens]
        val_mask = val_mask[:max_tokens] if val_mask is not None else None
    return evaluate(model, ids, block_size=block_size, stride=stride, batch_size=batch_size, dtype=amp, progress=progress, mask=val_mask)


def _resolve_model(model: GPT2 | str | os.PathLike, device: str | torch.device | None) -> tuple[GPT2, Path | None]:
    """A ``GPT2`` as given (moved only when ``device`` is given), or loaded from its directory / hub
    id onto ``device`` (default ``"auto"``); with the directory it came from, if any."""
    from .weights import resolve_checkpoint_dir

    if isinstance(model, GPT2):
        return (model.to(pick_device(device)) if device is not None else model), None
    model_dir = resolve_checkpoint_dir(model)
    return GPT2.from_pretrained(str(model_dir), device=pick_device(device)), model_dir


def _resolve_tokenizer(tokenizer: Any, model_dir: Path | None, model: GPT2) -> Any:
    """``tokenizer`` itself (a ``Tokenizer``) or loaded from its path; else the model directory's own,
    else GPT-2's; checked to produce only ids the model has."""
    from .data import load_tokenizer
    from .tokenizer import Tokenizer

    if tokenizer is None or isinstance(tokenizer, (str, os.PathLike)):
        tokenizer = load_tokenizer(tokenizer) if tokenizer is not None or model_dir is None else Tokenizer.from_pretrained(model_dir)
    check_tokenizer_fits_model(tokenizer.n_vocab, model.config)
    return tokenizer


def wikitext_text(data: str | os.PathLike | None) -> str:
    """WikiText's test split as one text: a raw file (``wiki.test.raw``) as it is; a JSONL file's or
    the hub's rows (each a line of the raw file, blank lines included) joined back, as transformers'
    perplexity guide joins them (``"\\n\\n".join(rows)``)."""
    if data is not None and Path(data).suffix != ".jsonl":
        path = Path(data)
        if not path.is_file():
            raise DataError(f"no such file: {path}")
        return path.read_bytes().decode("utf-8", errors="replace")
    rows = load_records("wikitext", data)
    return "\n\n".join(str(r.get("text", "")) for r in rows)


def evaluate_task(
    model: GPT2 | str | os.PathLike,
    tokenizer: Any = None,
    task: str = "hellaswag",
    data: str | os.PathLike | None = None,
    limit: int | None = None,
    *,
    batch_size: int = 16,
    block_size: int | None = None,
    stride: int | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
    progress: bool = False,
    text_field: str = "text",
    label_field: str = "label",
) -> dict[str, float]:
    """A benchmark score of ``model``: ``{"acc", "acc_norm", "n"}`` for HellaSwag (either way), ARC and PIQA,
    ``{"acc", "n"}`` for Winogrande, ``{"acc", "ppl", "n"}`` for LAMBADA, ``{"loss", "ppl", "n"}`` for
    WikiText (``n``: items scored; for WikiText, tokens);
    ``{"acc", "loss", "n"}`` for ``classify``: a ``GPT2Classifier`` (or its directory, written by
    ``train --task classify``) on ``data``, a .csv / .jsonl file of ``text`` and ``label`` columns
    (``text_field`` / ``label_field``), whose labels must be the model's.

    What each number means is in ``gpt2lab.tasks``. ``data``: the task's file (JSONL; WikiText also a
    raw text file); ``None`` loads the standard split from the Hugging Face hub. ``limit``: the first
    N items (WikiText: the first N tokens). ``tokenizer``: a ``Tokenizer`` or a path; ``None`` takes
    the model directory's own, else GPT-2's. ``batch_size``: sequences (WikiText: windows) per forward
    pass; ``block_size`` and ``stride`` shape WikiText's sliding window (``evaluate``).
    Runs under ``torch.no_grad``; the model is left in the mode it came in.
    """
    if task not in EVAL_TASKS:
        raise ConfigError(f"unknown task {task!r}; choose one of {', '.join(EVAL_TASKS)}")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
    if task == "classify":
        return _classify(model, tokenizer, data, limit, batch_size=batch_size, device=device, dtype=dtype, progress=progress,
                         text_field=text_field, label_field=label_field)
    model, model_dir = _resolve_model(model, device)
    amp = parse_dtype(dtype, model.device)
    tokenizer = _resolve_tokenizer(tokenizer, model_dir, model)
    if task == "wikitext":
        if limit is not None and limit < 2:
            raise DataError(f"limit must be at least 2 tokens for WikiText, got {limit}")
        ids = np.asarray(tokenizer.encode_ordinary(wikitext_text(data)), dtype=np.int64)[:limit]
        result = evaluate(model, ids, block_size=block_size, stride=stride, batch_size=batch_size, dtype=amp, progress=progress)
        return {"loss": result.loss, "ppl": result.perplexity, "n": result.tokens}
    records = load_records(task, data, limit)
    where = str(data) if data is not None else task
    items = [ITEMS[task](r, f"{where} item {i + 1}") for i, r in enumerate(records)]
    if task == "hellaswag":
        return hellaswag(model, tokenizer, items, batch_size=batch_size, dtype=amp, progress=progress)
    if task == "lambada":
        return lambada(model, tokenizer, items, batch_size=batch_size, dtype=amp, progress=progress)
    return choose(model, tokenizer, items, batch_size=batch_size, dtype=amp, progress=progress, desc=task)


def task_file(directory: str | os.PathLike, task: str) -> Path:
    """A benchmark's file in a folder of them: ``{task}.jsonl`` (WikiText: also ``wiki.test.raw``)."""
    # (HellaSwag's file serves both ways of scoring it)
    names = [f"{task}.jsonl"] + (["wiki.test.raw"] if task == "wikitext" else ["hellaswag.jsonl"] if task == "hellaswag_harness" else [])
    for name in names:
        if (Path(directory) / name).is_file():
            return Path(directory) / name
    raise DataError(f"{directory} has no {' or '.join(names)}; put each task's file there under that name "
                    "(or name no folder: the tasks then come from the Hugging Face hub)")


def evaluate_tasks(
    model: GPT2 | str | os.PathLike,
    tokenizer: Any = None,
    tasks: Sequence[str] = ("hellaswag",),
    data: str | os.PathLike | None = None,
    limit: int | None = None,
    **options: Any,
) -> dict[str, dict[str, float]]:
    """Several benchmarks of one model, loaded once: ``{task: evaluate_task(...)}``, in the order given.
    ``data``: ``None`` (every task from the hub) or a folder holding each task's file (``task_file``);
    ``options``: ``evaluate_task``'s keywords (``batch_size``, ``device``, ``dtype``, ``progress``...)."""
    if not tasks or len(set(tasks)) != len(tasks):
        raise ConfigError(f"name each task once, at least one: got {list(tasks)}")
    for task in tasks:
        if task not in TASKS:
            raise ConfigError(f"unknown task {task!r} among several; choose from {', '.join(TASKS)} (classify runs alone)")
    files = {task: task_file(data, task) if data is not None else None for task in tasks}  # every file found before any scoring
    model, model_dir = _resolve_model(model, options.pop("device", None))
    tokenizer = _resolve_tokenizer(tokenizer, model_dir, model)
    return {task: evaluate_task(model, tokenizer, task, files[task], limit, **options) for task in tasks}


def _classify(model: GPT2 | str | os.PathLike, tokenizer: Any, data: str | os.PathLike | None, limit: int | None, *,
              batch_size: int, device: str | torch.device | None, dtype: torch.dtype | str | None, progress: bool,
              text_field: str, label_field: str) -> dict[str, float]:
    """``evaluate_task(..., "classify", ...)``: the classifier and its tokenizer, then ``classify_file``."""
    from .classify import GPT2Classifier, classify_file

    if data is None:
        raise DataError("classify needs --data FILE: a .csv or .jsonl file with text and label columns")
    if limit is not None and limit < 1:
        raise DataError(f"limit must be a positive number of items, got {limit}")
    model_dir = None
    if isinstance(model, GPT2Classifier):
        classifier = model.to(pick_device(device)) if device is not None else model
    elif isinstance(model, GPT2):
        raise ConfigError("classify scores a GPT2Classifier (gpt2lab.classify); this is a language model")
    else:
        from .weights import resolve_checkpoint_dir

        model_dir = resolve_checkpoint_dir(model)
        classifier = GPT2Classifier.from_pretrained(model_dir, device=pick_device(device))
    tokenizer = _resolve_tokenizer(tokenizer, model_dir, classifier)
    return classify_file(classifier, tokenizer, data, limit, text_field=text_field, label_field=label_field,
                         batch_size=batch_size, dtype=parse_dtype(dtype, classifier.device), progress=progress)


__all__ = ["EVAL_TASKS", "EvalResult", "evaluate", "evaluate_path", "evaluate_task", "evaluate_tasks", "task_file", "sliding_windows",
           "wikitext_text"]
