"""FLOPs: what a GPT-2 costs per token, and what the hardware can do per second. MFU (model FLOPs
utilisation) is the first times tokens per second over the second.

One convention, used by MFU in training, by ``explain``, by ``benchmarks/`` and by the docs:

    counted:    matrix products only, 2 FLOPs per multiply-add;
    dense:      every weight of a matrix product once per token: 2 x M, where
                M = n_layer x (4 n_embd^2 + 2 n_embd x mlp_dim) + n_embd x vocab_size
                (c_attn, attn.c_proj, c_fc, mlp.c_proj, and the LM head's product; the LM head
                counts once even when tied, and the token and position embeddings are look-ups,
                not products);
    attention:  a token attends to all T positions of its window: q.k with T keys and the sum of
                T values, 4 x n_layer x n_embd x T (the full T x T square, as the explicit path
                computes it, and as PaLM's MFU convention counts it; a causal kernel that skips
                the masked half does less work, so MFU stays comparable with published figures);
    forward:    2 M + 4 L C T per token (also exactly the cost of the next token after a context
                of T with a KV cache);
    training:   3 x forward = 6 M + 12 L C T per token (backward does two products for each
                product of the forward: one for the input's gradient, one for the weight's);
    left out:   biases, LayerNorm, GELU, softmax, residual additions, the loss: a few operations
                per value, not per weight.

    >>> from gpt2lab import GPT2Config
    >>> flops_per_token(GPT2Config.from_preset("gpt2"), 1024) / 1e9  # training, GFLOP per token
    0.8544384
"""

from __future__ import annotations

import time
from typing import Any

import torch

from .config import GPT2Config


def matmul_weights(config: GPT2Config) -> int:
    """M: the weights used in matrix products, each once per token (see the module docstring)."""
    C, L, V, F_ = config.n_embd, config.n_layer, config.vocab_size, config.mlp_dim
    return L * (C * 3 * C + C * C + C * F_ + F_ * C) + C * V


def flops_per_token(config: GPT2Config, seq_len: int, *, training: bool = True) -> int:
    """FLOPs per token over windows of ``seq_len`` tokens: 6 M + 12 L C T for a training step
    (forward and backward), 2 M + 4 L C T for a forward pass."""
    forward = 2 * matmul_weights(config) + 4 * config.n_layer * config.n_embd * seq_len
    return 3 * forward if training else forward


def flops_estimate(config: GPT2Config, seq_len: int) -> dict[str, Any]:
    """The pieces of ``flops_per_token`` by name, for ``explain`` and for anyone who wants the arithmetic."""
    M = matmul_weights(config)
    attention = 4 * config.n_layer * config.n_embd * seq_len
    return {
        "matmul_weights": M,
        "dense_per_token": 2 * M,
        "attention_per_token": attention,
        "forward_per_token": flops_per_token(config, seq_len, training=False),
        "training_per_token": flops_per_token(config, seq_len),
        "formula": "forward = 2 x matmul weights + 4 x n_layer x n_embd x T; training = 3 x forward",
    }


# ---------------------------------------------------------------------------------------------
# What the hardware can do: the denominator of MFU
# ---------------------------------------------------------------------------------------------

# Dense peak FLOP/s per GPU, (bf16/fp16 tensor cores, fp32 via TF32 tensor cores), from the vendors'
# data sheets. Matched against torch.cuda.get_device_name() in order: more specific names first.
GPU_PEAK_FLOPS: list[tuple[str, float, float]] = [
    ("GH200", 989e12, 494e12),
    ("H200", 989e12, 494e12),
    ("H100 PCIe", 756e12, 378e12),
    ("H100 NVL", 835e12, 418e12),
    ("H100", 989e12, 494e12),  # SXM
    ("H800", 989e12, 494e12),
    ("A100", 312e12, 156e12),
    ("A800", 312e12, 156e12),
    ("L40S", 362e12, 183e12),
    ("L40", 181e12, 90.5e12),
    ("L4", 121e12, 60e12),
    ("A10G", 70e12, 35e12),
    ("A10", 125e12, 62.5e12),
    ("V100", 125e12, 15.7e12),  # no TF32: fp32 is the CUDA-core rate
    ("T4", 65e12, 8.1e12),
]

_CPU_PEAK: dict[str, float] = {}


def measure_cpu_peak_flops(dtype: torch.dtype = torch.float32, n: int = 1024, repeats: int = 5) -> float:
    """This machine's matrix-product rate in FLOP/s: the best of a few (n x n) @ (n x n) products,
    with the thread count training uses. The denominator of MFU on a CPU (no data sheet applies)."""
    key = f"{dtype}-{n}-{torch.get_num_threads()}"
    if key not in _CPU_PEAK:
        # a generator of its own: measuring must not move the global RNG a training run draws dropout from
        numbers = torch.Generator().manual_seed(0)
        a = torch.randn(n, n, dtype=dtype, generator=numbers)  # (n, n)
        b = torch.randn(n, n, dtype=dtype, generator=numbers)  # (n, n)
        a @ b  # warm up (thread pool, caches)
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - t0)
        _CPU_PEAK[key] = 2 * n**3 / best
    return _CPU_PEAK[key]


def peak_flops(device: torch.device, dtype: torch.dtype) -> float | None:
    """Peak FLOP/s of one device for matrix products in ``dtype``: the GPU table, or a measurement
    on a CPU; ``None`` for a GPU not in the table."""
    if device.type == "cpu":
        return measure_cpu_peak_flops(torch.bfloat16 if dtype == torch.bfloat16 else torch.float32)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, half, single in GPU_PEAK_FLOPS:
            if key in name:
                return half if dtype in (torch.bfloat16, torch.float16) else single
    return None


__all__ = ["matmul_weights", "flops_per_token", "flops_estimate", "GPU_PEAK_FLOPS", "measure_cpu_peak_flops", "peak_flops"]
