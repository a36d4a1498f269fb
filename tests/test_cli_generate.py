"""`gpt2lab generate` and `gpt2lab compare` as a user runs them."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys

import pytest
import torch

from gpt2lab import GPT2
from gpt2lab.cli import main
from gpt2lab.generate import generate_text
from gpt2lab.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def setup(hf_wide, gpt2_vocab_path):
    _, path = hf_wide
    return str(path), str(gpt2_vocab_path), GPT2.from_pretrained(path), Tokenizer.from_file(gpt2_vocab_path)


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_missing_model_directory_is_one_line_exit_2_in_a_real_process():
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    proc = subprocess.run([sys.executable, "-m", "gpt2lab", "generate", "--model", "/nonexistent", "--prompt", "hi"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2
    assert "/nonexistent" in one_line_error(proc.stderr) and proc.stdout == ""


def test_unknown_hub_id_offline_is_one_line_exit_2(capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, out, err = run(capsys, "generate", "--model", "nobody-here/no-such-gpt2", "--prompt", "hi")
    assert code == 2 and "no-such-gpt2" in one_line_error(err) and out == ""


@pytest.mark.parametrize(
    "flags, match",
    [
        (["--temperature", "-1"], "temperature"),
        (["--top-k", "0"], "top_k"),
        (["--top-p", "1.5"], "top_p"),
        (["--min-p", "1"], "min_p"),
        (["--repetition-penalty", "0"], "repetition_penalty"),
        (["--max-new-tokens", "-2"], "max-new-tokens"),
        (["--num-samples", "0"], "num-samples"),
        (["--device", "cuda:x"], "device"),
    ],
)
def test_bad_settings_are_one_line_exit_2_before_loading(capsys, flags, match):
    # the model path does not exist: the setting must be reported first, before any loading
    code, out, err = run(capsys, "generate", "--model", "/nonexistent", "--prompt", "hi", *flags)
    assert code == 2 and match in one_line_error(err)


def test_generate_greedy_prints_prompt_and_continuation_and_a_rate(capsys, setup):
    path, vocab, model, tok = setup
    code, out, err = run(capsys, "generate", "--model", path, "--tokenizer", vocab, "--prompt", "Hello, my name is",
                         "--temperature", "0", "--max-new-tokens", "10", "--device", "cpu")
    assert code == 0
    expected = generate_text(model, tok, "Hello, my name is", 10, temperature=0.0)
    assert out == "Hello, my name is" + expected + "\n"
    assert "tokens/s" in err and err.count("\n") == 1


def test_compiled_generate_reports_its_rate_after_the_compiled_step(capsys, monkeypatch, setup):
    """With --compile the first decoding step compiles (seconds): the rate line gives that part apart, then the
    rate of the compiled steps; the text is the uncompiled one's. (aot_eager stands in for inductor here.)"""
    real = torch.compile
    monkeypatch.setattr(torch, "compile", lambda model, **kw: real(model, **{**kw, "backend": "aot_eager"}))
    path, vocab, model, tok = setup
    code, out, err = run(capsys, "generate", "--model", path, "--tokenizer", vocab, "--prompt", "Hello, my name is",
                         "--temperature", "0", "--max-new-tokens", "8", "--device", "cpu", "--compile")
    assert code == 0 and out == "Hello, my name is" + generate_text(model, tok, "Hello, my name is", 8, temperature=0.0) + "\n"
    [line] = err.strip().splitlines()
    assert re.fullmatch(r"\[8 tokens in [\d.]+ s: 2 in the first [\d.]+ s, compiling, then [\d.]+ tokens/s\]", line), line


def test_generate_reads_the_prompt_from_stdin_and_samples_reproducibly(capsys, monkeypatch, setup):
    path, vocab, model, tok = setup
    outs = []
    for _ in range(2):
        monkeypatch.setattr(sys, "stdin", io.StringIO("Once upon a time"))
        code, out, _ = run(capsys, "generate", "--model", path, "--tokenizer", vocab, "--prompt", "-", "--seed", "3",
                           "--top-k", "40", "--max-new-tokens", "8", "--num-samples", "2", "--device", "cpu")
        assert code == 0
        outs.append(out)
    assert outs[0] == outs[1]
    first, second = outs[0].split("\n\n" + "-" * 40 + "\n")
    assert first.startswith("Once upon a time") and second.startswith("Once upon a time") and first != second
    g = torch.Generator().manual_seed(3)
    expected = [generate_text(model, tok, "Once upon a time", 8, top_k=40, generator=g) for _ in range(2)]
    assert [first, second.rstrip("\n")] == ["Once upon a time" + e for e in expected]


