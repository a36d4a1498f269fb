"""Greedy decoding and prefill speed: gpt2lab vs transformers, same weights, same process.

    python benchmarks/bench_generate.py                          # CPU, fp32, batch 1 and 8
    python benchmarks/bench_generate.py --device cuda --dtype bf16 --compile [--profile]

The model is GPT-2 124M with random weights (the released ones give the same speed; no download).
For each batch size it times ``GPT2.generate`` and ``GPT2LMHeadModel.generate`` (greedy, a 32-token
prompt, 48 new tokens on a CPU and 128 on a GPU, eos disabled so both make every token): the whole
call, and the decode steps alone (the N-token call less a 1-token call). And the *weight-streaming
floor*: a bare chain of the model's matrix products for one token per row, the time an
implementation needs just to read the weights once per step, twice: through gpt2lab's own layers (on
a CPU, the oneDNN-packed weights of ``gpt2lab.kernels``, the fastest products we know there) and
through dense ``F.linear`` (PyTorch's BLAS, where transformers' Conv1D also lands). The decode rate is
the figure to hold against them. Then it times the prefill of a 512-token prompt
(``max_new_tokens=1``: the prompt pass and one token) in both libraries. ``--pack on|off`` overrides
where gpt2lab packs (default: where it pays).

``--compile`` adds each library's compiled decoding beside its eager one: gpt2lab's
``generate(..., compile=True)`` (the static-cache step, ``torch.compile`` with CUDA graphs) against
transformers' own: a static cache, whose decode step ``generate`` compiles with
``CompileConfig(fullgraph=True, mode="reduce-overhead")`` (transformers 5's documented way;
``--hf-compile forward`` instead sets ``model.forward = torch.compile(model.forward, ...)`` with the
same arguments, prefill included). It prints compiled vs compiled and eager vs eager.
``--profile`` runs PyTorch's profiler over one gpt2lab call per batch size (compiled with
``--compile``) and prints the operations that take the most device and host time.

Timings interleave the libraries and keep the best of ``--repeats`` runs, which is the figure least
disturbed by other work on the machine.
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


def transformers_compiled(path: str, device: str, dtype: torch.dtype, how: str):
    """transformers' fastest greedy decoding: a static KV cache and a ``torch.compile``'d step
    (``mode="reduce-overhead"``: CUDA graphs; ``fullgraph=True``).

    ``how="generate"``: as transformers 5 documents it, the static cache makes ``generate`` compile the
    decode step itself (prefill stays eager), told to use those arguments by a ``CompileConfig``.
    ``how="forward"``: ``model.forward = torch.compile(model.forward, ...)``, prefill included, with
    ``generate``'s own compiling turned off so the step is not compiled twice."""
    from transformers import CompileConfig, GPT2LMHeadModel

    hf = GPT2LMHeadModel.from_pretrained(path).eval().to(device=device, dtype=dtype)
    hf.generation_config.eos_token_id = None
    hf.generation_config.pad_token_id = 0
    hf.generation_config.cache_implementation = "static"
    if how == "generate":
        config = CompileConfig(fullgraph=True, mode="reduce-overhead")
        config._compile_all_devices = True  # transformers compiles on GPUs only unless told (a private switch; no harm where absent)
        hf.generation_config.compile_config = config
    else:
        hf.generation_config.disable_compile = True
        hf.forward = torch.compile(hf.forward, mode="reduce-overhead", fullgraph=True)
    return hf


def rates(t: dict[str, float], name: str, B: int, N: int) -> tuple[float, float]:
    """Whole-call and decode-only tokens/s of one side from its best times: decode is the N-token
    call less the 1-token call (prefill and the first token), over N - 1 steps."""
    return B * N / t[name], B * (N - 1) / max(t[name] - t[f"{name}1"], 1e-9)


