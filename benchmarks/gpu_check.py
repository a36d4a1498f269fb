"""Core checks on a CUDA GPU: the fused path (flash attention) against the explicit one, CPU against
GPU, the KV cache, and loading straight onto the GPU. Prints a short table; exits non-zero on failure.

    PYTHONPATH=src python benchmarks/gpu_check.py
"""

from __future__ import annotations

import sys
import tempfile
import time
import traceback
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from gpt2lab import GPT2, GPT2Config


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def main() -> int:
    if not torch.cuda.is_available():
        print("no CUDA device")
        return 1
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    print(torch.cuda.get_device_name(), "torch", torch.__version__)
    torch.manual_seed(0)
    cpu = GPT2(GPT2Config.from_preset("gpt2")).eval()
    with torch.no_grad():
        for p in cpu.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    idx = torch.randint(0, 50257, (4, 512))
    rows, ok = [], True
    with torch.no_grad():
        ref = cpu(idx)
        gpu = GPT2(cpu.config).eval()
        gpu.load_state_dict(cpu.state_dict())
        gpu.cuda()
        fused = gpu(idx.cuda())
        gpu.explicit = True
        explicit = gpu(idx.cuda())
        gpu.explicit = False
        rows.append(("fp32 GPU fused vs CPU, max |dlogits|", (fused.cpu() - ref).abs().max().item(), 1e-3))
        rows.append(("fp32 GPU explicit vs fused, max |dlogits|", (explicit - fused).abs().max().item(), 1e-3))
        bf = GPT2(cpu.config).eval()
        bf.load_state_dict(cpu.state_dict())
        bf.to(device="cuda", dtype=torch.bfloat16)
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):  # fails loudly if flash cannot run this call
            flash = bf(idx.cuda())
        rows.append(("bf16 flash vs fp32, relative error", rel(flash, ref.cuda()), 2e-2))
        bf.explicit = True
        rows.append(("bf16 explicit vs flash, relative error", rel(bf(idx.cuda()), flash), 2e-2))
        bf.explicit = False
        cache = gpu.new_kv_cache(4)
        gpu(idx[:, :500].cuda(), kv_cache=cache)
        worst = 0.0
        for t in range(500, 512):
            worst = max(worst, (gpu(idx[:, t : t + 1].cuda(), kv_cache=cache)[:, 0] - fused[:, t]).abs().max().item())
        rows.append(("fp32 KV-cache steps vs full forward, max |d|", worst, 1e-3))
        with tempfile.TemporaryDirectory() as d:
            cpu.save_pretrained(d)
            timings = []
            for _ in range(2):  # the first load also pays for one-time CUDA set-up
                before = torch.cuda.memory_allocated()
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                t0 = time.perf_counter()
                loaded = GPT2.from_pretrained(d, dtype="bf16", device="cuda")
                torch.cuda.synchronize()
                timings.append(time.perf_counter() - t0)
                peak = (torch.cuda.max_memory_allocated() - before) / (loaded.num_parameters() * 2)
                if len(timings) == 1:
                    del loaded
            with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                rows.append(("from_pretrained(bf16, cuda) vs bf16 model, rel err", rel(loaded(idx.cuda()), flash), 1e-6))
            seconds = timings[-1]
    rows += guarded(chunked_loss_rows)
    rows += guarded(in_place_loss_rows)
    rows += guarded(lambda: decode_rows(gpu))
    rows += guarded(graphed_training_rows)
    for name, value, limit in rows:
        good = value <= limit
        ok &= good
        print(f"{name:<55}{value:>12.2e}  {'ok' if good else 'FAIL'} (<= {limit:g})")
    print(f"{'load gpt2 onto the GPU in bf16, seconds (2nd load)':<55}{seconds:>12.2f}  (1st: {timings[0]:.2f})")
    print(f"{'  peak GPU memory / bf16 model size':<55}{peak:>12.2f}")
    attention_timings()
    return 0 if ok else 1


def guarded(rows: Callable[[], list[tuple[str, float, float]]]) -> list[tuple[str, float, float]]:
    """A group of checks; one that raises becomes a failed row with its error, and the other groups still run."""
    try:
        return rows()
    except Exception as err:  # noqa: BLE001 (reported as a failure, never hidden)
        traceback.print_exc()
        name = getattr(rows, "__name__", "checks")
        return [(f"{name} raised {type(err).__name__}: {str(err).splitlines()[0][:60] if str(err) else ''}", float("inf"), 0)]


