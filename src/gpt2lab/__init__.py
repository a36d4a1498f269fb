"""gpt2lab: a GPT-2 you can read, run, train and look inside.

    >>> from gpt2lab import GPT2, GPT2Config, Tokenizer
    >>> model = GPT2(GPT2Config.from_preset("gpt2"))      # random weights, 124,439,808 parameters
    >>> model = GPT2.from_pretrained("gpt2")             # the released weights (hub or local dir)

Start reading at ``gpt2lab/model.py``: the whole network in one file. Each capability is one module:
``tokenizer``, ``generate``, ``data`` + ``train`` + ``evaluate``, ``attention`` + ``views``, ``explain``,
``trace``; this file only re-exports their main names. ``attention``, ``explain`` and ``trace`` here are
the functions; ``from gpt2lab.attention import ...`` still reaches the modules.

The names load on first use (``import gpt2lab`` does not import torch), so that ``gpt2lab --help``
and ``gpt2lab tokenizer`` start at once.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING

from .config import PRESETS, GPT2Config
from .errors import CheckpointError, ConfigError, GenerationError, GPT2LabError, TokenizerError

if TYPE_CHECKING:
    from .attention import AttentionResult, attention
    from .data import prepare
    from .explain import Explanation, explain
    from .generate import GenerationSettings, generate_text
    from .model import GPT2, KVCache
    from .tokenizer import Tokenizer
    from .trace import Trace, trace
    from .train import TrainConfig, TrainResult  # run with gpt2lab.train.train(TrainConfig(...))

__version__ = "0.1.0"  # written here only: pyproject.toml reads it (dynamic version)

# name -> the module it comes from, imported when the name is first used
_LAZY = {
    "GPT2": "model", "KVCache": "model", "Tokenizer": "tokenizer", "GenerationSettings": "generate", "generate_text": "generate",
    "attention": "attention", "AttentionResult": "attention", "explain": "explain", "Explanation": "explain",
    "trace": "trace", "Trace": "trace", "prepare": "data", "TrainConfig": "train", "TrainResult": "train",
}
_NAMED_AFTER_THEIR_MODULE = ("attention", "explain", "trace")


def __getattr__(name: str) -> object:
    """A re-exported name, or a submodule (``gpt2lab.lora``, ``gpt2lab.interp``) imported on first use."""
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    try:
        return importlib.import_module(f".{name}", __name__)
    except ModuleNotFoundError as err:
        if err.name != f"{__name__}.{name}":  # the submodule exists; something it imports does not
            raise
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


class _Package(types.ModuleType):
    """``gpt2lab.attention``, ``.explain`` and ``.trace`` stay the functions, whichever is imported first:
    importing a submodule sets the package's attribute of that name to the module, and here the
    function the module is named after takes its place (what an eager ``from .attention import
    attention`` after the import did)."""

    def __setattr__(self, name: str, value: object) -> None:
        if name in _NAMED_AFTER_THEIR_MODULE and isinstance(value, types.ModuleType):
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

__all__ = [
    "GPT2", "GPT2Config", "KVCache", "PRESETS", "Tokenizer",
    "GenerationSettings", "generate_text", "attention", "AttentionResult", "explain", "Explanation", "trace", "Trace",
    "prepare", "TrainConfig", "TrainResult",
    "GPT2LabError", "ConfigError", "CheckpointError", "TokenizerError", "GenerationError", "__version__",
]
