"""The interpretability views: lens / patching / attribution PNGs, pages, notebook fragments, terminal
tables, and the ``lens``, ``patch`` and ``attribute`` commands end to end.

The model has GPT-2's full vocabulary (so real text works) but two narrow layers; its weights are
perturbed hard enough that predictions and patching maps are not flat.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from conftest import HOSTILE, perturbed_model  # noqa: E402
from gpt2lab import GPT2Config, interp
from gpt2lab.cli import main
from gpt2lab.errors import InputError
from gpt2lab.interp import Attribution, Lens, Patching
from gpt2lab.views import interp as views
from gpt2lab.views.plots import DPI

CLEAN = "When Mary and John went to the store, John gave a drink to"
CORRUPT = "When Mary and John went to the store, Mary gave a drink to"


def sharp_model():
    """GPT-2's vocabulary, two narrow layers, hard-perturbed weights; longer token vectors make sharper
    predictions, so top probabilities spread over 0.1 .. 1 instead of all sitting near 0."""
    m = perturbed_model(GPT2Config(vocab_size=50257, block_size=128, n_layer=2, n_head=4, n_embd=32), scale=0.3)
    with torch.no_grad():
        m.transformer.wte.weight.mul_(3.0)
    return m


@pytest.fixture(scope="module")
def model():
    return sharp_model()


@pytest.fixture(scope="module")
def checkpoint(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("interp_model")
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def lens(model, tokenizer):
    return interp.lens(model, tokenizer, CLEAN, top_k=4, model_name="tiny")


@pytest.fixture(scope="module")
def patching(model, tokenizer):
    return interp.patching(model, tokenizer, CLEAN, CORRUPT, " Mary", " John", model_name="tiny")


@pytest.fixture(scope="module")
def patching_heads(model, tokenizer):
    return interp.patching(model, tokenizer, CLEAN, CORRUPT, " Mary", " John", point="attn.z")


@pytest.fixture(scope="module")
def attribution(model, tokenizer):
    return interp.attribution(model, tokenizer, CLEAN, " Mary", " John")


HOSTILE_TOKENS = [HOSTILE, " & ", "</script>", "\u2028", "{{JS}}", "$x$ \\n"]


def hostile_lens() -> Lens:
    """A lens whose input and predicted tokens are all markup (or a page template's placeholder)."""
    rows, T, k = 3, len(HOSTILE_TOKENS), 3
    probs = torch.linspace(0.9, 0.05, rows * T * k).reshape(rows, T, k)  # (rows, T, k), descending along k
    top_tokens = [[[HOSTILE_TOKENS[(i + j + r) % T] for r in range(k)] for j in range(T)] for i in range(rows)]
    return Lens(tokens=list(HOSTILE_TOKENS), top_ids=torch.zeros(rows, T, k, dtype=torch.long), top_probs=probs,
                top_tokens=top_tokens, model_name="<b>model</b>")


def hostile_patching(by: str = "position") -> Patching:
    corrupt = list(HOSTILE_TOKENS)
    corrupt[1] = '<img src=y onerror="window.__pwned=3">'
    cols = len(HOSTILE_TOKENS) if by == "position" else 4
    scores = torch.linspace(-1.0, 2.0, 2 * cols).reshape(2, cols)
    return Patching(clean_tokens=list(HOSTILE_TOKENS), corrupt_tokens=corrupt, point="resid_pre" if by == "position" else "attn.z", by=by,
                    scores=scores, clean_metric=2.0, corrupt_metric=-1.0, metric_name=f"logit({HOSTILE!r}) - logit(' x')",
                    model_name="<b>model</b>")


def read_png(path):
    from PIL import Image

    with Image.open(path) as im:
        assert im.format == "PNG"
        im.load()
        return np.asarray(im.convert("RGB")).astype(float)


def cell_pixel(image: np.ndarray, row: int, col: int, n_rows: int, n_cols: int, bottom: float = 1.3) -> np.ndarray:
    """The colour near the lower-left corner of cell (row, col) of a map drawn by ``views.interp``
    (layers going up from the bottom), away from the text written in the cell's middle."""
    h, w = image.shape[0] / DPI, image.shape[1] / DPI
    left, width, height = 1.9, w - 3.4, h - 1.3 - bottom
    x = (left + (col + 0.12) * width / n_cols) * DPI
    y = image.shape[0] - (bottom + (row + 0.12) * height / n_rows) * DPI
    return image[int(y), int(x)]


def luminance(rgb: np.ndarray) -> float:
    return float(0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2])


