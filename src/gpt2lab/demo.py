"""A short offline tour of what gpt2lab has so far (``gpt2lab demo`` / ``make demo``)."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from .config import PRESETS, GPT2Config, parameter_counts
from .model import GPT2


def run_demo(out: str | Path = "demo_out", *, print_fn=print) -> dict:
    """Build a small GPT-2, save it in Hugging Face's format, load it back, compare, and generate.

    Returns the figures it printed, for tests and notebooks.
    """
    out = Path(out)
    print_fn("gpt2lab demo: a GPT-2 built from scratch, saved and loaded as a Hugging Face checkpoint\n")
    print_fn("The four released GPT-2 sizes (parameters, tied LM head):")
    for name in PRESETS:
        cfg = GPT2Config.from_preset(name)
        print_fn(f"  {name:<12} {cfg.n_layer:>2} layers x {cfg.n_head:>2} heads x {cfg.n_embd:>4} wide: {parameter_counts(cfg)['total']:>13,}")

    torch.manual_seed(0)
    config = GPT2Config(n_layer=4, n_head=4, n_embd=128, block_size=256)
    model = GPT2(config).eval()
    print_fn(f"\n1. Built a small GPT-2: {config.n_layer} layers, {config.n_head} heads, {config.n_embd} wide, "
             f"{model.num_parameters():,} parameters (random weights).")
    model_dir = out / "small-gpt2"
    model.save_pretrained(model_dir)
    files = ", ".join(sorted(p.name for p in model_dir.iterdir()))
    print_fn(f"2. Saved it in Hugging Face format to {model_dir}/ ({files}).")
    t0 = time.perf_counter()
    loaded = GPT2.from_pretrained(model_dir)
    print_fn(f"3. Loaded it back with GPT2.from_pretrained in {time.perf_counter() - t0:.2f} s.")
    idx = torch.randint(0, config.vocab_size, (2, 32), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        fused = loaded(idx)
        explicit = loaded(idx, explicit=True)
        diff_saved = (model(idx) - fused).abs().max().item()
        diff_paths = (fused - explicit).abs().max().item()
    print_fn(f"4. Same logits after the round trip: max |delta| = {diff_saved:.2e}; "
             f"fused vs explicit attention path: {diff_paths:.2e}.")
    t0 = time.perf_counter()
    generated = loaded.generate(idx[:1, :8], 24, temperature=0.0)
    dt = time.perf_counter() - t0
    print_fn(f"5. Greedy generation with the KV cache: 24 new tokens in {dt:.2f} s "
             f"({24 / dt:.0f} tokens/s): {generated[0, 8:].tolist()}")
    print_fn(f"\nEverything was written under {out.resolve()}/")
    return {"diff_saved": diff_saved, "diff_paths": diff_paths, "generated": generated}
