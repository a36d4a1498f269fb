"""Training-step throughput and peak memory: gpt2lab's training step beside the minimal GPT-2 loop
people copy from the from-scratch repositories (``minimal_gpt2.py``) and a transformers
GPT2LMHeadModel + AdamW loop of the same shape, in one process; MFU against this machine's peak.

Every side takes the same batches (random GPT-2-vocabulary ids), runs forward, cross-entropy loss,
backward, gradient clipping to 1.0 and an AdamW step. gpt2lab's side is ``Trainer.train_step_no_sync``,
the step ``gpt2lab train`` runs; the minimal loop starts from gpt2lab's very initial weights, and its
first loss must equal gpt2lab's to 1e-4 before anything is timed; transformers' side is the loop its
docs show (``model(x, labels=x)``, ``torch.optim.AdamW(model.parameters())``). Rounds alternate
between the sides so that a noisy, shared machine slows all alike; each round's steps are timed
together, with one device sync at the end (no side syncs inside its step), and the median is reported.

    python benchmarks/bench_train.py                      # CPU: 2 layers, 128 wide, batch 16 x 64
    python benchmarks/bench_train.py --device cuda --dtype bf16 --compile --preset gpt2 --seq-len 1024 --batch-size 16

Optional sides (``--only``): ``gpt2lab-chunked`` (``--chunked-loss``), ``gpt2lab-graphed`` (``--cuda-graph``:
the step recorded as a CUDA graph after its warm-up; its peak memory counts the recording's whole pool) and
``gpt2lab-graphed-chunked`` (both), ``gpt2lab-contiguous``: the default step with every weight made
contiguous in nn.Linear's (out, in) order instead of GPT-2's Conv1D order (the model's ``conv1d`` layout), to
see whether the products' operand order matters on this machine, and ``gpt2lab-autotune`` (with ``--compile``):
the default step compiled with Inductor's ``max_autotune`` (its own Triton products where they beat the
library's, with the elementwise work around them fused in; minutes of compilation), to see what that is worth.
"""

from __future__ import annotations

import argparse
import contextlib
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from minimal_gpt2 import MinimalGPT2, MinimalTrainer, load_gpt2lab_state  # noqa: E402

from gpt2lab.config import PRESETS, GPT2Config  # noqa: E402
from gpt2lab.data import save_tokens  # noqa: E402
from gpt2lab.devices import autocast, parse_dtype  # noqa: E402
from gpt2lab.errors import ConfigError  # noqa: E402
from gpt2lab.flops import flops_per_token, peak_flops  # noqa: E402
from gpt2lab.train import TrainConfig, Trainer  # noqa: E402
from gpt2lab.train.graphed import WARMUP_STEPS  # noqa: E402
from gpt2lab.train.loss import lm_loss  # noqa: E402


