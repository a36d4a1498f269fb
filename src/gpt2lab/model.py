"""GPT-2, written from scratch in tensor operations.

Read this file top to bottom: GELU, LayerNorm, attention, the MLP, one Block, then the whole GPT2. Shapes:
    B batch, T new positions in this call, P positions already in the KV cache, S = P + T,
    C n_embd, H n_head, D head_dim = C / H, V vocab_size, L n_layer.

Two paths compute the same function, chosen once per model (``model.explicit``):
  * the fused path (default) hands attention to ``F.scaled_dot_product_attention`` (flash kernels on
    GPU), LayerNorm to ``F.layer_norm`` and GELU to ``F.gelu(approximate="tanh")``;
  * the explicit path (``model.explicit = True``) writes every formula out.
The tests hold the two equal, and both equal to Hugging Face transformers' GPT-2.

Hook points. Every activation worth looking at passes through ``self.hook(name, x)``, which costs
nothing unless something is registered there (``gpt2lab.hooks``: ``model.run_with_cache``,
``with model.hooks({...})``). The names, for each layer i, in forward order:

    h.{i}.resid_pre     (B, T, C)     the residual stream entering block i
    h.{i}.ln_1.scale    (B, T, 1)     LayerNorm's sqrt(var + eps) of that stream
    h.{i}.attn.q|k|v    (B, H, T, D)  queries, keys, values (k and v: the new positions only)
    h.{i}.attn.scores   (B, H, T, S)  q kᵀ / sqrt(D), masked, before softmax
    h.{i}.attn.probs    (B, H, T, S)  softmax of the scores: each row sums to 1
    h.{i}.attn.z        (B, H, T, D)  each head's weighted values, before c_proj mixes the heads
    h.{i}.attn.out      (B, T, C)     what attention adds to the stream
    h.{i}.resid_mid     (B, T, C)     the stream after that addition
    h.{i}.ln_2.scale    (B, T, 1)
    h.{i}.mlp.pre       (B, T, 4C)    c_fc's output, before GELU
    h.{i}.mlp.post      (B, T, 4C)    after GELU
    h.{i}.mlp.out       (B, T, C)     what the MLP adds to the stream
    h.{i}.resid_post    (B, T, C)     the stream leaving block i (= h.{i+1}.resid_pre)
then ``ln_f.scale`` (B, T, 1) and ``ln_f.out`` (B, T, C), the final LayerNorm's output that the LM
head reads (T = 1 with ``last_logits_only``). Hooking ``attn.scores`` or ``attn.probs`` makes that
layer's attention explicit for the call, a LayerNorm's ``scale`` likewise: the fused kernels never
materialise them.
"""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING, Protocol, cast

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import hooks as _hooks
from . import kernels
from .config import GPT2Config
from .hooks import Hooked, HookPoints

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping, Sequence

    from .hooks import HookFn, Names

    class Body(Protocol):  # what GPT2.transformer holds (an nn.ModuleDict), spelled out for type checkers
        wte: nn.Embedding
        wpe: nn.Embedding
        drop: nn.Dropout
        h: Sequence[Block]
        ln_f: LayerNorm

# the per-layer hook points, in forward order (names and shapes: the module docstring)
LAYER_POINTS = (
    "resid_pre", "ln_1.scale", "attn.q", "attn.k", "attn.v", "attn.scores", "attn.probs", "attn.z", "attn.out",
    "resid_mid", "ln_2.scale", "mlp.pre", "mlp.post", "mlp.out", "resid_post",
)
FINAL_POINTS = ("ln_f.scale", "ln_f.out")


# ---------------------------------------------------------------------------------------------
# Activation
# ---------------------------------------------------------------------------------------------


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    """GPT-2's GELU: the tanh approximation of x * Phi(x), as in the original TensorFlow code.

    nanoGPT uses the exact erf form (``nn.GELU()``), which differs by up to ~1e-3 and so breaks
    exact parity with the released weights; this is the one GPT-2 was trained with.
    """
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


def gelu_exact(x: torch.Tensor) -> torch.Tensor:
    """The exact GELU, x * Phi(x) with Phi the standard normal CDF."""
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


# ---------------------------------------------------------------------------------------------
# LayerNorm
# ---------------------------------------------------------------------------------------------


