"""LoRA: fine-tune a GPT-2 by training two thin matrices beside each frozen weight.

Low-Rank Adaptation (Hu et al., 2021) keeps every pretrained weight W (out, in) fixed and learns
a change to it of low rank r instead:

    y = x Wᵀ + b  +  (alpha / r) · B(A(dropout(x)))
        A: (r, in)   reads the input down to r numbers per position
        B: (out, r)  writes those r numbers back out at full width

so the layer computes (W + (alpha / r) · B A) x. For GPT-2's ``c_attn`` (768 -> 2304) at r = 8 that
is 8·768 + 2304·8 = 24,576 trained numbers beside 1.77M frozen ones. ``A`` starts random
(Kaiming-uniform, as ``nn.Linear`` and PEFT draw it) and ``B`` at zero, so the adapted model starts
out computing exactly what the pretrained one did and drifts from it only as B learns.
``alpha / r`` keeps the size of the update about the same when r changes (with alpha = r, 1).

    >>> from gpt2lab.lora import apply_lora, merge_lora, save_adapter
    >>> apply_lora(model, rank=8, alpha=16, targets=("c_attn", "c_proj", "c_fc"))   # doctest: +SKIP
    >>> ... train: only the lora_A / lora_B weights require a gradient ...           # doctest: +SKIP
    >>> save_adapter(model, "run/adapter", base_model_name_or_path="gpt2")           # PEFT's format
    >>> merge_lora(model)     # folds B A into W: a plain GPT2 again, no extra cost per token

The files ``save_adapter`` writes are PEFT's (``adapter_config.json`` + ``adapter_model.safetensors``,
keys ``base_model.model.transformer.h.{i}.attn.c_attn.lora_A.weight``...), so
``peft.PeftModel.from_pretrained(GPT2LMHeadModel.from_pretrained(base), dir)`` loads them. Hugging
Face's GPT-2 stores these matrices as Conv1D, (in, out); PEFT records that as ``fan_in_fan_out:
true``, which changes only how it merges: its A is (r, in) and its B (out, r) either way, the same
orientation as ours, so the tensors are written as they are.

Targets name the block matrices to adapt, as PEFT's ``target_modules`` do: a module name or a
dotted suffix of it. ``c_attn`` (queries, keys, values), ``c_proj`` (both projections back into
the residual stream: ``attn.c_proj`` and ``mlp.c_proj``), ``c_fc`` (the MLP's widening), or the
specific ``attn.c_proj`` / ``mlp.c_proj``. The embeddings, LayerNorms and the LM head stay frozen.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn as nn

from .errors import CheckpointError, ConfigError
from .files import ADAPTER_CONFIG, atomic_write
from .model import GPT2, Linear

DEFAULT_TARGETS = ("c_attn", "c_proj", "c_fc")
# the four matrices of each block that may carry an adapter, by their path inside the block
BLOCK_MATRICES = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
TARGET_NAMES = ("c_attn", "c_proj", "c_fc", "attn.c_proj", "mlp.c_proj")  # what --lora-targets offers

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_PICKLE = "adapter_model.bin"  # what PEFT wrote before safetensors (read with weights_only=True)
PEFT_PREFIX = "base_model.model."  # PEFT's keys: its PeftModel -> LoraModel -> our module names


class LoRALinear(nn.Module):
    """A frozen ``model.Linear`` plus a trainable low-rank update: x Wᵀ + b + (alpha / r) · B(A(dropout(x))).

    ``base_layer`` is the original layer, untouched: its weight keeps the Conv1D memory order and,
    for CPU inference inside ``kernels.packed``, its packed copy; the adapter's two small products
    are added after it, so every path through the layer (training, ``generate``, the packed one)
    includes the adapter. The submodule names (``base_layer``, ``lora_A``, ``lora_B``) are PEFT's.
    """

    def __init__(self, base_layer: Linear, rank: int, alpha: float, dropout: float = 0.0) -> None:
        super().__init__()
        self.base_layer = base_layer
        self.rank = rank
        self.alpha = alpha
        self.scale = alpha / rank
        self.lora_dropout: nn.Module = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        w = base_layer.weight  # (out, in)
        # built on meta and then given memory, so the only random draw is the one below
        self.lora_A = nn.Linear(base_layer.in_features, rank, bias=False, device="meta").to_empty(device=w.device).to(w.dtype)  # (r, in)
        self.lora_B = nn.Linear(rank, base_layer.out_features, bias=False, device="meta").to_empty(device=w.device).to(w.dtype)  # (out, r)
        self.reset_lora_parameters()

    def reset_lora_parameters(self) -> None:
        """A: Kaiming-uniform (``nn.Linear``'s and PEFT's draw); B: zeros, so B A = 0 at the start."""
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)

    @property
    def in_features(self) -> int:
        return self.base_layer.in_features

    @property
    def out_features(self) -> int:
        return self.base_layer.out_features

    def delta_weight(self) -> torch.Tensor:
        """(alpha / r) · B A, (out, in): what the adapter adds to W, in float64.

        Float64 because a GPU multiplies float32 matrices in TF32 (10 bits of mantissa) when training
        allows it: a merge done that way missed the adapted logits by 6e-4 on an H200, in float64 by 1e-6.
        """
        b, a = self.lora_B.weight, self.lora_A.weight  # (out, r), (r, in)
        wide = torch.float32 if a.device.type == "mps" else torch.float64  # MPS has no float64 (nor TF32)
        return (b.to(wide) @ a.to(wide)) * self.scale  # (out, in)

    @property
    def weight(self) -> torch.Tensor:
        """The weight this layer applies, W + (alpha / r) · B A (out, in): a new tensor, so code that reads
        ``layer.weight`` (logit attribution, say) sees the adapted layer. Edit ``base_layer.weight`` to change W."""
        w = self.base_layer.weight  # (out, in)
        return w + self.delta_weight().to(w.dtype)

    @property
    def bias(self) -> torch.Tensor | None:
        return self.base_layer.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base_layer(x)  # (..., out): x Wᵀ + b, packed on CPU inference where it pays
        down = self.lora_A(self.lora_dropout(x))  # (..., r)
        return y + self.scale * self.lora_B(down)  # (..., out)

    def extra_repr(self) -> str:
        return f"rank={self.rank}, alpha={self.alpha:g}"


# ---------------------------------------------------------------------------------------------
# Attaching, reading and folding adapters
# ---------------------------------------------------------------------------------------------


def _matches(path: str, target: str) -> bool:
    """PEFT's rule: a target names a module by its last name, or by a dotted suffix of its path."""
    return path == target or path.endswith("." + target)