def state_bytes(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> int:
    """Bytes a side holds between steps: its parameters and its optimizer's state (gradients are freed)."""
    params = {p.data_ptr(): p.numel() * p.element_size() for p in model.parameters()}  # tied weights once
    moments = sum(t.numel() * t.element_size() for st in optimizer.state.values() for t in st.values() if isinstance(t, torch.Tensor))
    return sum(params.values()) + moments


def profile(steps: dict[str, Callable[[], object]], device: torch.device, sync: Callable[[], None]) -> None:
    """Two steps of each side under torch.profiler: the operators and kernels that take the most time."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as profiler

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    for name, step in steps.items():
        with profiler(activities=activities) as prof:
            for _ in range(2):
                step()
            sync()
        print(f"--- {name}: two steps, top operators by {key}")
        print(prof.key_averages().table(sort_by=key, row_limit=14, max_name_column_width=70))


def pool_bytes(pool: object) -> int:
    """Bytes the CUDA allocator holds for one CUDA graph's private memory pool: what a recorded step keeps
    between steps (its activations' and gradients' memory), which its replays never allocate anew."""
    return sum(seg["total_size"] for seg in torch.cuda.memory_snapshot() if tuple(seg.get("segment_pool_id", ())) == tuple(pool))


def contiguous_weights(trainer: Trainer) -> None:
    """Store every parameter contiguously, in place (before its first step: no optimizer state yet, no
    compiled graph): the Conv1D-ordered (out, in) weights, strides (1, out), become nn.Linear's (in, 1)."""
    for p in trainer.model.parameters():
        p.data = p.data.contiguous()


def autotuned(trainer: Trainer) -> None:
    """Compile the step with mode="max-autotune-no-cudagraphs": a backend of its own, so Dynamo compiles it
    afresh rather than reuse the other gpt2lab sides' code."""
    trainer.forward_model = torch.compile(trainer.forward_model._orig_mod, mode="max-autotune-no-cudagraphs")


# side -> the TrainConfig options it turns on: gpt2lab with --cuda-graph (the whole step recorded and replayed),
# with --chunked-loss, with both, and with none but one change to its trainer once made (SIDE_CHANGES)
OPTION_SIDES: dict[str, tuple[str, ...]] = {"gpt2lab-graphed": ("cuda_graph",), "gpt2lab-chunked": ("chunked_loss",),
                                            "gpt2lab-graphed-chunked": ("cuda_graph", "chunked_loss"), "gpt2lab-contiguous": (),
                                            "gpt2lab-autotune": ()}
SIDE_CHANGES: dict[str, Callable[[Trainer], None]] = {"gpt2lab-contiguous": contiguous_weights, "gpt2lab-autotune": autotuned}
COMPILED_ONLY = frozenset({"gpt2lab-autotune"})  # sides that change how --compile compiles
SIDES = ("gpt2lab", "minimal", "transformers", *OPTION_SIDES)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--compile", action="store_true", help="torch.compile every side")
    p.add_argument("--preset", choices=list(PRESETS), help="model shape of a preset (default: 2 layers, 128 wide)")
    p.add_argument("--n-layer", type=int, default=2)
    p.add_argument("--n-head", type=int, default=4)
    p.add_argument("--n-embd", type=int, default=128)
    p.add_argument("--seq-len", "--block-size", dest="seq_len", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--pad-vocab", type=int, help="gpt2lab's train --pad-vocab (default: the trainer's, 64 on GPUs, 1 on CPUs)")
    p.add_argument("--rounds", type=int, default=4, help="alternating rounds per side")
    p.add_argument("--steps", type=int, default=3, help="steps per round")
    p.add_argument("--only", choices=SIDES, nargs="+", help="measure these sides only (default: the first three)")
    p.add_argument("--deadline", type=float, help="seconds after start past which no further side is warmed up (it is left out)")
    p.add_argument("--profile", action="store_true", help="after timing, profile two steps of each side: top kernels by device time")
    args = p.parse_args()
    started = time.perf_counter()
    shape = PRESETS[args.preset] if args.preset else dict(n_layer=args.n_layer, n_head=args.n_head, n_embd=args.n_embd)
    V, T, B = 50257, args.seq_len, args.batch_size
    device = torch.device(args.device)
    dtype = parse_dtype(args.dtype)
    tokens = B * T
    wanted = args.only or SIDES[:3]

    with tempfile.TemporaryDirectory() as tmp:
        rng = np.random.default_rng(0)
        save_tokens(Path(tmp) / "data", rng.integers(0, V, 200_000), rng.integers(0, V, 20_000), n_vocab=V)
        cfg = TrainConfig(data=Path(tmp) / "data", out=Path(tmp) / "run", block_size=T, batch_size=B, device=args.device,
                          dtype=args.dtype, compile=args.compile, progress=False, max_steps=10**6, dropout=0.0,
                          pad_vocab=args.pad_vocab, **shape)
        ours = Trainer(cfg)

        def next_batch() -> tuple[torch.Tensor, torch.Tensor]:
            x, y = ours.to_device(*ours.sampler.next_batch())  # the same kind of batch, moved the same way, for every side
            return x, y

        # the first loss of each side on one batch, from the same weights, in fp32 (before any step)
        x0, y0 = next_batch()
        with torch.no_grad():
            first = {"gpt2lab": lm_loss(ours.model(x0), y0, ours.vocab).item()}
        steps: dict[str, Callable[[], object]] = {"gpt2lab": ours.train_step_no_sync}
        own_state: dict[str, Callable[[], int]] = {"gpt2lab": lambda: state_bytes(ours.model, ours.optimizer)}
        # gpt2lab with one option on: the same trainer, its own run directory
        variants: dict[str, Trainer] = {}
        for name, options in OPTION_SIDES.items():
            if name not in wanted:
                continue
            if name in COMPILED_ONLY and not args.compile:
                print(f"  {name}: left out: it changes how --compile compiles, and this run does not compile", flush=True)
                continue
            try:
                variants[name] = variant = Trainer(TrainConfig(**{**cfg.__dict__, "out": Path(tmp) / f"run-{name}",
                                                                  **dict.fromkeys(options, True)}))
            except ConfigError as err:
                print(f"  {name}: left out: {err}", flush=True)
                continue
            if name in SIDE_CHANGES:
                SIDE_CHANGES[name](variant)
            steps[name] = variant.train_step_no_sync
            own_state[name] = lambda t=variant: state_bytes(t.model, t.optimizer)
        graphed_sides = {name: t for name, t in variants.items() if t.graphed is not None}  # the recorded ones

        if "minimal" in wanted:
            with device:  # made where it trains (its initial weights are overwritten below): no second host init
                model = MinimalGPT2(V, T, **shape)
            load_gpt2lab_state(model, ours.model.state_dict())
            with torch.no_grad():
                first["minimal"] = model.loss(x0, y0).item()
            assert abs(first["minimal"] - first["gpt2lab"]) < 1e-4, f"first losses differ: {first}"
            minimal = MinimalTrainer(model, dtype, compile=args.compile)
            steps["minimal"] = lambda: minimal.step(*next_batch())
            own_state["minimal"] = lambda: state_bytes(minimal.model, minimal.optimizer)

        if "transformers" in wanted:
            from transformers import GPT2Config as HFConfig
            from transformers import GPT2LMHeadModel

            torch.manual_seed(0)
            hf = GPT2LMHeadModel(HFConfig(vocab_size=V, n_positions=T, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **shape)).to(device)
            hf.train()
            hf_fwd = torch.compile(hf) if args.compile else hf
            opt = torch.optim.AdamW(hf.parameters(), lr=6e-4, weight_decay=0.1, betas=(0.9, 0.95))
            scaler = torch.amp.GradScaler(device.type) if dtype == torch.float16 else None

            def hf_step() -> None:
                x, _ = next_batch()
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

            steps["transformers"] = hf_step
            own_state["transformers"] = lambda: state_bytes(hf, opt)

        steps = {k: v for k, v in steps.items() if k in wanted}
        sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        steps = {k: steps[k] for k in SIDES if k in steps}  # the optional sides last: the first a deadline drops
        times: dict[str, list[float]] = {k: [] for k in steps}
        peak_memory: dict[str, int] = dict.fromkeys(steps, 0)
        for name, step in list(steps.items()):  # warm up: allocator, thread pools, compilation
            if args.deadline is not None and time.perf_counter() - started > args.deadline:
                print(f"  {name}: left out, {args.deadline:.0f} s passed before its warm-up", flush=True)
                del steps[name], times[name]
                continue
            t0 = time.perf_counter()
            try:
                warm_up = 3 if not args.compile else 5
                for _ in range(max(warm_up, WARMUP_STEPS + 2) if name in graphed_sides else warm_up):  # recorded, then replayed once
                    step()
                sync()
            except Exception as err:  # one side failing (a compiler or kernel error) must not cost the others' figures
                print(f"  {name}: FAILED in warm-up, left out: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}", flush=True)
                del steps[name], times[name]
                continue
            print(f"  warm-up {name}: {time.perf_counter() - t0:.1f} s", flush=True)
            if name in graphed_sides:  # a failed recording only warns (and gpu_run.sh filters warnings): say which it is
                graphed = graphed_sides[name].graphed
                recorded = graphed is not None and graphed.graph is not None
                print(f"  {name}: {'the step is recorded as a CUDA graph' if recorded else 'NOT recorded: it runs plain steps'}",
                      flush=True)
        for _ in range(args.rounds):
            for name, step in steps.items():
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                    before = torch.cuda.memory_allocated(device)
                t0 = time.perf_counter()
                for _ in range(args.steps):
                    step()
                sync()
                times[name].append((time.perf_counter() - t0) / args.steps)
                if device.type == "cuda":
                    # the side alone: its own weights and optimizer state, plus what its steps added at their peak
                    # (the other sides' weights sit in the same memory and are not its own)
                    rise = torch.cuda.max_memory_allocated(device) - before
                    graphed = graphed_sides[name].graphed if name in graphed_sides else None
                    if graphed is not None:
                        # replays allocate nothing: what the step needs lies in the recording's pool (reserved bytes, so
                        # counted at least as high as allocated bytes would be)
                        pool = graphed.memory_pool()
                        rise = max(rise, pool_bytes(pool) if pool is not None else 0)
                    peak_memory[name] = max(peak_memory[name], own_state[name]() + rise)
        if args.profile:
            profile(steps, device, sync)
        ours.close()
        for variant in variants.values():
            variant.close()

    peak = peak_flops(device, dtype)
    flops = flops_per_token(GPT2Config(vocab_size=V, block_size=T, **shape), T) * tokens
    print(f"training step, {shape['n_layer']} layers x {shape['n_embd']} wide, vocab {V}, batch {B} x {T}, "
          f"{args.device} {args.dtype}{' compiled' if args.compile else ''}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print("  first losses (same weights, same batch, fp32): " + ", ".join(f"{k} {v:.6f}" for k, v in first.items()))
    if peak:
        what = "measured matmul peak" if device.type == "cpu" else "data-sheet peak"
        print(f"  {what}: {peak / 1e9:,.1f} GFLOP/s; model FLOPs per step: {flops / 1e9:,.2f} G")
    rate = {}
    for name, ts in times.items():
        med = statistics.median(ts)
        rate[name] = tokens / med
        mfu = f", MFU {flops / med / peak:5.1%}" if peak else ""
        # one process holds every side, so on a CPU the RSS high-water mark belongs to none of them alone
        memory = f"{peak_memory[name] / 2**30:6.2f} GiB (weights + optimizer state + the step's peak)" if device.type == "cuda" else "n/a"
        print(f"  {name:23s} {rate[name]:9,.0f} tok/s  (median step {med * 1e3:7.1f} ms over {len(ts)} rounds){mfu}, peak memory {memory}")
    if device.type == "cpu":
        print(f"  process RSS high-water mark (all sides together): {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")
    for ours_side in ("gpt2lab", *OPTION_SIDES):
        for other in ("minimal", "transformers"):
            if ours_side in rate and other in rate:
                memory_ratio = f", peak memory {peak_memory[ours_side] / peak_memory[other]:.2f}x" if device.type == "cuda" else ""
                print(f"  ratio {ours_side} / {other}: {rate[ours_side] / rate[other]:.2f}x tok/s{memory_ratio}")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
