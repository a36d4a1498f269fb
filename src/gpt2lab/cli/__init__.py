"""The ``gpt2lab`` command: one thin sub-command per capability, each a few calls into the API.

Each module here registers the commands of one part of the journey (``models``: demo, generate,
chat, compare; ``tokenizer``; ``training``: prepare, train, eval, runs; ``inside``: explain, trace,
attention, lens, answer, patch, ...); ``base`` holds what they share. A user's mistake (a ``GPT2LabError``,
a missing file, a bad value) is printed as one line on stderr with exit code 2; no traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from .. import __version__
from ..errors import GPT2LabError
from . import inside, models, tokenizer, training  # noqa: F401  (each registers its commands)
from .base import COMMANDS, MODEL_HELP, UsageError, command

__all__ = ["COMMANDS", "MODEL_HELP", "UsageError", "build_parser", "command", "main", "out_of_memory"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gpt2lab", description="A GPT-2 you can read, run, train and look inside.")
    parser.add_argument("--version", action="version", version=f"gpt2lab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    # the order a newcomer meets them in
    journey = ["demo", "generate", "chat", "compare", "tokenizer", "prepare", "train", "runs", "eval",
               "explain", "attention", "lens", "answer", "patch", "steer", "attribute", "trace", "experiment"]
    for name in sorted(COMMANDS, key=lambda n: journey.index(n) if n in journey else len(journey)):
        help_text, add_arguments, run = COMMANDS[name]
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_arguments(p)
        p.set_defaults(_run=run)
    return parser


def out_of_memory(err: BaseException, args: argparse.Namespace) -> str | None:
    """A GPU's out-of-memory error (``torch.OutOfMemoryError``, a dozen lines) as one line that says
    what to change, or None for any other error."""
    if type(err).__name__ != "OutOfMemoryError":
        return None
    import re

    text = str(err)
    wanted, total = re.search(r"Tried to allocate ([\d.]+ [KMGT]?i?B)", text), re.search(r"total capacity of ([\d.]+ [KMGT]?i?B)", text)
    detail = (f" (it asked for {wanted[1]} more" + (f" of {total[1]} in all" if total else "") + ")") if wanted else ""
    if args.command == "train":
        from ..train.checkpoint import CHECKPOINT

        kept = Path(args.out) / CHECKPOINT
        smaller = "a smaller --batch-size and a larger --grad-accum (the same tokens per step)"
        advice = f"start again with --activation-checkpointing or --chunked-loss, or with {smaller}"
        if kept.is_file():
            advice = (f"its last checkpoint, {kept}, is intact: go on with --resume and --activation-checkpointing or --chunked-loss "
                      f"(less memory, the same run), or start again with {smaller}")
    elif hasattr(args, "batch_size"):
        advice = "use a smaller --batch-size, or --dtype bf16"
    else:
        advice = "use --dtype bf16 (half the memory), a smaller model, or --device cpu"
    return f"the GPU ran out of memory{detail}; {advice}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = args._run(args)
    except (GPT2LabError, FileNotFoundError, IsADirectoryError, PermissionError) as err:
        message = str(err) if isinstance(err, GPT2LabError) else f"{err.strerror}: {err.filename}"
        print(f"gpt2lab {args.command}: error: {message}", file=sys.stderr)
        return 2
    except RuntimeError as err:  # torch.OutOfMemoryError among them (torch is not imported here)
        advice = out_of_memory(err, args)
        if advice is None:
            raise
        print(f"gpt2lab {args.command}: error: {advice}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # the reader went away (`gpt2lab ... | head`): not an error; keep Python quiet at exit too
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print(f"gpt2lab {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(code or 0)
