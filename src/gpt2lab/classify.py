"""Text classification with GPT-2: a new head on the hidden state of each text's last real token.

GPT-2 reads left to right, so only the last token has seen the whole text: its final hidden state
(the ``ln_f.out`` hook point, after the last LayerNorm) is what a classifier reads. The head is one
matrix, ``score`` (C -> number of labels), with no bias, exactly transformers'
``GPT2ForSequenceClassification``:

    h = GPT2 body(ids)                  (B, T, C)   ln_f.out
    h_last = h[b, last real position]   (B, C)
    logits = h_last @ scoreᵀ            (B, num_labels)
    loss = cross-entropy(logits, label)

Texts of a batch have different lengths; they are padded on the right with ``pad_token_id``.
GPT-2 has no padding token, so it is ``<|endoftext|>`` (50256), as transformers users set it
(``pad_token_id = eos_token_id``). Attention is causal, so padding after a text never changes its
last real token's state, and no attention mask is needed. The last real position is found as
transformers finds it: the last position whose id is not the pad id.

Data: a ``.csv`` file (a header row) or a ``.jsonl`` file (one object a line) with a ``text`` and
a ``label`` column (other names: ``text_field`` / ``label_field``). Labels are any strings; their
ids are their sorted order, saved with the model as ``id2label`` / ``label2id``.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import GPT2Config
from .devices import autocast
from .errors import CheckpointError, DataError
from .model import GPT2

log = logging.getLogger(__name__)

ARCHITECTURE = "GPT2ForSequenceClassification"
SUFFIXES = (".csv", ".jsonl")


# ---------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------


class GPT2Classifier(GPT2):
    """GPT-2 with a classification head: ``model(ids)`` -> logits (B, num_labels).

    A ``GPT2`` underneath (the same parameter names, hook points, LoRA, checkpoints), plus
    ``score`` (num_labels, C). ``labels[i]`` names class i. Saved, it is a Hugging Face
    ``GPT2ForSequenceClassification`` checkpoint (``transformer.*`` and ``score.weight``).
    """

    def __init__(self, config: GPT2Config, labels: Sequence[str], pad_token_id: int) -> None:
        super().__init__(config)
        if len(labels) < 2:
            raise DataError(f"a classifier needs at least two labels, got {list(labels)}")
        self.labels = [str(label) for label in labels]
        self.pad_token_id = int(pad_token_id)
        self.score = nn.Linear(config.n_embd, len(self.labels), bias=False)  # (C) -> (num_labels)
        if not self.score.weight.is_meta:
            nn.init.normal_(self.score.weight, mean=0.0, std=config.initializer_range)  # as transformers initialises it

    @property
    def num_labels(self) -> int:
        return len(self.labels)

    @property
    def label2id(self) -> dict[str, int]:
        return {label: i for i, label in enumerate(self.labels)}

    @classmethod
    def from_body(cls, body: GPT2, labels: Sequence[str], pad_token_id: int) -> GPT2Classifier:
        """A classifier on ``body``'s weights (shared, not copied) with a new head, drawn from torch's
        seeded generator: the start of fine-tuning."""
        with torch.device("meta"):
            model = cls(body.config, labels, pad_token_id)
        head = torch.empty(len(labels), body.config.n_embd, dtype=body.dtype, device=body.device)  # (num_labels, C)
        nn.init.normal_(head, mean=0.0, std=body.config.initializer_range)
        model.load_state_dict({**body.state_dict(), "score.weight": head}, assign=True)
        model.tie_weights()
        return model.train(body.training)

    def last_positions(self, idx: torch.Tensor) -> torch.Tensor:
        """(B,) index of each row's last token that is not padding (transformers' rule)."""
        T = idx.size(1)
        positions = torch.arange(T, device=idx.device)  # (T,)
        return (positions * (idx != self.pad_token_id)).argmax(dim=-1)  # (B,)

    def hidden_last(self, idx: torch.Tensor) -> torch.Tensor:
        """The final hidden state (``ln_f.out``) of each row's last real token, (B, C)."""
        h = cast(torch.Tensor, super().forward(idx, head=False))  # (B, T, C): the LM head is skipped
        return h[torch.arange(idx.size(0), device=idx.device), self.last_positions(idx)]  # (B, C)

    def forward(self, idx: torch.Tensor, labels: torch.Tensor | None = None, **_: Any):  # type: ignore[override]
        """Class logits (B, num_labels) for the right-padded ids (B, T); with ``labels`` (B,) also the
        mean cross-entropy: ``(logits, loss)``."""
        logits = self.score(self.hidden_last(idx))  # (B, num_labels)
        if labels is None:
            return logits
        return logits, F.cross_entropy(logits.float(), labels)

    # -- checkpoints -----------------------------------------------------------------------------

    def hf_config(self) -> dict[str, Any]:
        """What config.json adds for transformers' ``GPT2ForSequenceClassification``."""
        return {
            "architectures": [ARCHITECTURE],
            "num_labels": self.num_labels,
            "id2label": {str(i): label for i, label in enumerate(self.labels)},
            "label2id": self.label2id,
            "pad_token_id": self.pad_token_id,
        }

    def save_pretrained(self, directory: str | os.PathLike, max_shard_size: int | str | None = None) -> None:
        """Write a ``GPT2ForSequenceClassification`` checkpoint (config.json + model.safetensors)."""
        from .weights import save_pretrained

        save_pretrained(self, directory, max_shard_size=max_shard_size, extra_config=self.hf_config())

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, dtype: torch.dtype | str | None = None,
                        device: torch.device | str | None = None) -> GPT2Classifier:
        """Load a ``GPT2ForSequenceClassification`` checkpoint (``train --task classify`` writes one)."""
        from .weights import from_pretrained, resolve_checkpoint_dir

        directory = resolve_checkpoint_dir(name_or_path)
        hf = json.loads((directory / "config.json").read_text(encoding="utf-8"))
        if ARCHITECTURE not in (hf.get("architectures") or []) or not isinstance(hf.get("id2label"), dict):
            raise CheckpointError(f"{directory} is not a classifier ({ARCHITECTURE} with id2label); "
                                  "train one with gpt2lab train --task classify")
        labels = [str(hf["id2label"][k]) for k in sorted(hf["id2label"], key=int)]
        pad = hf.get("pad_token_id")
        if pad is None:
            pad = hf.get("eos_token_id", 50256)
        model = from_pretrained(directory, dtype=dtype, device=device, build=lambda config: cls(config, labels, pad))
        return cast(GPT2Classifier, model)  # build made one


