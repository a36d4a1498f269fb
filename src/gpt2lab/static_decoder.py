"""A decode step of fixed shapes whose state lives on the device, for ``torch.compile`` with CUDA graphs.

The ordinary decode step (``model(token, kv_cache=cache)``) attends to a cache slice that grows by
one column a step, so its shapes change every step and a CUDA graph cannot be recorded once.
``StaticDecoder`` attends to a cache of fixed length with a mask, and keeps everything that changes
from step to step in its own buffers on the device: the token to feed, the cache column it goes to,
its position. A step reads them, writes the new key/value in place, and moves them on itself, so it
takes no argument at all: under ``torch.compile(mode="reduce-overhead")`` (what
``generate(..., compile=True)`` uses on a GPU) a step is one CUDA-graph replay, with nothing copied
from the host. It also picks the greedy token (the argmax, fed to the next step unless the loop
writes another) and notes non-finite logits, so a greedy call needs no other work per step.
``generate(..., static_cache=True)`` runs the same step uncompiled. It gives the ordinary step's tokens.

The cache is as long as the call needs, rounded up to a power of two (``static_cache_length``): a
short call attends ~2x its length, not the whole context, and only a few lengths are ever compiled.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
import torch.nn as nn

from .model import GPT2, KVCache
from .sampling import NO_STEP, note_nonfinite

SHORTEST_STATIC_CACHE = 64  # columns: below this a longer cache costs nothing worth another compiled graph


def static_cache_length(needed: int, block_size: int) -> int:
    """The static cache length for a call that holds ``needed`` tokens: the next power of two
    (at least ``SHORTEST_STATIC_CACHE``), and never more than the context.

    Each length is a graph to compile; powers of two keep them few (64, 128, ... 1024 for GPT-2)
    while a call attends at most about twice the columns it fills."""
    return min(block_size, max(SHORTEST_STATIC_CACHE, 1 << (needed - 1).bit_length()))


class _StaticWrite:
    """Stands in for a KVCache inside the blocks: writes the new key/value of each layer at a
    *tensor* column and returns that layer's whole cache, so no shape depends on how many columns
    are filled."""

    def __init__(self, k: list[torch.Tensor], v: list[torch.Tensor], write_pos: torch.Tensor) -> None:
        self.k, self.v, self.write_pos = k, v, write_pos

    def update(self, layer: int, k_new: torch.Tensor, v_new: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.k[layer].index_copy_(2, self.write_pos, k_new)  # (B, H, max_len, D), column write_pos
        self.v[layer].index_copy_(2, self.write_pos, v_new)
        return self.k[layer], self.v[layer]  # (B, H, max_len, D): masked below, not sliced


class StaticDecoder(nn.Module):
    """One decode step whose every tensor has the same shape at every step, and whose inputs are its
    own buffers.

    Buffers (registered so a compiler treats them as state it may update in place):

    * ``k{i}``, ``v{i}`` (B, H, max_len, D): layer i of the ``KVCache`` it was made with (the same
      memory, which the prefill fills). One tensor per layer, not the cache's (L, ...) tensor:
      ``torch.compile`` keeps a write into a whole buffer in place, while a write into a slice of one
      became a copy of that layer's cache every step.
    * ``key_valid`` (B, max_len): columns that hold real tokens (not left padding).
    * ``token`` (B, 1), ``write_pos`` (1,), ``position`` (B, 1): the token the next step feeds, the
      cache column it goes to, and its position id. A step advances them; ``prefilled`` sets them.
    * ``step`` (1,) and ``first_nonfinite`` (1,): which decoding step the next logits are for, and
      the first step whose logits held NaN or inf (``sampling.note_nonfinite``).

    Nothing depends on a Python integer that changes, so ``torch.compile(decoder,
    mode="reduce-overhead", fullgraph=True)`` records it once as a CUDA graph. On a CPU it computes
    what the ordinary cached step computes.
    """

    key_valid: torch.Tensor  # buffers, declared for the type checker (register_buffer sets them)
    columns: torch.Tensor
    token: torch.Tensor
    write_pos: torch.Tensor
    position: torch.Tensor
    step: torch.Tensor
    first_nonfinite: torch.Tensor

    def __init__(self, model: GPT2, cache: KVCache) -> None:
        super().__init__()
        self.model = model
        self.n_layer = cache.k.size(0)
        B, device = cache.batch_size, cache.k.device
        for i in range(self.n_layer):
            self.register_buffer(f"k{i}", cache.k[i], persistent=False)  # (B, H, max_len, D), the cache's memory
            self.register_buffer(f"v{i}", cache.v[i], persistent=False)
        self.register_buffer("key_valid", torch.ones(B, cache.max_len, dtype=torch.bool, device=device), persistent=False)
        self.register_buffer("columns", torch.arange(cache.max_len, device=device), persistent=False)
        self.register_buffer("token", torch.zeros(B, 1, dtype=torch.long, device=device), persistent=False)
        self.register_buffer("write_pos", torch.zeros(1, dtype=torch.long, device=device), persistent=False)
        self.register_buffer("position", torch.zeros(B, 1, dtype=torch.long, device=device), persistent=False)
        self.register_buffer("step", torch.zeros(1, dtype=torch.long, device=device), persistent=False)
        self.register_buffer("first_nonfinite", torch.full((1,), NO_STEP, dtype=torch.long, device=device), persistent=False)

    def set_padding(self, attention_mask: torch.Tensor | None) -> None:
        """Columns (B, max_len) that hold real tokens: the prompt's mask, then ones."""
        self.key_valid.fill_(True)
        if attention_mask is not None:
            self.key_valid[:, : attention_mask.size(1)].copy_(attention_mask.bool())

    def prefilled(self, filled: int, position: torch.Tensor | None, step: int) -> None:
        """The cache holds ``filled`` columns: the next step writes column ``filled``, at ``position``
        (B, 1) (None: ``filled``, no padding), and makes the logits of decoding step ``step``."""
        self.write_pos.fill_(filled)
        if position is None:
            self.position.fill_(filled)
        else:
            self.position.copy_(position)
        self.step.fill_(step)

    def forward(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Feed ``token``; returns the next logits (B, V) in float32 and their argmax (B,), which
        also becomes the next ``token`` (the loop overwrites it when it chooses otherwise)."""
        tr: Any = self.model.transformer  # a ModuleDict: its parts are looked up by name at run time
        x = tr.wte(self.token) + tr.wpe(self.position)  # (B, 1, C)
        allowed = (self.columns <= self.write_pos) & self.key_valid  # (B, max_len): filled, real columns
        zero = torch.zeros((), dtype=x.dtype, device=x.device)
        blocked = torch.full((), torch.finfo(x.dtype).min, dtype=x.dtype, device=x.device)  # a fill, not a host copy: recordable
        mask = torch.where(allowed, zero, blocked)[:, None, None, :]  # (B, 1, 1, max_len)
        ks = [getattr(self, f"k{i}") for i in range(self.n_layer)]
        vs = [getattr(self, f"v{i}") for i in range(self.n_layer)]
        cache = _StaticWrite(ks, vs, self.write_pos)
        for block in tr.h:
            x = block(x, mask, kv_cache=cache)  # (B, 1, C)
        x = tr.ln_f(x)  # (B, 1, C)
        logits = self.model.lm_head(x)[:, -1, :].float()  # (B, V)
        greedy = logits.argmax(dim=-1)  # (B,)
        self.token.copy_(greedy[:, None])
        self.write_pos.add_(1)
        self.position.add_(1)
        note_nonfinite(logits, self.step, self.first_nonfinite)
        self.step.add_(1)
        return logits, greedy


class GraphedStep:
    """A ``StaticDecoder``'s step recorded once as a CUDA graph, without a compiler.

    Eager PyTorch launches a decode step's ~150 small kernels one by one from Python, and for a small
    model at batch 1 that launching, not the GPU, is most of the step. Recorded as a graph, a step
    is one launch (``replay``) of all of them. The step reads and writes only its own buffers, the
    cache and the weights, always at the same addresses, so the recording stays valid from call to
    call; ``static_decoder`` records again when the weights have moved (a new parameter, another
    dtype). The outputs are the recording's own tensors, overwritten by the next replay.
    """

    def __init__(self, decoder: StaticDecoder) -> None:
        self.decoder = decoder
        model = decoder.model
        was_training = model.training
        model.eval()  # recorded as inference: no dropout, no autograd
        try:
            with torch.no_grad():
                # warm up on a side stream, as CUDA graph capture asks: library handles and workspaces are
                # made there, not while recording. The warm-up really steps the decoder (a column of the
                # cache, the token buffers): the caller sets them all before the first replay.
                side = torch.cuda.Stream()
                side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(side):
                    for _ in range(2):
                        decoder()
                torch.cuda.current_stream().wait_stream(side)
                self.graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(self.graph):
                    self.outputs = decoder()  # recorded, not run
        finally:
            model.train(was_training)
        decoder.first_nonfinite.fill_(NO_STEP)

    def __call__(self) -> tuple[torch.Tensor, torch.Tensor]:
        self.graph.replay()
        return self.outputs


def weight_addresses(model: nn.Module) -> tuple[int, ...]:
    """Where every parameter and buffer lives: a recorded CUDA graph reads them there."""
    return tuple(t.data_ptr() for t in (*model.parameters(), *model.buffers()))


class KeptDecoders(dict):
    """A model's recorded or compiled decoders, (batch, length, dtype, device, how, explicit) ->
    (cache, decoder, step, weight addresses): compiling is slow, recording a graph a few steps' time.

    Kept on the model itself (``kept_decoders``), so they go when the model goes: a decoder holds its
    model, and a table outside it (even one with weak keys) would keep every model alive. Never
    copied: a copied or unpickled model starts with none (a CUDA graph cannot be copied, and it would
    point at the original's memory). ``in_use``: the keys a generation is decoding with now (a
    stream not yet finished); a second call with the same key then gets a decoder of its own."""

    def __init__(self) -> None:
        super().__init__()
        self.in_use: set[tuple] = set()

    def __deepcopy__(self, memo: dict) -> KeptDecoders:
        return KeptDecoders()

    def __reduce__(self) -> tuple:
        return (KeptDecoders, ())


def kept_decoders(model: GPT2) -> KeptDecoders:
    """The decoders kept for ``model`` (made empty on first use)."""
    kept = model.__dict__.get("_kept_decoders")
    if kept is None:
        kept = model.__dict__["_kept_decoders"] = KeptDecoders()
    return kept


def _make_decoder(model: GPT2, batch_size: int, max_len: int, compile: bool) -> tuple[KVCache, StaticDecoder, Any]:
    """A new cache and decoder, and its step compiled (``compile``) or recorded as a CUDA graph."""
    cache = model.new_kv_cache(batch_size, max_len)
    decoder = StaticDecoder(model, cache)
    step: Any
    if compile:
        mode = "reduce-overhead" if model.device.type == "cuda" else None  # CUDA graphs on GPU
        # dynamic=False: each length and batch size is its own graph, never one with symbolic shapes
        step = torch.compile(decoder, mode=mode, fullgraph=True, dynamic=False)
    else:
        try:
            step = GraphedStep(decoder)
        except RuntimeError as err:  # not recordable here: decode step by step, as correct, slower
            warnings.warn(f"decoding without a CUDA graph ({str(err).splitlines()[0]})", RuntimeWarning, stacklevel=4)
            step = decoder
    return cache, decoder, step


def release_decoder(model: GPT2, decoder: StaticDecoder) -> None:
    """A generation is done with ``decoder``: the next call may use it again."""
    per_model = kept_decoders(model)
    per_model.in_use -= {key for key, kept in per_model.items() if kept[1] is decoder}


def static_decoder(model: GPT2, batch_size: int, max_len: int, compile: bool, graph: bool = False) -> tuple[KVCache, StaticDecoder, Any]:
    """A cache, the ``StaticDecoder`` on it, and the step to call: the decoder itself, its compiled
    form (``compile``), or its recording as a CUDA graph (``graph``, on CUDA; ``GraphedStep``).

    Compiled and recorded decoders are kept per model and (batch, length, dtype, device) with their
    caches, and emptied for reuse; the caller gives one back with ``release_decoder`` when done
    (until then a second call of the same shapes gets a new one). A recording whose weights have
    since moved is made again; if recording fails (an operation CUDA graphs cannot hold), the plain
    step is used."""
    if not (compile or graph):
        cache = model.new_kv_cache(batch_size, max_len)
        decoder = StaticDecoder(model, cache)
        return cache, decoder, decoder
    key = (batch_size, max_len, model.dtype, str(model.device), "compiled" if compile else "graph", model.explicit)
    per_model = kept_decoders(model)
    if key in per_model.in_use:  # another generation decodes with that one now (an unfinished stream)
        return _make_decoder(model, batch_size, max_len, compile)
    addresses = weight_addresses(model) if graph else ()
    if key not in per_model or per_model[key][3] != addresses:
        per_model.pop(key, None)  # a stale recording: its memory goes before the new one is made
        # and those of a dtype or device the model has left (model.to(...)): they can never be used again
        for old in [k for k in per_model if k[2:4] != key[2:4] and k not in per_model.in_use]:
            del per_model[old]
        per_model[key] = (*_make_decoder(model, batch_size, max_len, compile), addresses)
    per_model.in_use.add(key)  # until release_decoder
    cache, decoder, step, _ = per_model[key]
    cache.reset()
    # a former call's keys and values sit in the columns this call has not filled yet: masked, but a
    # NaN or inf there would still poison every score (NaN + mask is NaN), so start from zeros
    cache.k.zero_()
    cache.v.zero_()
    return cache, decoder, step
