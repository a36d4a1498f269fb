"""Decoding: turn next-token logits into new tokens, one step at a time, on the KV cache.

How one call of ``generate`` works:

1. **Check every setting first** (``GenerationSettings``): a bad temperature, top-k, top-p, min-p,
   repetition penalty or length is an error before the model runs at all.
2. **Prefill**: the prompt (B, T) runs through the model once and fills a KV cache sized for exactly
   the tokens this call will hold. Prompts of different lengths come left-padded with an
   ``attention_mask`` (1 = token, 0 = padding); each row's positions count only its own tokens
   (``position_ids = cumsum(mask) - 1``, as transformers does), so a row gives the same tokens as
   that prompt alone.
3. **Decode**: each step feeds only the newest token, turns the last logits into a distribution
   with the logits processors, and picks a token. The processors run in transformers' order, so the
   same settings mean the same thing in both libraries::

       repetition penalty -> temperature -> top-k -> top-p -> min-p -> softmax -> sample

   ``temperature=0`` is greedy: the argmax of the (repetition-penalised) logits.
4. **Stop** a row when it emits ``eos_token_id`` or its text contains a ``stop`` string; the
   other rows go on, and the call ends when every row has stopped or ``max_new_tokens`` are made.
   Rows that stopped are filled with ``pad_token_id``.

Long inputs: a prompt longer than the context (``block_size``) keeps its last ``block_size``
tokens, with a warning. When the cache is full the window slides: the newest ``block_size // 2``
tokens are run again as a fresh prefill (GPT-2's learned positions cannot simply shift), so each
token is predicted from between half and all of a context's worth of the newest tokens.

Speed: the output buffer and the KV cache are allocated once, at their final size; each step does
a fixed amount of Python work however long the sequence is; the LM head (38.6M of GPT-2's 124M
parameters) runs only on the last position.

For GPUs, ``StaticDecoder`` is a decode step whose tensors never change shape (the cache is
attended in full, with a mask, and written at a tensor position), which ``torch.compile`` with
CUDA graphs (``mode="reduce-overhead"``) can capture; ``generate(..., compile=True)`` uses it.
"""

from __future__ import annotations

import codecs
import contextlib
import math
import os
import sys
import warnings
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import kernels
from .errors import GenerationError
from .model import GPT2, KVCache

