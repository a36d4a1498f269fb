"""Core checks on a CUDA GPU: the fused path (flash attention) against the explicit one, CPU against
GPU, the KV cache, and loading straight onto the GPU. Prints a short table; exits non-zero on failure.

    PYTHONPATH=src python benchmarks/gpu_check.py
"""

from __future__ import annotations

import sys
import tempfile
import time

import torch
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
    for name, value, limit in rows:
        good = value <= limit
        ok &= good
        print(f"{name:<55}{value:>12.2e}  {'ok' if good else 'FAIL'} (<= {limit:g})")
    print(f"{'load gpt2 onto the GPU in bf16, seconds (2nd load)':<55}{seconds:>12.2f}  (1st: {timings[0]:.2f})")
    print(f"{'  peak GPU memory / bf16 model size':<55}{peak:>12.2f}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
