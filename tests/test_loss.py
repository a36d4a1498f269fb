"""The training losses: the chunked LM head + cross-entropy equals F.cross_entropy(lm_head(x)) in value
and gradients, ignores IGNORE_INDEX targets and padding rows, and never holds the whole (N, V) logits."""

from __future__ import annotations

import contextlib

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from gpt2lab.data import IGNORE_INDEX
from gpt2lab.train import Trainer
from gpt2lab.train.loss import chunked_lm_loss, lm_loss
from test_train import config, data_dir  # noqa: F401 (data_dir is a fixture)

N_TOKENS, C, V, PADDED = 2 * 37, 16, 1000, 1024


def inputs(seed: int = 0, ignored: int = 5) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(2, 37, C, generator=g, requires_grad=True)  # (B, T, C)
    weight = torch.randn(PADDED, C, generator=g) * 0.5  # (V', C)
    weight[V:] = 0.0  # padding rows, as pad_vocabulary leaves them
    weight.requires_grad_(True)
    targets = torch.randint(0, V, (2, 37), generator=g)  # (B, T)
    targets.view(-1)[torch.randperm(N_TOKENS, generator=g)[:ignored]] = IGNORE_INDEX
    return hidden, weight, targets


def reference(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    logits = F.linear(hidden, weight)[..., :V]  # (B, T, V)
    return F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1), ignore_index=IGNORE_INDEX)


@pytest.mark.parametrize("ignored", [False, True])
def test_in_place_loss_equals_cross_entropy(ignored):
    """lm_loss, the training step's in-place loss, and its gradients against PyTorch's cross-entropy, with and
    without -100 targets (instruction data); a batch with no target at all is 0, not NaN."""
    torch.manual_seed(0)
    W = torch.randn(64, 16, dtype=torch.float64, requires_grad=True)
    h = torch.randn(2, 5, 16, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 64, (2, 5))
    if ignored:
        y[0, :3] = IGNORE_INDEX
        y[1, 4] = IGNORE_INDEX
    results = []
    for loss_fn in (lambda logits: lm_loss(logits.float(), y, 64),
                    lambda logits: F.cross_entropy(logits.reshape(-1, 64), y.reshape(-1), ignore_index=IGNORE_INDEX)):
        W.grad = h.grad = None
        loss = loss_fn(h @ W.t())
        (3 * loss).backward()
        results.append((loss.item(), W.grad.clone(), h.grad.clone()))
    (la, gwa, gha), (lb, gwb, ghb) = results
    assert la == pytest.approx(lb, abs=1e-5)
    assert torch.allclose(gwa, gwb, atol=1e-5) and torch.allclose(gha, ghb, atol=1e-5)
    if ignored:
        assert bool((gha[0, :3] == 0).all()) and bool((gha[1, 4] == 0).all())

    nothing = torch.full((1, 3), IGNORE_INDEX)
    for dtype in (torch.float32, torch.float64):  # the in-place path, then the plain one
        logits = torch.randn(1, 3, 8, dtype=dtype, requires_grad=True)
        loss = lm_loss(logits, nothing, 8)
        loss.backward()
        assert loss.item() == 0.0 and logits.grad is not None and not bool(logits.grad.any())


