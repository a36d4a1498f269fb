"""Attention capture, head statistics, pictures, the HTML page's data and escaping, and the CLI.

The browser tests of the page live in test_attention_browser.py."""

from __future__ import annotations

import base64
import json
import math
import re

import numpy as np
import pytest
import torch

from gpt2lab import GPT2, GPT2Config
from gpt2lab import attention as attention_fn
from gpt2lab.attention import (
    AttentionResult,
    HeadStats,
    distance,
    entropy,
    head_labels,
    induction_score,
    prev_token_score,
    repeated_random_tokens,
    self_token_score,
    sink_share,
    token_texts,
    visible,
)
from gpt2lab.cli import main
from gpt2lab.errors import InputError
from gpt2lab.views import (
    fragment,
    grid_size,
    head_size,
    layer_means_size,
    page_data,
    plot_grid,
    plot_head,
    plot_layer_means,
    render_page,
    save_attention,
    script_json,
)
from gpt2lab.views.html import sparse_rows

HOSTILE = '<script>window.__pwned=1</script><img src=x onerror="window.__pwned=2">'


# ---------------------------------------------------------------------------------------------
# hand-made patterns
# ---------------------------------------------------------------------------------------------


def prev_token_pattern(T: int) -> torch.Tensor:
    p = torch.zeros(T, T)
    p[0, 0] = 1.0
    p[torch.arange(1, T), torch.arange(T - 1)] = 1.0
    return p


def uniform_pattern(T: int) -> torch.Tensor:
    p = torch.tril(torch.ones(T, T))
    return p / p.sum(-1, keepdim=True)


def first_token_pattern(T: int) -> torch.Tensor:
    p = torch.zeros(T, T)
    p[:, 0] = 1.0
    return p


def induction_pattern(period: int) -> torch.Tensor:
    """On x + x: the second copy looks at the token after its earlier occurrence, the first copy at itself."""
    T = 2 * period
    p = torch.eye(T)
    for t in range(period, T):
        p[t] = 0.0
        p[t, t - period + 1] = 1.0
    return p


def test_previous_token_head_scores_one():
    T = 12
    p = prev_token_pattern(T)
    assert prev_token_score(p).item() == pytest.approx(1.0)
    assert self_token_score(p).item() == pytest.approx(0.0)
    assert distance(p).item() == pytest.approx(1.0)
    assert entropy(p).item() == pytest.approx(0.0, abs=1e-6)
    assert sink_share(p).item() == pytest.approx(1 / (T - 1))  # only row 1's previous token is the first


def test_uniform_attention_has_normalised_entropy_one():
    T = 17
    p = uniform_pattern(T)
    assert entropy(p).item() == pytest.approx(1.0, abs=1e-6)
    # row i spreads over i+1 keys: mean distance i/2, share on the first token 1/(i+1)
    rows = torch.arange(1, T, dtype=torch.float64)
    assert distance(p).item() == pytest.approx((rows / 2).mean().item(), rel=1e-5)
    assert sink_share(p).item() == pytest.approx((1 / (rows + 1)).mean().item(), rel=1e-5)
    assert prev_token_score(p).item() == pytest.approx((1 / (rows + 1)).mean().item(), rel=1e-5)


def test_entropy_is_between_zero_and_one_for_random_rows():
    torch.manual_seed(0)
    scores = torch.randn(3, 5, 20, 20).masked_fill(torch.ones(20, 20, dtype=torch.bool).triu(1), float("-inf"))
    e = entropy(scores.softmax(-1))
    assert e.shape == (3, 5)
    assert (e > 0).all() and (e < 1).all()


def test_sink_and_self_patterns():
    T = 9
    sink = first_token_pattern(T)
    assert sink_share(sink).item() == pytest.approx(1.0)
    assert distance(sink).item() == pytest.approx(torch.arange(1, T).float().mean().item())
    ident = torch.eye(T)
    assert self_token_score(ident).item() == pytest.approx(1.0)
    assert distance(ident).item() == pytest.approx(0.0)
    assert sink_share(ident).item() == pytest.approx(0.0)


