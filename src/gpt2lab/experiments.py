"""Two small experiments that explain design choices of GPT-2, with numbers and plots.

``residuals``: why every block adds to a residual stream instead of replacing it. A deep stack of
layers, with and without shortcut connections, one backward pass, and the mean gradient magnitude
per layer: without shortcuts the early layers' gradients vanish. The same on GPT-2's own blocks,
with the two residual additions removed.

``activations``: GELU (GPT-2's tanh approximation and the exact erf form) against ReLU, and their
derivatives: GELU is smooth, lets a little negative signal and gradient through, and is not zero
for negative inputs the way ReLU is.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from .errors import InputError
from .files import atomic_write
from .model import GPT2, gelu_exact, gelu_tanh

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _figure(width_in: float, height_in: float, **subplots: Any) -> tuple[Figure, Any]:
    """A ``Figure`` of its own and its axes: no pyplot, so no backend switch and no global state
    (a notebook's own plots are left alone)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), dpi=100, layout="constrained")
    return fig, fig.subplots(**subplots)


def _save(fig: Figure, path: Path) -> Path:
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))


# ---------------------------------------------------------------------------------------------
# Residual connections
# ---------------------------------------------------------------------------------------------


class DeepStack(nn.Module):
    """``depth`` layers of Linear + GELU of the same width, then a Linear to one output.

    With ``shortcut=True`` each layer adds to its input (x = x + f(x)), as GPT-2's blocks do;
    otherwise it replaces it (x = f(x)), as a plain deep network does.
    """

    def __init__(self, depth: int, width: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(width, width) for _ in range(depth))
        self.out = nn.Linear(width, 1)

    def forward(self, x: torch.Tensor, shortcut: bool) -> torch.Tensor:
        for layer in self.layers:
            y = gelu_tanh(layer(x))  # (N, width)
            x = x + y if shortcut else y
        return self.out(x)  # (N, 1)


def gpt2_forward_without_shortcuts(model: GPT2, idx: torch.Tensor) -> torch.Tensor:
    """GPT-2's forward pass with both residual additions of every block removed:
    x = attn(ln_1(x)); x = mlp(ln_2(x)) instead of x = x + ...  Returns logits (B, T, V)."""
    T = idx.size(1)
    parts: Any = model.transformer  # a ModuleDict: wte, wpe, drop, h, ln_f
    x = parts.drop(parts.wte(idx) + parts.wpe(torch.arange(T, device=idx.device)))  # (B, T, C)
    for block in parts.h:
        x = block.attn(block.ln_1(x), None)  # (B, T, C): the stream is replaced, not added to
        x = block.mlp(block.ln_2(x))  # (B, T, C)
    return model.lm_head(parts.ln_f(x))  # (B, T, V)


@dataclass
class ResidualResult:
    """Mean |gradient| of each layer's weights, with and without shortcuts."""

    depth: int
    width: int
    with_shortcuts: list[float]
    without_shortcuts: list[float]
    gpt2_with: list[float] | None = None  # per block of the GPT-2 model, all its parameters
    gpt2_without: list[float] | None = None
    gpt2_name: str = ""

    def to_text(self) -> str:
        out = [f"Deep stack: {self.depth} layers of Linear({self.width}, {self.width}) + GELU, one backward pass (MSE loss).",
               "mean |gradient| of each layer's weights:",
               f"  {'layer':>5}  {'with shortcuts':>15}  {'without':>12}  {'ratio':>10}"]
        for i, (a, b) in enumerate(zip(self.with_shortcuts, self.without_shortcuts)):
            out.append(f"  {i:>5}  {a:>15.3e}  {b:>12.3e}  {a / b if b else float('inf'):>10.1f}x")
        out.append(f"  layer 0 gets {self.with_shortcuts[0] / self.without_shortcuts[0]:.0f}x more gradient with shortcuts; "
                   f"without them it gets {self.without_shortcuts[0] / self.without_shortcuts[-1]:.2g}x what the last layer gets.")
        if self.gpt2_with is not None and self.gpt2_without is not None:
            out.append(f"\nGPT-2 blocks ({self.gpt2_name}), cross-entropy on random tokens, mean |gradient| per block:")
            out.append(f"  {'block':>5}  {'with shortcuts':>15}  {'ablated':>12}")
            for i, (a, b) in enumerate(zip(self.gpt2_with, self.gpt2_without)):
                out.append(f"  {i:>5}  {a:>15.3e}  {b:>12.3e}")
            out.append(f"  first/last block gradient: {self.gpt2_with[0] / self.gpt2_with[-1]:.2g} with shortcuts, "
                       f"{self.gpt2_without[0] / self.gpt2_without[-1]:.2g} with them removed.")
            out.append("  (GPT-2 puts a LayerNorm in front of every sub-layer, which rescales the signal at each block, "
                       "so its ablation need not collapse like the plain stack above: compare the two columns.)")
        return "\n".join(out) + "\n"


