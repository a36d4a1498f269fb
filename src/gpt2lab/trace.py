"""Trace: watch a real input flow through GPT-2, stage by stage.

    >>> import gpt2lab
    >>> tr = gpt2lab.trace(model, tokenizer, "The cat sat on the")   # or a list / tensor of ids
    >>> tr["h.0.ln_1"].shape, tr["h.0.ln_1"].ln_mean_abs_max, tr["h.0.ln_1"].ln_var_mean
    ((1, 5, 768), 2.9e-08, 0.99999)
    >>> print(tr.to_text())                                           # the walk as a table, then the next token
    >>> tr.plot("trace.png")                                          # residual-stream norm and stage statistics

The numbers are read from the real forward pass at the model's hook points (``model.py`` lists them;
``tr.logits`` is exactly ``model(idx)``): ``embed.sum`` is ``h.0.resid_pre``, ``attn`` is
``h.{i}.attn.out``, ``mlp.fc`` / ``mlp.act`` / ``mlp`` are ``mlp.pre`` / ``mlp.post`` / ``mlp.out``,
``resid_out`` is ``resid_post``, ``ln_f`` is ``ln_f.out``. Three kinds are looked up from what the pass
read: ``embed.tok`` / ``embed.pos`` (rows of ``wte`` / ``wpe``) and each block's LayerNorm outputs,
which the block's own LayerNorm recomputes from the hooked stream with the same kernel (the same
numbers). Each hook reduces its tensor to a few statistics at once and lets it go, so memory stays flat
however many layers are traced, unless ``tensors=True`` asks to keep them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .errors import InputError
from .model import GPT2, LayerNorm
from .tokens import token_ids, token_texts, visible

# One line per kind of point: what the stage did.
STAGES = {
    "embed.tok": "token embedding: each id looks up its row of wte",
    "embed.pos": "position embedding: row t of wpe for position t",
    "embed.sum": "token + position: the residual stream starts here",
    "ln_1": "LayerNorm: each token to mean 0, var 1, scale+shift",
    "attn": "attention: mixes in values of tokens up to this one",
    "resid_mid": "first residual add: stream + attention",
    "ln_2": "LayerNorm before the MLP",
    "mlp.fc": "c_fc widens each token 4x",
    "mlp.act": "GELU: negatives squashed towards 0",
    "mlp": "c_proj narrows back to the stream's width",
    "resid_out": "second residual add: stream + MLP",
    "ln_f": "final LayerNorm",
    "logits": "lm_head: one score per vocabulary token",
}


@dataclass
class TracePoint:
    """One named point of the forward pass: its shape, statistics, and optionally the tensor.

    ``norm`` is the Frobenius norm of the whole tensor; ``token_norm`` the mean over tokens of each
    token's vector length (what "the size of the residual stream" usually means). For LayerNorm
    points, ``ln_token_mean`` / ``ln_token_var`` are each token's mean and variance after the
    normalisation and before the learned scale and shift (≈ 0 and ≈ 1 by construction).
    """

    name: str
    shape: tuple[int, ...]
    stage: str
    mean: float
    std: float
    min: float
    max: float
    norm: float
    token_norm: float
    ln_token_mean: list[float] | None = None
    ln_token_var: list[float] | None = None
    tensor: torch.Tensor | None = None

    @property
    def kind(self) -> str:
        """The point's name without the layer: "h.3.mlp.fc" -> "mlp.fc"."""
        parts = self.name.split(".")
        return ".".join(parts[2:]) if parts[0] == "h" else self.name

    @property
    def layer(self) -> int | None:
        parts = self.name.split(".")
        return int(parts[1]) if parts[0] == "h" else None

    @property
    def ln_mean_abs_max(self) -> float | None:
        return max(abs(m) for m in self.ln_token_mean) if self.ln_token_mean else None

    @property
    def ln_var_mean(self) -> float | None:
        return sum(self.ln_token_var) / len(self.ln_token_var) if self.ln_token_var else None