@pytest.mark.parametrize("chunk", [1, 16, 50, 4096])
def test_chunked_loss_and_gradients_equal_cross_entropy_on_the_logits(chunk):
    hidden, weight, targets = inputs()
    expected = reference(hidden, weight, targets)
    want_h, want_w = torch.autograd.grad(expected, (hidden, weight))
    loss = chunked_lm_loss(hidden, weight, targets, V, chunk=chunk)
    got_h, got_w = torch.autograd.grad(loss, (hidden, weight))
    assert loss.item() == pytest.approx(expected.item(), abs=1e-5)
    torch.testing.assert_close(got_h, want_h, atol=1e-5, rtol=0)
    torch.testing.assert_close(got_w, want_w, atol=1e-5, rtol=0)
    assert got_w[V:].abs().max() == 0  # the padding rows stay zero
    # and the same as the in-place path the CPU trainer takes
    assert loss.item() == pytest.approx(lm_loss(F.linear(hidden, weight), targets, V).item(), abs=1e-5)


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_compiled_chunked_loss_has_the_eager_gradients(backend):
    """torch.compile traces the loss's autograd Function (forward, where the gradients are made, and backward).
    An in-place version of it passed here yet gave zero gradients compiled on an H200: benchmarks/gpu_check.py
    checks this on a GPU."""
    hidden, weight, targets = inputs()
    compiled = torch.compile(chunked_lm_loss, backend=backend, fullgraph=True)
    for autocast in (False, True):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            want = chunked_lm_loss(hidden, weight, targets, V, chunk=16)
            got = compiled(hidden, weight, targets, V, chunk=16)
        want_grads = torch.autograd.grad(want, (hidden, weight))
        got_grads = torch.autograd.grad(got, (hidden, weight))
        assert got.item() == pytest.approx(want.item(), abs=1e-5)
        for g, w in zip(got_grads, want_grads, strict=True):
            assert w.abs().max() > 0
            torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-3)


def test_chunked_loss_with_no_counted_target_is_zero_with_zero_gradient():
    hidden, weight, targets = inputs(ignored=N_TOKENS)
    loss = chunked_lm_loss(hidden, weight, targets, V, chunk=16)
    loss.backward()
    assert loss.item() == 0 and hidden.grad.abs().max() == 0 and weight.grad.abs().max() == 0


def test_chunked_loss_under_bf16_autocast_is_close_to_the_autocast_head():
    hidden, weight, targets = inputs()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected = F.cross_entropy(F.linear(hidden, weight)[..., :V].float().reshape(-1, V), targets.reshape(-1), ignore_index=IGNORE_INDEX)
        loss = chunked_lm_loss(hidden, weight, targets, V, chunk=16)
    assert loss.item() == pytest.approx(expected.item(), abs=2e-2)
    loss.backward()
    assert hidden.grad.dtype == torch.float32 and weight.grad.dtype == torch.float32


