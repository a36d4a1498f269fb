"""A ``Trainer``'s state in and out (the class ``Trainer`` is made of, with ``train.step``):
checkpoint.pt written and restored, the model as users see it, and the model directories.

    RUN/checkpoint.pt   everything an exact resume needs: weights (a LoRA run: its adapters), AdamW's
                        moments, the sampler's place, every rank's RNG, the best loss so far
    RUN/model/          the latest weights as a Hugging Face checkpoint, with the data's tokenizer
    RUN/adapter/        a LoRA run's adapters in PEFT's format
    RUN/best/           with keep_best: the weights of the lowest validation loss

What is written carries the real vocabulary (50,257 rows, not the padded 50,304), whatever the run
trained with, and an FSDP run's shards gathered whole; every file is written atomically, and a full
disk stops the run with one line that says what is safe (``_write_failed``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import torch

from .. import kernels
from ..errors import CheckpointError, TrainingError
from ..files import atomic_write_bytes, run_model_dir
from ..lora import lora_state_dict, merged_copy, save_adapter
from .checkpoint import (
    ADAPTER_DIR,
    BEST_DIR,
    CHECKPOINT,
    CHECKPOINT_FORMAT,
    MODEL_DIR,
    rng_state,
    seed_everything,
    set_rng_state,
    tensor_bytes,
    write_checkpoint,
    write_failure,
)
from .sharded import everyone_model_state, full_model_state, full_optimizer_state, load_full_state
from .vocab import VOCAB_KEYS, pad_moments, padded_state, real_vocab_model, real_vocab_moments, real_vocab_state

if TYPE_CHECKING:
    from ..batches import TokenData
    from ..config import GPT2Config
    from ..model import GPT2
    from .config import TrainConfig
    from .distributed import Distributed


class Saving:
    """``Trainer``'s checkpoints, saved and restored, and the model as users see it."""

    if TYPE_CHECKING:  # what saving uses of the trainer it is part of (set in ``Trainer._setup``)
        config: TrainConfig
        device: torch.device
        dist: Distributed
        run_dir: Path
        data: TokenData
        model: GPT2
        model_config: GPT2Config
        vocab: int
        optimizer: torch.optim.Optimizer
        scaler: torch.amp.GradScaler | None
        sampler: Any
        wte_index: int | None
        lora_base: str | None
        step: int
        last_saved: int
        elapsed: float
        best: tuple[int, float] | None
        evals_since_best: int

        def _model_from_config(self, model_config: GPT2Config) -> GPT2: ...
        def _data_record(self) -> dict[str, Any]: ...
        def _plot(self) -> None: ...

    def _restore(self, ckpt: dict[str, Any]) -> None:
        opt_state = ckpt["optimizer"]
        pad_moments(opt_state, self.wte_index, self.model.config.vocab_size)
        if self.config.fsdp:  # every rank read the whole checkpoint and keeps its own shards of it
            load_full_state(self.model, self.optimizer, padded_state(ckpt["model"], self.model.config.vocab_size), opt_state)
        else:
            self._load_model_state(ckpt["model"])
            self.optimizer.load_state_dict(opt_state)
        if self.scaler is not None and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        self.sampler.load_state_dict(ckpt["sampler"])
        self.step = self.last_saved = int(ckpt["step"])
        self.elapsed = float(ckpt.get("elapsed", 0.0))
        best = ckpt.get("best")  # (checkpoints from before keep_best have none)
        self.best = (int(best[0]), float(best[1])) if best else None
        self.evals_since_best = int(ckpt.get("evals_since_best", 0))
        if self.config.keep_best and not ckpt["train_config"].get("keep_best"):  # turned on now: best/ starts with this run
            self.best, self.evals_since_best = None, 0  # (read from the checkpoint: every rank decides alike)
        states = ckpt["rng"]
        if self.dist.world_size == len(states):
            set_rng_state(states[self.dist.rank], self.device)
        else:  # resumed on a different number of processes: batches stay exact, dropout cannot
            seed_everything(self.config.seed + self.dist.rank + 7919 * self.step)

    def _model_state(self) -> dict[str, torch.Tensor]:
        """What the checkpoint stores of the model: every tensor (real vocabulary), or a LoRA run's adapters only."""
        state = lora_state_dict(self.model) if self.lora_base is not None else self.model.state_dict()
        return self._real_vocab_state(state)

    def _real_vocab_state(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``state`` on the CPU, its vocabulary rows cut to the real vocabulary."""
        return {k: v.detach().cpu() for k, v in real_vocab_state(state, self.vocab).items()}

    def _load_model_state(self, state: dict[str, torch.Tensor]) -> None:
        own = self.model.state_dict()
        with torch.no_grad():
            for k, v in state.items():
                if k not in own:
                    raise CheckpointError(f"the checkpoint has a tensor {k!r} this model does not")
                if k in VOCAB_KEYS:
                    own[k].zero_()
                    own[k][: v.size(0)].copy_(v)
                else:
                    own[k].copy_(v)

    def _optimizer_state(self, state: dict[str, Any] | None = None) -> dict[str, Any]:
        """The optimizer's state dict, the embedding's moments cut to the real vocabulary.
        ``state``: the full one an FSDP run gathered (``sharded.full_optimizer_state``)."""
        state = real_vocab_moments(self.optimizer.state_dict() if state is None else state, self.wte_index, self.vocab)
        # a recorded step's learning rate is a device tensor: the file keeps a plain number, as any run's
        return {**state, "param_groups": [{**g, "lr": float(g["lr"]), "capturable": False} for g in state["param_groups"]]}

    def _plain_model(self, state: dict[str, torch.Tensor]) -> GPT2:
        """A plain (unsharded) model of the real vocabulary holding ``state``: an FSDP run's model as users see it."""
        with torch.device("meta"):
            model = self._model_from_config(self.model_config)
        model.load_state_dict(real_vocab_state(state, self.vocab), assign=True)
        model.tie_weights()
        return model.train(self.model.training)

    @contextlib.contextmanager
    def model_to_read(self) -> Iterator[GPT2]:
        """The model as users see it (``export_model``), in eval mode, to score or sample inside the
        ``with`` block. Afterwards the packed copies a CPU made of its weights are dropped (the next
        step makes them stale: their memory is freed now) and the training model is training again."""
        model = self.export_model().eval()
        try:
            yield model
        finally:
            kernels.unpack(model)
            self.model.train()

    def adapter_base_name(self) -> str:
        """The base model ``run/adapter`` names: ``--init`` as given for a hub id, and for a local one the
        absolute path of its model directory (a run's ``model/``), which PEFT, reading the name as it
        stands, and ``GPT2.from_pretrained`` find from any working directory."""
        init = self.config.init
        return str(run_model_dir(init).resolve()) if Path(init).expanduser().exists() else init

    def export_model(self) -> GPT2:
        """The model as users see it: real vocabulary (views of the trained weights, no copy). An FSDP
        run gathers a whole copy into every rank's CPU memory instead (the devices stay full of the
        training state; a collective: every rank calls it)."""
        if self.config.fsdp:
            return self._plain_model(everyone_model_state(self.model))
        return real_vocab_model(self.model, self.vocab)


    def save_checkpoint(self) -> None:
        """Write checkpoint.pt (atomically) and model/; every rank calls this (RNG states are gathered)."""
        states = [rng_state(self.device)]
        if self.dist.enabled:
            import torch.distributed as dist

            states = [{} for _ in range(self.dist.world_size)]  # filled by the gather
            dist.all_gather_object(states, rng_state(self.device))
        # FSDP: every rank sends its shards, rank 0 receives the whole state on its CPU
        full_model, full_optimizer = None, None
        if self.config.fsdp:
            full_model, full_optimizer = full_model_state(self.model), full_optimizer_state(self.model, self.optimizer)
        if not self.dist.is_main:
            self.last_saved = self.step
            return
        ckpt = {
            "format": CHECKPOINT_FORMAT,
            "step": self.step,
            "model": self._model_state() if full_model is None else self._real_vocab_state(full_model),
            "model_config": self.model_config.to_dict(),
            "optimizer": self._optimizer_state(full_optimizer),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "sampler": self.sampler.state_dict(),
            "rng": states,
            "train_config": asdict(self.config),
            "data": self._data_record(),
            "elapsed": self.elapsed,
            "lora_base": self.lora_base,
            "best": self.best,
            "evals_since_best": self.evals_since_best,
        }
        path = self.run_dir / CHECKPOINT
        try:
            write_checkpoint(path, ckpt)
        except (OSError, RuntimeError) as err:
            self._write_failed(err, f"writing the checkpoint {path}", f"the previous checkpoint (step {self.last_saved}) is intact",
                               needed=tensor_bytes(ckpt))
        self.last_saved = self.step
        try:
            model = self._plain_model(ckpt["model"]) if self.config.fsdp else self.export_model()
            self._write_model_dir(model, self.run_dir / MODEL_DIR)
            if self.lora_base is not None:  # and apart, in PEFT's format (a classifier's: with its new head)
                save_adapter(model, self.run_dir / ADAPTER_DIR, base_model_name_or_path=self.adapter_base_name())
            self._plot()
        except (OSError, RuntimeError) as err:
            self._write_failed(err, f"writing {self.run_dir / MODEL_DIR}",
                               f"the checkpoint of step {self.step} is saved whole and model/ keeps its earlier weights")

    def _write_model_dir(self, model: GPT2, directory: Path) -> None:
        """``model`` as a Hugging Face checkpoint in ``directory`` (each file atomically; a LoRA run's adapters
        folded in), with the data's tokenizer files, so that generating from it uses the right vocabulary."""
        merged_copy(model).save_pretrained(str(directory))
        self._save_tokenizer(directory)

    def _save_tokenizer(self, directory: Path) -> None:
        """The data's tokenizer files into a model directory."""
        src = self.data.directory / "tokenizer"
        if src.is_dir():
            for f in src.iterdir():
                if f.is_file():
                    atomic_write_bytes(directory / f.name, f.read_bytes())

    def note_val_loss(self, val_loss: float) -> bool:
        """Remember the lowest validation loss so far and the evaluations since it (the checkpoint keeps
        both, so a resumed run compares with them); with ``keep_best``, write the model as it is now to
        RUN/best/ when this loss is the lowest. Every rank calls this (an FSDP model is gathered); True
        when this evaluation was the lowest."""
        if self.best is not None and val_loss >= self.best[1]:
            self.evals_since_best += 1
            return False
        self.best, self.evals_since_best = (self.step, val_loss), 0
        if not self.config.keep_best:
            return True
        gathered = full_model_state(self.model) if self.config.fsdp else None  # on rank 0 only ({} elsewhere)
        if self.dist.is_main:
            model = self._plain_model(gathered) if gathered is not None else self.export_model()
            try:
                self._write_model_dir(model, self.run_dir / BEST_DIR)
            except (OSError, RuntimeError) as err:
                self._write_failed(err, f"writing {self.run_dir / BEST_DIR}", f"the checkpoint of step {self.last_saved} is intact")
        return True

    def _write_failed(self, err: OSError | RuntimeError, doing: str, kept: str, needed: int | None = None) -> NoReturn:
        """A failed write (a full disk, most often) as one line that says what happened, what is
        safe, and what to do; any other error goes on unchanged."""
        reason = write_failure(err, self.run_dir, needed)
        if reason is None:
            raise err
        advice = "free some space (or choose another --out)" if "disk space" in reason else "fix that"
        raise TrainingError(f"{reason} while {doing}; {kept}. To go on, {advice}, then --resume") from None


__all__ = ["Saving"]