@dataclass
class Trace:
    """The ordered record of a forward pass (see ``trace``)."""

    ids: list[int]
    tokens: list[str]
    points: list[TracePoint]
    logits: torch.Tensor  # (1, T, V), exactly model(idx)
    top_next: list[tuple[int, str, float]]  # (id, token text, probability) after the last token
    layers: list[int]
    n_layer: int
    extra: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, name: str) -> TracePoint:
        for p in self.points:
            if p.name == name:
                return p
        raise KeyError(f"no point {name!r} in this trace; points are {', '.join(p.name for p in self.points[:6])}, ...")

    def names(self) -> list[str]:
        return [p.name for p in self.points]

    def to_text(self) -> str:
        return render_trace(self)

    def plot(self, path: str | Path) -> Path:
        return plot_trace(self, path)


def parse_layers(layers: str | Sequence[int] | None, n_layer: int) -> list[int]:
    """``None`` = all; "0,11", "0-3,7", -1 = the last; each must exist."""
    if layers is None:
        return list(range(n_layer))
    items: list[int] = []
    if isinstance(layers, str):
        for part in filter(None, (p.strip() for p in layers.split(","))):
            try:
                if "-" in part[1:]:
                    a, b = part.split("-", 1) if not part.startswith("-") else (part, "")
                    items.extend(range(int(a), int(b) + 1))
                else:
                    items.append(int(part))
            except ValueError:
                raise InputError(f"cannot read layers {layers!r}: use numbers like 0,11 or 0-3") from None
    else:
        items = [int(i) for i in layers]
    out = []
    for i in items:
        j = i + n_layer if i < 0 else i
        if not 0 <= j < n_layer:
            raise InputError(f"layer {i} does not exist: this model has layers 0..{n_layer - 1}")
        if j not in out:
            out.append(j)
    if not out:
        raise InputError("no layers given to trace")
    return sorted(out)


