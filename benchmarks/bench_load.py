"""Time and peak memory to load (and save) a GPT-2 checkpoint: the safetensors library that
``weights.py`` uses, the hand-written reader and writer it used before (kept here as the
baseline), and transformers, on the same files.

Builds a random checkpoint of the chosen preset's shapes once (gpt2-xl by default: 1.56B
parameters, 5.8 GiB in fp32), then runs each variant in a fresh subprocess, alternating rounds,
and reports its peak resident memory above its baseline, relative to the model's size. Loading
is timed to the model and to its first forward pass: mapped files are read, and counted, only
when a weight is first used. Saving writes the loaded model once more (to the same disk).

    python benchmarks/bench_load.py [--preset gpt2-xl] [--dir /tmp/gpt2lab-bench] [--rounds 2] [--no-save]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

CHILD = r"""
import json, struct, sys, time
from pathlib import Path
import torch
variant, path = sys.argv[1], Path(sys.argv[2])

# -- the hand-written safetensors reader and writer weights.py had until 2026-11-27 (the baseline) --
DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "I64": torch.int64}
NAMES = {v: k for k, v in DTYPES.items()}

def handwritten_map(file):
    with open(file, "rb") as handle:
        (n,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(n))
    header.pop("__metadata__", None)
    data = torch.from_file(str(file), shared=False, size=file.stat().st_size, dtype=torch.uint8)  # copy-on-write map
    for name, info in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
        begin, end = info["data_offsets"]
        yield name, data[8 + n + begin : 8 + n + end].view(DTYPES[info["dtype"]]).view(info["shape"])

def handwritten_write(file, tensors):
    header = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, t in tensors:
        nbytes = t.numel() * t.element_size()
        header[name] = {"dtype": NAMES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    with open(file, "wb") as handle:
        handle.write(struct.pack("<Q", len(blob)))
        handle.write(blob)
        for _, t in tensors:  # one tensor at a time, converted just before its bytes are written
            handle.write(memoryview(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()))

def library_map(file):
    from safetensors import safe_open
    with safe_open(file, framework="pt") as f:
        for name in f.keys():
            yield name, f.get_tensor(name)

def gpt2lab_load(read):
    from gpt2lab import GPT2, GPT2Config
    from gpt2lab.weights import load_weights
    with torch.device("meta"):
        model = GPT2(GPT2Config.from_json_file(path / "config.json"))
    load_weights(model, read(path / "model.safetensors"), assign=True)
    model.tie_weights()
    return model.eval()

if variant == "transformers":
    from transformers import GPT2LMHeadModel
    load = lambda: GPT2LMHeadModel.from_pretrained(path)
elif variant in ("handwritten", "save-handwritten"):
    load = lambda: gpt2lab_load(handwritten_map)
else:  # "safetensors", "save-safetensors": the library, as weights.py reads
    load = lambda: gpt2lab_load(library_map)
def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024

def start_peak():
    # reset the resident high-water mark (Linux), so an import's peak does not hide the load's
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")
    return status("VmRSS")

rss = lambda: status("VmHWM")
if variant.startswith("save-"):
    model = load()
    with torch.no_grad():
        model(torch.arange(8)[None])  # every weight paged in: the baseline holds the whole model
    from gpt2lab.weights import hf_state
    tensors = hf_state(model)
    out = Path(sys.argv[3]) / "resaved.safetensors"
    base = start_peak()
    t0 = time.perf_counter()
    if variant == "save-handwritten":
        handwritten_write(out, tensors)
    else:
        from safetensors.torch import save_file
        save_file(dict(tensors), out, metadata={"format": "pt"})
    seconds = time.perf_counter() - t0
    peak = rss() - base
    out.unlink()
    size = sum(t.numel() * t.element_size() for _, t in tensors)
    print(json.dumps({"seconds": seconds, "peak": peak, "model_bytes": size}))
    sys.exit(0)
base = start_peak()
t0 = time.perf_counter()
model = load()
seconds = time.perf_counter() - t0
peak_load = rss() - base
with torch.no_grad():
    model(torch.arange(8)[None])
seconds_forward = time.perf_counter() - t0
peak = rss() - base
size = sum(p.numel() * p.element_size() for p in {id(p): p for p in model.parameters()}.values())
print(json.dumps({"seconds": seconds, "seconds_forward": seconds_forward, "peak_load": peak_load, "peak": peak, "model_bytes": size}))
"""


def warm_file_cache(path: Path) -> None:
    """Read the checkpoint once, so every variant starts from the same (warm) file cache."""
    for f in path.iterdir():
        with open(f, "rb") as handle:
            while handle.read(1 << 24):
                pass


def measure(variant: str, path: Path) -> dict:
    warm_file_cache(path)
    out = subprocess.run([sys.executable, "-c", CHILD, variant, str(path), str(path.parent)], capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"{variant} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="gpt2-xl")
    parser.add_argument("--dir", default="/tmp/gpt2lab-bench")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of every variant, alternating (medians reported)")
    parser.add_argument("--no-save", dest="save", action="store_false", help="measure loading only")
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

    loads = ("safetensors", "handwritten", "transformers")
    saves = ("save-safetensors", "save-handwritten") if args.save else ()
    runs: dict[str, list[dict]] = {v: [] for v in loads + saves}
    for _ in range(args.rounds):
        for variant in runs:
            runs[variant].append(measure(variant, path))
    med = {v: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for v, rs in runs.items()}

    gib = 2**30
    size = med["safetensors"]["model_bytes"]
    print(f"\n{args.preset}: {size / gib:.2f} GiB of fp32 weights; medians of {args.rounds} round(s)")
    print(f"{'load':<30}{'load s':>8}{'+forward s':>12}{'peak after load':>17}{'peak after forward':>20}")
    labels = {"safetensors": "gpt2lab, safetensors library", "handwritten": "gpt2lab, hand-written reader",
              "transformers": "transformers", "save-safetensors": "safetensors save_file", "save-handwritten": "hand-written writer"}
    for v in loads:
        r = med[v]
        print(f"{labels[v]:<30}{r['seconds']:>8.2f}{r['seconds_forward']:>12.2f}{r['peak_load'] / size:>16.2f}x{r['peak'] / size:>19.2f}x")
    print(f"(peaks are resident memory above the process's baseline, as multiples of the {size / gib:.2f} GiB model)")
    lib, hand = med["safetensors"], med["handwritten"]
    print(f"hand-written / library: load + first forward {hand['seconds_forward'] / lib['seconds_forward']:.2f}x the time, "
          f"peak {hand['peak'] / lib['peak']:.2f}x")
    if saves:
        print(f"\n{'save (whole model, one file)':<30}{'seconds':>8}{'peak above the loaded model':>30}")
        for v in saves:
            r = med[v]
            print(f"{labels[v]:<30}{r['seconds']:>8.2f}{r['peak'] / size:>29.2f}x")
        a, b = med["save-handwritten"], med["save-safetensors"]
        print(f"hand-written / library: save {a['seconds'] / b['seconds']:.2f}x the time")


if __name__ == "__main__":
    main()
