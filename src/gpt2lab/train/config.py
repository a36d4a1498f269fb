"""What defines a training run (``TrainConfig``), what it hands back (``TrainResult``), and the
rule for resuming one: which settings may change and which the checkpoint decides."""

from __future__ import annotations

import math
import os
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..lora import DEFAULT_TARGETS, check_lora_settings
from ..model import GPT2
from ..tasks import TASKS

MAX_STEPS = 1000  # a run's length when neither max_steps nor epochs is given


@dataclass
class TrainConfig:
    """Everything that defines a training run. ``gpt2lab train`` fills one from its options.

    Model:
        init: ``"scratch"`` (a new model of the shape below), or a checkpoint to fine-tune: a
            local directory, a hub id or a preset name (``"gpt2"`` = the released 124M weights).
        n_layer, n_head, n_embd: the shape of a scratch model (ignored when fine-tuning).
        block_size: training context; a scratch model gets this many positions (default 256), a
            pretrained one keeps its own and trains on windows of this length (default: its context,
            at most 1024).
        dropout: dropout everywhere (embeddings, attention, residual branches).
    Task:
        task: ``"lm"`` (next-token prediction on a prepared DATA_DIR) or ``"classify"``: ``data`` is a
            ``.csv`` / ``.jsonl`` file of texts and labels, and a new head on ``init`` learns the labels
            (``gpt2lab.classify``; metrics add ``val_acc`` on a held-out split; RUN/model/ is a
            ``GPT2ForSequenceClassification`` checkpoint).
        text_field, label_field: the classification file's columns (default ``text`` and ``label``).
        val_fraction: the share of a classification file held out (seeded) to measure accuracy.
    LoRA (``gpt2lab.lora``; needs ``init`` other than scratch):
        lora_rank: train rank-r adapters beside the frozen block matrices instead of every weight
            (None: full fine-tuning). RUN/model/ then holds the merged model, RUN/adapter/ the
            adapter in PEFT's format.
        lora_alpha: the adapters' update is scaled by lora_alpha / lora_rank (default alpha = rank).
        lora_targets: the block matrices to adapt: c_attn, c_proj (attn.c_proj and mlp.c_proj), c_fc,
            or one projection alone (attn.c_proj, mlp.c_proj); a tuple or a comma-separated string.
        lora_dropout: dropout on the adapters' input.
    Optimisation:
        batch_size: windows per micro-batch per process; tokens per step are
            ``batch_size * block_size * grad_accum * world_size``.
        grad_accum: micro-batches per optimizer step.
        max_steps: optimizer steps to train for (counting from the start of the run).
        epochs: train for this many passes over the training data instead (fractions allowed): the
            trainer sets ``max_steps`` to ``ceil(epochs * windows / windows per step)`` once the data
            is open (``Trainer.steps_for_epochs``); a classify run counts its examples. Give one of the two.
        lr, min_lr: peak and final learning rate (``min_lr`` defaults to lr / 10).
        warmup_steps: linear warmup (default min(100, max_steps // 10)).
        lr_decay_steps: the step where cosine decay reaches min_lr (default max_steps).
        weight_decay, beta1, beta2: AdamW's; decay applies to matrices and embeddings only.
        grad_clip: clip the global gradient norm to this (0 turns clipping off).
        seed: makes initialisation, batch order and dropout reproducible.
    Bookkeeping:
        eval_every: evaluate on ``eval_batches`` validation batches every this many steps (0: only at the end).
        checkpoint_every: save checkpoint.pt and model/ every this many steps (and at the end).
        log_every: write a metrics.jsonl line every this many steps.
        eval_task: also score a benchmark at every evaluation (``hellaswag``, ``piqa``... of
            ``gpt2lab.tasks.TASKS``; ``gpt2lab.evaluate.evaluate_task``), or several with commas
            (``"arc_easy,piqa"``), logged as ``{task}_{metric}`` (``hellaswag_acc_norm``...);
            eval_task_data: its file, for several a folder of ``TASK.jsonl`` files (default: the hub's
            splits); eval_task_limit: its first N items (WikiText: tokens).
        keep_best: also keep the model of the best evaluation so far (the lowest ``val_loss``) in
            RUN/best/ (Hugging Face format, with the tokenizer; LoRA merged): the one to use when a
            fine-tune starts to overfit. The checkpoint remembers its step and loss, so a resumed run
            compares with it; ``TrainResult.best_step`` / ``best_val_loss`` say which it was.
        early_stop: stop when the validation loss has not gone below its lowest for this many
            evaluations in a row (the patience; needs ``eval_every``). With ``keep_best``, RUN/best/
            then holds the model of that lowest loss. ``TrainResult.stopped_early`` says it happened.
        sample: a prompt the model continues at every evaluation (``""``: from ``<|endoftext|>``),
            ``sample_tokens`` tokens of it, sampled (``generate.PREVIEW_SAMPLING``) from the run's seed each
            time, so that one evaluation's text differs from the last only by what the model learned
            between them. Shown under the progress bar, and kept in that step's metrics.jsonl record
            as ``sample`` (TensorBoard gets it as text).
        tensorboard: a TensorBoard log directory; wandb: a Weights & Biases project. Each gets
            every metrics.jsonl record (``train.dashboards``).
    Hardware:
        device: ``"auto"`` (CUDA, then MPS, then CPU), or ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
        dtype: ``"auto"`` (bf16 on GPUs that have it, else fp32), ``"fp32"``, ``"bf16"`` or ``"fp16"``:
            the autocast precision; parameters and optimizer state stay fp32.
        compile: ``torch.compile`` the model.
        activation_checkpointing: keep only each block's input for backward and recompute the rest
            there (``train.memory``): activation memory of one block instead of all L, for about one
            more forward pass of compute; the same losses and gradients.
        chunked_loss: the LM head and the loss a chunk of positions at a time
            (``train.loss.chunked_lm_loss``), so the (N, V) logits never exist: less memory, the same
            loss and gradients (not with fp16 or FSDP).
        cuda_graph: on a CUDA GPU, record the whole optimizer step (forward, backward, clipping,
            AdamW) as a CUDA graph after a few plain steps and replay it from then on
            (``train.graphed``): the host launches one graph instead of hundreds of kernels. The same
            losses; one process, bf16 or fp32, ``task`` lm. The recording keeps the step's memory
            (activations, gradients) reserved between steps, where a plain step hands it back.
        fsdp: under torchrun, shard weights, gradients and AdamW moments over the ranks with FSDP2
            (``train.sharded``) instead of copying them to each (DDP): each rank holds 1/N of them.
            The same losses; checkpoints in the plain format (a run may resume with or without it).
        pad_vocab: pad the vocabulary to a multiple of this for faster matrix products
            (default 64 on GPUs and when compiled, else 1: an eager CPU step's loss reuses the
            logits' memory, which it can only at the real vocabulary). Internal only: the loss and
            every saved model see the real vocabulary.
    resume: continue the run in ``out`` from its checkpoint (see ``resumed_config``).
    """

    data: str | os.PathLike
    out: str | os.PathLike
    init: str = "scratch"
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 256
    block_size: int | None = None
    dropout: float = 0.0
    task: str = "lm"
    text_field: str = "text"
    label_field: str = "label"
    val_fraction: float = 0.1
    lora_rank: int | None = None
    lora_alpha: float | None = None
    lora_targets: tuple[str, ...] | str = DEFAULT_TARGETS
    lora_dropout: float = 0.0
    batch_size: int = 16
    grad_accum: int = 1
    max_steps: int = MAX_STEPS
    epochs: float | None = None
    lr: float = 6e-4
    min_lr: float | None = None
    warmup_steps: int | None = None
    lr_decay_steps: int | None = None
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    seed: int = 1337
    eval_every: int = 100
    eval_batches: int = 20
    checkpoint_every: int = 100
    log_every: int = 1
    eval_task: str | None = None
    eval_task_data: str | None = None
    eval_task_limit: int | None = None
    keep_best: bool = False
    early_stop: int | None = None
    sample: str | None = None
    sample_tokens: int = 48
    tensorboard: str | None = None
    wandb: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    compile: bool = False
    activation_checkpointing: bool = False
    chunked_loss: bool = False
    cuda_graph: bool = False
    fsdp: bool = False
    pad_vocab: int | None = None
    resume: bool = False
    progress: bool = True

    def resolved(self) -> TrainConfig:
        """A copy with every "default" filled in and every value checked."""
        c = TrainConfig(**asdict(self))
        c.data, c.out = str(c.data), str(c.out)
        for name in ("batch_size", "grad_accum", "max_steps", "eval_batches", "log_every", "sample_tokens"):
            if not isinstance(getattr(c, name), int) or getattr(c, name) < 1:
                raise ConfigError(f"{name} must be a positive integer, got {getattr(c, name)!r}")
        for name in ("eval_every", "checkpoint_every"):
            if getattr(c, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(c, name)}")
        if not c.lr > 0:
            raise ConfigError(f"lr must be positive, got {c.lr}")
        c.min_lr = c.lr / 10 if c.min_lr is None else c.min_lr
        if not 0 <= c.min_lr <= c.lr:
            raise ConfigError(f"min_lr must be in [0, lr], got {c.min_lr}")
        if c.epochs is not None:
            if c.max_steps != MAX_STEPS:
                raise ConfigError("give --max-steps or --epochs, not both")
            if not (isinstance(c.epochs, (int, float)) and math.isfinite(c.epochs) and c.epochs > 0):
                raise ConfigError(f"epochs must be a positive number, got {c.epochs!r}")
            c.epochs = float(c.epochs)
        else:  # (an epochs run's schedule waits for its step count: with_steps)
            c._fill_schedule()
        if not 0.0 <= c.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {c.dropout}")
        if c.task not in TRAIN_TASKS:
            raise ConfigError(f"--task must be one of {', '.join(TRAIN_TASKS)}, got {c.task!r}")
        if c.task == "classify":
            if c.init == "scratch":
                raise ConfigError("--task classify needs --init: the new head reads a trained model's hidden states "
                                  "(a directory, hub id or preset such as gpt2)")
            if c.eval_task is not None:
                raise ConfigError("--eval-task scores a language model; a classify run measures val_acc on its held-out split")
            if not 0.0 < c.val_fraction < 1.0:
                raise ConfigError(f"val_fraction must be between 0 and 1, got {c.val_fraction}")
        elif (c.text_field, c.label_field, c.val_fraction) != ("text", "label", 0.1):
            raise ConfigError("--text-field and --label-field name a classification file's columns; add --task classify")
        targets = c.lora_targets.split(",") if isinstance(c.lora_targets, str) else c.lora_targets
        c.lora_targets = tuple(t.strip() for t in targets)
        if c.lora_rank is not None:
            if c.init == "scratch":
                raise ConfigError("--lora-rank needs --init: LoRA adapts a trained model (a directory, hub id or preset such as gpt2)")
            c.lora_rank, c.lora_alpha, c.lora_targets, c.lora_dropout = check_lora_settings(c.lora_rank, c.lora_alpha, c.lora_targets, c.lora_dropout)
        else:
            given = [n for n, default in (("alpha", None), ("targets", DEFAULT_TARGETS), ("dropout", 0.0)) if getattr(c, f"lora_{n}") != default]
            if given:
                raise ConfigError(f"--lora-{given[0]} applies to LoRA runs only; add --lora-rank R")
        if c.eval_task is not None:
            tasks = c.eval_tasks
            if not tasks or any(t not in TASKS for t in tasks) or len(set(tasks)) != len(tasks):
                raise ConfigError(f"--eval-task must be one of {', '.join(TASKS)}, or several with commas, each once; got {c.eval_task!r}")
        elif c.eval_task_data is not None or c.eval_task_limit is not None:
            raise ConfigError("--eval-task-data and --eval-task-limit need --eval-task")
        if c.early_stop is not None:
            if not isinstance(c.early_stop, int) or c.early_stop < 1:
                raise ConfigError(f"early_stop must be a positive integer (evaluations), got {c.early_stop!r}")
            if not c.eval_every:
                raise ConfigError("--early-stop counts evaluations without a lower val loss: give --eval-every N too")
        if c.eval_task_limit is not None and c.eval_task_limit < 1:
            raise ConfigError(f"eval_task_limit must be a positive integer, got {c.eval_task_limit}")
        for name in ("eval_task_data", "tensorboard"):  # paths kept as text: the checkpoint records the config
            if getattr(c, name) is not None:
                setattr(c, name, str(getattr(c, name)))
        if c.sample is not None and c.task != "lm":
            raise ConfigError("--sample continues a prompt with a language model; a classify run measures val_acc instead")
        if c.fsdp and (c.task != "lm" or c.lora_rank is not None or c.eval_task is not None or c.sample is not None):
            raise ConfigError("--fsdp trains language models (--task lm) without --lora-rank, --eval-task and --sample; "
                              "score or sample RUN_DIR/model with gpt2lab eval or generate afterwards")
        if c.dtype not in ("auto", "fp32", "bf16", "fp16"):
            raise ConfigError(f"dtype must be auto, fp32, bf16 or fp16, got {c.dtype!r}")
        return c

    @property
    def eval_tasks(self) -> list[str]:
        """The benchmarks ``eval_task`` names (``"piqa,arc_easy"``: two), in its order."""
        return [t.strip() for t in (self.eval_task or "").split(",") if t.strip()]

    def with_steps(self, max_steps: int) -> TrainConfig:
        """This resolved config running ``max_steps`` steps (an ``epochs`` run's, once its data is
        known), with the schedule that follows from them where none was given."""
        c = replace(self, max_steps=max_steps)
        c._fill_schedule()
        return c

    def _fill_schedule(self) -> None:
        """The learning-rate schedule's defaults, which follow from ``max_steps``."""
        self.warmup_steps = min(100, self.max_steps // 10) if self.warmup_steps is None else self.warmup_steps
        self.lr_decay_steps = self.max_steps if self.lr_decay_steps is None else self.lr_decay_steps
        if self.warmup_steps < 0 or self.lr_decay_steps < 1:
            raise ConfigError("warmup_steps must be >= 0 and lr_decay_steps >= 1")


TRAIN_TASKS = ("lm", "classify")

# Options that may change when a run is resumed: how long it goes on and how it is watched (RUN_WATCH:
# left at their defaults, the run's own values go on), and where and how it runs on this machine (the
# call's values, given or not). Everything else defines the trajectory and is taken from the checkpoint.
RUN_WATCH = frozenset({"max_steps", "epochs", "eval_every", "eval_batches", "checkpoint_every", "log_every", "eval_task",
                       "eval_task_data", "eval_task_limit", "keep_best", "early_stop", "sample", "sample_tokens", "tensorboard", "wandb"})
# how this machine runs the step: switches that change speed and memory, never the losses; a resumed run takes
# this call's (a switch has no "off" flag to say otherwise), and is told which of the run's own it left out
MACHINE_SWITCHES = ("compile", "cuda_graph", "chunked_loss", "activation_checkpointing", "fsdp")
RUN_CONTROL = RUN_WATCH | {"data", "out", "device", "resume", "progress", *MACHINE_SWITCHES}


def resumed_config(saved: dict[str, Any], config: TrainConfig) -> TrainConfig:
    """The configuration a resumed run continues with: the checkpoint's (``saved``) trajectory, so
    the run goes on exactly as it began, and ``config``'s ``RUN_CONTROL`` options.

    How long the run goes on and how it is watched (``RUN_WATCH``: ``max_steps``, ``eval_every``,
    ``keep_best``, ``sample``...) keep the run's own values unless ``config`` gives others: a run
    started with ``--max-steps 5000`` and resumed with ``--resume`` alone goes on to step 5000.
    Where it runs (``device``, ``compile``, ``fsdp``...) is this call's to say.

    A trajectory option that ``config`` sets to something other than its default *and* other
    than the run's own value is a mistake (``--lr 0.5`` on a run that trains at 3e-3): a
    ``ConfigError`` says so rather than silently dropping it. (Giving an option its default value
    cannot be told from leaving it out: the checkpoint's value wins, for ``RUN_WATCH`` too.)
    """
    defaults = {f.name: f.default for f in fields(TrainConfig)}
    for f in fields(TrainConfig):
        if f.name in RUN_CONTROL or f.name not in saved:
            continue
        value = getattr(config, f.name)
        if f.default is not MISSING and value != f.default and value != saved[f.name]:
            flag = "--" + f.name.replace("_", "-")
            raise ConfigError(f"{flag} {value!r} differs from the run's {saved[f.name]!r}; a resumed run keeps its settings (leave {flag} out)")

    # the run's length is one setting given two ways: a call that gives either replaces both
    length_given = config.max_steps != MAX_STEPS or config.epochs is not None

    def continued(name: str, saved_value: Any) -> Any:
        if name in ("max_steps", "epochs"):
            if length_given:
                return getattr(config, name)
            if name == "max_steps" and saved.get("epochs") is not None:
                return MAX_STEPS  # (unused: an epochs run counts its steps again from its data)
            return saved_value
        if name in RUN_WATCH:
            given = getattr(config, name)
            return saved_value if given == defaults[name] else given
        return getattr(config, name) if name in RUN_CONTROL else saved_value

    return TrainConfig(**{k: continued(k, v) for k, v in saved.items() if k in defaults})


@dataclass
class TrainResult:
    """What ``train`` hands back."""

    run_dir: Path
    step: int
    loss: float | None  # the last training loss
    val_loss: float | None  # the last validation loss
    model: GPT2  # the trained model, real vocabulary, eval mode, on the training device (an FSDP run's: on the CPU)
    interrupted: bool = False  # stopped by Ctrl-C / SIGTERM (a checkpoint was saved)
    metrics: list[dict[str, Any]] = field(default_factory=list)
    peak_memory: list[int] = field(default_factory=list)  # bytes, per rank: GPU memory allocated, else the resident set
    best_step: int | None = None  # keep_best: the step of the lowest validation loss, whose model is in RUN/best/
    best_val_loss: float | None = None
    stopped_early: bool = False  # early_stop: the validation loss stopped going down, and so did the run


__all__ = ["TRAIN_TASKS", "TrainConfig", "TrainResult", "RUN_CONTROL", "RUN_WATCH", "MACHINE_SWITCHES", "resumed_config"]