@torch.no_grad()
def trace(
    model: GPT2,
    tokenizer: Any,
    text_or_ids: str | Sequence[int] | torch.Tensor,
    *,
    layers: str | Sequence[int] | None = None,
    tensors: bool = False,
    explicit: bool = False,
    top_k: int = 5,
) -> Trace:
    """Run one forward pass and record every stage of it.

    Args:
        model: a ``GPT2`` (run in eval mode for the trace, its mode restored afterwards).
        tokenizer: encodes ``text_or_ids`` when it is text and names the tokens; may be ``None``
            for ids (tokens are then shown as their ids).
        text_or_ids: text, or ids as a list or a (T,) / (1, T) tensor.
        layers: the blocks to record (default all), e.g. ``[0, 11]`` or ``"0,11"``.
        tensors: keep each point's tensor (detached, on the model's device) in ``point.tensor``.
        explicit: run the model's explicit path instead of the fused one.
        top_k: how many next-token candidates to list.

    Returns:
        a ``Trace``: ``points`` in forward order (``embed.tok``, ``embed.pos``, ``embed.sum``,
        then per block ``h.{i}.ln_1``, ``h.{i}.attn``, ``h.{i}.resid_mid``, ``h.{i}.ln_2``,
        ``h.{i}.mlp.fc``, ``h.{i}.mlp.act``, ``h.{i}.mlp``, ``h.{i}.resid_out``, then ``ln_f``, ``logits``).
    """
    cfg = model.config
    chosen = parse_layers(layers, cfg.n_layer)
    ids = token_ids(tokenizer, text_or_ids, model)
    idx = torch.tensor([ids], dtype=torch.long, device=model.device)  # (1, T)
    points: list[TracePoint] = []
    normalised: dict[int, tuple[list[float], list[float]]] = {}  # id(LayerNorm) -> per-token stats of its input

    def record(name: str, x: torch.Tensor, ln_module: torch.nn.Module | None = None) -> None:
        xf = x.detach().float()
        flat = xf.reshape(-1, xf.size(-1))  # (tokens, width)
        ln_mean = ln_var = None
        if ln_module is not None:
            ln_mean, ln_var = normalised.pop(id(ln_module))
        points.append(TracePoint(
            name=name, shape=tuple(x.shape), stage=STAGES[name.split(".", 2)[2] if name.startswith("h.") else name],
            mean=xf.mean().item(), std=xf.std(unbiased=False).item(), min=xf.min().item(), max=xf.max().item(),
            norm=torch.linalg.vector_norm(xf).item(), token_norm=flat.norm(dim=-1).mean().item(),
            ln_token_mean=ln_mean, ln_token_var=ln_var,
            tensor=x.detach() if tensors else None,  # otherwise nothing of the tensor outlives this call
        ))

    def ln_input(module: LayerNorm, x: torch.Tensor) -> None:
        # the normalisation step of this LayerNorm, before its learned scale and shift, per token
        x = x.detach().float()
        x_hat = (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, keepdim=True, unbiased=False) + module.eps)
        flat = x_hat.reshape(-1, x_hat.size(-1))  # (tokens, C)
        normalised[id(module)] = (flat.mean(-1).tolist(), flat.var(-1, unbiased=False).tolist())

    def as_is(name: str) -> Callable[[torch.Tensor], None]:
        return lambda x: record(name, x)

    def layernorm(name: str, ln: LayerNorm) -> Callable[[torch.Tensor], None]:
        def stage(x: torch.Tensor) -> None:  # its output, from the stream it reads, by the model's own LayerNorm
            ln_input(ln, x)
            record(name, ln(x), ln)
        return stage

    t = model.transformer

    def embeddings(x: torch.Tensor) -> None:
        record("embed.tok", t.wte.weight[idx[0]][None])  # (1, T, C): the rows the pass looked up
        record("embed.pos", t.wpe.weight[: x.size(1)][None])  # (1, T, C)
        record("embed.sum", x)  # h.0.resid_pre: tok + pos (dropout is off in eval)

    # hook point -> the stages read there, in forward order
    stages: dict[str, list[Callable[[torch.Tensor], None]]] = defaultdict(list)
    stages["h.0.resid_pre"].append(embeddings)
    for i in chosen:
        block = t.h[i]
        stages[f"h.{i}.resid_pre"].append(layernorm(f"h.{i}.ln_1", block.ln_1))
        stages[f"h.{i}.attn.out"].append(as_is(f"h.{i}.attn"))
        stages[f"h.{i}.resid_mid"] += [as_is(f"h.{i}.resid_mid"), layernorm(f"h.{i}.ln_2", block.ln_2)]
        stages[f"h.{i}.mlp.pre"].append(as_is(f"h.{i}.mlp.fc"))
        stages[f"h.{i}.mlp.post"].append(as_is(f"h.{i}.mlp.act"))
        stages[f"h.{i}.mlp.out"].append(as_is(f"h.{i}.mlp"))
        stages[f"h.{i}.resid_post"].append(as_is(f"h.{i}.resid_out"))
    stages[f"h.{cfg.n_layer - 1}.resid_post"].append(lambda x: ln_input(t.ln_f, x))  # what ln_f normalises
    stages["ln_f.out"].append(lambda x: record("ln_f", x, t.ln_f))

    def run_stages(fns: list[Callable[[torch.Tensor], None]]):
        def hook(x: torch.Tensor, name: str) -> None:
            for fn in fns:
                fn(x)
        return hook

    was_training, was_explicit = model.training, model.explicit
    try:
        model.eval()
        model.explicit = explicit
        with model.hooks({point: run_stages(fns) for point, fns in stages.items()}):
            logits = model(idx)  # (1, T, V)
    finally:
        model.train(was_training)
        model.explicit = was_explicit
    record("logits", logits)

    probs = torch.softmax(logits[0, -1].float(), dim=-1)  # (V,)
    top = torch.topk(probs, min(top_k, probs.numel()))
    top_ids = top.indices.tolist()
    top_next = [(i, text, float(p)) for i, text, p in zip(top_ids, token_texts(tokenizer, top_ids), top.values)]
    return Trace(ids=ids, tokens=token_texts(tokenizer, ids), points=points, logits=logits, top_next=top_next,
                 layers=chosen, n_layer=cfg.n_layer)


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------