def page_data(page: str, element_id: str) -> dict:
    return json.loads(re.search(rf'<script type="application/json" id="{element_id}-data">(.*?)</script>', page, re.S).group(1))


# ---------------------------------------------------------------------------------------------
# PNGs
# ---------------------------------------------------------------------------------------------


def test_lens_png_has_its_size_and_darker_cells_where_the_top_token_is_likelier(lens, tmp_path):
    path = views.plot_lens(lens, tmp_path / "lens.png")
    image = read_png(path)
    assert (image.shape[1], image.shape[0]) == views.lens_size(lens)
    rows, T = lens.n_layer + 1, len(lens.tokens)
    assert rows == 3 and T == 14
    top1 = lens.top_probs[..., 0]
    cells = [(float(top1[r, c]), luminance(cell_pixel(image, r, c, rows, T))) for r in range(rows) for c in range(T)]
    cells.sort()
    # colour follows the probability: the likeliest cell is darker than the least likely one, and monotonically so
    lum = [v for _, v in cells]
    assert lum[0] > lum[-1] + 40
    assert all(a >= b - 1.0 for a, b in zip(lum, lum[1:]))


def test_lens_png_of_a_long_text_keeps_only_colour(model, tokenizer, tmp_path):
    long_lens = interp.lens(model, tokenizer, " word and" * 40, top_k=2)
    T = len(long_lens.tokens)
    assert T > views.ANNOTATE_MAX_COLUMNS
    image = read_png(views.plot_lens(long_lens, tmp_path / "long.png"))
    assert (image.shape[1], image.shape[0]) == views.lens_size(long_lens) == views.map_size(3, T, annotate=False)
    assert image.shape[1] <= 24 * DPI


def test_png_labels_show_dollar_signs_as_text(tmp_path):
    # "$x$" would be TeX with text.parse_math on; drawing must not fail or eat the dollars
    assert read_png(views.plot_lens(hostile_lens(), tmp_path / "dollars.png")).shape[0] > 0
    assert read_png(views.plot_patching(hostile_patching(), tmp_path / "dollars2.png")).shape[0] > 0


def test_patching_png_is_blue_where_the_clean_run_comes_back_and_white_where_nothing_changes(patching, tmp_path):
    image = read_png(views.plot_patching(patching, tmp_path / "patching.png"))
    assert (image.shape[1], image.shape[0]) == views.patching_size(patching)
    rows, cols = patching.scores.shape
    differs = [a != b for a, b in zip(patching.clean_tokens, patching.corrupt_tokens)]
    first = differs.index(True)
    # layer 0 at the differing position: restoring it restores everything (normalised 1): blue
    assert patching.normalised[0, first] == pytest.approx(1.0, abs=1e-4)
    r, g, b = cell_pixel(image, 0, first, rows, cols)
    assert b > r + 60
    # before the first difference the two runs are the same: normalised 0, drawn (near) white
    assert float(patching.normalised[:, :first].abs().max()) < 1e-4
    assert luminance(cell_pixel(image, 1, 0, rows, cols)) > 235


def test_patching_png_by_head_and_a_negative_cell_is_red(patching_heads, tmp_path):
    image = read_png(views.plot_patching(patching_heads, tmp_path / "heads.png"))
    assert (image.shape[1], image.shape[0]) == views.patching_size(patching_heads)
    assert patching_heads.by == "head" and patching_heads.scores.shape == (2, 4)
    p = hostile_patching(by="head")  # scores -1 .. 2: the corrupt run at -1, so the first cell is 0, none below
    p.corrupt_metric = 1.0  # now the first cells are negative
    image = read_png(views.plot_patching(p, tmp_path / "neg.png"))
    assert float(p.normalised[0, 0]) < -1.5
    r, g, b = cell_pixel(image, 0, 0, 2, 4, bottom=0.8)
    assert r > b + 60