def profile_call(fn, device: str, label: str, steps: int) -> None:
    """PyTorch's profiler over one call of ``fn``: the top operations by self device time and by self host time."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    sync(device)
    with profile(activities=activities) as prof:
        fn()
        sync(device)
    table = prof.key_averages()
    print(f"profile: {label}, one call (prefill + {steps} decode steps; divide totals by the steps for one step)")
    if device == "cuda":
        print("  top 15 by self CUDA time:")
        print(table.table(sort_by="self_device_time_total", row_limit=15, max_name_column_width=70))
    print("  top 15 by self CPU time:")
    print(table.table(sort_by="self_cpu_time_total", row_limit=15, max_name_column_width=70))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda", "mps"])
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])
    ap.add_argument("--compile", action="store_true",
                    help="also time each library's compiled decoding: gpt2lab compile=True, transformers' static cache + torch.compile")
    ap.add_argument("--hf-compile", choices=["generate", "forward"], default="generate",
                    help="how transformers compiles (with --compile): generate's own compile of the decode step (default), or model.forward compiled")
    ap.add_argument("--profile", action="store_true", help="profile one gpt2lab call per batch size (the compiled one with --compile)")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--prompt-len", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, help="tokens per call (default: 48 on a CPU, 128 on a GPU as in the issue's table)")
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
    N = args.new_tokens or (128 if device == "cuda" else 48)
    torch.manual_seed(0)
    config = GPT2Config.from_preset("gpt2")
    if args.n_layer != config.n_layer:
        config = dataclasses.replace(config, n_layer=args.n_layer)
    ours = GPT2(config).eval()
    with tempfile.TemporaryDirectory() as d:
        ours.save_pretrained(d)  # transformers loads the very same weights
        hf = GPT2LMHeadModel.from_pretrained(d).eval()
        hf_compiled = transformers_compiled(d, device, dtype, args.hf_compile) if args.compile else None
    ours = ours.to(device=device, dtype=dtype)
    hf = hf.to(device=device, dtype=dtype)
    hf.generation_config.eos_token_id = None  # make every token, like gpt2lab without eos_token_id
    hf.generation_config.pad_token_id = 0
    print(f"GPT-2 {ours.num_parameters() / 1e6:.0f}M ({config.n_layer} layers), random weights; device {device}, {args.dtype}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.machine()}, {args.clock} clock"
          + (f"; compiled: gpt2lab compile=True, transformers static cache + compile ({args.hf_compile})" if args.compile else ""))

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
    for B in args.batch_sizes:
        prompt = torch.randint(0, config.vocab_size, (B, args.prompt_len), generator=gen).to(device)
        x = torch.randn(B, config.n_embd, generator=gen).to(device=device, dtype=dtype)
        # each side: a call making n new tokens; eager first, then the compiled pair
        sides = {
            "ours": lambda n, p=prompt: ours.generate(p, n, temperature=0.0),
            "hf": lambda n, p=prompt: hf.generate(p, max_new_tokens=n, do_sample=False),
        }
        if device == "cuda":  # gpt2lab's default on a GPU records the step as a CUDA graph; this is every kernel launched from Python
            sides["ours_plain"] = lambda n, p=prompt: ours.generate(p, n, temperature=0.0, static_cache=False)
        if hf_compiled is not None:
            sides["ours_c"] = lambda n, p=prompt: ours.generate(p, n, temperature=0.0, compile=True)
            sides["hf_c"] = lambda n, p=prompt, m=hf_compiled: m.generate(p, max_new_tokens=n, do_sample=False)
        outputs = {}
        with torch.no_grad():
            for name, call in list(sides.items()):
                if name not in sides:
                    continue
                t0 = time.perf_counter()
                try:
                    outputs[name] = call(N)  # warm-up: packs the weights, compiles, records the CUDA graphs
                    call(1)  # the 1-token call reuses what the N-token call set up (transformers keeps the longer static cache)
                    if name.endswith("_c"):
                        call(N)  # a second call: whatever the first left to settle (re-recorded graphs) does not count
                        who = "gpt2lab" if name == "ours_c" else "transformers"
                        print(f"  (batch {B}: {who} compiled and warm in {time.perf_counter() - t0:.1f} s)")
                except Exception as err:  # an optional side failing must not cost the others' figures
                    if name in ("ours", "hf"):
                        raise
                    print(f"  (batch {B}: {name} FAILED, left out: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})", flush=True)
                    for dropped in (("ours_c", "hf_c") if name.endswith("_c") else (name,)):
                        sides.pop(dropped, None)
            floor_step(ours, x, False)
        t = {k: float("inf") for k in [*sides, *(f"{k}1" for k in sides), "floor", "dense_floor"]}
        for _ in range(args.repeats):  # interleaved, so a busy moment hurts every side alike
            for name, call in sides.items():
                t[name] = min(t[name], best_time(lambda c=call: c(N), 1, device))
                t[f"{name}1"] = min(t[f"{name}1"], best_time(lambda c=call: c(1), 1, device))
            with kernels.packed(ours):  # the products as generate runs them
                t["floor"] = min(t["floor"], best_time(lambda v=x: [floor_step(ours, v, True) for _ in range(N)], 1, device))
            t["dense_floor"] = min(t["dense_floor"], best_time(lambda v=x: [floor_step(ours, v, False) for _ in range(N)], 1, device))

        (r_ours, d_ours), (r_hf, d_hf) = rates(t, "ours", B, N), rates(t, "hf", B, N)
        r_floor, r_dense = B * N / t["floor"], B * N / t["dense_floor"]
        same = "yes" if torch.equal(outputs["ours"], outputs["hf"]) else "NO"
        print(f"batch {B}, {args.prompt_len}-token prompt, {N} new tokens, greedy (same tokens: {same})")
        print(f"  whole call:  gpt2lab {r_ours:7.1f} tok/s | transformers {r_hf:7.1f} tok/s | gpt2lab/transformers {r_ours / r_hf:.2f}x")
        print(f"  decode only: gpt2lab {d_ours:7.1f} tok/s | transformers {d_hf:7.1f} tok/s | gpt2lab/transformers {d_ours / d_hf:.2f}x")
        if "ours_plain" in sides:
            r_op, d_op = rates(t, "ours_plain", B, N)
            same_p = "yes" if torch.equal(outputs["ours_plain"], outputs["ours"]) else "NO"
            print(f"  gpt2lab above: the default, its step a CUDA graph; without it (static_cache=False, same tokens: {same_p}):")
            print(f"  decode only: gpt2lab {d_op:7.1f} tok/s | transformers {d_hf:7.1f} tok/s | gpt2lab/transformers {d_op / d_hf:.2f}x "
                  f"(whole call {r_op / r_hf:.2f}x)")
        print(f"  floor, gpt2lab's own layers {r_floor:7.1f} tok/s | gpt2lab decode {d_ours / r_floor:.0%} of it, whole call {r_ours / r_floor:.0%}")
        print(f"  floor, dense F.linear       {r_dense:7.1f} tok/s | gpt2lab decode {d_ours / r_dense:.0%} of it; "
              f"transformers decode {d_hf / r_dense:.0%}")
        if "ours_c" in sides:
            (r_oc, d_oc), (r_hc, d_hc) = rates(t, "ours_c", B, N), rates(t, "hf_c", B, N)
            same_c = " ".join(f"{who} {'yes' if torch.equal(outputs[a], outputs[b]) else 'NO'}"
                              for who, a, b in (("gpt2lab", "ours_c", "ours"), ("transformers", "hf_c", "hf")))
            print(f"  compiled (same tokens as eager: {same_c}); gpt2lab compile=True | transformers static cache + compile:")
            print(f"  whole call:  gpt2lab {r_oc:7.1f} tok/s | transformers {r_hc:7.1f} tok/s | gpt2lab/transformers {r_oc / r_hc:.2f}x")
            print(f"  decode only: gpt2lab {d_oc:7.1f} tok/s | transformers {d_hc:7.1f} tok/s | gpt2lab/transformers {d_oc / d_hc:.2f}x "
                  f"({1e3 * B / d_oc:.3f} vs {1e3 * B / d_hc:.3f} ms a step)")
        if args.profile:
            which = "ours_c" if "ours_c" in sides else "ours"
            with torch.no_grad():
                profile_call(lambda c=sides[which]: c(N), device, f"gpt2lab {'compiled' if which == 'ours_c' else 'eager'}, batch {B}", N - 1)

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
