"""The training step without per-step host syncs: a non-finite loss is skipped on the device (weights,
moments and step count untouched) and reported at the next read; the loop reads the loss only at the
steps it logs, evaluates or saves, and those losses are the very ones a read-every-step run logs."""

from __future__ import annotations

import pytest
import torch

from gpt2lab.errors import TrainingError
from gpt2lab.train import Trainer, train
from test_train import config, data_dir, losses  # noqa: F401 (data_dir is a fixture)


def count_reads(monkeypatch) -> list[int]:
    """The steps at which the trainer reads the loss from the device (waits for it), from now on."""
    reads: list[int] = []
    read_loss = Trainer.read_loss

    def counted(self: Trainer) -> float:
        reads.append(self.step)
        return read_loss(self)

    monkeypatch.setattr(Trainer, "read_loss", counted)
    return reads


@pytest.mark.parametrize("kernel", ["fused", "foreach"])
def test_a_nonfinite_step_is_skipped_and_reported_at_the_next_read(data_dir, tmp_path, kernel):  # noqa: F811
    t = Trainer(config(data_dir, tmp_path / "run"))
    try:
        if kernel == "foreach":  # an optimizer without the fused kernel's found_inf flag
            t.optimizer = torch.optim.AdamW(t.model.parameters(), lr=3e-3, foreach=True)
        assert bool(t.optimizer.defaults.get("fused")) == (kernel == "fused")
        good = t.train_step()
        assert good == good  # finite
        weights = {k: v.clone() for k, v in t.model.state_dict().items()}
        moments = [(s["exp_avg"].clone(), s["exp_avg_sq"].clone(), s["step"].clone()) for s in t.optimizer.state.values()]
        finite_loss = t._loss
        t._loss = lambda x, y: finite_loss(x, y) * float("nan")
        t.train_step_no_sync()  # no read: nothing raised yet
        assert all(torch.equal(v, weights[k]) for k, v in t.model.state_dict().items())
        for s, saved in zip(t.optimizer.state.values(), moments, strict=True):
            assert all(torch.equal(a, b) for a, b in zip((s["exp_avg"], s["exp_avg_sq"], s["step"]), saved, strict=True))
        t._loss = finite_loss
        t.train_step_no_sync()  # a later good step trains on; the bad one is still reported
        with pytest.raises(TrainingError, match=r"loss became nan at step 2; stopped before it reached the weights"):
            t.read_loss()
    finally:
        t.close()


@pytest.mark.parametrize("kernel", ["fused", "foreach"])
def test_a_nonfinite_gradient_under_a_finite_loss_is_skipped_too(data_dir, tmp_path, kernel):  # noqa: F811
    t = Trainer(config(data_dir, tmp_path / "run"))
    try:
        if kernel == "foreach":
            t.optimizer = torch.optim.AdamW(t.model.parameters(), lr=3e-3, foreach=True)
        t.train_step()
        weights = {k: v.clone() for k, v in t.model.state_dict().items()}
        hook = t.model.transformer.h[0].mlp.c_fc.weight.register_hook(lambda g: g * float("inf"))  # an overflow in backward
        loss = t.train_step_no_sync()
        hook.remove()
        assert torch.isfinite(loss) and all(torch.equal(v, weights[k]) for k, v in t.model.state_dict().items())
        with pytest.raises(TrainingError, match=r"the gradient norm became (inf|nan) \(loss \d+\.\d{4}\) at step 2; stopped before"):
            t.read_loss()
    finally:
        t.close()


def test_the_logged_grad_norm_is_the_norm_of_the_steps_gradient(data_dir, tmp_path):  # noqa: F811
    """Measured before clipping (what --grad-clip compares with), over every trained weight, micro-batches summed."""
    import copy

    t = Trainer(config(data_dir, tmp_path / "run", grad_accum=2, grad_clip=0.5, dropout=0.0))
    try:
        start = t.sampler.state_dict()
        batches = [t.sampler.next_batch() for _ in range(2)]
        t.sampler.load_state_dict(start)
        reference = copy.deepcopy(t.model)
        for x, y in batches:
            _, loss = reference(x, targets=y)
            (loss / 2).backward()
        expected = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in reference.parameters() if p.grad is not None]))
        t.train_step()
        assert t.grad_norm == pytest.approx(expected.item(), rel=1e-4) and t.grad_norm > 0.5  # so the step was clipped
    finally:
        t.close()


