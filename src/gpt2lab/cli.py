"""The ``gpt2lab`` command: one thin sub-command per capability, each a few calls into the API.

A user's mistake (a ``GPT2LabError``, a missing file, a bad value) is printed as one line on
stderr with exit code 2; no traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .devices import DEFAULT_DEVICE, DEVICE_HELP, DTYPE_CHOICES
from .errors import GPT2LabError

# name -> (help, add_arguments, run). Each capability registers itself below.
Command = tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int | None]]
COMMANDS: dict[str, Command] = {}


def command(name: str, help: str, add_arguments: Callable[[argparse.ArgumentParser], None]):
    def register(run: Callable[[argparse.Namespace], int | None]):
        COMMANDS[name] = (help, add_arguments, run)
        return run

    return register


class UsageError(GPT2LabError):
    """A command-line mistake detected after parsing."""


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
    from .demo import run_demo

    if args.minutes <= 0:
        raise UsageError(f"--minutes must be positive, got {args.minutes:g}")
    run_demo(args.out, minutes=args.minutes, model=args.model, fast=args.fast)


# ---------------------------------------------------------------------------------------------
# explain
# ---------------------------------------------------------------------------------------------


def _explain_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="a preset (gpt2, gpt2-medium, gpt2-large, gpt2-xl), a checkpoint directory or a hub id "
                                    "(only config.json is read); default gpt2")
    p.add_argument("--from-repr", metavar="FILE", help="explain the text print(model) showed (HF or gpt2lab GPT-2); '-' reads stdin")
    p.add_argument("--seq-len", type=int, metavar="T", help="sequence length for shapes, memory and FLOPs (default: the full context)")
    p.add_argument("--batch", type=int, default=1, metavar="B", help="batch size for shapes and memory (default 1)")
    p.add_argument("--format", choices=("text", "md"), default="text", help="plain text (default) or Markdown")


@command("explain", "the architecture in plain words: module tree, parameter arithmetic, memory and FLOPs", _explain_args)
def _explain(args: argparse.Namespace) -> None:
    from .explain import explain, explain_repr

    if args.model and args.from_repr:
        raise UsageError("give --model or --from-repr, not both")
    if args.from_repr:
        try:
            text = sys.stdin.read() if args.from_repr == "-" else open(args.from_repr, encoding="utf-8").read()
        except UnicodeDecodeError:
            raise UsageError(f"{args.from_repr} is not a text file; paste the output of print(model) into it") from None
        source = "stdin" if args.from_repr == "-" else args.from_repr
        ex = explain_repr(text, seq_len=args.seq_len, batch=args.batch, source=f"printed model ({source})")
    else:
        ex = explain(args.model or "gpt2", seq_len=args.seq_len, batch=args.batch)
    print(ex.to_markdown() if args.format == "md" else ex.to_text(), end="")


# ---------------------------------------------------------------------------------------------
# trace and experiments
# ---------------------------------------------------------------------------------------------


# what --model takes, wherever a command loads a model
MODEL_HELP = ("a checkpoint directory (config.json + weights) or a training run's, a LoRA adapter's (PEFT's adapter_config.json: "
              "merged into the base model it names), or a hub id such as gpt2")


def _model_options(p: argparse.ArgumentParser, required: bool) -> None:
    p.add_argument("--model", required=required, help="a checkpoint directory or hub id; with --random, a preset "
                                                       "(gpt2, gpt2-medium, ...) or a directory whose config.json gives the shape")
    p.add_argument("--random", action="store_true", help="random weights of that shape instead of loading a checkpoint")
    p.add_argument("--seed", type=int, default=0, help="seed for random weights and inputs (default 0)")


def _model_for_lab(name: str, random: bool, seed: int):
    """A checkpoint (hub id or directory), or with ``random`` a seeded random model of a preset's
    or a checkpoint's shape."""
    import torch

    from .config import PRESETS, GPT2Config
    from .model import GPT2

    if not random:
        return GPT2.from_pretrained(name)
    if name.removeprefix("openai-community/") in PRESETS:
        config = GPT2Config.from_preset(name)
    else:
        from .weights import resolve_checkpoint_dir

        config = GPT2Config.from_json_file(resolve_checkpoint_dir(name) / "config.json")
    torch.manual_seed(seed)
    return GPT2(config).eval()