class LayerNorm(Hooked):
    """Normalise each position's vector to mean 0 and variance 1, then scale and shift.

    y = (x - mean(x)) / sqrt(var(x) + eps) * weight + bias, statistics over the last axis only,
    variance without Bessel's correction (as TensorFlow and ``nn.LayerNorm`` compute it).
    """

    def __init__(self, n_embd: int, eps: float = 1e-5, bias: bool = True) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(n_embd))
        self.bias = nn.Parameter(torch.zeros(n_embd)) if bias else None

    def extra_repr(self) -> str:
        return f"({self.weight.numel()},), eps={self.eps}, bias={self.bias is not None}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.points.explicit or self.hooked("scale")):
            return F.layer_norm(x, self.weight.shape, self.weight, self.bias, self.eps)
        mean = x.mean(dim=-1, keepdim=True)  # (B, T, 1)
        var = x.var(dim=-1, keepdim=True, unbiased=False)  # (B, T, 1)
        scale = self.hook("scale", torch.sqrt(var + self.eps))  # (B, T, 1)
        x_hat = (x - mean) / scale  # (B, T, C), each row mean 0, variance 1
        y = x_hat * self.weight  # (B, T, C)
        return y + self.bias if self.bias is not None else y


# ---------------------------------------------------------------------------------------------
# Attention
# ---------------------------------------------------------------------------------------------


def attention_scores(q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """q kᵀ / sqrt(D) (B, H, T, S), masked: how much each query matches each key it may see.

    ``mask`` is additive (B or 1, 1, T, S): 0 where a query may look, a very negative number where it
    may not; ``None`` means plain causal attention with S == T (or T == 1, which sees every key).
    Blocked entries hold ``finfo.min`` as in transformers, so softmax gives them exactly 0.
    """
    T, S = q.size(-2), k.size(-2)
    scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(q.size(-1)))  # (B, H, T, S)
    if mask is not None:
        return scores + mask
    if T == 1:
        return scores
    # query i may look at keys 0..i: everything above the diagonal is the future
    future = torch.ones(T, S, dtype=torch.bool, device=q.device).triu(diagonal=1)  # (T, S)
    return scores.masked_fill(future, torch.finfo(scores.dtype).min)


