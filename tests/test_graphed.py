"""``train --cuda-graph`` (``train.graphed``) on a CPU, through the stand-in for CUDA graphs
(tests/cuda_graph_stand_in.py): after the plain warm-up steps the step is recorded once and every later
step is a replay of that recording; the losses and weights are the plain run's, a non-finite step is
still skipped and reported, a recording that fails leaves a plain run with one warning, and checkpoints
resume in a plain run. What a real GPU adds (compiled kernels inside the recording) gpu_check.py checks."""

from __future__ import annotations

import math

import pytest
import torch

from cuda_graph_stand_in import FakeCUDAGraph, use_fake_cuda_graphs
from gpt2lab.errors import ConfigError, TrainingError
from gpt2lab.train import Trainer
from gpt2lab.train.distributed import Distributed
from gpt2lab.train.graphed import WARMUP_STEPS, GraphedTrainStep
from test_train import cli, config, data_dir, losses  # noqa: F401 (data_dir is a fixture)


def graphed_trainer(cfg) -> Trainer:
    """A trainer whose step is recorded and replayed (as ``cuda_graph=True`` makes one on a GPU)."""
    t = Trainer(cfg)
    t.graphed = GraphedTrainStep(t)
    return t


def steps(t: Trainer, n: int, after_recording=None) -> list[float]:
    """``n`` steps' losses, then ``t`` closed; ``after_recording(t)`` is called once the step has been recorded."""
    out = []
    try:
        for _ in range(n):
            out.append(t.train_step())
            if after_recording is not None and len(out) == WARMUP_STEPS + 1:
                after_recording(t)
    finally:
        t.close()
    return out


def test_replayed_steps_give_the_plain_steps_losses_and_weights(data_dir, tmp_path, monkeypatch):  # noqa: F811
    use_fake_cuda_graphs(monkeypatch)
    cfg = dict(grad_accum=2, max_steps=100)  # two micro-batches a step; the lr still warming up when recording
    plain = Trainer(config(data_dir, tmp_path / "plain", **cfg))
    graphed = graphed_trainer(config(data_dir, tmp_path / "graphed", **cfg))
    assert [p.data_ptr() for p in graphed.model.parameters()] != [p.data_ptr() for p in plain.model.parameters()]
    expected, got = steps(plain, 9), steps(graphed, 9)
    assert got == pytest.approx(expected, rel=1e-6, abs=0)
    assert len(set(got)) == len(got)  # every step trained: no replay repeated a stale batch or lr
    for (name, a), b in zip(plain.model.state_dict().items(), graphed.model.state_dict().values(), strict=True):
        # float rounding only (the recording reads lr from a tensor): 1.1e-6 at most seen; a stale batch or lr is ~1e-3
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5, msg=name)
    assert len(FakeCUDAGraph.made) == 1  # recorded once, after the warm-up
    assert graphed.graphed is None and all(p.grad is None for p in graphed.trained_parameters)  # close() let it go
    assert FakeCUDAGraph.made[0].replays == 9 - WARMUP_STEPS
    assert all(isinstance(g["lr"], torch.Tensor) and g["capturable"] for g in graphed.optimizer.param_groups)
    assert graphed.lr == plain.lr and float(graphed.optimizer.param_groups[0]["lr"]) == pytest.approx(plain.lr)
    # the comparison sees stale inputs: a recording whose batches are no longer copied in trains differently
    stale = graphed_trainer(config(data_dir, tmp_path / "stale", **cfg))
    stale_losses = steps(stale, 9, after_recording=lambda t: setattr(t.graphed, "x", [x.clone() for x in t.graphed.x]))
    assert stale_losses[: WARMUP_STEPS + 1] == pytest.approx(expected[: WARMUP_STEPS + 1], rel=1e-6, abs=0)
    assert stale_losses[-1] != pytest.approx(expected[-1], rel=1e-3)


def test_a_nonfinite_replayed_step_is_skipped_and_reported(data_dir, tmp_path, monkeypatch):  # noqa: F811
    use_fake_cuda_graphs(monkeypatch)
    t = graphed_trainer(config(data_dir, tmp_path / "run", max_steps=100))
    try:
        for _ in range(WARMUP_STEPS + 2):
            assert math.isfinite(t.train_step())
        assert FakeCUDAGraph.made and FakeCUDAGraph.made[0].replays > 0
        moments = [(s["exp_avg"].clone(), s["step"].clone()) for s in t.optimizer.state.values()]
        with torch.no_grad():
            t.model.transformer.ln_f.bias.fill_(float("nan"))  # read by the recording where it lies
        weights = {k: v.clone() for k, v in t.model.state_dict().items()}
        t.train_step_no_sync()
        for k, v in t.model.state_dict().items():
            assert torch.equal(v.nan_to_num(), weights[k].nan_to_num()), k  # the update was skipped
        for s, (m, n) in zip(t.optimizer.state.values(), moments, strict=True):
            assert torch.equal(s["exp_avg"], m) and torch.equal(s["step"], n)
        bad = t.step
        with pytest.raises(TrainingError, match=rf"loss became nan at step {bad}; stopped before it reached the weights"):
            t.read_loss()
    finally:
        t.close()


