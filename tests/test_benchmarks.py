"""The benchmark scripts that a lent GPU machine runs (``benchmarks/gpu_run.sh``) run here first, at a
tiny shape on the CPU, with the options that script passes them: a GPU's minutes are too few to find
there that a script no longer runs. Nothing here is timed against anything; what is checked is that
each script runs to its end and prints the lines that decide (its sides, its ratios), and that the
sides it compares start from the same loss.

``--cuda-graph``'s sides record and replay through the CPU stand-in for CUDA graphs
(``cuda_graph_stand_in``), with the trainer's "CUDA only" refusal lifted for the test.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

from cuda_graph_stand_in import FakeCUDAGraph, use_fake_cuda_graphs
from gpt2lab.train import Trainer

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
TINY = ["--n-layer", "1", "--n-head", "2", "--n-embd", "32", "--seq-len", "16", "--batch-size", "2"]


def script(name: str) -> ModuleType:
    """benchmarks/NAME.py as a module (its ``main`` not yet run)."""
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", BENCHMARKS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_main(name: str, args: list[str], monkeypatch, capsys) -> str:
    """What ``python benchmarks/NAME.py ARGS`` prints."""
    module = script(name)
    monkeypatch.setattr(sys, "argv", [f"{name}.py", *args])
    module.main()
    return capsys.readouterr().out


def record_on_the_cpu(monkeypatch) -> None:
    """--cuda-graph on the CPU: the stand-in records and replays; the trainer's refusal off a GPU is lifted."""
    use_fake_cuda_graphs(monkeypatch)
    monkeypatch.setattr(Trainer, "_use_cuda_graph", lambda self, config: bool(config.cuda_graph))


def rates(out: str) -> dict[str, float]:
    """Each side's tokens per second from bench_train's table."""
    return {m[1]: float(m[2].replace(",", "")) for m in re.finditer(r"^  (\S+) +([\d,]+) tok/s", out, re.M)}


def first_losses(out: str) -> list[float]:
    line = next(line for line in out.splitlines() if "first losses" in line)
    return [float(v) for v in re.findall(r"\d+\.\d{6}", line)]


def test_bench_train_every_uncompiled_side_of_the_gpu_run(monkeypatch, capsys):
    """The sides of gpu_run.sh's parts (train16, eager16, xl, variants), eager, the recorded ones through the stand-in."""
    record_on_the_cpu(monkeypatch)
    sides = ["gpt2lab", "minimal", "transformers", "gpt2lab-graphed", "gpt2lab-chunked", "gpt2lab-graphed-chunked", "gpt2lab-contiguous"]
    out = run_main("bench_train", [*TINY, "--rounds", "1", "--steps", "1", "--only", *sides, "--deadline", "600"], monkeypatch, capsys)
    assert set(rates(out)) == set(sides), out
    assert all(rate > 0 for rate in rates(out).values())
    assert len(FakeCUDAGraph.made) == 2  # gpt2lab-graphed and gpt2lab-graphed-chunked, each recorded once
    assert out.count("the step is recorded as a CUDA graph") == 2 and "NOT recorded" not in out, out
    losses = first_losses(out)
    assert len(losses) == 2 and losses[0] == pytest.approx(losses[1], abs=1e-4)  # gpt2lab, minimal
    for side in sides:
        if side.startswith("gpt2lab"):
            assert re.search(rf"^  ratio {side} / minimal: [\d.]+x tok/s$", out, re.M), side
    assert "autotune" not in out


def test_bench_train_says_which_sides_it_leaves_out(monkeypatch, capsys):
    """Off a GPU --cuda-graph's sides are refused in one line each, and autotuning needs --compile; the rest still run."""
    out = run_main("bench_train", [*TINY, "--rounds", "1", "--steps", "1", "--only", "gpt2lab", "minimal", "gpt2lab-graphed",
                                   "gpt2lab-autotune"], monkeypatch, capsys)
    assert set(rates(out)) == {"gpt2lab", "minimal"}
    assert re.search(r"gpt2lab-graphed: left out: --cuda-graph does not combine with this run: .* on cpu", out), out
    assert "gpt2lab-autotune: left out: it changes how --compile compiles" in out