def _trace_args(p: argparse.ArgumentParser) -> None:
    _model_options(p, required=True)
    text = p.add_mutually_exclusive_group(required=True)
    text.add_argument("--text", help="the text to follow through the network")
    text.add_argument("--ids", help="token ids instead of text, e.g. '464 3290 318'")
    p.add_argument("--tokenizer", metavar="PATH", help="a vocabulary file or directory (default: the model's own, else GPT-2's)")
    p.add_argument("--layers", help="blocks to show, e.g. 0,11 or 0-3 (default: all)")
    p.add_argument("--tensors", action="store_true", help="also save every point's tensor to --out/trace_tensors.safetensors")
    p.add_argument("--out", metavar="DIR", help="write trace.png (residual-stream norm and per-stage statistics) here")


@command("trace", "follow a text through the network stage by stage: shapes, statistics, the next token", _trace_args)
def _trace(args: argparse.Namespace) -> None:
    from pathlib import Path

    from .trace import trace

    model = _model_for_lab(args.model, args.random, args.seed)
    tokenizer = None
    if args.text is not None or args.tokenizer:
        from .tokenizer import Tokenizer

        if args.tokenizer:
            tokenizer = Tokenizer.from_file(args.tokenizer)
        else:
            tokenizer = Tokenizer.gpt2() if args.random and not Path(args.model).is_dir() else Tokenizer.from_pretrained(args.model)
    if args.ids is not None:
        try:
            source = [int(t) for t in args.ids.replace(",", " ").split()]
        except ValueError:
            raise UsageError(f"--ids must be whole numbers separated by spaces, got {args.ids!r}") from None
    else:
        source = args.text
    if args.tensors and not args.out:
        raise UsageError("--tensors needs --out DIR to write them to")
    tr = trace(model, tokenizer, source, layers=args.layers, tensors=args.tensors)
    print(tr.to_text(), end="")
    if args.out:
        out = Path(args.out)
        png = tr.plot(out / "trace.png")
        print(f"\nwrote {png}")
        if args.tensors:
            from .weights import write_safetensors

            kept = [(p.name, p.tensor.contiguous().cpu()) for p in tr.points if p.tensor is not None]  # all, with --tensors
            write_safetensors(out / "trace_tensors.safetensors", kept)
            print(f"wrote {out / 'trace_tensors.safetensors'} ({len(tr.points)} tensors, named as the points above)")


def _experiment_args(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="experiment", metavar="EXPERIMENT")
    sub.required = True
    res = sub.add_parser("residuals", help="gradients per layer with and without shortcut connections")
    res.add_argument("--depth", type=int, default=12, help="layers of the plain deep stack (default 12)")
    res.add_argument("--width", type=int, default=32, help="width of the plain deep stack (default 32)")
    _model_options(res, required=False)
    res.add_argument("--seq-len", type=int, default=64, help="tokens per sequence for the GPT-2 part (default 64)")
    res.add_argument("--out", default="experiment_out", metavar="DIR", help="where residuals.png goes (default experiment_out)")
    act = sub.add_parser("activations", help="GELU (tanh and exact) against ReLU, with derivatives")
    act.add_argument("--out", default="experiment_out", metavar="DIR", help="where activations.png goes (default experiment_out)")


@command("experiment", "small experiments with plots: residuals (vanishing gradients), activations (GELU vs ReLU)", _experiment_args)
def _experiment(args: argparse.Namespace) -> None:
    from pathlib import Path

    from . import experiments

    out = Path(args.out)
    if args.experiment == "residuals":
        name = args.model or "gpt2"
        model = _model_for_lab(name, args.random or args.model is None, args.seed)
        label = f"{name}, {'random' if args.random or args.model is None else 'loaded'} weights"
        residuals = experiments.residual_experiment(args.depth, args.width, model=model, model_name=label,
                                                    seq_len=args.seq_len, seed=args.seed)
        print(residuals.to_text(), end="")
        print(f"\nwrote {experiments.plot_residuals(residuals, out / 'residuals.png')}")
    else:
        activations = experiments.activation_experiment()
        print(activations.to_text(), end="")
        print(f"\nwrote {experiments.plot_activations(activations, out / 'activations.png')}")


# ---------------------------------------------------------------------------------------------
# attention
# ---------------------------------------------------------------------------------------------