def next_token_loss(logits: torch.Tensor, targets: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Mean cross-entropy of logits (B, T, V') against targets (B, T), over the real vocabulary.

    V' >= vocab_size: a training run may pad the vocabulary (50257 -> 50304, faster products); the
    padding columns take no part in the softmax. Targets of -100 (a prompt's tokens in instruction
    data) take no part either: the mean is over the others, and 0 when there are none (not 0/0).
    """
    logits = logits[..., :vocab_size].float()  # (B, T, V): the softmax in fp32 whatever the products ran in
    counted = (targets != -100).sum().clamp(min=1)  # ()
    return F.cross_entropy(logits.reshape(-1, vocab_size), targets.reshape(-1), ignore_index=-100, reduction="sum") / counted


class KVCache:
    """The keys and values of every layer for positions already seen, preallocated once.

    Each decoding step then costs one new position of work instead of re-running the whole
    prefix. Storage is ``(L, B, H, max_len, D)`` for keys and the same for values; ``pos`` is how
    many positions are filled. ``GPT2.forward`` writes new positions in place and moves ``pos``.
    """

    def __init__(self, config: GPT2Config, batch_size: int, max_len: int | None = None, *,
                 dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> None:
        self.max_len = max_len or config.block_size
        shape = (config.n_layer, batch_size, config.n_head, self.max_len, config.head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)  # (L, B, H, max_len, D)
        self.v = torch.zeros(shape, dtype=dtype, device=device)  # (L, B, H, max_len, D)
        self.pos = 0

    @property
    def batch_size(self) -> int:
        return self.k.size(1)

    def update(self, layer: int, k_new: torch.Tensor, v_new: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store (B, H, T, D) new keys/values of ``layer`` after the filled ones; return all (B, H, P+T, D)."""
        end = self.pos + k_new.size(-2)
        self.k[layer, :, :, self.pos : end] = k_new
        self.v[layer, :, :, self.pos : end] = v_new
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]

    def advance(self, n: int) -> None:
        self.pos += n

    def reset(self) -> None:
        self.pos = 0

    def crop(self, n: int) -> None:
        """Forget every position from ``n`` on (keep the first ``n``)."""
        self.pos = min(self.pos, n)


class Linear(nn.Linear):
    """y = x Wᵀ + b, (..., in) -> (..., out): ``nn.Linear`` with two choices about speed.

    * ``conv1d=True`` keeps the (out, in) weight in memory as the transpose of an (in, out) matrix:
      the order OpenAI's Conv1D (and every GPT-2 checkpoint) uses, so a checkpoint is read straight in
      and one token's ``x @ Wᵀ`` walks the weight row by row (~10% faster decoding with the BLAS).
    * Inside ``gpt2lab.kernels.packed(model)`` (CPU inference enters it where it pays), products that
      need no gradient use a oneDNN-packed copy of W: the same numbers to float rounding, 2-3x faster.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, conv1d: bool = False) -> None:
        super().__init__(in_features, out_features, bias=bias)
        if conv1d:
            self.weight = nn.Parameter(self.weight.detach().t().contiguous().t())  # (out, in), strides (1, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return kernels.linear(self, x)  # F.linear(x, W, b), or its packed twin


class CausalSelfAttention(Hooked):
    """Multi-head self-attention where each position sees itself and the positions before it:
    softmax(q kᵀ / sqrt(D) + mask) v on every head at once, then c_proj mixes the heads."""

    def __init__(self, config: GPT2Config, layer: int = 0) -> None:
        super().__init__()
        self.layer = layer  # which slot of the KV cache is ours
        self.n_head = config.n_head
        self.head_dim = config.head_dim
        self.dropout_p = config.attn_pdrop
        # one matrix makes queries, keys and values at once: (C) -> (3C), as GPT-2's "c_attn"
        self.c_attn = Linear(config.n_embd, 3 * config.n_embd, bias=config.qkv_bias, conv1d=True)
        self.c_proj = Linear(config.n_embd, config.n_embd, bias=config.bias, conv1d=True)  # heads back to the stream
        self.resid_dropout = nn.Dropout(config.resid_pdrop)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, kv_cache: KVCache | None = None) -> torch.Tensor:
        B, T, C = x.shape
        H, D = self.n_head, self.head_dim
        q, k, v = self.c_attn(x).split(C, dim=2)  # 3 x (B, T, C)
        # split the width into H heads of D and put heads before time: (B, T, C) -> (B, H, T, D)
        q = self.hook("q", q.view(B, T, H, D).transpose(1, 2))  # (B, H, T, D)
        k = self.hook("k", k.view(B, T, H, D).transpose(1, 2))  # (B, H, T, D)
        v = self.hook("v", v.view(B, T, H, D).transpose(1, 2))  # (B, H, T, D)
        if kv_cache is not None:
            k, v = kv_cache.update(self.layer, k, v)  # (B, H, S, D): the cached positions, then these
        dropout_p = self.dropout_p if self.training else 0.0
        if self.points.explicit or self.hooked("scores") or self.hooked("probs"):
            scores = self.hook("scores", attention_scores(q, k, mask))  # (B, H, T, S)
            probs = self.hook("probs", F.softmax(scores, dim=-1))  # (B, H, T, S), each row sums to 1
            z = F.dropout(probs, p=dropout_p, training=True) if dropout_p > 0.0 else probs
            z = z @ v  # (B, H, T, D): for each query, a weighted average of the values
        else:
            z = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, is_causal=mask is None and T > 1)
        z = self.hook("z", z)  # (B, H, T, D)
        y = z.transpose(1, 2).reshape(B, T, C)  # (B, T, C): heads side by side again
        return self.hook("out", self.resid_dropout(self.c_proj(y)))  # (B, T, C)


# ---------------------------------------------------------------------------------------------
# MLP and Block
# ---------------------------------------------------------------------------------------------


class MLP(Hooked):
    """Position-wise feed-forward: widen (C -> 4C), GELU, narrow back (4C -> C)."""

    def __init__(self, config: GPT2Config) -> None:
        super().__init__()
        self.c_fc = Linear(config.n_embd, config.mlp_dim, bias=config.bias, conv1d=True)
        self.c_proj = Linear(config.mlp_dim, config.n_embd, bias=config.bias, conv1d=True)
        self.dropout = nn.Dropout(config.resid_pdrop)
        self.activation = config.activation

    def act(self, h: torch.Tensor) -> torch.Tensor:
        explicit = self.points.explicit
        if self.activation == "gelu":
            return gelu_exact(h) if explicit else F.gelu(h)
        return gelu_tanh(h) if explicit else F.gelu(h, approximate="tanh")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.hook("pre", self.c_fc(x))  # (B, T, 4C)
        h = self.hook("post", self.act(h))  # (B, T, 4C)
        return self.hook("out", self.dropout(self.c_proj(h)))  # (B, T, C)


class Block(Hooked):
    """One transformer block, pre-LayerNorm as in GPT-2:
    x = x + attn(ln_1(x));  x = x + mlp(ln_2(x)).
    The residual additions give gradients a straight path through all L blocks.
    """

    def __init__(self, config: GPT2Config, layer: int) -> None:
        super().__init__()
        self.ln_1 = LayerNorm(config.n_embd, config.layer_norm_epsilon, config.bias)
        self.attn = CausalSelfAttention(config, layer)
        self.ln_2 = LayerNorm(config.n_embd, config.layer_norm_epsilon, config.bias)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, kv_cache: KVCache | None = None) -> torch.Tensor:
        x = self.hook("resid_pre", x)  # (B, T, C)
        x = self.hook("resid_mid", x + self.attn(self.ln_1(x), mask, kv_cache))  # (B, T, C)
        return self.hook("resid_post", x + self.mlp(self.ln_2(x)))  # (B, T, C)


# ---------------------------------------------------------------------------------------------
# The whole network
# ---------------------------------------------------------------------------------------------


def attention_mask_bias(T: int, past: int, attention_mask: torch.Tensor | None, *,
                        dtype: torch.dtype, device: torch.device) -> torch.Tensor | None:
    """The additive mask for T new queries after ``past`` cached positions.

    Query i (absolute position past + i) may see key j when j <= past + i and, if an
    ``attention_mask`` (B, past + T) of 1 = real token / 0 = padding is given, when key j is real.
    Blocked entries get ``finfo(dtype).min`` as in transformers (not -inf: a row with every key
    blocked, a padding query, then stays finite instead of turning into NaN).

    Returns ``None`` when plain causal attention says it all (no cache offset, no padding).
    """
    S = past + T
    if attention_mask is None and (past == 0 or T == 1):
        return None
    keys = torch.arange(S, device=device)  # (S,)
    queries = torch.arange(past, S, device=device)  # (T,)
    allowed = keys[None, :] <= queries[:, None]  # (T, S)
    allowed = allowed[None, None]  # (1, 1, T, S)
    if attention_mask is not None:
        if attention_mask.shape[-1] != S:
            raise ValueError(f"attention_mask covers {attention_mask.shape[-1]} positions, expected past + T = {S}")
        allowed = allowed & attention_mask[:, None, None, :].bool()  # (B, 1, T, S)
    bias = torch.zeros(allowed.shape, dtype=dtype, device=device)
    return bias.masked_fill(~allowed, torch.finfo(dtype).min)


class GPT2(Hooked):
    """The GPT-2 language model: ids (B, T) -> next-token logits (B, T, V).

    Module names follow OpenAI's and Hugging Face's (``transformer.wte``, ``transformer.h.0.attn.c_attn``,
    ...) so the checkpoint key table in ``weights.py`` is nearly the identity.
    """

    def __init__(self, config: GPT2Config) -> None:
        super().__init__()
        self.config = config
        device = torch.empty(()).device  # where it is built: the CPU, or a `with torch.device(...)` block's
        # the modules are made on the meta device (shapes only) and then given memory: each layer's own
        # random draw would be thrown away by reset_parameters, and it took half the time (gpt2-medium:
        # 4.0 s to build before, 2.0 s now). _weight: nn.Embedding's own draw, even on meta, imports
        # torch._dynamo (a second of from_pretrained's start-up)
        with torch.device("meta"):
            self.transformer: Body = cast("Body", nn.ModuleDict(dict(
                # token (V, C) and position (block_size, C) embeddings
                wte=nn.Embedding(config.vocab_size, config.n_embd, _weight=torch.empty(config.vocab_size, config.n_embd)),
                wpe=nn.Embedding(config.block_size, config.n_embd, _weight=torch.empty(config.block_size, config.n_embd)),
                drop=nn.Dropout(config.embd_pdrop),
                h=nn.ModuleList(Block(config, i) for i in range(config.n_layer)),
                ln_f=LayerNorm(config.n_embd, config.layer_norm_epsilon, config.bias),
            )))
            self.lm_head = Linear(config.n_embd, config.vocab_size, bias=False)  # (C) -> (V)
        if device.type != "meta":  # (weights.from_pretrained builds on meta and fills the shapes itself)
            self.to_empty(device=device)  # memory in each weight's own layout (Conv1D order stays)
        self.tie_weights()
        self.reset_parameters()
        # one registry of hook functions for the whole model; each module's names start with its path
        self.points = HookPoints()
        for name, module in self.named_modules():
            if isinstance(module, Hooked):
                module.points, module.prefix = self.points, name.removeprefix("transformer.") + "." if name else ""

    def tie_weights(self) -> None:
        """Make the LM head *the same tensor* as the token embedding (GPT-2 ties them).

        Reading a token in and writing a token out then share one (V, C) matrix: 38.6M of the
        124M parameters of ``gpt2``. Safe to call again after weights are moved or replaced.
        """
        if self.config.tie_word_embeddings:
            self.lm_head.weight = self.transformer.wte.weight

    def reset_parameters(self) -> None:
        """GPT-2's initialisation: N(0, 0.02) for every matrix and embedding, zero biases, LayerNorm
        at identity, and the two projections that write into the residual stream (``c_proj``)
        scaled down by 1/sqrt(2 L), so the stream's variance does not grow with depth."""
        if self.transformer.wte.weight.is_meta:
            return  # shapes only (weights.from_pretrained fills them): PyTorch draws on meta slowly, for nothing
        std = self.config.initializer_range
        drawn: set[int] = set()
        for name, module in self.named_modules():
            if isinstance(module, (nn.Linear, nn.Embedding)) and id(module.weight) not in drawn:
                drawn.add(id(module.weight))  # the tied LM head is the token embedding: drawn once
                proj = name.endswith("c_proj")
                w = module.weight
                # drawn in (out, in) order and copied, so a seed gives the same model whatever the memory layout
                draw = torch.empty(w.shape, dtype=w.dtype, device=w.device)
                nn.init.normal_(draw, mean=0.0, std=std / math.sqrt(2 * self.config.n_layer) if proj else std)
                with torch.no_grad():
                    w.copy_(draw)
                if isinstance(module, nn.Linear) and module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, LayerNorm):
                nn.init.ones_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    # -- convenience ---------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return self.transformer.wte.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.transformer.wte.weight.dtype

    def num_parameters(self, non_embedding: bool = False) -> int:
        """Number of distinct parameters (a tied matrix counts once). With ``non_embedding``,
        leave out the position embedding, and the token embedding unless it is untied from the head."""
        n = sum(p.numel() for p in self.parameters())  # parameters() yields a shared tensor once
        if non_embedding:
            n -= self.transformer.wpe.weight.numel()
        return n

    @property
    def explicit(self) -> bool:  # written-out formulas (True) or PyTorch's fused kernels (False, default)
        return self.points.explicit

    @explicit.setter
    def explicit(self, value: bool) -> None:
        self.points.explicit = bool(value)

    def new_kv_cache(self, batch_size: int, max_len: int | None = None) -> KVCache:
        """An empty KV cache on this model's device and dtype."""
        return KVCache(self.config, batch_size, max_len, dtype=self.dtype, device=self.device)

    # -- forward -------------------------------------------------------------------------------

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, *, kv_cache: KVCache | None = None,
                attention_mask: torch.Tensor | None = None, position_ids: torch.Tensor | None = None,
                last_logits_only: bool = False, head: bool = True) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Next-token logits for every position.

        Args:
            idx: token ids (B, T).
            targets: the ids that should come next, (B, T) (``idx`` shifted left by one); positions
                with -100 are ignored. When given, returns ``(logits, loss)``.
            kv_cache: continue after the ``kv_cache.pos`` positions it holds, and store these.
            attention_mask: (B, P + T), 1 for real tokens and 0 for padding (batched prompts of
                different lengths, padded on the left).
            position_ids: (B, T) positions to embed; by default P, P+1, ... P+T-1.
            last_logits_only: compute logits only for the last position, (B, 1, V): what decoding
                needs, and it skips the largest matrix product of a long prompt.
            head: ``False`` stops before the LM head and returns the final LayerNorm's output
                (B, T, C): for a loss that applies the head itself, a chunk at a time
                (``train.loss.chunked_lm_loss``), or a classifier's own head.

        Returns:
            logits (B, T, V), or ``(logits, loss)`` when ``targets`` is given.
        """
        B, T = idx.shape
        past = kv_cache.pos if kv_cache is not None else 0
        if past + T > self.config.block_size and position_ids is None:
            raise ValueError(f"sequence of {past + T} positions exceeds the context length block_size="
                             f"{self.config.block_size}; crop the input to its last block_size tokens")
        if kv_cache is not None and past + T > kv_cache.max_len:
            raise ValueError(f"KV cache holds {kv_cache.max_len} positions; {past} used, {T} more do not fit")
        if position_ids is None:
            position_ids = torch.arange(past, past + T, device=idx.device).unsqueeze(0)  # (1, T)

        tok = self.transformer.wte(idx)  # (B, T, C): what each token is
        pos = self.transformer.wpe(position_ids)  # (B or 1, T, C): where it is
        x = self.transformer.drop(tok + pos)  # (B, T, C)

        mask = attention_mask_bias(T, past, attention_mask, dtype=x.dtype, device=x.device)
        for block in self.transformer.h:
            x = block(x, mask, kv_cache)  # (B, T, C)
        if kv_cache is not None:
            kv_cache.advance(T)

        if last_logits_only:
            x = x[:, -1:, :]  # (B, 1, C)
        x = self.hook("ln_f.out", self.transformer.ln_f(x))  # (B, T, C)
        if not head:
            return x
        logits = self.lm_head(x)  # (B, T, V): a score for every token of the vocabulary
        if targets is None:
            return logits
        return logits, next_token_loss(logits, targets, self.config.vocab_size)

    # -- looking inside (implemented in hooks.py) --------------------------------------------------

    def hook_names(self) -> list[str]:
        """Every hook point of this model, in forward order (the names: the module docstring)."""
        return [f"h.{i}.{p}" for i in range(self.config.n_layer) for p in LAYER_POINTS] + list(FINAL_POINTS)

    def hooks(self, fns: Mapping[str, HookFn]):
        """``with model.hooks({name: fn}):`` runs ``fn(tensor, name)`` at each point; a returned tensor
        replaces the activation. Removed when the block ends, after an exception too."""
        return _hooks.hooks(self, fns)

    def run_with_cache(self, idx: torch.Tensor, names: Names = None, *, device: torch.device | str | None = None, **kwargs):
        """``logits, cache = model.run_with_cache(idx, names)``: the activations asked for (default:
        all), name -> tensor, on ``device`` (default: the model's). ``kwargs`` go to ``forward``."""
        return _hooks.run_with_cache(self, idx, names, device=device, **kwargs)

    # -- generation ----------------------------------------------------------------------------

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, max_new_tokens: int, **kwargs) -> torch.Tensor | Iterator[torch.Tensor]:
        """Continue ``idx`` (B, T) by ``max_new_tokens`` tokens; see ``gpt2lab.generate.generate``.

        ``temperature=0`` is greedy (argmax); returns (B, T + max_new_tokens).
        """
        from .generate import generate

        return generate(self, idx, max_new_tokens, **kwargs)

    # -- checkpoints (implemented in weights.py) ---------------------------------------------------

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, dtype: torch.dtype | str | None = None,
                        device: torch.device | str | None = None) -> GPT2:
        """Load a Hugging Face GPT-2: a local directory or a hub id such as ``"gpt2"``."""
        from .weights import from_pretrained

        return from_pretrained(name_or_path, dtype=dtype, device=device)

    def save_pretrained(self, directory: str | os.PathLike, max_shard_size: int | str | None = None) -> None:
        """Write ``config.json`` + ``model.safetensors`` that transformers' ``GPT2LMHeadModel`` loads."""
        from .weights import save_pretrained

        save_pretrained(self, directory, max_shard_size=max_shard_size)
