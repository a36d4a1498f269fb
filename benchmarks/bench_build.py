"""Time to build a randomly initialised GPT-2 from its config: gpt2lab's ``GPT2(config)`` beside
transformers' ``GPT2LMHeadModel(config)``, in one process, alternating, each with GPT-2's initialisation
(N(0, 0.02), the residual projections scaled down). What every ``train --init scratch`` run and every
random model for a lesson or a test waits for before its first step.

    python benchmarks/bench_build.py [--presets gpt2 gpt2-medium] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from gpt2lab import GPT2, GPT2Config
from gpt2lab.config import PRESETS


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--presets", nargs="+", default=["gpt2", "gpt2-medium"], choices=sorted(PRESETS))
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds per side (the median is reported)")
    args = p.parse_args()
    from transformers import GPT2Config as HFConfig
    from transformers import GPT2LMHeadModel

    print(f"building a random model from its config, torch {torch.__version__}, {torch.get_num_threads()} threads")
    for preset in args.presets:
        shape = PRESETS[preset]
        ours_config = GPT2Config(**shape)
        hf_config = HFConfig(n_layer=shape["n_layer"], n_head=shape["n_head"], n_embd=shape["n_embd"])
        sides = {"gpt2lab": lambda c=ours_config: GPT2(c), "transformers": lambda c=hf_config: GPT2LMHeadModel(c)}
        for build in sides.values():  # once each before timing: imports and first-call set-up
            build()
        times: dict[str, list[float]] = {name: [] for name in sides}
        for _ in range(args.rounds):
            for name, build in sides.items():
                torch.manual_seed(0)
                start = time.perf_counter()
                model = build()
                times[name].append(time.perf_counter() - start)
                del model
        ours, theirs = statistics.median(times["gpt2lab"]), statistics.median(times["transformers"])
        print(f"  {preset:12s} gpt2lab {ours:6.2f} s   transformers {theirs:6.2f} s   ratio {theirs / ours:.2f}x (gpt2lab faster when > 1)")


if __name__ == "__main__":
    main()
