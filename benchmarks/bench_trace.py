"""Trace overhead: ``gpt2lab.trace`` (every stage of every layer, statistics only) against a plain
forward pass of the same model, and against transformers' ``output_hidden_states=True`` (the usual way
to look inside, which gives only the stream between blocks). Random ``gpt2``-shaped weights, one sequence."""

import time

import torch

from gpt2lab import GPT2, GPT2Config
from gpt2lab.trace import trace


def best(fn, n=3):
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main(T: int = 256) -> None:
    from transformers import GPT2Config as HFConfig
    from transformers import GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config.from_preset("gpt2")
    model = GPT2(cfg).eval()
    hf = GPT2LMHeadModel(HFConfig(**{"n_layer": 12, "n_head": 12, "n_embd": 768})).eval()
    idx = torch.randint(0, cfg.vocab_size, (1, T))
    with torch.no_grad():
        model(idx), hf(idx)  # warm up
        plain = best(lambda: model(idx))
        hidden = best(lambda: hf(idx, output_hidden_states=True))
    traced = best(lambda: trace(model, None, idx[0]))
    n_points = len(trace(model, None, idx[0]).points)
    print(f"T={T}, gpt2 shape, random weights, best of 3, torch threads={torch.get_num_threads()}")
    print(f"  plain forward (gpt2lab)                 {plain * 1e3:8.1f} ms")
    print(f"  trace, {n_points} points with statistics      {traced * 1e3:8.1f} ms   {traced / plain:.2f}x the plain forward")
    print(f"  transformers output_hidden_states (13)  {hidden * 1e3:8.1f} ms   trace is {hidden / traced:.2f}x its speed")


if __name__ == "__main__":
    main()
