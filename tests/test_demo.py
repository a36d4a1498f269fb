"""The demo (what `make demo` runs) in its fast mode: report, browser check, falling loss, samples."""

import re
import subprocess
import sys

import pytest

from conftest import errors_in, open_page
from gpt2lab.demo import LENS_TEXT, run_demo, stdlib_sources


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    lines: list[str] = []
    result = run_demo(out, fast=True, say=lines.append)
    return result, "\n".join(lines)


@pytest.mark.slow  # the module's demo run: ~40 s
def test_demo_trains_and_the_loss_falls(demo):
    result, printed = demo
    assert result.mode == "trained"
    assert len(result.losses) == 40
    start, end = sum(result.losses[:5]) / 5, sum(result.losses[-5:]) / 5
    assert end < start - 0.5, (start, end)
    assert "Corpus:" in printed and "Vocabulary: learned" in printed and "Training 40 steps" in printed
    assert re.search(r"^8\. Inside it, through the hook points \(gpt2lab.interp\): after 'def add\(a, b\):\\n    return a \+' the model "
                     r"ranks ' b' [\d,]+ \(0 = first\), probability \d+\.\d%; its rank after the embeddings and each block: "
                     r"[\d,]+, [\d,]+, [\d,]+\.$", printed, re.M)


@pytest.mark.slow
def test_demo_samples_along_the_way(demo):
    result, printed = demo
    steps = [s["step"] for s in result.samples]
    assert steps[0] == 0 and len(steps) >= 4 and steps == sorted(steps)
    assert all(s["text"].startswith("def ") and len(s["text"]) > len("def ") for s in result.samples)
    assert all(s["val_loss"] is not None for s in result.samples[1:])


@pytest.mark.slow
def test_demo_writes_everything_it_lists(demo):
    result, printed = demo
    for f in result.files:
        assert f.exists(), f
        assert str(f) in printed
    assert (result.out / "run" / "model" / "model.safetensors").is_file()
    assert (result.out / "tokenizer" / "vocab.json").is_file()
    page = result.report.read_text()
    assert "data:image/png;base64," in page  # the loss curve is inside the page
    assert "<script src" not in page and "http://" not in page and "https://" not in page  # nothing fetched


@pytest.mark.slow
def test_demo_report_in_a_real_browser(demo, driver):
    result, _ = demo
    log = open_page(driver, result.report)
    assert errors_in(log) == []
    assert driver.execute_script("const i = document.getElementById('loss-curve'); return i.complete && i.naturalWidth") > 100
    rows = driver.execute_script("return document.querySelectorAll('#samples tr').length")
    assert rows == len(result.samples) + 2  # header, the samples, the final one
    assert driver.execute_script("return document.querySelector('#attn canvas') !== null")
    # the logit lens of the trained model, interactive, and the check of the expected next token under it
    assert driver.execute_script("return document.querySelector('#lens').getAttribute('data-ready')") == "1"
    data = driver.execute_script("return document.getElementById('lens').gpt2labInterp.data")
    assert "".join(data["tokens"]) == LENS_TEXT and data["rows"] == 3  # the embeddings and the two blocks of the fast demo
    check = driver.execute_script("return document.getElementById('answer-check').textContent")
    assert "answer (1 token): \u2423b" in check and "its rank after each block (logit lens): embed " in check


@pytest.mark.slow
def test_second_run_reuses_vocabulary_and_data(demo):
    result, _ = demo
    lines: list[str] = []
    run_demo(result.out, fast=True, say=lines.append)
    printed = "\n".join(lines)
    assert "Vocabulary: reusing" in printed
    assert "unchanged, reused" in printed


def test_stdlib_corpus_is_found_and_bounded():
    files = stdlib_sources(200_000)
    assert files and all(f.suffix == ".py" for f in files)
    assert not any("site-packages" in f.parts or "test" in f.parts for f in files)
    assert sum(f.stat().st_size for f in files) < 200_000 + max(f.stat().st_size for f in files)


def test_demo_cli_with_a_missing_model_is_one_line_exit_2(tmp_path):
    out = subprocess.run([sys.executable, "-m", "gpt2lab", "demo", "--model", str(tmp_path / "nope" / "x"), "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "no such checkpoint directory" in out.stderr


@pytest.mark.parametrize("fp32, bf16, expected", [(8000.0, 13000.0, "bf16"), (8000.0, 9000.0, "fp32"), (8000.0, 0.0, "fp32")])
def test_demo_trains_in_bf16_only_where_it_is_clearly_faster(monkeypatch, tmp_path, fp32, bf16, expected):
    import gpt2lab.demo as demo_module

    rates = {"fp32": fp32, "bf16": bf16}

    def pace(settings, data_dir, work, dtype):
        if not rates[dtype]:
            raise RuntimeError("no bf16 kernels on this CPU")
        return rates[dtype]

    monkeypatch.setattr(demo_module, "_tokens_per_s", pace)
    settings = demo_module.STANDARD
    steps, tok_per_s, dtype, ratio = demo_module._steps_for(4.0, settings, tmp_path, tmp_path)
    assert dtype == expected and tok_per_s == rates[expected] and ratio == pytest.approx(bf16 / fp32)
    # the step count fills the time budget at the chosen pace (less 25 s for evaluation and samples)
    assert steps == int((4 * 60 - 25) / (settings.batch_size * settings.block_size / tok_per_s)) // 5 * 5