def test_generate_empty_prompt_starts_from_endoftext_and_stop_cuts(capsys, setup):
    path, vocab, model, tok = setup
    full = generate_text(model, tok, "", 12, temperature=0.0)
    code, out, _ = run(capsys, "generate", "--model", path, "--tokenizer", vocab, "--prompt", "", "--temperature", "0",
                       "--max-new-tokens", "12", "--device", "cpu")
    assert code == 0 and out == full + "\n"
    stop = full[5:8]
    code, out, _ = run(capsys, "generate", "--model", path, "--tokenizer", vocab, "--prompt", "", "--temperature", "0",
                       "--max-new-tokens", "12", "--stop", stop, "--device", "cpu")
    assert code == 0 and out == full[: full.find(stop)] + "\n"


def test_ctrl_c_keeps_what_was_produced_and_stops_cleanly(capsys, monkeypatch, setup):
    path, vocab, *_ = setup
    import gpt2lab.generate as gen

    real = gen.TextStream.__next__
    calls = {"n": 0}

    def interrupted_next(self):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real(self)

    monkeypatch.setattr(gen.TextStream, "__next__", interrupted_next)
    code, out, err = run(capsys, "generate", "--model", path, "--tokenizer", vocab, "--prompt", "Hi", "--temperature", "0",
                         "--max-new-tokens", "30", "--device", "cpu", "--no-stop-at-eot")
    assert code == 130
    assert out.startswith("Hi") and len(out) > len("Hi\n")  # the three pieces made before Ctrl-C are there
    line = one_line_error(err)
    assert "interrupted" in line and "tokens/s" in line


CUDA_OOM = ("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 23.65 GiB of which 1.06 GiB is free. "
            "Including non-PyTorch memory, this process has 22.58 GiB memory in use. Of the allocated memory 21.9 GiB is allocated "
            "by PyTorch. If reserved but unallocated memory is large try setting PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True")


def test_a_gpu_out_of_memory_is_one_line_that_says_what_to_change(capsys, monkeypatch, setup):
    """torch's message is a paragraph; the command's is one line (raised here as a GPU would raise it)."""
    path, vocab, *_ = setup
    import gpt2lab.generate as gen

    def no_memory(self):
        raise torch.OutOfMemoryError(CUDA_OOM)

    monkeypatch.setattr(gen.TextStream, "__next__", no_memory)
    code, _, err = run(capsys, "generate", "--model", path, "--tokenizer", vocab, "--prompt", "Hi", "--device", "cpu")
    assert code == 2
    assert one_line_error(err) == ("gpt2lab generate: error: the GPU ran out of memory (it asked for 2.00 GiB more of 23.65 GiB in all); "
                                   "use --dtype bf16 (half the memory), a smaller model, or --device cpu")
    monkeypatch.setattr(gen.TextStream, "__next__", lambda self: (_ for _ in ()).throw(RuntimeError("something else")))
    with pytest.raises(RuntimeError, match="something else"):  # any other error is not dressed up as one
        main(["generate", "--model", path, "--tokenizer", vocab, "--prompt", "Hi", "--device", "cpu"])


def test_compare_cli_prints_the_side_by_side_report(capsys, setup):
    path, vocab, *_ = setup
    code, out, err = run(capsys, "compare", "--model", path, "--tokenizer", vocab, "--prompt", "The capital of France is",
                         "--max-new-tokens", "6")
    assert code == 0, err
    for part in ("1. The same weights", "2. Next token", "3. Greedy continuation", "identical: yes", "temperature", "0.7", "256"):
        assert part in out, part


def test_compare_cli_missing_model_is_one_line_exit_2(capsys):
    code, _, err = run(capsys, "compare", "--model", "/nonexistent", "--prompt", "hi")
    assert code == 2 and "/nonexistent" in one_line_error(err)
