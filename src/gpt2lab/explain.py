"""The architecture explainer: what every part of a GPT-2 is, what it costs, in the model's own numbers.

    >>> import gpt2lab
    >>> ex = gpt2lab.explain("gpt2")             # a preset, a GPT2Config, a GPT2, a checkpoint dir or hub id
    >>> ex.params["total"], ex.params["total_untied"]
    (124439808, 163037184)
    >>> print(ex.to_text())                      # or ex.to_markdown(), or ex.to_dict() for a notebook

``explain_repr(text)`` does the same from the text ``print(model)`` shows, for a Hugging Face
``GPT2LMHeadModel`` (any transformers version, with or without indentation) or for gpt2lab's ``GPT2``;
reading that text is ``printed_tree.py``'s job (``parse_repr``, ``read_tree``), this file explains.

Every parameter count comes from ``config.parameter_counts`` (the one place that arithmetic lives);
a printed tree is first turned into a ``GPT2Config``, and the shapes it printed are checked against it.
Memory and FLOPs are estimates with their formulas printed next to them.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .config import PRESETS, GPT2Config, parameter_counts
from .errors import ConfigError
from .flops import flops_estimate  # the one FLOPs convention (MFU in training uses it too)
from .printed_tree import ReprNode, TreeReading, parse_repr, read_tree

# the printed-tree reader's names stay importable from here, where they were first
__all__ = ["explain", "explain_repr", "Explanation", "TreeLine", "Step", "parameter_steps", "memory_estimate", "flops_estimate",
           "ReprNode", "TreeReading", "parse_repr", "read_tree"]

# ---------------------------------------------------------------------------------------------
# The explanation
# ---------------------------------------------------------------------------------------------


@dataclass
class TreeLine:
    """One line of the annotated ``print(model)`` tree."""

    depth: int
    text: str  # "(wte): Embedding(50257, 768)" or ")" for a closing line
    params: int | None  # parameters of this module and everything under it (all repeats); None for ")"
    output_shape: tuple[int, ...] | None
    note: str = ""  # "tied to wte", "12 x 7,087,872", "not counted"


@dataclass
class Step:
    """One line of the parameter arithmetic: what, the formula in the model's numbers, the value."""

    label: str
    formula: str
    value: int
    level: int = 1  # 0: section heading, 1: item, 2: sub-total


@dataclass
class Explanation:
    """Everything ``gpt2lab explain`` prints, as data. ``to_text()`` / ``to_markdown()`` render it."""

    source: str
    config: GPT2Config
    batch: int
    seq_len: int
    tree: list[TreeLine]
    components: list[tuple[str, str]]  # (component, one plain-language sentence)
    params: dict[str, int]  # parameter_counts(config) plus "total_untied" and "total_tied"
    steps: list[Step]
    memory: dict[str, Any]
    flops: dict[str, Any]
    notes: list[str] = field(default_factory=list)  # assumptions made (inferred shapes...)
    unknown: list[str] = field(default_factory=list)  # printed lines that were not understood
    linear_kind: str = "Linear"  # how the projections are stored: "Linear" (gpt2lab) or "Conv1D" (HF)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["config"] = self.config.to_dict()
        return d

    def to_text(self) -> str:
        return _render(self, markdown=False)

    def to_markdown(self) -> str:
        return _render(self, markdown=True)

    def __str__(self) -> str:
        return self.to_text()


def _fmt(n: int | float) -> str:
    return f"{n:,}" if isinstance(n, int) or float(n).is_integer() else f"{n:,.2f}"


def _bytes(n: float) -> str:
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:,.2f} {unit}"
    return f"{int(n):,} B"


def _flops(n: float) -> str:
    for unit, size in (("TFLOP", 1e12), ("GFLOP", 1e9), ("MFLOP", 1e6), ("kFLOP", 1e3)):
        if n >= size:
            return f"{n / size:,.2f} {unit}"
    return f"{int(n):,} FLOP"


