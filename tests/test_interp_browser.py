"""The lens and patching pages, and the notebook fragments, in a real headless browser (the ``driver``
fixture in conftest: Debian's chromium opened on file:// with networking features off)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import HOSTILE, errors_in, open_page  # noqa: E402  (browser fixtures live in conftest)
from gpt2lab import interp
from gpt2lab.views import interp as views
from test_interp_views import CLEAN, CORRUPT, hostile_lens, hostile_patching, sharp_model  # noqa: E402  (the file tests' inputs)


@pytest.fixture(scope="module")
def model():
    return sharp_model()


@pytest.fixture(scope="module")
def pages(model, tokenizer, tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("interp_pages")
    text = f"The page shows {HOSTILE} as text & nothing runs."
    lens = interp.lens(model, tokenizer, text, top_k=4, model_name="<b>tiny</b>")
    patching = interp.patching(model, tokenizer, CLEAN, CORRUPT, " Mary", " John", model_name="tiny")
    heads = interp.patching(model, tokenizer, CLEAN, CORRUPT, " Mary", " John", point="attn.z")
    estimated = interp.patching(model, tokenizer, CLEAN, CORRUPT, " Mary", " John", method="gradient")
    notebook = out / "notebook.html"  # as a notebook would show three results, one after another
    notebook.write_text("<!DOCTYPE html><html><head><meta charset='utf-8'><title>notebook</title></head><body>"
                        + "".join(f"<div class='output'>{frag}</div>" for frag in (
                            hostile_lens()._repr_html_(), patching._repr_html_(), lens._repr_html_(),
                            interp.attribution(model, tokenizer, CLEAN, " Mary", " John")._repr_html_(), hostile_steering()._repr_html_()))
                        + "</body></html>", encoding="utf-8")
    return {
        "lens": views.save_lens(lens, out / "lens")["html"],
        "hostile_lens": views.save_lens(hostile_lens(), out / "hostile_lens")["html"],
        "patching": views.save_patching(patching, out / "patching")["html"],
        "heads": views.save_patching(heads, out / "heads")["html"],
        "estimated": views.save_patching(estimated, out / "estimated")["html"],
        "hostile_patching": views.save_patching(hostile_patching(), out / "hostile_patching")["html"],
        "notebook": notebook,
    }


def hostile_steering() -> interp.SteeredText:
    """A steering result whose prompt, continuations and tokens are all markup."""
    steering = interp.Steering(vector=torch.zeros(2, 4), layer=1, coeff=5.0, plus="<b>model", minus="</table>", eot=50256)
    return interp.SteeredText(steering, HOSTILE, plain=['</td><img src=y onerror="window.__pwned=3">'], steered=[" & {{JS}}"],
                              raised=[(HOSTILE, 0.01, 0.5)])


def open_view(driver, path: Path) -> list[dict]:
    """Load ``path``, wait until its lens / patching views have mounted; return the browser log of the load."""
    log = open_page(driver, path, views=".g2l-interp")
    assert driver.find_elements("css selector", ".g2l-interp"), f"{path.name} has no view"
    return log


def data_of(driver, index: int = 0) -> dict:
    return driver.execute_script("return document.querySelectorAll('.g2l-interp')[arguments[0]].gpt2labInterp.data", index)


def hover(driver, element) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", element)
    ActionChains(driver).move_to_element(element).perform()


def cell(driver, r: int, c: int, view: int = 0):
    return driver.execute_script("const [v, r, c] = arguments; return document.querySelectorAll('.g2l-interp')[v]"
                                 ".querySelector(`td.g2l-cell[data-r='${r}'][data-c='${c}']`)", view, r, c)


def rgb(css: str) -> tuple[int, ...]:
    return tuple(int(v) for v in css[css.index("(") + 1 : css.index(")")].split(",")[:3])


def no_network_requests(driver) -> bool:
    # every resource the page asked for after its own document: nothing, for a page that works offline
    return driver.execute_script("return performance.getEntriesByType('resource').length") == 0


# ---------------------------------------------------------------------------------------------
# the lens page
# ---------------------------------------------------------------------------------------------


def test_lens_page_loads_offline_without_errors(driver, pages):
    log = open_view(driver, pages["lens"])
    assert errors_in(log) == []
    data = data_of(driver)
    assert driver.title == "<b>tiny</b>: Logit lens"
    assert len(driver.find_elements("css selector", "td.g2l-cell")) == data["rows"] * data["T"] == 3 * data["T"]
    assert len(driver.find_elements("css selector", ".g2l-text .g2l-tok")) == data["T"]
    assert no_network_requests(driver)


def test_hovering_a_lens_cell_shows_its_top_tokens_and_clicking_pins_them(driver, pages):
    open_view(driver, pages["lens"])
    data = data_of(driver)
    info = driver.find_element("css selector", ".g2l-info")
    assert info.text == "Hover over a cell."
    T, k = data["T"], data["k"]
    r, c = 1, 5
    hover(driver, cell(driver, r, c))
    shown = driver.execute_script("return document.querySelector('.g2l-info').textContent")
    assert shown.startswith(f"position {c} {data['visible'][c]}") and f"after {r} blocks (h.{r}.resid_pre)" in shown
    rows = driver.find_elements("css selector", "table.g2l-topk tr")
    assert len(rows) == k
    for rank, row in enumerate(rows):
        q = (r * T + c) * k + rank
        cells = row.find_elements("css selector", "td")
        assert cells[1].get_attribute("textContent") == data["words"][data["top"][q]]
        percent = cells[2].get_attribute("textContent")
        assert percent.endswith("%") and float(percent[:-1]) == pytest.approx(100 * data["probs"][q], rel=0.1, abs=0.05)
    # the position is marked in the text above and in the column labels
    assert "g2l-focus" in driver.find_elements("css selector", ".g2l-text .g2l-tok")[c].get_attribute("class")
    assert len(driver.find_elements("css selector", "th.g2l-col.g2l-focus")) == 2  # next token (top) and input (bottom)
    # click pins: hovering elsewhere keeps this cell's details; a second click unpins
    cell(driver, r, c).click()
    hover(driver, cell(driver, 0, 0))
    assert driver.execute_script("return document.querySelector('.g2l-interp').gpt2labInterp.focused") == [r, c]
    cell(driver, r, c).click()
    hover(driver, cell(driver, 0, 0))
    assert driver.execute_script("return document.querySelector('.g2l-interp').gpt2labInterp.focused") == [0, 0]
    assert "the embeddings" in driver.execute_script("return document.querySelector('.g2l-info').textContent")
    assert errors_in(driver.get_log("browser")) == []


def test_lens_cells_are_darker_where_the_top_token_is_likelier(driver, pages):
    open_view(driver, pages["lens"])
    data = data_of(driver)
    T, k = data["T"], data["k"]
    cells = [(data["probs"][(r * T + c) * k], sum(rgb(cell(driver, r, c).value_of_css_property("background-color"))))
             for r in range(data["rows"]) for c in range(T)]
    cells.sort()
    assert cells[0][1] > cells[-1][1] + 100
    assert all(a >= b for (_, a), (_, b) in zip(cells, cells[1:]))


def test_hostile_tokens_show_as_text_and_never_run(driver, pages):
    for name in ("lens", "hostile_lens", "hostile_patching"):
        open_view(driver, pages[name])
        assert driver.execute_script("return window.__pwned") is None
        assert driver.find_elements("css selector", ".g2l-interp img") == []
        assert driver.find_elements("css selector", ".g2l-interp script") == []
        text = driver.execute_script("return document.querySelector('.g2l-text').textContent")
        assert "<script>window.__pwned=1</script>" in text
        assert errors_in(driver.get_log("browser")) == []
    open_view(driver, pages["hostile_lens"])
    heading = driver.execute_script("return document.querySelector('.g2l-interp h2').textContent")
    assert heading == "<b>model</b>: Logit lens"
    labels = driver.execute_script("return [...document.querySelectorAll('th.g2l-col')].map(e => e.title)")
    assert views.visible(HOSTILE) in labels
    # predicted tokens too: the hovered cell's list holds the markup as text
    hover(driver, cell(driver, 0, 0))
    tops = driver.execute_script("return [...document.querySelectorAll('table.g2l-topk td:nth-child(2)')].map(e => e.textContent)")
    assert tops[0] == views.visible(HOSTILE)
    assert driver.execute_script("return window.__pwned") is None


# ---------------------------------------------------------------------------------------------
# the patching page
# ---------------------------------------------------------------------------------------------


def test_patching_page_highlights_the_differing_tokens_in_both_texts(driver, pages):
    log = open_view(driver, pages["patching"])
    assert errors_in(log) == []
    assert no_network_requests(driver)
    data = data_of(driver)
    lines = driver.find_elements("css selector", ".g2l-text")
    assert [line.find_element("css selector", ".g2l-text-name").text for line in lines] == ["clean", "corrupt"]
    for line, tokens in zip(lines, (data["clean_visible"], data["corrupt_visible"])):
        chips = line.find_elements("css selector", ".g2l-tok")
        assert [chip.get_attribute("textContent") for chip in chips] == tokens
        assert ["g2l-diff" in chip.get_attribute("class") for chip in chips] == data["differs"]
    assert sum(data["differs"]) == 1
    assert len(driver.find_elements("css selector", "th.g2l-col.g2l-diff")) == 1
    assert len(driver.find_elements("css selector", "td.g2l-cell")) == data["rows"] * data["cols"] == 2 * 14


def test_hovering_a_patching_cell_reads_out_its_values(driver, pages):
    open_view(driver, pages["patching"])
    data = data_of(driver)
    c = data["differs"].index(True)
    hover(driver, cell(driver, 0, c))
    info = driver.execute_script("return document.querySelector('.g2l-info').textContent")
    assert info.startswith(f"layer 0, position {c} {data['clean_visible'][c]} (corrupt: {data['corrupt_visible'][c]})")
    assert f"metric {data['scores'][0][c]:.4f}" in info and "normalised 1.000" in info
    # the position lights up in both texts
    focused = driver.execute_script("return [...document.querySelectorAll('.g2l-text .g2l-tok.g2l-focus')].map(e => e.getAttribute('data-i'))")
    assert focused == [str(c), str(c)]
    # restoring the one differing position at layer 0 restores the clean run: a blue cell; an untouched position: white
    r, g, b = rgb(cell(driver, 0, c).value_of_css_property("background-color"))
    assert b > r + 60
    assert min(rgb(cell(driver, 1, 0).value_of_css_property("background-color"))) > 240
    assert cell(driver, 0, c).text == "1.00"
    assert errors_in(driver.get_log("browser")) == []


def test_patching_by_head_reads_out_the_head(driver, pages):
    open_view(driver, pages["heads"])
    data = data_of(driver)
    assert data["by"] == "head" and data["cols"] == 4
    labels = driver.execute_script("return [...document.querySelectorAll('th.g2l-col')].map(e => e.textContent)")
    assert labels == ["h0", "h1", "h2", "h3"]
    hover(driver, cell(driver, 1, 2))
    info = driver.execute_script("return document.querySelector('.g2l-info').textContent")
    assert info.startswith("layer 1, head 2  \u00b7  h.1.attn.z restored")
    assert f"normalised {data['normalised'][1][2]:.3f}" in info
    assert errors_in(driver.get_log("browser")) == []


def test_a_gradient_estimate_says_so_and_an_exact_map_does_not(driver, pages):
    for name, estimated in (("estimated", True), ("patching", False)):
        open_view(driver, pages[name])
        assert data_of(driver)["estimated"] is estimated
        sub = driver.execute_script("return document.querySelector('.g2l-sub').textContent")
        assert ("an estimate from gradients (attribution patching)" in sub) is estimated
        hover(driver, cell(driver, 0, 0))
        info = driver.execute_script("return document.querySelector('.g2l-info').textContent")
        assert ("metric (estimated) " in info) is estimated and f"{data_of(driver)['scores'][0][0]:.4f}" in info
        assert errors_in(driver.get_log("browser")) == []


# ---------------------------------------------------------------------------------------------
# notebook fragments
# ---------------------------------------------------------------------------------------------


def test_notebook_fragments_share_a_page_each_working_on_its_own(driver, pages):
    log = open_view(driver, pages["notebook"])
    assert errors_in(log) == []
    assert no_network_requests(driver)  # the attribution PNG is a data: URL, no request
    views_ = driver.find_elements("css selector", ".g2l-interp")
    assert len(views_) == 3 and len({v.get_attribute("id") for v in views_}) == 3
    assert driver.execute_script("return window.__pwned") is None
    # the script replaced each fallback PNG by the view; the attribution stays a picture with its table
    assert driver.find_elements("css selector", ".g2l-interp img") == []
    assert len(driver.find_elements("css selector", ".g2l-attribution img")) == 1
    assert driver.execute_script("const i = document.querySelector('.g2l-attribution img'); return i.complete && i.naturalWidth") == 1450
    # the steering's texts are text: the prompt and both continuations as written, in a table of two columns
    steered = driver.execute_script("return [...document.querySelectorAll('.g2l-steering td')].map(e => e.textContent)")
    assert HOSTILE + '</td><img src=y onerror="window.__pwned=3">' in steered and HOSTILE + " & {{JS}}" in steered
    assert views.visible(HOSTILE) in steered and not driver.find_elements("css selector", ".g2l-steering img, .g2l-steering b b")
    # hovering in the second view (patching) changes only its own readout
    hover(driver, cell(driver, 0, 9, view=1))
    infos = driver.execute_script("return [...document.querySelectorAll('.g2l-info')].map(e => e.textContent)")
    assert infos[0] == "Hover over a cell." and infos[1].startswith("layer 0, position 9") and infos[2] == "Hover over a cell."
    hover(driver, cell(driver, 2, 1, view=2))
    assert driver.execute_script("return document.querySelectorAll('.g2l-interp')[2].gpt2labInterp.focused") == [2, 1]
    assert errors_in(driver.get_log("browser")) == []


def test_fragment_without_scripts_shows_its_png(driver, pages, tmp_path):
    # a notebook viewer that strips scripts (GitHub's, nbviewer without JS): the PNG inside the view shows
    import re

    html = re.sub(r"<script>.*?</script>", "", hostile_patching()._repr_html_(), flags=re.S)
    page = tmp_path / "static.html"
    page.write_text(f"<!DOCTYPE html><html><head><meta charset='utf-8'></head><body>{html}</body></html>", encoding="utf-8")
    driver.get(page.resolve().as_uri())
    width = driver.execute_script("const i = document.querySelector('.g2l-interp img'); return i.complete ? i.naturalWidth : 0")
    assert width == views.patching_size(hostile_patching())[0]
    assert driver.execute_script("return window.__pwned") is None


def test_screenshots_show_a_coloured_map(driver, pages, tmp_path):
    from PIL import Image

    for name in ("lens", "patching"):
        open_view(driver, pages[name])
        table = driver.find_element("css selector", "table.g2l-map")
        driver.execute_script("arguments[0].scrollIntoView()", table)
        with Image.open(io.BytesIO(table.screenshot_as_png)) as im:
            shot = np.asarray(im.convert("RGB"))
        assert shot.shape[0] > 60 and shot.shape[1] > 300
        assert len(np.unique(shot.reshape(-1, 3), axis=0)) > 30, f"the {name} map looks empty"
        (tmp_path / f"{name}.png").write_bytes(driver.get_screenshot_as_png())
