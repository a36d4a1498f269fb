"""The training loop: learning, exact resume, crashes and interrupts, checkpoints, guards, gradient
accumulation, optimizer groups, the schedule, DDP on two gloo processes, fine-tuning, errors."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import namedtuple
from pathlib import Path
from unittest.mock import ANY

import numpy as np
import pytest
import torch

from conftest import TINY, LogitRows
from gpt2lab import GPT2
from gpt2lab.data import BatchSampler, save_tokens
from gpt2lab.errors import CheckpointError, ConfigError, DataError, TrainingError
from gpt2lab.train import (
    CHECKPOINT,
    GPU_PEAK_FLOPS,
    RUN_CONTROL,
    RUN_WATCH,
    TrainConfig,
    Trainer,
    flops_per_token,
    load_checkpoint,
    lr_at,
    measure_cpu_peak_flops,
    pad_vocabulary,
    param_groups,
    read_status,
    resumed_config,
    train,
)
from gpt2lab.train.runs import compare_runs

V = 48
shutil_usage = namedtuple("shutil_usage", "total used free")  # what shutil.disk_usage returns
ROOT = Path(__file__).resolve().parents[1]


def pattern_corpus(n: int, seed: int = 0, vocab: int = V) -> np.ndarray:
    """Runs that count upwards (k, k+1, k+2, ...) from random starts: easy to learn, far from random."""
    rng = np.random.default_rng(seed)
    out = []
    while sum(map(len, out)) < n:
        start, length = rng.integers(vocab), rng.integers(4, 12)
        out.append((start + np.arange(length)) % vocab)
    return np.concatenate(out)[:n]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("data")
    save_tokens(path, pattern_corpus(6000), pattern_corpus(800, seed=1), n_vocab=V, eot_token=V - 1)
    return path


def config(data, out, **kw) -> TrainConfig:
    base = dict(data=data, out=out, n_layer=1, n_head=2, n_embd=32, block_size=16, batch_size=4, max_steps=6,
                eval_every=3, eval_batches=2, checkpoint_every=3, lr=3e-3, warmup_steps=2, progress=False, seed=0)
    if "epochs" in kw:  # the run's length given the other way
        del base["max_steps"]
    base.update(kw)
    return TrainConfig(**base)


def metrics(run) -> list[dict]:
    return [json.loads(line) for line in (Path(run) / "metrics.jsonl").read_text().splitlines()]


def losses(run) -> list[float]:
    return [r["loss"] for r in metrics(run)]


def cli(*args, timeout=120):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run([sys.executable, "-m", "gpt2lab", *map(str, args)], capture_output=True, text=True, timeout=timeout, env=env)


def torchrun(*args) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc-per-node 2 -m gpt2lab ARGS`` (standalone: a free port), checked to exit 0.
    Every rank must exit 0 too: a rank that aborts in the interpreter's teardown after the run (as gloo's
    threads did in about 1 of 20 runs before ``python -m gpt2lab`` skipped that teardown) fails the test."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "gpt2lab", *map(str, args)]
    run = subprocess.run(command, capture_output=True, text=True, timeout=240, env=env)
    assert run.returncode == 0, f"stdout:\n{run.stdout[-2000:]}\nstderr:\n{run.stderr[:2000]}\n...\n{run.stderr[-2000:]}"
    return run


# -- learning and outputs ------------------------------------------------------------------------


@pytest.mark.slow
def test_tiny_model_learns_and_writes_every_output(data_dir, tmp_path):
    result = train(config(data_dir, tmp_path / "run", max_steps=60, eval_every=20, checkpoint_every=30, n_embd=48, dropout=0.0))
    records = metrics(tmp_path / "run")
    assert [r["step"] for r in records] == list(range(1, 61))
    assert all({"step", "loss", "lr", "tok_per_s", "mfu"} <= set(r) for r in records)
    assert [r["step"] for r in records if "val_loss" in r] == [20, 40, 60]
    first, last = records[0]["loss"], np.mean([r["loss"] for r in records[-5:]])
    assert first > 0.9 * math.log(V) and last < 0.45 * first  # from chance level to well below
    assert result.val_loss is not None and result.val_loss < 0.5 * math.log(V)
    # model/ in Hugging Face format, loadable by us and by transformers, same logits as the returned model
    from transformers import GPT2LMHeadModel

    ids = torch.tensor([[3, 4, 5, 6, 7]])
    ours = GPT2.from_pretrained(tmp_path / "run" / "model")
    hf = GPT2LMHeadModel.from_pretrained(tmp_path / "run" / "model").eval()
    with torch.no_grad():
        assert torch.allclose(ours(ids), result.model(ids), atol=1e-6)
        assert torch.allclose(hf(ids).logits, ours(ids), atol=1e-4)
    assert ours(ids)[0, -1].argmax().item() == 8  # it learned to count
    assert (tmp_path / "run" / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ckpt = load_checkpoint(tmp_path / "run")
    assert ckpt["step"] == 60 and ckpt["sampler"]["position"] == 60 * 4


def test_exact_resume_step_for_step(data_dir, tmp_path):
    # dropout on, so the resumed run must also restore the RNG exactly
    kw = dict(max_steps=8, lr_decay_steps=8, dropout=0.1, checkpoint_every=4, eval_every=4)
    train(config(data_dir, tmp_path / "full", **kw))
    train(config(data_dir, tmp_path / "split", **{**kw, "max_steps": 4}))  # "stopped" after step 4
    assert len(losses(tmp_path / "split")) == 4
    train(config(data_dir, tmp_path / "split", **kw, resume=True))
    assert losses(tmp_path / "split") == losses(tmp_path / "full")
    assert [r.get("val_loss") for r in metrics(tmp_path / "split")] == [r.get("val_loss") for r in metrics(tmp_path / "full")]
    a, b = load_checkpoint(tmp_path / "full"), load_checkpoint(tmp_path / "split")
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


def test_on_eval_hook_sees_the_model_and_does_not_change_the_run(data_dir, tmp_path):
    seen = []

    def sample(step, model):
        assert not model.training and model.config.vocab_size == V
        seen.append((step, model.generate(torch.tensor([[1, 2, 3]]), 4, temperature=1.0).shape))
        torch.rand(100), np.random.rand(10)  # draws from every generator

    kw = dict(max_steps=6, dropout=0.1)
    train(config(data_dir, tmp_path / "hooked", **kw), on_eval=sample)
    train(config(data_dir, tmp_path / "plain", **kw))
    assert seen == [(3, (1, 7)), (6, (1, 7))]
    assert losses(tmp_path / "hooked") == losses(tmp_path / "plain")


@pytest.mark.parametrize("pad_vocab", [1, 64])
def test_evaluation_takes_the_logits_a_chunk_of_positions_at_a_time(data_dir, tmp_path, monkeypatch, pad_vocab):
    """The validation loss is the mean cross-entropy over the validation windows, computed by hand from
    the whole logits here; the trainer never holds more than HEAD_CHUNK positions of them (on a GPU, at
    16 x 1024 tokens, the whole logits and their fp32 copies were larger than the training step's peak)."""
    import gpt2lab.evaluate
    from gpt2lab.data import eval_starts, windows

    monkeypatch.setattr(gpt2lab.evaluate, "HEAD_CHUNK", 8)  # 8 positions at a time; a batch holds 4 x 16
    t = Trainer(config(data_dir, tmp_path / "run", pad_vocab=pad_vocab))
    x, y = windows(t.data.val, eval_starts(t.data.val, 16, 2 * 4), 16)  # the eval_batches x batch_size windows, (8, 16)
    with torch.no_grad():
        by_hand = torch.nn.functional.cross_entropy(t.model(x)[..., :V].reshape(-1, V), y.reshape(-1)).item()
    with LogitRows((V, t.model.config.vocab_size)) as seen:
        got = t.evaluate()
    assert got == pytest.approx(by_hand, rel=1e-6)
    assert 0 < seen.most <= 8, seen.most  # the whole logits would be 4 x 16 = 64 positions


def test_grad_accumulation_equals_the_larger_batch(data_dir, tmp_path):
    def gradients(**kw):
        t = Trainer(config(data_dir, tmp_path / f"r{len(os.listdir(tmp_path))}", **kw))
        grads = []
        # compare what reaches the optimizer (Adam's first steps are ~lr * sign(g), which would
        # magnify float rounding in near-zero gradients)
        t.optimizer.step = lambda: grads.append([p.grad.clone() for p in t.model.parameters()])
        loss = [t.train_step() for _ in range(2)]
        return loss, grads

    loss_a, a = gradients(batch_size=8, grad_accum=1)
    loss_b, b = gradients(batch_size=4, grad_accum=2)
    assert loss_a == pytest.approx(loss_b, abs=1e-6)
    assert len(a) == len(b) == 2
    assert all(torch.allclose(x, y, atol=1e-7, rtol=1e-5) for ga, gb in zip(a, b) for x, y in zip(ga, gb))


def test_activation_checkpointing_computes_the_same_steps_in_less_memory(data_dir, tmp_path):
    from gpt2lab.train.memory import saved_activation_bytes

    def run(name, **kw):
        t = Trainer(config(data_dir, tmp_path / name, n_layer=2, dropout=0.1, dtype="fp32", **kw))
        grads, step = [], t.optimizer.step
        t.optimizer.step = lambda: (grads.append([p.grad.clone() for p in t.model.parameters()]), step())
        return t, [t.train_step() for _ in range(3)], grads

    plain, loss_a, a = run("plain")
    recomputed, loss_b, b = run("recomputed", activation_checkpointing=True)
    assert loss_b == pytest.approx(loss_a, abs=1e-6)  # dropout too: checkpoint replays the RNG
    assert all(torch.allclose(x, y, atol=1e-6, rtol=0) for ga, gb in zip(a, b) for x, y in zip(ga, gb))
    assert list(recomputed.model.state_dict()) == list(plain.model.state_dict())  # checkpoints unchanged
    ids = torch.randint(0, V, (4, 16))
    plain.model.train(), recomputed.model.train()
    saved_plain, saved_recomputed = saved_activation_bytes(plain.model, ids), saved_activation_bytes(recomputed.model, ids)
    assert saved_recomputed < 0.6 * saved_plain, (saved_recomputed, saved_plain)
    with torch.no_grad():  # evaluation runs the blocks as usual
        assert torch.equal(plain.model.eval()(ids), recomputed.model.eval()(ids))


def test_activation_checkpointing_keeps_the_rng_state_only_when_a_block_draws(data_dir, tmp_path, monkeypatch):
    """Without dropout nothing random runs in a block: the recomputation then never reads or sets a generator's
    state (a GPU's may not be read while a CUDA graph records), and its steps are still the plain run's."""
    from gpt2lab.train.memory import draws_random_numbers

    reads = []
    get_rng_state = torch.get_rng_state
    monkeypatch.setattr(torch, "get_rng_state", lambda: (reads.append(1), get_rng_state())[1])
    for dropout in (0.0, 0.1):
        t = Trainer(config(data_dir, tmp_path / f"run-{dropout}", n_layer=2, dropout=dropout, activation_checkpointing=True))
        try:
            assert all(draws_random_numbers(b) == (dropout > 0) for b in t.model.transformer.h)
            reads.clear()
            t.train_step()
            assert bool(reads) == (dropout > 0)
        finally:
            t.close()
    runs = {}
    for name, kw in (("plain", {}), ("recomputed", {"activation_checkpointing": True})):
        t = Trainer(config(data_dir, tmp_path / name, n_layer=2, **kw))
        try:
            runs[name] = [t.train_step() for _ in range(3)]
        finally:
            t.close()
    assert runs["recomputed"] == pytest.approx(runs["plain"], abs=1e-6)


def test_activation_checkpointing_resumes_exactly(data_dir, tmp_path):
    kw = dict(max_steps=6, lr_decay_steps=6, dropout=0.1, checkpoint_every=3, eval_every=3)
    train(config(data_dir, tmp_path / "plain", **kw))
    train(config(data_dir, tmp_path / "split", activation_checkpointing=True, **{**kw, "max_steps": 3}))
    result = train(config(data_dir, tmp_path / "split", activation_checkpointing=True, **kw, resume=True))
    assert result.step == 6
    assert losses(tmp_path / "split") == pytest.approx(losses(tmp_path / "plain"), abs=1e-6)
    a, b = load_checkpoint(tmp_path / "plain"), load_checkpoint(tmp_path / "split")
    assert b["train_config"]["activation_checkpointing"] and a.keys() == b.keys() and a["model"].keys() == b["model"].keys()
    assert all(torch.allclose(a["model"][k], b["model"][k], atol=1e-6) for k in a["model"])


def test_a_resume_says_where_it_goes_on_and_which_of_the_runs_switches_it_left_out(data_dir, tmp_path, capsys):
    run = tmp_path / "run"
    train(config(data_dir, run, max_steps=3, activation_checkpointing=True, chunked_loss=True))
    train(config(data_dir, run, max_steps=4, chunked_loss=True, resume=True, progress=True))
    assert (f"resumed at step 3 from {run / 'checkpoint.pt'}; without --activation-checkpointing, which the run used until now "
            "(give them again for its speed and memory)\n") in capsys.readouterr().out
    # the checkpoint now records this call's switches: given them all, the line names none
    train(config(data_dir, run, max_steps=5, chunked_loss=True, resume=True, progress=True))
    assert f"resumed at step 4 from {run / 'checkpoint.pt'}\n" in capsys.readouterr().out


def test_padded_vocabulary_computes_the_same_run(data_dir, tmp_path):
    train(config(data_dir, tmp_path / "plain", pad_vocab=1))
    train(config(data_dir, tmp_path / "padded", pad_vocab=64))
    assert losses(tmp_path / "padded") == pytest.approx(losses(tmp_path / "plain"), abs=1e-5)
    ckpt = load_checkpoint(tmp_path / "padded")
    assert ckpt["model"]["transformer.wte.weight"].shape[0] == V and ckpt["model_config"]["vocab_size"] == V
    assert GPT2.from_pretrained(tmp_path / "padded" / "model").config.vocab_size == V
    # and a padded run resumes from its real-vocabulary checkpoint
    train(config(data_dir, tmp_path / "padded", pad_vocab=64, max_steps=7, resume=True))
    assert len(losses(tmp_path / "padded")) == 7


def test_pad_vocabulary_keeps_the_function():
    torch.manual_seed(0)
    from gpt2lab import GPT2Config

    model = GPT2(GPT2Config(vocab_size=50, block_size=8, n_layer=1, n_head=2, n_embd=16)).eval()
    ids = torch.randint(0, 50, (2, 8))
    before = model(ids)
    assert pad_vocabulary(model, 64) == 50
    after = model(ids)
    assert after.shape == (2, 8, 64) and model.lm_head.weight is model.transformer.wte.weight
    assert torch.allclose(after[..., :50], before, atol=1e-6) and torch.all(after[..., 50:] == 0)


def test_state_between_the_padded_and_the_real_vocabulary():
    """The four conversions a padded run's checkpoints go through, and the optimizer's own state left untouched."""
    from gpt2lab.train.vocab import pad_moments, padded_state, real_vocab_moments, real_vocab_state

    state = {"transformer.wte.weight": torch.randn(50, 4), "transformer.h.0.mlp.c_fc.weight": torch.randn(8, 4)}
    padded = padded_state(state, 64)
    assert padded["transformer.wte.weight"].shape == (64, 4) and not padded["transformer.wte.weight"][50:].any()
    assert padded["transformer.h.0.mlp.c_fc.weight"] is state["transformer.h.0.mlp.c_fc.weight"]
    assert all(torch.equal(v, state[k]) for k, v in real_vocab_state(padded, 50).items())
    wte = torch.nn.Parameter(padded["transformer.wte.weight"].clone())
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(3)), wte])
    wte.grad = torch.ones_like(wte)
    optimizer.step()
    saved = real_vocab_moments(optimizer.state_dict(), 1, 50)
    assert saved["state"][1]["exp_avg"].shape == (50, 4) and saved["state"][1]["step"] == 1
    assert optimizer.state[wte]["exp_avg"].shape == (64, 4)  # the optimizer's own state is not cut
    pad_moments(saved, 1, 64)
    assert saved["state"][1]["exp_avg"].shape == (64, 4) and not saved["state"][1]["exp_avg_sq"][50:].any()
    assert real_vocab_moments(saved, None, 50) is saved  # a frozen embedding: nothing to cut


