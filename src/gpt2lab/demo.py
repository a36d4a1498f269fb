"""The whole journey in one command (``gpt2lab demo`` / ``make demo``), offline, in minutes.

With real GPT-2 weights at hand (``--model``, or ``gpt2`` in the Hugging Face cache or reachable on
the hub) it explains them, generates from them and shows their attention. Otherwise it builds a
small GPT-2 from scratch on a corpus every machine has, the Python standard library's own source
files: trains a byte-level BPE vocabulary on them, prepares the token files, trains for a bounded
number of minutes, samples ``def `` at a few checkpoints so the learning is visible, and looks at
the attention of the result and, through the hook points, at what each block would predict (the
logit lens) and how surely it gives the expected next token. Everything lands in one self-contained
``report.html`` plus PNGs.

Every step is a public API call, so this file is also a tour of the Python interface.
"""

from __future__ import annotations

import base64
import html
import json
import os
import sys
import sysconfig
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import torch

from .config import GPT2Config
from .errors import GPT2LabError
from .files import atomic_write_bytes
from .generate import PREVIEW_SAMPLING
from .model import GPT2

PROMPT = "def "
ATTENTION_TEXT = "def add(a, b):\n    return a + b\n"
LENS_TEXT, LENS_ANSWER = "def add(a, b):\n    return a +", " b"  # what the trained model should say next, and does it


@dataclass
class DemoSettings:
    """The sizes of a demo run. ``standard`` fits the default 4 minutes on two CPU cores; ``fast``
    is for tests (seconds)."""

    corpus_bytes: int  # stop collecting standard-library files past this many bytes
    tokenizer_sample_bytes: int  # the part of the corpus the BPE vocabulary is learned from
    vocab_size: int
    n_layer: int
    n_head: int
    n_embd: int
    block_size: int
    batch_size: int
    lr: float
    sample_tokens: int
    fixed_steps: int | None = None  # set: train exactly this many steps instead of timing them


STANDARD = DemoSettings(corpus_bytes=40_000_000, tokenizer_sample_bytes=3_000_000, vocab_size=4096,
                        n_layer=4, n_head=4, n_embd=192, block_size=128, batch_size=16, lr=2e-3, sample_tokens=96)
FAST = DemoSettings(corpus_bytes=400_000, tokenizer_sample_bytes=200_000, vocab_size=384,
                    n_layer=2, n_head=2, n_embd=64, block_size=64, batch_size=8, lr=3e-3, sample_tokens=24, fixed_steps=40)


@dataclass
class DemoResult:
    """What the demo made: where, and the figures it printed."""

    out: Path
    report: Path
    mode: str  # "trained" or "pretrained"
    samples: list[dict] = field(default_factory=list)  # {"step", "val_loss", "text"}
    losses: list[float] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# The corpus every machine has
# ---------------------------------------------------------------------------------------------


def stdlib_sources(limit_bytes: int) -> list[Path]:
    """The standard library's ``.py`` files in a fixed order, up to ``limit_bytes`` in all.

    Tests and installed third-party packages are left out: the first is repetitive, the second
    differs from machine to machine.
    """
    root = Path(sysconfig.get_paths()["stdlib"])
    # tests repeat themselves; codec tables and the help-text dump are data, not code
    skip = {"site-packages", "dist-packages", "test", "tests", "__pycache__", "idle_test", "encodings", "pydoc_data", "lib2to3"}
    files, total = [], 0
    for path in sorted(root.rglob("*.py")):
        if skip.intersection(path.relative_to(root).parts):
            continue
        size = path.stat().st_size
        if size == 0 or _mostly_numbers(path):
            continue
        files.append(path)
        total += size
        if total >= limit_bytes:
            break
    if not files:
        raise GPT2LabError(f"found no Python source files under {root}; pass --model with a GPT-2 checkpoint instead")
    return files


def _mostly_numbers(path: Path) -> bool:
    """A table dressed as a module (Unicode data, HTML entities): more than 15% digits."""
    text = path.read_bytes()
    return sum(text.count(d) for d in b"0123456789") > 0.15 * len(text)


def _read_sample(files: list[Path], limit: int) -> list[str]:
    texts, total = [], 0
    for f in files:
        text = f.read_text(encoding="utf-8", errors="replace")
        texts.append(text)
        total += len(text)
        if total >= limit:
            break
    return texts


# ---------------------------------------------------------------------------------------------
# Steps
# ---------------------------------------------------------------------------------------------


