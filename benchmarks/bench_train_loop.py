"""What the training loop around the step costs: ``gpt2lab.train.train`` (what ``gpt2lab train`` runs:
batches, the step, a metrics line and progress for every step, on a GPU each loss read one step late)
against the same trainer's step alone, back to back (``Trainer.train_step_no_sync``, what
``bench_train.py`` times), in one process; with ``--cuda-graph``, both again with the step recorded as a
CUDA graph. The loop's rate is the median of its own per-step ``tok_per_s`` after the warm-up steps.

    python benchmarks/bench_train_loop.py                  # CPU: 2 layers, 128 wide, batch 16 x 64
    python benchmarks/bench_train_loop.py --device cuda --dtype bf16 --compile --preset gpt2 --seq-len 1024 --batch-size 16 --cuda-graph
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from gpt2lab.config import PRESETS  # noqa: E402
from gpt2lab.data import save_tokens  # noqa: E402
from gpt2lab.train import TrainConfig, Trainer, train  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--compile", action="store_true")
    p.add_argument("--cuda-graph", action="store_true", help="measure the recorded step too (CUDA only)")
    p.add_argument("--preset", choices=list(PRESETS), help="model shape of a preset (default: 2 layers, 128 wide)")
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--warmup", type=int, default=6, help="steps left out of each rate (compilation, the recording)")
    p.add_argument("--steps", type=int, default=10, help="steps measured after the warm-up")
    args = p.parse_args()
    shape = PRESETS[args.preset] if args.preset else dict(n_layer=2, n_head=4, n_embd=128)
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
    total = args.warmup + args.steps
    rates: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        rng = np.random.default_rng(0)
        save_tokens(Path(tmp) / "data", rng.integers(0, 50257, 200_000), rng.integers(0, 50257, 20_000), n_vocab=50257)
        for graph in (False, True) if args.cuda_graph else (False,):
            name = "recorded" if graph else "plain"

            def config(out: str, graph: bool = graph, **kw) -> TrainConfig:
                return TrainConfig(data=Path(tmp) / "data", out=Path(tmp) / out, block_size=args.seq_len, batch_size=args.batch_size,
                                   device=args.device, dtype=args.dtype, compile=args.compile, cuda_graph=graph, dropout=0.0,
                                   eval_every=0, checkpoint_every=0, eval_batches=1, progress=False, **shape, **kw)

            trainer = Trainer(config(f"step-{name}", max_steps=10**6))
            try:
                for _ in range(args.warmup):
                    trainer.train_step_no_sync()
                sync()
                t0 = time.perf_counter()
                for _ in range(args.steps):
                    trainer.train_step_no_sync()
                sync()
                rates[f"step alone, {name}"] = trainer.tokens_per_step * args.steps / (time.perf_counter() - t0)
            finally:
                trainer.close()
            train(config(f"loop-{name}", max_steps=total, log_every=1))
            records = [json.loads(line) for line in (Path(tmp) / f"loop-{name}" / "metrics.jsonl").read_text().splitlines()]
            rates[f"train(), {name}"] = statistics.median(r["tok_per_s"] for r in records if r["step"] > args.warmup)
    print(f"training loop vs step alone, {shape['n_layer']} layers x {shape['n_embd']} wide, batch {args.batch_size} x {args.seq_len}, "
          f"{args.device} {args.dtype}{' compiled' if args.compile else ''}, {args.steps} steps after {args.warmup}, torch {torch.__version__}")
    for name, rate in rates.items():
        print(f"  {name:22s} {rate:12,.0f} tok/s")
    for name in ("plain", "recorded"):
        if f"train(), {name}" in rates:
            print(f"  ratio train() / step alone, {name}: {rates[f'train(), {name}'] / rates[f'step alone, {name}']:.3f}x")


if __name__ == "__main__":
    main()
