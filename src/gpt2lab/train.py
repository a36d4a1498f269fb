"""Train a GPT-2: from scratch or from released weights, on one CPU or many GPUs.

    >>> from gpt2lab.data import prepare
    >>> from gpt2lab.train import TrainConfig, train
    >>> prepare(["my_texts/"], "data/")                                         # doctest: +SKIP
    >>> result = train(TrainConfig(data="data/", out="run/", max_steps=200))    # doctest: +SKIP
    >>> result.model.generate(...)                                              # doctest: +SKIP

One optimizer step, the habits of a serious run included:

    for each of grad_accum micro-batches:       # a big batch, a micro-batch at a time
        logits = model(x)                       # under autocast (bf16/fp16) when asked
        loss = cross_entropy(logits, y) / grad_accum
        loss.backward()                         # DDP averages gradients over ranks on the last one
    clip the gradient norm to grad_clip
    lr = warmup then cosine (``lr_at``)
    AdamW step (weight decay on matrices only; the fused kernel when there is one)

What a RUN_DIR holds afterwards:

    checkpoint.pt   everything needed to continue exactly: weights, optimizer moments, step, the
                    data sampler's position, every RNG state, the configuration (written atomically)
    model/          the latest weights in Hugging Face format (``GPT2.from_pretrained``, transformers)
    metrics.jsonl   one JSON object per logged step: step, loss, lr, tok_per_s, mfu, val_loss
    loss.png        the training and validation curves

Under ``torchrun --nproc-per-node N`` the same code runs DistributedDataParallel (NCCL on GPUs,
gloo on CPUs): each rank reads its own slice of every global batch, rank 0 writes the files.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import random
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import GPT2Config, parameter_counts
from .data import BatchSampler, TokenData, eval_starts, open_data, windows
from .devices import pick_device
from .errors import CheckpointError, ConfigError, DataError, TrainingError
from .files import atomic_write
from .model import GPT2

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"
MODEL_DIR = "model"
PLOT = "loss.png"
CHECKPOINT_FORMAT = 1


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
    Optimisation:
        batch_size: windows per micro-batch per process; tokens per step are
            ``batch_size * block_size * grad_accum * world_size``.
        grad_accum: micro-batches per optimizer step.
        max_steps: optimizer steps to train for (counting from the start of the run).
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
    Hardware:
        device: ``"auto"`` (CUDA, then MPS, then CPU), or ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
        dtype: ``"auto"`` (bf16 on GPUs that have it, else fp32), ``"fp32"``, ``"bf16"`` or ``"fp16"``:
            the autocast precision; parameters and optimizer state stay fp32.
        compile: ``torch.compile`` the model.
        pad_vocab: pad the vocabulary to a multiple of this for faster matrix products
            (default 64 on GPUs, 1 on CPUs). Internal only: the loss and every saved model see the
            real vocabulary.
    resume: continue the run in ``out`` from its checkpoint.
    """

    data: str | os.PathLike
    out: str | os.PathLike
    init: str = "scratch"
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 256
    block_size: int | None = None
    dropout: float = 0.0
    batch_size: int = 16
    grad_accum: int = 1
    max_steps: int = 1000
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
    device: str = "auto"
    dtype: str = "auto"
    compile: bool = False
    pad_vocab: int | None = None
    resume: bool = False
    progress: bool = True

    def resolved(self) -> "TrainConfig":
        """A copy with every "default" filled in and every value checked."""
        c = TrainConfig(**asdict(self))
        c.data, c.out = str(c.data), str(c.out)
        for name in ("batch_size", "grad_accum", "max_steps", "eval_batches", "log_every"):
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
        c.warmup_steps = min(100, c.max_steps // 10) if c.warmup_steps is None else c.warmup_steps
        c.lr_decay_steps = c.max_steps if c.lr_decay_steps is None else c.lr_decay_steps
        if c.warmup_steps < 0 or c.lr_decay_steps < 1:
            raise ConfigError("warmup_steps must be >= 0 and lr_decay_steps >= 1")
        if not 0.0 <= c.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {c.dropout}")
        if c.dtype not in ("auto", "fp32", "bf16", "fp16"):
            raise ConfigError(f"dtype must be auto, fp32, bf16 or fp16, got {c.dtype!r}")
        return c


# Options that may change when a run is resumed: how long it goes on, how it is watched, where it
# runs. Everything else defines the trajectory and is taken from the checkpoint.
RUN_CONTROL = frozenset({"data", "out", "max_steps", "eval_every", "eval_batches", "checkpoint_every", "log_every",
                         "device", "compile", "resume", "progress"})


@dataclass
class TrainResult:
    """What ``train`` hands back."""

    run_dir: Path
    step: int
    loss: float | None  # the last training loss
    val_loss: float | None  # the last validation loss
    model: GPT2  # the trained model, real vocabulary, eval mode, on the training device
    interrupted: bool = False  # stopped by Ctrl-C / SIGTERM (a checkpoint was saved)
    metrics: list[dict[str, Any]] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# The learning-rate schedule and the optimizer
# ---------------------------------------------------------------------------------------------


def lr_at(step: int, lr: float, min_lr: float, warmup_steps: int, decay_steps: int) -> float:
    """The learning rate of optimizer step ``step`` (0-based): linear warmup, then cosine decay.

    warmup: lr * (step + 1) / warmup_steps, reaching lr at the last warmup step;
    decay: from lr at ``warmup_steps`` down to min_lr at ``decay_steps``, half a cosine period;
    after ``decay_steps``: min_lr.
    """
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    if step >= decay_steps:
        return min_lr
    progress = (step - warmup_steps) / max(1, decay_steps - warmup_steps)  # 0 -> 1
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (lr - min_lr)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: weight decay for matrices and embeddings (dim >= 2), none for biases and
    LayerNorm gains, which set scales and offsets rather than store features. A tied tensor
    (``lm_head.weight`` is ``wte.weight``) appears once."""
    decay, no_decay, decay_names, no_decay_names = [], [], [], []
    for name, p in model.named_parameters():  # named_parameters yields a shared tensor once
        if not p.requires_grad:
            continue
        (decay if p.dim() >= 2 else no_decay).append(p)
        (decay_names if p.dim() >= 2 else no_decay_names).append(name)
    return [
        {"params": decay, "weight_decay": weight_decay, "names": decay_names},
        {"params": no_decay, "weight_decay": 0.0, "names": no_decay_names},
    ]


def make_optimizer(model: nn.Module, config: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW over ``param_groups``; the fused kernel (one pass over every tensor per step) where
    this build of PyTorch has one for the device, else the multi-tensor ``foreach`` one."""
    groups = param_groups(model, config.weight_decay)
    for g in groups:
        g.pop("names")
    kwargs = dict(lr=config.lr, betas=(config.beta1, config.beta2), eps=1e-8)
    try:
        return torch.optim.AdamW(groups, fused=True, **kwargs)
    except (RuntimeError, TypeError, ValueError):  # no fused AdamW for this device / dtype / version
        return torch.optim.AdamW(groups, foreach=device.type != "mps", **kwargs)


# ---------------------------------------------------------------------------------------------
# Model FLOPs utilisation
# ---------------------------------------------------------------------------------------------

# Dense peak FLOP/s per GPU, (bf16/fp16 tensor cores, fp32 via TF32 tensor cores), from the vendors'
# data sheets. Matched against torch.cuda.get_device_name() in order: more specific names first.
GPU_PEAK_FLOPS: list[tuple[str, float, float]] = [
    ("GH200", 989e12, 494e12),
    ("H200", 989e12, 494e12),
    ("H100 PCIe", 756e12, 378e12),
    ("H100 NVL", 835e12, 418e12),
    ("H100", 989e12, 494e12),  # SXM
    ("H800", 989e12, 494e12),
    ("A100", 312e12, 156e12),
    ("A800", 312e12, 156e12),
    ("L40S", 362e12, 183e12),
    ("L40", 181e12, 90.5e12),
    ("L4", 121e12, 60e12),
    ("A10G", 70e12, 35e12),
    ("A10", 125e12, 62.5e12),
    ("V100", 125e12, 15.7e12),  # no TF32: fp32 is the CUDA-core rate
    ("T4", 65e12, 8.1e12),
]

_CPU_PEAK: dict[str, float] = {}


def measure_cpu_peak_flops(dtype: torch.dtype = torch.float32, n: int = 1024, repeats: int = 5) -> float:
    """This machine's matrix-product rate in FLOP/s: the best of a few (n x n) @ (n x n) products,
    with the thread count training uses. The denominator of MFU on a CPU."""
    key = f"{dtype}-{n}-{torch.get_num_threads()}"
    if key not in _CPU_PEAK:
        a = torch.randn(n, n, dtype=dtype)
        b = torch.randn(n, n, dtype=dtype)
        a @ b  # warm up (thread pool, caches)
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - t0)
        _CPU_PEAK[key] = 2 * n**3 / best
    return _CPU_PEAK[key]