def _attention_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help=MODEL_HELP)
    text = p.add_mutually_exclusive_group(required=True)
    text.add_argument("--text", help="the text to look at")
    text.add_argument("--text-file", metavar="FILE", help="read the text from FILE ('-' for stdin)")
    p.add_argument("--tokenizer", metavar="PATH", help="a vocabulary file or directory (default: the model's own, else GPT-2's)")
    p.add_argument("--layer", type=int, help="layer for the head picture and the token mapping (default: mapping averages all layers)")
    p.add_argument("--head", type=int, help="head within --layer (default: the mean over the layer's heads)")
    p.add_argument("--top-k", type=int, metavar="K", help="attended tokens shown per token (default 5); also the edges "
                   "kept per token in the HTML page (default: all for short texts, 8 for long ones)")
    p.add_argument("--token", type=int, metavar="I", help="print the mapping for token I only")
    p.add_argument("--out", required=True, metavar="DIR", help="directory for head.png, grid.png, layers.png and attention.html")


@command("attention", "attention of every layer and head: PNG heatmaps, token mapping, an interactive HTML page", _attention_args)
def _attention(args: argparse.Namespace) -> None:
    from .attention import attention
    from .model import GPT2
    from .tokenizer import Tokenizer
    from .views import save_attention

    if args.text_file is not None:
        try:
            text = sys.stdin.read() if args.text_file == "-" else open(args.text_file, encoding="utf-8").read()
        except UnicodeDecodeError:
            raise UsageError(f"{args.text_file} is not UTF-8 text") from None
    else:
        text = args.text
    if args.head is not None and args.layer is None:
        raise UsageError("--head needs --layer (which layer's head?)")
    if args.top_k is not None and args.top_k < 1:
        raise UsageError(f"--top-k must be at least 1, got {args.top_k}")
    tokenizer = Tokenizer.from_file(args.tokenizer) if args.tokenizer else Tokenizer.from_pretrained(args.model)
    model = GPT2.from_pretrained(args.model)
    result = attention(model, tokenizer, text, model_name=str(args.model))
    result.check_head(args.layer, args.head)
    if args.token is not None and not 0 <= args.token < len(result):
        raise UsageError(f"--token {args.token} does not exist: the text has tokens 0..{len(result) - 1}")
    print(result.mapping(layer=args.layer, head=args.head, token=args.token, k=args.top_k or 5))
    roles = [f"L{r['layer']}H{r['head']} {r['label']}" for r in result.stats.table() if r["label"] not in ("mixed", "broad")]
    if roles:
        print(f"\nheads with a clear pattern: {', '.join(roles)}")
    paths = save_attention(result, args.out, layer=args.layer, head=args.head, top_k=args.top_k)
    print(f"\n{len(result)} tokens, {result.n_layer} layers x {result.n_head} heads. Wrote:")
    for what, path in (("one head", paths["head"]), ("all heads", paths["grid"]), ("layer means", paths["layers"]),
                       ("interactive page (open in a browser)", paths["html"])):
        print(f"  {path}  ({what})")


# ---------------------------------------------------------------------------------------------
# lens / patch / attribute: looking inside through the hook points (gpt2lab.interp)
# ---------------------------------------------------------------------------------------------


def _interp_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help=MODEL_HELP)
    p.add_argument("--tokenizer", metavar="PATH", help="a vocabulary file or directory (default: the model's own, else GPT-2's)")
    p.add_argument("--device", default=DEFAULT_DEVICE, help=DEVICE_HELP)


def _interp_model(args: argparse.Namespace):
    """The model on ``--device`` and its tokenizer, loaded as ``attention`` loads them."""
    from .devices import pick_device
    from .model import GPT2
    from .tokenizer import Tokenizer

    device = pick_device(args.device)  # a wrong --device is reported before any weights are read
    tokenizer = Tokenizer.from_file(args.tokenizer) if args.tokenizer else Tokenizer.from_pretrained(args.model)
    return GPT2.from_pretrained(args.model, device=device), tokenizer


def _at_least_one(value: int, flag: str) -> None:
    if value < 1:
        raise UsageError(f"{flag} must be at least 1, got {value}")


def _lens_args(p: argparse.ArgumentParser) -> None:
    _interp_model_args(p)
    p.add_argument("--text", required=True, help="the text whose next-token predictions to follow through the blocks")
    p.add_argument("--top-k", type=int, default=5, metavar="K", help="predictions kept per cell, shown on the page (default 5)")
    p.add_argument("--positions", type=int, default=6, metavar="N", help="the last N positions in the terminal table (default 6)")
    p.add_argument("--out", required=True, metavar="DIR", help="directory for lens.png and lens.html")


