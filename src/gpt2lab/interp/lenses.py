"""The logit lens (nostalgebraist, 2020): what the model would predict if it stopped after each
block, and ``check_answer``, which reads it at a known answer's tokens (TransformerLens's
``test_prompt``, with the rank after every block added)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..errors import GPT2LabError, InputError
from ..tokens import token_ids
from .common import _as_batch, _inspecting, _namer

if TYPE_CHECKING:
    from ..model import GPT2


def logit_lens(model: GPT2, idx: torch.Tensor | Sequence[int]) -> torch.Tensor:
    """What the model would predict if it stopped after each layer: (L + 1, B, T, V) logits.

    Entry l reads ``h.{l}.resid_pre`` (entry 0: the embeddings), the last entry ``h.{L-1}.resid_post``;
    each stream goes through ``ln_f`` with its statistics recomputed on that stream (not the final
    stream's scale), then the LM head. The last entry is the model's own output.
    """
    with _inspecting(model):
        return _unembed(model, _lens_streams(model, _as_batch(model, idx)))  # (L + 1, B, T, V)


def _lens_streams(model: GPT2, idx: torch.Tensor) -> torch.Tensor:
    """The residual stream before each block and after the last: (L + 1, B, T, C), what the lens reads."""
    L = model.config.n_layer
    names = [f"h.{i}.resid_pre" for i in range(L)] + [f"h.{L - 1}.resid_post"]
    _, cache = model.run_with_cache(idx, names=names, last_logits_only=True)
    return torch.stack([cache[n] for n in names])


def _unembed(model: GPT2, streams: torch.Tensor) -> torch.Tensor:
    """Streams (..., C) read as the output reads the last one: ``ln_f`` on each stream's own statistics, then
    the LM head: (..., V)."""
    return model.lm_head(model.transformer.ln_f(streams))


@dataclass
class Lens:
    """The logit lens of one text: for each layer (rows, 0 = embeddings, L = the output) and position
    (columns), the top predicted next tokens and their probabilities."""

    tokens: list[str]
    top_ids: torch.Tensor  # (L + 1, T, k)
    top_probs: torch.Tensor  # (L + 1, T, k)
    top_tokens: list[list[list[str]]]  # [layer][position][rank]
    model_name: str = ""

    @property
    def n_layer(self) -> int:
        return self.top_ids.size(0) - 1

    def plot(self, path: str | Path) -> Path:
        from ..views.interp import plot_lens

        return plot_lens(self, path)

    def save(self, out_dir: str | Path) -> dict[str, Path]:
        from ..views.interp import save_lens

        return save_lens(self, out_dir)

    def _repr_html_(self) -> str:
        from ..views.interp import lens_fragment

        return lens_fragment(self)


def lens(model: GPT2, tokenizer: Any, text_or_ids: str | Sequence[int] | torch.Tensor, top_k: int = 5, model_name: str = "") -> Lens:
    """``logit_lens`` of one text with token names: a ``Lens`` to read, plot or save as a page."""
    ids = token_ids(tokenizer, text_or_ids, model)
    probs = logit_lens(model, ids)[:, 0].float().softmax(-1)  # (L + 1, T, V)
    top = probs.topk(min(top_k, probs.size(-1)), dim=-1)
    name = _namer(tokenizer)
    top_tokens = [[[name(i) for i in row] for row in layer] for layer in top.indices.tolist()]
    return Lens(tokens=[name(i) for i in ids], top_ids=top.indices.cpu(), top_probs=top.values.cpu(),
                top_tokens=top_tokens, model_name=model_name)


@dataclass(repr=False)
class AnswerCheck:
    """How a model does on a prompt whose answer is known: TransformerLens's ``test_prompt``, returned
    rather than printed, with the logit lens added. Each answer token is read where the model predicts
    it, with the answer's earlier tokens already in the input (teacher forcing): its rank (0 = the
    model's top prediction), logit and probability, the top predictions there, and its rank after
    every block (``layer_ranks``: where in the network the answer comes up)."""

    prompt_tokens: list[str]
    answer_tokens: list[str]
    answer_ids: list[int]
    ranks: list[int]  # per answer token, at the output
    logits: list[float]
    probs: list[float]
    top: list[list[tuple[str, float, float]]]  # per answer token: (token, logit, probability), most likely first
    layer_ranks: torch.Tensor  # (L + 1, A): after the embeddings (row 0), after each block; row L is the output
    model_name: str = ""

    def to_text(self) -> str:
        from ..views.interp import answer_text

        return answer_text(self)

    def __repr__(self) -> str:  # a notebook shows the report
        return self.to_text().rstrip("\n")


def check_answer(model: GPT2, tokenizer: Any, prompt: str, answer: str, top_k: int = 10, *, prepend_eot: bool = True,
                 model_name: str = "") -> AnswerCheck:
    """Does the model continue ``prompt`` with ``answer``, and how surely: an ``AnswerCheck``.

    ``answer`` may be several tokens; a word after a space starts with the space (``" Mary"``).
    ``prepend_eot`` starts the prompt with ``<|endoftext|>``, as TransformerLens's ``test_prompt`` starts
    GPT-2's with its BOS (the same token). One forward pass of prompt + answer gives every figure.
    """
    if not answer:
        raise InputError("the answer is empty: give the text the prompt should continue with (' Mary')")
    head: list[int] = []
    if prepend_eot:
        try:
            head = [int(tokenizer.eot_token)]
        except GPT2LabError:
            raise InputError("this vocabulary has no <|endoftext|> to begin the prompt with: pass prepend_eot=False "
                             "(gpt2lab answer --no-eot)") from None
    prompt_ids = head + token_ids(tokenizer, prompt, min_tokens=0 if prepend_eot else 1)
    answer_ids = [int(i) for i in tokenizer.encode(answer)]
    idx = _as_batch(model, prompt_ids + answer_ids)  # (1, P + A), checked against the context and vocabulary
    L, P, A = model.config.n_layer, len(prompt_ids), len(answer_ids)
    with _inspecting(model):
        # the logit lens at the A positions that predict the answer tokens; the last row is the model's output
        streams = _lens_streams(model, idx)[:, 0, P - 1 : P + A - 1]  # (L + 1, A, C)
        lensed = _unembed(model, streams).float()  # (L + 1, A, V)
    target = torch.tensor(answer_ids, device=lensed.device)  # (A,)
    answer_logits = lensed.gather(-1, target.expand(L + 1, A)[..., None])  # (L + 1, A, 1)
    layer_ranks = (lensed > answer_logits).sum(-1).cpu()  # (L + 1, A): tokens scored above the answer
    out = lensed[-1]  # (A, V)
    probs = out.softmax(-1)  # (A, V)
    top = probs.topk(min(top_k, probs.size(-1)), dim=-1)
    name = _namer(tokenizer)
    return AnswerCheck(
        prompt_tokens=[name(i) for i in prompt_ids], answer_tokens=[name(i) for i in answer_ids], answer_ids=answer_ids,
        ranks=layer_ranks[-1].tolist(), logits=answer_logits[-1, :, 0].tolist(),
        probs=probs.gather(-1, target[:, None])[:, 0].tolist(),
        top=[[(name(i), float(out[a, i]), float(p)) for i, p in zip(ids, ps)]
             for a, (ids, ps) in enumerate(zip(top.indices.tolist(), top.values.tolist()))],
        layer_ranks=layer_ranks, model_name=model_name)


__all__ = ["logit_lens", "Lens", "lens", "AnswerCheck", "check_answer"]
