"""``Trainer``: one run's set-up, evaluation and the loop's pieces, as methods (``train.run.train``
builds, runs and closes one; the loop that drives them, ``Trainer.run``, is ``train.loop``).

A trainer is three parts, one module each, so that each reads on its own:

    trainer.py   Trainer: set-up (data, model, padding, LoRA, FSDP, compile, DDP), what a task changes,
                 evaluation, metrics, status, close
    step.py      OptimizerStep: one optimizer step on the device, its loss read back, the lr schedule
    saving.py    Saving: checkpoint.pt written and restored, the model as users see it, model/ and best/
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.nn as nn

from ..batches import IGNORE_INDEX, BatchSampler, TokenData, eval_starts, open_data, windows
from ..compatibility import check_data_fits_model, check_same_tokenizer, check_window_fits_model
from ..config import GPT2Config
from ..devices import autocast, parse_dtype, pick_device
from ..errors import CheckpointError, ConfigError, TrainingError
from ..evaluate import token_losses
from ..flops import flops_per_token, peak_flops
from ..lora import apply_lora, base_fingerprint, describe
from ..model import GPT2
from .checkpoint import (
    ADAPTER_DIR,
    BEST_DIR,
    CHECKPOINT,
    METRICS,
    MODEL_DIR,
    PLOT,
    load_checkpoint,
    seed_everything,
)
from .config import MACHINE_SWITCHES, TrainConfig, TrainResult, resumed_config
from .dashboards import Dashboards
from .distributed import setup_distributed
from .graphed import GraphedTrainStep
from .loop import run_loop
from .loss import LanguageModelLoss
from .memory import checkpoint_blocks
from .metrics import MetricsLog
from .optim import make_optimizer
from .plots import plot_metrics
from .saving import Saving
from .sharded import peak_memory, shard_model
from .signals import StopFlag
from .status import FAILED, FINISHED, INTERRUPTED, RUNNING, STATUS, STOPPED_EARLY, check_not_running, error_line, write_status
from .step import OptimizerStep
from .vocab import pad_vocabulary

log = logging.getLogger(__name__)

class Trainer(OptimizerStep, Saving):
    """One training run. ``train(config)`` is ``Trainer(config).run()``; the pieces are methods so a
    notebook can build a trainer, look at ``trainer.model``, and call ``run``. (``--task classify``
    runs are ``train.classify.ClassifyTrainer``; ``trainer_class(config)`` picks.)"""

    task = "lm"

    def __init__(
        self,
        config: TrainConfig,
        *,
        on_eval: Callable[[int, GPT2], None] | None = None,
        on_log: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.on_eval = on_eval
        self.on_log = on_log
        self.metrics_log: MetricsLog | None = None  # metrics.jsonl, TensorBoard, W&B: on the main process
        config.resolved()  # every value checked before anything starts
        self.run_dir = Path(config.out)
        self.device = pick_device(config.device)
        self.dist, self.device = setup_distributed(self.device)
        try:
            self._setup(config)
        except BaseException:
            self.close()
            raise

    # -- setup -------------------------------------------------------------------------------------

    def _setup(self, config: TrainConfig) -> None:
        ckpt_path = self.run_dir / CHECKPOINT
        ckpt = None
        self.resumed_at: int | None = None  # the checkpoint's step, for a resumed run
        self.switches_left_out: list[str] = []
        if self.dist.is_main:
            check_not_running(self.run_dir)  # before anything is read or written
        if config.resume:
            if not ckpt_path.is_file():
                raise TrainingError(f"nothing to resume: {ckpt_path} does not exist; start without --resume")
            ckpt = load_checkpoint(ckpt_path)
            # the run's own switches this call leaves out: its speed or memory differ from here on (run() says so)
            self.switches_left_out = [f"--{name.replace('_', '-')}" for name in MACHINE_SWITCHES
                                      if ckpt["train_config"].get(name) and not getattr(config, name)]
            config = resumed_config(ckpt["train_config"], config)
        elif ckpt_path.is_file():
            raise TrainingError(f"{self.run_dir} already holds a run ({CHECKPOINT}); pass --resume to continue it, or choose another --out")
        config = config.resolved()
        if config.task != self.task:
            from .run import trainer_class  # (run.py imports this module)

            raise ConfigError(f"a {config.task} run needs {trainer_class(config).__name__}, not {type(self).__name__}; train(config) picks it")
        self.config = config
        self._open_data(config)
        self.dtype = parse_dtype(config.dtype, self.device)
        if self.dtype == torch.bfloat16 and self.device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise ConfigError("this GPU has no bf16; use --dtype fp16")
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True  # fp32 products on tensor cores (TF32)
            torch.backends.cudnn.allow_tf32 = True

        # the model, built identically on every rank
        seed_everything(config.seed)
        if ckpt is not None and config.lora_rank is None:
            model = self._model_from_config(GPT2Config(**ckpt["model_config"]))
        else:  # a LoRA checkpoint holds only the adapters: the base model is read again
            model = self._initial_model(config)
        self.lora_base: str | None = None
        if config.lora_rank is not None:
            self.lora_base = base_fingerprint(model)
            if ckpt is not None and ckpt.get("lora_base") != self.lora_base:
                raise CheckpointError(f"--init {config.init} is no longer the model this LoRA run began from (its weights differ); "
                                      "resume with the same base model")
        self.model_config = model.config  # the real vocabulary
        assert config.block_size is not None  # set by the checkpoint or by _initial_model
        self.block_size: int = config.block_size
        self._check_data(model)
        check_window_fits_model(self.block_size, model.config)
        model.to(self.device)
        # padded shapes suit the products (50257 -> 50304 rows: aligned), but an eager CPU step gains more from
        # lm_loss's backward reusing the logits' memory, which needs them at the real vocabulary: 1.46x vs
        # 1.02x the minimal loop eagerly, 0.98x vs 1.0x compiled (benchmarks/README.md)
        pad = config.pad_vocab if config.pad_vocab is not None else (64 if self.device.type == "cuda" or config.compile else 1)
        self.vocab = pad_vocabulary(model, pad) if pad > 1 else model.config.vocab_size
        self.chunked_loss = self._use_chunked_loss(config)
        if config.lora_rank is not None:  # freezes every weight, then adds the adapters (drawn from the seeded generator)
            apply_lora(model, config.lora_rank, config.lora_alpha, config.lora_targets, config.lora_dropout)
            log.info(describe(model))
        if config.activation_checkpointing:
            checkpoint_blocks(model)
        if config.fsdp:
            if not self.dist.enabled:
                raise ConfigError("--fsdp shards the model over several processes: run under torchrun --nproc-per-node N")
            if self.on_eval is not None:
                raise ConfigError("on_eval runs on rank 0 alone, but an FSDP model answers only when every rank runs it; "
                                  "train without --fsdp, or load RUN_DIR/model afterwards")
            shard_model(model)  # before the optimizer: its parameters become DTensor shards
        self.model = model
        self.optimizer = make_optimizer(model, config, self.device)
        # what clipping measures and scales, listed once: model.parameters() walks every module on each call
        self.trained_parameters = [p for group in self.optimizer.param_groups for p in group["params"]]
        optimized = [id(p) for p in self.trained_parameters]
        wte = id(model.get_parameter("transformer.wte.weight"))
        # where the padded embedding's moments sit in the optimizer state (None: the embedding is frozen)
        self.wte_index = optimized.index(wte) if wte in optimized else None
        self.scaler = torch.amp.GradScaler(self.device.type) if self.dtype == torch.float16 else None
        # a step that is only logged reads its loss one step late, while the next one runs: the host does
        # not wait for the GPU at every step of a --log-every 1 run (a CPU has nothing to overlap)
        self.defer_logged_reads = self.device.type == "cuda"

        self.sampler = self._make_sampler(config)
        if config.epochs is not None:  # the step count follows from the data now open
            config = self.config = config.with_steps(self.steps_for_epochs(config.epochs))
        self.step = 0
        self.elapsed = 0.0
        self.last_saved = 0
        self.best: tuple[int, float] | None = None  # (step, val_loss) of the lowest validation loss so far
        self.evals_since_best = 0  # evaluations since that one (early_stop)
        self.stopped_early = False
        self.stop_flag = StopFlag()  # Ctrl-C and SIGTERM, while the loop runs
        # the first step whose loss or gradient was not finite (-1: none yet), its loss and gradient norm; read by read_loss
        self._bad_step = torch.full((), -1, dtype=torch.long, device=self.device)
        self._bad_loss = torch.zeros((), device=self.device)
        self._bad_norm = torch.zeros((), device=self.device)
        self._last_loss = torch.full((), float("nan"), device=self.device)
        self._grad_norm = torch.full((), float("nan"), device=self.device)  # the latest step's, on the device
        self.grad_norm: float | None = None  # the gradient norm of the step whose loss was read last (metrics: grad_norm)
        if ckpt is not None:
            self._restore(ckpt)
            self.resumed_at = self.step
        else:
            seed_everything(config.seed + self.dist.rank)  # dropout differs across ranks, reproducibly
        self._device_step = torch.full((), self.step, dtype=torch.long, device=self.device)  # () the step count, on the device

        # what a step calls: the model with its loss (x, y) -> loss, compiled as one graph when asked
        self.forward_model: nn.Module = self._step_module(model)
        if config.compile:
            self.forward_model = cast(nn.Module, torch.compile(self.forward_model))  # an OptimizedModule wrapping it
        if self.dist.enabled and not config.fsdp:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.forward_model = DDP(self.forward_model, device_ids=ids)
        # --cuda-graph: after a few plain steps, the step's device work is recorded once and replayed
        self.graphed: GraphedTrainStep | None = GraphedTrainStep(self) if self._use_cuda_graph(config) else None
        self.tokens_per_step = self.items_per_step * self.block_size
        self.flops_per_step = flops_per_token(self.model_config, self.block_size) * self.tokens_per_step
        self.peak = peak_flops(self.device, self.dtype) if self.dist.is_main else None
        if self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            # temporary files of atomic writes that a kill -9 interrupted (the real files are intact)
            for name in (CHECKPOINT, METRICS, PLOT, STATUS):
                for stale in self.run_dir.glob(f".{name}.*.tmp"):
                    stale.unlink(missing_ok=True)
            for directory in (MODEL_DIR, ADAPTER_DIR, BEST_DIR):
                for stale in (self.run_dir / directory).glob(".*.tmp"):
                    stale.unlink(missing_ok=True)
            self.metrics_log = MetricsLog(self.run_dir / METRICS, self.on_log)
            try:
                self.metrics_log.start(resumed_at=self.resumed_at)
            except OSError as err:
                self._write_failed(err, f"writing {self.run_dir / METRICS}", "nothing was changed")
            if config.eval_task:
                self.task_tokenizer = self._task_tokenizer()
            if config.sample is not None:
                self.sample_tokenizer = self._data_tokenizer()
                if self.sample_tokenizer.n_vocab > self.vocab:  # token files written without prepare (save_tokens)
                    raise ConfigError(f"--sample needs the data's tokenizer, and {config.data} has none for its {self.vocab}-token "
                                      "vocabulary (gpt2lab prepare saves one as DATA_DIR/tokenizer); leave --sample out")
            self.metrics_log.dashboards = Dashboards(config, self.run_dir)

    # -- what a task changes (``train.classify.ClassifyTrainer`` overrides these) ---------------------

    def _open_data(self, config: TrainConfig) -> None:
        """Read the training data: a prepared DATA_DIR of token ids."""
        self.data: TokenData = open_data(config.data)

    def _check_data(self, model: GPT2) -> None:
        """Stop before training when the data's ids do not fit ``model``."""
        check_data_fits_model(self.data.meta, model.config, self.config.data)

    def _make_sampler(self, config: TrainConfig) -> Any:
        """The seeded, resumable source of training batches (``next_batch``, ``state_dict``)."""
        # instruction data brings its loss mask: the loss then counts the responses only
        return BatchSampler(self.data.train, self.block_size, config.batch_size, seed=config.seed,
                            rank=self.dist.rank, world_size=self.dist.world_size, mask=self.data.train_mask)

    @property
    def items_per_step(self) -> int:
        """Windows (a classify run: examples) one optimizer step takes from the data, all ranks together."""
        return self.config.batch_size * self.config.grad_accum * self.dist.world_size

    def steps_for_epochs(self, epochs: float) -> int:
        """Optimizer steps that take ``epochs`` passes over the training data (rounded up)."""
        return max(1, math.ceil(round(epochs * self.sampler.epoch_size / self.items_per_step, 6)))

    def epoch_at(self, step: int) -> float:
        """Passes over the training data after ``step`` steps (1.5: half-way through the second)."""
        return step * self.items_per_step / self.sampler.epoch_size

    def _model_from_config(self, model_config: GPT2Config) -> GPT2:
        """An untrained network of this run's kind, to receive a checkpoint's weights."""
        return GPT2(model_config)

    def _use_chunked_loss(self, config: TrainConfig) -> bool:
        """Whether the LM head and the loss run a chunk of positions at a time (``--chunked-loss``).

        Then the (N, V) logits never exist (at GPT-2's vocabulary and 16 x 1024 tokens: 1.6 GB in
        bf16, 3.3 GB in fp32), the largest tensors of a small model's step. Not under FSDP (it shards
        the head) nor fp16 (the chunks' gradients are made before GradScaler scales the loss, and
        small ones would underflow). Off by default: on an H200, compiled, the whole logits inside
        the step's graph were as fast and used the same memory as the minimal loop
        (``benchmarks/README.md``); chunking is for when the logits are what does not fit.
        """
        if not config.chunked_loss:
            return False
        refuse("--chunked-loss", "--fsdp shards the LM head" if config.fsdp else
               "fp16 gradients made before the loss scaling would underflow (use --dtype bf16)" if self.dtype == torch.float16 else None)
        return True

    def _use_cuda_graph(self, config: TrainConfig) -> bool:
        """Whether the step is recorded as a CUDA graph (``--cuda-graph``; ``train.graphed``): on one
        CUDA GPU, in bf16 or fp32, for a task whose batches all have one shape."""
        if not config.cuda_graph:
            return False
        refuse("--cuda-graph", "it records a CUDA GPU's work and this run is on " + self.device.type if self.device.type != "cuda" else
               "it records one process's step; under torchrun leave it out" if self.dist.enabled else
               "fp16's GradScaler is not recorded (use --dtype bf16)" if self.dtype == torch.float16 else
               f"--task {self.task}'s batches change shape from step to step" if self.task != "lm" else None)
        return True

    def _step_module(self, model: GPT2) -> nn.Module:
        """The module a training step calls, ``(x, y) -> loss``: the model and its loss in one, so that
        ``--compile`` makes one graph of both and DDP wraps both."""
        return LanguageModelLoss(model, self.vocab, chunked=self.chunked_loss)

    def _loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The mean training loss of one micro-batch: next-token cross-entropy over the real vocabulary."""
        return self.forward_model(x, y)

    def _data_record(self) -> dict[str, Any]:
        """What the checkpoint records of the data it trained on."""
        return {"fingerprint": self.data.meta.get("fingerprint"), "tokenizer": self.data.meta["tokenizer"]}

    def _initial_model(self, config: TrainConfig) -> GPT2:
        if config.init == "scratch":
            config.block_size = config.block_size or 256
            return GPT2(GPT2Config(
                vocab_size=self.data.n_vocab, block_size=config.block_size, n_layer=config.n_layer, n_head=config.n_head,
                n_embd=config.n_embd, embd_pdrop=config.dropout, attn_pdrop=config.dropout, resid_pdrop=config.dropout,
            ))
        from ..weights import resolve_model

        model = self._pretrained_model(config)
        check_same_tokenizer(resolve_model(config.init)[0], self.data.meta, config.data)
        return model

    def _pretrained_model(self, config: TrainConfig) -> GPT2:
        """The ``init`` model, with this run's dropout; fills in ``block_size`` and the real shape."""
        from ..weights import from_pretrained

        model = from_pretrained(config.init)
        if config.block_size is None:
            config.block_size = min(model.config.block_size, 1024)
        set_dropout(model, config.dropout)
        # what a scratch model would have been is irrelevant now: record the real shape
        config.n_layer, config.n_head, config.n_embd = model.config.n_layer, model.config.n_head, model.config.n_embd
        return model

    def stop_requested(self) -> bool:
        """Whether any rank was asked to stop (Ctrl-C, SIGTERM). With several processes this is a
        collective, so every rank must call it at the same steps (``run`` does, at read steps)."""
        requested = self.stop_flag.requested
        if not self.dist.enabled:
            return requested
        import torch.distributed as dist

        flag = torch.tensor(float(requested), device=self.device)
        dist.all_reduce(flag)
        return flag.item() > 0

    # -- evaluation ------------------------------------------------------------------------------

    @torch.no_grad()
    def evaluate(self) -> float | None:
        """Mean loss per target token over the fixed validation windows (spread over the ranks); ``None``
        without validation data. Instruction data counts its response tokens only, as training does."""
        cfg = self.config
        # eval_batches global batches, so the windows do not depend on how many processes share them
        starts = eval_starts(self.data.val, self.block_size, cfg.eval_batches * cfg.batch_size * self.dist.world_size)
        if len(starts) == 0:
            return None
        mine = starts[self.dist.rank :: self.dist.world_size]
        # an FSDP forward gathers weights from every rank: each rank runs as many as the busiest one
        share = -(-len(starts) // self.dist.world_size) if cfg.fsdp else len(mine)
        total = torch.zeros(2, device=self.device)  # (sum of token losses, target tokens)
        self.model.eval()
        for i in range(0, share, cfg.batch_size):
            chunk = mine[i : i + cfg.batch_size]
            x, y = windows(self.data.val, chunk if len(chunk) else starts[:1], self.block_size, self.data.val_mask)
            x, y = x.to(self.device), y.to(self.device)
            with autocast(self.device, self.dtype):
                # the head a chunk of positions at a time (token_losses), so the whole logits never exist;
                # under FSDP the sharded head is gathered inside the model's forward only: there the logits
                # come whole, and their fp32 copies still a chunk at a time
                out = self.model(x, head=cfg.fsdp)  # (b, T, V') or (b, T, C)
                if not len(chunk):
                    continue  # that forward only kept the other ranks company
                per_token = token_losses(nn.Identity() if cfg.fsdp else self.model.lm_head, out.flatten(0, 1), y.flatten(), self.vocab)  # (b * T,)
            total[0] += per_token.sum()  # 0 where ignored
            total[1] += (y != IGNORE_INDEX).sum()
        self.model.train()
        if self.dist.enabled:
            import torch.distributed as dist

            dist.all_reduce(total)
        if total[1] == 0:
            return None  # validation windows that hold no response token at all
        return (total[0] / total[1]).item()

    def _task_tokenizer(self) -> Any:
        """The data's tokenizer (a benchmark is text). The task's data is read once here too, and its
        first item parsed, so a missing file, an unreachable hub or a file of another task's format
        stops the run before it trains, not at its first evaluation."""
        from ..evaluate import wikitext_text
        from ..tasks import ITEMS, load_records

        for task, data in self.task_files().items():
            if task == "wikitext":
                wikitext_text(data)
            else:
                for record in load_records(task, data, 1):
                    ITEMS[task](record, f"{data or task} item 1")
        return self._data_tokenizer()

    def task_files(self) -> dict[str, str | None]:
        """Each ``eval_task``'s file (None: the hub's split): ``eval_task_data`` itself for one task, the
        task's file in that folder for several (``evaluate.task_file``)."""
        from ..evaluate import task_file

        cfg = self.config
        tasks, data = cfg.eval_tasks, cfg.eval_task_data
        if len(tasks) == 1 or data is None:
            return {task: data for task in tasks}
        return {task: str(task_file(data, task)) for task in tasks}

    def _data_tokenizer(self) -> Any:
        """The tokenizer the data was prepared with: the one prepare saved beside it, else GPT-2's."""
        from ..data import load_tokenizer

        saved = self.data.directory / "tokenizer"
        return load_tokenizer(saved if saved.is_dir() else None)

    def eval_scores(self) -> dict[str, float]:
        """The metrics an evaluation adds beside ``val_loss``: the benchmark's, when there is one."""
        return self.task_scores() if self.config.eval_task else {}

    def task_scores(self) -> dict[str, float]:
        """The benchmarks' metrics (``eval_task``) of the model as it is now, named ``{task}_{metric}``."""
        from ..evaluate import evaluate_task

        cfg = self.config
        scores = {}
        with self.model_to_read() as model:
            for task, data in self.task_files().items():
                metrics = evaluate_task(model, self.task_tokenizer, task, data, cfg.eval_task_limit, batch_size=cfg.batch_size, dtype=self.dtype)
                scores.update({f"{task}_{k}": round(v, 6) for k, v in metrics.items() if k != "n"})
        return scores

    def sample_text(self) -> str:
        """``config.sample``'s continuation by the model as it is now (``TrainConfig.sample``). It draws
        from a generator of its own, seeded alike every time, so the run's random numbers are untouched
        and two evaluations' texts differ only by what the model learned between them."""
        from ..generate import PREVIEW_SAMPLING, generate_text

        cfg = self.config
        assert cfg.sample is not None
        with self.model_to_read() as model:
            # plain decoding: a GPU's default would record a CUDA graph for this one short call
            return generate_text(model, self.sample_tokenizer, cfg.sample, cfg.sample_tokens, seed=cfg.seed, static_cache=False,
                                 **PREVIEW_SAMPLING)

    # -- metrics ---------------------------------------------------------------------------------

    @property
    def metrics(self) -> list[dict[str, Any]]:
        """The records of metrics.jsonl so far (the main process's; [] on the others)."""
        return self.metrics_log.records if self.metrics_log is not None else []

    def log_record(self, record: dict[str, Any]) -> None:
        assert self.metrics_log is not None  # the main process logs
        try:
            self.metrics_log.append(record)
        except OSError as err:  # a line cut short is skipped when the run is resumed
            self._write_failed(err, f"writing {self.metrics_log.path}", f"the checkpoint of step {self.last_saved} is intact")

    def _plot(self) -> None:
        if self.metrics:
            plot_metrics(self.metrics, self.run_dir / PLOT, grad_clip=self.config.grad_clip)

    # -- the loop --------------------------------------------------------------------------------

    def run(self) -> TrainResult:
        """Train to ``max_steps`` (or an early stop, or Ctrl-C) and return the result; ``run/status.json``
        says meanwhile that the run is running, and afterwards how it ended (``train.status``)."""
        main = self.dist.is_main
        if main:
            write_status(self.run_dir, RUNNING, step=self.step, max_steps=self.config.max_steps)
        try:
            result = run_loop(self)
        except BaseException as err:
            if main:
                stopped = isinstance(err, KeyboardInterrupt)
                write_status(self.run_dir, INTERRUPTED if stopped else FAILED, step=self.step, max_steps=self.config.max_steps,
                             error=None if stopped else error_line(err))
            raise
        if main:
            state = STOPPED_EARLY if result.stopped_early else INTERRUPTED if result.interrupted else FINISHED
            write_status(self.run_dir, state, step=self.step, max_steps=self.config.max_steps)
        return result

    def length_line(self) -> str:
        """How far the run goes, in steps and in passes over the data (a long run over little data overfits)."""
        epochs, size = self.epoch_at(self.config.max_steps), self.sampler.epoch_size
        what = f"{size:,} examples" if self.task == "classify" else f"{size:,} windows of {self.block_size} tokens"
        return f"{self.config.max_steps:,} steps = {epochs:,.{2 if epochs < 10 else 1}f} epochs of the training data ({what})"

    def step_record(self, step: int, lr: float, loss: float, tok_per_s: float, step_time: float) -> dict[str, Any]:
        """A logged step's metrics.jsonl line (before any evaluation adds to it)."""
        record = {"step": step, "epoch": round(self.epoch_at(step), 4), "tokens": step * self.tokens_per_step, "loss": round(loss, 6), "lr": lr}
        if self.grad_norm is not None:  # (read with the loss)
            record["grad_norm"] = round(self.grad_norm, 4)
        record["tok_per_s"] = round(tok_per_s, 1)
        if self.peak:
            record["mfu"] = round(self.flops_per_step / step_time / (self.peak * self.dist.world_size), 5)
        return record

    def peak_memory_per_rank(self) -> list[int]:
        """Every rank's peak memory so far in bytes (``sharded.peak_memory``), gathered: a collective."""
        peaks = [peak_memory(self.device)]
        if self.dist.enabled:
            import torch.distributed as dist

            peaks = [0] * self.dist.world_size
            dist.all_gather_object(peaks, peak_memory(self.device))
        return peaks

    def call_on_eval(self) -> None:
        """The user's hook sees the real-vocabulary model in eval mode; the RNG it draws from (to
        sample text, say) is put back afterwards, so a hook never changes the run."""
        hook = self.on_eval
        assert hook is not None  # run() calls this only when there is a hook
        devices = [self.device] if self.device.type == "cuda" else []
        state = (random.getstate(), np.random.get_state())
        with torch.random.fork_rng(devices=devices), self.model_to_read() as model:
            try:
                hook(self.step, model)
            finally:
                random.setstate(state[0])
                np.random.set_state(state[1])

    def close(self, *, finished: bool = False) -> None:
        """Leave the process group we joined. After a normal finish every rank first waits for the
        others (rank 0 is still writing files while the rest are done): a rank that tears down its
        gloo connections while a peer still uses them can abort the whole job at exit (reproduced:
        3 aborts in 20 runs without the barrier, none with it). Dashboards are closed (flushed) first."""
        if self.metrics_log is not None:
            self.metrics_log.close()
        graphed = getattr(self, "graphed", None)  # (not made when set-up failed before it)
        if graphed is not None:  # a recorded step holds its own memory (activations, gradients)
            graphed.release()
            self.graphed = None
        if not self.dist.owns_group:
            return
        import torch.distributed as dist

        if finished:
            dist.barrier()
        dist.destroy_process_group()
        self.dist.owns_group = False


def refuse(flag: str, why_not: str | None) -> None:
    """Stop, in one line, a run that asks for ``flag`` where it cannot work (``why_not``; None: it can)."""
    if why_not:
        raise ConfigError(f"{flag} does not combine with this run: {why_not}")


def set_dropout(model: GPT2, p: float) -> None:
    """Use dropout ``p`` everywhere in ``model`` (its config too, so a saved model records it)."""
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = p
        if hasattr(module, "dropout_p"):
            setattr(module, "dropout_p", p)  # noqa: B010 (a plain attribute of the attention module, not a tensor)
    model.config = model.config.replace(embd_pdrop=p, attn_pdrop=p, resid_pdrop=p)


__all__ = ["Trainer", "set_dropout"]
