"""The ``gpt2lab`` command: one thin sub-command per capability, each a few calls into the API.

A user's mistake (a ``GPT2LabError``, a missing file, a bad value) is printed as one line on
stderr with exit code 2; no traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from .errors import GPT2LabError

# name -> (help, add_arguments, run). Each capability registers itself below.
Command = tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int | None]]
COMMANDS: dict[str, Command] = {}


def command(name: str, help: str, add_arguments: Callable[[argparse.ArgumentParser], None]):
    def register(run: Callable[[argparse.Namespace], int | None]):
        COMMANDS[name] = (help, add_arguments, run)
        return run

    return register


class UsageError(GPT2LabError):
    """A command-line mistake detected after parsing."""


# ---------------------------------------------------------------------------------------------
# demo
# ---------------------------------------------------------------------------------------------


def _demo_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="demo_out", help="directory for what the demo writes (default: demo_out)")


@command("demo", "a short end-to-end tour: build, save, load and run a small GPT-2", _demo_args)
def _demo(args: argparse.Namespace) -> None:
    from .demo import run_demo

    run_demo(args.out)


# ---------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gpt2lab", description="A GPT-2 you can read, run, train and look inside.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (help_text, add_arguments, run) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_arguments(p)
        p.set_defaults(_run=run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = args._run(args)
    except (GPT2LabError, FileNotFoundError, IsADirectoryError, PermissionError) as err:
        message = str(err) if isinstance(err, GPT2LabError) else f"{err.strerror}: {err.filename}"
        print(f"gpt2lab {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"gpt2lab {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(code or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