class LargestTensor(TorchDispatchMode):
    """The most elements any operation's output had while the mode was on."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def saved_bytes(loss_fn) -> tuple[int, int]:
    """(bytes autograd keeps for backward, elements of the largest tensor made in forward and backward)."""
    hidden, weight, targets = inputs()
    kept: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        kept[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with LargestTensor() as largest:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = loss_fn(hidden, weight, targets)
        loss.backward()
    return sum(kept.values()), largest.largest


def test_chunked_loss_never_holds_the_whole_logits():
    plain_saved, plain_largest = saved_bytes(reference)
    chunk = 16
    chunked_saved, chunked_largest = saved_bytes(lambda h, w, t: chunked_lm_loss(h, w, t, V, chunk=chunk))
    logits_bytes = N_TOKENS * V * 4
    assert plain_saved >= logits_bytes and plain_largest >= N_TOKENS * V  # F.cross_entropy keeps log_softmax (N, V)
    assert chunked_saved < logits_bytes / 4  # inputs, targets and N log-sum-exps
    assert chunked_largest == max(chunk * V, PADDED * C)  # one chunk's logits, or the weight's gradient


def real_vocab_weights(t: Trainer) -> dict[str, torch.Tensor]:
    """A copy of the trainer's weights at the real vocabulary (a padded run's as users see them)."""
    return {k: v.clone() for k, v in t.export_model().state_dict().items()}


def trainer_steps(data_dir, out, steps=3, **kw) -> tuple[list[float], dict[str, torch.Tensor]]:  # noqa: F811
    t = Trainer(config(data_dir, out, **kw))
    try:
        return [t.train_step() for _ in range(steps)], real_vocab_weights(t)
    finally:
        t.close()


def assert_same_steps(a, b, tol=1e-5) -> None:
    (losses_a, weights_a), (losses_b, weights_b) = a, b
    assert losses_b == pytest.approx(losses_a, abs=tol)
    for name, w in weights_a.items():
        torch.testing.assert_close(weights_b[name], w, atol=tol, rtol=0)


def test_the_trainer_takes_the_same_steps_with_the_chunked_loss(data_dir, tmp_path):  # noqa: F811
    plain = trainer_steps(data_dir, tmp_path / "off")
    assert_same_steps(plain, trainer_steps(data_dir, tmp_path / "on", chunked_loss=True))


@pytest.mark.slow
@pytest.mark.parametrize("chunked", [False, True])
def test_a_compiled_step_holds_the_loss_in_its_graph_and_takes_the_same_steps(data_dir, tmp_path, chunked):  # noqa: F811
    """--compile compiles the model and its loss as one graph (LanguageModelLoss): the same steps as eager,
    and no graph break (the loss inside the graph is what makes a compiled step fast)."""
    import torch._dynamo

    torch._dynamo.reset()
    eager = trainer_steps(data_dir, tmp_path / "eager", chunked_loss=chunked)
    t = Trainer(config(data_dir, tmp_path / "compiled", chunked_loss=chunked, compile=True))
    try:
        explained = torch._dynamo.explain(t.forward_model._orig_mod)(*(b.to(t.device) for b in t.sampler.next_batch()))
        assert explained.graph_count == 1 and explained.graph_break_count == 0, explained.break_reasons
        t.sampler.position = 0
        compiled = [t.train_step() for _ in range(3)], real_vocab_weights(t)  # a compiled run pads the vocabulary
    finally:
        t.close()
    assert_same_steps(eager, compiled, tol=1e-4)


def test_chunked_loss_on_says_what_it_cannot_combine_with(data_dir, tmp_path):  # noqa: F811
    from gpt2lab.errors import ConfigError

    with pytest.raises(ConfigError, match="--chunked-loss does not combine with this run: fp16"):
        Trainer(config(data_dir, tmp_path / "r", chunked_loss=True, dtype="fp16"))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_in_place_loss_on_padded_half_precision_logits_holds_no_fp32_copy(dtype, monkeypatch):
    """Autocast's logits on a GPU (bf16, fp16; padded to V' columns): the loss and its gradient equal the plain
    path's (F.cross_entropy on the real columns in fp32, the gradient rounded back to the logits'
    dtype), padding columns get zero gradient, the gradient lies in the logits' own memory, and no
    fp32 tensor of more than a block's rows of logits is ever made."""
    import gpt2lab.train.loss as loss_module
    from conftest import LogitRows
    from gpt2lab.model import next_token_loss

    def in_place(logits: torch.Tensor, targets: torch.Tensor, vocab: int) -> torch.Tensor:  # as lm_loss routes logits on a GPU
        return loss_module._CrossEntropyInPlace.apply(logits.view(-1, logits.size(-1)), targets.reshape(-1), vocab)

    monkeypatch.setattr(loss_module, "ELEMENTS_AT_ONCE", 16 * PADDED)  # blocks of 16 rows; 74 rows in all
    _, _, targets = inputs(ignored=5)
    source = torch.randn(2, 37, PADDED, generator=torch.Generator().manual_seed(1)) * 3

    def loss_and_grad(fn, seen=None):
        logits = source.clone().requires_grad_().to(dtype)  # (B, T, V'): not a leaf, used by the loss alone
        with seen or contextlib.nullcontext():
            loss = fn(logits)
            (grad,) = torch.autograd.grad(loss, logits)
        return loss, grad, logits

    want, want_grad, _ = loss_and_grad(lambda logits: next_token_loss(logits, targets, V))
    seen = LogitRows((V, PADDED))
    got, got_grad, logits = loss_and_grad(lambda logits: in_place(logits, targets, V), seen)
    assert got.item() == pytest.approx(want.item(), rel=1e-6)
    # the same numbers, but for the rounding of a few elements (softmax - 1 at the target, in another order)
    torch.testing.assert_close(got_grad, want_grad, rtol=1e-5, atol=2 * torch.finfo(dtype).eps * want_grad.abs().max().item())
    assert got_grad.data_ptr() == logits.data_ptr() and not bool(got_grad[..., V:].any())
    assert 0 < seen.most <= 16, seen.most  # F.cross_entropy(logits.float()) makes (74, V) fp32 tensors