def test_loss_plot_has_a_gradient_norm_panel_below_the_losses():
    from gpt2lab.train.plots import metrics_figure

    records = [{"step": s, "loss": 3.0 / s, "grad_norm": 0.5 + (40.0 if s == 3 else 0.0)} for s in range(1, 30)]
    loss_ax, norm_ax = metrics_figure(records).axes
    assert (loss_ax.get_ylabel(), norm_ax.get_ylabel(), norm_ax.get_xlabel()) == ("cross-entropy loss (nats/token)", "gradient norm", "step")
    assert list(norm_ax.lines[0].get_ydata()) == [r["grad_norm"] for r in records]
    assert norm_ax.get_yscale() == "log"  # the spike at step 3 is 81x the rest: a linear axis would flatten them
    clipped = metrics_figure(records, grad_clip=1.0).axes[1]
    assert clipped.lines[1].get_ydata() == [1.0, 1.0] and clipped.get_legend().get_texts()[0].get_text() == "--grad-clip 1: scaled down above"
    (only,) = metrics_figure([{k: v for k, v in r.items() if k != "grad_norm"} for r in records]).axes  # older runs logged none
    assert only.get_xlabel() == "step"


def test_loss_plot_leaves_the_matplotlib_backend_alone(tmp_path):
    """A notebook's backend stays what the user chose: the plot draws on a Figure of its own."""
    code = ("import matplotlib; matplotlib.use('svg'); from gpt2lab.train import plot_metrics; "
            f"plot_metrics([{{'step': s, 'loss': 3.0 / s, 'val_loss': 3.1 / s}} for s in range(1, 30)], {str(tmp_path / 'l.png')!r}); "
            "print(matplotlib.get_backend())")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "svg" and (tmp_path / "l.png").read_bytes()[:4] == b"\x89PNG"