def decode_rows(model: GPT2) -> list[tuple[str, float, float]]:
    """generate's default on a GPU (the static step recorded as a CUDA graph) against the ordinary
    step (static_cache=False), fp32: tokens that differ, over greedy, sampled and padded calls, a
    second call (the recording reused), after an in-place weight edit (the recording reads it) and
    after a parameter is replaced (recorded again)."""
    import warnings

    g = torch.Generator().manual_seed(3)
    prompt = torch.randint(0, 50257, (3, 24), generator=g).cuda()
    mask = torch.ones_like(prompt)
    mask[0, :5] = 0
    mask[2, :11] = 0
    calls = [dict(temperature=0.0), dict(temperature=0.0, attention_mask=mask), dict(temperature=0.9, top_k=50, seed=7)]

    def differ() -> int:
        return sum(int((model.generate(prompt, 40, **kw) != model.generate(prompt, 40, static_cache=False, **kw)).sum()) for kw in calls)

    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # "decoding without a CUDA graph" must not happen here
        rows.append(("decode: CUDA-graph step vs ordinary, tokens differing", differ(), 0))
        rows.append(("  again (the recording reused)", differ(), 0))
        with torch.no_grad():
            model.transformer.h[0].mlp.c_fc.weight.mul_(1.5)  # in place: the recording reads the new numbers
        rows.append(("  after an in-place weight edit", differ(), 0))
        model.transformer.h[1].mlp.c_fc.weight = torch.nn.Parameter(model.transformer.h[1].mlp.c_fc.weight * 1.5)
        rows.append(("  after a parameter is replaced (recorded again)", differ(), 0))
    return rows


def graphed_training_rows() -> list[tuple[str, float, float]]:
    """``train --cuda-graph`` against the plain step: eager in fp32; compiled in bf16; eager in bf16 with
    ``--chunked-loss``; eager in fp32 with dropout 0.1 and ``--activation-checkpointing`` (a recompute
    that rewinds the RNG inside the recording; a replay draws the numbers a plain step would). The
    relative difference of the losses of 8 steps (4 replayed) and of the weights after them, from the
    same seed and batches. Not bit-equal: the embedding's backward adds with atomics, in no fixed order."""
    import warnings

    import numpy as np

    from gpt2lab.data import save_tokens
    from gpt2lab.train import TrainConfig, Trainer
    from gpt2lab.train.graphed import WARMUP_STEPS

    cases = (dict(dtype="fp32"), dict(dtype="bf16", compile=True), dict(dtype="bf16", chunked_loss=True),
             dict(dtype="fp32", dropout=0.1, activation_checkpointing=True))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        rng = np.random.default_rng(0)
        save_tokens(f"{tmp}/data", rng.integers(0, 50257, 100_000), rng.integers(0, 50257, 10_000), n_vocab=50257)
        for n, case in enumerate(cases):
            runs, why_not = {}, ""
            for graph in (False, True):
                cfg = TrainConfig(data=f"{tmp}/data", out=f"{tmp}/{n}-{graph}", n_layer=4, n_head=4, n_embd=256, block_size=256,
                                  batch_size=8, grad_accum=2, max_steps=100, device="cuda", cuda_graph=graph, progress=False,
                                  seed=0, **{"dropout": 0.0, **case})
                t = Trainer(cfg)
                try:
                    with warnings.catch_warnings(record=True) as caught:  # a failed recording warns and trains plainly
                        warnings.simplefilter("always", RuntimeWarning)
                        losses = torch.tensor([t.train_step() for _ in range(WARMUP_STEPS + 5)])
                    runs[graph] = (losses, torch.cat([p.detach().flatten().float() for p in t.model.parameters()]))
                    recorded = t.graphed is not None and t.graphed.graph is not None
                    why_not = why_not or "; ".join(str(w.message) for w in caught if "CUDA graph" in str(w.message))
                finally:
                    t.close()
            what = ", ".join(f"{k}={v}" for k, v in case.items())
            tolerance = 1e-5 if case["dtype"] == "fp32" else 1e-3
            rows.append((f"train --cuda-graph vs plain ({what}), losses rel", rel(runs[True][0], runs[False][0]), tolerance))
            rows.append(("  weights after 8 steps, relative error", rel(runs[True][1], runs[False][1]), tolerance))
            rows.append((f"  the step was not recorded{': ' + why_not[:80] if why_not else ''}", float(not recorded), 0))
    return rows


