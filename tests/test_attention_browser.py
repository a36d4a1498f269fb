"""The attention page in a real headless browser: Debian's chromium + chromedriver, driven by selenium.

The set-up installs both with apt-get when they are missing (CI machines start bare), then opens the
pages from file:// with networking features off, as a user opening a saved page would.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import HOSTILE, errors_in, open_page  # noqa: E402  (browser fixtures live in conftest)
from gpt2lab import GPT2, GPT2Config
from gpt2lab import attention as attention_fn
from gpt2lab.views import fragment, write_page


def canvas_url(driver, selector: str = "canvas.g2l-matrix") -> str:
    return driver.execute_script(f"return document.querySelector('{selector}').toDataURL('image/png')")


def decode_png(data: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


# ---------------------------------------------------------------------------------------------
# pages
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = GPT2(GPT2Config(vocab_size=50257, block_size=1024, n_layer=3, n_head=4, n_embd=32)).eval()
    with torch.no_grad():  # sharpen the queries/keys so heads differ visibly from one another
        for block in m.transformer.h:
            block.attn.c_attn.weight.mul_(25.0)
    return m


@pytest.fixture(scope="module")
def pages(model, tokenizer, tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("pages")
    text = f"Hello world, this is a test.\nA page shows {HOSTILE} as text & nothing runs. The end."
    att = attention_fn(model, tokenizer, text, model_name="test <b>model</b>")
    g = torch.Generator().manual_seed(0)
    long_att = attention_fn(model, None, torch.randint(0, 50000, (1000,), generator=g), induction=False)
    two = [fragment(att, element_id="first", layer=0, head=0), fragment(att, element_id="second", layer=2, head=None)]
    embed = out / "embed.html"
    embed.write_text("<!DOCTYPE html><html><head><meta charset='utf-8'><title>report</title></head><body><h1>Report</h1>"
                     + "<section>" + two[0].fragment_html + "</section><section>" + two[1].fragment_html + "</section></body></html>",
                     encoding="utf-8")
    return {
        "main": write_page(att, out / "attention.html", layer=1, head=0),
        "long": write_page(long_att, out / "long.html"),
        "embed": embed,
        "n_tokens": len(att),
    }


# ---------------------------------------------------------------------------------------------
# tests
# ---------------------------------------------------------------------------------------------


def test_page_loads_offline_without_console_errors(driver, pages):
    log = open_page(driver, pages["main"])
    assert errors_in(log) == []
    assert driver.title.startswith("Attention")
    assert len(driver.find_elements("css selector", ".g2l-tok")) == pages["n_tokens"]
    # the model view has every head and the table a row per head
    assert len(driver.find_elements("css selector", ".g2l-thumb")) == 3 * 4
    assert len(driver.find_elements("css selector", "table.g2l-stats tbody tr")) == 3 * 4


def test_hostile_prompt_shows_as_text_and_never_runs(driver, pages):
    open_page(driver, pages["main"])
    assert driver.execute_script("return window.__pwned") is None
    assert driver.find_elements("css selector", ".g2l-attn img") == []
    assert driver.find_elements("css selector", ".g2l-attn script") == []
    shown = driver.execute_script("return document.querySelector('.g2l-text').textContent")
    assert "<script>window.__pwned=1</script><img\u2423src=x\u2423onerror=" in shown
    assert "\u21b5" in shown  # the newline is visible
    heading = driver.execute_script("return document.querySelector('.g2l-attn h2').textContent")
    assert "<b>model</b>" in heading  # the model name too is text, not markup
    assert errors_in(driver.get_log("browser")) == []


def test_selecting_layer_and_head_changes_the_drawing(driver, pages):
    from selenium.webdriver.support.ui import Select

    open_page(driver, pages["main"])
    before = canvas_url(driver)
    Select(driver.find_element("css selector", "select.g2l-head")).select_by_value("3")
    after_head = canvas_url(driver)
    assert after_head != before
    Select(driver.find_element("css selector", "select.g2l-layer")).select_by_value("2")
    after_layer = canvas_url(driver)
    assert after_layer != after_head
    Select(driver.find_element("css selector", "select.g2l-head")).select_by_value("all")
    assert canvas_url(driver) != after_layer
    legend = driver.find_element("css selector", ".g2l-legend").text
    assert "heads:" in legend
    # the model view and the table select too
    driver.find_element("css selector", '.g2l-thumb[data-layer="0"][data-head="1"]').click()
    chosen = "return [document.querySelector('select.g2l-layer').value, document.querySelector('select.g2l-head').value]"
    assert driver.execute_script(chosen) == ["0", "1"]
    assert driver.find_element("css selector", ".g2l-thumb.g2l-selected").get_attribute("data-head") == "1"
    driver.find_element("css selector", 'table.g2l-stats tr[data-layer="2"][data-head="3"]').click()
    assert driver.execute_script("return document.querySelector('select.g2l-head').value") == "3"
    assert "g2l-selected" in driver.find_element("css selector", 'table.g2l-stats tr[data-layer="2"][data-head="3"]').get_attribute("class")
    assert errors_in(driver.get_log("browser")) == []


def overlay_alpha_at_row(driver, i: int, columns: int | None = None) -> int:
    """Largest alpha along the middle of row i of the highlight overlay (over the first ``columns`` key columns)."""
    return driver.execute_script(
        """const c = document.querySelector('canvas.g2l-overlay'), api = document.querySelector('.g2l-attn').gpt2labAttention;
           const T = api.data.T, side = c.width, cell = Math.max(1, Math.min(32, Math.floor(640 / T))), margin = side - T * cell;
           const y = Math.floor(margin + (arguments[0] + 0.5) * cell);
           const row = c.getContext('2d').getImageData(margin, y, (arguments[1] || T) * cell, 1).data;
           let m = 0; for (let k = 3; k < row.length; k += 4) m = Math.max(m, row[k]); return m;""", i, columns)


def test_hovering_a_token_highlights_its_row(driver, pages):
    from selenium.webdriver.common.action_chains import ActionChains

    open_page(driver, pages["main"])
    i = 9
    assert overlay_alpha_at_row(driver, i) == 0
    token = driver.find_elements("css selector", ".g2l-tok")[i]
    ActionChains(driver).move_to_element(token).perform()
    assert "g2l-focus" in token.get_attribute("class")
    assert overlay_alpha_at_row(driver, i) > 0
    # only the focused row is banded (its column is banded too, so look left of it)...
    assert overlay_alpha_at_row(driver, i, columns=i) > 0 and overlay_alpha_at_row(driver, i - 3, columns=i) == 0
    info = driver.find_element("css selector", ".g2l-info").text
    assert info.startswith(f"token {i} ") and "attends to:" in info and "attended by:" in info
    # ...and the tokens it attends to are coloured: exactly those with weight in its row
    weights = driver.execute_script("return Array.from(document.querySelector('.g2l-attn').gpt2labAttention.rowOf(arguments[0]))", i)
    coloured = driver.execute_script(
        "return [...document.querySelectorAll('.g2l-tok')].map(s => s.style.background !== '')")
    assert coloured[: i + 1] == [w > 0 for w in weights[: i + 1]] and not any(coloured[i + 1 :])
    # clicking pins: moving away keeps the focus
    token.click()
    ActionChains(driver).move_to_element(driver.find_elements("css selector", ".g2l-tok")[2]).perform()
    assert driver.execute_script("return document.querySelector('.g2l-attn').gpt2labAttention.state.focus") == i
    assert errors_in(driver.get_log("browser")) == []


def test_screenshot_shows_a_drawing_and_export_gives_a_png(driver, pages, tmp_path):
    open_page(driver, pages["main"])
    canvas = driver.find_element("css selector", "canvas.g2l-matrix")
    driver.execute_script("arguments[0].scrollIntoView()", canvas)
    shot = decode_png(canvas.screenshot_as_png)
    assert shot.shape[0] > 100 and shot.shape[1] > 100
    colours = np.unique(shot.reshape(-1, 3), axis=0)
    assert len(colours) > 30, "the attention matrix looks empty"
    assert (shot.min(axis=-1) < 128).mean() > 0.005  # some dark cells and labels, not a blank canvas
    (tmp_path / "page.png").write_bytes(driver.get_screenshot_as_png())
    assert len(np.unique(decode_png((tmp_path / "page.png").read_bytes()).reshape(-1, 3), axis=0)) > 50
    # the export button: a PNG of the matrix (plus a title line)
    driver.find_element("css selector", "button.g2l-export").click()
    url = driver.execute_script("return document.querySelector('.g2l-attn').gpt2labAttention.lastExport")
    assert url.startswith("data:image/png;base64,")
    exported = decode_png(base64.b64decode(url.split(",", 1)[1]))
    side = driver.execute_script("return document.querySelector('canvas.g2l-matrix').width")
    assert exported.shape == (side + 30 + 20, max(side, 420) + 20, 3)
    driver.find_element("css selector", "button.g2l-export-grid").click()
    grid = driver.execute_script("return document.querySelector('.g2l-attn').gpt2labAttention.lastExport")
    assert decode_png(base64.b64decode(grid.split(",", 1)[1])).shape == (30 + 3 * 68, 30 + 4 * 68, 3)
    # and the browser saved both as files
    from selenium.webdriver.support.ui import WebDriverWait

    names = {"attention-L1-h0.png", "attention-all-heads.png"}
    WebDriverWait(driver, 20).until(lambda d: names <= {p.name for p in d.downloads.glob("*.png")})
    assert decode_png((driver.downloads / "attention-L1-h0.png").read_bytes()).shape == exported.shape
    assert errors_in(driver.get_log("browser")) == []


def test_thousand_tokens_draw_and_respond(driver, pages):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.support.ui import Select

    log = open_page(driver, pages["long"])
    assert errors_in(log) == []
    data = driver.execute_script("const d = document.querySelector('.g2l-attn').gpt2labAttention.data; return [d.T, d.top_k, d.full_rows]")
    assert data == [1000, 8, False]
    assert driver.execute_script("return document.querySelector('canvas.g2l-matrix').width") == 1000  # one pixel per token
    before = canvas_url(driver)
    Select(driver.find_element("css selector", "select.g2l-head")).select_by_value("all")
    assert canvas_url(driver) != before
    token = driver.find_elements("css selector", ".g2l-tok")[700]
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", token)
    ActionChains(driver).move_to_element(token).perform()
    assert driver.find_element("css selector", ".g2l-info").text.startswith("token 700 ")
    assert overlay_alpha_at_row(driver, 700) > 0
    assert errors_in(driver.get_log("browser")) == []


def test_two_embedded_views_work_side_by_side(driver, pages):
    from selenium.webdriver.support.ui import Select

    log = open_page(driver, pages["embed"])
    assert errors_in(log) == []
    roots = driver.find_elements("css selector", ".g2l-attn")
    assert [r.get_attribute("id") for r in roots] == ["first", "second"]
    assert driver.title == "report"  # an embedded view leaves its host page's title alone
    heads = driver.execute_script("return [...document.querySelectorAll('select.g2l-head')].map(s => s.value)")
    assert heads == ["0", "mean"]
    second_before = canvas_url(driver, "#second canvas.g2l-matrix")
    Select(driver.find_element("css selector", "#first select.g2l-head")).select_by_value("2")
    assert canvas_url(driver, "#second canvas.g2l-matrix") == second_before  # views are independent
    assert driver.execute_script("return window.__pwned") is None