def short_explanation(config: GPT2Config, seq_len: int | None = None) -> str:
    """The short form of ``gpt2lab explain``: what each part does, with this model's numbers."""
    from .explain import explain

    ex = explain(config, seq_len=seq_len)
    lines = [f"{config.n_layer} layers, {config.n_head} heads of {config.head_dim}, width {config.n_embd}, "
             f"vocabulary {config.vocab_size:,}, context {config.block_size}: "
             f"{ex.params['total_tied']:,} parameters (tied LM head)."]
    lines += [f"  - {name}: {sentence}" for name, sentence in ex.components]
    return "\n".join(lines)


def _sample(model: GPT2, tokenizer, prompt: str, n: int, seed: int) -> str:
    ids = tokenizer.encode(prompt) if prompt else [tokenizer.eot_token]
    idx = torch.tensor([ids], device=model.device)
    out = cast(torch.Tensor, model.generate(idx, n, seed=seed, **PREVIEW_SAMPLING))  # not streamed: (1, T + n)
    return tokenizer.decode(out[0].tolist())


def _find_pretrained(model: str | None, say: Callable[[str], None]) -> str | None:
    """The checkpoint to use instead of training, if any."""
    if model:
        return model
    if os.environ.get("GPT2LAB_OFFLINE") == "1":
        return None
    from .weights import resolve_checkpoint_dir

    try:
        return str(resolve_checkpoint_dir("gpt2"))  # the local cache, else the hub when reachable
    except GPT2LabError:
        say("No GPT-2 weights in the Hugging Face cache and the hub is not reachable: training a small GPT-2 here instead.\n")
        return None


def _steps_for(minutes: float, settings: DemoSettings, data_dir: Path, work: Path) -> tuple[int, float, str, float]:
    """How many steps fit in ``minutes``, measured by timing a few steps of the same model, in fp32
    and in bf16 mixed precision; the faster wins if it is clearly faster (CPUs with native bf16
    matrix units run it ~1.6x faster; others emulate it, slowly). Returns (steps, tokens/s, dtype,
    bf16's pace over fp32's)."""
    fp32 = _tokens_per_s(settings, data_dir, work, "fp32")
    try:
        bf16 = _tokens_per_s(settings, data_dir, work, "bf16")
    except (RuntimeError, GPT2LabError):
        bf16 = 0.0
    dtype, tok_per_s = ("bf16", bf16) if bf16 >= 1.2 * fp32 else ("fp32", fp32)
    step_s = settings.batch_size * settings.block_size / tok_per_s
    overhead = 25.0  # evaluation, checkpoints and samples along the way
    steps = int((minutes * 60 - overhead) / step_s) // 5 * 5  # five even stretches between samples
    return max(20, steps), tok_per_s, dtype, bf16 / fp32


