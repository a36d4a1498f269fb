"""Train a GPT-2: from scratch or from released weights, on one CPU or many GPUs.

    >>> from gpt2lab.data import prepare
    >>> from gpt2lab.train import TrainConfig, train
    >>> prepare(["my_texts/"], "data/")                                         # doctest: +SKIP
    >>> result = train(TrainConfig(data="data/", out="run/", max_steps=200))    # doctest: +SKIP
    >>> result.model.generate(...)                                              # doctest: +SKIP

One job per module:

    config.py       TrainConfig (everything that defines a run), TrainResult, the resume rule
    run.py          train(config): the trainer for the run's task, run and closed
    trainer.py      Trainer: set-up, what a task changes, evaluation, metrics (the step and saving mixed in)
    step.py         OptimizerStep: one optimizer step on the device, its loss read back, the lr schedule
    saving.py       Saving: checkpoint.pt written and restored, model/, adapter/ and best/
    loop.py         the loop around the steps: when to read the loss, log, evaluate, save, stop
    classify.py     ClassifyTrainer: --task classify (a labelled file, a new head, val_acc)
    optim.py        the learning-rate schedule (warmup, cosine) and AdamW's parameter groups
    loss.py         next-token cross-entropy whose backward reuses the logits' memory
    vocab.py        vocabulary padding (50257 -> 50304 on GPUs) and the real-vocabulary view
    checkpoint.py   the run directory's files, checkpoint.pt read and written, RNG state, full disks
    metrics.py      metrics.jsonl written and read, the progress bar's line
    status.py       status.json: running, finished, stopped early, interrupted, failed, died
    runs.py         gpt2lab runs: runs side by side
    distributed.py  ranks and the process group under torchrun
    sharded.py      --fsdp: FSDP2 sharding, full checkpoints gathered on rank 0, peak memory per rank
    memory.py       --activation-checkpointing: each block recomputed in backward
    graphed.py      --cuda-graph: the step's device work recorded once and replayed
    signals.py      Ctrl-C / SIGTERM: finish the step, save, stop
    plots.py        loss.png, and gpt2lab runs --plot
    dashboards.py   TensorBoard and Weights & Biases

FLOPs per token and the hardware's peak (MFU) live in ``gpt2lab.flops``, precision and devices in
``gpt2lab.devices``; the checks that data fits a model in ``gpt2lab.compatibility``.

What a RUN_DIR holds afterwards:

    checkpoint.pt   everything needed to continue exactly: weights, optimizer moments, step, the
                    data sampler's position, every RNG state, the configuration (written atomically)
    model/          the latest weights in Hugging Face format (``GPT2.from_pretrained``, transformers)
    metrics.jsonl   one JSON object per logged step: step, epoch, tokens, loss, lr, grad_norm, tok_per_s, mfu, val_loss
    loss.png        the training and validation curves
    status.json     where the run stands: running, finished, stopped early, interrupted or failed

Under ``torchrun --nproc-per-node N`` the same code runs DistributedDataParallel (NCCL on GPUs,
gloo on CPUs): each rank reads its own slice of every global batch, rank 0 writes the files.
With ``--fsdp`` FSDP2 shards weights, gradients and optimizer moments over the ranks instead.
"""

from ..devices import autocast
from ..flops import GPU_PEAK_FLOPS, flops_per_token, measure_cpu_peak_flops, peak_flops
from .checkpoint import BEST_DIR, CHECKPOINT, CHECKPOINT_FORMAT, METRICS, MODEL_DIR, PLOT, load_checkpoint
from .config import MACHINE_SWITCHES, RUN_CONTROL, RUN_WATCH, TrainConfig, TrainResult, resumed_config
from .distributed import Distributed, setup_distributed
from .loss import lm_loss
from .optim import lr_at, make_optimizer, param_groups
from .plots import plot_metrics
from .run import train, trainer_class
from .status import STATUS, read_status
from .trainer import Trainer, set_dropout
from .vocab import pad_vocabulary, real_vocab_model

__all__ = ["TrainConfig", "TrainResult", "Trainer", "train", "lr_at", "param_groups", "make_optimizer", "plot_metrics",
           "load_checkpoint", "flops_per_token", "peak_flops", "measure_cpu_peak_flops", "pad_vocabulary", "real_vocab_model",
           "resumed_config", "RUN_CONTROL", "RUN_WATCH", "MACHINE_SWITCHES",
           "CHECKPOINT", "CHECKPOINT_FORMAT", "METRICS", "STATUS", "read_status", "MODEL_DIR", "BEST_DIR", "PLOT", "GPU_PEAK_FLOPS",
           "Distributed", "setup_distributed", "lm_loss", "set_dropout", "autocast", "trainer_class"]