def test_induction_score_on_hand_made_patterns():
    period = 7
    assert induction_score(induction_pattern(period), period).item() == pytest.approx(1.0)
    # a previous-token head is not an induction head (period > 2 keeps the two apart)
    assert induction_score(prev_token_pattern(2 * period), period).item() == pytest.approx(0.0)
    # extra tokens before the repeats (a BOS) shift nothing
    with_bos = torch.zeros(2 * period + 1, 2 * period + 1)
    with_bos[1:, 1:] = induction_pattern(period)
    with_bos[0, 0] = 1.0
    assert induction_score(with_bos, period).item() == pytest.approx(1.0)
    with pytest.raises(InputError):
        induction_score(torch.eye(5), 3)


def test_statistics_keep_leading_dimensions_and_labels_follow_the_patterns():
    T, period = 10, 5
    probs = torch.stack([
        torch.stack([prev_token_pattern(T), uniform_pattern(T)]),
        torch.stack([first_token_pattern(T), torch.eye(T)]),
    ])  # (L=2, H=2, T, T)
    ind = torch.stack([
        torch.stack([prev_token_pattern(T), induction_pattern(period)]),
        torch.stack([first_token_pattern(T), torch.eye(T)]),
    ])
    stats = HeadStats.from_probs(probs, ind, period)
    assert stats.entropy.shape == (2, 2)
    assert stats.labels == [["previous-token", "induction"], ["first-token sink", "current-token"]]
    assert stats.induction[0, 1].item() == pytest.approx(1.0)
    no_induction = HeadStats.from_probs(probs)
    assert no_induction.induction is None
    assert no_induction.labels == [["previous-token", "broad"], ["first-token sink", "current-token"]]
    table = stats.table()
    assert len(table) == 4 and table[0]["layer"] == 0 and table[0]["prev_token"] == pytest.approx(1.0)
    assert "previous-token" in stats.format_table()


def test_head_labels_mixed_when_nothing_dominates():
    stats = {k: torch.full((1, 1), 0.2) for k in ("entropy", "sink", "prev_token", "self_token", "induction")}
    assert head_labels(stats) == [["mixed"]]


def test_repeated_random_tokens_repeat_and_avoid_excluded():
    x = repeated_random_tokens(10, 6, batch=3, seed=1, exclude=[9])
    assert x.shape == (3, 12)
    assert torch.equal(x[:, :6], x[:, 6:])
    assert (x != 9).all() and (x >= 0).all()
    assert torch.equal(x, repeated_random_tokens(10, 6, batch=3, seed=1, exclude=[9]))


def test_visible_makes_whitespace_and_controls_visible():
    assert visible(" the") == "\u2423the"
    assert visible("\n") == "\u21b5"
    assert visible("a\tb\r") == "a\u2192b\u240d"
    assert visible("\x00") == "\\x00"
    assert visible("\u2028") == "\\u2028"
    assert visible("") == "\u2205"
    assert visible("<b>") == "<b>"  # escaping is the renderer's job, not a change of the text


# ---------------------------------------------------------------------------------------------
# capture: equal to transformers' eager attentions
# ---------------------------------------------------------------------------------------------


def eager(path):
    from transformers import GPT2LMHeadModel

    return GPT2LMHeadModel.from_pretrained(path, attn_implementation="eager").eval()


@pytest.fixture(scope="module")
def tiny(hf_tiny):
    _, path = hf_tiny
    return GPT2.from_pretrained(path), eager(path)


def test_attention_equals_transformers_eager_output_attentions(tiny):
    model, hf = tiny
    ids = torch.randint(0, 1000, (37,), generator=torch.Generator().manual_seed(3))
    result = attention_fn(model, None, ids)
    with torch.no_grad():
        ref = torch.stack(hf(ids[None], output_attentions=True).attentions)[:, 0]  # (L, H, T, T)
    assert result.probs.shape == (2, 4, 37, 37) == ref.shape
    assert result.probs.dtype == torch.float32 and result.probs.device.type == "cpu"
    torch.testing.assert_close(result.probs, ref, atol=1e-6, rtol=0)
    torch.testing.assert_close(result.probs.sum(-1), torch.ones(2, 4, 37))
    assert result.tokens == [f"#{i}" for i in ids.tolist()]
    assert result.ids == ids.tolist()