def parameter_steps(config: GPT2Config) -> tuple[dict[str, int], list[Step]]:
    """The parameter arithmetic, step by step; every value is read from ``parameter_counts``.

    The formula strings are rebuilt from the config and checked to give the same values, so the
    words cannot drift from the numbers.
    """
    counts = dict(parameter_counts(config))
    untied = parameter_counts(config.replace(tie_word_embeddings=False))["total"]
    tied = parameter_counts(config.replace(tie_word_embeddings=True))["total"]
    counts["total_untied"], counts["total_tied"] = untied, tied
    C, V, F_, L, P = config.n_embd, config.vocab_size, config.mlp_dim, config.n_layer, config.block_size
    b, qb = config.bias, config.qkv_bias

    def lin(n_in: int, n_out: int, bias: bool) -> tuple[str, int]:
        return f"{n_in:,} x {n_out:,}" + (f" + {n_out:,}" if bias else ""), n_in * n_out + (n_out if bias else 0)

    ln_formula, ln_value = (f"{C:,} + {C:,} (scale and shift)", 2 * C) if b else (f"{C:,} (scale)", C)
    rows: list[tuple[str, str, int, str | None, int]] = [  # label, formula, value by the formula, key, level
        ("Embeddings", "", 0, None, 0),
        ("wte: token embedding", f"{V:,} tokens x {C:,}", V * C, "wte", 1),
        ("wpe: position embedding", f"{P:,} positions x {C:,}", P * C, "wpe", 1),
        ("One block", "", 0, None, 0),
        ("ln_1", ln_formula, ln_value, "block.ln_1", 1),
        ("attn.c_attn (Q, K, V fused)", *lin(C, 3 * C, qb), "block.attn.c_attn", 1),
        ("attn.c_proj", *lin(C, C, b), "block.attn.c_proj", 1),
        ("ln_2", ln_formula, ln_value, "block.ln_2", 1),
        ("mlp.c_fc", *lin(C, F_, b), "block.mlp.c_fc", 1),
        ("mlp.c_proj", *lin(F_, C, b), "block.mlp.c_proj", 1),
        ("per block", "ln_1 + attn + ln_2 + mlp", counts["block.ln_1"] * 2 + counts["block.attn"] + counts["block.mlp"], "per_block", 2),
        (f"all {L} blocks", f"{L} x {counts['per_block']:,}", L * counts["per_block"], None, 2),
        ("Output", "", 0, None, 0),
        ("ln_f: final LayerNorm", ln_formula, ln_value, "ln_f", 1),
        ("lm_head", "tied: reuses wte, no new parameters" if config.tie_word_embeddings else f"{C:,} x {V:,} (untied)",
         0 if config.tie_word_embeddings else C * V, "lm_head", 1),
        ("Total" + (" (tied)" if config.tie_word_embeddings else " (untied)"),
         "embeddings + blocks + ln_f + lm_head", counts["total"], "total", 2),
    ]
    if config.tie_word_embeddings:
        rows.append(("Total if untied", f"{tied:,} + {V:,} x {C:,}", tied + V * C, "total_untied", 2))
    else:
        rows.append(("Total if tied", f"{untied:,} - {V:,} x {C:,}", untied - V * C, "total_tied", 2))
    steps = []
    for label, formula, value, key, level in rows:
        if key is not None and counts[key] != value:  # pragma: no cover - a bug in one of the two
            raise AssertionError(f"parameter arithmetic disagrees for {key}: {value} vs parameter_counts {counts[key]}")
        steps.append(Step(label, formula, value, level))
    return counts, steps


