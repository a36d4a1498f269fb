"""``train --task classify``: fine-tune a GPT-2 with a new classification head (``gpt2lab.classify``).

The run is an ordinary ``Trainer`` run (the same schedule, optimizer, checkpoint, exact resume,
LoRA, dashboards); only what a task changes is overridden here:

    data        a .csv / .jsonl file of texts and string labels, tokenised with the --init model's
                tokenizer, a seeded share held out (``val_fraction``)
    model       ``GPT2Classifier``: the --init model plus ``score`` (num_labels, C), drawn from the seed
    batches     examples in a seeded order per epoch, right-padded with <|endoftext|> (``ExampleSampler``)
    loss        cross-entropy of the label, read at each text's last real token
    evaluation  ``val_loss`` and ``val_acc`` over the whole held-out split
    model/      a ``GPT2ForSequenceClassification`` checkpoint (id2label, label2id, pad_token_id) and
                the tokenizer's files
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..classify import ExampleSampler, GPT2Classifier, LabelledData, load_labelled, score_examples
from ..compatibility import check_tokenizer_fits_model
from ..config import GPT2Config
from ..flops import flops_per_token
from ..model import GPT2
from ..tokenizer import Tokenizer
from .config import TrainConfig
from .trainer import Trainer


class ClassifyTrainer(Trainer):
    """A ``Trainer`` whose model is a ``GPT2Classifier`` and whose data is a labelled file."""

    task = "classify"

    def __init__(self, config: TrainConfig, **hooks: Any) -> None:
        super().__init__(config, **hooks)
        # texts are short and of many lengths: throughput and MFU count their tokens (mean length), not block_size
        data = self.labelled
        mean_length = max(1, round(sum(map(len, data.train_ids)) / len(data.train_ids)))
        self.tokens_per_step = self.items_per_step * mean_length
        self.flops_per_step = flops_per_token(self.model_config, mean_length) * self.tokens_per_step

    def _open_data(self, config: TrainConfig) -> None:
        from ..weights import resolve_checkpoint_dir

        # the texts are read as the model to fine-tune reads them: its own tokenizer, else GPT-2's
        self.tokenizer = Tokenizer.from_pretrained(resolve_checkpoint_dir(config.init))
        self.labelled: LabelledData = load_labelled(config.data, self.tokenizer, text_field=config.text_field,
                                                    label_field=config.label_field, val_fraction=config.val_fraction,
                                                    seed=config.seed)
        self.val_acc: float | None = None

    def _check_data(self, model: GPT2) -> None:
        check_tokenizer_fits_model(self.tokenizer.n_vocab, model.config)
        self.labelled.truncate(self.block_size)

    def _initial_model(self, config: TrainConfig) -> GPT2:
        data = self.labelled
        return GPT2Classifier.from_body(self._pretrained_model(config), data.labels, data.pad_token_id)

    def _model_from_config(self, model_config: GPT2Config) -> GPT2:
        return GPT2Classifier(model_config, self.labelled.labels, self.labelled.pad_token_id)

    def _make_sampler(self, config: TrainConfig) -> ExampleSampler:
        data = self.labelled
        return ExampleSampler(data.train_ids, data.train_labels, config.batch_size, data.pad_token_id, seed=config.seed,
                              rank=self.dist.rank, world_size=self.dist.world_size, fingerprint=data.meta["fingerprint"])

    def _step_module(self, model: GPT2) -> nn.Module:
        return model  # the classifier; _loss adds the cross-entropy over its labels

    def _loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits = self.forward_model(x)  # (B, num_labels), from x (B, T) right-padded
        return F.cross_entropy(logits.float(), y)  # y: (B,) label ids

    def _data_record(self) -> dict[str, Any]:
        return dict(self.labelled.meta)

    def _model_state(self) -> dict[str, torch.Tensor]:
        state = super()._model_state()
        if self.lora_base is not None:  # the adapters, and the new head that trains beside them
            state["score.weight"] = self.model.get_parameter("score.weight").detach().cpu()
        return state

    @torch.no_grad()
    def evaluate(self) -> float | None:
        """Loss and accuracy over the whole held-out split (every rank computes the same numbers)."""
        data = self.labelled
        with self.model_to_read() as model:
            scores = score_examples(cast(GPT2Classifier, model), data.val_ids, data.val_labels, batch_size=self.config.batch_size,
                                    dtype=self.dtype)
        self.val_acc = scores["acc"]
        return scores["loss"]

    def eval_scores(self) -> dict[str, float]:
        return {"val_acc": round(self.val_acc, 6)} if self.val_acc is not None else {}

    def _save_tokenizer(self, directory: Path) -> None:
        """The tokenizer the texts were read with, so ``eval --task classify`` reads them the same way."""
        self.tokenizer.save(directory)


__all__ = ["ClassifyTrainer"]
