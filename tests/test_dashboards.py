"""train --tensorboard / --wandb: every metrics.jsonl number, task scores included, reaches the dashboard."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gpt2lab.errors import ConfigError
from gpt2lab.train import train
from test_tasks import gpt2_vocab_data, hellaswag_records, small_run, write_jsonl  # noqa: F401 (a fixture)

ROOT = Path(__file__).resolve().parents[1]


def read_metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_tensorboard_from_the_cli_holds_every_logged_scalar(gpt2_vocab_data, tmp_path):  # noqa: F811
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    items = write_jsonl(tmp_path / "h.jsonl", hellaswag_records(4, seed=9))
    run, board = tmp_path / "run", tmp_path / "tb"
    args = ["--data", gpt2_vocab_data, "--out", run, "--n-layer", 1, "--n-head", 2, "--n-embd", 32, "--block-size", 32,
            "--batch-size", 4, "--max-steps", 4, "--eval-every", 2, "--eval-batches", 2, "--device", "cpu",
            "--eval-task", "hellaswag", "--eval-task-data", items, "--eval-task-limit", 3, "--tensorboard", board, "--quiet",
            "--sample", "The", "--sample-tokens", 4]
    out = subprocess.run([sys.executable, "-m", "gpt2lab", "train", *map(str, args)], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT / "src")}, timeout=300)
    assert out.returncode == 0, out.stderr
    events = EventAccumulator(str(board))
    events.Reload()
    logged = {tag: {e.step: e.value for e in events.Scalars(tag)} for tag in events.Tags()["scalars"]}
    expected: dict[str, dict[int, float]] = {}
    texts: dict[int, str] = {}
    for record in read_metrics(run):
        for name, value in record.items():
            if name == "sample":
                texts[record["step"]] = value
            elif name != "step":
                expected.setdefault(name, {})[record["step"]] = value
    assert {"loss", "lr", "tok_per_s", "val_loss", "hellaswag_acc", "hellaswag_acc_norm"} <= set(expected)
    assert set(logged) == set(expected)
    for name, by_step in expected.items():
        assert logged[name] == pytest.approx(by_step, rel=1e-6), name  # stored as float32
    assert sorted(logged["hellaswag_acc_norm"]) == [2, 4]
    # --sample's continuations, as text at their steps
    from tensorboard.util.tensor_util import make_ndarray

    assert sorted(texts) == [2, 4]
    assert {e.step: make_ndarray(e.tensor_proto).item().decode() for e in events.Tensors("sample/text_summary")} == texts


def test_wandb_offline_writes_its_run(gpt2_vocab_data, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    items = write_jsonl(tmp_path / "h.jsonl", hellaswag_records(3, seed=10))
    run = tmp_path / "run"
    train(small_run(gpt2_vocab_data, run, max_steps=3, eval_task="hellaswag", eval_task_data=str(items), wandb="gpt2lab-test"))
    run_id = (run / "wandb_id").read_text().strip()
    written = list((run / "wandb").glob(f"offline-run-*-{run_id}"))
    assert len(written) == 1 and list(written[0].glob(f"run-{run_id}.wandb")), sorted(p.name for p in (run / "wandb").iterdir())
    assert "hellaswag_acc_norm" in read_metrics(run)[-1]


def test_missing_packages_are_one_clear_error(gpt2_vocab_data, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb now raises ImportError
    with pytest.raises(ConfigError, match="--wandb needs the wandb package: pip install wandb"):
        train(small_run(gpt2_vocab_data, tmp_path / "a", wandb="p"))
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(ConfigError, match="--tensorboard needs the tensorboard package: pip install tensorboard"):
        train(small_run(gpt2_vocab_data, tmp_path / "b", tensorboard=str(tmp_path / "tb")))
    assert not (tmp_path / "a" / "checkpoint.pt").exists() and not (tmp_path / "b" / "checkpoint.pt").exists()


def test_sample_continues_the_prompt_at_every_evaluation_without_changing_the_run(gpt2_vocab_data, tokenizer, tmp_path):  # noqa: F811
    """train --sample: each evaluation's metrics record holds the continuation, the one generate_text gives that
    step's model from the run's seed; the run's losses are those of the same run without it (its own generator)."""
    from gpt2lab.generate import PREVIEW_SAMPLING, generate_text

    plain = train(small_run(gpt2_vocab_data, tmp_path / "plain"))
    sampled = train(small_run(gpt2_vocab_data, tmp_path / "sampled", sample="The cat", sample_tokens=6))
    records = read_metrics(tmp_path / "sampled")
    assert [r["loss"] for r in records] == [r["loss"] for r in read_metrics(tmp_path / "plain")]
    assert [r["step"] for r in records if "sample" in r] == [3, 6] == [r["step"] for r in records if "val_loss" in r]
    last = generate_text(sampled.model, tokenizer, "The cat", 6, seed=0, static_cache=False, **PREVIEW_SAMPLING)
    assert records[-1]["sample"] == last and len(tokenizer.encode(last)) >= 1
    assert plain.val_loss == sampled.val_loss
    # watching, not the run's course: a resumed run may sample another prompt
    train(small_run(gpt2_vocab_data, tmp_path / "sampled", sample="", max_steps=9, resume=True))
    assert isinstance(read_metrics(tmp_path / "sampled")[-1]["sample"], str)


def test_sample_is_refused_where_it_cannot_run(gpt2_vocab_data, tmp_path):  # noqa: F811
    with pytest.raises(ConfigError, match="--sample continues a prompt with a language model"):
        train(small_run(gpt2_vocab_data, tmp_path / "a", task="classify", init=str(tmp_path), sample="x"))
    with pytest.raises(ConfigError, match="without --lora-rank, --eval-task and --sample"):
        train(small_run(gpt2_vocab_data, tmp_path / "b", fsdp=True, sample="x"))
    with pytest.raises(ConfigError, match="sample_tokens must be a positive integer"):
        train(small_run(gpt2_vocab_data, tmp_path / "c", sample="x", sample_tokens=0))


def test_sample_needs_the_datas_own_tokenizer(tmp_path, gpt2_vocab_path, monkeypatch):
    import numpy as np

    monkeypatch.setenv("GPT2LAB_VOCAB", str(gpt2_vocab_path))  # data without a tokenizer is taken as GPT-2's
    from gpt2lab.data import save_tokens

    save_tokens(tmp_path / "data", np.arange(2000) % 48, np.arange(400) % 48, n_vocab=48)  # no tokenizer saved beside it
    with pytest.raises(ConfigError, match="--sample needs the data's tokenizer, and .* has none for its 48-token vocabulary"):
        train(small_run(tmp_path / "data", tmp_path / "run", sample="x"))