def memory_estimate(config: GPT2Config, batch: int, seq_len: int, params: int) -> dict[str, Any]:
    """Bytes for the weights, the KV cache and training, with the formulas used.

    Activations (what backward needs, per token and block): the inputs of ln_1, c_attn, c_proj,
    ln_2, c_fc, the GELU and mlp.c_proj (1 + 1 + 1 + 1 + 1 + 4 + 4 = 13 x C) plus q, k, v (3 x C):
    16 x C values; the attention probabilities add H x T values per token on the explicit path
    (flash attention recomputes them instead). After the blocks: ln_f and lm_head inputs (2 x C)
    and the logits with their softmax (2 x V). Dropout masks and small buffers are left out.
    """
    C, L, H, V, P = config.n_embd, config.n_layer, config.n_head, config.vocab_size, config.block_size
    B, T = batch, seq_len
    kv_per_token_values = 2 * L * C  # a key and a value vector of width C, in every layer
    act_per_token = L * 16 * C + 2 * C + 2 * V
    act_attn_per_token = L * H * T
    act_values = B * T * act_per_token
    act_values_explicit = B * T * (act_per_token + act_attn_per_token)
    return {
        "weights": {"fp32": 4 * params, "bf16": 2 * params, "int8": params},
        "kv_cache": {
            "values_per_token": kv_per_token_values,
            "per_token_fp32": 4 * kv_per_token_values,
            "per_token_bf16": 2 * kv_per_token_values,
            "full_context_tokens": B * P,
            "full_context_fp32": 4 * kv_per_token_values * B * P,
            "full_context_bf16": 2 * kv_per_token_values * B * P,
            "formula": "2 (key and value) x n_layer x n_embd values per token",
        },
        "training": {
            "weights_fp32": 4 * params,
            "grads_fp32": 4 * params,
            "adamw_fp32": 8 * params,  # two moments per parameter
            "activation_values_per_token": act_per_token,
            "activations_fp32": 4 * act_values,
            "activations_fp32_explicit_attention": 4 * act_values_explicit,
            "total_fp32": 16 * params + 4 * act_values,
            "formula": "weights 4N + gradients 4N + AdamW moments 8N bytes; activations "
            "B x T x (n_layer x 16 x n_embd + 2 x n_embd + 2 x vocab) values x 4 bytes "
            "(+ B x T x n_layer x n_head x T for attention probabilities if they are kept)",
        },
    }


def _components(config: GPT2Config, counts: dict[str, int], linear_kind: str) -> list[tuple[str, str]]:
    C, V, P, L, H, D, F_ = (config.n_embd, config.vocab_size, config.block_size, config.n_layer, config.n_head,
                            config.head_dim, config.mlp_dim)
    ln = counts["block.ln_1"]
    gelu = ("GELU, in GPT-2's tanh approximation 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))"
            if config.activation == "gelu_tanh" else "the exact GELU x Phi(x)")
    p = config.embd_pdrop
    mlp_share = 100 * counts["block.mlp"] / counts["per_block"]
    tie = (f"It is tied to the token embedding: the same {V:,} x {C:,} matrix reads tokens in and scores them out, "
           f"so it adds no parameters (untied it would add {V * C:,})." if config.tie_word_embeddings
           else f"It is untied: its own {C:,} x {V:,} matrix, {V * C:,} parameters.")
    return [
        ("Token embedding (wte)", f"turns each of the {V:,} token ids into a {C:,}-number vector: "
                                  f"a table of {V:,} x {C:,} = {V * C:,} learned numbers."),
        ("Position embedding (wpe)", f"adds a learned {C:,}-number vector for each of the {P:,} positions, so the model "
                                     f"knows word order; {P:,} tokens is the longest input it can read."),
        ("Dropout (drop, attn_dropout, resid_dropout)",
         f"during training zeroes {p:.0%} of the numbers at random and scales the rest by 1/{1 - p:g}; "
         "at inference it does nothing. No parameters." if p > 0 else
         "switched off here (p = 0): it passes numbers through unchanged. With p > 0 it would zero that share of the "
         "numbers at random during training and scale the rest by 1/(1 - p). No parameters."),
        (f"Block (h.0 ... h.{L - 1})", f"{L} identical blocks, each x = x + attn(ln_1(x)); x = x + mlp(ln_2(x)). "
                                         f"The additions keep a {C:,}-wide residual stream running through all {L}; "
                                         f"each block has {counts['per_block']:,} parameters."),
        ("LayerNorm (ln_1, ln_2)", f"rescales each token's {C:,} numbers to mean 0 and variance 1 "
                                   f"(epsilon {config.layer_norm_epsilon:g}), then applies a learned scale"
                                   + (" and shift" if config.bias else "") + f": {ln:,} parameters."),
        ("Attention with fused QKV (attn)", f"c_attn makes the queries, keys and values of all {H} heads in one "
                                            f"{C:,} -> {3 * C:,} product; each head ({D} wide) scores its query against the "
                                            f"keys of this and every earlier token, softmaxes the scores and averages the "
                                            f"values; c_proj ({C:,} -> {C:,}) mixes the heads back into the stream."),
        ("Conv1D vs Linear", "Hugging Face stores these projections as Conv1D, a linear layer whose weight is kept "
                             f"transposed (in x out, e.g. {C:,} x {3 * C:,}); gpt2lab uses nn.Linear (out x in) with the numbers "
                             "left in Conv1D's memory order, so a checkpoint loads without a transpose. Same function, same count."
                             + (" This tree is Hugging Face's." if linear_kind == "Conv1D" else "")),
        ("MLP with GELU (mlp)", f"c_fc widens each token's vector from {C:,} to {F_:,}, {gelu} bends it, and c_proj "
                                f"narrows it back to {C:,}: {mlp_share:.0f}% of each block's parameters."),
        ("Final LayerNorm (ln_f)", f"normalises the stream once more after the last block ({counts['ln_f']:,} parameters)."),
        ("LM head and weight tying (lm_head)", f"scores each of the {V:,} vocabulary tokens by a dot product with the final "
                                               f"{C:,}-number vector: the logits. {tie}"),
    ]