@command("lens", "logit lens: what the model would predict after each block, at each position (table, PNG, page)", _lens_args)
def _lens(args: argparse.Namespace) -> None:
    from . import interp
    from .views.interp import lens_text, save_lens

    _at_least_one(args.top_k, "--top-k")
    _at_least_one(args.positions, "--positions")
    model, tokenizer = _interp_model(args)
    result = interp.lens(model, tokenizer, args.text, top_k=args.top_k, model_name=str(args.model))
    print(lens_text(result, positions=args.positions), end="")
    paths = save_lens(result, args.out)
    print(f"\nWrote:\n  {paths['png']}  (heat map: top prediction per block and position)\n"
          f"  {paths['html']}  (interactive page, open in a browser: hover a cell for its top {args.top_k})")


def _patch_args(p: argparse.ArgumentParser) -> None:
    _interp_model_args(p)
    p.add_argument("--clean", required=True,
                   help="the text whose behaviour is restored ('When Mary and John went to the store, John gave a drink to')")
    p.add_argument("--corrupt", required=True, help="the same number of tokens with the deciding words changed ('..., Mary gave a drink to')")
    p.add_argument("--answer", required=True, help="the clean text's answer, one token (a word after a space starts with the space: ' Mary')")
    p.add_argument("--wrong", required=True, help="the competing answer, one token; the metric is logit(answer) - logit(wrong) at the last position")
    p.add_argument("--point", default="resid_pre", help="the hook point restored in each layer: resid_pre (default), resid_mid, resid_post, "
                   "attn.out, mlp.out, mlp.pre, mlp.post, attn.z, attn.q, attn.k, attn.v, attn.scores, attn.probs, ln_1.scale, ln_2.scale")
    p.add_argument("--by", choices=("position", "head"), help="one position at a time, or one head over every position "
                   "(default: head on the attn.* points, position elsewhere)")
    p.add_argument("--method", choices=("exact", "gradient"), default="exact", help="exact: a forward pass per entry (default); "
                   "gradient: every entry estimated from one backward pass (attribution patching: fast, first-order)")
    p.add_argument("--check", type=int, default=3, metavar="N", help="with --method gradient: run the N largest estimates exactly "
                   "and print both (default 3; 0 = none)")
    p.add_argument("--top", type=int, default=10, metavar="N", help="entries listed in the terminal, most restoring first (default 10)")
    p.add_argument("--out", required=True, metavar="DIR", help="directory for patching.png and patching.html")


@command("patch", "activation patching: which layer and position (or head) carries what tells two texts apart (PNG, page)", _patch_args)
def _patch(args: argparse.Namespace) -> None:
    from . import interp
    from .views.interp import patching_text, save_patching

    _at_least_one(args.top, "--top")
    if args.check < 0:
        raise UsageError(f"--check must be 0 or more, got {args.check}")
    model, tokenizer = _interp_model(args)
    result = interp.patching(model, tokenizer, args.clean, args.corrupt, args.answer, args.wrong, point=args.point, by=args.by,
                             method=args.method, check=args.check, model_name=str(args.model))
    print(patching_text(result, n=args.top), end="")
    paths = save_patching(result, args.out)
    print(f"\nWrote:\n  {paths['png']}  (heat map, normalised: 0 = corrupt run, 1 = clean run)\n"
          f"  {paths['html']}  (interactive page, open in a browser)")


def _attribute_args(p: argparse.ArgumentParser) -> None:
    _interp_model_args(p)
    p.add_argument("--text", required=True, help="the text; the prediction after its last token is explained")
    p.add_argument("--answer", required=True, help="the token whose logit is split into components, one token (' Mary')")
    p.add_argument("--wrong", help="a competing token: explain logit(answer) - logit(wrong) instead")
    p.add_argument("--top", type=int, default=20, metavar="N", help="components listed and drawn, largest first (default 20)")
    p.add_argument("--out", required=True, metavar="DIR", help="directory for attribution.png")


@command("attribute", "direct logit attribution: each head's, MLP's and the embeddings' share of a logit (bar chart)", _attribute_args)
def _attribute(args: argparse.Namespace) -> None:
    from pathlib import Path

    from . import interp
    from .views.interp import attribution_text, plot_attribution

    _at_least_one(args.top, "--top")
    model, tokenizer = _interp_model(args)
    result = interp.attribution(model, tokenizer, args.text, args.answer, args.wrong)
    print(attribution_text(result, n=args.top), end="")
    png = plot_attribution(result, Path(args.out) / "attribution.png", n=args.top)
    print(f"\nWrote:\n  {png}  (the {min(args.top, len(result))} largest components, and every head)")


