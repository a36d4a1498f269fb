"""Commands that look inside a model: explain, trace, experiment, attention, and lens / answer / patch /
attribute / steer over the hook points (``gpt2lab.interp``)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from .base import (
    DEVICE_HELP,
    MODEL_HELP,
    TOKENIZER_HELP,
    UsageError,
    at_least_one,
    command,
    model_and_tokenizer,
    model_for_lab,
    model_options,
    read_text,
)

if TYPE_CHECKING:
    from ..model import GPT2
    from ..tokenizer import Tokenizer


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
    from ..explain import explain, explain_repr

    if args.model and args.from_repr:
        raise UsageError("give --model or --from-repr, not both")
    if args.from_repr:
        text = read_text(args.from_repr, hint="paste the output of print(model) into a text file")
        source = "stdin" if args.from_repr == "-" else args.from_repr
        ex = explain_repr(text, seq_len=args.seq_len, batch=args.batch, source=f"printed model ({source})")
    else:
        ex = explain(args.model or "gpt2", seq_len=args.seq_len, batch=args.batch)
    print(ex.to_markdown() if args.format == "md" else ex.to_text(), end="")


# ---------------------------------------------------------------------------------------------
# trace and experiments
# ---------------------------------------------------------------------------------------------


def _trace_args(p: argparse.ArgumentParser) -> None:
    model_options(p, required=True)
    text = p.add_mutually_exclusive_group(required=True)
    text.add_argument("--text", help="the text to follow through the network")
    text.add_argument("--ids", help="token ids instead of text, e.g. '464 3290 318'")
    p.add_argument("--tokenizer", metavar="PATH", help=TOKENIZER_HELP)
    p.add_argument("--layers", help="blocks to show, e.g. 0,11 or 0-3 (default: all)")
    p.add_argument("--tensors", action="store_true", help="also save every point's tensor to --out/trace_tensors.safetensors")
    p.add_argument("--out", metavar="DIR", help="write trace.png (residual-stream norm and per-stage statistics) here")


@command("trace", "follow a text through the network stage by stage: shapes, statistics, the next token", _trace_args)
def _trace(args: argparse.Namespace) -> None:
    from ..trace import trace

    model = model_for_lab(args.model, args.random, args.seed)
    tokenizer = None
    if args.text is not None or args.tokenizer:
        from ..tokenizer import Tokenizer

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
            from ..weights import write_safetensors

            kept = [(p.name, p.tensor.contiguous().cpu()) for p in tr.points if p.tensor is not None]  # all, with --tensors
            write_safetensors(out / "trace_tensors.safetensors", kept)
            print(f"wrote {out / 'trace_tensors.safetensors'} ({len(tr.points)} tensors, named as the points above)")


def _experiment_args(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="experiment", metavar="EXPERIMENT")
    sub.required = True
    res = sub.add_parser("residuals", help="gradients per layer with and without shortcut connections")
    res.add_argument("--depth", type=int, default=12, help="layers of the plain deep stack (default 12)")
    res.add_argument("--width", type=int, default=32, help="width of the plain deep stack (default 32)")
    model_options(res, required=False)
    res.add_argument("--seq-len", type=int, default=64, help="tokens per sequence for the GPT-2 part (default 64)")
    res.add_argument("--out", default="experiment_out", metavar="DIR", help="where residuals.png goes (default experiment_out)")
    act = sub.add_parser("activations", help="GELU (tanh and exact) against ReLU, with derivatives")
    act.add_argument("--out", default="experiment_out", metavar="DIR", help="where activations.png goes (default experiment_out)")


@command("experiment", "small experiments with plots: residuals (vanishing gradients), activations (GELU vs ReLU)", _experiment_args)
def _experiment(args: argparse.Namespace) -> None:
    from .. import experiments

    out = Path(args.out)
    if args.experiment == "residuals":
        name = args.model or "gpt2"
        model = model_for_lab(name, args.random or args.model is None, args.seed)
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
    p.add_argument("--tokenizer", metavar="PATH", help=TOKENIZER_HELP)
    p.add_argument("--layer", type=int, help="layer for the head picture and the token mapping (default: mapping averages all layers)")
    p.add_argument("--head", type=int, help="head within --layer (default: the mean over the layer's heads)")
    p.add_argument("--top-k", type=int, metavar="K", help="attended tokens shown per token (default 5); also the edges "
                   "kept per token in the HTML page (default: all for short texts, 8 for long ones)")
    p.add_argument("--token", type=int, metavar="I", help="print the mapping for token I only")
    p.add_argument("--out", required=True, metavar="DIR", help="directory for head.png, grid.png, layers.png and attention.html")


@command("attention", "attention of every layer and head: PNG heatmaps, token mapping, an interactive HTML page", _attention_args)
def _attention(args: argparse.Namespace) -> None:
    from ..attention import attention
    from ..views import save_attention

    text = read_text(args.text_file) if args.text_file is not None else args.text
    if args.head is not None and args.layer is None:
        raise UsageError("--head needs --layer (which layer's head?)")
    if args.top_k is not None and args.top_k < 1:
        raise UsageError(f"--top-k must be at least 1, got {args.top_k}")
    model, tokenizer = model_and_tokenizer(args)
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
    p.add_argument("--tokenizer", metavar="PATH", help=TOKENIZER_HELP)
    p.add_argument("--device", default="auto", help=DEVICE_HELP)


def _interp_model(args: argparse.Namespace) -> tuple[GPT2, Tokenizer]:
    """The model on ``--device`` and its tokenizer."""
    from ..devices import pick_device

    device = pick_device(args.device)  # a wrong --device is reported before any weights are read
    return model_and_tokenizer(args, device=device)


def _lens_args(p: argparse.ArgumentParser) -> None:
    _interp_model_args(p)
    p.add_argument("--text", required=True, help="the text whose next-token predictions to follow through the blocks")
    p.add_argument("--top-k", type=int, default=5, metavar="K", help="predictions kept per cell, shown on the page (default 5)")
    p.add_argument("--positions", type=int, default=6, metavar="N", help="the last N positions in the terminal table (default 6)")
    p.add_argument("--out", required=True, metavar="DIR", help="directory for lens.png and lens.html")


@command("lens", "logit lens: what the model would predict after each block, at each position (table, PNG, page)", _lens_args)
def _lens(args: argparse.Namespace) -> None:
    from .. import interp
    from ..views.interp import lens_text, save_lens

    at_least_one(args.top_k, "--top-k")
    at_least_one(args.positions, "--positions")
    model, tokenizer = _interp_model(args)
    result = interp.lens(model, tokenizer, args.text, top_k=args.top_k, model_name=str(args.model))
    print(lens_text(result, positions=args.positions), end="")
    paths = save_lens(result, args.out)
    print(f"\nWrote:\n  {paths['png']}  (heat map: top prediction per block and position)\n"
          f"  {paths['html']}  (interactive page, open in a browser: hover a cell for its top {args.top_k})")


def _answer_args(p: argparse.ArgumentParser) -> None:
    _interp_model_args(p)
    p.add_argument("--prompt", required=True, help="the text the answer should follow ('The Eiffel Tower is in')")
    p.add_argument("--answer", required=True, help="the continuation to check, one or more tokens (a word after a space starts "
                   "with the space: ' Paris')")
    p.add_argument("--top-k", type=int, default=10, metavar="K", help="predictions listed at each answer token (default 10)")
    p.add_argument("--no-eot", dest="eot", action="store_false", help="do not begin the prompt with <|endoftext|>")


@command("answer", "does the model continue a prompt with this answer: its rank, logit and probability per token, the top "
                   "predictions, and its rank after each block (logit lens)", _answer_args)
def _answer(args: argparse.Namespace) -> None:
    from .. import interp

    at_least_one(args.top_k, "--top-k")
    if not args.answer:
        raise UsageError("--answer is empty: give the text the prompt should continue with (' Paris')")
    model, tokenizer = _interp_model(args)
    print(interp.check_answer(model, tokenizer, args.prompt, args.answer, top_k=args.top_k, prepend_eot=args.eot,
                              model_name=str(args.model)).to_text(), end="")


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
    from .. import interp
    from ..views.interp import patching_text, save_patching

    at_least_one(args.top, "--top")
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
    from .. import interp
    from ..views.interp import attribution_text, plot_attribution

    at_least_one(args.top, "--top")
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
    from .. import interp
    from ..sampling import GenerationSettings
    from ..views.interp import steering_text

    GenerationSettings(args.temperature, None, args.top_p)  # checked before the model is loaded
    at_least_one(args.num_samples, "--num-samples")
    at_least_one(args.top, "--top")
    at_least_one(args.max_new_tokens, "--max-new-tokens")
    model, tokenizer = _interp_model(args)
    steering = interp.steering(model, tokenizer, args.plus, args.minus, args.layer, args.coeff, prepend_eot=args.eot)
    result = interp.steer_text(model, tokenizer, steering, args.prompt, args.max_new_tokens, samples=args.num_samples, seed=args.seed,
                               top=args.top, temperature=args.temperature, top_p=args.top_p)
    print(steering_text(result), end="")