def test_fp16s_grad_norm_is_the_unscaled_gradients(data_dir, tmp_path):  # noqa: F811
    """fp16 scales the loss by 65,536 before backward (GradScaler); the logged norm is taken after unscaling."""
    from test_train import metrics

    for dtype in ("fp32", "fp16"):
        train(config(data_dir, tmp_path / dtype, dtype=dtype, max_steps=2, eval_every=0, checkpoint_every=0))
    full, half = metrics(tmp_path / "fp32"), metrics(tmp_path / "fp16")
    assert half[0]["grad_norm"] == pytest.approx(full[0]["grad_norm"], rel=2e-2)


def test_the_loop_reads_the_loss_only_where_it_looks(data_dir, tmp_path, monkeypatch):  # noqa: F811
    every = train(config(data_dir, tmp_path / "every", max_steps=8, eval_every=4, checkpoint_every=4))
    reads = count_reads(monkeypatch)
    sparse = train(config(data_dir, tmp_path / "sparse", max_steps=8, eval_every=4, checkpoint_every=4, log_every=4))
    assert reads == [4, 8]
    assert losses(tmp_path / "sparse") == [losses(tmp_path / "every")[i] for i in (3, 7)]
    assert sparse.loss == every.loss


def test_logged_steps_read_one_step_late_give_the_same_log(data_dir, tmp_path, monkeypatch):  # noqa: F811
    """On a GPU a step that is only logged has its loss read while the next step runs (the host never
    waits for the GPU at such a step). Forced here on the CPU: the same metrics lines as reading at once,
    in order, and the reads that do wait are only the evaluated and saved steps."""
    from test_train import metrics

    def run(name: str, defer: bool) -> list[dict]:
        t = Trainer(config(data_dir, tmp_path / name, max_steps=8, eval_every=4, checkpoint_every=4))
        t.defer_logged_reads = defer
        try:
            t.run()
        finally:
            t.close()
        return metrics(tmp_path / name)

    at_once = run("at-once", False)
    reads = count_reads(monkeypatch)
    late = run("late", True)
    assert reads == [4, 8]
    assert [r["step"] for r in late] == list(range(1, 9))
    for a, b in zip(at_once, late, strict=True):
        assert {k: v for k, v in a.items() if k not in ("tok_per_s", "mfu")} == {k: v for k, v in b.items() if k not in ("tok_per_s", "mfu")}
        assert b["tok_per_s"] > 0


def test_a_nonfinite_loss_read_one_step_late_still_stops_the_run_before_a_checkpoint(data_dir, tmp_path):  # noqa: F811
    t = Trainer(config(data_dir, tmp_path / "run", max_steps=8, eval_every=4, checkpoint_every=4))
    t.defer_logged_reads = True
    finite_loss = t._loss
    calls = iter(range(100))
    t._loss = lambda x, y: finite_loss(x, y) * (float("nan") if next(calls) == 1 else 1.0)  # step 2 only
    try:
        with pytest.raises(TrainingError, match=r"loss became nan at step 2"):
            t.run()
        assert t.last_saved == 0 and t.step == 3  # read at step 3, after step 3 was queued: nothing saved
    finally:
        t.close()


def test_an_evaluated_step_that_is_not_a_logged_one_has_the_same_metrics_line(data_dir, tmp_path):  # noqa: F811
    from test_train import metrics

    train(config(data_dir, tmp_path / "run", max_steps=8, eval_every=2, checkpoint_every=8, log_every=4))
    records = metrics(tmp_path / "run")
    assert [r["step"] for r in records] == [2, 4, 6, 8]
    assert all(set(r) == {"step", "epoch", "tokens", "loss", "lr", "grad_norm", "tok_per_s", "mfu", "val_loss"} for r in records), records