def _steer_args(p: argparse.ArgumentParser) -> None:
    _interp_model_args(p)
    p.add_argument("--prompt", required=True, help="the text to continue, steered and not ('I hate you because')")
    p.add_argument("--plus", required=True, help="the text whose residual stream is added ('Love')")
    p.add_argument("--minus", default="", help="the text whose stream is subtracted ('Hate'; default: spaces)")
    p.add_argument("--layer", type=int, default=6, help="the block whose input (h.L.resid_pre) is steered (default 6)")
    p.add_argument("--coeff", type=float, default=5.0, help="how much of plus - minus is added (default 5)")
    p.add_argument("--max-new-tokens", type=int, default=40, metavar="N", help="tokens each continuation adds at most (default 40)")
    p.add_argument("--num-samples", type=int, default=1, metavar="N", help="pairs of continuations, seeds S, S + 1, ... (default 1)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="each pair's two sides sample from the same seed (default 0)")
    p.add_argument("--temperature", type=float, default=1.0, metavar="T", help="0 = greedy (default 1.0)")
    p.add_argument("--top-p", type=float, metavar="P", help="sample from the smallest set of tokens whose probability reaches P")
    p.add_argument("--top", type=int, default=5, metavar="N", help="the next tokens listed that the steering raised most (default 5)")
    p.add_argument("--no-eot", dest="eot", action="store_false", help="do not begin the prompts with <|endoftext|>")


@command("steer", "activation steering (ActAdd): add plus - minus to the residual stream and continue the prompt with and "
                  "without it", _steer_args)
def _steer(args: argparse.Namespace) -> None:
    from . import interp
    from .sampling import GenerationSettings
    from .views.interp import steering_text

    GenerationSettings(args.temperature, None, args.top_p)  # checked before the model is loaded
    _at_least_one(args.num_samples, "--num-samples")
    _at_least_one(args.top, "--top")
    _at_least_one(args.max_new_tokens, "--max-new-tokens")
    model, tokenizer = _interp_model(args)
    steering = interp.steering(model, tokenizer, args.plus, args.minus, args.layer, args.coeff, prepend_eot=args.eot)
    result = interp.steer_text(model, tokenizer, steering, args.prompt, args.max_new_tokens, samples=args.num_samples, seed=args.seed,
                               top=args.top, temperature=args.temperature, top_p=args.top_p)
    print(steering_text(result), end="")


# ---------------------------------------------------------------------------------------------
# tokenizer: train / encode / decode
# ---------------------------------------------------------------------------------------------


def _tokenizer_args(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="tokenizer_command", metavar="ACTION")
    sub.required = True

    def vocab_options(q: argparse.ArgumentParser) -> None:
        q.add_argument("--tokenizer", metavar="PATH", help="a vocabulary (.tiktoken, vocab.json+merges.txt, tokenizer.json, "
                       "encoder.json+vocab.bpe) or a directory holding one (default: GPT-2's, see GPT2LAB_VOCAB)")
        q.add_argument("--backend", choices=("tiktoken", "python"), default=None, help="tiktoken (default, fast) or python (the reference); same ids")

    train = sub.add_parser("train", help="learn a byte-level BPE vocabulary from text files")
    train.add_argument("files", nargs="+", metavar="FILE", help="UTF-8 text files")
    train.add_argument("--vocab-size", type=int, required=True, help="tokens in all: 256 bytes + merges + special tokens")
    train.add_argument("--out", required=True, help="directory for vocab.json, merges.txt (Hugging Face) and tokenizer.tiktoken")
    train.add_argument("--special", action="append", metavar="TOKEN", help="a special token (repeatable; default <|endoftext|>)")
    train.set_defaults(_tokenizer_run=_tokenizer_train)

    encode = sub.add_parser("encode", help="text -> ids, showing token boundaries, ids and each token's bytes")
    encode.add_argument("text", nargs="?", help="the text (default: read standard input)")
    encode.add_argument("--text", dest="text_option", metavar="TEXT", help="the text, as the other commands take it")
    encode.add_argument("--special", action="store_true", help="encode <|endoftext|> as the special token (otherwise as text)")
    encode.add_argument("--ids", action="store_true", help="print only the ids, space separated")
    vocab_options(encode)
    encode.set_defaults(_tokenizer_run=_tokenizer_encode)

    decode = sub.add_parser("decode", help="ids -> text, showing each token's bytes")
    decode.add_argument("ids", nargs="*", metavar="ID", help="token ids, space or comma separated (default: read standard input)")
    decode.add_argument("--text", action="store_true", help="print only the decoded text")
    vocab_options(decode)
    decode.set_defaults(_tokenizer_run=_tokenizer_decode)


@command("tokenizer", "GPT-2's byte-level BPE: train a vocabulary, encode and decode for a quick look", _tokenizer_args)
def _tokenizer(args: argparse.Namespace) -> None:
    args._tokenizer_run(args)


def _load_tokenizer(args: argparse.Namespace):
    from .tokenizer import Tokenizer

    return Tokenizer.gpt2(args.tokenizer, backend=args.backend)


def _show_tokens(tok, ids: list[int]) -> None:
    """Token boundaries on one line, then one row per token: position, id, bytes, text."""
    from .tokens import visible

    pieces = tok.decode_tokens_bytes(ids)
    texts = [p.decode("utf-8", errors="replace") for p in pieces]
    print("|".join(visible(t).replace("|", "¦") for t in texts))  # the views' glyphs: ␣ space, ↵ newline
    print(f"{len(ids)} tokens, {sum(map(len, pieces))} bytes")
    width = max([len(str(i)) for i in ids] + [2])
    print(f"{'#':>5}  {'id':>{width}}  bytes")
    for n, (i, piece, text) in enumerate(zip(ids, pieces, texts)):
        note = "" if piece.decode("utf-8", errors="ignore") == text else "  (part of a character)"
        print(f"{n:>5}  {i:>{width}}  {piece!r}{note}")


def _tokenizer_train(args: argparse.Namespace) -> None:
    import time
    from pathlib import Path

    from .tokenizer import ENDOFTEXT, Tokenizer

    files = [Path(f) for f in args.files]
    for f in files:
        if not f.is_file():
            raise UsageError(f"no such file: {f}")
    t0 = time.perf_counter()
    tok = Tokenizer.train(files, args.vocab_size, special_tokens=args.special or [ENDOFTEXT], name=Path(args.out).name)
    seconds = time.perf_counter() - t0
    size = sum(f.stat().st_size for f in files) / 1e6
    written = tok.save(args.out) + tok.save(Path(args.out) / "tokenizer.tiktoken")
    print(f"learned {len(tok.merges)} merges from {size:.2f} MB in {seconds:.1f} s: n_vocab {tok.n_vocab}, "
          f"special tokens {', '.join(f'{t}={i}' for t, i in tok.special_tokens.items()) or 'none'}")
    for path in written:
        print(f"  {path}")


def _tokenizer_encode(args: argparse.Namespace) -> None:
    if args.text is not None and args.text_option is not None:
        raise UsageError("give the text once: as an argument or with --text, not both")
    text = args.text_option if args.text_option is not None else args.text
    if text is None:
        text = sys.stdin.read()
    tok = _load_tokenizer(args)
    ids = tok.encode(text, allowed_special="all") if args.special else tok.encode(text, disallowed_special=())
    if args.ids:
        print(" ".join(map(str, ids)))
        return
    _show_tokens(tok, ids)
    print("ids:", " ".join(map(str, ids)))


def _tokenizer_decode(args: argparse.Namespace) -> None:
    raw = " ".join(args.ids) if args.ids else sys.stdin.read()
    words = raw.replace(",", " ").replace("[", " ").replace("]", " ").split()
    try:
        ids = [int(w) for w in words]
    except ValueError:
        raise UsageError(f"token ids must be integers, got {raw.strip()[:60]!r}") from None
    tok = _load_tokenizer(args)
    text = tok.decode(ids)
    if args.text:
        sys.stdout.write(text + "\n")
        return
    _show_tokens(tok, ids)
    print("text:", repr(text))


# ---------------------------------------------------------------------------------------------
# generate / compare
# ---------------------------------------------------------------------------------------------


def _model_source_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help=MODEL_HELP)
    p.add_argument("--prompt", required=True, help="the text to continue; '-' reads standard input; '' starts from <|endoftext|>")
    p.add_argument("--tokenizer", metavar="PATH", help="a vocabulary file or directory (default: the model's own, else GPT-2's)")


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
    p.add_argument("--device", default=DEFAULT_DEVICE, help=DEVICE_HELP)
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the decode step with CUDA graphs (for GPUs: slow to start, and slower than the default on a CPU)")