def _grad_per_layer(modules, loss: torch.Tensor) -> list[float]:
    loss.backward()
    means = []
    for m in modules:
        grads = [p.grad.abs().mean() for p in m.parameters() if p.grad is not None and p.dim() > 1]
        means.append(float(torch.stack(grads).mean()) if grads else 0.0)
    return means


def residual_experiment(
    depth: int = 12,
    width: int = 32,
    *,
    model: GPT2 | None = None,
    model_name: str = "",
    seq_len: int = 64,
    seed: int = 0,
) -> ResidualResult:
    """Gradients per layer of a deep stack with and without shortcuts (same weights, same data),
    and, if a GPT-2 ``model`` is given, of its blocks with and without their residual additions."""
    if depth < 2 or width < 1:
        raise InputError(f"depth must be at least 2 and width at least 1, got depth={depth}, width={width}")
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = DeepStack(depth, width)  # PyTorch's default initialisation, as a plain network would have
    x = torch.randn(64, width, generator=gen)
    target = torch.randn(64, 1, generator=gen)
    results = []
    for shortcut in (True, False):
        net.zero_grad(set_to_none=True)
        results.append(_grad_per_layer(net.layers, F.mse_loss(net(x, shortcut), target)))
    result = ResidualResult(depth, width, results[0], results[1])
    if model is not None:
        was_training = model.training
        model.eval()  # no dropout: both passes see the same function apart from the shortcuts
        T = min(seq_len, model.config.block_size)
        idx = torch.randint(0, model.config.vocab_size, (2, T + 1), generator=gen).to(model.device)
        inputs, targets = idx[:, :-1], idx[:, 1:]
        grads = []
        try:
            for forward in (lambda: model(inputs), lambda: gpt2_forward_without_shortcuts(model, inputs)):
                model.zero_grad(set_to_none=True)
                logits = forward()
                loss = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1))
                grads.append(_grad_per_layer(model.transformer.h, loss))
        finally:
            model.zero_grad(set_to_none=True)
            model.train(was_training)
        result.gpt2_with, result.gpt2_without, result.gpt2_name = grads[0], grads[1], model_name or "GPT-2"
    return result


def plot_residuals(result: ResidualResult, path: str | Path) -> Path:
    n = 2 if result.gpt2_with is not None else 1
    fig, axes = _figure(6.5 * n, 4.6, nrows=1, ncols=n, squeeze=False)
    ax = axes[0][0]
    layers = range(result.depth)
    ax.semilogy(layers, result.with_shortcuts, "o-", label="with shortcuts: x = x + f(x)")
    ax.semilogy(layers, result.without_shortcuts, "s-", label="without: x = f(x)")
    ax.set_title(f"Deep stack of {result.depth} Linear+GELU layers: gradient per layer")
    ax.set_xlabel("layer (0 = closest to the input)")
    ax.set_ylabel("mean |gradient| of the weights (log)")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    if result.gpt2_with is not None:
        ax = axes[0][1]
        blocks = range(len(result.gpt2_with))
        ax.semilogy(blocks, result.gpt2_with, "o-", label="GPT-2 blocks (residual adds)")
        ax.semilogy(blocks, result.gpt2_without, "s-", label="residual adds removed")
        ax.set_title(f"{result.gpt2_name}: gradient per block")
        ax.set_xlabel("block")
        ax.set_ylabel("mean |gradient| of the block's matrices (log)")
        ax.grid(alpha=0.3, which="both")
        ax.legend()
    return _save(fig, Path(path))