def check_lora_settings(rank: int, alpha: float | None, targets: Iterable[str], dropout: float) -> tuple[int, float, tuple[str, ...], float]:
    """The settings, checked: (rank, alpha, targets, dropout), alpha defaulting to the rank (scale 1).

    Raises ``ConfigError`` with one line for a rank below 1, a non-positive alpha, a dropout outside
    [0, 1) or a target that names none of the block matrices.
    """
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ConfigError(f"LoRA rank must be a positive integer, got {rank!r}")
    alpha = float(rank if alpha is None else alpha)
    if not alpha > 0:
        raise ConfigError(f"LoRA alpha must be positive, got {alpha:g}")
    if not 0.0 <= dropout < 1.0:
        raise ConfigError(f"LoRA dropout must be in [0, 1), got {dropout}")
    names = tuple(dict.fromkeys(t.strip() for t in (targets.split(",") if isinstance(targets, str) else targets) if t.strip()))
    if not names:
        raise ConfigError(f"no LoRA targets given; choose from {', '.join(TARGET_NAMES)}")
    for t in names:
        if not any(_matches(m, t) for m in BLOCK_MATRICES):
            raise ConfigError(f"unknown LoRA target {t!r}; choose from {', '.join(TARGET_NAMES)}")
    return rank, alpha, names, float(dropout)


def lora_layers(model: nn.Module) -> dict[str, LoRALinear]:
    """Every adapted layer of ``model`` by its path (``transformer.h.0.attn.c_attn``); empty for a plain model."""
    return {name: m for name, m in model.named_modules() if isinstance(m, LoRALinear)}