def peak_flops(device: torch.device, dtype: torch.dtype) -> float | None:
    """Peak FLOP/s of one device for matrix products in ``dtype``: the GPU table, or a measurement
    on a CPU; ``None`` for a GPU not in the table."""
    if device.type == "cpu":
        return measure_cpu_peak_flops(torch.bfloat16 if dtype == torch.bfloat16 else torch.float32)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, half, single in GPU_PEAK_FLOPS:
            if key in name:
                return half if dtype in (torch.bfloat16, torch.float16) else single
    return None


def flops_per_token(config: GPT2Config, seq_len: int) -> float:
    """Training FLOPs per token (forward + backward): 6 per parameter in a matrix product, and the
    attention scores and weighted sums, 12 * n_layer * n_embd * seq_len (PaLM's appendix B; nanoGPT).
    The position table is a lookup, not a product, so it is left out; the tied token embedding
    counts once, as the LM head's product."""
    counts = parameter_counts(config)
    n = counts["total"] - counts["wpe"]
    return 6 * n + 12 * config.n_layer * config.n_embd * seq_len


# ---------------------------------------------------------------------------------------------
# Devices, precision, processes
# ---------------------------------------------------------------------------------------------


def pick_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[name]


def autocast(device: torch.device, dtype: torch.dtype):
    """Mixed precision: matrix products in ``dtype``, reductions and the loss in fp32. A no-op for fp32."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


@dataclass
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False  # we started the process group, so we end it

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: torch.device) -> tuple[Distributed, torch.device]:
    """Join the process group torchrun describes in RANK / WORLD_SIZE / LOCAL_RANK (MASTER_ADDR and
    MASTER_PORT say where rank 0 listens), or run as one process when there is none."""
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Distributed(), device
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local)  # one GPU per process on each machine
        torch.cuda.set_device(device)
    owns = False
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        owns = True
    return Distributed(rank, world, local, owns), device


# ---------------------------------------------------------------------------------------------
# Vocabulary padding
# ---------------------------------------------------------------------------------------------

VOCAB_KEYS = ("transformer.wte.weight", "lm_head.weight")


def pad_vocabulary(model: GPT2, multiple: int) -> int:
    """Give ``model`` extra, all-zero vocabulary rows up to a multiple of ``multiple``; return the real size.

    Matrix products with a (V, C) operand run faster when V is a multiple of 64 (50257 -> 50304).
    The extra rows are never looked up (no id reaches them) and the loss reads only the real
    logits, so their gradient is zero and they stay zero: the network computes the same function.
    """
    real = model.config.vocab_size
    padded = -(-real // multiple) * multiple
    if padded == real:
        return real
    wte = model.transformer.wte.weight
    new = torch.zeros(padded, wte.size(1), dtype=wte.dtype, device=wte.device)
    with torch.no_grad():
        new[:real] = wte
    model.transformer.wte.weight = nn.Parameter(new)
    if model.config.tie_word_embeddings:
        model.lm_head.weight = model.transformer.wte.weight
    else:
        head = torch.zeros(padded, wte.size(1), dtype=wte.dtype, device=wte.device)
        with torch.no_grad():
            head[:real] = model.lm_head.weight
        model.lm_head.weight = nn.Parameter(head)
    model.transformer.wte.num_embeddings = padded
    model.lm_head.out_features = padded
    model.config = model.config.replace(vocab_size=padded)
    return real


def real_vocab_model(model: GPT2, real_vocab: int) -> GPT2:
    """The model with its real vocabulary: ``model`` itself, or, when padded, a second ``GPT2``
    whose parameters are *views* of ``model``'s (no copy; the padding rows left out)."""
    if model.config.vocab_size == real_vocab:
        return model
    with torch.device("meta"):
        view = GPT2(model.config.replace(vocab_size=real_vocab))
    state = {k: (v[:real_vocab] if k in VOCAB_KEYS else v) for k, v in model.state_dict(keep_vars=True).items()}
    view.load_state_dict(state, assign=True)
    view.tie_weights()
    return view.train(model.training)


