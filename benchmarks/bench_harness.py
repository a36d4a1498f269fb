"""ARC-Easy scoring: gpt2lab's ``evaluate_task`` against EleutherAI's lm-evaluation-harness, same process.

The peer is what people run for these scores: ``lm_eval.simple_evaluate`` with its Hugging Face backend
(``HFLM`` around the same ``GPT2LMHeadModel``, built once), on the harness's own ``arc_easy`` task file
with only its dataset swapped for our JSONL. Both must give the same acc and acc_norm before any time
counts. The harness's task index is built once, outside the timing (it reads thousands of task files).

Synthetic items shaped like ARC-Easy's test split (questions of 10-30 words, four choices of 1-8 words),
random ``gpt2``-shaped weights, fp32; items per second, the median of ``--repeat`` runs interleaved so a
busy machine slows both sides alike.

    python benchmarks/bench_harness.py [--items 64] [--repeat 3] [--batch-size 16] [--device cpu|cuda] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
import tempfile
from importlib.resources import files
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

from bench_eval import WORDS, gpt2_tokenizer, items_per_second, print_rates  # noqa: E402

from gpt2lab import GPT2  # noqa: E402
from gpt2lab.evaluate import evaluate_task  # noqa: E402


def synthetic_items(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    words = lambda k: " ".join(rng.choice(WORDS) for _ in range(k))  # noqa: E731
    items = []
    for _ in range(n):
        labels = list("ABCD")
        items.append({"question": words(rng.randint(10, 30)) + "?", "choices": {"text": [words(rng.randint(1, 8)) for _ in labels],
                                                                                 "label": labels}, "answerKey": rng.choice(labels)})
    return items


def harness_task(folder: Path, data: Path) -> None:
    """The harness's arc_easy.yaml, its dataset our file (``bench_arc_easy`` in ``folder``)."""
    shipped = (files("lm_eval") / "tasks" / "arc" / "arc_easy.yaml").read_text().splitlines()
    kept = [line for line in shipped if not line.startswith(("task:", "dataset_path:", "dataset_name:", "tag:", "  - ai2_arc",
                                                              "training_split", "validation_split", "test_split"))]
    (folder / "bench_arc_easy.yaml").write_text(f"task: bench_arc_easy\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {data}\n"
                                                "test_split: test\n" + "\n".join(kept) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=16, help="sequences per forward pass, both sides")
    ap.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

    logging.disable(logging.WARNING)  # the harness logs every step of its set-up
    device = torch.device(args.device)
    torch.manual_seed(0)
    hf = GPT2LMHeadModel(GPT2Config()).eval()  # gpt2-shaped: 12 layers, 768 wide, 50257 tokens, random weights
    tokenizer = gpt2_tokenizer()
    items = synthetic_items(args.items)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        hf.save_pretrained(folder / "model")
        tokenizer.save(folder / "model")
        model = GPT2.from_pretrained(folder / "model", device=device).eval()
        data = folder / "arc_easy.jsonl"
        data.write_text("".join(json.dumps(item) + "\n" for item in items))
        harness_task(folder, data)
        tasks = TaskManager(include_path=str(folder))
        peer = HFLM(pretrained=hf.to(device), tokenizer=GPT2TokenizerFast.from_pretrained(str(folder / "model")), batch_size=args.batch_size,
                    device=str(device))

        def harness() -> dict:
            results = lm_eval.simple_evaluate(model=peer, tasks=["bench_arc_easy"], task_manager=tasks, log_samples=False)["results"]
            return {key.split(",")[0]: value for key, value in results["bench_arc_easy"].items() if key in ("acc,none", "acc_norm,none")}

        sides = {
            "gpt2lab evaluate_task": lambda: evaluate_task(model, tokenizer, "arc_easy", data, batch_size=args.batch_size),
            "lm-evaluation-harness": harness,
        }
        results = {name: fn() for name, fn in sides.items()}  # warm-up, and the scores to compare
        ours = {k: v for k, v in results["gpt2lab evaluate_task"].items() if k != "n"}
        if ours != results["lm-evaluation-harness"]:
            sys.exit(f"the scores differ: {results}")
        rate = items_per_second(sides, args.items, args.repeat, device)
    print(f"{args.items} synthetic ARC-Easy items, random gpt2-shaped weights, fp32, {device}, {torch.get_num_threads()} threads, "
          f"batch {args.batch_size}, lm_eval {lm_eval.__version__}; scores equal ({ours})")
    print_rates(rate, args.repeat, "lm-evaluation-harness")


if __name__ == "__main__":
    main()