@pytest.mark.slow
def test_bench_train_compiled_with_profiles(monkeypatch, capsys):
    """gpu_run.sh's train16 part as it calls the script (--compile --profile --deadline), at a tiny shape, with
    the chunked loss beside it. (The stand-in records what runs outside the compiled code only: the recorded
    side's rate here means nothing, but the script's way through it is the GPU run's.)"""
    record_on_the_cpu(monkeypatch)
    sides = ["gpt2lab", "minimal", "gpt2lab-graphed", "gpt2lab-chunked"]
    out = run_main("bench_train", [*TINY, "--compile", "--rounds", "1", "--steps", "1", "--only", *sides, "--profile", "--deadline", "600"],
                   monkeypatch, capsys)
    assert set(rates(out)) == set(sides)
    assert "cpu fp32 compiled" in out and "gpt2lab-graphed: the step is recorded as a CUDA graph" in out
    assert re.search(r"^  ratio gpt2lab / minimal: [\d.]+x tok/s$", out, re.M), out
    for side in sides:
        assert f"--- {side}: two steps, top operators" in out, side


@pytest.mark.slow
def test_bench_train_loop_plain_and_recorded(monkeypatch, capsys):
    """gpu_run.sh's loop part: train() against the step alone, plain and --cuda-graph (the stand-in)."""
    record_on_the_cpu(monkeypatch)
    out = run_main("bench_train_loop", ["--seq-len", "16", "--batch-size", "2", "--warmup", "4", "--steps", "2", "--cuda-graph"],
                   monkeypatch, capsys)
    for name in ("plain", "recorded"):
        assert re.search(rf"^  ratio train\(\) / step alone, {name}: [\d.]+x$", out, re.M), out
    assert len(FakeCUDAGraph.made) == 2  # the step alone and train(), each recorded once


@pytest.mark.slow
def test_bench_generate_compiled_with_profile(monkeypatch, capsys):
    """gpu_run.sh's decode part (--compile, two batch sizes, --profile), one layer, a few tokens, fp32 on the CPU."""
    out = run_main("bench_generate", ["--compile", "--batch-sizes", "1", "2", "--new-tokens", "4", "--repeats", "1", "--profile",
                                      "--n-layer", "1", "--prompt-len", "8"], monkeypatch, capsys)
    assert out.count("same tokens as eager: gpt2lab yes transformers yes") == 2, out
    decode = r"decode only: gpt2lab +[\d.]+ tok/s \| transformers +[\d.]+ tok/s \| gpt2lab/transformers [\d.]+x"
    assert len(re.findall(decode, out)) == 4  # eager and compiled, at each batch size
    assert "profile: gpt2lab compiled, batch 2" in out


@pytest.mark.parametrize("path", sorted(BENCHMARKS.glob("*.py")), ids=lambda p: p.name)
def test_every_benchmark_imports_names_that_exist(path):
    """Each ``from gpt2lab... import name`` in a benchmark script, also those inside functions (gpu_check.py
    imports most of what it checks there, and runs only on a GPU), names something that exists; and every
    ``TrainConfig(...)`` keyword a script passes is a field of it."""
    from dataclasses import fields

    from gpt2lab.train import TrainConfig

    tree = ast.parse(path.read_text(encoding="utf-8"))
    imported = 0
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "gpt2lab":
            module = importlib.import_module(node.module)
            for alias in node.names:
                if not hasattr(module, alias.name):  # a submodule (from gpt2lab import interp) is imported by name
                    assert importlib.util.find_spec(f"{node.module}.{alias.name}"), f"{path.name}:{node.lineno}: {node.module} has no {alias.name}"
                imported += 1
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "TrainConfig":
            unknown = {k.arg for k in node.keywords if k.arg is not None} - {f.name for f in fields(TrainConfig)}
            assert not unknown, f"{path.name}:{node.lineno}: TrainConfig has no {sorted(unknown)}"
    assert imported or path.name in ("run_all.py", "minimal_gpt2.py")


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU it runs its checks (benchmarks/gpu_run.sh)")
def test_gpu_check_says_in_one_line_that_it_needs_a_gpu(capsys):
    assert script("gpu_check").main() == 1
    assert capsys.readouterr().out == "no CUDA device\n"


def test_bench_startup_runs_every_side_and_they_print_the_same_ids(monkeypatch, capsys):
    """Not a GPU script, but quick: its sides agree on the ids (it checks that itself) and each prints a time."""
    out = run_main("bench_startup", ["--repeat", "1"], monkeypatch, capsys)
    assert re.search(r"^gpt2lab --help +\d+\.\d{3} s$", out, re.M)
    assert re.search(r"^gpt2lab tokenizer encode --ids +\d+\.\d{3} s$", out, re.M)
    assert len(re.findall(r"^  .* \d+\.\d{3} s   gpt2lab \d+\.\d\dx its speed$", out, re.M)) == 3