def _read_prompt(prompt: str) -> str:
    if prompt != "-":
        return prompt
    try:
        return sys.stdin.read()
    except UnicodeDecodeError:
        raise UsageError("standard input is not UTF-8 text") from None


@command("generate", "continue a prompt: greedy or sampled (top-k, top-p, min-p), streamed to the terminal", _generate_args)
def _generate(args: argparse.Namespace) -> int:
    import time

    from .generate import GenerationSettings, generate_text
    from .model import GPT2
    from .tokenizer import Tokenizer

    # every setting is checked before the model is loaded
    GenerationSettings(args.temperature, args.top_k, args.top_p, args.min_p, args.repetition_penalty)
    if args.max_new_tokens < 0:
        raise UsageError(f"--max-new-tokens must be >= 0, got {args.max_new_tokens}")
    if args.num_samples < 1:
        raise UsageError(f"--num-samples must be >= 1, got {args.num_samples}")
    if args.stop and not all(args.stop):
        raise UsageError("--stop needs a non-empty text")
    from .devices import pick_device

    device = pick_device(args.device)
    prompt = _read_prompt(args.prompt)
    model = GPT2.from_pretrained(args.model, dtype=args.dtype, device=device)
    tokenizer = Tokenizer.from_file(args.tokenizer) if args.tokenizer else Tokenizer.from_pretrained(args.model)
    if tokenizer.n_vocab > model.config.vocab_size:
        raise UsageError(f"the tokenizer has {tokenizer.n_vocab} tokens but the model only {model.config.vocab_size}; pass the model's --tokenizer")
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
    p.add_argument("--tokenizer", metavar="PATH", help="a vocabulary file or directory (default: the model's own, else GPT-2's)")
    p.add_argument("--system", metavar="S", help="the paragraph that opens the prompt (default: the Alpaca template's sentence)")
    p.add_argument("--max-new-tokens", type=int, default=256, metavar="N", help="the longest answer in tokens (default 256)")
    p.add_argument("--temperature", type=float, default=0.7, metavar="T", help="0 = greedy; < 1 sharper, > 1 flatter (default 0.7)")
    p.add_argument("--top-k", type=int, default=50, metavar="K", help="sample only from the K most likely tokens (default 50; 0 = all)")
    p.add_argument("--top-p", type=float, metavar="P", help="sample from the smallest set of tokens whose probability reaches P")
    p.add_argument("--seed", type=int, metavar="S", help="make the answers reproducible")
    p.add_argument("--dtype", default="fp32", choices=DTYPE_CHOICES, help="weights' precision (default fp32)")
    p.add_argument("--device", default=DEFAULT_DEVICE, help=DEVICE_HELP)