def test_attribution_png_has_bars_of_both_signs_and_a_head_map(attribution, tmp_path):
    path = views.plot_attribution(attribution, tmp_path / "attr.png", n=8)
    image = read_png(path)
    assert (image.shape[1], image.shape[0]) == views.attribution_size(attribution, 8)
    signs = {v > 0 for _, v in attribution.top(8)}
    blue = ((image[..., 2] - image[..., 0]) > 80).mean()
    red = ((image[..., 0] - image[..., 2]) > 80).mean()
    assert blue > 0.002 and (red > 0.002) == (False in signs)
    # the head map sits right of the bars: coloured pixels beyond 9.5 inches
    right = image[:, int(10.2 * DPI): int(13.5 * DPI)]
    assert (np.abs(right[..., 0] - right[..., 2]) > 30).mean() > 0.2
    assert attribution.plot(tmp_path / "via_method.png").is_file()
    with pytest.raises(InputError):
        views.plot_attribution(attribution, tmp_path / "none.png", n=0)


def test_attribution_without_heads_is_only_bars(tmp_path):
    attr = Attribution({"embed": 0.5, "h.0.mlp": -0.25, "ln_f.bias": 0.1})
    attr.total, attr.target, attr.other = 0.35, 7, None
    image = read_png(views.plot_attribution(attr, tmp_path / "bars.png"))
    assert (image.shape[1], image.shape[0]) == views.attribution_size(attr) == (950, 500)


# ---------------------------------------------------------------------------------------------
# pages and fragments: escaped, offline
# ---------------------------------------------------------------------------------------------


def assert_no_markup_from_tokens(page: str) -> None:
    assert "__pwned" in page  # the text is there, as escaped data...
    for markup in ("<script>window", "<img src=x", "<img src=y", "<b>model"):
        assert markup not in page  # ...never as markup
    assert "http://" not in page and "https://" not in page  # nothing to fetch: works offline from file://


def test_lens_page_escapes_every_token(tmp_path):
    paths = views.save_lens(hostile_lens(), tmp_path)
    assert set(paths) == {"png", "html"} and paths["png"].name == "lens.png" and paths["html"].name == "lens.html"
    page = paths["html"].read_text(encoding="utf-8")
    assert_no_markup_from_tokens(page)
    assert page.count("</script>") == 2 and page.count("</style>") == 2  # the data and the code; nothing a token closed
    assert "{{" not in page.replace("{{JS}}", "")  # every placeholder filled, a token's "{{JS}}" left as data
    data = page_data(page, "gpt2lab-lens")
    assert data["tokens"] == HOSTILE_TOKENS and data["title"] == "<b>model</b>: Logit lens"
    assert data["visible"][1] == "\u2423&\u2423" and data["visible"][3] == "\\u2028"
    # every cell's top-k comes back from the compact encoding
    k, T = data["k"], data["T"]
    assert [data["words"][data["top"][(2 * T + 4) * k + r]] for r in range(k)] == [views.visible(t) for t in hostile_lens().top_tokens[2][4]]


def test_patching_page_escapes_every_token_and_marks_the_differences(tmp_path):
    paths = views.save_patching(hostile_patching(), tmp_path)
    assert {p.name for p in paths.values()} == {"patching.png", "patching.html"}
    page = paths["html"].read_text(encoding="utf-8")
    assert_no_markup_from_tokens(page)
    assert page.count("</script>") == 2
    data = page_data(page, "gpt2lab-patching")
    assert data["differs"] == [False, True, False, False, False, False]
    assert data["clean_metric"] == 2.0 and data["corrupt_metric"] == -1.0
    assert data["normalised"][0][0] == pytest.approx(0.0) and data["normalised"][1][-1] == pytest.approx(1.0)
    assert HOSTILE in data["metric"]