def test_a_step_that_cannot_be_recorded_trains_plainly_with_one_warning(data_dir, tmp_path, monkeypatch):  # noqa: F811
    use_fake_cuda_graphs(monkeypatch)
    FakeCUDAGraph.fail = True
    expected = steps(Trainer(config(data_dir, tmp_path / "plain", max_steps=100)), WARMUP_STEPS + 3)
    t = graphed_trainer(config(data_dir, tmp_path / "graphed", max_steps=100))
    with pytest.warns(RuntimeWarning, match="training without a CUDA graph") as caught:
        got = steps(t, WARMUP_STEPS + 3)
    assert len([w for w in caught if "CUDA graph" in str(w.message)]) == 1
    assert got == pytest.approx(expected, rel=1e-6, abs=0)
    assert t.graphed is None or t.graphed.graph is None  # close() lets the step go
    assert all(not g["capturable"] and isinstance(g["lr"], float) for g in t.optimizer.param_groups)


def test_a_graphed_runs_checkpoint_resumes_in_a_plain_run(data_dir, tmp_path, monkeypatch):  # noqa: F811
    """The checkpoint keeps the lr as a number: a run without --cuda-graph (or on a CPU) resumes it exactly."""
    use_fake_cuda_graphs(monkeypatch)
    whole = Trainer(config(data_dir, tmp_path / "whole", max_steps=10, checkpoint_every=6, eval_every=5, lr_decay_steps=10))
    try:
        whole.run()
    finally:
        whole.close()
    first = graphed_trainer(config(data_dir, tmp_path / "split", max_steps=6, checkpoint_every=6, eval_every=5, lr_decay_steps=10))
    try:
        first.run()
    finally:
        first.close()
    assert FakeCUDAGraph.made[0].replays == 6 - WARMUP_STEPS
    saved = torch.load(tmp_path / "split" / "checkpoint.pt", weights_only=True)
    assert all(isinstance(g["lr"], float) and not g["capturable"] for g in saved["optimizer"]["param_groups"])
    second = Trainer(config(data_dir, tmp_path / "split", max_steps=10, checkpoint_every=6, eval_every=5, lr_decay_steps=10, resume=True))
    try:
        second.run()
    finally:
        second.close()
    assert losses(tmp_path / "split") == pytest.approx(losses(tmp_path / "whole"), rel=1e-6, abs=0)


def test_cuda_graph_is_refused_where_it_cannot_record(data_dir, tmp_path):  # noqa: F811
    why = "--cuda-graph does not combine with this run: it records a CUDA GPU's work and this run is on cpu"
    with pytest.raises(ConfigError, match=why):
        Trainer(config(data_dir, tmp_path / "run", cuda_graph=True, device="cpu"))
    r = cli("train", "--data", data_dir, "--out", tmp_path / "cli", "--device", "cpu", "--cuda-graph", "--max-steps", "1", "--quiet")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [f"gpt2lab train: error: {why}"]
    assert not (tmp_path / "cli").exists()  # refused before anything was written


def test_cuda_graph_names_what_it_does_not_combine_with(data_dir, tmp_path):  # noqa: F811
    t = Trainer(config(data_dir, tmp_path / "run"))
    try:
        t.device = torch.device("cuda")  # the checks after the device's, as a GPU run reaches them
        asked = config(data_dir, tmp_path / "run", cuda_graph=True)
        assert t._use_cuda_graph(asked) and not t._use_cuda_graph(config(data_dir, tmp_path / "run"))
        t.dtype = torch.float16
        with pytest.raises(ConfigError, match=r"fp16's GradScaler is not recorded \(use --dtype bf16\)"):
            t._use_cuda_graph(asked)
        t.dtype, t.task = torch.float32, "classify"
        with pytest.raises(ConfigError, match="--task classify's batches change shape from step to step"):
            t._use_cuda_graph(asked)
        t.task, t.dist = "lm", Distributed(rank=0, world_size=2)
        with pytest.raises(ConfigError, match="it records one process's step; under torchrun leave it out"):
            t._use_cuda_graph(asked)
        t.dist = Distributed()  # close() must not leave a process group it never joined
    finally:
        t.close()


def test_a_step_that_reads_a_value_on_the_host_is_not_recorded(data_dir, tmp_path, monkeypatch):  # noqa: F811
    """Without the fused kernel's found_inf the step reads its loss's finiteness on the host (.item()): a
    capture refuses that (a sync), as the stand-in does, so the run trains plainly, with the warning."""
    use_fake_cuda_graphs(monkeypatch)
    t = graphed_trainer(config(data_dir, tmp_path / "run", max_steps=100))
    t.optimizer = torch.optim.AdamW(t.trained_parameters, lr=3e-3, foreach=True)
    with pytest.warns(RuntimeWarning, match=r"training without a CUDA graph \(operation not permitted when stream is capturing"):
        got = steps(t, WARMUP_STEPS + 2)
    assert all(math.isfinite(loss) for loss in got) and len(set(got)) == len(got)
    assert FakeCUDAGraph.made and FakeCUDAGraph.made[0].replays == 0


@pytest.mark.parametrize("option", ["activation_checkpointing", "chunked_loss"])
def test_a_recorded_step_with_a_memory_option_takes_the_plain_steps(data_dir, tmp_path, monkeypatch, option):  # noqa: F811
    """Recomputed blocks (their forward runs again in backward); the chunked loss (gradients made in forward)."""
    use_fake_cuda_graphs(monkeypatch)
    cfg = dict(max_steps=100, n_layer=2, **{option: True})
    expected = steps(Trainer(config(data_dir, tmp_path / "plain", **cfg)), WARMUP_STEPS + 4)
    got = steps(graphed_trainer(config(data_dir, tmp_path / "graphed", **cfg)), WARMUP_STEPS + 4)
    assert got == pytest.approx(expected, rel=1e-6, abs=0)
    assert FakeCUDAGraph.made[0].replays == 4
