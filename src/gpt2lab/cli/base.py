"""What every sub-command shares: the registry, the usage error, the ``--model`` / ``--tokenizer``
options and how they load.

Nothing here imports torch: ``gpt2lab COMMAND --help`` builds every parser, and a command imports
what it needs when it runs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..errors import GPT2LabError

if TYPE_CHECKING:
    from ..model import GPT2
    from ..tokenizer import Tokenizer

# name -> (help, add_arguments, run). Each command module registers its commands with @command.
Command = tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int | None]]
COMMANDS: dict[str, Command] = {}


def command(name: str, help: str, add_arguments: Callable[[argparse.ArgumentParser], None]):
    def register(run: Callable[[argparse.Namespace], int | None]):
        COMMANDS[name] = (help, add_arguments, run)
        return run

    return register


class UsageError(GPT2LabError):
    """A command-line mistake detected after parsing."""


# what --model and --tokenizer take, wherever a command loads a model
MODEL_HELP = ("a checkpoint directory (config.json + weights) or a training run's, a LoRA adapter's (PEFT's adapter_config.json: "
              "merged into the base model it names), or a hub id such as gpt2")
TOKENIZER_HELP = "a vocabulary file or directory (default: the model's own, else GPT-2's)"
# --device and --dtype as the commands offer them; gpt2lab.devices reads the names (it imports torch: not here)
DEVICE_HELP = "auto (default: cuda, then mps, then cpu), cpu, cuda, cuda:N or mps"
DTYPE_CHOICES = ("fp32", "bf16", "fp16")


def model_and_tokenizer(args: argparse.Namespace, **load: Any) -> tuple[GPT2, Tokenizer]:
    """``--model`` loaded (``load``: ``dtype``, ``device``) and the tokenizer for it: ``--tokenizer``
    when given, read first so that a wrong path fails before any weights are read; otherwise the
    model's own (else GPT-2's), read after the model, when a hub adapter's base is in the cache."""
    from ..compatibility import check_tokenizer_fits_model
    from ..model import GPT2
    from ..tokenizer import Tokenizer

    given = Tokenizer.from_file(args.tokenizer) if args.tokenizer else None
    model = GPT2.from_pretrained(args.model, **load)
    tokenizer = given or Tokenizer.from_pretrained(args.model)
    check_tokenizer_fits_model(tokenizer.n_vocab, model.config)
    return model, tokenizer


def model_options(p: argparse.ArgumentParser, required: bool) -> None:
    """``--model`` / ``--random`` / ``--seed``: for the commands that also look at untrained shapes."""
    p.add_argument("--model", required=required, help="a checkpoint directory or hub id; with --random, a preset "
                                                       "(gpt2, gpt2-medium, ...) or a directory whose config.json gives the shape")
    p.add_argument("--random", action="store_true", help="random weights of that shape instead of loading a checkpoint")
    p.add_argument("--seed", type=int, default=0, help="seed for random weights and inputs (default 0)")


def model_for_lab(name: str, random: bool, seed: int) -> GPT2:
    """A checkpoint (hub id or directory), or with ``random`` a seeded random model of a preset's
    or a checkpoint's shape."""
    import torch

    from ..config import PRESETS, GPT2Config
    from ..model import GPT2

    if not random:
        return GPT2.from_pretrained(name)
    if name.removeprefix("openai-community/") in PRESETS:
        config = GPT2Config.from_preset(name)
    else:
        from ..weights import resolve_checkpoint_dir

        config = GPT2Config.from_json_file(resolve_checkpoint_dir(name) / "config.json")
    torch.manual_seed(seed)
    return GPT2(config).eval()


def read_text(path: str, hint: str = "") -> str:
    """The text of ``path``, or of standard input for ``-``; a file that is not UTF-8 is a usage error
    (``hint`` says what to give instead)."""
    try:
        if path == "-":
            return sys.stdin.read()
        with open(path, encoding="utf-8") as f:
            return f.read()
    except UnicodeDecodeError:
        where = "standard input" if path == "-" else path
        raise UsageError(f"{where} is not UTF-8 text" + (f"; {hint}" if hint else "")) from None


def read_prompt(prompt: str) -> str:
    """``--prompt``: the text itself, or standard input for ``-``."""
    return read_text(prompt) if prompt == "-" else prompt


def at_least_one(value: int, flag: str) -> None:
    if value < 1:
        raise UsageError(f"{flag} must be at least 1, got {value}")