def apply_lora(model: GPT2, rank: int, alpha: float | None = None, targets: Iterable[str] = DEFAULT_TARGETS,
               dropout: float = 0.0) -> GPT2:
    """Freeze every weight of ``model`` and wrap each targeted block matrix in a ``LoRALinear``, in place.

    Args:
        rank: r, the inner width of each adapter (1 and up; 4 to 64 is usual).
        alpha: the update is scaled by alpha / r (default alpha = r: scale 1).
        targets: which block matrices to adapt (module docstring), names or one comma-separated string;
            default c_attn, c_proj, c_fc: all four.
        dropout: dropout on the adapter's input during training (the frozen path has none of its own).

    Returns ``model``, whose only trainable parameters are now the adapters' A and B (and a
    classifier's new head, ``score``). A draws from
    torch's global generator: seed it for a reproducible start. The hook points are unchanged (they
    sit on the modules above these layers) and see the adapted activations.
    """
    rank, alpha, names, dropout = check_lora_settings(rank, alpha, targets, dropout)
    if lora_layers(model):
        raise ConfigError("this model already carries LoRA adapters; merge_lora(model) first to stack another")
    model.requires_grad_(False)
    for block in model.transformer.h:
        for path in BLOCK_MATRICES:
            if any(_matches(path, t) for t in names):
                parent_name, _, name = path.rpartition(".")
                parent = block.get_submodule(parent_name)
                setattr(parent, name, LoRALinear(cast(Linear, getattr(parent, name)), rank, alpha, dropout))
    score = getattr(model, "score", None)  # a classifier's head (gpt2lab.classify) is new: it trains whole,
    if isinstance(score, nn.Module):  # as PEFT's modules_to_save trains it
        score.requires_grad_(True)
    return model


def lora_settings(model: nn.Module) -> dict[str, Any] | None:
    """``apply_lora``'s arguments that rebuild ``model``'s adapters (rank, alpha, targets, dropout), or None.

    ``targets`` lists the adapted matrices by their path in a block (``attn.c_attn``, ...): what the
    user's names selected, spelled out (``c_proj`` -> ``attn.c_proj``, ``mlp.c_proj``).
    """
    layers = lora_layers(model)
    if not layers:
        return None
    first = next(iter(layers.values()))
    paths = {name.split(".", 3)[3] for name in layers}  # transformer.h.{i}.attn.c_attn -> attn.c_attn
    dropout = first.lora_dropout.p if isinstance(first.lora_dropout, nn.Dropout) else 0.0
    return {"rank": first.rank, "alpha": first.alpha, "targets": tuple(p for p in BLOCK_MATRICES if p in paths), "dropout": dropout}


def trainable_parameters(model: nn.Module) -> tuple[int, int]:
    """(parameters that train, all parameters): a tied matrix counts once, as ``GPT2.num_parameters`` does."""
    params = list(model.parameters())  # parameters() yields a shared tensor once
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapters' weights only, by our names (``transformer.h.0.attn.c_attn.lora_A.weight``, (r, in);
    ``...lora_B.weight``, (out, r)): all a LoRA run needs to store beside the base model's name."""
    return {k: v for k, v in model.state_dict().items() if ".lora_A." in k or ".lora_B." in k}


@torch.no_grad()
def merge_lora(model: GPT2) -> GPT2:
    """Fold every adapter into its weight, W <- W + (alpha / r) · B A, and take the adapters out, in place.

    Returns ``model``: a plain ``GPT2`` again, every parameter trainable as a new model's, computing
    what the adapted one computed (to float rounding) at no extra cost per token; ``save_pretrained``
    writes it in Hugging Face's format. W is updated through its logical (out, in) view, so the
    Conv1D memory order ``model.Linear`` keeps is kept too. (Copy the model first to keep the adapters:
    ``merge_lora(copy.deepcopy(model))``.)
    """
    for path, layer in lora_layers(model).items():
        base = layer.base_layer
        base.weight.add_(layer.delta_weight().to(base.weight.dtype))  # (out, in), in place
        parent_name, _, name = path.rpartition(".")
        setattr(model.get_submodule(parent_name), name, base)
    model.requires_grad_(True)
    return model