def empty_like(model: GPT2, config: GPT2Config) -> GPT2:
    """A new network of ``model``'s kind (a ``GPT2`` or a ``GPT2Classifier`` with the same labels)
    for ``config``; build it on the ``meta`` device to fill it with ``load_state_dict(assign=True)``."""
    if isinstance(model, GPT2Classifier):
        return GPT2Classifier(config, model.labels, model.pad_token_id)
    return GPT2(config)


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------


def read_examples(path: str | os.PathLike, text_field: str = "text", label_field: str = "label",
                  limit: int | None = None) -> list[tuple[str, str]]:
    """(text, label) pairs of a ``.csv`` (header row) or ``.jsonl`` file; labels as strings."""
    path = Path(path)
    if path.suffix.lower() not in SUFFIXES:
        raise DataError(f"{path}: classification data is a .csv or .jsonl file with {text_field} and {label_field} columns")
    if not path.is_file():
        raise DataError(f"no such file: {path}")
    rows: list[tuple[dict[str, Any], str]] = []
    if path.suffix.lower() == ".csv":
        with open(path, encoding="utf-8-sig", newline="") as handle:
            reader = csv.DictReader(handle)
            columns = reader.fieldnames or []
            for field_name in (text_field, label_field):
                if field_name not in columns:
                    raise DataError(f"{path} has no column {field_name!r} (its columns: {', '.join(columns) or 'none'}); "
                                    "name it with --text-field / --label-field")
            for number, row in enumerate(reader, 2):
                rows.append((row, f"{path}:{number}"))
    else:
        from .tasks import read_jsonl

        with open(path, encoding="utf-8") as handle:
            numbers = [n for n, line in enumerate(handle, 1) if line.strip()]
        rows = [(r, f"{path}:{n}") for r, n in zip(read_jsonl(path), numbers, strict=True)]
    examples: list[tuple[str, str]] = []
    for record, where in rows[:limit]:
        for field_name in (text_field, label_field):
            if record.get(field_name) is None:
                raise DataError(f"{where} has no {field_name!r}; every row needs a {text_field} and a {label_field} "
                                "(other names: --text-field / --label-field)")
        text = record[text_field]
        if not isinstance(text, str) or not text.strip():
            raise DataError(f"{where}: {text_field!r} must be a non-empty text")
        examples.append((text, str(record[label_field])))
    if not examples:
        raise DataError(f"{path} holds no examples")
    return examples