_OUT_SHAPES = {
    "model": "BTV", "lm_head": "BTV", "transformer": "BTC", "wte": "BTC", "wpe": "1TC", "drop": "BTC", "dropout": "BTC",
    "h": "BTC", "block": "BTC", "ln_f": "BTC", "block.ln_1": "BTC", "block.ln_2": "BTC", "block.attn": "BTC",
    "block.attn.c_attn": "BT3", "block.attn.c_proj": "BTC", "block.mlp": "BTC", "block.mlp.c_fc": "BTF",
    "block.mlp.act": "BTF", "block.mlp.c_proj": "BTC",
}


def _shape(role: str, key: str | None, config: GPT2Config, B: int, T: int) -> tuple[int, ...] | None:
    if role == "dropout" and key == "attn_dropout":
        return (B, config.n_head, T, T)  # on the attention probabilities
    if role == "dropout" and key == "dropout":
        return (B, T, config.n_embd)
    spec = _OUT_SHAPES.get(role)
    if spec is None:
        return None
    dims = {"B": B, "T": T, "C": config.n_embd, "V": config.vocab_size, "F": config.mlp_dim, "3": 3 * config.n_embd, "1": 1}
    return tuple(dims[c] for c in spec)


def _annotate(root: ReprNode, config: GPT2Config, counts: dict[str, int], B: int, T: int, printed: bool) -> list[TreeLine]:
    """The printed tree again, each line with the parameters under it and its output shape."""
    lines: list[TreeLine] = []

    def params(node: ReprNode) -> int:
        if node.role == "lm_head":
            return counts["lm_head"]
        if node.role in ("wte", "wpe", "ln_f") or node.role.startswith("block."):
            if node.role == "block.mlp.act":
                return 0
            return counts[node.role] * (node.repeat if node.role.startswith("block.") else 1)
        if node.role == "block":
            return counts["per_block"] * node.repeat
        return sum(params(c) for c in node.children) * node.repeat

    def walk(node: ReprNode, depth: int) -> None:
        head = f"({node.key}): " if node.key is not None else ""
        head += f"{node.repeat} x " if node.repeat > 1 else ""
        head += f"{node.cls}(" + ("" if node.is_container else f"{node.args})")
        n = params(node) if node.role else None
        note = ""
        if not node.role:
            note = "not understood, not counted"
        elif node.role == "lm_head" and config.tie_word_embeddings:
            note = "tied to wte"
        elif node.role in ("block",) and node.repeat > 1:
            note = f"{node.repeat} x {counts['per_block']:,} (lines below: one block)"
        elif printed and node.cls in ("Conv1D", "LayerNorm") and not node.args:
            note = "shape inferred from the widths"
        lines.append(TreeLine(depth, head, n, _shape(node.role, node.key, config, B, T) if node.role else None, note))
        if node.is_container:
            for child in node.children:
                walk(child, depth + 1)
            lines.append(TreeLine(depth, ")", None, None))

    walk(root, 0)
    return lines


