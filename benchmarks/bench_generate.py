"""Greedy decoding and prefill speed: gpt2lab vs transformers, same weights, same process.

    python benchmarks/bench_generate.py                          # CPU, fp32, batch 1 and 8
    python benchmarks/bench_generate.py --device cuda --dtype bf16 --compile

The model is GPT-2 124M with random weights (the released ones give the same speed; no download).
For each batch size it times ``GPT2.generate`` and ``GPT2LMHeadModel.generate`` (greedy, a 32-token
prompt, 48 new tokens, eos disabled so both make every token): the whole call, and the decode steps
alone (the 48-token call less a 1-token call). And the *weight-streaming floor*: a bare chain of the
model's matrix products for one token per row, the time an implementation needs just to read the
weights once per step, twice: through gpt2lab's own layers (on a CPU, the oneDNN-packed weights of
``gpt2lab.kernels``, the fastest products we know there) and through dense ``F.linear`` (PyTorch's
BLAS, where transformers' Conv1D also lands). The decode rate is the figure to hold against them.
Then it times the prefill of a 512-token prompt (``max_new_tokens=1``: the prompt pass and one token)
in both libraries. ``--pack on|off`` overrides where gpt2lab packs (default: where it pays).

Timings interleave the two libraries and keep the best of ``--repeats`` runs, which is the figure
least disturbed by other work on the machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import tempfile
import time

import torch
import torch.nn.functional as F

from gpt2lab import GPT2, GPT2Config, kernels


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


CLOCK = time.perf_counter


def best_time(fn, repeats: int, device: str) -> float:
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = CLOCK()
        fn()
        sync(device)
        times.append(CLOCK() - t0)
    return min(times)


@torch.no_grad()
def floor_step(model: GPT2, x: torch.Tensor, own_layers: bool) -> torch.Tensor:
    """The matrix products of one decode step and nothing else: each weight read once.

    ``own_layers``: call the model's own Linear modules, i.e. the kernels gpt2lab decodes with
    (oneDNN-packed on a CPU inside ``kernels.packed``); else dense ``F.linear`` on the same
    weights, which is where PyTorch's BLAS (and transformers) stand.
    """
    for block in model.transformer.h:
        if own_layers:
            block.attn.c_attn(x)  # (B, 3C)
            block.attn.c_proj(x)  # (B, C)
            block.mlp.c_proj(block.mlp.c_fc(x))  # (B, 4C) -> (B, C)
        else:
            F.linear(x, block.attn.c_attn.weight)  # (B, 3C)
            F.linear(x, block.attn.c_proj.weight)  # (B, C)
            F.linear(F.linear(x, block.mlp.c_fc.weight), block.mlp.c_proj.weight)  # (B, 4C) -> (B, C)
    return model.lm_head(x) if own_layers else F.linear(x, model.lm_head.weight)  # (B, V)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda", "mps"])
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])
    ap.add_argument("--compile", action="store_true", help="gpt2lab decodes with the torch.compile'd static-cache step")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--prompt-len", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=48)
    ap.add_argument("--prefill-len", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--n-layer", type=int, default=12, help="fewer layers for a quick look (default: gpt2's 12)")
    ap.add_argument("--pack", choices=["auto", "on", "off"], default="auto",
                    help="oneDNN-packed weights on CPU (gpt2lab.kernels): where they pay (default), always, or never")
    ap.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                    help="wall clock (default), or this process's CPU time: with --threads 1 the figure other jobs on a shared machine disturb least")
    args = ap.parse_args()
    global CLOCK
    if args.clock == "cpu":
        if args.device != "cpu":
            ap.error("--clock cpu measures CPU work; use it with --device cpu")
        CLOCK = time.process_time
    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ["GPT2LAB_PACKED_LINEAR"] = {"auto": "auto", "on": "1", "off": "0"}[args.pack]

    from transformers import GPT2LMHeadModel
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    device = args.device
    torch.manual_seed(0)
    config = GPT2Config.from_preset("gpt2")
    if args.n_layer != config.n_layer:
        config = dataclasses.replace(config, n_layer=args.n_layer)
    ours = GPT2(config).eval()
    with tempfile.TemporaryDirectory() as d:
        ours.save_pretrained(d)  # transformers loads the very same weights
        hf = GPT2LMHeadModel.from_pretrained(d).eval()
    ours = ours.to(device=device, dtype=dtype)
    hf = hf.to(device=device, dtype=dtype)
    hf.generation_config.eos_token_id = None  # make every token, like gpt2lab without eos_token_id
    hf.generation_config.pad_token_id = 0
    print(f"GPT-2 {ours.num_parameters() / 1e6:.0f}M ({config.n_layer} layers), random weights; device {device}, {args.dtype}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.machine()}, {args.clock} clock"
          + (", gpt2lab compiled static-cache step" if args.compile else ""))

    if device == "cpu":
        t0 = time.perf_counter()
        packed = kernels.pack(ours)  # what the first generate call does by itself, once per model
        if packed:
            print(f"oneDNN-packed weights: {packed / 2**20:.0f} MiB, packed once in {time.perf_counter() - t0:.2f} s "
                  "(not in the timings below; the first generate call pays it)")
        else:
            if args.pack == "off":
                why = "--pack off"
            elif not kernels.worthwhile():
                why = f"not worthwhile on this {kernels.cpu_vendor() or 'CPU'} (--pack on to try)"
            else:
                why = "oneDNN unavailable here"
            print(f"weights not packed, dense F.linear: {why}")
    gen = torch.Generator().manual_seed(1)
    N = args.new_tokens
    for B in args.batch_sizes:
        prompt = torch.randint(0, config.vocab_size, (B, args.prompt_len), generator=gen).to(device)
        x = torch.randn(B, config.n_embd, generator=gen).to(device=device, dtype=dtype)
        with torch.no_grad():
            a = ours.generate(prompt, N, temperature=0.0, compile=args.compile)  # warm-up (and compile)
            b = hf.generate(prompt, max_new_tokens=N, do_sample=False)
            floor_step(ours, x, False)
        same = torch.equal(a, b)
        ours_n = lambda n: ours.generate(prompt, n, temperature=0.0, compile=args.compile)  # noqa: E731
        hf_n = lambda n: hf.generate(prompt, max_new_tokens=n, do_sample=False)  # noqa: E731
        t = {k: float("inf") for k in ("ours", "ours1", "hf", "hf1", "floor", "dense_floor")}
        for _ in range(args.repeats):  # interleaved, so a busy moment hurts both alike
            t["ours"] = min(t["ours"], best_time(lambda: ours_n(N), 1, device))
            t["hf"] = min(t["hf"], best_time(lambda: hf_n(N), 1, device))
            t["ours1"] = min(t["ours1"], best_time(lambda: ours_n(1), 1, device))
            t["hf1"] = min(t["hf1"], best_time(lambda: hf_n(1), 1, device))
            with kernels.packed(ours):  # the products as generate runs them
                t["floor"] = min(t["floor"], best_time(lambda: [floor_step(ours, x, True) for _ in range(N)], 1, device))
            t["dense_floor"] = min(t["dense_floor"], best_time(lambda: [floor_step(ours, x, False) for _ in range(N)], 1, device))
        r_ours, r_hf, r_floor = B * N / t["ours"], B * N / t["hf"], B * N / t["floor"]
        r_dense = B * N / t["dense_floor"]
        # decode alone: the N-token call less the 1-token call (prefill + first token), over N - 1 steps
        d_ours = B * (N - 1) / max(t["ours"] - t["ours1"], 1e-9)
        d_hf = B * (N - 1) / max(t["hf"] - t["hf1"], 1e-9)
        print(f"batch {B}, {args.prompt_len}-token prompt, {N} new tokens, greedy (same tokens: {'yes' if same else 'NO'})")
        print(f"  whole call:  gpt2lab {r_ours:7.1f} tok/s | transformers {r_hf:7.1f} tok/s | gpt2lab/transformers {r_ours / r_hf:.2f}x")
        print(f"  decode only: gpt2lab {d_ours:7.1f} tok/s | transformers {d_hf:7.1f} tok/s | gpt2lab/transformers {d_ours / d_hf:.2f}x")
        print(f"  floor, gpt2lab's own layers {r_floor:7.1f} tok/s | gpt2lab decode {d_ours / r_floor:.0%} of it, whole call {r_ours / r_floor:.0%}")
        print(f"  floor, dense F.linear       {r_dense:7.1f} tok/s | gpt2lab decode {d_ours / r_dense:.0%} of it; transformers decode {d_hf / r_dense:.0%}")

    P = args.prefill_len
    prompt = torch.randint(0, config.vocab_size, (1, P), generator=gen).to(device)
    with torch.no_grad():
        ours.generate(prompt, 1, temperature=0.0)
        hf.generate(prompt, max_new_tokens=1, do_sample=False)
    t_ours, t_hf = float("inf"), float("inf")
    for _ in range(args.repeats):
        t_ours = min(t_ours, best_time(lambda: ours.generate(prompt, 1, temperature=0.0), 1, device))
        t_hf = min(t_hf, best_time(lambda: hf.generate(prompt, max_new_tokens=1, do_sample=False), 1, device))
    print(f"prefill {P} tokens (+1 new): gpt2lab {t_ours * 1e3:7.1f} ms ({P / t_ours:6.0f} tok/s) | "
          f"transformers {t_hf * 1e3:7.1f} ms ({P / t_hf:6.0f} tok/s) | gpt2lab/transformers speed {t_hf / t_ours:.2f}x")


if __name__ == "__main__":
    main()
