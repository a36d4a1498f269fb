"""Commands that use a model: demo, generate, chat, compare."""

from __future__ import annotations

import argparse
import sys

from .base import DEVICE_HELP, DTYPE_CHOICES, MODEL_HELP, TOKENIZER_HELP, UsageError, command, model_and_tokenizer, read_prompt

# ---------------------------------------------------------------------------------------------
# demo
# ---------------------------------------------------------------------------------------------


def _demo_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="demo_out", help="directory for what the demo writes (default: demo_out)")
    p.add_argument("--minutes", type=float, default=4.0, metavar="M", help="training time budget without real weights (default 4)")
    p.add_argument("--model", metavar="NAME_OR_PATH", help="real GPT-2 weights to show instead of training (default: gpt2 if cached or reachable)")
    p.add_argument("--fast", action="store_true", help="a tiny run of a few seconds (what the tests use)")


@command("demo", "the whole journey: explain, train (or load) a GPT-2, sample, look at attention; writes report.html", _demo_args)
def _demo(args: argparse.Namespace) -> None:
    from ..demo import run_demo

    if args.minutes <= 0:
        raise UsageError(f"--minutes must be positive, got {args.minutes:g}")
    run_demo(args.out, minutes=args.minutes, model=args.model, fast=args.fast)


# ---------------------------------------------------------------------------------------------
# generate / compare
# ---------------------------------------------------------------------------------------------


def _model_source_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help=MODEL_HELP)
    p.add_argument("--prompt", required=True, help="the text to continue; '-' reads standard input; '' starts from <|endoftext|>")
    p.add_argument("--tokenizer", metavar="PATH", help=TOKENIZER_HELP)


def _generate_args(p: argparse.ArgumentParser) -> None:
    _model_source_args(p)
    p.add_argument("--max-new-tokens", type=int, default=100, metavar="N", help="tokens to add at most (default 100)")
    p.add_argument("--temperature", type=float, default=1.0, metavar="T", help="0 = greedy; < 1 sharper, > 1 flatter (default 1.0)")
    p.add_argument("--top-k", type=int, metavar="K", help="sample only from the K most likely tokens")
    p.add_argument("--top-p", type=float, metavar="P", help="sample from the smallest set of tokens whose probability reaches P")
    p.add_argument("--min-p", type=float, metavar="P", help="drop tokens less likely than P times the most likely one")
    p.add_argument("--repetition-penalty", type=float, metavar="R", help="> 1 discourages tokens already in the text (1 = off)")
    p.add_argument("--stop", action="append", metavar="S", help="stop before this text (repeatable)")
    p.add_argument("--no-stop-at-eot", dest="stop_at_eot", action="store_false", help="go on past <|endoftext|>")
    p.add_argument("--seed", type=int, metavar="S", help="make sampling reproducible")
    p.add_argument("--num-samples", type=int, default=1, metavar="N", help="continuations to write, one after another (default 1)")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"], help="weights' precision (default fp32)")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the decode step with CUDA graphs (for GPUs: slow to start, and slower than the default on a CPU)")