def test_fragments_are_self_contained_with_unique_ids_and_a_png_inside():
    lens = hostile_lens()
    one, two = lens._repr_html_(), lens._repr_html_()
    ids = [re.search(r'<div class="g2l-interp" id="([^"]+)"', f).group(1) for f in (one, two)]
    assert ids[0] != ids[1]
    for frag in (one, two, hostile_patching()._repr_html_()):
        assert frag.startswith("<style>") and "GPT2LabInterp.mount(" in frag
        assert frag.count('<img alt="') == 1 and 'src="data:image/png;base64,' in frag  # shown where scripts do not run
        assert_no_markup_from_tokens(frag)
    assert 'id="cell-1"' in views.lens_fragment(lens, element_id="cell-1")
    with pytest.raises(InputError):
        views.lens_fragment(lens, element_id='x" onload="alert(1)')


def test_attribution_html_is_an_image_and_an_escaped_table():
    attr = Attribution({"embed": 0.5, "h.0.attn.h1": -0.25, "ln_f.bias": 0.1})
    attr.total, attr.target, attr.other, attr.n_layer, attr.n_head = 0.35, 7, 9, 1, 2
    attr["h.0.attn.h0"] = 0.0
    attr.labels = {"answer": HOSTILE, "wrong": "</script>", "text": HOSTILE}
    frag = attr._repr_html_()
    assert frag.count("<img ") == 1 and "data:image/png;base64," in frag
    assert "<script" not in frag and "__pwned" in frag
    assert frag.count("<tr>") == 1 + 4


