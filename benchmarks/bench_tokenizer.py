"""Tokenizer speed, side by side with its peers in the same process (``python benchmarks/bench_tokenizer.py``).

1. Default backend (tiktoken) vs a plain ``tiktoken.Encoding`` built from the same ranks: encode a few
   MB of mixed text document by document; then ``encode_batch`` on 1 thread vs all cores.
2. Python backend vs transformers' slow (pure Python) GPT-2 BPE. transformers 5 removed the slow
   ``GPT2Tokenizer``; its code lives on verbatim in ``ClvpTokenizer`` ("Copied from GPT2Tokenizer"),
   which only adds an English text normaliser, switched off here.
3. BPE training: a 10 MB corpus to 8,000 merges.

The corpus is built from files every Python installation has (the standard library's source for
code, ``pydoc_data/topics.py`` for English prose, ``test/cjkencodings`` for CJK), so a run on
another machine reads the same text. Every comparison first checks that both sides give the same ids.
Options: ``--mb`` (encode corpus size), ``--train-mb``, ``--merges``, ``--skip-train``.
"""

from __future__ import annotations

import argparse
import os
import sys
import sysconfig
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE.parent / "tests"))

from gpt2lab.errors import TokenizerError  # noqa: E402
from gpt2lab.tokenizer import GPT2_PATTERN, Tokenizer  # noqa: E402


def gpt2_tokenizer(backend=None) -> Tokenizer:
    try:
        return Tokenizer.gpt2(backend=backend)
    except TokenizerError:
        from assets import gpt2_vocab  # fetches the offline copy the tests use

        return Tokenizer.from_file(gpt2_vocab(), backend=backend)


