"""gpt2lab runs: training runs side by side (train/runs.py), their curves on one chart (train/plots.py)."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys

import numpy as np
import pytest

from gpt2lab.cli import main
from gpt2lab.data import save_tokens
from gpt2lab.errors import InputError
from gpt2lab.train import TrainConfig, train
from gpt2lab.train.runs import LAST, compare_runs, human_duration, runs_table, sort_runs
from gpt2lab.train.status import write_status


def write_run(path, losses, val_every=10, val_losses=None, epochs_per_step=0.01, cut_short=False, tokens_per_step=2048):
    """A run directory whose metrics.jsonl logs ``losses`` (step 1, 2, ...), evaluated every ``val_every`` steps."""
    path.mkdir(parents=True)
    val_losses = iter(val_losses or [])
    lines = []
    for step, loss in enumerate(losses, start=1):
        record = {"step": step, "epoch": round(step * epochs_per_step, 4), "tokens": step * tokens_per_step, "loss": loss, "lr": 1e-3,
                  "tok_per_s": 1000.0 + step}
        if not epochs_per_step:  # as an older gpt2lab wrote them
            del record["epoch"], record["tokens"]
        if step % val_every == 0:
            record["val_loss"] = next(val_losses)
        lines.append(json.dumps(record))
    text = "\n".join(lines) + "\n" + ('{"step": 99, "lo' if cut_short else "")  # a crash can cut the last line
    (path / "metrics.jsonl").write_text(text)
    return path


def test_the_table_gives_what_each_run_reached_and_marks_the_lowest_val_loss(tmp_path):
    a = write_run(tmp_path / "lr3e-4", [5.0 - 0.1 * i for i in range(30)], val_losses=[4.5, 4.0, 3.6])
    b = write_run(tmp_path / "lr1e-3", [5.0 - 0.12 * i for i in range(40)], val_losses=[4.2, 3.5, 3.7, 3.8], cut_short=True)
    sa, sb = compare_runs([a, b])
    assert (sa.step, sa.epoch, sa.tokens, sa.val_loss, sa.best) == (30, 0.3, 30 * 2048, 3.6, (30, 3.6))
    assert sa.train_loss == pytest.approx(statistics.fmean(5.0 - 0.1 * i for i in range(30 - LAST, 30)))
    assert (sb.step, sb.val_loss, sb.best, sb.tok_per_s) == (40, 3.8, (20, 3.5), statistics.median(1000.0 + s for s in range(1, 41)))
    lines = runs_table([sa, sb]).splitlines()
    assert lines[0].split()[:5] == ["run", "state", "step", "epoch", "tokens"]
    assert lines[1].split()[:7] == [str(a), "-", "30", "0.30", "61.4k", f"{sa.train_loss:.4f}", "3.6000"]  # no status.json: "-"
    assert lines[2].endswith("3.5000 (step 20) *  1,020") and "*" not in lines[1]  # the lower of the two lowest val losses


def test_runs_command_prints_the_table_and_draws_the_curves(tmp_path, capsys):
    a = write_run(tmp_path / "a", [3.0] * 20, val_losses=[2.9, 2.8])
    b = write_run(tmp_path / "b", [3.5] * 12, val_losses=[3.1])
    assert main(["runs", str(a), str(b), "--plot", str(tmp_path / "cmp.png"), "--x", "tokens"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[1].startswith(str(a)) and out.splitlines()[2].startswith(str(b))
    assert out.strip().endswith(f"wrote {tmp_path / 'cmp.png'}")
    assert (tmp_path / "cmp.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["runs", str(a), str(b)]) == 0 and "--plot FILE.png draws their curves" in capsys.readouterr().out
    # lowest first: a (lowest val loss 2.8, train loss 3.0) before b (3.1, 3.5), whatever the order given
    assert main(["runs", str(b), str(a), "--sort", "lowest"]) == 0
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()[1:3]] == [str(a), str(b)]
    unevaluated = write_run(tmp_path / "c", [1.0] * 5, val_every=100)  # the lowest train loss, and no val loss: last by val
    assert [s.name for s in sort_runs(compare_runs([unevaluated, b, a]), "val")] == [str(a), str(b), str(unevaluated)]
    assert [s.name for s in sort_runs(compare_runs([b, a, unevaluated]), "train")] == [str(unevaluated), str(a), str(b)]
    old = write_run(tmp_path / "old", [3.0] * 5, epochs_per_step=0)  # an older gpt2lab logged no epoch or tokens
    assert main(["runs", str(old)]) == 0 and capsys.readouterr().out.splitlines()[1].split()[1:5] == ["-", "5", "-", "-"]


@pytest.mark.parametrize("make, argv, message", [
    (lambda t: t / "nothing", ["{d}"], "holds no training run (no metrics.jsonl); give directories that gpt2lab train --out wrote"),
    (lambda t: write_run(t / "old", [3.0] * 5, epochs_per_step=0), ["{d}", "--plot", "{d}/x.png", "--x", "epoch"],
     "'s metrics have no epoch (an older gpt2lab trained it); use --x step"),

])
def test_runs_mistakes_are_one_line_exit_2(tmp_path, capsys, make, argv, message):
    d = make(tmp_path)
    assert main(["runs", *[arg.format(d=d) for arg in argv]]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and message in err, err


def test_runs_reads_what_train_wrote(tmp_path):
    rng = np.random.default_rng(0)
    save_tokens(tmp_path / "data", rng.integers(0, 48, 3000), rng.integers(0, 48, 600), n_vocab=48)
    common = dict(data=tmp_path / "data", n_layer=1, n_head=2, n_embd=32, block_size=16, batch_size=4, eval_every=3, eval_batches=2,
                  checkpoint_every=0, progress=False, seed=0)
    results = [train(TrainConfig(out=tmp_path / name, epochs=epochs, **common)) for name, epochs in (("short", 0.05), ("long", 0.1))]
    summaries = compare_runs([tmp_path / "short", tmp_path / "long"])
    assert [s.step for s in summaries] == [r.step for r in results]
    assert [s.val_loss for s in summaries] == [pytest.approx(r.val_loss, abs=1e-6) for r in results]
    assert summaries[1].epoch == pytest.approx(0.1, abs=0.02)
    assert [s.tokens for s in summaries] == [r.step * 4 * 16 for r in results]
    # a sweep's folder stands for the runs in it
    assert [s.name for s in compare_runs([tmp_path])] == [str(tmp_path / "long"), str(tmp_path / "short")]
    with pytest.raises(InputError, match="name at least one run directory"):
        compare_runs([])


def test_benchmark_scores_get_a_column_each_and_sort_best_first(tmp_path, capsys):
    def scored(name, acc_norms, ppl=None):
        run = write_run(tmp_path / name, [3.0] * 20, val_losses=[2.9, 2.8])
        records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        evaluated = iter(acc_norms)
        for r in records:
            if "val_loss" in r:
                r["hellaswag_acc_norm"] = next(evaluated)
                if ppl is not None:
                    r["lambada_ppl"] = ppl
        (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        return run

    a, b = scored("a", [0.26, 0.29], ppl=40.0), scored("b", [0.27, 0.31])
    plain = write_run(tmp_path / "plain", [3.0] * 20, val_losses=[2.9, 2.8])  # no benchmark
    summaries = compare_runs([a, b, plain])
    assert [s.scores for s in summaries] == [{"hellaswag_acc_norm": 0.29, "lambada_ppl": 40.0}, {"hellaswag_acc_norm": 0.31}, {}]
    assert [s.name for s in sort_runs(summaries, "hellaswag_acc_norm")] == [str(b), str(a), str(plain)]  # accuracy: highest first
    assert [s.name for s in sort_runs(summaries, "lambada_ppl")] == [str(a), str(b), str(plain)]
    with pytest.raises(InputError, match="cannot sort by 'mmlu'; choose one of lowest, val, train, hellaswag_acc_norm, lambada_ppl"):
        sort_runs(summaries, "mmlu")
    assert main(["runs", str(a), str(b), str(plain), "--sort", "hellaswag_acc_norm", "--json"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[-2:] == ["hellaswag_acc_norm", "lambada_ppl"]
    assert lines[1].split()[0] == str(b) and lines[1].split()[-2:] == ["0.3100", "-"] and lines[2].split()[-2:] == ["0.2900", "40.0000"]
    assert json.loads(lines[-1])[0]["hellaswag_acc_norm"] == 0.31


def test_the_state_column_tells_running_finished_failed_and_died_runs_apart(tmp_path, capsys):
    done = write_run(tmp_path / "sweep" / "a-done", [3.0] * 20, val_every=100)
    write_status(done, "finished", step=20, max_steps=20)
    going = write_run(tmp_path / "sweep" / "b-going", [3.0] * 30, val_every=100)
    write_status(going, "running", step=0, max_steps=120)  # written by this process, which is alive
    failed = write_run(tmp_path / "sweep" / "c-failed", [3.0] * 7, val_every=100)
    write_status(failed, "failed", step=7, max_steps=20, error="the loss became nan at step 7; lower --lr")
    died = write_run(tmp_path / "sweep" / "d-died", [3.0] * 9, val_every=100)
    subprocess.run([sys.executable, "-c", "from gpt2lab.train.status import write_status; from pathlib import Path; "
                    f"write_status(Path({str(died)!r}), 'running', step=0, max_steps=20)"], check=True)  # a process now gone
    dead_pid = json.loads((died / "status.json").read_text())["pid"]
    reused = write_run(tmp_path / "sweep" / "e-reused", [3.0] * 4, val_every=100)  # our pid, but another process's start time: not ours
    write_status(reused, "running", step=0, max_steps=20)
    status = json.loads((reused / "status.json").read_text())
    (reused / "status.json").write_text(json.dumps(status | {"started": status["started"] - 1}))
    compiling = tmp_path / "sweep" / "f-compiling"  # started, nothing logged yet
    write_status(compiling, "running", step=0, max_steps=50)
    summaries = compare_runs([tmp_path / "sweep"])
    assert [s.state for s in summaries] == ["finished", "running", "failed", "died", "died", "running"]
    # 90 steps to go at 2048 tokens a step and a median 1015.5 tok/s (write_run's speeds): about 3 minutes
    assert [s.state_cell() for s in summaries][:2] == ["finished", "running 25%, ~3 min left"]
    assert [human_duration(t) for t in (42, 600, 7200)] == ["42 s", "10 min", "2.0 h"]
    assert (summaries[-1].step, summaries[-1].train_loss, summaries[-1].records) == (0, None, [])
    assert main(["runs", str(tmp_path / "sweep")]) == 0
    table, notes = capsys.readouterr().out.split("\n\n")
    assert main(["runs", str(tmp_path / "sweep"), "--json"]) == 0
    figures = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert [(f["state"], f["step"], f["max_steps"]) for f in figures[:3]] == [("finished", 20, 20), ("running", 30, 120), ("failed", 7, 20)]
    assert figures[2]["error"] == "the loss became nan at step 7; lower --lr" and figures[0]["train_loss"] == 3.0
    assert [line.split()[1] for line in table.splitlines()[1:]] == ["finished", "running", "failed", "died", "died", "running"]
    assert table.splitlines()[-1].split()[:5] == [str(compiling), "running", "0.0%", "0", "-"]
    assert notes.splitlines()[0] == f"{failed}: failed at step 7: the loss became nan at step 7; lower --lr"
    assert notes.splitlines()[1].startswith(f"{died}: its process (pid {dead_pid}) "
                                            "is gone without saying how it ended (killed? out of memory?); it saved no checkpoint: start it again")


def test_a_run_that_raises_is_marked_failed_with_its_error(tmp_path):
    rng = np.random.default_rng(0)
    save_tokens(tmp_path / "data", rng.integers(0, 48, 3000), rng.integers(0, 48, 600), n_vocab=48)

    def broken_hook(step, model):
        raise ValueError("the hook broke\nsecond line")

    config = TrainConfig(data=tmp_path / "data", out=tmp_path / "run", n_layer=1, n_head=2, n_embd=32, block_size=16, batch_size=4,
                         max_steps=6, eval_every=3, checkpoint_every=2, eval_batches=1, progress=False)
    with pytest.raises(ValueError, match="the hook broke"):
        train(config, on_eval=broken_hook)
    (summary,) = compare_runs([tmp_path / "run"])
    assert (summary.state, summary.status["step"], summary.status["error"]) == ("failed", 3, "ValueError: the hook broke")
    assert runs_table([summary]).splitlines()[-1] == f"{tmp_path / 'run'}: failed at step 3: ValueError: the hook broke"
    result = train(TrainConfig(data=tmp_path / "data", out=tmp_path / "run", resume=True, progress=False))  # from the checkpoint of step 2
    assert result.step == 6 and compare_runs([tmp_path / "run"])[0].state == "finished"