@command("chat", "talk to an instruction-tuned model in the template prepare --format instruct trains; streamed, "
                 "Ctrl-C stops an answer; reads one message per line when stdin is not a terminal", _chat_args)
def _chat(args: argparse.Namespace) -> int:
    from .chat import Chat, run_chat
    from .compatibility import check_tokenizer_fits_model
    from .devices import pick_device
    from .instruct import DEFAULT_SYSTEM
    from .model import GPT2
    from .sampling import GenerationSettings
    from .tokenizer import Tokenizer

    top_k = args.top_k or None
    GenerationSettings(args.temperature, top_k, args.top_p)  # checked before the model is loaded
    if args.max_new_tokens < 1:
        raise UsageError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    device = pick_device(args.device)
    model = GPT2.from_pretrained(args.model, dtype=args.dtype, device=device)
    tokenizer = Tokenizer.from_file(args.tokenizer) if args.tokenizer else Tokenizer.from_pretrained(args.model)
    check_tokenizer_fits_model(tokenizer.n_vocab, model.config)
    chat = Chat(model, tokenizer, system=DEFAULT_SYSTEM if args.system is None else args.system, max_new_tokens=args.max_new_tokens,
                temperature=args.temperature, top_k=top_k, top_p=args.top_p, seed=args.seed)
    return run_chat(chat)