def test_page_script_never_parses_text_as_html():
    from importlib import resources

    js = resources.files("gpt2lab.views").joinpath("interp.js").read_text()
    js = re.sub(r"/\*.*?\*/", "", js, flags=re.S)
    assert "textContent" in js
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function", "fetch(", "XMLHttpRequest"):
        assert sink not in js


# ---------------------------------------------------------------------------------------------
# terminal tables
# ---------------------------------------------------------------------------------------------


def test_lens_text_shows_the_last_positions_and_every_layer(lens):
    text = views.lens_text(lens, positions=3)
    lines = text.splitlines()
    assert lines[0].split()[0] == "11" and "\u2423drink" in lines[0] and "\u2423to" in lines[0]
    assert [line.split()[0] for line in lines[2:5]] == ["2", "1", "embed"]  # output ("2 (out)") on top
    assert lines[2].startswith("2 (out)")
    assert views.visible(lens.top_tokens[0][13][0])[:7] in lines[4]


def test_small_probabilities_keep_their_order_of_magnitude():
    lens = hostile_lens()
    lens.top_probs[..., 0] = 0.0003
    text = views.lens_text(lens)
    assert "3e-04" in text and " 0.00" not in text
    lens.top_probs[0, 0, 1] = 2.5e-7
    assert views.lens_data(lens)["probs"][:2] == [0.0003, 2.5e-7]  # the page keeps significant digits, not decimals
    assert views._probability(0.42) == "0.42" and views._probability(0.004) == "4e-03"


def test_patching_text_lists_the_entries_that_restore_most(patching):
    text = views.patching_text(patching, n=4)
    lines = text.splitlines()
    assert lines[0] == f"metric logit(' Mary') - logit(' John'): clean {patching.clean_metric:.4f}, corrupt {patching.corrupt_metric:.4f}"
    entries = [line for line in lines if line.startswith("  layer")]
    assert len(entries) == 4
    values = [float(re.search(r"normalised\s+(-?[\d.]+)", e).group(1)) for e in entries]
    assert values == sorted(values, reverse=True) and values[0] == pytest.approx(float(patching.normalised.max()), abs=1e-3)
    assert any("(corrupt \u2423Mary)" in e for e in entries)


def test_attribution_text_adds_up(attribution):
    text = views.attribution_text(attribution, n=5)
    assert f"total {attribution.total:+.4f}" in text
    assert len([line for line in text.splitlines() if line.startswith("  ")]) == 5
    assert text.splitlines()[0] == "direct logit attribution of logit(' Mary') - logit(' John') at the last position"


# ---------------------------------------------------------------------------------------------
# commands
# ---------------------------------------------------------------------------------------------


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_lens_prints_the_table_and_writes_png_and_page(checkpoint, gpt2_vocab_path, tmp_path, capsys):
    out = tmp_path / "lens"
    code, printed, _ = run_cli(capsys, "lens", "--model", str(checkpoint), "--tokenizer", str(gpt2_vocab_path), "--text", CLEAN,
                               "--top-k", "3", "--positions", "2", "--device", "cpu", "--out", str(out))
    assert code == 0
    lines = printed.splitlines()
    assert lines[0].split()[:2] == ["12", "\u2423drink"] and lines[2].startswith("2 (out)")
    for name in ("lens.png", "lens.html"):
        assert str(out / name) in printed
    data = page_data((out / "lens.html").read_text(encoding="utf-8"), "gpt2lab-lens")
    assert data["k"] == 3 and data["T"] == 14 and data["rows"] == 3 and data["model"] == str(checkpoint)
    assert read_png(out / "lens.png").shape[:2] == views.map_size(3, 14, annotate=True)[::-1]


def test_cli_patch_prints_metrics_and_top_entries_and_writes_png_and_page(checkpoint, gpt2_vocab_path, tmp_path, capsys):
    out = tmp_path / "patch"
    code, printed, _ = run_cli(capsys, "patch", "--model", str(checkpoint), "--tokenizer", str(gpt2_vocab_path), "--clean", CLEAN,
                               "--corrupt", CORRUPT, "--answer", " Mary", "--wrong", " John", "--point", "attn.z", "--top", "3",
                               "--out", str(out))
    assert code == 0
    assert printed.startswith("metric logit(' Mary') - logit(' John'): clean ")
    assert "patching attn.z by head: 2 layers x 4 heads" in printed
    assert len(re.findall(r"^  layer  \d, head \d", printed, re.M)) == 3
    data = page_data((out / "patching.html").read_text(encoding="utf-8"), "gpt2lab-patching")
    assert data["by"] == "head" and data["point"] == "attn.z" and data["rows"] == 2 and data["cols"] == 4
    assert data["estimated"] is False
    assert (out / "patching.png").is_file() and str(out / "patching.png") in printed


def test_cli_patch_by_gradient_says_it_estimates(checkpoint, gpt2_vocab_path, tmp_path, capsys):
    code, printed, _ = run_cli(capsys, "patch", "--model", str(checkpoint), "--tokenizer", str(gpt2_vocab_path), "--clean", CLEAN,
                               "--corrupt", CORRUPT, "--answer", " Mary", "--wrong", " John", "--method", "gradient", "--top", "3",
                               "--out", str(tmp_path / "g"))
    assert code == 0
    assert "attribution patching (gradient estimate) resid_pre by position: 2 layers x 14 positions" in printed
    checked = printed.split("the 3 largest estimates, run exactly (patch_cells):\n")[1].split("\n\n")[0].splitlines()
    assert len(checked) == 3 and all(re.match(r"  layer  \d, position +\d+ .* estimate +-?\d+\.\d{4}   exact +-?\d+\.\d{4}$", line)
                                          for line in checked), checked
    data = page_data((tmp_path / "g" / "patching.html").read_text(encoding="utf-8"), "gpt2lab-patching")
    assert data["title"].endswith("Attribution patching (gradient estimate): resid_pre by position") and data["estimated"] is True


def test_cli_patch_shows_a_progress_bar_on_a_long_sweep(checkpoint, gpt2_vocab_path, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(interp.intervene, "TOKENS_PER_BATCH", 14)  # one patched run per forward: 2 layers x 14 positions
    code, _, err = run_cli(capsys, "patch", "--model", str(checkpoint), "--tokenizer", str(gpt2_vocab_path), "--clean", CLEAN,
                           "--corrupt", CORRUPT, "--answer", " Mary", "--wrong", " John", "--out", str(tmp_path / "p"))
    assert code == 0
    assert "patching resid_pre by position" in err and "0/28 [" in err  # the bar counts the 28 patched runs


def test_cli_attribute_prints_components_and_writes_the_chart(checkpoint, gpt2_vocab_path, tmp_path, capsys):
    out = tmp_path / "attr"
    code, printed, _ = run_cli(capsys, "attribute", "--model", str(checkpoint), "--tokenizer", str(gpt2_vocab_path), "--text", CLEAN,
                               "--answer", " Mary", "--top", "6", "--out", str(out))
    assert code == 0
    assert printed.startswith("direct logit attribution of logit(' Mary') at the last position")
    assert len([line for line in printed.splitlines() if re.match(r"  (embed|h\.|ln_f)", line)]) == 6
    assert (out / "attribution.png").is_file()
    assert read_png(out / "attribution.png").shape[:2] == (500, 1450)  # 6 bars, and the 2 x 4 head map beside them


@pytest.mark.parametrize(
    "command, extra, message",
    [
        ("patch", ["--corrupt", "When Mary went"], "the clean text is 14 tokens and the corrupt one 3"),
        ("patch", ["--answer", " Mxyzptlkqq"], "give one token"),
        ("patch", ["--point", "attn.nowhere"], "cannot patch at 'attn.nowhere'"),
        ("patch", ["--point", "resid_pre", "--by", "head"], "'resid_pre' has no heads"),
        ("patch", ["--top", "0"], "--top must be at least 1"),
        ("lens", ["--top-k", "0"], "--top-k must be at least 1"),
        ("lens", ["--text", ""], "need at least 1 token"),
        ("lens", ["--text", " word" * 200], "more than the model's context of 128"),
        ("attribute", ["--wrong", " two words"], "the wrong ' two words' is 2 tokens"),
    ],
)
def test_cli_mistakes_are_one_line_and_exit_2(checkpoint, gpt2_vocab_path, tmp_path, capsys, command, extra, message):
    base = {
        "patch": ["--clean", CLEAN, "--corrupt", CORRUPT, "--answer", " Mary", "--wrong", " John"],
        "lens": ["--text", CLEAN],
        "attribute": ["--text", CLEAN, "--answer", " Mary"],
    }[command]
    args = dict(zip(base[::2], base[1::2]))
    args.update(dict(zip(extra[::2], extra[1::2])))
    out = tmp_path / "o"
    code, _, err = run_cli(capsys, command, "--model", str(checkpoint), "--tokenizer", str(gpt2_vocab_path), "--out", str(out),
                           *[x for kv in args.items() for x in kv])
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not out.exists()  # nothing written for a mistake


def test_cli_steer_prints_the_steering_and_both_continuations(model, checkpoint, gpt2_vocab_path, tokenizer, capsys):
    common = ["--model", str(checkpoint), "--tokenizer", str(gpt2_vocab_path), "--prompt", "I hate you because", "--plus", " Love",
              "--minus", " Hate", "--layer", "1", "--coeff", "6", "--max-new-tokens", "8", "--device", "cpu"]
    code, printed, _ = run_cli(capsys, "steer", *common, "--num-samples", "2", "--seed", "4", "--top", "3")
    assert code == 0
    steering = interp.steering(model, tokenizer, " Love", " Hate", layer=1, coeff=6)
    expected = interp.steer_text(model, tokenizer, steering, "I hate you because", 8, samples=2, seed=4, top=3)
    assert printed == views.steering_text(expected)
    lines = printed.splitlines()
    assert lines[0] == "steering: +6 x (' Love' - ' Hate') at h.1.resid_pre, added to the prompt's first 2 positions (<|endoftext|> first)"
    assert len(re.findall(r"^  \S+ +\d+\.\d\d% -> +\d+\.\d\d%$", printed, re.M)) == 3
    assert [line[:11] for line in lines if line.startswith(("unsteered", "steered"))] == ["unsteered: ", "steered:   "] * 2
    assert "sample 2:" in lines and all(line.startswith(("unsteered: I hate you because", "steered:   I hate you because", "  ", "sample",
                                                         "steering", "next token", " " * 11)) or not line for line in lines)
    for extra, message in [(["--layer", "2"], "layer 2 does not exist: this model has layers 0..1"),
                           (["--num-samples", "0"], "--num-samples must be at least 1"),
                           (["--temperature", "-1"], "temperature"),
                           (["--plus", " Love is all you need and more"], "steer a prompt of at least 8 tokens")]:
        code, _, err = run_cli(capsys, "steer", *common, *extra)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, (extra, err)


# ---------------------------------------------------------------------------------------------
# answer check: the report and gpt2lab answer
# ---------------------------------------------------------------------------------------------


def greedy_answer(model, tokenizer, prompt: str, n: int) -> str:
    """The n tokens greedy decoding writes after <|endoftext|> + prompt, as text."""
    ids = torch.tensor([[50256, *tokenizer.encode(prompt)]])
    return tokenizer.decode(model.generate(ids, n, temperature=0.0)[0, ids.size(1):].tolist())


def test_answer_report_of_what_the_model_writes_and_of_something_else(model, tokenizer):
    written = greedy_answer(model, tokenizer, CLEAN, 2)
    check = interp.check_answer(model, tokenizer, CLEAN, written, top_k=3, model_name="tiny")
    assert check.ranks == [0, 0] and check.layer_ranks[-1].tolist() == [0, 0]
    text = check.to_text()
    assert text.startswith("model: tiny\nprompt (15 tokens): <|endoftext|>|When|\u2423Mary|")
    rows = re.findall(r"^ +(\d+)  (\S+) +(-?\d+\.\d\d) +(\d+\.\d\d)%(  <- the answer)?$", text, re.M)
    assert len(rows) == 6 and [r[0] for r in rows] == ["0", "1", "2"] * 2
    assert [bool(r[4]) for r in rows] == [True, False, False] * 2  # the answer is the top row, marked
    assert float(rows[0][3]) == pytest.approx(100 * check.probs[0], abs=0.006) and float(rows[0][3]) > float(rows[1][3])
    assert text.count("its rank after each block (logit lens): embed ") == 2 and ", 2 (out) 0\n" in text
    assert text.endswith("Every answer token is the model's top prediction: greedy decoding writes this answer.\n")
    assert repr(check) == text.rstrip("\n")  # what a notebook shows
    # a token it does not write first: its rank, and no mark in a top 3 it is not in
    other = interp.check_answer(model, tokenizer, CLEAN, " cat", top_k=3)
    assert other.ranks[0] > 2 and "<- the answer" not in other.to_text() and f"rank {other.ranks[0]:,}, " in other.to_text()
    assert other.to_text().endswith("0 of 1 answer tokens are the model's top prediction: greedy decoding writes something else.\n")
    # a word without its space after a prompt that ends in a word, not what the model writes: the hint
    assert "(The answer starts without a space." in interp.check_answer(model, tokenizer, CLEAN, "zebra").to_text()
    assert "(The answer starts without a space." not in other.to_text()


def test_cli_answer_prints_the_report_and_refuses_bad_options(checkpoint, gpt2_vocab_path, model, tokenizer, capsys):
    written = greedy_answer(model, tokenizer, CLEAN, 1)
    code, printed, _ = run_cli(capsys, "answer", "--model", str(checkpoint), "--tokenizer", str(gpt2_vocab_path), "--prompt", CLEAN,
                               "--answer", written, "--top-k", "4")
    assert code == 0 and printed.startswith(f"model: {checkpoint}\nprompt (15 tokens): <|endoftext|>|When|")
    assert len(re.findall(r"^ +\d  \S+ +-?\d+\.\d\d", printed, re.M)) == 4 and "  <- the answer" in printed
    code, printed, _ = run_cli(capsys, "answer", "--model", str(checkpoint), "--tokenizer", str(gpt2_vocab_path), "--prompt", CLEAN,
                               "--answer", written, "--no-eot")
    assert code == 0 and "prompt (14 tokens): When|" in printed
    for bad, said in ((["--top-k", "0"], "--top-k must be at least 1"), (["--answer", ""], "--answer is empty")):
        argv = ["--answer", written, *bad] if bad[0] != "--answer" else bad
        code, _, err = run_cli(capsys, "answer", "--model", str(checkpoint), "--tokenizer", str(gpt2_vocab_path), "--prompt", CLEAN, *argv)
        assert code == 2 and said in err and err.count("\n") == 1