def _config_tree(config: GPT2Config) -> ReprNode:
    """gpt2lab's own ``print(model)`` for this config (built on the meta device: no memory)."""
    import torch

    from .model import GPT2

    with torch.device("meta"):
        model = GPT2(config)
    root, _ = parse_repr(repr(model))
    return root


def _build(root: ReprNode, unknown: list[tuple[int, str]], source: str, batch: int, seq_len: int | None,
           config: GPT2Config | None = None) -> Explanation:
    reading = read_tree(root, unknown)  # also gives every node it understands its role
    printed = config is None  # the config comes from printed text, not from the model itself
    notes = reading.notes + reading.problems if printed else []
    config = config or reading.config
    T = seq_len if seq_len is not None else config.block_size
    if not isinstance(T, int) or T < 1 or T > config.block_size:
        raise ConfigError(f"--seq-len must be between 1 and the context length {config.block_size}, got {T}")
    if not isinstance(batch, int) or batch < 1:
        raise ConfigError(f"--batch must be a positive integer, got {batch}")
    counts, steps = parameter_steps(config)
    return Explanation(
        source=source,
        config=config,
        batch=batch,
        seq_len=T,
        tree=_annotate(root, config, counts, batch, T, printed),
        components=_components(config, counts, reading.linear_kind),
        params=counts,
        steps=steps,
        memory=memory_estimate(config, batch, T, counts["total"]),
        flops=flops_estimate(config, T),
        notes=notes,
        unknown=reading.unknown,
        linear_kind=reading.linear_kind,
    )


def explain_repr(text: str, *, seq_len: int | None = None, batch: int = 1, source: str = "printed model") -> Explanation:
    """Explain the model whose ``print(model)`` text is given (HF GPT-2 or gpt2lab's GPT2).

    Counts come from the printed shapes (embedding sizes, LayerNorm widths, Linear in/out);
    ``Conv1D()`` lines of older transformers print no shapes and are inferred from the widths,
    which ``notes`` says. Lines that are not understood are listed in ``unknown``, never guessed.
    """
    root, unknown = parse_repr(text)
    return _build(root, unknown, source, batch, seq_len)


def _config_from_name(name: str) -> tuple[GPT2Config, str]:
    key = name.removeprefix("openai-community/")
    if key in PRESETS:
        return GPT2Config.from_preset(key), f"preset {key}"
    path = Path(name).expanduser()
    if path.exists():
        from .weights import resolve_model

        directory, adapters = resolve_model(path)  # a LoRA adapter leaves the shape as its base's
        return GPT2Config.from_json_file(directory / "config.json"), f"checkpoint {adapters[-1] if adapters else directory}"
    looks_like_hub = re.fullmatch(r"[\w.\-]+/[\w.\-]+", name) is not None
    if not looks_like_hub:
        raise ConfigError(f"{name!r} is neither a preset ({', '.join(PRESETS)}), nor an existing checkpoint directory, "
                          "nor a hub id like owner/name")
    try:  # only config.json is needed: no weights are downloaded to explain a model
        from huggingface_hub import hf_hub_download

        file = hf_hub_download(name, "config.json")
    except Exception as err:  # the hub library raises many types; all mean "could not get it"
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ConfigError(f"could not get config.json of {name!r} from the Hugging Face hub ({reason[:160]}); "
                          "check the name and network, or pass a local checkpoint directory") from None
    return GPT2Config.from_json_file(file), f"hub {name}"


