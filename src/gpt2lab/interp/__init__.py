"""Interpretability on the hook points: logit lens, activation and attribution patching, head ablation,
logit attribution, activation steering.

    >>> from gpt2lab import GPT2, Tokenizer
    >>> from gpt2lab import interp
    >>> model, tok = GPT2.from_pretrained("gpt2"), Tokenizer.gpt2()
    >>> clean = torch.tensor([tok.encode("When Mary and John went to the store, John gave a drink to")])
    >>> corrupt = torch.tensor([tok.encode("When Mary and John went to the store, Mary gave a drink to")])
    >>> mary, john = tok.encode(" Mary")[0], tok.encode(" John")[0]
    >>> diff = interp.logit_diff(mary, john)                          # metric: logit(Mary) - logit(John), last position
    >>> interp.patch(model, clean, corrupt, diff).shape               # (L, T): restore one layer x position at a time
    >>> interp.patch(model, clean, corrupt, diff, point="attn.z", by="head").shape   # (L, H)
    >>> interp.attribution_patch(model, clean, corrupt, diff).shape   # (L, T) again, estimated from one backward
    >>> interp.logit_attribution(model, clean, mary, john)["h.9.attn.h9"]            # one head's direct effect
    >>> interp.logit_lens(model, clean).shape                         # (L + 1, B, T, V)
    >>> print(interp.check_answer(model, tok, "The Eiffel Tower is in", " Paris"))  # rank, probability, top 10
    >>> love = interp.steering(model, tok, "Love", "Hate", layer=6, coeff=5)   # ActAdd: steer what it writes
    >>> with love.applied(model):
    ...     model.generate(torch.tensor([love.prompt_ids(tok, "I hate you because")]), 30)

Every function runs the model through ``model.run_with_cache`` and ``model.hooks`` (``gpt2lab.hooks``),
under ``torch.no_grad`` (``attribution_patch``: with gradients for the activations, none for the weights)
and in eval mode (the model's mode is restored). Numerics are the model's own:
no LayerNorm folding, no weight centring, so results are those of the released weights.

The result objects (``lens``, ``check_answer``, ``patching``, ``attribution``, ``steer_text``) add what a person wants to look at: token
names, top predictions, baselines; they draw themselves as PNGs and pages (``gpt2lab.views.interp``) and
show in a notebook by themselves (``_repr_html_``).

One module per tool (each re-exported here, so ``interp.patch`` is ``interp.intervene.patch``):

    common.py        inspection mode (eval, no grad), ids checked into a batch, logit_diff, token names
    lenses.py        logit_lens, lens (``Lens``), check_answer (``AnswerCheck``)
    intervene.py     patch, patch_cells, attribution_patch, ablate, patching (``Patching``)
    attributions.py  logit_attribution, attribution (``Attribution``)
    steer.py         steering (``Steering``), steer_text (``SteeredText``)
"""

from __future__ import annotations

from .attributions import Attribution, attribution, logit_attribution
from .common import Metric, logit_diff
from .intervene import POINT_AXES, Patching, ablate, attribution_patch, patch, patch_cells, patching
from .lenses import AnswerCheck, Lens, check_answer, lens, logit_lens
from .steer import SteeredText, Steering, steer_text, steering

__all__ = [
    "logit_lens", "patch", "patch_cells", "attribution_patch", "ablate", "logit_attribution", "logit_diff",
    "Lens", "lens", "AnswerCheck", "check_answer", "Patching", "patching", "Attribution", "attribution", "Steering", "steering", "SteeredText",
    "steer_text", "POINT_AXES", "Metric",
]