class _CrossEntropyInPlace(torch.autograd.Function):
    """Mean cross-entropy whose backward overwrites the logits with their gradient.

    F.cross_entropy keeps log_softmax's (N, V) output and, in backward, allocates a zeroed (N, V)
    tensor and then another for the gradient. With GPT-2's vocabulary these are the largest tensors
    of a small model's step (N x 50257 floats: 200 MB for 1024 tokens) and on a CPU each fresh one
    costs page faults to allocate. Here forward keeps only the (N,) log-sum-exp, and backward turns
    the logits, which nothing else needs any more, into softmax - one_hot in place.
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:  # logits (N, V), targets (N,)
        lse = torch.logsumexp(logits, dim=1)  # (N,)
        loss = (lse - logits.gather(1, targets[:, None]).squeeze(1)).mean()
        ctx.save_for_backward(logits, targets, lse)
        return loss

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        logits, targets, lse = ctx.saved_tensors
        g = logits.sub_(lse[:, None]).exp_()  # (N, V): softmax, in the logits' own memory
        g[torch.arange(g.size(0), device=g.device), targets] -= 1.0  # - one_hot(targets)
        g.mul_(grad / g.size(0))  # the mean's 1/N
        return g, None


def lm_loss(logits: torch.Tensor, targets: torch.Tensor, vocab: int) -> torch.Tensor:
    """Mean next-token cross-entropy over the real vocabulary. logits (B, T, V'), targets (B, T)."""
    if logits.size(-1) == vocab and logits.dtype == torch.float32 and logits.requires_grad and logits.is_contiguous():
        # the training step's logits are used by the loss alone, so its backward may reuse their memory
        return _CrossEntropyInPlace.apply(logits.view(-1, vocab), targets.reshape(-1))
    if logits.size(-1) != vocab:
        logits = logits[..., :vocab]  # padding columns take no part in the softmax
    return F.cross_entropy(logits.reshape(-1, vocab), targets.reshape(-1))


# ---------------------------------------------------------------------------------------------
# RNG state (every generator a run draws from)
# ---------------------------------------------------------------------------------------------


def rng_state(device: torch.device) -> dict[str, Any]:
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state = {
        "python": random.getstate(),
        # numpy's state as plain types and a tensor, so torch.load(weights_only=True) accepts it
        "numpy": (np_name, torch.from_numpy(np_keys.astype(np.int64)), np_pos, np_has_gauss, np_gauss),
        "torch": torch.get_rng_state(),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    random.setstate(state["python"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# ---------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a training checkpoint; tensors only (``weights_only=True``: no code runs)."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT
    if not path.is_file():
        raise CheckpointError(f"no training checkpoint at {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(f"cannot read {path} ({type(err).__name__}: {str(err)[:200]}); it is damaged or not a gpt2lab checkpoint") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a gpt2lab training checkpoint (format {CHECKPOINT_FORMAT})")
    return ckpt


def _out_of_space(err: OSError) -> bool:
    return err.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", -1))


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------


class _StopFlag:
    """Ctrl-C (SIGINT) or SIGTERM ask the loop to stop after the current step, save, and exit.
    A second Ctrl-C stops at once."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def _handle(self, signum, frame) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> "_StopFlag":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class Trainer:
    """One training run. ``train(config)`` is ``Trainer(config).run()``; the pieces are methods so a
    notebook can build a trainer, look at ``trainer.model``, and call ``run``."""

    def __init__(
        self,
        config: TrainConfig,
        *,
        on_eval: Callable[[int, GPT2], None] | None = None,
        on_log: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.on_eval = on_eval
        self.on_log = on_log
        config = config.resolved()
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
        if config.resume:
            if not ckpt_path.is_file():
                raise TrainingError(f"nothing to resume: {ckpt_path} does not exist; start without --resume")
            ckpt = load_checkpoint(ckpt_path)
            saved = ckpt["train_config"]
            config = TrainConfig(**{k: (getattr(config, k) if k in RUN_CONTROL else saved[k]) for k in saved}).resolved()
        elif ckpt_path.is_file():
            raise TrainingError(f"{self.run_dir} already holds a run ({CHECKPOINT}); pass --resume to continue it, or choose another --out")
        self.config = config
        self.data: TokenData = open_data(config.data)
        self.dtype = pick_dtype(config.dtype, self.device)
        if self.dtype == torch.bfloat16 and self.device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise ConfigError("this GPU has no bf16; use --dtype fp16")
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True  # fp32 products on tensor cores (TF32)
            torch.backends.cudnn.allow_tf32 = True

        # the model, built identically on every rank
        seed_everything(config.seed)
        if ckpt is not None:
            model = GPT2(GPT2Config(**ckpt["model_config"]))
        else:
            model = self._initial_model(config)
        self.model_config = model.config  # the real vocabulary
        self._check_data_fits(model.config)
        self.block_size = config.block_size
        model.to(self.device)
        pad = config.pad_vocab if config.pad_vocab is not None else (64 if self.device.type == "cuda" else 1)
        self.vocab = pad_vocabulary(model, pad) if pad > 1 else model.config.vocab_size
        self.model = model
        self.optimizer = make_optimizer(model, config, self.device)
        self.wte_index = [id(p) for g in self.optimizer.param_groups for p in g["params"]].index(id(model.transformer.wte.weight))
        self.scaler = torch.amp.GradScaler(self.device.type) if self.dtype == torch.float16 else None

        self.sampler = BatchSampler(self.data.train, config.block_size, config.batch_size, seed=config.seed,
                                    rank=self.dist.rank, world_size=self.dist.world_size)
        self.step = 0
        self.elapsed = 0.0
        self.last_saved = 0
        self._stop = _StopFlag()
        self._stop_all = False
        if ckpt is not None:
            self._restore(ckpt)
        else:
            seed_everything(config.seed + self.dist.rank)  # dropout differs across ranks, reproducibly

        self.forward_model: nn.Module = model
        if config.compile:
            self.forward_model = torch.compile(model)
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.forward_model = DDP(self.forward_model, device_ids=ids)
        self.tokens_per_step = config.batch_size * config.block_size * config.grad_accum * self.dist.world_size
        self.flops_per_step = flops_per_token(self.model_config, config.block_size) * self.tokens_per_step
        self.peak = peak_flops(self.device, self.dtype) if self.dist.is_main else None
        self.metrics_path = self.run_dir / METRICS
        if self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            # temporary files of atomic writes that a kill -9 interrupted (the real files are intact)
            for name in (CHECKPOINT, METRICS, PLOT):
                for stale in self.run_dir.glob(f".{name}.*.tmp"):
                    stale.unlink(missing_ok=True)
            for stale in (self.run_dir / MODEL_DIR).glob(".*.tmp"):
                stale.unlink(missing_ok=True)
            self.metrics = self._read_metrics(up_to=self.step) if ckpt is not None else []
            self._rewrite_metrics()

    def _initial_model(self, config: TrainConfig) -> GPT2:
        n_vocab = self.data.n_vocab
        if config.init == "scratch":
            config.block_size = config.block_size or 256
            return GPT2(GPT2Config(
                vocab_size=n_vocab, block_size=config.block_size, n_layer=config.n_layer, n_head=config.n_head,
                n_embd=config.n_embd, embd_pdrop=config.dropout, attn_pdrop=config.dropout, resid_pdrop=config.dropout,
            ))
        from .weights import from_pretrained, resolve_checkpoint_dir

        model = from_pretrained(config.init)
        self._check_tokenizer(resolve_checkpoint_dir(config.init))
        if config.block_size is None:
            config.block_size = min(model.config.block_size, 1024)
        set_dropout(model, config.dropout)
        # what a scratch model would have been is irrelevant now: record the real shape
        config.n_layer, config.n_head, config.n_embd = model.config.n_layer, model.config.n_head, model.config.n_embd
        return model

    def _check_tokenizer(self, model_dir: Path) -> None:
        """A model directory that carries its own tokenizer must carry the data's."""
        from .data import tokenizer_fingerprint
        from .tokenizer import Tokenizer
        from .vocab_files import find_vocab_files

        if find_vocab_files(model_dir) is None:
            return  # no tokenizer files: GPT-2's is assumed, the vocabulary-size check below still applies
        theirs = tokenizer_fingerprint(Tokenizer.from_file(model_dir))
        ours = self.data.meta["tokenizer"]["fingerprint"]
        if theirs != ours:
            raise DataError(
                f"tokenizer mismatch: {self.config.data if hasattr(self, 'config') else 'the data'} was tokenised with "
                f"{self.data.meta['tokenizer']['name']!r}, but {model_dir} has a different tokenizer; "
                f"prepare the data again with --tokenizer {model_dir}"
            )

    def _check_data_fits(self, cfg: GPT2Config) -> None:
        meta = self.data.meta
        n_vocab, max_id = int(meta["tokenizer"]["n_vocab"]), int(meta.get("max_token_id", -1))
        if n_vocab > cfg.vocab_size or max_id >= cfg.vocab_size:
            raise DataError(
                f"vocabulary mismatch: the data's tokenizer has {n_vocab:,} tokens (ids up to {max_id:,}) but the model "
                f"only {cfg.vocab_size:,}; prepare the data with the model's tokenizer (--tokenizer)"
            )
        if self.config.block_size > cfg.block_size:
            raise ConfigError(f"--block-size {self.config.block_size} is over the model's context of {cfg.block_size} positions; use at most {cfg.block_size}")

    def _restore(self, ckpt: dict[str, Any]) -> None:
        self._load_model_state(ckpt["model"])
        opt_state = ckpt["optimizer"]
        self._pad_optimizer_state(opt_state)
        self.optimizer.load_state_dict(opt_state)
        if self.scaler is not None and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        self.sampler.load_state_dict(ckpt["sampler"])
        self.step = self.last_saved = int(ckpt["step"])
        self.elapsed = float(ckpt.get("elapsed", 0.0))
        states = ckpt["rng"]
        if self.dist.world_size == len(states):
            set_rng_state(states[self.dist.rank], self.device)
        else:  # resumed on a different number of processes: batches stay exact, dropout cannot
            seed_everything(self.config.seed + self.dist.rank + 7919 * self.step)

    # -- state with the real vocabulary ---------------------------------------------------------------

    def _model_state(self) -> dict[str, torch.Tensor]:
        return {k: (v[: self.vocab] if k in VOCAB_KEYS else v).detach().cpu() for k, v in self.model.state_dict().items()}

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

    def _optimizer_state(self) -> dict[str, Any]:
        state = self.optimizer.state_dict()
        if self.wte_index in state["state"]:
            # state_dict() hands out the optimizer's own per-parameter dicts: replace, never edit them
            slot = dict(state["state"][self.wte_index])
            for key in ("exp_avg", "exp_avg_sq"):
                if key in slot:
                    slot[key] = slot[key][: self.vocab]
            state["state"] = {**state["state"], self.wte_index: slot}
        return state

    def _pad_optimizer_state(self, state: dict[str, Any]) -> None:
        padded = self.model.config.vocab_size
        slot = state["state"].get(self.wte_index, {})
        for key in ("exp_avg", "exp_avg_sq"):
            if key in slot and slot[key].size(0) != padded:
                t = slot[key]
                slot[key] = torch.cat([t, t.new_zeros(padded - t.size(0), *t.shape[1:])])

    # -- one step --------------------------------------------------------------------------------

    def train_step(self) -> float:
        """One optimizer step; returns its mean training loss (over every rank)."""
        cfg = self.config
        lr = lr_at(self.step, cfg.lr, cfg.min_lr, cfg.warmup_steps, cfg.lr_decay_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.forward_model.train()
        loss_sum = torch.zeros((), device=self.device)
        for micro in range(cfg.grad_accum):
            x, y = self.sampler.next_batch()  # (B, T) each
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            last = micro == cfg.grad_accum - 1
            # DDP averages gradients across ranks in backward; only the last micro-batch needs it
            sync = self.forward_model.no_sync() if self.dist.enabled and not last else contextlib.nullcontext()
            with sync:
                with autocast(self.device, self.dtype):
                    logits = self.forward_model(x)  # (B, T, V')
                    loss = lm_loss(logits, y, self.vocab)
                scaled = loss / cfg.grad_accum
                (self.scaler.scale(scaled) if self.scaler is not None else scaled).backward()
            loss_sum += loss.detach()
        # one collective carries the loss and whether any rank was asked to stop
        signal_and_loss = torch.stack([loss_sum / cfg.grad_accum, torch.tensor(float(self._stop.requested), device=self.device)])
        if self.dist.enabled:
            import torch.distributed as dist

            dist.all_reduce(signal_and_loss)
            signal_and_loss[0] /= self.dist.world_size
        loss_value, stop = signal_and_loss.tolist()
        self._stop_all = stop > 0
        if not math.isfinite(loss_value):
            self.optimizer.zero_grad(set_to_none=True)
            raise TrainingError(
                f"the loss became {loss_value} at step {self.step + 1}; stopped before it reached the weights. "
                f"The last good checkpoint is {self.run_dir / CHECKPOINT} (step {self.last_saved}); "
                "lower --lr, lengthen --warmup-steps or clip harder (--grad-clip), then --resume"
            )
        if cfg.grad_clip > 0:
            if self.scaler is not None:
                self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self.lr = lr
        return loss_value

    # -- evaluation ------------------------------------------------------------------------------

    @torch.no_grad()
    def evaluate(self) -> float | None:
        """Mean loss over the fixed validation windows (spread over the ranks); ``None`` without validation data."""
        cfg = self.config
        # eval_batches global batches, so the windows do not depend on how many processes share them
        starts = eval_starts(self.data.val, cfg.block_size, cfg.eval_batches * cfg.batch_size * self.dist.world_size)
        if len(starts) == 0:
            return None
        mine = starts[self.dist.rank :: self.dist.world_size]
        total = torch.zeros(2, device=self.device)  # (sum of window losses, windows)
        self.model.eval()
        for i in range(0, len(mine), cfg.batch_size):
            x, y = windows(self.data.val, mine[i : i + cfg.batch_size], cfg.block_size)
            x, y = x.to(self.device), y.to(self.device)
            with autocast(self.device, self.dtype):
                logits = self.model(x)  # (b, T, V')
            per_token = F.cross_entropy(logits[..., : self.vocab].float().transpose(1, 2), y, reduction="none")  # (b, T)
            total[0] += per_token.mean(dim=1).sum()
            total[1] += x.size(0)
        self.model.train()
        if self.dist.enabled:
            import torch.distributed as dist

            dist.all_reduce(total)
        return (total[0] / total[1]).item()

    def export_model(self) -> GPT2:
        """The model as users see it: real vocabulary (views of the trained weights, no copy)."""
        return real_vocab_model(self.model, self.vocab)

    # -- saving ----------------------------------------------------------------------------------

    def save_checkpoint(self) -> None:
        """Write checkpoint.pt (atomically) and model/; every rank calls this (RNG states are gathered)."""
        states = [rng_state(self.device)]
        if self.dist.enabled:
            import torch.distributed as dist

            states = [None] * self.dist.world_size
            dist.all_gather_object(states, rng_state(self.device))
        if not self.dist.is_main:
            self.last_saved = self.step
            return
        ckpt = {
            "format": CHECKPOINT_FORMAT,
            "step": self.step,
            "model": self._model_state(),
            "model_config": self.model_config.to_dict(),
            "optimizer": self._optimizer_state(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "sampler": self.sampler.state_dict(),
            "rng": states,
            "train_config": asdict(self.config),
            "data": {"fingerprint": self.data.meta.get("fingerprint"), "tokenizer": self.data.meta["tokenizer"]},
            "elapsed": self.elapsed,
        }
        path = self.run_dir / CHECKPOINT
        try:
            atomic_write(path, lambda tmp: torch.save(ckpt, tmp))
            self.export_model().save_pretrained(self.run_dir / MODEL_DIR)
            self._copy_tokenizer()
        except OSError as err:
            what = "out of disk space" if _out_of_space(err) else f"{err.strerror or err}"
            raise TrainingError(
                f"{what} while writing the checkpoint in {self.run_dir}; the previous checkpoint "
                f"(step {self.last_saved}) is intact. Free some space, then --resume"
            ) from None
        self.last_saved = self.step
        self._plot()

    def _copy_tokenizer(self) -> None:
        """model/ gets the data's tokenizer files, so generating from it uses the right vocabulary."""
        src = self.data.directory / "tokenizer"
        if src.is_dir():
            for f in src.iterdir():
                if f.is_file():
                    data = f.read_bytes()
                    atomic_write(self.run_dir / MODEL_DIR / f.name, lambda tmp, data=data: tmp.write_bytes(data))

    # -- metrics ---------------------------------------------------------------------------------

    def _read_metrics(self, up_to: int) -> list[dict[str, Any]]:
        records = []
        if self.metrics_path.is_file():
            for line in self.metrics_path.read_text(encoding="utf-8").splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut short by a crash
                if isinstance(record, dict) and record.get("step", 0) <= up_to:
                    records.append(record)
        return records

    def _rewrite_metrics(self) -> None:
        text = "".join(json.dumps(r) + "\n" for r in self.metrics)
        atomic_write(self.metrics_path, lambda tmp: tmp.write_text(text, encoding="utf-8"))

    def _log(self, record: dict[str, Any]) -> None:
        self.metrics.append(record)
        with open(self.metrics_path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        if self.on_log is not None:
            self.on_log(record)

    def _plot(self) -> None:
        if self.metrics:
            plot_metrics(self.metrics, self.run_dir / PLOT)

    # -- the loop --------------------------------------------------------------------------------

    def run(self) -> TrainResult:
        cfg = self.config
        main = self.dist.is_main
        self.lr = lr_at(self.step, cfg.lr, cfg.min_lr, cfg.warmup_steps, cfg.lr_decay_steps)
        bar = None
        if main and cfg.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=cfg.max_steps, initial=self.step, desc="train", unit="step", dynamic_ncols=True)
            bar.write(
                f"training {parameter_counts(self.model_config)['total'] / 1e6:.2f}M parameters on {self.device} "
                f"({self.dist.world_size} process{'es' if self.dist.world_size > 1 else ''}, {str(self.dtype).removeprefix('torch.')}), "
                f"{self.tokens_per_step:,} tokens per step" + (f", vocabulary padded to {self.model.config.vocab_size}" if self.vocab != self.model.config.vocab_size else "")
            )
        loss = val_loss = None
        interrupted = False
        try:
            with _StopFlag() as self._stop:
                while self.step < cfg.max_steps:
                    t0 = time.perf_counter()
                    loss = self.train_step()
                    dt = time.perf_counter() - t0
                    self.elapsed += dt
                    tok_per_s = self.tokens_per_step / dt
                    last = self.step == cfg.max_steps
                    record = None
                    if main and (self.step % cfg.log_every == 0 or last):
                        record = {"step": self.step, "loss": round(loss, 6), "lr": self.lr, "tok_per_s": round(tok_per_s, 1)}
                        if self.peak:
                            record["mfu"] = round(self.flops_per_step / dt / (self.peak * self.dist.world_size), 5)
                    if (cfg.eval_every and self.step % cfg.eval_every == 0) or last:
                        val_loss = self.evaluate()
                        if record is None and main:
                            record = {"step": self.step, "loss": round(loss, 6), "lr": self.lr, "tok_per_s": round(tok_per_s, 1)}
                        if record is not None and val_loss is not None:
                            record["val_loss"] = round(val_loss, 6)
                        if bar is not None:
                            bar.write(f"step {self.step}: train loss {loss:.4f}" + (f", val loss {val_loss:.4f}" if val_loss is not None else ""))
                        if main and self.on_eval is not None:
                            self._call_on_eval()
                    if record is not None:
                        self._log(record)
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{tok_per_s:,.0f}", **({"mfu": f"{record['mfu']:.1%}"} if record and "mfu" in record else {}))
                    if (cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0) or last:
                        self.save_checkpoint()
                    if self._stop_all:
                        interrupted = True
                        if self.last_saved != self.step:
                            self.save_checkpoint()
                        if bar is not None:
                            bar.write(f"stopped at step {self.step}; checkpoint saved in {self.run_dir} (continue with --resume)")
                        break
                if self.last_saved != self.step:  # e.g. resumed at or past max_steps
                    self.save_checkpoint()
        finally:
            if bar is not None:
                bar.close()
        model = self.export_model().eval()
        return TrainResult(self.run_dir, self.step, loss, val_loss, model, interrupted, list(getattr(self, "metrics", [])))

    def _call_on_eval(self) -> None:
        """The user's hook sees the real-vocabulary model in eval mode; the RNG it draws from (to
        sample text, say) is put back afterwards, so a hook never changes the run."""
        model = self.export_model()
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            state = (random.getstate(), np.random.get_state())
            model.eval()
            try:
                self.on_eval(self.step, model)
            finally:
                model.train()
                self.model.train()
                random.setstate(state[0])
                np.random.set_state(state[1])

    def close(self, *, finished: bool = False) -> None:
        """Leave the process group we joined. After a normal finish every rank first waits for the
        others (rank 0 is still writing files while the rest are done): a rank that tears down its
        gloo connections while a peer still uses them can abort the whole job at exit (reproduced:
        3 aborts in 20 runs without the barrier, none with it)."""
        if not self.dist.owns_group:
            return
        import torch.distributed as dist

        if finished:
            dist.barrier()
        dist.destroy_process_group()
        self.dist.owns_group = False


def set_dropout(model: GPT2, p: float) -> None:
    """Use dropout ``p`` everywhere in ``model`` (its config too, so a saved model records it)."""
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = p
        if hasattr(module, "dropout_p"):
            module.dropout_p = p
    model.config = model.config.replace(embd_pdrop=p, attn_pdrop=p, resid_pdrop=p)


def train(
    config: TrainConfig,
    *,
    on_eval: Callable[[int, GPT2], None] | None = None,
    on_log: Callable[[dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Run (or resume) training as ``config`` says; see ``TrainConfig`` and the module docstring.

    Args:
        on_eval: called as ``on_eval(step, model)`` on rank 0 after every evaluation, with the
            model in eval mode (real vocabulary): sample some text, save a copy, plot something.
            Random numbers it draws do not disturb the run.
        on_log: called with each metrics record (a dict) as it is written.
    """
    trainer = Trainer(config, on_eval=on_eval, on_log=on_log)
    try:
        result = trainer.run()
    except BaseException:
        trainer.close()
        raise
    trainer.close(finished=True)
    return result


# ---------------------------------------------------------------------------------------------
# The loss plot
# ---------------------------------------------------------------------------------------------


def plot_metrics(records: list[dict[str, Any]], path: str | os.PathLike) -> Path:
    """loss.png: training loss per step (and its running mean), validation loss where measured."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in records if "loss" in r]
    losses = [r["loss"] for r in records if "loss" in r]
    val = [(r["step"], r["val_loss"]) for r in records if r.get("val_loss") is not None]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    ax.plot(steps, losses, color="tab:blue", alpha=0.35, linewidth=1, label="train (per step)")
    if len(losses) >= 10:
        k = max(2, len(losses) // 20)
        smooth = np.convolve(losses, np.ones(k) / k, mode="valid")
        ax.plot(steps[k - 1 :], smooth, color="tab:blue", linewidth=2, label=f"train (mean of {k})")
    if val:
        ax.plot(*zip(*val), "o-", color="tab:orange", linewidth=2, markersize=4, label="validation")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy loss (nats/token)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    finally:
        plt.close(fig)
    return Path(path)


__all__ = ["TrainConfig", "TrainResult", "Trainer", "train", "lr_at", "param_groups", "make_optimizer", "plot_metrics",
           "load_checkpoint", "flops_per_token", "peak_flops", "measure_cpu_peak_flops", "pad_vocabulary", "real_vocab_model"]
