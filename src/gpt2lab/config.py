"""GPT-2's hyper-parameters: one dataclass, the four published presets, and the mapping to
Hugging Face's ``config.json``.

The field names are GPT-2's own (``n_embd``, ``n_layer``, ``n_head``, ``block_size``...), so what you
read here is what you read in the paper, in nanoGPT and in transformers' ``GPT2Config``.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from .errors import ConfigError

# The four checkpoints OpenAI released, as their shapes. Everything else (vocabulary, context,
# epsilon, dropout) is shared by all four and comes from the dataclass defaults.
PRESETS: dict[str, dict[str, int]] = {
    "gpt2": dict(n_layer=12, n_head=12, n_embd=768),  # 124M
    "gpt2-medium": dict(n_layer=24, n_head=16, n_embd=1024),  # 355M
    "gpt2-large": dict(n_layer=36, n_head=20, n_embd=1280),  # 774M
    "gpt2-xl": dict(n_layer=48, n_head=25, n_embd=1600),  # 1558M
}

# Activation names Hugging Face uses in config.json, and the function each means here.
# "gelu_new" is GPT-2's original tanh approximation; "gelu" is the exact erf form (not GPT-2's).
ACTIVATIONS = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu_fast": "gelu_tanh", "gelu": "gelu"}


@dataclass
class GPT2Config:
    """The shape and numerics of a GPT-2.

    Attributes:
        vocab_size: number of token ids (50257 for GPT-2: 256 bytes + 50000 merges + <|endoftext|>).
        block_size: context length, the number of learned positions (``n_positions`` in HF).
        n_layer: number of transformer blocks.
        n_head: attention heads per block; ``n_embd`` must divide by it.
        n_embd: width of the residual stream.
        n_inner: width of the MLP's hidden layer; ``None`` means ``4 * n_embd``.
        embd_pdrop, attn_pdrop, resid_pdrop: dropout after the embeddings, on the attention
            probabilities, and on each residual branch. GPT-2 trained with 0.1; fine-tuning often uses 0.
        layer_norm_epsilon: added to the variance in every LayerNorm (1e-5).
        bias: biases in LayerNorms and in every linear layer except the QKV projection.
        qkv_bias: bias in the fused QKV projection (GPT-2 has one; many from-scratch recipes drop it).
        tie_word_embeddings: the LM head reuses the token-embedding matrix (GPT-2 does).
        activation: "gelu_tanh" (GPT-2's) or "gelu" (exact erf).
        initializer_range: standard deviation of the normal initialisation (0.02).
    """

    vocab_size: int = 50257
    block_size: int = 1024
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    n_inner: int | None = None
    embd_pdrop: float = 0.1
    attn_pdrop: float = 0.1
    resid_pdrop: float = 0.1
    layer_norm_epsilon: float = 1e-5
    bias: bool = True
    qkv_bias: bool = True
    tie_word_embeddings: bool = True
    activation: str = "gelu_tanh"
    initializer_range: float = 0.02

    def __post_init__(self) -> None:
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.n_embd % self.n_head:
            raise ConfigError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if self.activation not in ("gelu_tanh", "gelu"):
            raise ConfigError(f"activation must be 'gelu_tanh' or 'gelu', got {self.activation!r}")
        for name in ("embd_pdrop", "attn_pdrop", "resid_pdrop"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"{name} must be in [0, 1), got {getattr(self, name)!r}")

    @property
    def head_dim(self) -> int:
        """Width of one attention head: n_embd / n_head (64 in every GPT-2)."""
        return self.n_embd // self.n_head

    @property
    def mlp_dim(self) -> int:
        """Width of the MLP's hidden layer (4 * n_embd unless n_inner says otherwise)."""
        return self.n_inner if self.n_inner is not None else 4 * self.n_embd

    # -- presets -------------------------------------------------------------------------------

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> GPT2Config:
        """One of "gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl", with optional field overrides.

        >>> GPT2Config.from_preset("gpt2", embd_pdrop=0.0).n_embd
        768
        """
        key = name.removeprefix("openai-community/")
        if key not in PRESETS:
            raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
        return cls(**{**PRESETS[key], **overrides})

    def replace(self, **changes: Any) -> GPT2Config:
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    # -- Hugging Face config.json ----------------------------------------------------------------

    @classmethod
    def from_hf_dict(cls, hf: dict[str, Any]) -> GPT2Config:
        """Read a transformers ``GPT2Config`` dictionary (the contents of ``config.json``).

        Options that change the function the network computes and that this model does not
        implement raise ConfigError instead of loading into silently different numbers.
        """
        model_type = hf.get("model_type", "gpt2")
        if model_type != "gpt2":
            raise ConfigError(f"config.json describes a {model_type!r} model, not GPT-2 (model_type must be 'gpt2')")
        unsupported = {
            "scale_attn_by_inverse_layer_idx": (True, "attention scores scaled by 1/(layer index + 1)"),
            "add_cross_attention": (True, "cross-attention layers (encoder-decoder use)"),
            "scale_attn_weights": (False, "attention scores without the 1/sqrt(head_dim) scale"),
        }
        for key, (bad, what) in unsupported.items():
            if hf.get(key, not bad) == bad:
                raise ConfigError(f"config.json sets {key}={json.dumps(bad)} ({what}); gpt2lab does not implement it")
        act = hf.get("activation_function", "gelu_new")
        if act not in ACTIVATIONS:
            raise ConfigError(f"config.json activation_function={act!r} is not supported; use one of {', '.join(ACTIVATIONS)}")
        extra = hf.get("gpt2lab", {})  # our own flags that HF's schema has no name for
        try:
            return cls(
                vocab_size=int(hf.get("vocab_size", 50257)),
                block_size=int(hf.get("n_positions", hf.get("n_ctx", 1024))),
                n_layer=int(hf.get("n_layer", 12)),
                n_head=int(hf.get("n_head", 12)),
                n_embd=int(hf.get("n_embd", 768)),
                n_inner=hf.get("n_inner"),
                embd_pdrop=float(hf.get("embd_pdrop", 0.1)),
                attn_pdrop=float(hf.get("attn_pdrop", 0.1)),
                resid_pdrop=float(hf.get("resid_pdrop", 0.1)),
                layer_norm_epsilon=float(hf.get("layer_norm_epsilon", 1e-5)),
                tie_word_embeddings=bool(hf.get("tie_word_embeddings", True)),
                activation=ACTIVATIONS[act],
                initializer_range=float(hf.get("initializer_range", 0.02)),
                bias=bool(extra.get("bias", True)),
                qkv_bias=bool(extra.get("qkv_bias", True)),
            )
        except (TypeError, ValueError) as err:
            if isinstance(err, ConfigError):
                raise
            raise ConfigError(f"config.json has a value of the wrong type: {err}") from None

    def to_hf_dict(self) -> dict[str, Any]:
        """The ``config.json`` transformers reads as ``GPT2LMHeadModel``."""
        hf: dict[str, Any] = {
            "architectures": ["GPT2LMHeadModel"],
            "model_type": "gpt2",
            "vocab_size": self.vocab_size,
            "n_positions": self.block_size,
            "n_ctx": self.block_size,
            "n_embd": self.n_embd,
            "n_layer": self.n_layer,
            "n_head": self.n_head,
            "n_inner": self.n_inner,
            "activation_function": "gelu_new" if self.activation == "gelu_tanh" else "gelu",
            "embd_pdrop": self.embd_pdrop,
            "attn_pdrop": self.attn_pdrop,
            "resid_pdrop": self.resid_pdrop,
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "initializer_range": self.initializer_range,
            "tie_word_embeddings": self.tie_word_embeddings,
            "scale_attn_weights": True,
            "scale_attn_by_inverse_layer_idx": False,
            "reorder_and_upcast_attn": False,
            "bos_token_id": 50256 if self.vocab_size > 50256 else self.vocab_size - 1,
            "eos_token_id": 50256 if self.vocab_size > 50256 else self.vocab_size - 1,
        }
        if not (self.bias and self.qkv_bias):
            # HF's GPT-2 always has biases; we save zeros for the missing ones (the same function)
            # and remember here that they are not parameters of this model.
            hf["gpt2lab"] = {"bias": self.bias, "qkv_bias": self.qkv_bias}
        return hf

    @classmethod
    def from_json_file(cls, path: str | os.PathLike) -> GPT2Config:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"no config.json at {path}") from None
        except json.JSONDecodeError as err:
            raise ConfigError(f"{path} is not valid JSON: {err}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path} must hold a JSON object")
        return cls.from_hf_dict(data)

    def to_json_file(self, path: str | os.PathLike) -> None:
        from .files import atomic_write_bytes

        atomic_write_bytes(Path(path), (json.dumps(self.to_hf_dict(), indent=2) + "\n").encode())