def label_names(labels: Sequence[str], where: str) -> list[str]:
    """The distinct labels, sorted: label i is ``names[i]``."""
    names = sorted(set(labels))
    if len(names) < 2:
        raise DataError(f"{where} has one label only ({names[0]!r}); a classifier needs examples of at least two")
    return names


def held_out(n: int, fraction: float, seed: int) -> np.ndarray:
    """Which of ``n`` examples are held out for validation: a seeded random ``fraction`` (at least
    one, and never all), sorted."""
    n_val = min(max(int(round(n * fraction)), 1), n - 1)
    return np.sort(np.random.default_rng([seed, 0x5EED]).permutation(n)[:n_val])


def truncated(ids: list[list[int]], block_size: int, where: str) -> list[list[int]]:
    """Rows cut to their first ``block_size`` tokens (as transformers' tokenizers truncate), with one
    warning that says how many were cut: their ends are not read."""
    long = sum(len(row) > block_size for row in ids)
    if long:
        log.warning("%s: %d of %d texts are longer than the context of %d tokens; only their first %d tokens are read",
                    where, long, len(ids), block_size, block_size)
    return [row[:block_size] for row in ids]


@dataclass
class LabelledData:
    """A classification file, tokenised and split: what ``train --task classify`` trains on."""

    path: Path
    labels: list[str]  # class i is labels[i]
    pad_token_id: int
    train_ids: list[list[int]]
    train_labels: list[int]
    val_ids: list[list[int]]
    val_labels: list[int]
    meta: dict[str, Any] = field(default_factory=dict)  # fingerprint and tokenizer, for the checkpoint

    def truncate(self, block_size: int) -> None:
        self.train_ids = truncated(self.train_ids, block_size, f"{self.path} (training)")
        self.val_ids = truncated(self.val_ids, block_size, f"{self.path} (validation)")


def load_labelled(path: str | os.PathLike, tokenizer: Any, *, text_field: str = "text", label_field: str = "label",
                  val_fraction: float = 0.1, seed: int = 0) -> LabelledData:
    """Read, tokenise (``encode_ordinary``) and split a classification file (see ``read_examples``)."""
    examples = read_examples(path, text_field, label_field)
    if len(examples) < 2:
        raise DataError(f"{path} has {len(examples)} example; it takes two or more (one at least held out to measure accuracy)")
    names = label_names([label for _, label in examples], str(path))
    index = {name: i for i, name in enumerate(names)}
    ids = tokenizer.encode_ordinary_batch([text for text, _ in examples]) if hasattr(tokenizer, "encode_ordinary_batch") \
        else [tokenizer.encode_ordinary(text) for text, _ in examples]
    ids = [list(row) for row in ids]
    targets = [index[label] for _, label in examples]
    val = set(held_out(len(examples), val_fraction, seed).tolist())
    digest = hashlib.sha256(json.dumps([examples, text_field, label_field, sorted(val)]).encode()).hexdigest()[:16]
    return LabelledData(
        Path(path), names, int(tokenizer.eot_token),
        [r for i, r in enumerate(ids) if i not in val], [t for i, t in enumerate(targets) if i not in val],
        [r for i, r in enumerate(ids) if i in val], [t for i, t in enumerate(targets) if i in val],
        {"fingerprint": digest, "tokenizer": {"n_vocab": tokenizer.n_vocab, "eot_token": int(tokenizer.eot_token)}},
    )


def padded(rows: Sequence[Sequence[int]], pad_token_id: int) -> torch.Tensor:
    """(B, T) int64: the rows padded on the right with ``pad_token_id`` to the longest."""
    x = torch.full((len(rows), max(len(r) for r in rows)), pad_token_id, dtype=torch.long)  # (B, T)
    for i, row in enumerate(rows):
        x[i, : len(row)] = torch.tensor(row, dtype=torch.long)
    return x


