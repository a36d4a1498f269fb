"""gpt2lab next to Hugging Face transformers on the same weights and prompt (``gpt2lab compare``).

It answers the questions people ask when two GPT-2s disagree:

* Are the numbers the same? Max |Δ| of the hidden states after every layer, and of the logits.
* Is the next token the same? Top-5 next tokens with probabilities from each.
* Is the text the same? Both greedy continuations.
* Why does ``pipeline("text-generation")`` write something else than a plain loop? Its defaults,
  read from the installed transformers (sampling on, temperature 0.7, top-k 50, 256 new tokens, the
  pad token, the prompt returned with the text, torch's global random generator), and the proof:
  with the pipeline's settings and seed, or greedy, the two agree.

transformers is an optional extra (``pip install 'gpt2lab[hf]'``), imported only here.
"""

from __future__ import annotations

import inspect
import os
import tempfile
from dataclasses import dataclass, field
from typing import Any

import torch

from .errors import GPT2LabError


@dataclass
class Comparison:
    """What ``compare`` measured; ``report()`` lays it out side by side."""

    model: str
    prompt: str
    prompt_ids: list[int]
    transformers_version: str
    hidden_deltas: list[tuple[str, float]]  # (where, max |Δ|)
    logits_delta: float
    top5: list[tuple[tuple[str, float], tuple[str, float]]]  # ((ours token, p), (theirs token, p))
    greedy_ours: str
    greedy_theirs: str
    max_new_tokens: int
    seed: int
    pipeline_defaults: list[tuple[str, str, str]] = field(default_factory=list)  # (setting, value, what it means)
    pipeline_sampled: str | None = None
    plain_sampled: str = ""
    matched_sampled: str = ""
    pipeline_greedy: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def max_delta(self) -> float:
        return max([self.logits_delta] + [d for _, d in self.hidden_deltas])

    @property
    def greedy_same(self) -> bool:
        return self.greedy_ours == self.greedy_theirs

    def report(self) -> str:
        w = max(len(name) for name, _ in self.hidden_deltas + [("logits (every position)", 0.0)])
        lines = [
            f"gpt2lab vs transformers {self.transformers_version} on {self.model} (fp32, CPU)",
            f"prompt {self.prompt!r}: {len(self.prompt_ids)} tokens",
            "",
            "1. The same weights give the same numbers (max |delta| over every position and feature)",
        ]
        lines += [f"   {name:<{w}}  {d:.2e}" for name, d in self.hidden_deltas]
        lines.append(f"   {'logits (every position)':<{w}}  {self.logits_delta:.2e}")
        lines += ["", "2. Next token after the prompt", f"   {'':3}{'gpt2lab':<28}{'transformers':<28}"]
        for i, ((a, pa), (b, pb)) in enumerate(self.top5, 1):
            lines.append(f"   {i}. {a!r:<17} {pa:8.4f}  {b!r:<17} {pb:8.4f}")
        lines += [
            "",
            f"3. Greedy continuation, {self.max_new_tokens} new tokens (stops at <|endoftext|> in both)",
            f"   gpt2lab:      {self.greedy_ours!r}",
            f"   transformers: {self.greedy_theirs!r}",
            f"   identical: {'yes' if self.greedy_same else 'NO'}",
            "",
            '4. Why text from pipeline("text-generation") differs from a plain loop',
            f"   Its defaults, read from the installed transformers {self.transformers_version}:",
        ]
        sw = max((len(s) for s, _, _ in self.pipeline_defaults), default=0)
        vw = max((len(v) for _, v, _ in self.pipeline_defaults), default=0)
        lines += [f"     {s:<{sw}}  {v:<{vw}}  {what}" for s, v, what in self.pipeline_defaults]
        same = lambda a, b: "" if a is None else ("  (same as the pipeline)" if a == b else "  (differs from the pipeline)")  # noqa: E731
        lines += [f"   With seed {self.seed} and {self.max_new_tokens} new tokens (the pipeline's 256 shortened to match):"]
        if self.pipeline_sampled is not None:
            lines.append(f"     pipeline, its defaults:               {self.pipeline_sampled!r}")
        lines += [
            f"     gpt2lab plain loop (T=1, no top-k):   {self.plain_sampled!r}{same(self.pipeline_sampled, self.plain_sampled)}",
            f"     gpt2lab with the pipeline's settings: {self.matched_sampled!r}{same(self.pipeline_sampled, self.matched_sampled)}",
        ]
        if self.pipeline_greedy is not None:
            lines += [
                f"     pipeline, do_sample=False:            {self.pipeline_greedy!r}",
                f"     gpt2lab, temperature=0:               {self.greedy_ours!r}{same(self.pipeline_greedy, self.greedy_ours)}",
            ]
        lines += [f"   {n}" for n in self.notes]
        return "\n".join(lines)