def render_trace(tr: Trace, max_tokens: int = 24) -> str:
    """The walk as a table: stage, shape, what it did, statistics; then the next-token candidates."""
    out = []
    toks = " ".join(f"{visible(t)}" for t in tr.tokens[:max_tokens]) + (" ..." if len(tr.tokens) > max_tokens else "")
    out.append(f"{len(tr.ids)} tokens: {toks}")
    out.append(f"ids: {tr.ids[:max_tokens]}{' ...' if len(tr.ids) > max_tokens else ''}")
    layers = "all layers" if len(tr.layers) == tr.n_layer else "layers " + ",".join(map(str, tr.layers))
    out.append(f"traced {layers} of {tr.n_layer}\n")
    header = ["point", "shape", "what it did", "mean", "std", "min", "max", "norm/token", "normalised per token"]
    rows = []
    for p in tr.points:
        normed = ""
        if p.ln_token_mean is not None:  # LayerNorm: each token's statistics before the learned scale and shift
            normed = f"|mean| <= {p.ln_mean_abs_max:.0e}, var {p.ln_var_mean:.3f}"
        rows.append([p.name, "(" + ", ".join(map(str, p.shape)) + ")", p.stage, f"{p.mean:+.4f}", f"{p.std:.4f}",
                     f"{p.min:+.3f}", f"{p.max:+.3f}", f"{p.token_norm:.3f}", normed])
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    right = {3, 4, 5, 6, 7}
    for r in [header] + rows:
        out.append("  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip())
        if r is header:
            out.append("  ".join("-" * w for w in widths))
    last = visible(tr.tokens[-1])
    out.append(f"\nnext token after {last!r}:")
    for i, tok, prob in tr.top_next:
        out.append(f"  {prob:8.3%}  {visible(tok)!r:<20} id {i}")
    return "\n".join(out) + "\n"


def plot_trace(tr: Trace, path: str | Path) -> Path:
    """A PNG: the residual stream's size through the network, and each stage's statistics by layer."""
    from matplotlib.figure import Figure  # the object API: no pyplot state, the user's backend untouched

    from .files import atomic_write

    path = Path(path)
    fig = Figure(figsize=(16, 4.8), layout="constrained")
    axes = fig.subplots(1, 3)
    # 1. residual stream: the embedding sum, then after each residual add (half steps for resid_mid)
    xs: list[float] = []
    ys: list[float] = []
    for p in tr.points:
        if p.name == "embed.sum":
            xs.append(0.0)
            ys.append(p.token_norm)
        elif p.kind in ("resid_mid", "resid_out") and p.layer is not None:
            xs.append(p.layer + (0.5 if p.kind == "resid_mid" else 1.0))
            ys.append(p.token_norm)
    ax = axes[0]
    ax.plot(xs, ys, color="tab:blue", lw=1.5)
    after_attn = [(x, y) for x, y in zip(xs, ys) if x % 1 == 0.5]
    after_mlp = [(x, y) for x, y in zip(xs, ys) if x % 1 == 0]
    ax.plot(*zip(*after_mlp), "s", color="tab:blue", label="embeddings / after the MLP add")
    if after_attn:
        ax.plot(*zip(*after_attn), "o", color="tab:orange", label="after the attention add")
    ax.legend(fontsize=8)
    ax.set_title("Residual stream: mean vector length per token")
    ax.set_xlabel("position in the network (block i: i + 0.5 after attention, i + 1 after the MLP)")
    ax.set_ylabel("‖x‖ per token")
    ax.grid(alpha=0.3)
    # 2 and 3: each stage's standard deviation and largest magnitude, by layer
    kinds = ["ln_1", "attn", "ln_2", "mlp.fc", "mlp.act", "mlp"]
    for ax, stat, title in ((axes[1], "std", "Standard deviation of each stage"),
                            (axes[2], "absmax", "Largest |value| of each stage")):
        for kind in kinds:
            pts = [p for p in tr.points if p.kind == kind]
            vals = [p.std if stat == "std" else max(abs(p.min), abs(p.max)) for p in pts]
            ax.plot([p.layer for p in pts], vals, marker="o", label=kind)
        ax.set_title(title)
        ax.set_xlabel("layer")
        ax.set_yscale("log")
        ax.grid(alpha=0.3, which="both")
    axes[2].legend(fontsize=8, loc="center left", bbox_to_anchor=(1.02, 0.5), title="stage")
    for ax in axes[1:]:
        ax.set_xticks(tr.layers if len(tr.layers) <= 24 else ax.get_xticks())
    text = "".join(tr.tokens)
    fig.suptitle(f"Trace of {len(tr.ids)} tokens: {text[:80]!r}{'...' if len(text) > 80 else ''}", fontsize=11)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    return path
