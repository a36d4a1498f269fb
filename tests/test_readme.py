"""The README's Python tour runs as written, and its command lines parse.

Every ```python block of README.md is executed, in order, in one fresh process. A small model with GPT-2's
real vocabulary, saved into a private Hugging Face cache as ``openai-community/gpt2`` with the hub switched off,
stands in for the released weights, so ``GPT2.from_pretrained("gpt2")`` and ``Tokenizer.gpt2()`` work offline.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gpt2lab import GPT2, GPT2Config
from gpt2lab.cli import build_parser
from gpt2lab.tokenizer import Tokenizer

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


@pytest.fixture
def stand_in_hub(tmp_path: Path, gpt2_vocab_path) -> Path:
    """A Hugging Face cache holding a small 'openai-community/gpt2' with GPT-2's tokenizer files."""
    repo = tmp_path / "hub" / "models--openai-community--gpt2"
    snapshot = repo / "snapshots" / "0123456789abcdef"
    torch.manual_seed(0)
    GPT2(GPT2Config(n_layer=2, n_head=2, n_embd=64)).save_pretrained(snapshot)  # vocabulary 50,257, context 1,024
    Tokenizer.from_file(gpt2_vocab_path).save(snapshot)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123456789abcdef")
    return tmp_path / "hub"


def test_readme_has_the_two_commands_and_a_tour():
    text = README.read_text()
    assert "make demo" in text and "make test" in text
    assert len(python_blocks(text)) >= 5


@pytest.mark.slow  # trains and generates in a fresh process: over a minute
def test_readme_python_tour_runs(tmp_path, stand_in_hub, gpt2_vocab_path):
    work = tmp_path / "work"
    (work / "my_texts").mkdir(parents=True)
    for i in range(6):  # enough text for a training split and a validation split of 128-token windows
        lines = [f"Note {i}.{j}: the quick brown fox jumps over the lazy dog, and the dog sleeps on." for j in range(60)]
        (work / "my_texts" / f"note{i}.txt").write_text("\n".join(lines))
    script = "\n".join(python_blocks(README.read_text()))
    (work / "tour.py").write_text(script)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(stand_in_hub), "GPT2LAB_OFFLINE": "1"}
    env.pop("GPT2LAB_VOCAB", None)
    out = subprocess.run([sys.executable, "tour.py"], cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert (work / "attn" / "attention.html").is_file()
    assert (work / "run" / "model" / "model.safetensors").is_file()
    assert (work / "patch" / "patching.html").is_file() and (work / "lens" / "lens.html").is_file()
    assert (work / "attribution.png").is_file()
    assert "['h.0.resid_pre', 'h.0.ln_1.scale', 'h.0.attn.q', 'h.0.attn.k']" in out.stdout
    n = len(Tokenizer.from_file(gpt2_vocab_path).encode("When Mary and John went to the store, John gave a drink to"))
    assert f"torch.Size([2, 2, {n}, {n}])" in out.stdout  # att.probs on the 2-layer, 2-head stand-in
    assert "attention: layer 0, mean over 2 heads" in out.stdout


def readme_commands(text: str) -> list[list[str]]:
    """The arguments after ``gpt2lab`` of every command the README's shell blocks run (``gpt2lab ...``,
    ``python -m gpt2lab ...``, ``torchrun ... -m gpt2lab ...``), continuation lines joined, comments dropped;
    usage-style ``[--option VALUE]`` groups are left out, and so are commands whose rest a ``...`` stands for."""
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(re.sub(r"\[[^\]]*\]", " ", line), comments=True)
            starts = [i + 1 for i, w in enumerate(words) if w == "gpt2lab" and (i == 0 or words[i - 1] == "-m")]
            if starts and "..." not in words:
                commands.append(words[starts[0]:])
    return commands


def test_every_command_line_in_the_readme_parses():
    """Each command the README shows is one the parser takes: no flag renamed or removed under it. (Parsing only:
    running them needs GPT-2's weights and data; the tests of each command run them.)"""
    commands = readme_commands(README.read_text())
    assert len(commands) >= 25 and {c[0] for c in commands} >= {"demo", "generate", "train", "eval", "tokenizer", "patch"}
    parser = build_parser()
    refused = []
    for argv in commands:
        try:
            assert parser.parse_args(argv).command == argv[0]
        except SystemExit:
            refused.append(f"gpt2lab {shlex.join(argv)}")
    assert not refused, "the README shows commands the parser refuses (argparse's messages in the captured stderr):\n" + "\n".join(refused)