@torch.no_grad()
def merged_copy(model: GPT2) -> GPT2:
    """A plain ``GPT2`` computing what ``model`` with its adapters computes, ``model`` left as it is.

    Only the adapted matrices are new tensors (W + (alpha / r) · B A, in W's memory order); every
    other tensor is shared with ``model``, so saving a LoRA run's merged model costs those matrices'
    memory, not a copy of the whole network. For a plain model, ``model`` itself.
    """
    layers = lora_layers(model)
    if not layers:
        return model
    from .classify import empty_like

    with torch.device("meta"):
        plain = empty_like(model, model.config)  # a classifier stays one (its head comes along)
    state = {k: v for k, v in model.state_dict().items() if ".lora_A." not in k and ".lora_B." not in k}
    for path, layer in layers.items():
        w = layer.base_layer.weight  # (out, in)
        merged = torch.empty_like(w)  # (out, in), same strides: our Conv1D order stays
        torch.add(w, layer.delta_weight().to(w.dtype), out=merged)
        del state[f"{path}.base_layer.weight"]
        state[f"{path}.weight"] = merged
        if layer.base_layer.bias is not None:
            state[f"{path}.bias"] = state.pop(f"{path}.base_layer.bias")
    plain.load_state_dict(state, assign=True)
    plain.tie_weights()
    return plain.train(model.training)


def base_fingerprint(model: nn.Module) -> str:
    """A hash of the bytes of every tensor of ``model`` (adapters aside). A LoRA run stores only its
    adapters and re-reads its base model when it resumes: this tells whether that is the same model."""
    import hashlib

    digest = hashlib.blake2b(digest_size=16)
    for name, t in model.state_dict().items():
        if ".lora_A." not in name and ".lora_B." not in name:
            digest.update(name.encode())
            digest.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------
# PEFT's file format
# ---------------------------------------------------------------------------------------------


# what PEFT trains whole beside the adapters of a sequence classifier (its task_type SEQ_CLS default)
CLASSIFIER_MODULES = ["classifier", "score"]


def _head(model: nn.Module) -> nn.Module | None:
    """A classifier's new head (``gpt2lab.classify``'s ``score``), which trains whole beside the adapters; else None."""
    score = getattr(model, "score", None)
    return score if isinstance(score, nn.Module) else None


def peft_config(model: nn.Module, base_model_name_or_path: str | None = None) -> dict[str, Any]:
    """The ``adapter_config.json`` PEFT writes for these adapters on a ``GPT2LMHeadModel``, or on a
    ``GPT2ForSequenceClassification`` for a classifier (whose head PEFT saves whole: ``modules_to_save``)."""
    settings = lora_settings(model)
    if settings is None:
        raise ConfigError("this model carries no LoRA adapters (apply_lora first)")
    classifier = _head(model) is not None
    return {
        "peft_type": "LORA",
        "task_type": "SEQ_CLS" if classifier else "CAUSAL_LM",
        "base_model_name_or_path": base_model_name_or_path,
        "r": settings["rank"],
        "lora_alpha": settings["alpha"],
        "lora_dropout": settings["dropout"],
        "target_modules": list(settings["targets"]),
        "fan_in_fan_out": True,  # transformers' GPT-2 keeps these matrices as Conv1D, (in, out)
        "bias": "none",
        "modules_to_save": CLASSIFIER_MODULES if classifier else None,
        "init_lora_weights": True,
        "use_rslora": False,
        "use_dora": False,
        "layers_to_transform": None,
        "layers_pattern": None,
        "rank_pattern": {},
        "alpha_pattern": {},
        "inference_mode": True,
    }


def save_adapter(model: nn.Module, directory: str | os.PathLike, base_model_name_or_path: str | None = None) -> Path:
    """Write ``model``'s adapters in PEFT's format: ``adapter_config.json`` and ``adapter_model.safetensors``
    (keys ``base_model.model.`` + our names), each file atomically; a classifier's head too, as PEFT
    saves it (``score.weight``). Returns the directory."""
    from .weights import write_safetensors

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = json.dumps(peft_config(model, base_model_name_or_path), indent=2) + "\n"
    tensors = [(PEFT_PREFIX + k, v.detach().cpu()) for k, v in lora_state_dict(model).items()]
    head = _head(model)
    if head is not None:
        tensors += [(f"{PEFT_PREFIX}score.{k}", v.detach().cpu()) for k, v in head.state_dict().items()]
    write_safetensors(directory / ADAPTER_WEIGHTS, tensors)
    atomic_write(directory / ADAPTER_CONFIG, lambda tmp: tmp.write_text(config, encoding="utf-8"))
    return directory