# -- optimizer and schedule ------------------------------------------------------------------------


def test_weight_decay_groups():
    from gpt2lab import GPT2Config

    model = GPT2(GPT2Config(vocab_size=50, block_size=8, n_layer=2, n_head=2, n_embd=16))
    decay, no_decay = param_groups(model, 0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert set(decay["names"]) == {"transformer.wte.weight", "transformer.wpe.weight"} | {
        f"transformer.h.{i}.{m}.weight" for i in range(2) for m in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
    }
    assert all(n.endswith(".bias") or ".ln_" in n for n in no_decay["names"])
    assert sum(p.numel() for g in (decay, no_decay) for p in g["params"]) == model.num_parameters()  # tied head once


def test_lr_schedule_values():
    lr, lo = 1e-3, 1e-4
    at = [lr_at(s, lr, lo, warmup_steps=4, decay_steps=14) for s in range(16)]
    assert at[:4] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3])  # linear warmup reaching lr
    assert at[4] == pytest.approx(lr)  # cosine starts at the peak
    assert at[9] == pytest.approx((lr + lo) / 2)  # halfway down
    assert at[14] == at[15] == lo  # then stays at min_lr
    assert all(a >= b for a, b in zip(at[4:], at[5:]))
    assert lr_at(0, lr, lo, 0, 10) == lr


