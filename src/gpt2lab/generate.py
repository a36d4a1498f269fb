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

Speed: the KV cache is allocated once, at its final size; each step does a fixed amount of Python
work however long the sequence is; the LM head (38.6M of GPT-2's 124M parameters) runs only on the
last position; and no step waits for the device unless the host needs a token (stop strings, eos):
the check for NaN or inf logits stays on the device and is read every few steps, so on a GPU the
host queues the next steps while the device computes.

Where the parts live: ``sampling.py`` turns logits into a token (the settings, the processors,
the choice); ``streaming.py`` turns tokens into text (stop strings, printable pieces,
``TextStream``); ``static_decoder.py`` is the fixed-shape step ``torch.compile`` with CUDA graphs
can capture (``generate(..., compile=True)``). This file is the loop that ties them together,
``_decode``, and the public API; every name users import from ``gpt2lab.generate`` still is here.
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from collections.abc import Iterator, Sequence
from types import FrameType
from typing import Any, Literal, overload

import torch

from . import kernels
from .errors import GenerationError
from .model import GPT2
from .sampling import (
    NO_STEP,
    GenerationSettings,
    apply_min_p,
    apply_repetition_penalty,
    apply_temperature,
    apply_top_k,
    apply_top_p,
    choose_tokens,
    is_int,
    note_nonfinite,
    process_logits,
)
from .static_decoder import StaticDecoder, release_decoder, static_cache_length, static_decoder
from .streaming import RowText, TextStream, token_bytes_fn

# how gpt2lab samples a quick look at a model as it learns (train --sample, the demo's samples): varied enough
# to show what it has picked up, tame enough not to wander off into rare tokens
PREVIEW_SAMPLING: dict[str, Any] = {"temperature": 0.8, "top_k": 40}

__all__ = [
    "generate", "generate_text", "encode_prompts", "GenerationSettings", "TextStream", "RowText", "StaticDecoder", "PREVIEW_SAMPLING",
    "process_logits", "choose_tokens", "apply_repetition_penalty", "apply_temperature", "apply_top_k", "apply_top_p",
    "apply_min_p", "token_bytes_fn",
]

# ---------------------------------------------------------------------------------------------
# Inputs, checked before any work
# ---------------------------------------------------------------------------------------------


def _warn_if_cropped(model: GPT2, idx: torch.Tensor) -> None:
    T, block_size = idx.size(1), model.config.block_size
    if T > block_size:
        # point the warning at the user's line, the first frame outside this package
        frame: FrameType | None = sys._getframe(0)
        level = 1
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
    if not is_int(max_new_tokens) or max_new_tokens < 0:
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
        if value is not None and (not is_int(value) or not 0 <= value < vocab):
            raise GenerationError(f"{name} must be a token id in [0, {vocab}), got {value!r}")
    if seed is not None and not is_int(seed):
        raise GenerationError(f"seed must be an integer, got {seed!r}")
    if seed is not None and generator is not None:
        raise GenerationError("give seed or generator, not both")
    if generator is not None and generator.device.type != model.device.type:
        raise GenerationError(f"the generator is on {generator.device.type} but the model on {model.device.type}: "
                              "make it with torch.Generator(device=...)")
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    if not all(isinstance(s, str) and s for s in stops):
        raise GenerationError(f"stop must be a non-empty string or a list of them, got {stop!r}")
    if stops and tokenizer is None:
        raise GenerationError("stop strings need the tokenizer (tokenizer=...) to read the generated text")
    return stops


# ---------------------------------------------------------------------------------------------
# Ids in, ids out
# ---------------------------------------------------------------------------------------------


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
    static_cache: bool | None = None,
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
        static_cache: decode with ``StaticDecoder`` (fixed shapes; same tokens). Default: on a GPU,
            its step recorded once as a CUDA graph (``static_decoder.GraphedStep``: a step is one
            launch instead of ~150; no compiler), elsewhere the ordinary step. ``False``: the
            ordinary step everywhere, each kernel launched from Python.
        compile: ``torch.compile`` the static decode step (CUDA graphs on GPU); compiled once per
            model, batch size, dtype and cache length (the call's length rounded up to a power of
            two, see ``static_decoder.static_cache_length``). While hooks are registered (``with model.hooks(...)``) both
            are set aside: every step then runs the model's own forward, where the hooks act.

    Returns:
        (B, T + n) ids, the prompt included, or the iterator when ``stream=True``. The call ends
        early when every row has stopped.
    """
    settings = GenerationSettings(temperature, top_k, top_p, min_p, repetition_penalty)
    idx, steps, _ = _start(model, idx, max_new_tokens, settings, attention_mask=attention_mask, stop=stop, tokenizer=tokenizer,
                           eos_token_id=eos_token_id, pad_token_id=pad_token_id, seed=seed, generator=generator,
                           static_cache=static_cache, compile=compile, text_rows=False)
    if stream:
        return (new[:, None] for new in steps)
    return _collect(idx, steps)


def _start(
    model: GPT2,
    idx: torch.Tensor,
    max_new_tokens: int,
    settings: GenerationSettings,
    *,
    attention_mask: torch.Tensor | None,
    stop: str | Sequence[str] | None,
    tokenizer: Any,
    eos_token_id: int | None,
    pad_token_id: int | None,
    seed: int | None,
    generator: torch.Generator | None,
    static_cache: bool | None,
    compile: bool,
    text_rows: bool,
) -> tuple[torch.Tensor, Iterator[torch.Tensor], list[RowText] | None]:
    """The set-up ``generate`` and ``generate_text`` share, up to the first token.

    Every input is checked here, so a bad one raises at the call, also for a stream (whose loop
    runs only when iterated). Returns the prompt on the model's device (B, T), the decoding loop
    (not started), and each row's ``RowText``: made when there are stop strings to find, or always
    with ``text_rows`` (``generate_text`` reads its text from them); else None.
    """
    stops = _check_inputs(model, idx, max_new_tokens, attention_mask, stop, tokenizer, eos_token_id, pad_token_id, seed, generator)
    _warn_if_cropped(model, idx)
    idx = idx.to(model.device)  # (B, T), where the model is
    if attention_mask is not None:
        attention_mask = attention_mask.to(model.device)  # (B, T)
    if seed is not None:  # a private generator: the global random state is left alone
        generator = torch.Generator(device=model.device).manual_seed(seed)
    if pad_token_id is None:
        pad_token_id = eos_token_id if eos_token_id is not None else 0
    rows = None
    if stops or text_rows:
        token_bytes = token_bytes_fn(tokenizer)
        rows = [RowText(token_bytes, stops, eos_token_id) for _ in range(idx.size(0))]
    steps = _decode(model, idx, max_new_tokens, settings, attention_mask=attention_mask, rows=rows,
                    eos_token_id=eos_token_id, pad_token_id=pad_token_id, generator=generator,
                    static=(static_cache if static_cache is not None else idx.device.type == "cuda") or compile, compile=compile)
    return idx, steps, rows


def _collect(idx: torch.Tensor, steps: Iterator[torch.Tensor]) -> torch.Tensor:
    new = list(steps)  # (B,) each; joined once at the end, not copied into place one step at a time
    if not new:
        return idx.to(torch.long, copy=True)
    return torch.cat([idx.long(), torch.stack(new, 1)], 1)  # (B, T + n)


# ---------------------------------------------------------------------------------------------
# The decoding loop (eager, or with the static decoder)
# ---------------------------------------------------------------------------------------------


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
    """Yield each step's new ids (B,); rows that stopped get ``pad_token_id``. Inputs are checked.

    Nothing in a step waits for the device unless the host needs an answer: with ``eos_token_id``
    or stop strings, the B new ids (one transfer a step, which also carries the NaN check); without
    them, only the NaN check every ``NAN_CHECK_EVERY`` steps and at the end. So non-finite logits
    raise ``GenerationError`` a few steps after they appear: a stream may yield those few tokens first.
    """
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
    if model.points.fns:  # hooks registered (model.hooks): every step goes through forward, where they run
        static = compile = False
    if static:
        # a few lengths (powers of two) so that compiled graphs are reused; the extra columns are masked
        max_len = static_cache_length(window.size(1) + max_new_tokens, block_size)
        # on a GPU the step is recorded as a CUDA graph when not compiled (compiling records one itself)
        cache, decoder, step_fn = static_decoder(model, B, max_len, compile, graph=device.type == "cuda" and not compile)
    else:
        cache, decoder, step_fn = model.new_kv_cache(B, max_len), None, None
    # which cache columns hold tokens (B, max_len): the window's mask, then ones; only with padding
    key_mask = torch.ones(B, max_len, dtype=torch.long, device=device) if window_mask is not None else None
    cuda_graphs = compile and device.type == "cuda"

    seen = None  # (B, V) tokens each row holds, for the repetition penalty (padding excluded)
    if settings.penalises_repeats:
        V = model.config.vocab_size
        seen = torch.zeros(B, V + 1, dtype=torch.bool, device=device)  # column V collects the padding
        ids = idx.long() if attention_mask is None else idx.long().masked_fill(attention_mask == 0, V)
        seen.scatter_(1, ids, True)
        seen = seen[:, :V]
    rows_arange = torch.arange(B, device=device)
    stopping = rows is not None or eos_token_id is not None
    alive = [True] * B
    alive_rows: torch.Tensor | None = None  # (B,) bool on the device once a row has stopped: who still gets tokens
    history: list[torch.Tensor] = []  # new tokens (B,) since the window was last filled
    # the first step whose logits held NaN or inf (NO_STEP: none), kept on the device
    first_nonfinite = decoder.first_nonfinite if decoder is not None else torch.empty(1, dtype=torch.long, device=device)
    first_nonfinite.fill_(NO_STEP)
    # greedy without a penalty: the static step's own argmax is the token, and it feeds it back itself
    step_chooses = decoder is not None and settings.greedy and not settings.penalises_repeats
    greedy: torch.Tensor | None = None  # (B,) that argmax, when the logits came from the static step

    def fill(window: torch.Tensor, window_mask: torch.Tensor | None, step: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Prefill the empty cache with ``window``: the logits (B, V) of ``step``, next positions (B, 1)."""
        cache.reset()
        if window_mask is None:
            logits = model(window, kv_cache=cache, last_logits_only=True)[:, -1, :]  # (B, V)
            next_pos = None
        else:
            assert key_mask is not None  # made whenever there is padding
            key_mask.fill_(1)
            key_mask[:, : window.size(1)] = window_mask
            pos = _positions(window_mask)  # (B, W)
            logits = model(window, kv_cache=cache, attention_mask=window_mask, position_ids=pos, last_logits_only=True)[:, -1, :]
            next_pos = pos[:, -1:] + 1  # (B, 1)
        logits = logits.float()  # (B, V)
        note_nonfinite(logits, step, first_nonfinite)
        if decoder is not None:
            decoder.set_padding(key_mask)
            decoder.prefilled(window.size(1), next_pos, step + 1)
        return logits, next_pos

    # on a CPU, oneDNN-packed weights where they pay (2-3x faster products; kept for the next call)
    fast_products = contextlib.nullcontext() if compile else kernels.packed(model)
    was_training = model.training
    model.eval()
    # no autograd while decoding, yet the caller's own grad mode between the steps of a stream: a
    # ``torch.no_grad()`` block around the yields would leak into the caller's code, and two streams
    # consumed in turn would leave autograd off for good after both ended
    caller_grad, ours = torch.is_grad_enabled(), True
    torch.set_grad_enabled(False)
    try:
        with fast_products:
            logits, next_pos = fill(window, window_mask, 0)
            for step in range(max_new_tokens):
                if greedy is not None and step_chooses:
                    new = greedy.clone()  # (B,): a CUDA graph's output is overwritten by its next replay
                else:
                    new = choose_tokens(process_logits(logits, settings, seen), settings, generator)  # (B,)
                if alive_rows is not None:
                    new = torch.where(alive_rows, new, pad_token_id)  # rows that stopped get padding
                if stopping:  # one transfer per step: the B ids and the NaN check; the row bookkeeping is O(B)
                    *new_list, bad = torch.cat([new, first_nonfinite]).tolist()
                    _raise_if_nonfinite(bad)
                    was_alive = list(alive)
                    for b in range(B):
                        if not alive[b]:
                            continue
                        if rows is not None:
                            alive[b] = not rows[b].feed(new_list[b])
                        elif new_list[b] == eos_token_id:
                            alive[b] = False
                    if alive != was_alive:  # rarely: at most B times a call
                        alive_rows = torch.tensor(alive, device=device)
                elif (step + 1) % NAN_CHECK_EVERY == 0 or step == max_new_tokens - 1:
                    _raise_if_nonfinite(int(first_nonfinite))
                if seen is not None:
                    seen[rows_arange, new] = True
                history.append(new)
                torch.set_grad_enabled(caller_grad)
                ours = False
                yield new
                caller_grad, ours = torch.is_grad_enabled(), True
                torch.set_grad_enabled(False)
                if (stopping and not any(alive)) or step == max_new_tokens - 1:
                    break
                if cache.pos == cache.max_len:
                    # the context is full: refill it with the newest half and go on from there
                    keep = max(block_size // 2, 1)
                    window = torch.cat([window, torch.stack(history, 1)], 1)[:, -keep:]  # (B, keep)
                    if window_mask is not None:
                        window_mask = torch.cat([window_mask, torch.ones(B, len(history), dtype=torch.long, device=device)], 1)[:, -keep:]
                    history = []
                    logits, next_pos = fill(window, window_mask, step + 1)
                    greedy = None
                    continue
                if decoder is not None:
                    if not (greedy is not None and step_chooses and alive_rows is None):
                        decoder.token.copy_(new[:, None])  # the step feeds its own argmax unless told otherwise
                    if cuda_graphs:
                        torch.compiler.cudagraph_mark_step_begin()  # a new step: the last step's outputs may be reused
                    logits, greedy = step_fn()  # (B, V) float, (B,); the step advances the decoder's positions
                    cache.advance(1)
                else:
                    token = new[:, None]  # (B, 1): only the newest token goes through the model
                    step_mask = key_mask[:, : cache.pos + 1] if key_mask is not None else None  # (B, P + 1), a view
                    logits = model(token, kv_cache=cache, attention_mask=step_mask, position_ids=next_pos, last_logits_only=True)[:, -1, :]
                    logits = logits.float()  # (B, V)
                    note_nonfinite(logits, step + 1, first_nonfinite)
                    if next_pos is not None:
                        next_pos = next_pos + 1
        if rows is not None:
            for r in rows:
                r.finish()
    finally:
        if ours:  # (at a yield the caller's mode is already back)
            torch.set_grad_enabled(caller_grad)
        model.train(was_training)
        if decoder is not None:
            release_decoder(model, decoder)


NAN_CHECK_EVERY = 32  # steps between reads of the NaN check when nothing else needs the host


def _raise_if_nonfinite(first_nonfinite: int) -> None:
    if first_nonfinite != NO_STEP:
        raise GenerationError(
            f"the model produced NaN or inf logits at step {first_nonfinite}: the weights may be corrupted, "
            "or the dtype overflowed (try fp32)"
        )


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


# the return type follows the arguments: a str for a prompt, a list for a list, a TextStream when streaming
@overload
def generate_text(
    model: GPT2, tokenizer: Any, prompt: str, max_new_tokens: int = ..., *, stream: Literal[False] = ..., stop_at_eot: bool = ...,
    stop: str | Sequence[str] | None = ..., temperature: float = ..., top_k: int | None = ..., top_p: float | None = ..., min_p: float | None = ...,
    repetition_penalty: float | None = ..., seed: int | None = ..., generator: torch.Generator | None = ..., static_cache: bool | None = ...,
    compile: bool = ...,
) -> str: ...


@overload
def generate_text(
    model: GPT2, tokenizer: Any, prompt: Sequence[str], max_new_tokens: int = ..., *, stream: Literal[False] = ..., stop_at_eot: bool = ...,
    stop: str | Sequence[str] | None = ..., temperature: float = ..., top_k: int | None = ..., top_p: float | None = ..., min_p: float | None = ...,
    repetition_penalty: float | None = ..., seed: int | None = ..., generator: torch.Generator | None = ..., static_cache: bool | None = ...,
    compile: bool = ...,
) -> list[str]: ...


@overload
def generate_text(
    model: GPT2, tokenizer: Any, prompt: str | Sequence[str], max_new_tokens: int = ..., *, stream: Literal[True], stop_at_eot: bool = ...,
    stop: str | Sequence[str] | None = ..., temperature: float = ..., top_k: int | None = ..., top_p: float | None = ..., min_p: float | None = ...,
    repetition_penalty: float | None = ..., seed: int | None = ..., generator: torch.Generator | None = ..., static_cache: bool | None = ...,
    compile: bool = ...,
) -> TextStream: ...


def generate_text(
    model: GPT2,
    tokenizer: Any,
    prompt: str | Sequence[str],
    max_new_tokens: int = 100,
    *,
    stream: bool = False,
    stop_at_eot: bool = True,
    stop: str | Sequence[str] | None = None,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    min_p: float | None = None,
    repetition_penalty: float | None = None,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    static_cache: bool | None = None,
    compile: bool = False,
) -> str | list[str] | TextStream:
    """Continue a prompt (or a list of prompts) and return the new text, without the prompt.

    The text ends before the first ``stop`` string, or at ``<|endoftext|>`` (unless
    ``stop_at_eot=False``). The other settings are ``generate``'s: ``temperature``, ``top_k``,
    ``top_p``, ``min_p``, ``repetition_penalty``, ``seed``, ``generator``, ``static_cache``, ``compile``.

    With ``stream=True`` it returns a ``TextStream``: an iterator of text pieces as they are produced
    (a list of pieces, one per prompt, when ``prompt`` is a list); joined they are the non-streamed text.
    """
    single = isinstance(prompt, str)
    prompts: list[str] = [prompt] if isinstance(prompt, str) else list(prompt)
    if not prompts:
        raise GenerationError("no prompts given")
    settings = GenerationSettings(temperature, top_k, top_p, min_p, repetition_penalty)  # checked before any work
    idx, mask = encode_prompts(tokenizer, prompts, device=model.device)  # (B, T) each, left-padded
    eos = tokenizer.eot_token if stop_at_eot else None
    _, steps, rows = _start(model, idx, max_new_tokens, settings, attention_mask=mask, stop=stop, tokenizer=tokenizer,
                            eos_token_id=eos, pad_token_id=tokenizer.eot_token, seed=seed, generator=generator,
                            static_cache=static_cache, compile=compile, text_rows=True)
    assert rows is not None  # text_rows=True makes them
    text_stream = TextStream(steps, rows, single)
    if stream:
        return text_stream
    texts: list[list[str]] = [[] for _ in prompts]
    for pieces in text_stream:
        for t, piece in zip(texts, [pieces] if isinstance(pieces, str) else pieces):
            t.append(piece)
    out = ["".join(t) for t in texts]
    return out[0] if single else out