def stdlib_documents(limit_bytes: int) -> list[str]:
    """Mixed text, one document per file: 1/2 code, 1/4 English prose, 1/4 CJK + other scripts."""
    lib = Path(sysconfig.get_paths()["stdlib"])
    prose = (lib / "pydoc_data" / "topics.py").read_text(encoding="utf-8")
    cjk = [p.read_text(encoding="utf-8") for p in sorted((lib / "test" / "cjkencodings").glob("*-utf8.txt"))]
    code_files = sorted(p for p in lib.rglob("*.py") if "site-packages" not in p.parts and "test" not in p.parts)
    docs: list[str] = []
    budget = {"code": limit_bytes // 2, "prose": limit_bytes // 4, "other": limit_bytes // 4}
    used = dict.fromkeys(budget, 0)

    def add(kind: str, text: str) -> None:
        docs.append(text)
        used[kind] += len(text.encode("utf-8"))

    for path in code_files:
        if used["code"] >= budget["code"]:
            break
        add("code", path.read_text(encoding="utf-8", errors="replace"))
    # the prose in ~8 KB documents, cycling if the budget is larger than the file
    i = 0
    while used["prose"] < budget["prose"]:
        add("prose", prose[i : i + 8000])
        i = (i + 8000) % len(prose)
    others = cjk + [
        "Ленин родился в Симбирске. Москва — столица России, а не Петербург.\n",
        "مرحبا بالعالم، هذه جملة عربية للاختبار مع أرقام ١٢٣.\n",
        "नमस्ते दुनिया, यह हिंदी का एक वाक्य है।\n",
        "Größere Bäume tragen süße Früchte; «ça va?», ¿qué tal? 👋🏽 👨‍👩‍👧 🇫🇷\n",
    ]
    j = 0
    while used["other"] < budget["other"]:
        add("other", others[j % len(others)] * 4)
        j += 1
    return docs


def race(*fns, rounds: int = 5, clock=time.process_time) -> list[float]:
    """Best time of each function, run in alternation.

    The machine is shared, so single-threaded work is timed in CPU seconds of this process
    (``process_time``): time spent waiting for a core while someone else runs does not count. Work
    on several threads (``encode_batch``) needs wall-clock time (``clock=time.perf_counter``).
    Alternating the functions makes whatever load remains hit both sides alike.
    """
    best = [float("inf")] * len(fns)
    for _ in range(rounds):
        for k, fn in enumerate(fns):
            t0 = clock()
            fn()
            best[k] = min(best[k], clock() - t0)
    return best


def bench_default(docs: list[str]) -> None:
    import tiktoken

    ours = gpt2_tokenizer()
    peer = tiktoken.Encoding("gpt2", pat_str=GPT2_PATTERN, mergeable_ranks=ours.mergeable_ranks, special_tokens={"<|endoftext|>": 50256})
    mb = sum(len(d.encode("utf-8")) for d in docs) / 1e6
    assert [ours.encode(d) for d in docs] == [peer.encode(d) for d in docs], "ids differ from tiktoken"
    t_ours, t_peer = race(lambda: [ours.encode(d) for d in docs], lambda: [peer.encode(d) for d in docs])
    print(f"default backend encode, {len(docs)} docs, {mb:.1f} MB (MB per CPU second)")
    print(f"  gpt2lab (tiktoken backend) {mb / t_ours:7.2f} MB/s")
    print(f"  tiktoken.Encoding          {mb / t_peer:7.2f} MB/s")
    print(f"  ratio gpt2lab/tiktoken     {t_peer / t_ours:7.2f}x")
    cores = os.cpu_count() or 1
    t1, tn, tp = race(
        lambda: ours.encode_batch(docs, num_threads=1),
        lambda: ours.encode_batch(docs, num_threads=cores),
        lambda: peer.encode_batch(docs, num_threads=cores),
        clock=time.perf_counter,
    )
    print(f"encode_batch (wall clock): 1 thread {mb / t1:.2f} MB/s, {cores} threads {mb / tn:.2f} MB/s: scaling {t1 / tn:.2f}x on {cores} cores")
    print(f"  tiktoken.encode_batch {cores} threads {mb / tp:.2f} MB/s; ratio gpt2lab/tiktoken {tp / tn:.2f}x")


def slow_hf_gpt2(vocab_dir: Path):
    import transformers

    if int(transformers.__version__.split(".")[0]) < 5:  # the original slow GPT2Tokenizer still exists
        return transformers.GPT2Tokenizer(str(vocab_dir / "vocab.json"), str(vocab_dir / "merges.txt"))
    from transformers.models.clvp.tokenization_clvp import ClvpTokenizer

    class SlowGPT2Tokenizer(ClvpTokenizer):
        """transformers' pure-Python GPT-2 BPE (ClvpTokenizer's copy of it) without CLVP's normaliser."""

        @property
        def normalizer(self):
            return lambda text: text

    return SlowGPT2Tokenizer(str(vocab_dir / "vocab.json"), str(vocab_dir / "merges.txt"))


def bench_python(docs: list[str], mb_limit: float) -> None:
    import tempfile

    fast = gpt2_tokenizer()
    # the slow peer is slow: a slice of the corpus, in the same mix
    chosen, size = [], 0.0
    for k in range(0, len(docs), max(1, round(len(docs) / 200))):
        chosen.append(docs[k])
        size += len(docs[k].encode("utf-8")) / 1e6
        if size >= mb_limit:
            break
    with tempfile.TemporaryDirectory() as tmp:
        fast.save(tmp)
        peer = slow_hf_gpt2(Path(tmp))
    expected = [fast.encode_ordinary(d) for d in chosen]
    ours = fast.with_backend("python")

    def run_ours():
        return [ours.encode_ordinary(d) for d in chosen]

    def run_peer():
        return [peer.encode(d, add_special_tokens=False) for d in chosen]

    def cold(run, cache):  # the word cache emptied first: every distinct word goes through the merge loop
        def fn():
            cache.clear()
            return run()

        return fn

    assert run_ours() == expected, "python backend: ids differ from tiktoken"
    assert run_peer() == expected, "transformers: ids differ from tiktoken"
    cold_ours, cold_peer = race(cold(run_ours, ours._py.cache), cold(run_peer, peer.cache), rounds=3)
    warm_ours, warm_peer = race(run_ours, run_peer, rounds=3)
    print(f"python backend, {len(chosen)} docs, {size:.1f} MB (MB per CPU second; empty word cache / warm cache)")
    print(f"  gpt2lab python backend    {size / cold_ours:6.2f} MB/s cold  {size / warm_ours:6.2f} MB/s warm")
    print(f"  transformers slow GPT-2   {size / cold_peer:6.2f} MB/s cold  {size / warm_peer:6.2f} MB/s warm")
    print(f"  ratio gpt2lab/transformers {cold_peer / cold_ours:.2f}x cold, {warm_peer / warm_ours:.2f}x warm")


def training_corpus(limit_bytes: int) -> str:
    """English prose and CJK once each, then the standard library's source (tests included), nothing repeated."""
    lib = Path(sysconfig.get_paths()["stdlib"])
    parts = [(lib / "pydoc_data" / "topics.py").read_text(encoding="utf-8")]
    parts += [p.read_text(encoding="utf-8") for p in sorted((lib / "test" / "cjkencodings").glob("*-utf8.txt"))]
    size = sum(len(p.encode("utf-8")) for p in parts)
    for path in sorted(p for p in lib.rglob("*.py") if "site-packages" not in p.parts):
        if size >= limit_bytes:
            break
        parts.append(path.read_text(encoding="utf-8", errors="replace"))
        size += len(parts[-1].encode("utf-8"))
    return "".join(parts).encode("utf-8")[:limit_bytes].decode("utf-8", errors="ignore")


def bench_train(train_mb: float, merges: int) -> None:
    text = training_corpus(int(train_mb * 1e6))
    mb = len(text.encode("utf-8")) / 1e6
    t0, c0 = time.perf_counter(), time.process_time()
    tok = Tokenizer.train(text, 256 + merges + 1, progress=sys.stderr.isatty())
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    tok2 = Tokenizer.train(text, 256 + merges + 1, progress=False)
    assert tok2.mergeable_ranks == tok.mergeable_ranks, "training is not deterministic"
    print(f"BPE training, {mb:.1f} MB to {len(tok.merges)} merges: {seconds:.1f} s wall, {cpu:.1f} s CPU "
          f"({mb / cpu:.2f} MB per CPU second); a second run learned the same vocabulary")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=4.0, help="size of the encode corpus in MB (default 4)")
    parser.add_argument("--python-mb", type=float, default=1.0, help="MB for the python-backend comparison (default 1)")
    parser.add_argument("--train-mb", type=float, default=10.0, help="training corpus in MB (default 10)")
    parser.add_argument("--merges", type=int, default=8000)
    parser.add_argument("--skip-train", action="store_true")
    args = parser.parse_args()
    docs = stdlib_documents(int(args.mb * 1e6))
    bench_default(docs)
    bench_python(docs, args.python_mb)
    if not args.skip_train:
        bench_train(args.train_mb, args.merges)


if __name__ == "__main__":
    main()