def test_capture_holds_one_copy_of_the_probabilities(tiny):
    """Each layer's probabilities are copied out as they are made and let go: while layer i runs, no earlier
    layer's tensor is alive, and none outlives the call (peak: one (B, L, H, T, T) copy + one layer)."""
    import gc
    import weakref

    from gpt2lab.attention import capture

    model, _ = tiny
    alive_before: list[int] = []
    refs: list[weakref.ref] = []

    def watch(probs, name):  # registered first, so it sees each layer's tensor before capture copies it
        gc.collect()
        alive_before.append(sum(r() is not None for r in refs))
        refs.append(weakref.ref(probs))

    ids = torch.randint(0, 1000, (2, 30), generator=torch.Generator().manual_seed(4))
    with model.hooks({f"h.{i}.attn.probs": watch for i in range(model.config.n_layer)}):
        out = capture(model, ids)
    gc.collect()
    assert out.shape == (2, 2, 4, 30, 30) and alive_before == [0, 0]
    assert all(r() is None for r in refs)
    assert not model.points.fns


def test_induction_score_matches_transformers_on_the_same_repeats(tiny):
    model, hf = tiny
    result = attention_fn(model, None, list(range(10)), induction_period=9, induction_batch=2, seed=5)
    rep = repeated_random_tokens(1000, 9, batch=2, seed=5)
    with torch.no_grad():
        ref = torch.stack(hf(rep, output_attentions=True).attentions, dim=1)  # (B, L, H, T, T)
    expected = induction_score(ref, 9).mean(0)
    torch.testing.assert_close(result.stats.induction, expected, atol=1e-6, rtol=0)
    assert result.stats.induction_period == 9


def test_attention_accepts_ids_in_every_form_and_restores_training_mode(tiny):
    model, _ = tiny
    model.train()
    try:
        a = attention_fn(model, None, [1, 2, 3, 4], induction=False)
        b = attention_fn(model, None, torch.tensor([[1, 2, 3, 4]]), induction=False)
        assert model.training
    finally:
        model.eval()
    torch.testing.assert_close(a.probs, b.probs)  # eval mode inside: no dropout, identical
    c = attention_fn(model, [1, 2, 3, 4], induction=False)  # ids in the tokenizer's place
    torch.testing.assert_close(a.probs, c.probs)
    assert a.stats.induction is None


@pytest.mark.parametrize(
    "ids, message",
    [([5], "at least 2 tokens"), (list(range(129)), "more than the model's context of 128"), ([1, 1000], "outside this model's vocabulary")],
)
def test_bad_inputs_raise_input_errors(tiny, ids, message):
    model, _ = tiny
    with pytest.raises(InputError, match=message):
        attention_fn(model, None, ids)


def test_text_needs_a_tokenizer(tiny):
    with pytest.raises(InputError, match="tokenizer"):
        attention_fn(tiny[0], None, "hello")


def test_top_pattern_and_mapping(tiny):
    model, _ = tiny
    ids = list(range(100, 112))
    r = attention_fn(model, None, ids, induction=False)
    top = r.top(7, k=3, layer=1, head=2)
    row = r.probs[1, 2, 7]
    assert [j for j, _ in top] == row.topk(3).indices.tolist()
    assert top[0][1] == pytest.approx(row.max().item())
    assert all(j <= 7 for j, _ in r.top(7, k=20, layer=1, head=2))  # only visible keys, at most 8
    torch.testing.assert_close(r.pattern(1), r.probs[1].mean(0))
    torch.testing.assert_close(r.pattern(), r.probs.mean((0, 1)))
    text = r.mapping(layer=1, head=2, k=3)
    lines = text.splitlines()
    assert lines[0].startswith("attention: layer 1, head 2")
    assert len(lines) == 1 + len(ids)
    j, w = top[0]
    assert re.search(rf"^\s+7 #107\s+-> {j} #{ids[j]} {w:.2f}", lines[8])
    one = r.mapping(token=3, k=2).splitlines()
    assert len(one) == 2 and "mean over all 2 layers x 4 heads" in one[0]
    with pytest.raises(InputError, match="layer 5 does not exist"):
        r.mapping(layer=5)
    with pytest.raises(InputError, match="head 4 does not exist"):
        r.pattern(0, 4)
    with pytest.raises(InputError, match="token 12 does not exist"):
        r.top(12)


# ---------------------------------------------------------------------------------------------
# text, with GPT-2's real vocabulary
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_gpt2_vocab_model():
    torch.manual_seed(0)
    return GPT2(GPT2Config(vocab_size=50257, block_size=256, n_layer=2, n_head=4, n_embd=32)).eval()