def _import_transformers():
    try:
        import transformers
    except ImportError:
        raise GPT2LabError("compare needs Hugging Face transformers: pip install 'gpt2lab[hf]' (or pip install transformers)") from None
    return transformers


def pipeline_defaults(transformers: Any, hf_tokenizer: Any, hf_model: Any) -> list[tuple[str, str, str]]:
    """The settings ``pipeline("text-generation")`` uses when given none, from the installed library."""
    from transformers import GenerationConfig
    from transformers.pipelines.text_generation import TextGenerationPipeline

    rows: list[tuple[str, str, str]] = []
    pipe_defaults = getattr(TextGenerationPipeline, "_default_generation_config", None)
    pipe_values = pipe_defaults.to_diff_dict() if pipe_defaults is not None else {}
    if hasattr(GenerationConfig, "_get_default_generation_params"):  # transformers 5
        global_values = GenerationConfig._get_default_generation_params()
    else:  # transformers 4: the defaults are GenerationConfig()'s own
        global_values = GenerationConfig().to_dict()

    def value(name: str, fallback: Any) -> Any:
        for source in (pipe_values, hf_model.generation_config.to_diff_dict(), global_values):
            if source.get(name) is not None:
                return source[name]
        return fallback

    rows.append(("do_sample", str(value("do_sample", False)), "sampling, not greedy: each run draws other text"))
    rows.append(("temperature", str(value("temperature", 1.0)), "sharper than the model's own distribution (1.0)"))
    rows.append(("top_k", str(value("top_k", 50)), "transformers' generate keeps only the 50 likeliest tokens whenever it samples"))
    rows.append(("top_p", str(value("top_p", 1.0)), "1.0: no nucleus filtering"))
    rows.append(("max_new_tokens", str(value("max_new_tokens", None)), "tokens added when the call does not say"))
    eos = hf_model.generation_config.eos_token_id
    pad = hf_tokenizer.pad_token_id
    rows.append(("pad_token_id", f"{pad} -> {eos}", "GPT-2 has no pad token; generate pads (and stops) with eos, <|endoftext|>"))
    rows.append(("eos_token_id", str(eos), "generation stops at <|endoftext|>"))
    ret = inspect.signature(TextGenerationPipeline.postprocess).parameters.get("return_type")
    full = getattr(getattr(ret, "default", None), "name", "FULL_TEXT")
    rows.append(("return_type", str(full), "the returned text starts with the prompt"))
    rows.append(("random numbers", "torch's global generator", "seeded by transformers.set_seed; gpt2lab's seed= uses its own generator"))
    return rows


