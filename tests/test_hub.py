"""Datasets from the hub when the hub is out of reach (``gpt2lab.hub``): a copy in datasets' cache loads
without a request, and a dataset never loaded fails at once, in one line, instead of after huggingface_hub's
half minute of retries. No test here touches the network: name resolution is replaced."""

from __future__ import annotations

import json
import shutil
import socket
import sys

import pytest

from gpt2lab import hub
from gpt2lab.data import prepare
from gpt2lab.errors import DataError
from gpt2lab.tasks import load_records


class Resolver:
    """socket.getaddrinfo that counts its calls and resolves nothing (``resolves=False``) or everything."""

    def __init__(self, resolves: bool) -> None:
        self.resolves, self.hosts = resolves, []

    def __call__(self, host, port, *args, **kwargs):
        self.hosts.append(host)
        if not self.resolves:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("192.0.2.1", port))]


@pytest.fixture
def no_dns(monkeypatch) -> Resolver:
    """No host name resolves: the hub, and any request huggingface_hub would make, would fail there."""
    for variable in hub.PROXY_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    resolver = Resolver(resolves=False)
    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    return resolver


@pytest.fixture
def datasets_cache(tmp_path, monkeypatch):
    import datasets

    cache = tmp_path / "datasets-cache"
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
    return cache


def cache_as_if_downloaded(cache, repo: str, split: str, rows: list[dict]) -> None:
    """Put ``rows`` in datasets' cache where a download of ``repo``'s ``split`` leaves them: built by datasets'
    own json builder, then moved to the hub dataset's place (``owner___name/default/0.0.0/HASH/name-split.arrow``)."""
    import datasets

    source = cache.parent / "rows.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    datasets.load_dataset("json", data_files={split: str(source)}, cache_dir=str(cache / "built"))
    built = next((cache / "built" / "json").glob("default-*/0.0.0/*/"))
    owner, name = repo.split("/")
    place = cache / f"{owner}___{name}" / "default" / "0.0.0" / built.name
    shutil.copytree(built, place)
    (place / f"json-{split}.arrow").rename(place / f"{name}-{split}.arrow")
    shutil.rmtree(cache / "built")


def test_a_cached_hub_dataset_loads_without_a_request(no_dns, datasets_cache):
    rows = [{"ctx": f"A man {i}", "endings": ["a", "b", "c", "d"], "label": str(i % 4), "activity_label": "x"} for i in range(3)]
    cache_as_if_downloaded(datasets_cache, "Rowan/hellaswag", "validation", rows)
    no_dns.hosts.clear()  # (building the cache looked up a host of its own)
    assert load_records("hellaswag", None) == rows
    # one look-up, the probe's: huggingface_hub made no request (each would have resolved the host again)
    assert no_dns.hosts == ["huggingface.co"]


def test_an_uncached_hub_dataset_fails_at_once_in_one_line(no_dns, datasets_cache, tmp_path, gpt2_vocab_path):
    with pytest.raises(DataError, match=r"could not load Rowan/hellaswag \(validation\) from the Hugging Face hub \(the name "
                       r"huggingface.co does not resolve here and datasets' cache holds no copy of Rowan/hellaswag\); pass --data FILE") as err:
        load_records("hellaswag", None)
    assert "\n" not in str(err.value)
    with pytest.raises(DataError, match=r"could not load someone/corpus \(train\) from the Hugging Face hub \(the name huggingface.co"):
        prepare(["hf:someone/corpus:train"], tmp_path / "out", tokenizer=gpt2_vocab_path, progress=False)
    assert no_dns.hosts == ["huggingface.co", "huggingface.co"]  # the probes only, no request


def test_a_hub_task_without_datasets_says_to_install_it_or_pass_a_file(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # as if not installed
    with pytest.raises(DataError, match=r"^loading Rowan/hellaswag needs the datasets library: pip install 'gpt2lab\[data\]' "
                       r"\(or pip install datasets\); pass --data FILE \(") as err:
        load_records("hellaswag", None)
    assert "\n" not in str(err.value)


def test_a_resolving_hub_is_asked_and_the_offline_flags_are_put_back(monkeypatch):
    import datasets
    from huggingface_hub import constants

    for variable in hub.PROXY_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    before = (constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE)
    seen = []
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: seen.append((constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE)))
    monkeypatch.setattr(socket, "getaddrinfo", Resolver(resolves=True))
    hub.load_dataset("Rowan/hellaswag", "validation")
    monkeypatch.setattr(socket, "getaddrinfo", Resolver(resolves=False))
    hub.load_dataset("Rowan/hellaswag", "validation")
    assert seen == [before, (True, True)]
    assert (constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE) == before


def test_a_local_folder_or_a_proxy_needs_no_probe(tmp_path, monkeypatch, no_dns):
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "train.jsonl").write_text('{"text": "row"}\n')
    assert [r["text"] for r in hub.load_dataset(str(tmp_path / "ds"), "train")] == ["row"]
    assert no_dns.hosts == []
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    assert hub.hub_resolves() and no_dns.hosts == []  # the proxy resolves names
