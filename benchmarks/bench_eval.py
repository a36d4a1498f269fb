"""HellaSwag scoring: gpt2lab's ``evaluate_task`` against a plain transformers loop, same process.

The peer is the loop people write (llm.c's hellaswag.py, in transformers): for each item, the four
context + ending rows padded into one batch, one forward of ``GPT2LMHeadModel``, the per-token losses
of each ending summed (acc) and averaged (acc_norm). gpt2lab scores every (context, ending) pair of
all the items in length-sorted batches (``gpt2lab.tasks.score_continuations``). Both must agree on
acc and acc_norm before any time counts.

Synthetic items shaped like HellaSwag's validation split (contexts of 20-60 words, four endings of
8-30 words), random ``gpt2``-shaped weights, fp32; items per second, the median of ``--repeat`` runs
interleaved so a busy machine slows both sides alike.

    python benchmarks/bench_eval.py [--items 16] [--repeat 3] [--batch-size 16] [--device cpu|cuda] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE.parent / "tests"))

from gpt2lab import GPT2  # noqa: E402
from gpt2lab.errors import TokenizerError  # noqa: E402
from gpt2lab.evaluate import evaluate_task  # noqa: E402
from gpt2lab.tokenizer import Tokenizer  # noqa: E402

WORDS = ("the man a woman dog runs into kitchen and then slowly picks up ball while outside rain falls on green house she "
         "he they were walking toward river quickly happy old new bright small large red blue camera shows people "
         "playing game field after before water bike ride jumps over fence looks at person holding stick").split()


def gpt2_tokenizer() -> Tokenizer:
    try:
        return Tokenizer.gpt2()
    except TokenizerError:
        from assets import gpt2_vocab  # fetches the offline copy the tests use

        return Tokenizer.from_file(gpt2_vocab())


def synthetic_items(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    words = lambda k: " ".join(rng.choice(WORDS) for _ in range(k))  # noqa: E731
    return [{"ctx": words(rng.randint(20, 60)), "endings": [words(rng.randint(8, 30)) + "." for _ in range(4)], "label": rng.randrange(4)}
            for _ in range(n)]


@torch.no_grad()
def transformers_loop(hf, tokenizer: Tokenizer, items: list[dict], device: torch.device) -> dict:
    """llm.c's hellaswag.py loop on transformers: one item (4 rows) per forward."""
    correct = correct_norm = 0
    for item in items:
        ctx = tokenizer.encode_ordinary(item["ctx"])
        ends = [tokenizer.encode_ordinary(" " + e) for e in item["endings"]]
        width = max(len(ctx) + len(e) for e in ends)
        tokens = torch.zeros(4, width, dtype=torch.long)
        mask = torch.zeros(4, width, dtype=torch.long)  # 1 on ending tokens
        for i, end in enumerate(ends):
            tokens[i, : len(ctx) + len(end)] = torch.tensor(ctx + end)
            mask[i, len(ctx) : len(ctx) + len(end)] = 1
        tokens, mask = tokens.to(device), mask.to(device)
        logits = hf(tokens).logits  # (4, T, V)
        losses = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(), tokens[:, 1:].flatten(), reduction="none")
        losses = losses.view(4, -1) * mask[:, 1:]  # (4, T-1): the endings' tokens only
        sum_loss = losses.sum(dim=1)
        avg_loss = sum_loss / mask[:, 1:].sum(dim=1)
        correct += int(sum_loss.argmin()) == item["label"]
        correct_norm += int(avg_loss.argmin()) == item["label"]
    return {"acc": correct / len(items), "acc_norm": correct_norm / len(items), "n": len(items)}


def items_per_second(sides: dict[str, Callable[[], object]], items: int, repeat: int, device: torch.device) -> dict[str, float]:
    """Each side's items per second: the median of ``repeat`` runs, the sides interleaved so that a busy
    machine slows them alike (a GPU's queue drained around each run)."""
    times: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(repeat):
        for name, fn in sides.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - t0)
    return {name: items / statistics.median(t) for name, t in times.items()}


def print_rates(rate: dict[str, float], repeat: int, peer: str) -> None:
    """Each side's rate, then gpt2lab's over the peer's (the first side over the second)."""
    for name, r in rate.items():
        print(f"  {name:24s} {r:8.2f} items/s  (median of {repeat})")
    ours, theirs = rate.values()
    print(f"gpt2lab / {peer}: {ours / theirs:.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=16, help="gpt2lab's sequences per forward pass")
    ap.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from transformers import GPT2Config, GPT2LMHeadModel

    device = torch.device(args.device)
    torch.manual_seed(0)
    hf = GPT2LMHeadModel(GPT2Config()).eval()  # gpt2-shaped: 12 layers, 768 wide, 50257 tokens, random weights
    tokenizer = gpt2_tokenizer()
    items = synthetic_items(args.items)
    with tempfile.TemporaryDirectory() as tmp:
        hf.save_pretrained(tmp)
        model = GPT2.from_pretrained(tmp, device=device).eval()
        data = Path(tmp) / "hellaswag.jsonl"
        data.write_text("".join(json.dumps(item) + "\n" for item in items))
        hf = hf.to(device)
        sides = {
            "gpt2lab evaluate_task": lambda: evaluate_task(model, tokenizer, "hellaswag", data, batch_size=args.batch_size),
            "transformers loop": lambda: transformers_loop(hf, tokenizer, items, device),
        }
        results = {name: fn() for name, fn in sides.items()}  # warm-up, and the scores to compare
        if results["gpt2lab evaluate_task"] != results["transformers loop"]:
            sys.exit(f"the scores differ: {results}")
        rate = items_per_second(sides, args.items, args.repeat, device)
    print(f"{args.items} synthetic HellaSwag items, random gpt2-shaped weights, fp32, {device}, {torch.get_num_threads()} threads; "
          f"scores equal ({results['transformers loop']})")
    print_rates(rate, args.repeat, "transformers")


if __name__ == "__main__":
    main()