# ---------------------------------------------------------------------------------------------
# Settings, checked before any work
# ---------------------------------------------------------------------------------------------


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_real(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


@dataclass(frozen=True)
class GenerationSettings:
    """How logits become tokens. Building one checks every field and raises ``GenerationError``
    with a message that says what is allowed.

    Attributes:
        temperature: divide the logits by this before sampling; 0 means greedy (argmax).
        top_k: keep only the k most likely tokens (ties with the k-th are kept, as in transformers).
        top_p: nucleus sampling: keep the smallest set of most likely tokens whose probability
            reaches p. 1.0 keeps everything.
        min_p: keep tokens whose probability is at least ``min_p`` times the top token's.
        repetition_penalty: CTRL's penalty on every token already in the row (prompt included):
            a positive logit is divided by it, a negative one multiplied. 1.0 is off.
    """

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None

    def __post_init__(self) -> None:
        t = self.temperature
        if not _is_real(t) or not math.isfinite(t) or t < 0:
            raise GenerationError(f"temperature must be a finite number >= 0 (0 = greedy), got {t!r}")
        if self.top_k is not None and (not _is_int(self.top_k) or self.top_k < 1):
            raise GenerationError(f"top_k must be an integer >= 1 (or None to keep every token), got {self.top_k!r}")
        p = self.top_p
        if p is not None and (not _is_real(p) or not 0.0 < p <= 1.0):
            raise GenerationError(f"top_p must be in (0, 1] (1 keeps every token), got {p!r}")
        m = self.min_p
        if m is not None and (not _is_real(m) or not 0.0 <= m < 1.0):
            raise GenerationError(f"min_p must be in [0, 1) (0 keeps every token), got {m!r}")
        r = self.repetition_penalty
        if r is not None and (not _is_real(r) or not math.isfinite(r) or r <= 0):
            raise GenerationError(f"repetition_penalty must be a finite number > 0 (1 = off, > 1 discourages repeats), got {r!r}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    @property
    def penalises_repeats(self) -> bool:
        return self.repetition_penalty is not None and self.repetition_penalty != 1.0


# ---------------------------------------------------------------------------------------------
# Logits processors (transformers' order and formulas)
# ---------------------------------------------------------------------------------------------


def apply_repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """CTRL's repetition penalty on logits (B, V) for tokens marked in ``seen`` (B, V) bool.

    A seen token's logit moves towards "less likely" whatever its sign: x / penalty if x > 0,
    x * penalty if x < 0 (transformers' ``RepetitionPenaltyLogitsProcessor``).
    """
    penalised = torch.where(logits < 0, logits * penalty, logits / penalty)  # (B, V)
    return torch.where(seen, penalised, logits)


def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Sharpen (< 1) or flatten (> 1) the distribution: softmax(logits / T)."""
    return logits / temperature


def apply_top_k(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k largest logits of each row (and any tied with the k-th); the rest become -inf."""
    k = min(k, logits.size(-1))
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]  # (B, 1): the k-th largest logit
    return logits.masked_fill(logits < kth, float("-inf"))


def apply_top_p(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus filtering: keep the smallest set of most likely tokens whose probability reaches p.

    Written as transformers writes it: sort ascending, and drop a token while the probability of
    it and everything less likely is still <= 1 - p (so what stays above it is >= p... and the most
    likely token always stays).
    """
    sorted_logits, order = torch.sort(logits, descending=False, dim=-1)  # (B, V), least likely first
    cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)  # (B, V)
    drop_sorted = cumulative <= (1 - p)  # (B, V)
    drop_sorted[..., -1:] = False  # the most likely token always stays
    drop = drop_sorted.scatter(-1, order, drop_sorted)  # back to vocabulary order
    return logits.masked_fill(drop, float("-inf"))


def apply_min_p(logits: torch.Tensor, min_p: float) -> torch.Tensor:
    """Drop tokens less likely than ``min_p`` times the most likely one (after temperature)."""
    probs = logits.softmax(dim=-1)  # (B, V)
    threshold = min_p * probs.amax(dim=-1, keepdim=True)  # (B, 1)
    return logits.masked_fill(probs < threshold, float("-inf"))  # the top token is never below it


def process_logits(logits: torch.Tensor, settings: GenerationSettings, seen: torch.Tensor | None = None) -> torch.Tensor:
    """Every processor ``settings`` asks for, in transformers' order, on float logits (B, V).

    ``seen`` (B, V) bool marks the tokens each row already holds (for the repetition penalty).
    With ``temperature=0`` only the repetition penalty runs: the others cannot change the argmax.
    """
    if settings.penalises_repeats:
        if seen is None:
            raise GenerationError("repetition_penalty needs the tokens seen so far")
        logits = apply_repetition_penalty(logits, seen, settings.repetition_penalty)
    if settings.greedy:
        return logits
    if settings.temperature != 1.0:
        logits = apply_temperature(logits, settings.temperature)
    if settings.top_k is not None:
        logits = apply_top_k(logits, settings.top_k)
    if settings.top_p is not None and settings.top_p < 1.0:
        logits = apply_top_p(logits, settings.top_p)
    if settings.min_p is not None and settings.min_p > 0.0:
        logits = apply_min_p(logits, settings.min_p)
    return logits


def choose_tokens(logits: torch.Tensor, settings: GenerationSettings, generator: torch.Generator | None) -> torch.Tensor:
    """Processed logits (B, V) -> next ids (B,): argmax when greedy, else a draw from the softmax."""
    if settings.greedy:
        return logits.argmax(dim=-1)  # (B,)
    probs = F.softmax(logits, dim=-1)  # (B, V)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)  # (B,)


# ---------------------------------------------------------------------------------------------
# Stop strings and text, row by row
# ---------------------------------------------------------------------------------------------


def _token_bytes_fn(tokenizer: Any):
    """A function id -> the bytes of that token. Bytes, not text: one character can span tokens."""
    for name in ("decode_single_token_bytes",):
        fn = getattr(tokenizer, name, None)
        if callable(fn):
            return fn
    fn = getattr(tokenizer, "decode_bytes", None)
    if callable(fn):
        return lambda t: fn([t])
    return lambda t: tokenizer.decode([t]).encode("utf-8")


class RowText:
    """The text one row has produced so far, fed one token at a time.

    It finds ``stop`` strings (in bytes, so a string spanning several tokens or ending inside one is
    found), cuts the text exactly before the stop string, and hands out text in pieces that never
    split a UTF-8 character and never show the start of what may turn out to be a stop string.
    Joining every piece gives ``tokenizer.decode(generated)`` cut before the first stop string.
    """

    def __init__(self, token_bytes, stop: Sequence[str] = (), eos_token_id: int | None = None) -> None:
        self.token_bytes = token_bytes
        self.stops = [s.encode("utf-8") for s in stop]
        self.longest_stop = max((len(s) for s in self.stops), default=0)
        self.eos_token_id = eos_token_id
        self.buffer = bytearray()  # every byte generated so far (up to the cut, once stopped)
        self.released = 0  # bytes already handed to the UTF-8 decoder
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.pending: list[str] = []
        self.done = False
        self.stop_reason: str | None = None  # "eos", "stop" or None

    def feed(self, token: int) -> bool:
        """Add one generated token; returns True when this row must stop."""
        if self.done:
            return True
        if token == self.eos_token_id:
            self._finish("eos")
            return True
        start = max(0, len(self.buffer) - self.longest_stop + 1)  # a new match must end in the new bytes
        self.buffer += self.token_bytes(token)
        if self.stops:
            hits = [i for i in (self.buffer.find(s, start) for s in self.stops) if i >= 0]
            if hits:
                del self.buffer[min(hits) :]  # cut exactly before the earliest stop string
                self._finish("stop")
                return True
        self._release(len(self.buffer) - self._held_back())
        return False

    def _held_back(self) -> int:
        """How many trailing bytes could be the beginning of a stop string (not shown yet)."""
        for n in range(min(self.longest_stop - 1, len(self.buffer)), 0, -1):
            tail = bytes(self.buffer[-n:])
            if any(s.startswith(tail) for s in self.stops):
                return n
        return 0

    def _release(self, end: int, final: bool = False) -> None:
        if end > self.released or final:
            text = self.decoder.decode(bytes(self.buffer[self.released : end]), final=final)
            self.released = max(end, self.released)
            if text:
                self.pending.append(text)

    def _finish(self, reason: str | None) -> None:
        self.done = True
        self.stop_reason = reason
        self._release(len(self.buffer), final=True)

    def finish(self) -> None:
        """The row ran out of tokens (max_new_tokens): release everything held back."""
        if not self.done:
            self._finish(None)

    def take(self) -> str:
        """The text produced since the last call."""
        text = "".join(self.pending)
        self.pending.clear()
        return text

    @property
    def text(self) -> bytes:
        return bytes(self.buffer)


# ---------------------------------------------------------------------------------------------
# A decode step of fixed shapes (for torch.compile / CUDA graphs)
# ---------------------------------------------------------------------------------------------


class _StaticWrite:
    """Stands in for a KVCache inside the blocks: writes the new key/value at a *tensor* position
    and returns the whole cache, so no shape depends on how many positions are filled."""

    def __init__(self, k: torch.Tensor, v: torch.Tensor, write_pos: torch.Tensor) -> None:
        self.k, self.v, self.write_pos = k, v, write_pos

    def update(self, layer: int, k_new: torch.Tensor, v_new: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.k[layer].index_copy_(2, self.write_pos, k_new)  # (B, H, max_len, D), column write_pos
        self.v[layer].index_copy_(2, self.write_pos, v_new)
        return self.k[layer], self.v[layer]  # (B, H, max_len, D): masked below, not sliced


class StaticDecoder(nn.Module):
    """One decode step whose every tensor has the same shape at every step.

    The cache (shared with a ``KVCache``, registered here as buffers so a compiler treats it as
    state) is attended in full, with a mask that lets the query see filled, non-padding columns
    only; the new key/value are written at ``write_pos`` (a tensor). Nothing depends on a Python
    integer that changes, so ``torch.compile(decoder, mode="reduce-overhead", fullgraph=True)``
    records it once as a CUDA graph. On CPU it computes what the ordinary cached step computes.
    """

    def __init__(self, model: GPT2, cache: KVCache) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("k", cache.k, persistent=False)  # (L, B, H, max_len, D), same storage
        self.register_buffer("v", cache.v, persistent=False)
        self.register_buffer("key_valid", torch.ones(cache.batch_size, cache.max_len, dtype=torch.bool, device=cache.k.device), persistent=False)
        self.register_buffer("columns", torch.arange(cache.max_len, device=cache.k.device), persistent=False)

    def set_padding(self, attention_mask: torch.Tensor | None) -> None:
        """Columns (B, max_len) that hold real tokens: the prompt's mask, then ones."""
        self.key_valid.fill_(True)
        if attention_mask is not None:
            self.key_valid[:, : attention_mask.size(1)].copy_(attention_mask.bool())

    def forward(self, idx: torch.Tensor, position_ids: torch.Tensor, write_pos: torch.Tensor) -> torch.Tensor:
        """idx (B, 1), position_ids (B, 1), write_pos (1,) the cache column -> logits (B, V)."""
        tr = self.model.transformer
        x = tr.wte(idx) + tr.wpe(position_ids)  # (B, 1, C)
        allowed = (self.columns <= write_pos) & self.key_valid  # (B, max_len)
        zero = torch.zeros((), dtype=x.dtype, device=x.device)
        blocked = torch.tensor(torch.finfo(x.dtype).min, dtype=x.dtype, device=x.device)
        mask = torch.where(allowed, zero, blocked)[:, None, None, :]  # (B, 1, 1, max_len)
        cache = _StaticWrite(self.k, self.v, write_pos)
        for block in tr.h:
            x = block(x, mask, kv_cache=cache)  # (B, 1, C)
        x = tr.ln_f(x)  # (B, 1, C)
        return self.model.lm_head(x)[:, -1, :]  # (B, V)


# compiled decoders per model and (batch, length, dtype, device), with their caches: compiling is slow
_COMPILED: weakref.WeakKeyDictionary[GPT2, dict[tuple, tuple[KVCache, StaticDecoder, Any]]] = weakref.WeakKeyDictionary()


def _static_decoder(model: GPT2, batch_size: int, max_len: int, compile: bool) -> tuple[KVCache, StaticDecoder, Any]:
    if not compile:
        cache = model.new_kv_cache(batch_size, max_len)
        decoder = StaticDecoder(model, cache)
        return cache, decoder, decoder
    key = (batch_size, max_len, model.dtype, str(model.device))
    per_model = _COMPILED.setdefault(model, {})
    if key not in per_model:
        cache = model.new_kv_cache(batch_size, max_len)
        decoder = StaticDecoder(model, cache)
        mode = "reduce-overhead" if model.device.type == "cuda" else None  # CUDA graphs on GPU
        per_model[key] = (cache, decoder, torch.compile(decoder, mode=mode, fullgraph=True))
    cache, decoder, step = per_model[key]
    cache.reset()
    return cache, decoder, step


# ---------------------------------------------------------------------------------------------
# The decoding loop
# ---------------------------------------------------------------------------------------------


def _warn_if_cropped(model: GPT2, idx: torch.Tensor) -> None:
    T, block_size = idx.size(1), model.config.block_size
    if T > block_size:
        # point the warning at the user's line, the first frame outside this package
        frame, level = sys._getframe(0), 1
        while frame is not None and frame.f_code.co_filename.startswith(_SKIP_DIRS):
            frame, level = frame.f_back, level + 1
        warnings.warn(f"the prompt has {T} tokens but the context holds {block_size}; generating from its last {block_size} tokens",
                      stacklevel=level)


# this package, torch (its no_grad decorator) and contextlib are not where the user's call is
_SKIP_DIRS = (os.path.dirname(os.path.abspath(__file__)), os.path.dirname(torch.__file__), os.path.abspath(contextlib.__file__))


def _check_inputs(model: GPT2, idx: Any, max_new_tokens: Any, attention_mask: Any, stop: Any, tokenizer: Any,
                  eos_token_id: Any, pad_token_id: Any, seed: Any, generator: Any) -> list[str]:
    if not isinstance(idx, torch.Tensor) or idx.dim() != 2 or idx.dtype not in (torch.long, torch.int32, torch.int64):
        raise GenerationError("idx must be an integer tensor of token ids shaped (batch, time)")
    if idx.size(0) == 0 or idx.size(1) == 0:
        raise GenerationError(f"idx has shape {tuple(idx.shape)}: give at least one token per row (start from <|endoftext|> for an empty prompt)")
    vocab = model.config.vocab_size
    lo, hi = int(idx.min()), int(idx.max())
    if lo < 0 or hi >= vocab:
        raise GenerationError(f"token ids must be in [0, {vocab}) for this model's vocabulary, got ids from {lo} to {hi}")
    if not _is_int(max_new_tokens) or max_new_tokens < 0:
        raise GenerationError(f"max_new_tokens must be an integer >= 0, got {max_new_tokens!r}")
    if attention_mask is not None:
        if not isinstance(attention_mask, torch.Tensor) or attention_mask.shape != idx.shape:
            raise GenerationError(f"attention_mask must be a tensor of idx's shape {tuple(idx.shape)} (1 = token, 0 = padding)")
        if not bool(((attention_mask == 0) | (attention_mask == 1)).all()):
            raise GenerationError("attention_mask must hold only 0 (padding) and 1 (token)")
        m = attention_mask.long()
        if bool((m.sum(-1) == 0).any()):
            raise GenerationError("a row of attention_mask is all padding: every prompt needs at least one token")
        if bool((m[:, 1:] < m[:, :-1]).any()):
            raise GenerationError("attention_mask must be left padding (zeros, then ones): decoding appends on the right")
    for name, value in (("eos_token_id", eos_token_id), ("pad_token_id", pad_token_id)):
        if value is not None and (not _is_int(value) or not 0 <= value < vocab):
            raise GenerationError(f"{name} must be a token id in [0, {vocab}), got {value!r}")
    if seed is not None and not _is_int(seed):
        raise GenerationError(f"seed must be an integer, got {seed!r}")
    if seed is not None and generator is not None:
        raise GenerationError("give seed or generator, not both")
    if generator is not None and generator.device.type != model.device.type:
        raise GenerationError(f"the generator is on {generator.device.type} but the model on {model.device.type}: make it with torch.Generator(device=...)")
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    if not all(isinstance(s, str) and s for s in stops):
        raise GenerationError(f"stop must be a non-empty string or a list of them, got {stop!r}")
    if stops and tokenizer is None:
        raise GenerationError("stop strings need the tokenizer (tokenizer=...) to read the generated text")
    return stops


def generate(
    model: GPT2,
    idx: torch.Tensor,
    max_new_tokens: int,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    min_p: float | None = None,
    repetition_penalty: float | None = None,
    stop: str | Sequence[str] | None = None,
    tokenizer: Any = None,
    eos_token_id: int | None = None,
    pad_token_id: int | None = None,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    attention_mask: torch.Tensor | None = None,
    stream: bool = False,
    static_cache: bool = False,
    compile: bool = False,
) -> torch.Tensor | Iterator[torch.Tensor]:
    """Continue every row of ``idx`` (B, T); returns (B, T + n) ids, n <= ``max_new_tokens``.

    Args:
        idx: prompt ids (B, T); rows of different lengths are left-padded (see ``attention_mask``).
        max_new_tokens: how many tokens to add at most.
        temperature, top_k, top_p, min_p, repetition_penalty: see ``GenerationSettings``;
            ``temperature=0`` is greedy.
        stop: a string or strings; a row stops once its generated text contains one (the
            tokenizer is needed to read the text). The ids keep the token that completed it.
        tokenizer: anything with ``decode`` (and ideally ``decode_single_token_bytes``).
        eos_token_id: a row stops after emitting this id (GPT-2's ``<|endoftext|>`` is 50256).
        pad_token_id: fills rows that stopped while others go on; default ``eos_token_id``, else 0.
        seed / generator: make sampling reproducible (a private ``torch.Generator``; the global
            random state is left alone).
        attention_mask: (B, T), 1 for tokens and 0 for left padding.
        stream: return an iterator that yields each step's new ids (B, 1) as they are made;
            ``torch.cat([idx, *steps], 1)`` is what ``stream=False`` returns.
        static_cache: decode with ``StaticDecoder`` (fixed shapes; same tokens).
        compile: ``torch.compile`` the static decode step (CUDA graphs on GPU); compiled once per
            model, batch size and dtype.

    Returns:
        (B, T + n) ids, the prompt included, or the iterator when ``stream=True``. The call ends
        early when every row has stopped.
    """
    settings = GenerationSettings(temperature, top_k, top_p, min_p, repetition_penalty)
    stops = _check_inputs(model, idx, max_new_tokens, attention_mask, stop, tokenizer, eos_token_id, pad_token_id, seed, generator)
    _warn_if_cropped(model, idx)
    idx = idx.to(model.device)  # (B, T), where the model is
    if attention_mask is not None:
        attention_mask = attention_mask.to(model.device)
    if seed is not None:
        generator = torch.Generator(device=model.device).manual_seed(seed)
    if pad_token_id is None:
        pad_token_id = eos_token_id if eos_token_id is not None else 0
    rows = None
    if stops:
        token_bytes = _token_bytes_fn(tokenizer)
        rows = [RowText(token_bytes, stops, eos_token_id) for _ in range(idx.size(0))]
    steps = _decode(model, idx, max_new_tokens, settings, attention_mask=attention_mask, rows=rows,
                    eos_token_id=eos_token_id, pad_token_id=pad_token_id, generator=generator,
                    static=static_cache or compile, compile=compile)
    if stream:
        return (new[:, None] for new in steps)
    return _collect(idx, steps, max_new_tokens)


def _collect(idx: torch.Tensor, steps: Iterator[torch.Tensor], max_new_tokens: int) -> torch.Tensor:
    B, T = idx.shape
    out = torch.empty(B, T + max_new_tokens, dtype=torch.long, device=idx.device)  # (B, T + new), filled as we go
    out[:, :T] = idx
    n = 0
    for new in steps:
        out[:, T + n] = new
        n += 1
    return out[:, : T + n]


def _positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids (B, T) from a left-padding mask: each row counts its own tokens from 0."""
    pos = mask.long().cumsum(-1) - 1  # (B, T)
    return pos.clamp_(min=0)  # padding gets 0; it is never attended to


def _decode(
    model: GPT2,
    idx: torch.Tensor,
    max_new_tokens: int,
    settings: GenerationSettings,
    *,
    attention_mask: torch.Tensor | None,
    rows: list[RowText] | None,
    eos_token_id: int | None,
    pad_token_id: int,
    generator: torch.Generator | None,
    static: bool = False,
    compile: bool = False,
) -> Iterator[torch.Tensor]:
    """Yield each step's new ids (B,); rows that stopped get ``pad_token_id``. Inputs are checked."""
    if max_new_tokens == 0:
        return
    B, T = idx.shape
    block_size = model.config.block_size
    device = idx.device
    if attention_mask is not None and bool(attention_mask.all()):
        attention_mask = None  # no padding: plain causal attention, the fastest path
    window = idx[:, -block_size:].long()  # (B, W): the ids the cache holds, W <= block_size
    window_mask = attention_mask[:, -block_size:].long() if attention_mask is not None else None  # (B, W)

    # the cache holds what this call needs, never more than the context: allocated once
    max_len = min(block_size, window.size(1) + max_new_tokens)
    if compile:
        max_len = block_size  # one compiled graph per batch size, whatever the lengths
    if static:
        cache, decoder, step_fn = _static_decoder(model, B, max_len, compile)
    else:
        cache, decoder, step_fn = model.new_kv_cache(B, max_len), None, None
    # which cache columns hold tokens (B, max_len): the window's mask, then ones; only with padding
    key_mask = torch.ones(B, max_len, dtype=torch.long, device=device) if window_mask is not None else None

    seen = None  # (B, V) tokens each row holds, for the repetition penalty (padding excluded)
    if settings.penalises_repeats:
        V = model.config.vocab_size
        seen = torch.zeros(B, V + 1, dtype=torch.bool, device=device)  # column V collects the padding
        ids = idx.long() if attention_mask is None else idx.long().masked_fill(attention_mask == 0, V)
        seen.scatter_(1, ids, True)
        seen = seen[:, :V]
    stopping = rows is not None or eos_token_id is not None
    alive = [True] * B
    rows_arange = torch.arange(B, device=device)
    history: list[torch.Tensor] = []  # new tokens (B,) since the window was last filled

    def fill(window: torch.Tensor, window_mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Prefill the empty cache with ``window``; last logits (B, V) and next positions (B, 1)."""
        cache.reset()
        if window_mask is None:
            logits = model(window, kv_cache=cache, last_logits_only=True)[:, -1, :]  # (B, V)
            next_pos = None
        else:
            key_mask.fill_(1)
            key_mask[:, : window.size(1)] = window_mask
            pos = _positions(window_mask)  # (B, W)
            logits = model(window, kv_cache=cache, attention_mask=window_mask, position_ids=pos, last_logits_only=True)[:, -1, :]
            next_pos = pos[:, -1:] + 1  # (B, 1)
        if decoder is not None:
            decoder.set_padding(key_mask)
        return logits, next_pos

    # on a CPU, oneDNN-packed weights where they pay (2-3x faster products; kept for the next call)
    fast_products = contextlib.nullcontext() if compile else kernels.packed(model)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), fast_products:
            logits, next_pos = fill(window, window_mask)
            for step in range(max_new_tokens):
                logits = logits.float()  # (B, V)
                # one NaN or inf anywhere makes its row's sum non-finite: one pass instead of isfinite's two
                if not bool(torch.isfinite(logits.sum(dim=-1)).all()):
                    raise GenerationError(
                        f"the model produced NaN or inf logits at step {step}: the weights may be corrupted, "
                        "or the dtype overflowed (try fp32)"
                    )
                new = choose_tokens(process_logits(logits, settings, seen), settings, generator)  # (B,)
                if stopping:  # one transfer of B ids per step; the row bookkeeping is O(B)
                    new_list = new.tolist()
                    for b in range(B):
                        if not alive[b]:
                            new_list[b] = pad_token_id
                        elif rows is not None:
                            alive[b] = not rows[b].feed(new_list[b])
                        elif new_list[b] == eos_token_id:
                            alive[b] = False
                    new = torch.tensor(new_list, dtype=torch.long, device=device)
                if seen is not None:
                    seen[rows_arange, new] = True
                history.append(new)
                yield new
                if (stopping and not any(alive)) or step == max_new_tokens - 1:
                    break
                if cache.pos == cache.max_len:
                    # the context is full: refill it with the newest half and go on from there
                    keep = max(block_size // 2, 1)
                    window = torch.cat([window, torch.stack(history, 1)], 1)[:, -keep:]  # (B, keep)
                    if window_mask is not None:
                        window_mask = torch.cat([window_mask, torch.ones(B, len(history), dtype=torch.long, device=device)], 1)[:, -keep:]
                    history = []
                    logits, next_pos = fill(window, window_mask)
                    continue
                token = new[:, None]  # (B, 1): only the newest token goes through the model
                if decoder is not None:
                    position_ids = next_pos if next_pos is not None else torch.full((B, 1), cache.pos, device=device)
                    if compile and device.type == "cuda":
                        torch.compiler.cudagraph_mark_step_begin()  # a new step: the last step's outputs may be reused
                    logits = step_fn(token, position_ids, torch.tensor([cache.pos], device=device))  # (B, V)
                    cache.advance(1)
                else:
                    step_mask = key_mask[:, : cache.pos + 1] if key_mask is not None else None  # (B, P + 1), a view
                    logits = model(token, kv_cache=cache, attention_mask=step_mask, position_ids=next_pos, last_logits_only=True)[:, -1, :]
                if next_pos is not None:
                    next_pos = next_pos + 1
        if rows is not None:
            for r in rows:
                r.finish()
    finally:
        model.train(was_training)


# ---------------------------------------------------------------------------------------------
# Text in, text out
# ---------------------------------------------------------------------------------------------


def encode_prompts(tokenizer: Any, prompts: Sequence[str], *, device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Encode prompts and left-pad them into ids (B, T) and an attention mask (B, T).

    An empty prompt starts from ``<|endoftext|>`` (how GPT-2 saw the start of every document);
    ``<|endoftext|>`` written in a prompt is that special token.
    """
    encoded = []
    for p in prompts:
        if not isinstance(p, str):
            raise GenerationError(f"a prompt must be a string, got {type(p).__name__}")
        ids = tokenizer.encode(p, allowed_special="all") if p else []
        encoded.append(ids or [tokenizer.eot_token])
    T = max(len(e) for e in encoded)
    pad = tokenizer.eot_token
    idx = torch.tensor([[pad] * (T - len(e)) + e for e in encoded], dtype=torch.long, device=device)  # (B, T)
    mask = torch.tensor([[0] * (T - len(e)) + [1] * len(e) for e in encoded], dtype=torch.long, device=device)  # (B, T)
    return idx, mask


def generate_text(
    model: GPT2,
    tokenizer: Any,
    prompt: str | Sequence[str],
    max_new_tokens: int = 100,
    *,
    stream: bool = False,
    stop_at_eot: bool = True,
    stop: str | Sequence[str] | None = None,
    **settings: Any,
) -> str | list[str] | Iterator[str] | Iterator[list[str]]:
    """Continue a prompt (or a list of prompts) and return the new text, without the prompt.

    The text ends before the first ``stop`` string, or at ``<|endoftext|>`` (unless
    ``stop_at_eot=False``). ``settings`` are ``generate``'s: ``temperature``, ``top_k``, ``top_p``,
    ``min_p``, ``repetition_penalty``, ``seed``, ``generator``, ``static_cache``, ``compile``.

    With ``stream=True`` it returns an iterator of text pieces as they are produced (a list of
    pieces, one per prompt, when ``prompt`` is a list); joined they are the non-streamed text.
    """
    single = isinstance(prompt, str)
    prompts = [prompt] if single else list(prompt)
    if not prompts:
        raise GenerationError("no prompts given")
    settings = dict(settings)
    seed, generator = settings.pop("seed", None), settings.pop("generator", None)
    static, compiled = settings.pop("static_cache", False), settings.pop("compile", False)
    sampling = GenerationSettings(**settings)  # every setting checked before any work
    idx, mask = encode_prompts(tokenizer, prompts, device=model.device)
    eos = tokenizer.eot_token if stop_at_eot else None
    stops = _check_inputs(model, idx, max_new_tokens, mask, stop, tokenizer, eos, None, seed, generator)
    _warn_if_cropped(model, idx)
    if seed is not None:
        generator = torch.Generator(device=idx.device).manual_seed(seed)
    rows = [RowText(_token_bytes_fn(tokenizer), stops, eos) for _ in prompts]
    steps = _decode(model, idx, max_new_tokens, sampling, attention_mask=mask, rows=rows, eos_token_id=eos,
                    pad_token_id=tokenizer.eot_token, generator=generator, static=static or compiled, compile=compiled)
    text_stream = TextStream(steps, rows, single)
    if stream:
        return text_stream
    texts = [[] for _ in prompts]
    for pieces in text_stream:
        for t, piece in zip(texts, [pieces] if single else pieces):
            t.append(piece)
    out = ["".join(t) for t in texts]
    return out[0] if single else out


class TextStream:
    """The iterator ``generate_text(..., stream=True)`` returns: text pieces as they are produced
    (a ``str`` for one prompt, a list of ``str`` for a list of prompts). ``tokens`` counts the
    tokens generated so far (every row), ``stop_reasons`` says why each row ended ("eos", "stop",
    or None for max_new_tokens) once it has."""

    def __init__(self, steps: Iterator[torch.Tensor], rows: list[RowText], single: bool) -> None:
        self._steps, self.rows, self.single = steps, rows, single
        self.tokens = 0
        self._it = self._run()

    def _run(self) -> Iterator[list[str]]:
        alive = len(self.rows)
        for _ in self._steps:
            self.tokens += alive  # every row still going made a token this step
            alive = sum(not r.done for r in self.rows)
            pieces = [r.take() for r in self.rows]
            if any(pieces):
                yield pieces
        for r in self.rows:  # what was held back: a possible stop string that never completed, a split character
            r.finish()
        tail = [r.take() for r in self.rows]
        if any(tail):
            yield tail

    def __iter__(self) -> TextStream:
        return self

    def __next__(self) -> str | list[str]:
        pieces = next(self._it)
        return pieces[0] if self.single else pieces

    def close(self) -> None:
        """Stop generating (the model is put back in its training mode, if it was)."""
        self._it.close()
        close = getattr(self._steps, "close", None)
        if close is not None:
            close()

    @property
    def stop_reasons(self) -> list[str | None]:
        return [r.stop_reason for r in self.rows]
