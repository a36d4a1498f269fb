"""gpt2lab: a GPT-2 you can read, run, train and look inside.

    >>> from gpt2lab import GPT2, GPT2Config
    >>> model = GPT2(GPT2Config.from_preset("gpt2"))      # random weights, 124,439,808 parameters
    >>> model = GPT2.from_pretrained("gpt2")             # the released weights (hub or local dir)

Start reading at ``gpt2lab/model.py``: the whole network in one file.
"""

from .config import PRESETS, GPT2Config
from .errors import CheckpointError, ConfigError, GPT2LabError, TokenizerError
from .model import GPT2, KVCache
from .tokenizer import Tokenizer
from .attention import AttentionResult, attention  # the function; "from gpt2lab.attention import ..." still reaches the module

__version__ = "0.1.0"

__all__ = ["GPT2", "GPT2Config", "KVCache", "PRESETS", "GPT2LabError", "ConfigError", "CheckpointError", "Tokenizer", "TokenizerError", "__version__"]
from .explain import Explanation, explain  # the function; "from gpt2lab.explain import explain_repr" still reaches the module
__all__ += ["explain", "Explanation"]
__all__ += ["attention", "AttentionResult"]
from .errors import GenerationError  # noqa: E402
from .generate import GenerationSettings, generate_text  # noqa: E402

__all__ += ["GenerationError", "GenerationSettings", "generate_text"]
from .trace import Trace, trace  # noqa: E402  the function; "from gpt2lab.trace import render_trace" still reaches the module
__all__ += ["trace", "Trace"]
from .data import prepare  # noqa: E402
from .train import TrainConfig, TrainResult  # noqa: E402  run with gpt2lab.train.train(TrainConfig(...))
__all__ += ["prepare", "TrainConfig", "TrainResult"]
