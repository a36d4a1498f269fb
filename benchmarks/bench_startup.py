"""How long the command line takes to answer (``python benchmarks/bench_startup.py``): each case a fresh
interpreter, best of ``--repeat``, wall clock.

1. ``gpt2lab --help``, against the same with torch imported first (what ``import gpt2lab`` cost before
   its names loaded on first use).
2. A quick look at a text's tokens: ``gpt2lab tokenizer encode TEXT --ids`` against the one-liners a
   user would write with each peer: tiktoken's ``Encoding`` (the floor: no command line, no checks)
   and transformers' ``GPT2TokenizerFast`` on the same vocabulary (``vocab.json`` + ``merges.txt``).
   Every side must print the same ids.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE))

from bench_tokenizer import gpt2_tokenizer  # noqa: E402

from gpt2lab.bpe import GPT2_PATTERN  # noqa: E402

TEXT = "The quick brown fox jumps over the lazy dog. Unicode too: café, 東京, 🙂."


def best_of(code: str, repeat: int) -> tuple[float, str]:
    """The fastest of ``repeat`` runs of ``python -c code`` (seconds) and what it printed."""
    times, out = [], ""
    for _ in range(repeat):
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
        times.append(time.perf_counter() - start)
        if done.returncode:
            raise SystemExit(f"failed: {code}\n{done.stderr}")
        out = done.stdout
    return min(times), out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs per case; the fastest counts (default 5)")
    args = parser.parse_args(argv)
    tok = gpt2_tokenizer()
    with tempfile.TemporaryDirectory() as tmp:
        vocab = Path(tmp) / "gpt2.tiktoken"
        tok.save(vocab)
        tok.save(Path(tmp) / "hf")  # vocab.json + merges.txt for transformers
        cli = "import sys; from gpt2lab.cli import main; sys.exit(main({argv!r}))"
        encode = ["tokenizer", "encode", TEXT, "--ids", "--tokenizer", str(vocab)]
        cases = {
            "gpt2lab --help": cli.format(argv=["--help"]),
            "  torch imported first": "import torch; " + cli.format(argv=["--help"]),
            "gpt2lab tokenizer encode --ids": cli.format(argv=encode),
            "  tiktoken Encoding one-liner": (
                "import tiktoken; from tiktoken.load import load_tiktoken_bpe; "
                f"enc = tiktoken.Encoding('gpt2', pat_str={GPT2_PATTERN!r}, mergeable_ranks=load_tiktoken_bpe({str(vocab)!r}), "
                f"special_tokens={{}}); print(*enc.encode({TEXT!r}))"),
            "  transformers GPT2TokenizerFast one-liner": (
                f"from transformers import GPT2TokenizerFast; print(*GPT2TokenizerFast.from_pretrained({str(Path(tmp) / 'hf')!r})"
                f".encode({TEXT!r}))"),
        }
        results = {name: best_of(code, args.repeat) for name, code in cases.items()}
    ids = " ".join(map(str, tok.encode(TEXT)))
    for name in ("gpt2lab tokenizer encode --ids", "  tiktoken Encoding one-liner", "  transformers GPT2TokenizerFast one-liner"):
        assert results[name][1].split() == ids.split(), (name, results[name][1])
    print(f"best of {args.repeat} fresh interpreters, wall clock")
    groups = (("gpt2lab --help", ["  torch imported first"]),
              ("gpt2lab tokenizer encode --ids", ["  tiktoken Encoding one-liner", "  transformers GPT2TokenizerFast one-liner"]))
    for ours, peers in groups:
        print(f"{ours:<44} {results[ours][0]:6.3f} s")
        for peer in peers:
            ratio = results[peer][0] / results[ours][0]
            print(f"{peer:<44} {results[peer][0]:6.3f} s   gpt2lab {ratio:.2f}x its speed")


if __name__ == "__main__":
    main()