@dataclass
class ExampleSampler:
    """Batches of training examples in a seeded random order per epoch, exactly resumable.

    ``position`` counts examples consumed by all ranks together, so it is the whole state; with
    ``world_size`` ranks each takes its slice of every ``batch_size * world_size`` examples.
    """

    ids: list[list[int]]
    labels: list[int]
    batch_size: int
    pad_token_id: int
    seed: int = 0
    rank: int = 0
    world_size: int = 1
    fingerprint: str = ""
    position: int = 0
    _epoch: int = field(default=-1, repr=False)
    _order: np.ndarray | None = field(default=None, repr=False)

    def _example(self, k: int) -> int:
        epoch, j = divmod(k, len(self.ids))
        if epoch != self._epoch or self._order is None:  # drawn once per epoch, from seed and epoch alone
            self._order = np.random.default_rng([self.seed, epoch]).permutation(len(self.ids))
            self._epoch = epoch
        return int(self._order[j])

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's next (ids (B, T) right-padded, labels (B,))."""
        first = self.position + self.rank * self.batch_size
        picks = [self._example(k) for k in range(first, first + self.batch_size)]
        self.position += self.batch_size * self.world_size
        return padded([self.ids[i] for i in picks], self.pad_token_id), torch.tensor([self.labels[i] for i in picks])

    @property
    def epoch_size(self) -> int:
        """Examples in one pass over the data (an epoch)."""
        return len(self.ids)

    def state_dict(self) -> dict[str, Any]:
        return {"position": self.position, "seed": self.seed, "n_examples": len(self.ids), "fingerprint": self.fingerprint}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("n_examples") != len(self.ids) or state.get("fingerprint") != self.fingerprint:
            raise DataError("the classification data differs from the checkpoint's; resume with the file the run started with")
        self.seed = int(state["seed"])
        self.position = int(state["position"])


# ---------------------------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------------------------


@torch.no_grad()
def score_examples(model: GPT2Classifier, ids: Sequence[Sequence[int]], labels: Sequence[int], *, batch_size: int = 16,
                   dtype: torch.dtype | None = None, progress: bool = False) -> dict[str, float]:
    """``{"acc", "loss", "n"}`` of ``model`` on tokenised examples: accuracy of the argmax class,
    mean cross-entropy. Rows run longest first (little padding); the model's mode is kept."""
    from .tasks import scoring

    if not ids:
        raise DataError("no examples to classify")
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
    correct = 0
    loss_sum = 0.0
    device = model.device
    with scoring(model, len(ids), "classify", "text", progress) as bar:
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            x = padded([ids[i] for i in batch], model.pad_token_id).to(device)  # (b, T)
            y = torch.tensor([labels[i] for i in batch], device=device)  # (b,)
            with autocast(device, dtype):
                logits = model(x).float()  # (b, num_labels)
            loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
            correct += int((logits.argmax(dim=-1) == y).sum())
            if bar is not None:
                bar.update(len(batch))
    return {"acc": correct / len(ids), "loss": loss_sum / len(ids), "n": len(ids)}


def classify_file(model: GPT2Classifier, tokenizer: Any, data: str | os.PathLike, limit: int | None = None, *,
                  text_field: str = "text", label_field: str = "label", batch_size: int = 16,
                  dtype: torch.dtype | None = None, progress: bool = False) -> dict[str, float]:
    """``score_examples`` on every row of a classification file (``read_examples``); its labels must
    be the model's own."""
    examples = read_examples(data, text_field, label_field, limit)
    index = model.label2id
    unknown = sorted({label for _, label in examples if label not in index})
    if unknown:
        raise DataError(f"{data} has label(s) the model does not know: {', '.join(map(repr, unknown[:5]))}; "
                        f"its labels are {', '.join(map(repr, model.labels))}")
    ids = truncated([list(tokenizer.encode_ordinary(text)) for text, _ in examples], model.config.block_size, str(data))
    return score_examples(model, ids, [index[label] for _, label in examples], batch_size=batch_size, dtype=dtype, progress=progress)


__all__ = ["GPT2Classifier", "empty_like", "read_examples", "label_names", "held_out", "truncated", "LabelledData",
           "load_labelled", "padded", "ExampleSampler", "score_examples", "classify_file", "ARCHITECTURE"]