def load_adapter(model: GPT2, directory: str | os.PathLike) -> GPT2:
    """Attach the LoRA adapter a PEFT directory holds (``save_adapter``'s, or PEFT's own for GPT-2) to
    ``model``, in place; ``merge_lora`` afterwards folds it in. Raises ``CheckpointError`` for what
    this LoRA does not implement (DoRA, rsLoRA, per-layer ranks, trained biases) or shapes that do
    not fit the model."""
    from .weights import iter_checkpoint

    directory = Path(directory)
    try:
        config = json.loads((directory / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise CheckpointError(f"cannot read {directory / ADAPTER_CONFIG} ({err}); is this a PEFT adapter directory?") from None
    unsupported = [key for key in ("use_dora", "use_rslora", "rank_pattern", "alpha_pattern", "layers_to_transform") if config.get(key)]
    head = _head(model)
    if config.get("modules_to_save") and not (head is not None and set(config["modules_to_save"]) <= set(CLASSIFIER_MODULES)):
        unsupported.append(f"modules_to_save {config['modules_to_save']}")
    if config.get("peft_type") != "LORA" or config.get("bias", "none") != "none" or unsupported:
        raise CheckpointError(f"{directory} holds an adapter this LoRA does not implement "
                              f"(peft_type {config.get('peft_type')!r}, bias {config.get('bias')!r}, {', '.join(unsupported) or 'no extras'})")
    targets = config["target_modules"]
    apply_lora(model, int(config["r"]), float(config["lora_alpha"]), [targets] if isinstance(targets, str) else targets,
               float(config.get("lora_dropout", 0.0)))
    weights = next((directory / name for name in (ADAPTER_WEIGHTS, ADAPTER_PICKLE) if (directory / name).is_file()), None)
    if weights is None:
        raise CheckpointError(f"{directory} has no adapter weights: expected {ADAPTER_WEIGHTS} (or an older PEFT's {ADAPTER_PICKLE})")
    state = {k.removeprefix(PEFT_PREFIX).replace(".default.", "."): v for k, v in iter_checkpoint([weights])}
    state = {k.replace(".modules_to_save.", "."): v for k, v in state.items()}
    own = lora_state_dict(model)
    if head is not None:
        own.update({f"score.{k}": v for k, v in head.state_dict().items()})
    if set(state) != set(own):
        raise CheckpointError(f"{directory} does not fit this model: adapter tensors {sorted(set(state) ^ set(own))[:3]} differ")
    with torch.no_grad():
        for k, v in state.items():
            if v.shape != own[k].shape:
                raise CheckpointError(f"{directory}: {k} is {tuple(v.shape)}, this model needs {tuple(own[k].shape)}")
            own[k].copy_(v)
    return model


def describe(model: nn.Module) -> str:
    """One line for a LoRA model: how many parameters train out of how many, and on what."""
    trainable, total = trainable_parameters(model)
    settings = lora_settings(model) or {}
    return (f"LoRA rank {settings.get('rank')}, alpha {settings.get('alpha', 0):g} on {', '.join(settings.get('targets', ()))}: "
            f"training {trainable:,} of {total:,} parameters ({100 * trainable / max(total, 1):.2f}%)")


__all__ = ["LoRALinear", "apply_lora", "merge_lora", "merged_copy", "base_fingerprint", "lora_state_dict", "lora_layers",
           "lora_settings", "check_lora_settings", "trainable_parameters", "save_adapter", "load_adapter", "peft_config", "describe",
           "DEFAULT_TARGETS", "TARGET_NAMES", "BLOCK_MATRICES", "ADAPTER_CONFIG", "ADAPTER_WEIGHTS", "ADAPTER_PICKLE"]
