"""Hook points and patching: gpt2lab against a plain forward and against TransformerLens, same process.

1. ``model.run_with_cache(idx)`` of every hook point (15 per layer + 2) against gpt2lab's plain forward
   and against TransformerLens v4's ``TransformerBridge.run_with_cache`` (every hook) on the same
   weights; also each library's plain forward. Goals: at least 1.5x TransformerLens's speed, at most
   1.3x gpt2lab's plain forward.
2. A patching sweep of ``resid_pre`` by layer x position on an indirect-object prompt pair:
   ``gpt2lab.interp.patch`` (several patched runs stacked per forward) against
   ``transformer_lens.patching.get_act_patch_resid_pre`` (one forward per cell). Both are checked
   equal first. Beside them ``gpt2lab.interp.attribution_patch``, the same map estimated from one
   backward pass (TransformerLens has no such function), with its correlation to the exact map.

Random ``gpt2``-shaped weights (the released ones give the same times), fp32 on the CPU; medians
of ``--repeat`` runs, interleaved so a busy machine slows every side alike.

    python benchmarks/bench_interp.py [--seq-len 128] [--repeat 5] [--threads N]
"""

from __future__ import annotations

import argparse
import functools
import statistics
import tempfile
import time

import torch


def timed(fn) -> float:
    sync()
    t0 = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - t0


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def medians(fns: dict, repeat: int) -> dict[str, float]:
    times: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():
        fn()  # warm up
    for _ in range(repeat):
        for k, fn in fns.items():
            times[k].append(timed(fn))
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    import tqdm.auto
    from transformer_lens import patching

    patching.tqdm = functools.partial(tqdm.auto.tqdm, disable=True)  # its sweeps' bars, off for the timing
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import GPT2Config as HFConfig
    from transformers import GPT2LMHeadModel
    from transformers.utils import logging as hf_logging

    from gpt2lab import GPT2, interp, kernels

    hf_logging.set_verbosity_error()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        GPT2LMHeadModel(HFConfig(n_layer=12, n_head=12, n_embd=768)).eval().save_pretrained(tmp)
        ours = GPT2.from_pretrained(tmp, device=args.device).eval()
        hf = GPT2LMHeadModel.from_pretrained(tmp, attn_implementation="eager").eval()
        bridge = TransformerBridge.boot_transformers(tmp, hf_model=hf, tokenizer=None, device=args.device)
    idx = torch.randint(0, 50257, (1, args.seq_len), generator=torch.Generator().manual_seed(1)).to(args.device)

    with torch.no_grad():
        logits, cache = ours.run_with_cache(idx)
        tl_logits, tl_cache = bridge.run_with_cache(idx)
        delta = (logits - tl_logits).abs().max().item()
        def packed_forward():
            with kernels.packed(ours):
                return ours(idx)

        times = medians({
            "gpt2lab forward": lambda: ours(idx),
            "gpt2lab forward, packed products": packed_forward,
            "gpt2lab run_with_cache (all)": lambda: ours.run_with_cache(idx),
            "TransformerLens forward": lambda: bridge(idx),
            "TransformerLens run_with_cache (all)": lambda: bridge.run_with_cache(idx),
        }, args.repeat)
    where = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU, torch threads={torch.get_num_threads()}"
    print(f"gpt2 shape, T={args.seq_len}, batch 1, fp32, {where}, median of {args.repeat}")
    print(f"  cached points: gpt2lab {len(cache)}, TransformerLens {len(tl_cache)} (aliases share tensors); max |dlogits| {delta:.1e}")
    for name, t in times.items():
        print(f"  {name:<38} {t * 1e3:8.1f} ms")
    ours_cache, tl = times["gpt2lab run_with_cache (all)"], times["TransformerLens run_with_cache (all)"]
    plain, packed = times["gpt2lab forward"], times["gpt2lab forward, packed products"]
    print(f"  run_with_cache: {tl / ours_cache:.2f}x TransformerLens's speed (goal >= 1.5x); {ours_cache / packed:.2f}x "
          f"gpt2lab's forward with the same products (goal <= 1.3x), {ours_cache / plain:.2f}x its default forward")
    print(f"  (run_with_cache under no_grad uses the packed products where they pay: {kernels.worthwhile()} on this CPU)")

    # 2. patching: IOI-like pair, 15 tokens, one name swapped at position 9
    clean = torch.randint(0, 50257, (1, 15), generator=torch.Generator().manual_seed(2)).to(args.device)
    corrupt = clean.clone()
    corrupt[0, 9] = (corrupt[0, 9] + 1) % 50257
    metric = interp.logit_diff(1000, 2000)
    ours_map = interp.patch(ours, clean, corrupt, metric, progress=False)
    with torch.no_grad():
        _, clean_cache = bridge.run_with_cache(clean)
        tl_map = patching.get_act_patch_resid_pre(bridge, corrupt, clean_cache, metric)
    delta = (ours_map - tl_map).abs().max().item()
    t_ours = statistics.median(timed(lambda: interp.patch(ours, clean, corrupt, metric, progress=False)) for _ in range(3))
    t_tl = statistics.median(timed(lambda: patching.get_act_patch_resid_pre(bridge, corrupt, clean_cache, metric)) for _ in range(3))
    print(f"patching resid_pre, 12 layers x 15 positions (180 patched runs), median of 3; max |delta| {delta:.1e}")
    print(f"  gpt2lab interp.patch                   {t_ours:8.2f} s")
    print(f"  TransformerLens get_act_patch_resid_pre {t_tl:7.2f} s   gpt2lab is {t_tl / t_ours:.1f}x its speed")
    estimate = interp.attribution_patch(ours, clean, corrupt, metric)
    t_grad = statistics.median(timed(lambda: interp.attribution_patch(ours, clean, corrupt, metric)) for _ in range(3))
    agree = torch.corrcoef(torch.stack([estimate.flatten(), ours_map.flatten()]))[0, 1].item()
    print(f"  gpt2lab interp.attribution_patch       {t_grad:8.2f} s   {t_ours / t_grad:.1f}x interp.patch's speed, "
          f"{t_tl / t_grad:.1f}x TransformerLens's; correlation with the exact map {agree:.3f}")


if __name__ == "__main__":
    main()