@pytest.fixture(scope="module")
def small_checkpoint(small_gpt2_vocab_model, tmp_path_factory):
    path = tmp_path_factory.mktemp("attn_model")
    small_gpt2_vocab_model.save_pretrained(path)
    return path


def test_tokens_are_the_exact_text(tokenizer, small_gpt2_vocab_model):
    text = "Hello world,\n  this is\tGPT-2 <b>&amp;</b> $5"
    r = attention_fn(small_gpt2_vocab_model, tokenizer, text, induction=False)
    assert "".join(r.tokens) == text
    assert r.ids == tokenizer.encode(text)
    assert r.probs.shape == (2, 4, len(r.ids), len(r.ids))


def test_tokens_that_split_a_character_show_its_bytes(tokenizer):
    ids = tokenizer.encode("🦙")  # one emoji, several byte-level tokens
    texts = token_texts(tokenizer, ids)
    if len(ids) > 1:
        assert all("\\x" in t for t in texts)
        assert b"".join(tokenizer.decode_single_token_bytes(i) for i in ids).decode() == "🦙"
    assert token_texts(None, [3, 4]) == ["#3", "#4"]


def test_endoftext_in_the_text_is_the_special_token(tokenizer, small_gpt2_vocab_model):
    r = attention_fn(small_gpt2_vocab_model, tokenizer, "a<|endoftext|>b", induction=False)
    assert tokenizer.eot_token in r.ids


# ---------------------------------------------------------------------------------------------
# pictures
# ---------------------------------------------------------------------------------------------


def read_png(path):
    from PIL import Image

    with Image.open(path) as im:
        assert im.format == "PNG"
        im.load()
        return np.asarray(im.convert("RGB"))


@pytest.fixture(scope="module")
def result(tiny):
    return attention_fn(tiny[0], None, list(range(200, 230)), model_name="tiny")


def test_pngs_are_valid_images_of_the_expected_size(result, tmp_path):
    cases = [
        (plot_head(result, tmp_path / "head.png", 1, 2), head_size(len(result))),
        (plot_head(result, tmp_path / "mean.png", 1, None), head_size(len(result))),
        (plot_grid(result, tmp_path / "grid.png"), grid_size(2, 4)),
        (plot_layer_means(result, tmp_path / "layers.png"), layer_means_size(2)),
    ]
    for path, (w, h) in cases:
        pixels = read_png(path)
        assert pixels.shape == (h, w, 3), path.name
        colours = np.unique(pixels.reshape(-1, 3), axis=0)
        assert len(colours) > 20, f"{path.name} looks empty"  # a heatmap, labels, a colour bar
    assert head_size(30) == (730, 730) and head_size(2) == (600, 600) and head_size(1000) == (1600, 1600)
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave nothing behind


def test_png_labels_show_dollar_signs_as_text(tokenizer, small_gpt2_vocab_model, tmp_path):
    # matplotlib would read "$...$" as TeX and fail on unbalanced dollars; the labels are plain text
    r = attention_fn(small_gpt2_vocab_model, tokenizer, "costs $5 and $ more $x^2$ \\frac", induction=False)
    path = plot_head(r, tmp_path / "dollars.png", 0, 0)
    assert read_png(path).shape == (*head_size(len(r))[::-1], 3)


def test_long_input_head_picture_thins_its_labels(tmp_path):
    torch.manual_seed(0)
    model = GPT2(GPT2Config(vocab_size=300, block_size=512, n_layer=1, n_head=2, n_embd=16)).eval()
    r = attention_fn(model, None, torch.randint(0, 300, (400,)), induction=False)
    path = plot_head(r, tmp_path / "long.png", 0, 1)
    assert read_png(path).shape == (1600, 1600, 3)


def test_save_attention_writes_everything(result, tmp_path):
    paths = save_attention(result, tmp_path / "out", layer=1, head=3)
    assert sorted(paths) == ["grid", "head", "html", "layers"]
    assert all(p.is_file() and p.stat().st_size > 1000 for p in paths.values())
    with pytest.raises(InputError):
        save_attention(result, tmp_path / "bad", layer=2)


# ---------------------------------------------------------------------------------------------
# the page's data and its escaping
# ---------------------------------------------------------------------------------------------