def _compare_args(p: argparse.ArgumentParser) -> None:
    _model_source_args(p)
    p.add_argument("--max-new-tokens", type=int, default=20, metavar="N", help="length of the continuations compared (default 20)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="seed of the sampled comparisons (default 0)")


@command("compare", "gpt2lab next to transformers on the same weights: hidden states, logits, top tokens, continuations", _compare_args)
def _compare(args: argparse.Namespace) -> None:
    from .compare import compare

    if args.max_new_tokens < 1:
        raise UsageError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    print(compare(args.model, _read_prompt(args.prompt), tokenizer=args.tokenizer, max_new_tokens=args.max_new_tokens, seed=args.seed).report())


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
    from .data import prepare

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
    from .train.config import TRAIN_TASKS

    p.add_argument("--data", required=True, metavar="DATA_DIR|FILE",
                   help="a directory written by gpt2lab prepare; with --task classify, a .csv or .jsonl file")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="where the checkpoint, model/, metrics.jsonl and loss.png go")
    for flag, dest, kind, help_text in _TRAIN_OPTIONS:
        choices = ["auto", *DTYPE_CHOICES] if dest == "dtype" else list(TRAIN_TASKS) if dest == "task" else None
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
    from .train import TrainConfig, train

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
    p.add_argument("--device", default=DEFAULT_DEVICE, help=DEVICE_HELP)
    p.add_argument("--dtype", choices=DTYPE_CHOICES, default=None, help="autocast precision (default fp32)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


@command("eval", "loss and perplexity on validation data or a text file (sliding window), or a benchmark score (--task)", _eval_args)
def _eval(args: argparse.Namespace) -> None:
    import json

    from .evaluate import EVAL_TASKS, evaluate_path, evaluate_task, evaluate_tasks

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
    from .train.plots import plot_runs
    from .train.runs import compare_runs, runs_table, sort_runs

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


# ---------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gpt2lab", description="A GPT-2 you can read, run, train and look inside.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    # the order a newcomer meets them in
    journey = ["demo", "generate", "chat", "compare", "tokenizer", "prepare", "train", "runs", "eval", "explain", "attention", "lens", "patch",
               "steer", "attribute", "trace", "experiment"]
    for name in sorted(COMMANDS, key=lambda n: journey.index(n) if n in journey else len(journey)):
        help_text, add_arguments, run = COMMANDS[name]
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_arguments(p)
        p.set_defaults(_run=run)
    return parser


def out_of_memory(err: BaseException, args: argparse.Namespace) -> str | None:
    """A GPU's out-of-memory error (``torch.OutOfMemoryError``, a dozen lines) as one line that says
    what to change, or None for any other error."""
    if type(err).__name__ != "OutOfMemoryError":
        return None
    import re

    text = str(err)
    wanted, total = re.search(r"Tried to allocate ([\d.]+ [KMGT]?i?B)", text), re.search(r"total capacity of ([\d.]+ [KMGT]?i?B)", text)
    detail = (f" (it asked for {wanted[1]} more" + (f" of {total[1]} in all" if total else "") + ")") if wanted else ""
    if args.command == "train":
        from .train.checkpoint import CHECKPOINT

        kept = Path(args.out) / CHECKPOINT
        smaller = "a smaller --batch-size and a larger --grad-accum (the same tokens per step)"
        advice = f"start again with --activation-checkpointing or --chunked-loss, or with {smaller}"
        if kept.is_file():
            advice = (f"its last checkpoint, {kept}, is intact: go on with --resume and --activation-checkpointing or --chunked-loss "
                      f"(less memory, the same run), or start again with {smaller}")
    elif hasattr(args, "batch_size"):
        advice = "use a smaller --batch-size, or --dtype bf16"
    else:
        advice = "use --dtype bf16 (half the memory), a smaller model, or --device cpu"
    return f"the GPU ran out of memory{detail}; {advice}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = args._run(args)
    except (GPT2LabError, FileNotFoundError, IsADirectoryError, PermissionError) as err:
        message = str(err) if isinstance(err, GPT2LabError) else f"{err.strerror}: {err.filename}"
        print(f"gpt2lab {args.command}: error: {message}", file=sys.stderr)
        return 2
    except RuntimeError as err:  # torch.OutOfMemoryError among them (torch is not imported here)
        advice = out_of_memory(err, args)
        if advice is None:
            raise
        print(f"gpt2lab {args.command}: error: {advice}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # the reader went away (`gpt2lab ... | head`): not an error; keep Python quiet at exit too
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print(f"gpt2lab {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(code or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
