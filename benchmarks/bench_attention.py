"""Attention capture and the attention page: gpt2lab against transformers' eager attentions.

1. Capture: the probabilities of every layer and head, (L, H, T, T), on a random GPT-2 of the chosen
   preset's shape. gpt2lab's explicit path (``gpt2lab.attention.capture``) against transformers
   ``GPT2LMHeadModel(attn_implementation="eager")(ids, output_attentions=True)`` on the same weights,
   same process; best of N runs. Both are checked equal first.
2. The whole ``gpt2lab.attention()`` (capture + statistics + the induction pass), for reference.
3. The HTML page for ``--page-tokens`` tokens: build time, file size, and, when /usr/bin/chromium and
   selenium are there, the time the page's script takes to mount and to redraw for another head.

    python benchmarks/bench_attention.py [--preset gpt2] [--seq-len 512] [--page-tokens 1000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch


def best(fn, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def browser_times(page: Path) -> dict | None:
    if not (Path("/usr/bin/chromium").exists() and Path("/usr/bin/chromedriver").exists()):
        return None
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        return None
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run", "--disable-quic", f"--user-data-dir={tempfile.mkdtemp()}", "--window-size=1400,1000"):
        opts.add_argument(arg)
    d = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
    try:
        t0 = time.perf_counter()
        d.get(page.resolve().as_uri())
        load = time.perf_counter() - t0
        api = "document.querySelector('.g2l-attn').gpt2labAttention"
        mount = d.execute_script(f"return {api}.mountMs")
        redraw = d.execute_script(f"const a = {api}, t = performance.now(); a.select(1, 3); return performance.now() - t")
        all_heads = d.execute_script(f"const a = {api}, t = performance.now(); a.select(1, 'all'); return performance.now() - t")
        hover = d.execute_script(f"const a = {api}, t = performance.now(); a.setFocus(700); return performance.now() - t")
        return {"load_s": load, "mount_ms": mount, "redraw_ms": redraw, "all_heads_ms": all_heads, "hover_ms": hover}
    finally:
        d.quit()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="gpt2")
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--page-tokens", type=int, default=1000)
    args = parser.parse_args()

    from transformers import GPT2Config as HFConfig
    from transformers import GPT2LMHeadModel

    from gpt2lab import GPT2, GPT2Config
    from gpt2lab.attention import attention, capture
    from gpt2lab.views import render_page, write_page

    torch.manual_seed(0)
    cfg = GPT2Config.from_preset(args.preset)
    hf_cfg = HFConfig(n_layer=cfg.n_layer, n_head=cfg.n_head, n_embd=cfg.n_embd, attn_implementation="eager")
    hf = GPT2LMHeadModel(hf_cfg).eval()
    with tempfile.TemporaryDirectory() as tmp:
        hf.save_pretrained(tmp)
        ours = GPT2.from_pretrained(tmp)
    hf.config._attn_implementation = "eager"
    ids = torch.randint(0, cfg.vocab_size, (1, args.seq_len), generator=torch.Generator().manual_seed(0))

    with torch.no_grad():
        a = capture(ours, ids)[0]
        b = torch.stack(hf(ids, output_attentions=True).attentions)[:, 0]
        delta = (a - b).abs().max().item()
        print(f"{args.preset}, T={args.seq_len}: (L, H, T, T) = {tuple(a.shape)}, max |delta| vs transformers eager = {delta:.1e}")
        t_ours = best(lambda: capture(ours, ids))
        t_hf = best(lambda: hf(ids, output_attentions=True))
    print(f"capture   gpt2lab {t_ours:.3f} s   transformers eager output_attentions {t_hf:.3f} s   ratio (hf / gpt2lab) {t_hf / t_ours:.2f}x")
    t_api = best(lambda: attention(ours, None, ids[0]), repeat=1)
    print(f"gpt2lab.attention() with statistics and the induction pass: {t_api:.3f} s")

    T = args.page_tokens
    page_ids = torch.randint(0, cfg.vocab_size, (T,), generator=torch.Generator().manual_seed(1))
    result = attention(ours, None, page_ids, induction=False)
    t_page = best(lambda: render_page(result), repeat=1)
    with tempfile.TemporaryDirectory() as tmp:
        page = write_page(result, Path(tmp) / "attention.html")
        size = page.stat().st_size
        print(f"page, {T} tokens x {cfg.n_layer} layers x {cfg.n_head} heads (top {8} keys per row): built in {t_page:.2f} s, {size / 1e6:.1f} MB")
        times = browser_times(page)
        if times is None:
            print("browser timings skipped: needs /usr/bin/chromium, /usr/bin/chromedriver and selenium")
        else:
            print("in headless chromium: load {load_s:.2f} s, script mount {mount_ms:.0f} ms, redraw for another head {redraw_ms:.0f} ms, "
                  "all heads coloured {all_heads_ms:.0f} ms, hover {hover_ms:.1f} ms".format(**times))


if __name__ == "__main__":
    main()