def dense_from_page(data: dict) -> np.ndarray:
    L, H, T = data["n_layer"], data["n_head"], data["T"]
    off = np.frombuffer(base64.b64decode(data["offsets"]), dtype="<u4")
    keys = np.frombuffer(base64.b64decode(data["keys"]), dtype="<u2" if data["key_bytes"] == 2 else "<u4")
    w = np.frombuffer(base64.b64decode(data["weights"]), dtype=np.uint8)
    dense = np.zeros((L * H * T, T))
    for r in range(L * H * T):
        sl = slice(off[r], off[r + 1])
        assert np.all(np.diff(keys[sl].astype(int)) > 0)  # ascending positions
        dense[r, keys[sl]] = w[sl] / 255
    return dense.reshape(L, H, T, T)


def test_page_data_keeps_every_weight_of_a_short_text(result):
    data = page_data(result, layer=1, head=2)
    assert data["full_rows"] and data["top_k"] == len(result)
    dense = dense_from_page(data)
    np.testing.assert_allclose(dense, result.probs.numpy(), atol=0.5 / 255 + 1e-6)
    assert data["layer"] == 1 and data["head"] == 2
    assert [row[:2] for row in data["stats"]["rows"]][:3] == [[0, 0], [0, 1], [0, 2]]
    assert data["stats"]["columns"] == ["entropy", "distance", "sink", "prev_token", "self_token", "induction"]


def test_page_data_keeps_the_top_k_heaviest_keys(result):
    data = page_data(result, top_k=3)
    assert data["top_k"] == 3 and not data["full_rows"]
    dense = dense_from_page(data)
    probs = result.probs.numpy()
    kept = (dense > 0).sum(-1)
    assert kept.max() <= 3
    for layer, h, i in [(0, 0, 29), (1, 3, 15), (1, 1, 2)]:
        top = set(np.argsort(-probs[layer, h, i])[:3].tolist())
        assert set(np.nonzero(dense[layer, h, i])[0].tolist()) <= top
        j = int(np.argmax(probs[layer, h, i]))
        assert dense[layer, h, i, j] == pytest.approx(probs[layer, h, i, j], abs=0.5 / 255 + 1e-6)


def test_long_text_data_stays_compact():
    torch.manual_seed(0)
    probs = torch.rand(2, 3, 1000, 1000).tril()
    probs = probs / probs.sum(-1, keepdim=True)
    offsets, keys, weights = sparse_rows(probs, 8)
    assert offsets.shape == (2 * 3 * 1000 + 1,) and offsets[-1] == len(keys) == len(weights)
    assert len(keys) <= 2 * 3 * 1000 * 8
    assert keys.dtype == np.dtype("<u2") and weights.dtype == np.uint8


def test_script_json_escapes_everything_that_could_end_a_script():
    obj = {"t": ["</script><script>alert(1)</script>", "a & b > c", "\u2028\u2029", "<!--", HOSTILE]}
    text = script_json(obj)
    for raw in ("<", ">", "&", "\u2028", "\u2029"):
        assert raw not in text
    assert json.loads(text) == obj


def hostile_result() -> AttentionResult:
    T = 6
    probs = uniform_pattern(T).expand(1, 2, T, T).clone()
    tokens = ["<script>window.__pwned=1</script>", "<img src=x onerror=\"window.__pwned=2\">", " & ", "\u2028", "</style>", "{{JS}}"]
    return AttentionResult(ids=list(range(T)), tokens=tokens, probs=probs, stats=HeadStats.from_probs(probs), model_name="<b>model</b>")


def test_page_never_contains_token_text_as_markup():
    page = render_page(hostile_result())
    assert "__pwned" in page  # the text is there, as escaped data...
    assert "<script>window" not in page and "<img" not in page and "<b>model" not in page  # ...never as markup
    assert page.count("</script>") == 2  # the data element and the code element, nothing a token closed
    assert page.count("</style>") == 2
    assert "{{" not in page.replace("{{JS}}", "")  # every placeholder filled; a token's "{{JS}}" left as text
    data = json.loads(re.search(r'<script type="application/json" id="gpt2lab-attention-data">(.*?)</script>', page, re.S).group(1))
    assert data["tokens"][0] == "<script>window.__pwned=1</script>"
    assert data["visible"][2] == "\u2423&\u2423"
    assert "http://" not in page and "https://" not in page  # nothing to fetch: works offline