def in_place_loss_rows() -> list[tuple[str, float, float]]:
    """The eager training loss on bf16 logits (``train.loss.lm_loss``: in place, the softmax in fp32 a
    block of rows at a time) against the plain path (``next_token_loss``: F.cross_entropy on an fp32
    copy), at 16 x 1024 tokens of GPT-2's padded vocabulary: the loss, the gradient, and the memory
    each adds at its peak from the logits to their gradient, as a fraction of the plain path's."""
    from gpt2lab.model import next_token_loss
    from gpt2lab.train.loss import lm_loss

    g = torch.Generator(device="cuda").manual_seed(0)
    N, V, padded = 16 * 1024, 50257, 50304
    source = torch.randn(N, padded, device="cuda", generator=g) * 3
    targets = torch.randint(0, V, (1, N), device="cuda", generator=g)
    targets[0, :100] = -100
    results = []
    for fn in (next_token_loss, lm_loss):
        logits = source.to(torch.bfloat16).requires_grad_()[None]  # (1, N, V'): not a leaf, as a step's logits are not
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        loss = fn(logits, targets, V)
        (grad,) = torch.autograd.grad(loss, logits)
        torch.cuda.synchronize()
        results.append((loss.item(), grad.float(), torch.cuda.max_memory_allocated() - before))
        del logits, loss, grad
    (want, want_grad, want_peak), (got, got_grad, got_peak) = results
    return [("eager bf16 loss in place vs F.cross_entropy, |dloss|", abs(got - want), 1e-5),
            ("  d logits, relative error", rel(got_grad, want_grad), 1e-2),
            ("  peak memory added, in place / plain", got_peak / want_peak, 0.5)]


def chunked_loss_rows() -> list[tuple[str, float, float]]:
    """The chunked LM head + loss on the GPU under bf16 autocast, eager and compiled, against the
    whole-logits loss (bf16 head, fp32 cross-entropy) computed the plain way."""
    from gpt2lab.train.loss import chunked_lm_loss

    g = torch.Generator(device="cuda").manual_seed(0)
    N, C, V, padded = 8192, 768, 50257, 50304
    hidden = torch.randn(N, C, device="cuda", generator=g).requires_grad_()
    weight = (torch.randn(padded, C, device="cuda", generator=g) * 0.02)
    weight[V:] = 0
    weight.requires_grad_()
    targets = torch.randint(0, V, (N,), device="cuda", generator=g)
    targets[:100] = -100
    with torch.autocast("cuda", dtype=torch.bfloat16):
        logits = F.linear(hidden, weight)[:, :V].float()
        want = F.cross_entropy(logits, targets, ignore_index=-100)
    want_h, want_w = torch.autograd.grad(want, (hidden, weight))
    rows = []
    for name, fn in (("eager", chunked_lm_loss), ("compiled", torch.compile(chunked_lm_loss, fullgraph=True))):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            got = fn(hidden, weight, targets, V, chunk=2048)
        got_h, got_w = torch.autograd.grad(got, (hidden, weight))
        rows.append((f"chunked loss ({name}) vs whole logits, |dloss|", abs(got.item() - want.item()), 1e-3))
        rows.append(("  d hidden, relative error", rel(got_h, want_h), 2e-2))
        rows.append(("  d weight, relative error", rel(got_w, want_w), 2e-2))
    return rows


def attention_timings() -> None:
    """Causal attention forward + backward at GPT-2's training shape (16 x 12 heads x 1024 x 64, bf16)
    with each fused kernel, and with gpt2lab's choice (``devices.attention_kernels``)."""
    from gpt2lab.devices import attention_kernels

    q, k, v = (torch.randn(16, 12, 1024, 64, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    print(f"SDPA priority order (torch default): {torch._C._get_sdp_priority_order()}")

    def run(context) -> float:
        def once():
            with context():
                out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            out.backward(torch.ones_like(out))
        for _ in range(3):
            once()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(20):
            once()
        torch.cuda.synchronize()
        return (time.perf_counter() - t0) / 20

    import contextlib

    choices = {"default": contextlib.nullcontext, "flash": lambda: sdpa_kernel(SDPBackend.FLASH_ATTENTION),
               "cudnn": lambda: sdpa_kernel(SDPBackend.CUDNN_ATTENTION), "gpt2lab (attention_kernels)": lambda: attention_kernels(q.device)}
    flops = 4 * 16 * 12 * 1024 * 1024 * 64 * 0.5 * 3.5  # causal: half the pairs; fwd + bwd ~3.5 forward's products
    for name, context in choices.items():
        try:
            seconds = run(context)
            print(f"attention fwd+bwd {name:<28} {seconds * 1e3:7.3f} ms  {flops / seconds / 1e12:6.0f} TFLOP/s")
        except RuntimeError as err:
            print(f"attention fwd+bwd {name:<28} failed: {str(err).splitlines()[0]}")


if __name__ == "__main__":
    sys.exit(main())
