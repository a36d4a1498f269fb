"""Commands that train and score: prepare, train, eval, runs."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .base import DEVICE_HELP, DTYPE_CHOICES, MODEL_HELP, UsageError, command

# ---------------------------------------------------------------------------------------------
# prepare / train / eval
# ---------------------------------------------------------------------------------------------


def _prepare_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="text files, folders (walked recursively), .jsonl/.json/.parquet, or hf:NAME[:split]")
    p.add_argument("--out", required=True, metavar="DATA_DIR", help="where train.bin, val.bin and meta.json go")
    p.add_argument("--tokenizer", metavar="PATH", help="a vocabulary file or model directory (default: GPT-2's)")
    p.add_argument("--val-fraction", type=float, default=0.05, help="share of tokens held out for validation (default 0.05)")
    p.add_argument("--text-field", default="text", help="the field holding the text in JSON/JSONL/Parquet/dataset records")
    p.add_argument("--format", choices=("text", "instruct"), default="text",
                   help="text: documents (default); instruct: instruction records (Alpaca instruction/input/output, or chat "
                        "messages) in the template gpt2lab chat uses, the loss on the responses only")
    p.add_argument("--workers", type=int, default=None, help="tokenising processes (default: one per CPU)")
    p.add_argument("--force", action="store_true", help="redo the work even when the inputs are unchanged")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


@command("prepare", "tokenise text files, folders or a dataset into train.bin / val.bin for training", _prepare_args)
def _prepare(args: argparse.Namespace) -> None:
    from ..data import prepare

    result = prepare(args.inputs, args.out, tokenizer=args.tokenizer, val_fraction=args.val_fraction, text_field=args.text_field,
                     format=args.format, num_workers=args.workers, progress=not args.quiet, force=args.force)
    print(result.summary())


def _comma_list(text: str) -> tuple[str, ...]:
    return tuple(text.split(","))


# (flag, TrainConfig field, type, help). Defaults are None here so that only the options a user
# really gives reach TrainConfig; the rest keep TrainConfig's defaults (or, resuming, the run's own).
_TRAIN_OPTIONS: list[tuple[str, str, Callable[[str], object], str]] = [
    ("--init", "init", str, "scratch (a new model), or a model to fine-tune: a directory, hub id or preset (gpt2 = the released weights)"),
    ("--task", "task", str, "lm (next-token prediction, default) or classify: --data is a .csv/.jsonl file of texts and labels, "
     "a new head on the --init model learns the labels"),
    ("--text-field", "text_field", str, "with --task classify: the column holding the texts (default text)"),
    ("--label-field", "label_field", str, "with --task classify: the column holding the labels (default label)"),
    ("--val-fraction", "val_fraction", float, "with --task classify: the share of the file held out to measure accuracy (default 0.1)"),
    ("--n-layer", "n_layer", int, "blocks of a scratch model (default 4)"),
    ("--n-head", "n_head", int, "attention heads of a scratch model (default 4)"),
    ("--n-embd", "n_embd", int, "width of a scratch model (default 256)"),
    ("--block-size", "block_size", int, "context length of the training windows (scratch default 256)"),
    ("--dropout", "dropout", float, "dropout probability (default 0)"),
    ("--batch-size", "batch_size", int, "windows per micro-batch per process (default 16)"),
    ("--grad-accum", "grad_accum", int, "micro-batches per optimizer step (default 1)"),
    ("--max-steps", "max_steps", int, "optimizer steps (default 1000)"),
    ("--epochs", "epochs", float, "passes over the training data instead of --max-steps (fractions allowed; 3 is a common fine-tune)"),
    ("--lr", "lr", float, "peak learning rate (default 6e-4)"),
    ("--min-lr", "min_lr", float, "final learning rate (default lr/10)"),
    ("--warmup-steps", "warmup_steps", int, "linear warmup steps (default min(100, max_steps/10))"),
    ("--lr-decay-steps", "lr_decay_steps", int, "step where cosine decay reaches min-lr (default max-steps)"),
    ("--weight-decay", "weight_decay", float, "AdamW weight decay on matrices (default 0.1)"),
    ("--grad-clip", "grad_clip", float, "clip the gradient norm to this; 0 = off (default 1.0)"),
    ("--seed", "seed", int, "random seed (default 1337)"),
    ("--eval-every", "eval_every", int, "evaluate every N steps; 0 = only at the end (default 100)"),
    ("--eval-batches", "eval_batches", int, "validation batches per evaluation (default 20)"),
    ("--checkpoint-every", "checkpoint_every", int, "save checkpoint and model/ every N steps (default 100)"),
    ("--log-every", "log_every", int, "metrics.jsonl line every N steps (default 1)"),
    ("--early-stop", "early_stop", int, "stop when the val loss has not gone below its lowest for N evaluations in a row"),
    ("--eval-task", "eval_task", str, "score a benchmark at every evaluation: hellaswag, lambada, wikitext, arc_easy, arc_challenge, "
     "piqa, winogrande or hellaswag_harness, or several with commas (logged as hellaswag_acc_norm, ...)"),
    ("--eval-task-data", "eval_task_data", str, "the benchmark's file; with several, a folder of TASK.jsonl files (default: their "
     "standard splits from the Hugging Face hub)"),
    ("--eval-task-limit", "eval_task_limit", int, "score only the benchmark's first N items (wikitext: tokens)"),
    ("--sample", "sample", str, "at every evaluation, continue this prompt (sampled, the same seed each time) and show it; "
     "kept in metrics.jsonl as sample (\"\": from <|endoftext|>)"),
    ("--sample-tokens", "sample_tokens", int, "tokens each --sample continuation runs to (default 48)"),
    ("--tensorboard", "tensorboard", str, "also log every metric to this TensorBoard directory (pip install tensorboard)"),
    ("--wandb", "wandb", str, "also log every metric to this Weights & Biases project (pip install wandb; WANDB_MODE=offline needs no network)"),
    ("--device", "device", str, DEVICE_HELP),
    ("--dtype", "dtype", str, "autocast precision: auto, fp32, bf16, fp16 (default auto: bf16 on GPUs, else fp32)"),
    ("--pad-vocab", "pad_vocab", int, "pad the vocabulary to a multiple of N internally (default 64 on GPUs and with --compile, else 1)"),
    ("--lora-rank", "lora_rank", int, "LoRA: train rank-R adapters only, the --init model frozen; writes RUN_DIR/adapter/ (PEFT) too"),
    ("--lora-alpha", "lora_alpha", float, "LoRA: scale the adapters' update by alpha / rank (default alpha = rank)"),
    ("--lora-targets", "lora_targets", _comma_list, "LoRA: matrices to adapt, comma-separated (default c_attn,c_proj,c_fc)"),
    ("--lora-dropout", "lora_dropout", float, "LoRA: dropout on the adapters' input (default 0)"),
]
_SHAPE_FIELDS = ("n_layer", "n_head", "n_embd")


def _train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, metavar="DATA_DIR|FILE",
                   help="a directory written by gpt2lab prepare; with --task classify, a .csv or .jsonl file")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="where the checkpoint, model/, metrics.jsonl and loss.png go")
    for flag, dest, kind, help_text in _TRAIN_OPTIONS:
        choices = ["auto", *DTYPE_CHOICES] if dest == "dtype" else None  # (--task: TrainConfig checks it)
        p.add_argument(flag, dest=dest, type=kind, default=None, help=help_text, choices=choices)
    p.add_argument("--compile", action="store_true", default=None, help="torch.compile the model")
    p.add_argument("--activation-checkpointing", action="store_true", default=None,
                   help="recompute each block in backward instead of storing its activations: less memory, ~1 more forward of compute")
    p.add_argument("--chunked-loss", action="store_true", default=None,
                   help="the LM head and the loss a chunk of positions at a time: the whole (N, V) logits never exist (less memory)")
    p.add_argument("--cuda-graph", action="store_true", default=None,
                   help="on a CUDA GPU: record the whole step as a CUDA graph after 3 plain steps and replay it (one launch per step)")
    p.add_argument("--fsdp", action="store_true", default=None,
                   help="under torchrun: shard weights, gradients and optimizer state over the processes (FSDP2) instead of DDP's copies")
    p.add_argument("--keep-best", action="store_true", default=None,
                   help="also keep the model of the lowest validation loss so far in RUN_DIR/best/ (for when a fine-tune overfits)")
    p.add_argument("--resume", action="store_true", help="continue the run in RUN_DIR from its checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


@command("train", "pre-train or fine-tune a GPT-2 on prepared data (runs DistributedDataParallel under torchrun)", _train_args)
def _train(args: argparse.Namespace) -> int:
    from ..train import TrainConfig, train

    given = {dest: getattr(args, dest) for _, dest, _, _ in _TRAIN_OPTIONS if getattr(args, dest) is not None}
    for flag in ("compile", "activation_checkpointing", "chunked_loss", "cuda_graph", "fsdp", "keep_best"):
        if getattr(args, flag):
            given[flag] = True
    init = given.get("init", "scratch")
    if init != "scratch" and not args.resume:
        shaped = [f"--{f.replace('_', '-')}" for f in _SHAPE_FIELDS if f in given]
        if shaped:
            raise UsageError(f"{', '.join(shaped)} only apply to --init scratch; a fine-tuned model keeps its own shape")
    # with --resume, train() keeps the run's settings and refuses options that contradict them (train.resumed_config)
    config = TrainConfig(data=args.data, out=args.out, resume=args.resume, progress=not args.quiet, **given)
    result = train(config)
    if result.interrupted:
        print(f"interrupted at step {result.step}; checkpoint saved in {result.run_dir}; continue with --resume", file=sys.stderr)
        return 130
    epoch = next((r["epoch"] for r in reversed(result.metrics) if "epoch" in r), None)
    parts = [f"step {result.step}" + (f" ({epoch:.2f} epochs)" if epoch is not None else "")]
    if result.loss is not None:
        parts.append(f"train loss {result.loss:.4f}")
    if result.val_loss is not None:
        parts.append(f"val loss {result.val_loss:.4f}")
    val_acc = next((r["val_acc"] for r in reversed(result.metrics) if "val_acc" in r), None)
    if val_acc is not None:
        parts.append(f"val acc {val_acc:.4f}")
    if result.stopped_early:
        parts.append("stopped early (the val loss stopped going down)")
    if config.fsdp or config.activation_checkpointing:  # what those options are for
        parts.append("peak memory " + ", ".join(f"{b / 2**30:.2f} GiB" for b in result.peak_memory)
                     + (" (per rank)" if len(result.peak_memory) > 1 else ""))
    adapter = f", adapter in {result.run_dir / 'adapter'}" if (result.run_dir / "adapter").is_dir() else ""
    best = (f"; the best val loss, {result.best_val_loss:.4f} at step {result.best_step}, in {result.run_dir / 'best'}"
            if result.best_step is not None else "")
    print(f"{', '.join(parts)}; model saved in {result.run_dir / 'model'}{adapter}{best}")
    return 0


def _eval_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, metavar="M", help=MODEL_HELP)
    p.add_argument("--task", metavar="TASK[,TASK...]", help="a benchmark, or several with commas (the model loaded once): hellaswag (llm.c's "
                   "way), hellaswag_harness (lm-evaluation-harness's), arc_easy, arc_challenge, piqa (acc, acc_norm), winogrande (acc), "
                   "lambada (acc, ppl), wikitext (loss, ppl); "
                   "classify (acc, loss of a train --task classify model on a labelled --data file); "
                   "without it, loss and perplexity on --data")
    p.add_argument("--data", metavar="DATA_DIR|FILE", help="a prepared DATA_DIR (its validation split) or a text file; with --task, "
                   "the task's JSONL file, with several tasks a folder of TASK.jsonl files (default: their standard splits from the "
                   "Hugging Face hub)")
    p.add_argument("--limit", type=int, metavar="N", help="with --task: the first N items (wikitext: tokens)")
    p.add_argument("--json", action="store_true", help="end with one JSON line of the metrics and n")
    p.add_argument("--text-field", default="text", help="with --task classify: the column holding the texts (default text)")
    p.add_argument("--label-field", default="label", help="with --task classify: the column holding the labels (default label)")
    p.add_argument("--tokenizer", metavar="PATH", help="vocabulary for text (default: the model's, else GPT-2's)")
    p.add_argument("--block-size", type=int, help="window length (default: the model's context)")
    p.add_argument("--stride", type=int, help="how far each window moves (default: block-size / 2)")
    p.add_argument("--batch-size", type=int, help="windows (with --task: sequences) per forward pass (default 4; with --task 16)")
    p.add_argument("--max-tokens", type=int, help="evaluate only the first N tokens")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--dtype", choices=DTYPE_CHOICES, default=None, help="autocast precision (default fp32)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


@command("eval", "loss and perplexity on validation data or a text file (sliding window), or a benchmark score (--task)", _eval_args)
def _eval(args: argparse.Namespace) -> None:
    import json

    from ..evaluate import EVAL_TASKS, evaluate_path, evaluate_task, evaluate_tasks

    if args.task is None:
        if args.data is None:
            raise UsageError(f"give --data DATA_DIR|FILE (the text to score), or --task with a benchmark: {', '.join(EVAL_TASKS[:-1])}")
        if args.limit is not None:
            raise UsageError("--limit counts a task's items; without --task use --max-tokens")
        result = evaluate_path(args.model, args.data, tokenizer=args.tokenizer, block_size=args.block_size, stride=args.stride,
                               batch_size=args.batch_size or 4, max_tokens=args.max_tokens, device=args.device, dtype=args.dtype,
                               progress=not args.quiet)
        print(result.summary())
        metrics: dict[str, Any] = {"loss": result.loss, "ppl": result.perplexity, "n": result.tokens}
    else:
        if args.max_tokens is not None:
            raise UsageError("--max-tokens applies without --task; with --task use --limit")
        tasks = [t.strip() for t in args.task.split(",") if t.strip()]
        unknown = [t for t in tasks if t not in EVAL_TASKS]
        if unknown or not tasks:
            raise UsageError(f"unknown --task {','.join(unknown) or repr(args.task)}; choose from {', '.join(EVAL_TASKS)} (several with commas)")
        options = dict(batch_size=args.batch_size or 16, block_size=args.block_size, stride=args.stride, dtype=args.dtype,
                       progress=not args.quiet)
        if len(tasks) == 1:
            scores = {tasks[0]: evaluate_task(args.model, args.tokenizer, tasks[0], args.data, args.limit, device=args.device, **options,
                                              text_field=args.text_field, label_field=args.label_field)}
        else:
            if args.data is not None and not Path(args.data).is_dir():
                raise UsageError("with several tasks --data is a folder of TASK.jsonl files (or leave it out: the hub's splits)")
            scores = evaluate_tasks(args.model, args.tokenizer, tasks, args.data, args.limit, device=args.device, **options)
        for task, figures in scores.items():
            shown = "  ".join(f"{k} {v:.4f}" if k != "ppl" else f"{k} {v:.2f}" for k, v in figures.items() if k != "n")
            print(f"{task}: {shown}  ({figures['n']:,} {'tokens' if task == 'wikitext' else 'items'})")
        metrics = scores[tasks[0]] if len(tasks) == 1 else scores  # --json: one task's metrics as before, several by task
    if args.json:
        print(json.dumps(metrics))


def _runs_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="directories written by gpt2lab train --out, or folders of them (a sweep's)")
    p.add_argument("--plot", metavar="PNG", help="also draw every run's train and val loss on one chart into this file")
    p.add_argument("--x", choices=("step", "epoch", "tokens"), default="step",
                   help="the chart's x axis (default step; tokens compares runs of other batch sizes fairly)")
    p.add_argument("--sort", metavar="BY", help="order the runs by their lowest val loss (lowest), last val loss (val) or train "
                   "loss (train), lowest first, or by a benchmark score they logged (hellaswag_acc_norm...), best first (default: as given)")
    p.add_argument("--json", action="store_true", help="end with one JSON line: a list of the runs' figures")


@command("runs", "training runs side by side: how far each got, its losses and speed (table), their curves (--plot)", _runs_args)
def _runs(args: argparse.Namespace) -> None:
    from ..train.plots import plot_runs
    from ..train.runs import compare_runs, runs_table, sort_runs

    summaries = compare_runs(args.runs)
    if args.sort:
        summaries = sort_runs(summaries, args.sort)
    print(runs_table(summaries), end="")
    if args.plot:
        for s in summaries:
            if any("loss" in r and args.x not in r for r in s.records):
                raise UsageError(f"{s.name}'s metrics have no {args.x} (an older gpt2lab trained it); use --x step")
        print(f"wrote {plot_runs([(s.name, s.records) for s in summaries], args.plot, x=args.x)}")
    elif len(summaries) > 1 and not args.json:
        print("(--plot FILE.png draws their curves on one chart)")
    if args.json:
        import json

        print(json.dumps([s.to_dict() for s in summaries]))