def parameter_counts(config: GPT2Config) -> dict[str, int]:
    """Parameters of each part of the network, derived from the config alone (no model built).

    The one place this arithmetic lives: ``explain``, the tests and the docs all use it, and the
    tests hold it equal to the parameters a built ``GPT2`` really has.

    >>> parameter_counts(GPT2Config.from_preset("gpt2"))["total"]
    124439808
    """
    C, V, F_ = config.n_embd, config.vocab_size, config.mlp_dim
    b = 1 if config.bias else 0
    ln = C + b * C  # weight (+ bias)
    c_attn = C * 3 * C + (3 * C if config.qkv_bias else 0)  # queries, keys and values at once
    attn_proj = C * C + b * C
    c_fc = C * F_ + b * F_
    mlp_proj = F_ * C + b * C
    attn = c_attn + attn_proj
    mlp = c_fc + mlp_proj
    block = 2 * ln + attn + mlp
    counts = {
        "wte": V * C,
        "wpe": config.block_size * C,
        "attn": config.n_layer * attn,
        "mlp": config.n_layer * mlp,
        "ln": config.n_layer * 2 * ln + ln,  # ln_1 and ln_2 per block, and ln_f
        "per_block": block,
        "lm_head": 0 if config.tie_word_embeddings else V * C,  # tied: it *is* wte
        # one block, part by part (what ``explain`` prints line by line)
        "block.ln_1": ln,
        "block.attn.c_attn": c_attn,
        "block.attn.c_proj": attn_proj,
        "block.attn": attn,
        "block.ln_2": ln,
        "block.mlp.c_fc": c_fc,
        "block.mlp.c_proj": mlp_proj,
        "block.mlp": mlp,
        "ln_f": ln,
    }
    counts["total"] = counts["wte"] + counts["wpe"] + config.n_layer * block + ln + counts["lm_head"]
    return counts