def test_page_script_never_parses_text_as_html():
    from importlib import resources

    js = resources.files("gpt2lab.views").joinpath("attention.js").read_text()
    js = re.sub(r"/\*.*?\*/", "", js, flags=re.S)  # the header comment names what it avoids
    assert "textContent" in js
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
        assert sink not in js


def test_fragment_for_embedding(result):
    frag = fragment(result, element_id="attn-1", top_k=4)
    html = frag.fragment_html
    assert html.count('id="attn-1"') == 1 and 'id="attn-1-data"' in html
    assert 'GPT2LabAttention.mount(document.getElementById("attn-1")' in html
    assert json.loads(frag.data_json)["top_k"] == 4
    with pytest.raises(InputError):
        fragment(result, element_id='x" onload="alert(1)')


# ---------------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------------


def test_cli_writes_pictures_page_and_prints_the_mapping(small_checkpoint, gpt2_vocab_path, tokenizer, tmp_path, capsys):
    out = tmp_path / "out"
    text = "The cat sat on the mat.\nThe cat"
    code = main(["attention", "--model", str(small_checkpoint), "--tokenizer", str(gpt2_vocab_path),
                 "--text", text, "--layer", "1", "--head", "2", "--top-k", "2", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert printed.splitlines()[0].startswith("attention: layer 1, head 2")
    assert "\u2423cat" in printed and "\u21b5" in printed
    for name in ("head.png", "grid.png", "layers.png", "attention.html"):
        assert (out / name).is_file()
        assert str(out / name) in printed
    mapping = [line for line in printed.splitlines() if "->" in line]
    assert len(mapping) == len(tokenizer.encode(text)) and all(line.count("|") == 1 for line in mapping[1:])  # 2 targets each
    page = (out / "attention.html").read_text()
    data = json.loads(re.search(r'id="gpt2lab-attention-data">(.*?)</script>', page, re.S).group(1))
    assert data["top_k"] == 2 and data["layer"] == 1 and data["head"] == 2


def test_cli_single_token_and_text_file(small_checkpoint, gpt2_vocab_path, tmp_path, capsys):
    text_file = tmp_path / "in.txt"
    text_file.write_text("one two three four", encoding="utf-8")
    code = main(["attention", "--model", str(small_checkpoint), "--tokenizer", str(gpt2_vocab_path),
                 "--text-file", str(text_file), "--token", "3", "--out", str(tmp_path / "o")])
    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    assert "mean over all 2 layers x 4 heads" in lines[0]
    assert lines[1].split()[:2] == ["3", "\u2423four"] and lines[2] == ""


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--layer", "7"], "layer 7 does not exist"),
        (["--head", "1"], "--head needs --layer"),
        (["--layer", "0", "--head", "9"], "head 9 does not exist"),
        (["--token", "99"], "--token 99 does not exist"),
        (["--top-k", "0"], "--top-k must be at least 1"),
    ],
)
def test_cli_mistakes_are_one_line_and_exit_2(small_checkpoint, gpt2_vocab_path, tmp_path, capsys, extra, message):
    code = main(["attention", "--model", str(small_checkpoint), "--tokenizer", str(gpt2_vocab_path),
                 "--text", "a b c", "--out", str(tmp_path / "o"), *extra])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_cli_text_longer_than_the_context(small_checkpoint, gpt2_vocab_path, tmp_path, capsys):
    code = main(["attention", "--model", str(small_checkpoint), "--tokenizer", str(gpt2_vocab_path),
                 "--text", " word" * 300, "--out", str(tmp_path / "o")])
    assert code == 2
    assert "more than the model's context of 256" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_statistics_of_a_real_pattern_are_sane(result):
    s = result.stats
    for name in ("entropy", "sink", "prev_token", "self_token", "induction"):
        v = getattr(s, name)
        assert v.shape == (2, 4) and (v >= 0).all() and (v <= 1 + 1e-6).all(), name
    T = len(result)
    assert ((s.distance >= 0) & (s.distance <= T - 1)).all()
    assert math.isclose(float(s.sink[0, 0]), float(result.probs[0, 0, 1:, 0].mean()), rel_tol=1e-6)