@command("generate", "continue a prompt: greedy or sampled (top-k, top-p, min-p), streamed to the terminal", _generate_args)
def _generate(args: argparse.Namespace) -> int:
    import time

    from ..devices import pick_device
    from ..generate import GenerationSettings, generate_text

    # every setting is checked before the model is loaded
    GenerationSettings(args.temperature, args.top_k, args.top_p, args.min_p, args.repetition_penalty)
    if args.max_new_tokens < 0:
        raise UsageError(f"--max-new-tokens must be >= 0, got {args.max_new_tokens}")
    if args.num_samples < 1:
        raise UsageError(f"--num-samples must be >= 1, got {args.num_samples}")
    if args.stop and not all(args.stop):
        raise UsageError("--stop needs a non-empty text")
    device = pick_device(args.device)
    prompt = read_prompt(args.prompt)
    model, tokenizer = model_and_tokenizer(args, dtype=args.dtype, device=device)
    import torch

    generator = torch.Generator(device=device).manual_seed(args.seed) if args.seed is not None else None
    tokens, seconds, interrupted = 0, 0.0, False
    # (tokens, seconds) when text from the first decoding step came: with --compile, that step is compiled by then
    warm: tuple[int, float] | None = None
    for sample in range(args.num_samples):
        if sample:
            print("\n" + "-" * 40, flush=True)
        stream = generate_text(model, tokenizer, prompt, args.max_new_tokens, stream=True, stop=args.stop, stop_at_eot=args.stop_at_eot,
                               temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, min_p=args.min_p,
                               repetition_penalty=args.repetition_penalty, generator=generator, compile=args.compile)
        print(prompt, end="", flush=True)
        start = time.perf_counter()
        try:
            for piece in stream:
                if warm is None and stream.tokens >= 2:  # the prompt's pass made token 1, the first decoding step token 2
                    warm = (stream.tokens, seconds + time.perf_counter() - start)
                print(piece, end="", flush=True)
        except KeyboardInterrupt:  # Ctrl-C: keep what was produced, say so, stop cleanly
            interrupted = True
            stream.close()
        tokens += stream.tokens
        seconds += time.perf_counter() - start
        print(flush=True)
        if interrupted:
            break
    rate = tokens / seconds if seconds > 0 else 0.0
    note = "interrupted; " if interrupted else ""
    if args.compile and warm is not None and tokens > warm[0] and seconds > warm[1]:
        # the first decoding step compiled: a rate over the whole time would be mostly compilation's
        later = (tokens - warm[0]) / (seconds - warm[1])
        print(f"[{note}{tokens} tokens in {seconds:.2f} s: {warm[0]} in the first {warm[1]:.2f} s, compiling, "
              f"then {later:.1f} tokens/s]", file=sys.stderr)
    else:
        print(f"[{note}{tokens} tokens in {seconds:.2f} s: {rate:.1f} tokens/s]", file=sys.stderr)
    return 130 if interrupted else 0


def _chat_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="an instruction-tuned checkpoint directory (e.g. RUN_DIR/model) or a hub id")
    p.add_argument("--tokenizer", metavar="PATH", help=TOKENIZER_HELP)
    p.add_argument("--system", metavar="S", help="the paragraph that opens the prompt (default: the Alpaca template's sentence)")
    p.add_argument("--max-new-tokens", type=int, default=256, metavar="N", help="the longest answer in tokens (default 256)")
    p.add_argument("--temperature", type=float, default=0.7, metavar="T", help="0 = greedy; < 1 sharper, > 1 flatter (default 0.7)")
    p.add_argument("--top-k", type=int, default=50, metavar="K", help="sample only from the K most likely tokens (default 50; 0 = all)")
    p.add_argument("--top-p", type=float, metavar="P", help="sample from the smallest set of tokens whose probability reaches P")
    p.add_argument("--seed", type=int, metavar="S", help="make the answers reproducible")
    p.add_argument("--dtype", default="fp32", choices=DTYPE_CHOICES, help="weights' precision (default fp32)")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)


@command("chat", "talk to an instruction-tuned model in the template prepare --format instruct trains; streamed, "
                 "Ctrl-C stops an answer; reads one message per line when stdin is not a terminal", _chat_args)
def _chat(args: argparse.Namespace) -> int:
    from ..chat import Chat, run_chat
    from ..devices import pick_device
    from ..instruct import DEFAULT_SYSTEM
    from ..sampling import GenerationSettings

    top_k = args.top_k or None
    GenerationSettings(args.temperature, top_k, args.top_p)  # checked before the model is loaded
    if args.max_new_tokens < 1:
        raise UsageError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    device = pick_device(args.device)
    model, tokenizer = model_and_tokenizer(args, dtype=args.dtype, device=device)
    chat = Chat(model, tokenizer, system=DEFAULT_SYSTEM if args.system is None else args.system, max_new_tokens=args.max_new_tokens,
                temperature=args.temperature, top_k=top_k, top_p=args.top_p, seed=args.seed)
    return run_chat(chat)


def _compare_args(p: argparse.ArgumentParser) -> None:
    _model_source_args(p)
    p.add_argument("--max-new-tokens", type=int, default=20, metavar="N", help="length of the continuations compared (default 20)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="seed of the sampled comparisons (default 0)")


@command("compare", "gpt2lab next to transformers on the same weights: hidden states, logits, top tokens, continuations", _compare_args)
def _compare(args: argparse.Namespace) -> None:
    from ..compare import compare

    if args.max_new_tokens < 1:
        raise UsageError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    print(compare(args.model, read_prompt(args.prompt), tokenizer=args.tokenizer, max_new_tokens=args.max_new_tokens, seed=args.seed).report())