def test_mfu_pieces():
    from gpt2lab import GPT2Config, explain

    cfg = GPT2Config.from_preset("gpt2")
    # 6 x the weights of matrix products (the LM head once, no embedding look-ups) + 12 L C T
    matmul = 12 * (4 * 768**2 + 2 * 768 * 3072) + 768 * 50257
    assert flops_per_token(cfg, 1024) == 6 * matmul + 12 * 12 * 768 * 1024
    assert flops_per_token(cfg, 1024) == explain(cfg, seq_len=1024).flops["training_per_token"]  # one convention
    # measuring the CPU's peak (once per process) must not move the RNG that dropout draws from
    state = torch.get_rng_state()
    assert measure_cpu_peak_flops(n=64, repeats=1) > 0
    assert torch.equal(torch.get_rng_state(), state)
    names = [name for name, _, _ in GPU_PEAK_FLOPS]
    # a more specific name must come before any name it contains, or it could never match
    assert all(a not in b for i, a in enumerate(names) for b in names[i + 1 :])


# -- crashes, interrupts, guards -----------------------------------------------------------------------


def test_kill_9_during_training_leaves_a_loadable_checkpoint(data_dir, tmp_path):
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    args = ["--data", data_dir, "--out", run, "--n-layer", 1, "--n-head", 2, "--n-embd", 32, "--block-size", 16,
            "--batch-size", 4, "--max-steps", 100000, "--checkpoint-every", 1, "--eval-every", 0, "--quiet"]
    proc = subprocess.Popen([sys.executable, "-m", "gpt2lab", "train", *map(str, args)], env=env, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 90
        while time.time() < deadline and not ((run / "metrics.jsonl").is_file() and len((run / "metrics.jsonl").read_text().splitlines()) >= 8):
            time.sleep(0.2)
        assert proc.poll() is None, proc.stderr.read().decode()
        assert read_status(run) | {"time": 0} == {"state": "running", "step": 0, "max_steps": 100000, "host": socket.gethostname(),
                                                  "pid": proc.pid, "started": ANY, "time": 0}
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert read_status(run)["state"] == "died"  # it said "running", and its process is gone
    ckpt = load_checkpoint(run)  # whatever moment the kill hit, the last complete checkpoint is there
    step = ckpt["step"]
    assert step >= 7
    assert compare_runs([run])[0].note().endswith(f"gpt2lab train --resume --out {run} goes on from its checkpoint of step {step:,}")
    result = train(TrainConfig(data=data_dir, out=run, max_steps=step + 2, resume=True, progress=False))  # the run's own settings
    assert result.step == step + 2
    assert read_status(run)["state"] == "finished" and read_status(run)["step"] == step + 2
    assert [r["step"] for r in metrics(run)] == list(range(1, step + 3))  # no step twice, none missing
    assert not list(run.glob(".*.tmp")) and not list(run.glob("model/.*.tmp"))  # interrupted writes cleaned up


def test_a_run_directory_in_training_by_another_process_is_refused(data_dir, tmp_path):
    from gpt2lab.train.status import _started

    run = tmp_path / "run"
    train(config(data_dir, run, max_steps=2))
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # stands for a trainer still at work there
    try:
        (run / "status.json").write_text(json.dumps({"state": "running", "step": 2, "max_steps": 9, "host": socket.gethostname(),
                                                     "pid": other.pid, "started": _started(other.pid), "time": time.time()}))
        with pytest.raises(TrainingError, match=f"{run} is being trained by process {other.pid} on this machine"):
            train(config(data_dir, run, max_steps=4, resume=True))
        assert load_checkpoint(run)["step"] == 2 and [r["step"] for r in metrics(run)] == [1, 2]  # nothing touched
    finally:
        other.kill()
        other.wait()
    assert train(config(data_dir, run, max_steps=4, resume=True)).step == 4  # its process gone, the run goes on


def test_ctrl_c_saves_and_exits_cleanly(data_dir, tmp_path):
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    args = ["--data", data_dir, "--out", run, "--n-layer", 1, "--n-head", 2, "--n-embd", 32, "--block-size", 16,
            "--batch-size", 4, "--max-steps", 100000, "--checkpoint-every", 1000, "--eval-every", 0, "--quiet"]
    proc = subprocess.Popen([sys.executable, "-m", "gpt2lab", "train", *map(str, args)], env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 90
    while time.time() < deadline and not ((run / "metrics.jsonl").is_file() and len((run / "metrics.jsonl").read_text().splitlines()) >= 3):
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "Traceback" not in err and "interrupted at step" in err and "--resume" in err
    step = load_checkpoint(run)["step"]
    assert step == metrics(run)[-1]["step"] >= 3
    assert (read_status(run)["state"], read_status(run)["step"]) == ("interrupted", step)


# torch.save on a full disk: its zip writer notices the short write only as a position mismatch
TORCH_FULL_DISK = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"), TORCH_FULL_DISK], ids=["ENOSPC", "torch-zip-writer"])
def test_out_of_disk_keeps_the_previous_checkpoint(data_dir, tmp_path, monkeypatch, error):
    run = tmp_path / "run"
    train(config(data_dir, run, max_steps=3))
    before = (run / CHECKPOINT).read_bytes()
    real_save = torch.save

    def full_disk(obj, f, *a, **kw):
        with open(f, "wb") as handle:
            handle.write(b"partial")
        raise error

    import gpt2lab.train.checkpoint as checkpoint

    monkeypatch.setattr(torch, "save", full_disk)
    # torch's error does not say why; the free space does (here: less than the checkpoint needs)
    monkeypatch.setattr(checkpoint.shutil, "disk_usage", lambda path: shutil_usage(total=10**9, used=10**9 - 100, free=100))
    with pytest.raises(TrainingError, match=r"out of disk space.* previous checkpoint \(step 3\) is intact.*free some space") as caught:
        train(config(data_dir, run, max_steps=6, resume=True))
    assert "\n" not in str(caught.value) and "enforce fail" not in str(caught.value)
    monkeypatch.setattr(torch, "save", real_save)
    assert (run / CHECKPOINT).read_bytes() == before and load_checkpoint(run)["step"] == 3
    assert not list(run.glob(".*.tmp"))
    train(config(data_dir, run, max_steps=6, resume=True))  # space freed: the run goes on from step 3
    assert [r["step"] for r in metrics(run)] == [1, 2, 3, 4, 5, 6]


@pytest.mark.slow
def test_full_disk_from_the_cli_is_one_line_and_exit_2(data_dir, tmp_path):
    """A real full disk (a small tmpfs) while the checkpoint is written; needs root to mount one."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root (the patched-writer test above covers the logic)")
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("this machine refuses to mount a tmpfs")
    try:
        run = disk / "run"
        common = ["--data", data_dir, "--out", run, "--n-layer", 1, "--n-head", 2, "--n-embd", 32, "--block-size", 16,
                  "--batch-size", 4, "--eval-every", 0, "--checkpoint-every", 2, "--seed", 0, "--quiet"]
        assert cli("train", *common, "--max-steps", 2).returncode == 0
        before = (run / CHECKPOINT).read_bytes()
        filler = disk / "filler"
        with open(filler, "wb") as handle:  # leave less room than a checkpoint needs
            try:
                handle.write(b"\0" * (shutil.disk_usage(disk).free - len(before) // 2))
            except OSError:
                pass
        r = cli("train", *common, "--max-steps", 4, "--resume")
        assert r.returncode == 2, r.stderr
        assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr and "out of disk space" in r.stderr, r.stderr
        assert "previous checkpoint (step 2) is intact" in r.stderr
        assert (run / CHECKPOINT).read_bytes() == before and load_checkpoint(run)["step"] == 2
        filler.unlink()
        assert cli("train", *common, "--max-steps", 4, "--resume").returncode == 0
        assert load_checkpoint(run)["step"] == 4
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(data_dir, tmp_path):
    def poison(step, model):
        with torch.no_grad():
            model.transformer.h[0].mlp.c_fc.weight.fill_(float("nan"))

    run = tmp_path / "run"
    with pytest.raises(TrainingError, match=r"loss became nan at step 4.*last good checkpoint .* \(step 2\)"):
        train(config(data_dir, run, max_steps=10, eval_every=3, checkpoint_every=2), on_eval=poison)
    ckpt = load_checkpoint(run)
    assert ckpt["step"] == 2 and all(torch.isfinite(v).all() for v in ckpt["model"].values())
    assert GPT2.from_pretrained(run / "model").transformer.h[0].mlp.c_fc.weight.isfinite().all()


# -- fine-tuning and DDP --------------------------------------------------------------------------------------


def test_fine_tune_from_a_saved_pretrained_dir(hf_tiny, tmp_path):
    hf, path = hf_tiny
    ids = np.random.default_rng(0).integers(0, TINY["vocab_size"], 3000)
    save_tokens(tmp_path / "data", ids[:2500], ids[2500:], n_vocab=TINY["vocab_size"])
    run = tmp_path / "run"
    result = train(config(tmp_path / "data", run, init=str(path), block_size=32, max_steps=3, lr=1e-4))
    # the first step's loss is the pretrained model's loss on the first batch: the weights were loaded
    x, y = BatchSampler(np.fromfile(tmp_path / "data" / "train.bin", dtype=np.uint16), 32, 4, seed=0).next_batch()
    with torch.no_grad():
        expected = hf(x, labels=None).logits
        expected = torch.nn.functional.cross_entropy(expected.reshape(-1, expected.size(-1)), y.reshape(-1)).item()
    assert losses(run)[0] == pytest.approx(expected, abs=1e-4)
    tuned = GPT2.from_pretrained(run / "model")
    assert tuned.config.block_size == TINY["n_positions"] and tuned.config.n_embd == TINY["n_embd"]
    original = hf.transformer.h[0].mlp.c_fc.weight.t()
    assert not torch.allclose(tuned.transformer.h[0].mlp.c_fc.weight, original)
    assert result.step == 3


@pytest.mark.slow
@pytest.mark.multiprocess
def test_two_process_ddp_matches_one_process(data_dir, tmp_path):
    # 0.04 epochs of 373 windows, 4 a step (4 x 1 rank or 2 x 2): 4 steps either way
    common = ["--data", data_dir, "--n-layer", 1, "--n-head", 2, "--n-embd", 32, "--block-size", 16, "--epochs", 0.04,
              "--eval-every", 2, "--eval-batches", 2, "--checkpoint-every", 4, "--seed", 0, "--dropout", 0, "--quiet"]
    one = cli("train", "--out", tmp_path / "one", "--batch-size", 4, *common)
    assert one.returncode == 0, one.stderr
    torchrun("train", "--out", tmp_path / "two", "--batch-size", 2, *common)
    a, b = metrics(tmp_path / "one"), metrics(tmp_path / "two")
    assert [r["step"] for r in b] == [1, 2, 3, 4]  # rank 0 alone writes metrics
    assert [r["epoch"] for r in b] == [r["epoch"] for r in a]
    assert [r["loss"] for r in b] == pytest.approx([r["loss"] for r in a], abs=1e-5)
    assert [r.get("val_loss") for r in b] == pytest.approx([r.get("val_loss") for r in a], abs=1e-5)
    assert [r["grad_norm"] for r in b] == pytest.approx([r["grad_norm"] for r in a], rel=1e-3)  # of the gradients DDP averaged
    wa, wb = load_checkpoint(tmp_path / "one")["model"], load_checkpoint(tmp_path / "two")["model"]
    assert all(torch.allclose(wa[k], wb[k], atol=1e-5) for k in wa)
    assert len(load_checkpoint(tmp_path / "two")["rng"]) == 2  # every rank's RNG state, gathered once


def test_a_torchrun_worker_exits_with_its_code_and_all_of_its_output():
    """Under torchrun (WORLD_SIZE > 1) ``python -m gpt2lab`` ends without the interpreter's teardown; what it
    printed to a pipe (block-buffered) still arrives whole, and its exit code is main's, error or not."""
    def run(*args, world_size):
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "WORLD_SIZE": str(world_size)}
        return subprocess.run([sys.executable, "-m", "gpt2lab", *args], capture_output=True, text=True, timeout=120, env=env)

    for args, code in ((("explain", "--model", "gpt2"), 0), (("eval", "--model", "/nonexistent", "--task", "wikitext"), 2)):
        alone, worker = run(*args, world_size=1), run(*args, world_size=2)
        assert (worker.returncode, worker.stdout, worker.stderr) == (alone.returncode, alone.stdout, alone.stderr) and alone.returncode == code
    assert len(alone.stdout) == 0 and "no such checkpoint directory" in alone.stderr
    assert "parameters" in run("explain", "--model", "gpt2", world_size=2).stdout


def test_fsdp_needs_several_processes_and_a_plain_lm_run(data_dir, tmp_path):
    with pytest.raises(ConfigError, match="torchrun"):
        Trainer(config(data_dir, tmp_path / "one", fsdp=True))
    with pytest.raises(ConfigError, match="--eval-task"):
        Trainer(config(data_dir, tmp_path / "task", fsdp=True, eval_task="lambada"))


@pytest.mark.slow
@pytest.mark.multiprocess
def test_two_process_fsdp_matches_one_process_and_resumes(data_dir, tmp_path):
    common = ["--data", data_dir, "--n-layer", 2, "--n-head", 2, "--n-embd", 32, "--block-size", 16, "--max-steps", 4,
              "--lr-decay-steps", 4, "--eval-every", 2, "--eval-batches", 2, "--checkpoint-every", 2, "--seed", 0, "--dropout", 0, "--quiet"]
    one = cli("train", "--out", tmp_path / "one", "--batch-size", 4, *common)
    assert one.returncode == 0, one.stderr
    def fsdp(*extra):
        return torchrun("train", "--out", tmp_path / "two", "--batch-size", 2, "--fsdp", "--pad-vocab", 64, *common, *extra)

    # a vocabulary padded to 64 rows inside (as on GPUs); stopped after step 2, then resumed recomputing its blocks
    fsdp("--max-steps", 2)
    resumed = fsdp("--resume", "--activation-checkpointing", "--keep-best")
    assert re.search(r"peak memory [\d.]+ GiB, [\d.]+ GiB \(per rank\)", resumed.stdout), resumed.stdout
    assert "the best val loss" in resumed.stdout  # step 4's, the resumed run's first evaluation: gathered from the shards
    a, b = metrics(tmp_path / "one"), metrics(tmp_path / "two")
    assert [r["step"] for r in b] == [1, 2, 3, 4]
    assert [r["loss"] for r in b] == pytest.approx([r["loss"] for r in a], abs=1e-5)
    assert [r.get("val_loss") for r in b] == pytest.approx([r.get("val_loss") for r in a], abs=1e-5)
    assert [r["grad_norm"] for r in b] == pytest.approx([r["grad_norm"] for r in a], rel=1e-3)  # summed over every rank's shards
    plain, sharded = load_checkpoint(tmp_path / "one"), load_checkpoint(tmp_path / "two")
    assert sharded["model"].keys() == plain["model"].keys()
    assert all(torch.allclose(plain["model"][k], sharded["model"][k], atol=1e-5) for k in plain["model"])
    # rank 0 wrote the whole optimizer state in the plain layout: a one-process run could go on from it
    groups = [[{**g, "betas": tuple(g["betas"])} for g in ckpt["optimizer"]["param_groups"]] for ckpt in (plain, sharded)]
    assert groups[0] == groups[1]  # (betas come back from torch.distributed.checkpoint as a list)
    for i, slot in plain["optimizer"]["state"].items():
        assert all(torch.allclose(slot[k], sharded["optimizer"]["state"][i][k], atol=1e-5) for k in slot)
    model = GPT2.from_pretrained(tmp_path / "two" / "model")
    assert torch.allclose(model.lm_head.weight, plain["model"]["lm_head.weight"], atol=1e-5)
    torch.testing.assert_close(GPT2.from_pretrained(tmp_path / "two" / "best").state_dict(), model.state_dict(), rtol=0, atol=0)


# -- errors ---------------------------------------------------------------------------------------------------


def test_errors_as_exceptions(data_dir, hf_tiny, tmp_path):
    _, model_dir = hf_tiny
    with pytest.raises(DataError, match="no such data directory"):
        train(config(tmp_path / "missing", tmp_path / "r"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="not a prepared data directory"):
        train(config(tmp_path / "empty", tmp_path / "r"))
    save_tokens(tmp_path / "short", np.arange(10) % V, [1, 2], n_vocab=V)
    with pytest.raises(DataError, match="fewer than one window"):
        train(config(tmp_path / "short", tmp_path / "r"))
    with pytest.raises(ConfigError, match="--block-size 256 is over the model's context of 128"):
        save_tokens(tmp_path / "d1000", np.arange(3000) % 1000, [1, 2], n_vocab=1000)
        train(config(tmp_path / "d1000", tmp_path / "r", init=str(model_dir), block_size=256))
    save_tokens(tmp_path / "big", np.arange(3000) % 2000, [1, 2], n_vocab=2000)
    with pytest.raises(DataError, match="vocabulary mismatch: .* was tokenised with 2,000 tokens"):
        train(config(tmp_path / "big", tmp_path / "r", init=str(model_dir)))
    with pytest.raises(TrainingError, match="nothing to resume"):
        train(config(data_dir, tmp_path / "r", resume=True))
    train(config(data_dir, tmp_path / "done", max_steps=1))
    with pytest.raises(TrainingError, match="already holds a run"):
        train(config(data_dir, tmp_path / "done", max_steps=1))
    # resuming keeps the run's trajectory: a contradicting setting is refused, not silently dropped
    with pytest.raises(ConfigError, match=r"--lr 0.5 differs from the run's 0.003; a resumed run keeps its settings"):
        train(config(data_dir, tmp_path / "done", max_steps=2, lr=0.5, resume=True))
    assert train(config(data_dir, tmp_path / "done", max_steps=2, eval_every=1, resume=True)).step == 2  # run control may change
    (tmp_path / "bad" / CHECKPOINT).parent.mkdir()
    (tmp_path / "bad" / CHECKPOINT).write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="damaged"):
        train(config(data_dir, tmp_path / "bad", resume=True))


def test_a_resumed_run_keeps_its_length_and_watching_unless_told_and_runs_where_it_is_told():
    """``--resume`` alone continues the run to its own max_steps (it went to the default 1000 once, so a
    5,000-step run resumed at step 1,500 stopped there), evaluating and keeping as it did; where it runs
    is the resuming call's to say."""
    from dataclasses import asdict

    saved = asdict(TrainConfig(data="d", out="r", max_steps=5000, eval_every=50, keep_best=True, sample="Once", lr=3e-3,
                               device="cuda", compile=True).resolved())
    resumed = resumed_config(saved, TrainConfig(data="d", out="r", resume=True))
    assert (resumed.max_steps, resumed.eval_every, resumed.keep_best, resumed.sample, resumed.lr) == (5000, 50, True, "Once", 3e-3)
    assert (resumed.device, resumed.compile, resumed.resume) == ("auto", False, True)  # this machine's
    told = resumed_config(saved, TrainConfig(data="d", out="r", resume=True, max_steps=8000, eval_every=20, tensorboard="tb"))
    assert (told.max_steps, told.eval_every, told.tensorboard, told.keep_best) == (8000, 20, "tb", True)
    assert RUN_WATCH < RUN_CONTROL
    # the length is one setting given two ways: an epochs run counts its steps again from its data unless told
    saved = {**saved, "epochs": 2.0, "max_steps": 90}
    assert resumed_config(saved, TrainConfig(data="d", out="r", resume=True)).resolved().epochs == 2.0  # not "both given"
    by_steps = resumed_config(saved, TrainConfig(data="d", out="r", resume=True, max_steps=500))
    assert (by_steps.epochs, by_steps.max_steps) == (None, 500)


def test_epochs_set_the_run_length_and_every_metrics_line_counts_them(data_dir, tmp_path, capsys):
    """``epochs`` turns into steps once the data is open: 6,000 training tokens hold (6,000 - 1) // 16 - 1 = 373
    windows of 16 (one spare for the shifted grid), 4 per step; a resumed run keeps its epochs unless told."""
    from gpt2lab.cli import main

    windows = (6000 - 1) // 16 - 1
    quick = dict(eval_every=0, checkpoint_every=0)
    result = train(config(data_dir, tmp_path / "quarter", epochs=0.25, **quick))
    assert result.step == math.ceil(0.25 * windows / 4) == 24
    assert [r["epoch"] for r in metrics(tmp_path / "quarter")] == [round(step * 4 / windows, 4) for step in range(1, 25)]
    assert train(config(data_dir, tmp_path / "accum", epochs=0.25, grad_accum=2, **quick)).step == 12  # 8 windows a step
    # resumed: longer when told, and by its own epochs when not (no step more)
    assert train(config(data_dir, tmp_path / "quarter", epochs=0.5, resume=True, **quick)).step == math.ceil(0.5 * windows / 4)
    assert train(config(data_dir, tmp_path / "quarter", resume=True, **quick)).step == 47
    assert train(config(data_dir, tmp_path / "quarter", max_steps=50, resume=True, **quick)).step == 50
    with pytest.raises(ConfigError, match="give --max-steps or --epochs, not both"):
        train(config(data_dir, tmp_path / "both", epochs=1.0, max_steps=10))
    with pytest.raises(ConfigError, match="epochs must be a positive number, got 0"):
        train(config(data_dir, tmp_path / "none", epochs=0))
    # the command line: --epochs, and the line that says how much of the data a run's steps take
    args = ["train", "--data", str(data_dir), "--out", str(tmp_path / "cli"), "--n-layer", "1", "--n-head", "2", "--n-embd", "32",
            "--block-size", "16", "--batch-size", "4", "--epochs", "0.1", "--eval-every", "0"]
    assert main(args) == 0
    assert f"10 steps = 0.11 epochs of the training data ({windows} windows of 16 tokens)" in capsys.readouterr().out
    assert main([*args[:-4], "--max-steps", "100", "--out", str(tmp_path / "cli2")]) == 0
    assert f"100 steps = 1.07 epochs of the training data ({windows} windows of 16 tokens)" in capsys.readouterr().out


def test_early_stop_ends_the_run_when_the_val_loss_stops_going_down(data_dir, tmp_path, monkeypatch, capsys):
    """The validation losses are scripted here (what the patience counts is the point, not how a model overfits)."""
    from gpt2lab.cli import main

    scripted = iter([3.0, 2.5, 2.6, 2.55, 2.4, 2.3])
    monkeypatch.setattr(Trainer, "evaluate", lambda self: next(scripted))
    run = tmp_path / "run"
    result = train(config(data_dir, run, max_steps=20, eval_every=2, early_stop=2, keep_best=True, checkpoint_every=0))
    assert result.stopped_early and result.step == 8  # 2.6 and 2.55 after the lowest, 2.5 at step 4
    assert read_status(run)["state"] == "stopped early"
    assert (result.best_step, result.best_val_loss) == (4, 2.5) and (run / "best" / "model.safetensors").is_file()
    ckpt = load_checkpoint(run)
    assert (ckpt["step"], ckpt["best"], ckpt["evals_since_best"]) == (8, (4, 2.5), 2)
    assert [r["step"] for r in metrics(run)][-1] == 8
    # resumed, the count goes on from the checkpoint: 2.4 at step 10 is lower, so the run does too
    result = train(config(data_dir, run, max_steps=12, resume=True))
    assert not result.stopped_early and result.step == 12 and (result.best_step, result.best_val_loss) == (12, 2.3)
    # without a lower loss the patience runs out at once on the command line too, which says so
    monkeypatch.setattr(Trainer, "evaluate", lambda self: 1.0)
    args = ["train", "--data", str(data_dir), "--out", str(tmp_path / "cli"), "--n-layer", "1", "--n-head", "2", "--n-embd", "32",
            "--block-size", "16", "--batch-size", "4", "--max-steps", "20", "--eval-every", "2", "--early-stop", "1", "--quiet"]
    assert main(args) == 0
    assert "step 4 (0.04 epochs), train loss" in (out := capsys.readouterr().out) and "stopped early (the val loss stopped going down)" in out
    # --keep-best turned on at a resume starts its own record: best/ gets the resumed run's first evaluation
    scripted = iter([2.0, 2.5, 2.7])
    monkeypatch.setattr(Trainer, "evaluate", lambda self: next(scripted))
    train(config(data_dir, tmp_path / "late", max_steps=2, eval_every=2))
    late = train(config(data_dir, tmp_path / "late", max_steps=6, eval_every=2, keep_best=True, resume=True))
    assert (late.best_step, late.best_val_loss) == (4, 2.5) and (tmp_path / "late" / "best" / "model.safetensors").is_file()
    with pytest.raises(ConfigError, match="early_stop must be a positive integer"):
        train(config(data_dir, tmp_path / "zero", early_stop=0))
    with pytest.raises(ConfigError, match="--early-stop counts evaluations without a lower val loss: give --eval-every N too"):
        train(config(data_dir, tmp_path / "never", early_stop=2, eval_every=0))


def test_a_gpu_out_of_memory_in_training_is_one_line_that_says_how_to_go_on(data_dir, tmp_path, monkeypatch, capsys):
    """Raised at step 4 as a GPU would raise it: the checkpoint of step 2 is there, so the line says to resume with
    the options that need less memory; before any checkpoint it says to start again with them."""
    from gpt2lab.cli import main

    real = Trainer.train_step_no_sync

    def step(self):
        if self.step == 3:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.53 GiB. GPU 0 has a total capacity of 79.19 GiB")
        return real(self)

    monkeypatch.setattr(Trainer, "train_step_no_sync", step)
    run = tmp_path / "run"
    args = ["train", "--data", str(data_dir), "--out", str(run), "--n-layer", "1", "--n-head", "2", "--n-embd", "32", "--block-size", "16",
            "--batch-size", "4", "--max-steps", "6", "--checkpoint-every", "2", "--quiet"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"gpt2lab train: error: the GPU ran out of memory (it asked for 1.53 GiB more of 79.19 GiB in all); its last checkpoint, "
                   f"{run / CHECKPOINT}, is intact: go on with --resume and --activation-checkpointing or --chunked-loss (less memory, "
                   "the same run), or start again with a smaller --batch-size and a larger --grad-accum (the same tokens per step)"), err
    assert load_checkpoint(run)["step"] == 2
    assert main([*args[:args.index("--checkpoint-every")], "--checkpoint-every", "5", "--out", str(tmp_path / "fresh"), "--quiet"]) == 2
    assert capsys.readouterr().err.strip().endswith("in all); start again with --activation-checkpointing or --chunked-loss, or with "
                                                    "a smaller --batch-size and a larger --grad-accum (the same tokens per step)")


def test_tokenizer_mismatch_with_the_model_directory(tmp_path, hf_tiny):
    from gpt2lab.data import prepare
    from gpt2lab.tokenizer import Tokenizer

    _, model_dir = hf_tiny
    text = "some words to learn a vocabulary from, and some more words " * 30
    Tokenizer.train(text, 300, progress=False).save(tmp_path / "tok_a")
    model_with_tok = tmp_path / "model"
    model_with_tok.mkdir()
    for f in model_dir.iterdir():
        (model_with_tok / f.name).write_bytes(f.read_bytes())
    Tokenizer.train(text + "zzz qqq", 290, progress=False).save(model_with_tok)  # a different vocabulary
    (tmp_path / "t.txt").write_text(text)
    prepare([tmp_path / "t.txt"], tmp_path / "data", tokenizer=tmp_path / "tok_a", progress=False)
    with pytest.raises(DataError, match="tokenizer mismatch"):
        train(config(tmp_path / "data", tmp_path / "r", init=str(model_with_tok)))


def test_cli_errors_are_one_line(data_dir, tmp_path):
    r = cli("train", "--data", tmp_path / "nope", "--out", tmp_path / "r")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "no such data directory" in r.stderr
    r = cli("train", "--data", data_dir, "--out", tmp_path / "r", "--init", "somewhere/else/model", "--n-layer", "2")
    assert r.returncode == 2 and "--n-layer only apply to --init scratch" in r.stderr
    train(config(data_dir, tmp_path / "run", max_steps=1))
    r = cli("train", "--data", data_dir, "--out", tmp_path / "run", "--resume", "--lr", "0.5")
    assert r.returncode == 2 and "--lr 0.5 differs from the run's 0.003" in r.stderr and "Traceback" not in r.stderr
    assert r.stderr.count("\n") == 1


def test_the_progress_bar_says_a_compiled_run_is_compiling_until_its_first_step(data_dir, tmp_path, monkeypatch, capsys):
    """A compiled run's first step can take minutes, the bar at 0: the bar says why, and only until that step is
    done. (torch.compile is left out here, as the trainer calls it: what is tested is the bar.)"""
    monkeypatch.setattr(torch, "compile", lambda module, **kwargs: module)
    train(config(data_dir, tmp_path / "run", compile=True, progress=True, max_steps=4, log_every=1))
    frames = capsys.readouterr().err.replace("\r", "\n").splitlines()
    bar = [f for f in frames if f.startswith("train:")]
    compiling = [i for i, f in enumerate(bar) if "compiling the step (torch.compile)" in f]
    assert compiling and all("0/4" in bar[i] for i in compiling)  # shown before the first step only
    assert "loss=" in bar[-1] and "compiling" not in bar[-1]
    train(config(data_dir, tmp_path / "plain", progress=True, max_steps=2))
    assert "compiling" not in capsys.readouterr().err


def test_keep_best_keeps_the_model_of_the_lowest_validation_loss(data_dir, tmp_path, monkeypatch):
    """--keep-best: RUN/best/ holds the model as it was at the evaluation with the lowest val_loss; the checkpoint
    remembers that loss, so a resumed run replaces best/ only when it does better. (The validation losses are
    scripted, so that the best is neither the first nor the last.)"""
    scripted = iter([3.0, 2.0, 2.5, 2.6, 1.5])
    monkeypatch.setattr(Trainer, "evaluate", lambda self: next(scripted, 9.0))
    weights: dict[int, dict[str, torch.Tensor]] = {}

    def keep(step: int, model: GPT2) -> None:
        weights[step] = {k: v.clone() for k, v in model.state_dict().items()}

    run = tmp_path / "run"
    result = train(config(data_dir, run, max_steps=6, eval_every=2, keep_best=True), on_eval=keep)
    assert (result.best_step, result.best_val_loss) == (4, 2.0) and result.val_loss == 2.5
    best = GPT2.from_pretrained(run / "best").state_dict()
    assert best.keys() == weights[4].keys()
    for name, tensor in best.items():
        torch.testing.assert_close(tensor, weights[4][name], rtol=0, atol=0, msg=name)
    assert any(not torch.equal(weights[4][k], weights[6][k]) for k in best)  # the last model is another
    result = train(config(data_dir, run, max_steps=8, eval_every=2, keep_best=True, resume=True), on_eval=keep)
    assert (result.best_step, result.best_val_loss) == (4, 2.0)  # 2.6 at step 8 is no better
    torch.testing.assert_close(GPT2.from_pretrained(run / "best").state_dict(), best, rtol=0, atol=0)
    result = train(config(data_dir, run, max_steps=10, eval_every=2, keep_best=True, resume=True), on_eval=keep)
    assert (result.best_step, result.best_val_loss) == (10, 1.5)
    torch.testing.assert_close(GPT2.from_pretrained(run / "best").state_dict(), weights[10], rtol=0, atol=0)
    plain = train(config(data_dir, tmp_path / "plain", max_steps=2, eval_every=2))  # without it: no best/
    assert plain.best_step is None and not (tmp_path / "plain" / "best").exists()


def test_keep_best_from_the_command_line(data_dir, tmp_path, capsys):
    from gpt2lab.cli import main

    run = tmp_path / "run"
    args = ["train", "--data", str(data_dir), "--out", str(run), "--n-layer", "1", "--n-head", "2", "--n-embd", "32", "--block-size", "16",
            "--batch-size", "4", "--max-steps", "4", "--eval-every", "2", "--eval-batches", "2", "--keep-best", "--quiet"]
    assert main(args) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    best = re.search(r"; the best val loss, ([\d.]+) at step (\d+), in (\S+)$", last)
    assert best and Path(best[3]) == run / "best" and (run / "best" / "model.safetensors").is_file(), last
    records = {r["step"]: r["val_loss"] for r in metrics(run) if "val_loss" in r}
    assert float(best[1]) == pytest.approx(min(records.values()), abs=1e-4) and records[int(best[2])] == min(records.values())
    # resumed with --resume and a longer --max-steps alone: the run goes on keeping its best, evaluating every 2 steps
    assert main(["train", "--data", str(data_dir), "--out", str(run), "--max-steps", "6", "--resume", "--quiet"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    records = {r["step"]: r["val_loss"] for r in metrics(run) if "val_loss" in r}
    assert sorted(records) == [2, 4, 6]
    best_step = min(records, key=lambda step: records[step])
    assert last.endswith(f"; the best val loss, {records[best_step]:.4f} at step {best_step}, in {run / 'best'}"), last