def explain(model_or_config: Any = "gpt2", *, seq_len: int | None = None, batch: int = 1,
            from_repr: str | None = None) -> Explanation:
    """Explain a GPT-2: its module tree, each component in plain words, the parameter arithmetic,
    memory and FLOPs, all in this model's numbers.

    Args:
        model_or_config: a preset name ("gpt2"...), a ``GPT2Config``, a ``GPT2``, a checkpoint
            directory, a hub id (only its config.json is fetched), or any ``nn.Module`` whose
            ``print`` is a GPT-2 tree (e.g. transformers' ``GPT2LMHeadModel``).
        seq_len: T for shapes, activation memory and attention FLOPs; default the full context.
        batch: B for shapes and memory.
        from_repr: the text of ``print(model)`` instead (see ``explain_repr``).
    """
    if from_repr is not None:
        return explain_repr(from_repr, seq_len=seq_len, batch=batch)
    import torch

    from .model import GPT2

    if isinstance(model_or_config, GPT2Config):
        config, source = model_or_config, "config"
    elif isinstance(model_or_config, GPT2):
        config, source = model_or_config.config, "model"
        root, unknown = parse_repr(repr(model_or_config))
        ex = _build(root, unknown, source, batch, seq_len, config)
        real = model_or_config.num_parameters()
        if real != ex.params["total"]:
            ex.notes.append(f"this model holds {real:,} parameters, the config says {ex.params['total']:,}")
        return ex
    elif isinstance(model_or_config, torch.nn.Module):
        return explain_repr(repr(model_or_config), seq_len=seq_len, batch=batch, source=type(model_or_config).__name__)
    elif isinstance(model_or_config, (str, Path)):
        config, source = _config_from_name(str(model_or_config))
    else:
        raise ConfigError(f"cannot explain a {type(model_or_config).__name__}; pass a preset name, GPT2Config, GPT2 or path")
    return _build(_config_tree(config), [], source, batch, seq_len, config)


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------


