"""gpt2lab: a GPT-2 you can read, run, train and look inside.

    >>> from gpt2lab import GPT2, GPT2Config, Tokenizer
    >>> model = GPT2(GPT2Config.from_preset("gpt2"))      # random weights, 124,439,808 parameters
    >>> model = GPT2.from_pretrained("gpt2")             # the released weights (hub or local dir)

Start reading at ``gpt2lab/model.py``: the whole network in one file. Each capability is one module:
``tokenizer``, ``generate``, ``data`` + ``train`` + ``evaluate``, ``attention`` + ``views``, ``explain``,
``trace``; this file only re-exports their main names. ``attention``, ``explain`` and ``trace`` here are
the functions; ``from gpt2lab.attention import ...`` still reaches the modules.
"""

from .config import PRESETS, GPT2Config
from .errors import CheckpointError, ConfigError, GenerationError, GPT2LabError, TokenizerError
from .model import GPT2, KVCache
from .tokenizer import Tokenizer
from .generate import GenerationSettings, generate_text
from .attention import AttentionResult, attention
from .explain import Explanation, explain
from .trace import Trace, trace
from .data import prepare
from .train import TrainConfig, TrainResult  # run with gpt2lab.train.train(TrainConfig(...))

__version__ = "0.1.0"  # written here only: pyproject.toml reads it (dynamic version)

__all__ = [
    "GPT2", "GPT2Config", "KVCache", "PRESETS", "Tokenizer",
    "GenerationSettings", "generate_text", "attention", "AttentionResult", "explain", "Explanation", "trace", "Trace",
    "prepare", "TrainConfig", "TrainResult",
    "GPT2LabError", "ConfigError", "CheckpointError", "TokenizerError", "GenerationError", "__version__",
]
