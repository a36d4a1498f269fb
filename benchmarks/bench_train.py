"""Training-step throughput: gpt2lab's training loop against a transformers GPT2LMHeadModel + AdamW
loop of the same shape, in the same process, and MFU against this machine's measured matmul peak.

Both sides take the same batches (random GPT-2-vocabulary ids), run forward, cross-entropy loss,
backward, gradient clipping to 1.0 and an AdamW step. gpt2lab's side is ``Trainer.train_step``, the
code ``gpt2lab train`` runs; transformers' side is the loop its docs show (``model(x, labels=x)``,
``torch.optim.AdamW(model.parameters())``). Rounds alternate between the two so that a noisy,
shared machine slows both alike; the median step time of each is reported.

    python benchmarks/bench_train.py                      # CPU: 2 layers, 128 wide, batch 16 x 64
    python benchmarks/bench_train.py --device cuda --dtype bf16 --compile --preset gpt2 --block-size 1024 --batch-size 16
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from gpt2lab.config import PRESETS, GPT2Config  # noqa: E402
from gpt2lab.data import save_tokens  # noqa: E402
from gpt2lab.devices import autocast, parse_dtype  # noqa: E402
from gpt2lab.flops import flops_per_token, peak_flops  # noqa: E402
from gpt2lab.train import TrainConfig, Trainer  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--compile", action="store_true")
    p.add_argument("--preset", choices=list(PRESETS), help="model shape of a preset (default: 2 layers, 128 wide)")
    p.add_argument("--n-layer", type=int, default=2)
    p.add_argument("--n-head", type=int, default=4)
    p.add_argument("--n-embd", type=int, default=128)
    p.add_argument("--block-size", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--rounds", type=int, default=4, help="alternating rounds per side")
    p.add_argument("--steps", type=int, default=3, help="steps per round")
    p.add_argument("--only", choices=["gpt2lab", "transformers"], help="measure one side only")
    args = p.parse_args()
    shape = PRESETS[args.preset] if args.preset else dict(n_layer=args.n_layer, n_head=args.n_head, n_embd=args.n_embd)
    V, T, B = 50257, args.block_size, args.batch_size
    device = torch.device(args.device)
    dtype = parse_dtype(args.dtype)
    tokens = B * T

    with tempfile.TemporaryDirectory() as tmp:
        rng = np.random.default_rng(0)
        save_tokens(Path(tmp) / "data", rng.integers(0, V, 200_000), rng.integers(0, V, 20_000), n_vocab=V)
        cfg = TrainConfig(data=Path(tmp) / "data", out=Path(tmp) / "run", block_size=T, batch_size=B, device=args.device,
                          dtype=args.dtype, compile=args.compile, progress=False, max_steps=10**6, **shape)
        ours = Trainer(cfg)
        ours._stop_all = False

        def our_step():
            ours.train_step()

        hf_step = None
        if args.only != "gpt2lab":
            from transformers import GPT2Config as HFConfig
            from transformers import GPT2LMHeadModel

            torch.manual_seed(0)
            hf = GPT2LMHeadModel(HFConfig(vocab_size=V, n_positions=T, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **shape)).to(device)
            hf.train()
            hf_fwd = torch.compile(hf) if args.compile else hf
            opt = torch.optim.AdamW(hf.parameters(), lr=6e-4, weight_decay=0.1, betas=(0.9, 0.95))
            scaler = torch.amp.GradScaler(device.type) if dtype == torch.float16 else None

            def hf_step():
                x, _ = ours.sampler.next_batch()  # the same kind of batch
                x = x.to(device)
                with autocast(device, dtype):
                    loss = hf_fwd(input_ids=x, labels=x).loss
                (scaler.scale(loss) if scaler else loss).backward()
                if scaler:
                    scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(hf.parameters(), 1.0)
                if scaler:
                    scaler.step(opt)
                    scaler.update()
                else:
                    opt.step()
                opt.zero_grad(set_to_none=True)
                if device.type == "cuda":
                    torch.cuda.synchronize()

        sides = {"gpt2lab": our_step, "transformers": hf_step}
        sides = {k: v for k, v in sides.items() if v is not None and (args.only in (None, k))}
        times: dict[str, list[float]] = {k: [] for k in sides}
        for name, step in sides.items():  # warm up: allocator, thread pools, compilation
            for _ in range(3 if not args.compile else 5):
                step()
        for _ in range(args.rounds):
            for name, step in sides.items():
                for _ in range(args.steps):
                    t0 = time.perf_counter()
                    step()
                    times[name].append(time.perf_counter() - t0)
        ours.close()

    peak = peak_flops(device, dtype)
    flops = flops_per_token(GPT2Config(vocab_size=V, block_size=T, **shape), T) * tokens
    print(f"training step, {shape['n_layer']} layers x {shape['n_embd']} wide, vocab {V}, batch {B} x {T}, "
          f"{args.device} {args.dtype}{' compiled' if args.compile else ''}, {torch.get_num_threads()} threads")
    if peak:
        what = "measured matmul peak" if device.type == "cpu" else "data-sheet peak"
        print(f"  {what}: {peak / 1e9:,.1f} GFLOP/s; model FLOPs per step: {flops / 1e9:,.2f} G")
    rate = {}
    for name, ts in times.items():
        med = statistics.median(ts)
        rate[name] = tokens / med
        mfu = f", MFU {flops / med / peak:.1%}" if peak else ""
        print(f"  {name:13s} {rate[name]:9,.0f} tok/s  (median step {med * 1e3:7.1f} ms over {len(ts)}){mfu}")
    if len(rate) == 2:
        print(f"  ratio gpt2lab / transformers: {rate['gpt2lab'] / rate['transformers']:.2f}x")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