def _render(ex: Explanation, markdown: bool) -> str:
    cfg, out = ex.config, []
    fl, mem = ex.flops, ex.memory
    B, T = ex.batch, ex.seq_len

    def heading(text: str) -> None:
        out.append(f"\n## {text}\n" if markdown else f"\n{text}\n{'=' * len(text)}")

    def table(rows: list[list[str]], header: list[str], align: str) -> None:
        if markdown:
            out.append("| " + " | ".join(header) + " |")
            out.append("|" + "|".join("---:" if a == "r" else ":---" for a in align) + "|")
            for r in rows:
                out.append("| " + " | ".join(c.replace("|", "\\|") for c in r) + " |")
            out.append("")
            return
        widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
        for r in [header] + rows:
            out.append("  ".join(c.rjust(w) if a == "r" else c.ljust(w) for c, w, a in zip(r, widths, align)).rstrip())

    title = f"GPT-2 explained: {ex.source}"
    out.append(f"# {title}" if markdown else f"{title}\n{'=' * len(title)}")
    out.append(f"{cfg.n_layer} layers, {cfg.n_head} head{'s' * (cfg.n_head > 1)} of {cfg.head_dim}, width {cfg.n_embd:,}, MLP {cfg.mlp_dim:,}, "
               f"vocabulary {cfg.vocab_size:,}, context {cfg.block_size:,}; shapes for batch B={B}, sequence T={T}.")
    if ex.notes:
        out.append("")
        out.extend(f"{'- ' if markdown else '  '}note: {n}" for n in ex.notes)
    if ex.unknown:
        out.append("")
        out.append("Lines not understood (not counted):")
        out.extend(f"{'- ' if markdown else '  '}{u}" for u in ex.unknown)

    heading("Module tree (parameters, output shape)")
    tree_rows = []
    for t in ex.tree:
        text = "  " * t.depth + t.text
        params = "" if t.params is None else f"{t.params:,}"
        shape = "" if t.output_shape is None else "(" + ", ".join(map(str, t.output_shape)) + ")"
        tree_rows.append([text, params, shape, t.note])
    width = max(len(r[0]) for r in tree_rows)
    pw = max(len(r[1]) for r in tree_rows)
    sw = max(len(r[2]) for r in tree_rows)
    if markdown:
        out.append("```text")
    for text, params, shape, note in tree_rows:
        out.append(f"{text.ljust(width)}  {params.rjust(pw)}  {shape.ljust(sw)}  {note}".rstrip())
    if markdown:
        out.append("```")

    heading("What each part does")
    for name, sentence in ex.components:
        out.append(f"- **{name}**: {sentence}" if markdown else f"- {name}: {sentence}")

    heading("Parameters, step by step")
    rows = []
    for s in ex.steps:
        if s.level == 0:
            rows.append([f"**{s.label}**" if markdown else s.label, "", ""])
        else:
            label = ("  " if s.level == 1 and not markdown else "") + s.label
            rows.append([label, s.formula, f"{s.value:,}"])
    table(rows, ["part", "arithmetic", "parameters"], "llr")

    heading("Memory")
    kv, tr, w = mem["kv_cache"], mem["training"], mem["weights"]
    table([
        ["weights fp32 / bf16 / int8", f"{ex.params['total']:,} x 4 / 2 / 1 bytes",
         f"{_bytes(w['fp32'])} / {_bytes(w['bf16'])} / {_bytes(w['int8'])}"],
        ["KV cache per token fp32 / bf16", f"2 x {cfg.n_layer} layers x {cfg.n_embd:,} = {kv['values_per_token']:,} values",
         f"{_bytes(kv['per_token_fp32'])} / {_bytes(kv['per_token_bf16'])}"],
        [f"KV cache, full context ({B} x {cfg.block_size:,} tokens) fp32 / bf16", "per token x B x block_size",
         f"{_bytes(kv['full_context_fp32'])} / {_bytes(kv['full_context_bf16'])}"],
        ["training: weights fp32", "4 bytes x N", _bytes(tr["weights_fp32"])],
        ["training: gradients fp32", "4 bytes x N", _bytes(tr["grads_fp32"])],
        ["training: AdamW moments", "2 x 4 bytes x N", _bytes(tr["adamw_fp32"])],
        [f"training: activations (B={B}, T={T})",
         f"B x T x ({cfg.n_layer} x 16 x {cfg.n_embd:,} + 2 x {cfg.n_embd:,} + 2 x {cfg.vocab_size:,}) x 4 bytes",
         _bytes(tr["activations_fp32"])],
        ["  + attention probabilities kept", f"+ B x T x {cfg.n_layer} x {cfg.n_head} x T x 4 bytes",
         _bytes(tr["activations_fp32_explicit_attention"] - tr["activations_fp32"])],
        ["training total (fp32, flash attention)", "weights + gradients + AdamW + activations", _bytes(tr["total_fp32"])],
    ], ["what", "arithmetic", "bytes"], "llr")
    out.append("Activations are an estimate: per token and block the inputs of ln_1, c_attn, c_proj, ln_2, c_fc, GELU and "
               "mlp.c_proj plus q, k, v (16 x n_embd values); dropout masks are left out.")

    heading(f"FLOPs per token (T={T})")
    table([
        ["weights used in matrix products (M)", f"{cfg.n_layer} x (4 x {cfg.n_embd:,}^2 + 2 x {cfg.n_embd:,} x {cfg.mlp_dim:,}) "
                                                f"+ {cfg.n_embd:,} x {cfg.vocab_size:,}", _fmt(fl["matmul_weights"])],
        ["dense", "2 x M", _flops(fl["dense_per_token"])],
        [f"attention over {T} positions", f"4 x {cfg.n_layer} x {cfg.n_embd:,} x {T}", _flops(fl["attention_per_token"])],
        ["forward (also: the next token after a context of T, KV cache)", "dense + attention", _flops(fl["forward_per_token"])],
        ["training (forward + backward)", "3 x forward = 6 M + 12 x L x C x T", _flops(fl["training_per_token"])],
        [f"training per step (B={B}, T={T})", "B x T x training per token", _flops(fl["training_per_token"] * T * B)],
    ], ["what", "arithmetic", "FLOPs"], "llr")
    out.append(f"Attention is {100 * fl['attention_per_token'] / fl['forward_per_token']:.1f}% of the forward FLOPs at T={T}. "
               "Counted: matrix products, 2 per multiply-add, each token charged all T positions (PaLM's convention, which MFU "
               "in training uses too; a causal kernel skips about half of the attention part). Left out: biases, LayerNorm, "
               "GELU, softmax and the embedding look-ups (a few operations per value). See gpt2lab.flops.")
    return "\n".join(out).lstrip("\n") + "\n"