def _tokens_per_s(settings: DemoSettings, data_dir: Path, work: Path, dtype: str) -> float:
    """The pace of a few training steps of the demo's model in ``dtype``."""
    import shutil

    from .train import train

    probe = work / "probe"
    shutil.rmtree(probe, ignore_errors=True)
    cfg = _train_config(settings, data_dir, probe, max_steps=6, eval_every=0, checkpoint_every=0, dtype=dtype)
    t0 = time.perf_counter()
    result = train(cfg)
    total = time.perf_counter() - t0
    shutil.rmtree(probe, ignore_errors=True)
    # the first steps pay for warm-up and set-up; the later ones show the pace
    rates = [r["tok_per_s"] for r in result.metrics if r.get("tok_per_s")]
    return sorted(rates)[len(rates) // 2] if rates else settings.batch_size * settings.block_size * 6 / total


def _train_config(settings: DemoSettings, data_dir: Path, out: Path, *, max_steps: int, eval_every: int,
                  checkpoint_every: int, progress: bool = False, dtype: str = "fp32"):
    from .train import TrainConfig

    return TrainConfig(data=data_dir, out=out, n_layer=settings.n_layer, n_head=settings.n_head, n_embd=settings.n_embd,
                       block_size=settings.block_size, batch_size=settings.batch_size, lr=settings.lr,
                       max_steps=max_steps, warmup_steps=max(2, max_steps // 20), eval_every=eval_every, eval_batches=8,
                       checkpoint_every=checkpoint_every, device="cpu", dtype=dtype, seed=1337, progress=progress)


# ---------------------------------------------------------------------------------------------
# The demo
# ---------------------------------------------------------------------------------------------


def run_demo(
    out: str | os.PathLike = "demo_out",
    *,
    minutes: float = 4.0,
    model: str | None = None,
    fast: bool = False,
    say: Callable[[str], None] = print,
) -> DemoResult:
    """Run the demo into ``out`` and return what it made (see the module docstring).

    Args:
        out: directory for everything (re-used: prepared data and the vocabulary are kept).
        minutes: the time budget for training when there are no real weights.
        model: a GPT-2 checkpoint (directory or hub id) to use instead of training.
        fast: a tiny run of a few seconds, for tests.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    say("gpt2lab demo: a GPT-2 you can read, run, train and look inside.\n")
    pretrained = None if fast else _find_pretrained(model, say)
    if pretrained is not None:
        result = _pretrained_demo(pretrained, out, say)
    else:
        result = _training_demo(out, minutes, FAST if fast else STANDARD, say)
    say(f"\nDone in {time.perf_counter() - t_start:.0f} s. Open the report: {result.report.resolve()}")
    for f in result.files:
        say(f"  {f}")
    return result


def _look_inside(model: GPT2, tokenizer, text: str, answer: str, out: Path, say: Callable[[str], None], number: int) -> tuple[str, list[Path]]:
    """The logit lens of ``text`` (saved to ``out/lens``) and the check of ``answer`` after it; said in a
    few lines, and returned as the report's section with the files written."""
    from . import interp
    from .views.interp import lens_fragment, save_lens

    lens = interp.lens(model, tokenizer, text, top_k=5)
    files = save_lens(lens, out / "lens")
    check = interp.check_answer(model, tokenizer, text, answer, top_k=5)
    blocks = check.layer_ranks[:, 0].tolist()
    say(f"{number}. Inside it, through the hook points (gpt2lab.interp): after {text!r} the model ranks {answer!r} "
        f"{check.ranks[0]:,} (0 = first), probability {check.probs[0]:.1%}; its rank after the embeddings and each block: "
        f"{', '.join(f'{r:,}' for r in blocks)}.\n   The logit lens: {files['html']} (and {files['png']})")
    e = html.escape
    section = (f"<p>What the model would predict if it stopped after each block (rows), at each token (columns): the logit lens. "
               f"Hover a cell for its top 5.</p>{lens_fragment(lens, element_id='lens')}"
               f"<p>And how surely it continues <code>{e(repr(text))}</code> with <code>{e(repr(answer))}</code> "
               f"(<code>interp.check_answer</code>, <code>gpt2lab answer</code>):</p><pre id=\"answer-check\">{e(check.to_text())}</pre>")
    return section, list(files.values())


def _pretrained_demo(name: str, out: Path, say: Callable[[str], None]) -> DemoResult:
    from .attention import attention
    from .tokenizer import Tokenizer
    from .views import fragment, save_attention
    from .weights import resolve_checkpoint_dir

    directory = resolve_checkpoint_dir(name)
    model = GPT2.from_pretrained(directory)
    tokenizer = Tokenizer.from_pretrained(directory)
    say(f"1. The model: {name}\n{short_explanation(model.config)}\n")
    prompt = "The meaning of life is"
    samples = []
    for seed in (0, 1):
        t0 = time.perf_counter()
        text = _sample(model, tokenizer, prompt, 40, seed)
        say(f"2. Sample (seed {seed}, {40 / (time.perf_counter() - t0):.0f} tokens/s): {text!r}")
        samples.append({"step": None, "val_loss": None, "text": text})
    result = attention(model, tokenizer, "When Mary and John went to the store, John gave a drink to Mary")
    files = save_attention(result, out / "attention")
    say("\n3. Attention written (one page, PNGs).")
    inside, inside_files = _look_inside(model, tokenizer, "When Mary and John went to the store, John gave a drink to", " Mary",
                                        out, say, 4)
    report = _write_report(out / "report.html", title=f"gpt2lab demo: {name}", explanation=short_explanation(model.config),
                           loss_png=None, samples=samples, attention_fragment=fragment(result, element_id="attn"),
                           inside_html=inside, notes=[f"Weights: {directory}"])
    return DemoResult(out=out, report=report, mode="pretrained", samples=samples, files=[report, *files.values(), *inside_files])


def _training_demo(out: Path, minutes: float, settings: DemoSettings, say: Callable[[str], None]) -> DemoResult:
    import shutil

    from .attention import attention
    from .data import prepare
    from .tokenizer import Tokenizer
    from .train import train
    from .views import fragment, save_attention

    # 1. the corpus and a vocabulary learned from it
    files = stdlib_sources(settings.corpus_bytes)
    size = sum(f.stat().st_size for f in files)
    say(f"1. Corpus: {len(files):,} Python standard-library files, {size / 1e6:.1f} MB, from {files[0].parent}")
    tok_dir = out / "tokenizer"
    stamp = {"files": len(files), "bytes": size, "vocab_size": settings.vocab_size, "sample": settings.tokenizer_sample_bytes}
    stamp_path = tok_dir / "demo-stamp.json"
    if stamp_path.is_file() and json.loads(stamp_path.read_text()) == stamp:
        tokenizer = Tokenizer.from_file(tok_dir)
        say(f"2. Vocabulary: reusing {tok_dir} ({tokenizer.n_vocab:,} tokens)")
    else:
        t0 = time.perf_counter()
        texts = _read_sample(files, settings.tokenizer_sample_bytes)
        tokenizer = Tokenizer.train(texts, settings.vocab_size, progress=False)
        shutil.rmtree(tok_dir, ignore_errors=True)
        tokenizer.save(tok_dir)
        atomic_write_bytes(stamp_path, json.dumps(stamp).encode())
        say(f"2. Vocabulary: learned {tokenizer.n_vocab:,} byte-level BPE tokens from {sum(map(len, texts)) / 1e6:.1f} MB "
            f"in {time.perf_counter() - t0:.1f} s (Tokenizer.train)")
    example = "    return self._value"
    pieces = [tokenizer.decode([i]) for i in tokenizer.encode(example)]
    say(f"   {example.strip()!r} becomes {len(pieces)} tokens: {pieces}")

    # 2. token files
    t0 = time.perf_counter()
    prepared = prepare(files, out / "data", tokenizer=tok_dir, progress=False)
    meta = prepared.meta
    how = "unchanged, reused" if prepared.skipped else f"in {time.perf_counter() - t0:.1f} s"
    say(f"3. Prepared {meta.get('train_tokens', 0):,} training and {meta.get('val_tokens', 0):,} validation tokens ({how})")

    # 3. the model
    config = GPT2Config(vocab_size=tokenizer.n_vocab, block_size=settings.block_size, n_layer=settings.n_layer,
                        n_head=settings.n_head, n_embd=settings.n_embd, embd_pdrop=0.0, attn_pdrop=0.0, resid_pdrop=0.0)
    explanation = short_explanation(config, seq_len=settings.block_size)
    say(f"4. The model, built from scratch:\n{explanation}")

    # 4. train for the time budget, sampling along the way
    dtype = "fp32"
    if settings.fixed_steps is not None:
        steps = settings.fixed_steps
        say(f"5. Training {steps} steps")
    else:
        steps, rate, dtype, bf16_pace = _steps_for(minutes, settings, out / "data", out)
        precision = (f"in bf16 mixed precision ({bf16_pace:.1f}x the fp32 pace on this CPU)" if dtype == "bf16"
                     else "in fp32" + (f" (bf16 ran at {bf16_pace:.1f}x its pace here)" if bf16_pace else ""))
        say(f"5. Training for about {minutes:g} minutes {precision}: {rate:,.0f} tokens/s, so {steps:,} steps of "
            f"{settings.batch_size} x {settings.block_size} tokens")
    samples: list[dict] = []
    run_dir = out / "run"
    shutil.rmtree(run_dir, ignore_errors=True)
    eval_every = max(1, steps // 5)

    def on_eval(step: int, model: GPT2) -> None:
        text = _sample(model, tokenizer, PROMPT, settings.sample_tokens, seed=step)
        samples.append({"step": step, "val_loss": None, "text": text})

    before = _sample(GPT2(config).eval(), tokenizer, PROMPT, settings.sample_tokens, seed=0)
    samples.append({"step": 0, "val_loss": None, "text": before})
    cfg = _train_config(settings, out / "data", run_dir, max_steps=steps, eval_every=eval_every,
                        checkpoint_every=steps, progress=not settings.fixed_steps and sys.stderr.isatty(), dtype=dtype)
    result = train(cfg, on_eval=on_eval)
    val_losses = {r["step"]: r["val_loss"] for r in result.metrics if "val_loss" in r}
    for s in samples:
        s["val_loss"] = val_losses.get(s["step"])
    losses = [r["loss"] for r in result.metrics if "loss" in r]
    say(f"   loss {losses[0]:.2f} -> {losses[-1]:.2f} (validation {result.val_loss:.2f}); weights in {run_dir / 'model'}")
    for s in samples:
        vl = f", val loss {s['val_loss']:.2f}" if s["val_loss"] is not None else ""
        say(f"   step {s['step']:>5}{vl}: {s['text'][:70]!r}")

    # 5. the saved model loads back as a Hugging Face checkpoint, and we look inside it
    trained = GPT2.from_pretrained(run_dir / "model")
    final = _sample(trained, tokenizer, PROMPT, settings.sample_tokens * 2, seed=1)
    say(f"6. Sample from the saved model (GPT2.from_pretrained):\n{final}")
    attn = attention(trained, tokenizer, ATTENTION_TEXT)
    attn_files = save_attention(attn, out / "attention")
    say("7. Attention of the trained model on a small function: see the report (and attention/).")
    inside, inside_files = _look_inside(trained, tokenizer, LENS_TEXT, LENS_ANSWER, out, say, 8)

    report = _write_report(
        out / "report.html",
        title="gpt2lab demo: a GPT-2 trained from scratch on Python's standard library",
        explanation=explanation,
        loss_png=run_dir / "loss.png",
        samples=samples + [{"step": result.step, "val_loss": result.val_loss, "text": final, "final": True}],
        attention_fragment=fragment(attn, element_id="attn"),
        inside_html=inside,
        notes=[f"Corpus: {len(files):,} files, {size / 1e6:.1f} MB; vocabulary {tokenizer.n_vocab:,} tokens",
               f"Training: {result.step} steps of {settings.batch_size} x {settings.block_size} tokens; "
               f"loss {losses[0]:.2f} -> {losses[-1]:.2f}"],
    )
    files_out = [report, run_dir / "loss.png", run_dir / "model", *attn_files.values(), *inside_files]
    return DemoResult(out=out, report=report, mode="trained", samples=samples, losses=losses, files=files_out)


# ---------------------------------------------------------------------------------------------
# The report page
# ---------------------------------------------------------------------------------------------

_CSS = """
body{font:15px/1.5 system-ui,-apple-system,Segoe UI,sans-serif;margin:0;color:#1d2430;background:#f6f7f9}
main{max-width:1100px;margin:0 auto;padding:24px}
h1{font-size:24px;margin:0 0 4px} h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #d8dce3;padding-bottom:4px}
section{background:#fff;border:1px solid #e1e4ea;border-radius:8px;padding:16px;margin:12px 0}
pre{white-space:pre-wrap;word-break:break-word;background:#0f1720;color:#e7edf5;padding:10px;border-radius:6px;margin:4px 0 0;
    font:13px/1.45 ui-monospace,Menlo,Consolas,monospace}
table{border-collapse:collapse;width:100%} td,th{text-align:left;vertical-align:top;padding:6px 8px;border-top:1px solid #eceef2}
img.loss{max-width:100%;height:auto} .muted{color:#667085} li{margin:2px 0}
"""


def _write_report(path: Path, *, title: str, explanation: str, loss_png: Path | None, samples: list[dict],
                  attention_fragment, inside_html: str, notes: list[str]) -> Path:
    """One self-contained page: every byte inline (the PNG as a data: URL), nothing fetched."""
    e = html.escape
    head, *parts = explanation.splitlines()
    rows = []
    for s in samples:
        label = "final (saved model)" if s.get("final") else (f"step {s['step']}" if s["step"] is not None else "sample")
        if s["step"] == 0 and not s.get("final"):
            label = "step 0 (untrained)"
        loss = f"{s['val_loss']:.3f}" if s.get("val_loss") is not None else ""
        rows.append(f"<tr><td>{e(label)}</td><td>{e(loss)}</td><td><pre>{e(s['text'])}</pre></td></tr>")
    loss_html = ""
    if loss_png is not None and Path(loss_png).is_file():
        data = base64.b64encode(Path(loss_png).read_bytes()).decode("ascii")
        loss_html = (f'<h2>Loss</h2><section><img class="loss" id="loss-curve" alt="training and validation loss" '
                     f'src="data:image/png;base64,{data}"></section>')
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data: blob:; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width,initial-scale=1">
<title>{e(title)}</title><style>{_CSS}</style></head>
<body><main>
<h1>{e(title)}</h1>
<p class="muted">{"<br>".join(e(n) for n in notes)}</p>
<h2>The architecture</h2><section><p>{e(head)}</p><ul>{"".join(f"<li>{e(p.strip().removeprefix('- '))}</li>" for p in parts)}</ul></section>
{loss_html}
<h2>Samples along the way</h2><section><table id="samples"><tr><th>when</th><th>val loss</th><th>text</th></tr>{"".join(rows)}</table></section>
<h2>Attention</h2><section>{attention_fragment.fragment_html}</section>
<h2>Inside: the logit lens</h2><section>{inside_html}</section>
</main></body></html>
"""
    return atomic_write_bytes(path, page.encode("utf-8"))