# ---------------------------------------------------------------------------------------------
# Activations
# ---------------------------------------------------------------------------------------------

ACTIVATIONS = {"GELU (tanh, GPT-2's)": gelu_tanh, "GELU (exact erf)": gelu_exact, "ReLU": torch.relu}


@dataclass
class ActivationResult:
    x: torch.Tensor  # (N,)
    values: dict[str, torch.Tensor]  # name -> f(x)
    derivatives: dict[str, torch.Tensor]  # name -> f'(x)

    def at(self, name: str, x: float, derivative: bool = False) -> float:
        i = int(torch.argmin((self.x - x).abs()))
        return float((self.derivatives if derivative else self.values)[name][i])

    def to_text(self) -> str:
        names = list(self.values)
        points = [-3.0, -2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0, 3.0]
        short = {"GELU (tanh, GPT-2's)": "gelu_tanh", "GELU (exact erf)": "gelu_exact", "ReLU": "relu"}
        head = f"{'x':>6}  " + "  ".join(f"{short[n]:>10}" for n in names) + "  " + "  ".join(f"{short[n] + chr(39):>11}" for n in names)
        out = ["Activation functions and their derivatives (') at a few points:", head]
        for x in points:
            out.append(f"{x:>6.2f}  " + "  ".join(f"{self.at(n, x):>10.5f}" for n in names) + "  "
                       + "  ".join(f"{self.at(n, x, True):>11.5f}" for n in names))
        diff = (self.values[names[0]] - self.values[names[1]]).abs()
        i = int(diff.argmax())
        xs_neg = self.x < 0
        out.append(f"\nGPT-2's tanh GELU differs from the exact GELU by at most {float(diff[i]):.2e} (at x = {float(self.x[i]):+.2f}).")
        g = self.values[names[0]]
        out.append(f"GELU's minimum is {float(g.min()):.4f} at x = {float(self.x[int(g.argmin())]):+.3f}: negative inputs give small "
                   f"negative outputs, and a gradient (min {float(self.derivatives[names[0]][xs_neg].min()):.3f}) where ReLU's is 0.")
        return "\n".join(out) + "\n"


def activation_experiment(lo: float = -4.0, hi: float = 4.0, n: int = 801) -> ActivationResult:
    """GELU (tanh and exact) and ReLU on [lo, hi], with derivatives from autograd."""
    x = lo + (hi - lo) * torch.arange(n, dtype=torch.float64) / (n - 1)  # (n,), hits 0 exactly for a symmetric range
    values, derivatives = {}, {}
    for name, fn in ACTIVATIONS.items():
        xg = x.clone().requires_grad_(True)
        y = fn(xg)
        (grad,) = torch.autograd.grad(y.sum(), xg)
        values[name], derivatives[name] = y.detach(), grad
    return ActivationResult(x, values, derivatives)


def plot_activations(result: ActivationResult, path: str | Path) -> Path:
    fig, (a, b, c) = _figure(16, 4.6, nrows=1, ncols=3, gridspec_kw={"width_ratios": [1, 1, 0.7]})
    styles = {"GELU (tanh, GPT-2's)": "-", "GELU (exact erf)": "--", "ReLU": ":"}
    names = list(result.values)
    c.plot(result.x, result.values[names[0]] - result.values[names[1]], color="tab:purple")
    c.set_title("GELU tanh approximation minus exact GELU")
    c.set_xlabel("x")
    c.axhline(0, color="grey", lw=0.6)
    c.grid(alpha=0.3)
    for name in result.values:
        a.plot(result.x, result.values[name], styles[name], label=name, lw=2)
        b.plot(result.x, result.derivatives[name], styles[name], label=name, lw=2)
    a.set_title("Activation f(x)")
    b.set_title("Derivative f'(x)")
    for ax in (a, b):
        ax.axhline(0, color="grey", lw=0.6)
        ax.axvline(0, color="grey", lw=0.6)
        ax.set_xlabel("x")
        ax.grid(alpha=0.3)
        ax.legend()
    return _save(fig, Path(path))