@torch.no_grad()
def compare(
    model: str | os.PathLike,
    prompt: str,
    *,
    tokenizer: Any = None,
    max_new_tokens: int = 20,
    seed: int = 0,
    run_pipeline: bool = True,
) -> Comparison:
    """Run gpt2lab and transformers on the same checkpoint and prompt; see ``Comparison``.

    Args:
        model: a checkpoint directory or a hub id (both libraries read the same files); or a LoRA adapter, which
            gpt2lab merges into its base and PEFT merges into transformers' (needs peft).
        prompt: the text; empty starts from ``<|endoftext|>``.
        tokenizer: a ``Tokenizer``, a vocabulary path, or None for the model's own (else GPT-2's).
        max_new_tokens: length of the continuations.
        seed: seed of the sampled continuations.
        run_pipeline: also run transformers' ``pipeline("text-generation")``.
    """
    transformers = _import_transformers()
    from transformers import GPT2LMHeadModel
    from transformers.utils import logging as hf_logging

    from .generate import encode_prompts, generate_text
    from .model import GPT2
    from .tokenizer import Tokenizer
    from .weights import resolve_model

    directory, adapters = resolve_model(model)  # a LoRA adapter: its base, and the adapters on it
    if adapters:
        try:
            from peft import PeftModel
        except ImportError:
            raise GPT2LabError("comparing a LoRA adapter needs PEFT, which puts it on transformers' side: pip install peft") from None
    if tokenizer is None:
        tokenizer = Tokenizer.from_pretrained(directory if any(directory.glob("vocab.json")) else str(model))
    elif not isinstance(tokenizer, Tokenizer):
        tokenizer = Tokenizer.from_file(tokenizer)
    ours = GPT2.from_pretrained(model).eval()  # (an adapter merged in by gpt2lab.lora)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # its progress bars and pad-token notices are explained in the report instead
    hf_logging.disable_progress_bar()
    try:
        theirs = GPT2LMHeadModel.from_pretrained(directory, dtype=torch.float32).eval()
        for adapter in adapters:  # merged in by PEFT, as gpt2lab merged them on its side
            theirs = PeftModel.from_pretrained(theirs, str(adapter)).merge_and_unload().eval()
        if tokenizer.n_vocab > ours.config.vocab_size:
            raise GPT2LabError(f"the tokenizer has {tokenizer.n_vocab} tokens but the model only {ours.config.vocab_size}; "
                               "pass the model's tokenizer")
        idx, _ = encode_prompts(tokenizer, [prompt])  # (1, T)
        if idx.size(1) > ours.config.block_size:
            raise GPT2LabError(f"the prompt has {idx.size(1)} tokens; the context holds {ours.config.block_size}")

        # 1. hidden states: transformers' hidden_states are the embeddings, each block's output, and
        # for the last block ln_f of it; the same tensors are gpt2lab's hook points below
        L = ours.config.n_layer
        points = ["h.0.resid_pre"] + [f"h.{i}.resid_post" for i in range(L - 1)] + ["ln_f.out"]
        logits_ours, cache = ours.run_with_cache(idx, names=points)  # (1, T, V)
        caught = [cache[p] for p in points]
        out = theirs(idx, output_hidden_states=True)
        names = ["embeddings"] + [f"block {i}" for i in range(ours.config.n_layer - 1)] + [f"block {ours.config.n_layer - 1} + ln_f"]
        hidden = [(n, (a - b).abs().max().item()) for n, a, b in zip(names, caught, out.hidden_states)]
        logits_delta = (logits_ours - out.logits).abs().max().item()

        # 2. top-5 next tokens
        def top5(logits: torch.Tensor) -> list[tuple[str, float]]:
            p = logits[0, -1].float().softmax(-1)
            values, ids = p.topk(5)
            return [(tokenizer.decode([i]), v) for i, v in zip(ids.tolist(), values.tolist())]

        tops = list(zip(top5(logits_ours), top5(out.logits)))

        # 3. greedy, both stopping at <|endoftext|> as transformers does for GPT-2
        eot = tokenizer.eot_token
        greedy_ours = generate_text(ours, tokenizer, prompt, max_new_tokens, temperature=0.0)
        g = theirs.generate(idx, attention_mask=torch.ones_like(idx), max_new_tokens=max_new_tokens, do_sample=False,
                            eos_token_id=eot, pad_token_id=eot)[0, idx.size(1) :].tolist()
        greedy_theirs = tokenizer.decode(g[: g.index(eot)] if eot in g else g)

        result = Comparison(
            model=str(model), prompt=prompt, prompt_ids=idx[0].tolist(), transformers_version=transformers.__version__,
            hidden_deltas=hidden, logits_delta=logits_delta, top5=tops, greedy_ours=greedy_ours, greedy_theirs=greedy_theirs,
            max_new_tokens=max_new_tokens, seed=seed,
        )

        # 4. the pipeline: its defaults, its sampled text, and gpt2lab with its settings
        with tempfile.TemporaryDirectory() as tmp:
            tokenizer.save(tmp)  # vocab.json + merges.txt: what transformers' GPT2Tokenizer reads
            hf_tokenizer = transformers.AutoTokenizer.from_pretrained(tmp)
        result.pipeline_defaults = pipeline_defaults(transformers, hf_tokenizer, theirs)
        defaults = {name: value for name, value, _ in result.pipeline_defaults}
        temperature = float(defaults["temperature"]) if defaults["do_sample"] == "True" else 0.0
        top_k = int(defaults["top_k"]) if defaults["top_k"] not in ("None", "0") else None
        result.plain_sampled = generate_text(ours, tokenizer, prompt, max_new_tokens, temperature=1.0, seed=seed)
        result.matched_sampled = generate_text(ours, tokenizer, prompt, max_new_tokens, temperature=temperature, top_k=top_k, seed=seed)
        if run_pipeline:
            pipe = transformers.pipeline("text-generation", model=theirs, tokenizer=hf_tokenizer, device="cpu")
            text = prompt or tokenizer.decode([eot])  # the pipeline cannot start from nothing
            transformers.set_seed(seed)
            sampled = pipe(text, max_new_tokens=max_new_tokens)[0]["generated_text"]
            result.pipeline_sampled = sampled[len(text) :] if sampled.startswith(text) else sampled
            greedy = pipe(text, max_new_tokens=max_new_tokens, do_sample=False)[0]["generated_text"]
            result.pipeline_greedy = greedy[len(text) :] if greedy.startswith(text) else greedy
            result.notes.append(
                "On CPU a seeded torch.Generator repeats torch's global stream, so the same settings and seed draw the same "
                "tokens; on a GPU, or after other random calls, the streams part and only greedy text must agree."
            )
    finally:
        hf_logging.set_verbosity(verbosity)
        hf_logging.enable_progress_bar()
    return result
