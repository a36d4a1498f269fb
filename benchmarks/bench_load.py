"""Peak memory and time to load a GPT-2 checkpoint: gpt2lab against transformers, same files.

Builds a random checkpoint of the chosen preset's shapes once (gpt2-xl by default: 1.56B
parameters, 6.2 GB in fp32), then loads it in fresh subprocesses, one per library, and reports
each one's peak resident memory above its baseline after imports, relative to the model's size,
right after loading and after a first forward pass (transformers maps the file lazily, so its
weights are only read, and counted, when first used).

    python benchmarks/bench_load.py [--preset gpt2-xl] [--dir /tmp/gpt2lab-bench]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
import torch
lib, path = sys.argv[1], sys.argv[2]
if lib == "gpt2lab":
    from gpt2lab import GPT2
    load = lambda: GPT2.from_pretrained(path)
else:
    from transformers import GPT2LMHeadModel
    load = lambda: GPT2LMHeadModel.from_pretrained(path)
rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
base = rss()
t0 = time.perf_counter()
model = load()
seconds = time.perf_counter() - t0
peak_load = rss() - base
# transformers maps the file and reads pages only when a weight is first used: count a forward too
with torch.no_grad():
    model(torch.arange(8)[None])
seconds_forward = time.perf_counter() - t0
peak = rss() - base
size = sum(p.numel() * p.element_size() for p in {id(p): p for p in model.parameters()}.values())
print(json.dumps({"seconds": seconds, "seconds_forward": seconds_forward, "peak_load": peak_load, "peak": peak, "model_bytes": size}))
"""


def warm_file_cache(path: Path) -> None:
    """Read the checkpoint once, so both libraries start from the same (warm) file cache."""
    for f in path.iterdir():
        with open(f, "rb") as handle:
            while handle.read(1 << 24):
                pass


def measure(lib: str, path: Path) -> dict:
    warm_file_cache(path)
    out = subprocess.run([sys.executable, "-c", CHILD, lib, str(path)], capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"{lib} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="gpt2-xl")
    parser.add_argument("--dir", default="/tmp/gpt2lab-bench")
    args = parser.parse_args()

    import torch

    from gpt2lab import GPT2, GPT2Config

    path = Path(args.dir) / f"random-{args.preset}"
    if not (path / "model.safetensors").is_file():
        print(f"building a random {args.preset} checkpoint in {path} (once) ...", flush=True)
        t0 = time.perf_counter()
        torch.manual_seed(0)
        GPT2(GPT2Config.from_preset(args.preset)).save_pretrained(path)
        print(f"  done in {time.perf_counter() - t0:.0f} s", flush=True)

    gib = 2**30
    results = {lib: measure(lib, path) for lib in ("gpt2lab", "transformers")}
    size = results["gpt2lab"]["model_bytes"]
    print(f"\n{args.preset}: {size / gib:.2f} GiB of fp32 weights")
    print(f"{'library':<14}{'load s':>8}{'+forward s':>12}{'peak after load':>17}{'peak after forward':>20}")
    for lib, r in results.items():
        print(f"{lib:<14}{r['seconds']:>8.1f}{r['seconds_forward']:>12.1f}"
              f"{r['peak_load'] / size:>16.2f}x{r['peak'] / size:>19.2f}x")
    ours, theirs = results["gpt2lab"], results["transformers"]
    print(f"(peaks are resident memory above the process's baseline, as multiples of the {size / gib:.2f} GiB model)")
    print(f"\ntransformers / gpt2lab: peak memory after a forward {theirs['peak'] / ours['peak']:.2f}x, "
          f"time to load and run a first forward {theirs['seconds_forward'] / ours['seconds_forward']:.2f}x")


if __name__ == "__main__":
    main()
