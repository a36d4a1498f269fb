"""Datasets from the Hugging Face hub, without half a minute of retries when the hub is out of reach.

``datasets.load_dataset("Rowan/hellaswag")`` asks the hub about the dataset before it reads its own
cache. Without a network, huggingface_hub retries that request five times over about 25 seconds,
printing two lines each time, and only then does datasets fall back to a copy it cached earlier.
When the hub's host name does not even resolve (no network at all, or one that reaches only some
hosts, such as a cluster that sees only a package mirror), :func:`load_dataset` here runs datasets in
its offline mode straight away: a dataset loaded before still comes from the cache, and one that
never was fails at once, in one line. Reachable or not, the result is the one ``datasets`` gives.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .errors import DataError

PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")


def hub_host() -> str | None:
    """The hub's host name: ``HF_ENDPOINT``'s, huggingface.co by default."""
    from huggingface_hub import constants

    return urlsplit(constants.ENDPOINT).hostname


def hub_resolves() -> bool:
    """Whether ``hub_host()`` resolves here. Behind a proxy the proxy resolves names, so the answer is
    then yes without asking."""
    if any(os.environ.get(v) for v in PROXY_VARIABLES):
        return True
    host = hub_host()
    if not host:
        return True  # an endpoint we cannot read: let huggingface_hub try it
    try:
        socket.getaddrinfo(host, 443)
    except (socket.gaierror, UnicodeError):
        return False
    return True


@contextlib.contextmanager
def offline_mode() -> Iterator[None]:
    """datasets' and huggingface_hub's offline mode (``HF_HUB_OFFLINE=1``) for the ``with`` block only."""
    import datasets
    from huggingface_hub import constants

    # the flags each library reads when it is called (datasets before 2.19 reads HF_DATASETS_OFFLINE)
    flags = [(constants, "HF_HUB_OFFLINE")] + [(datasets.config, name) for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
                                                if hasattr(datasets.config, name)]
    saved = [getattr(module, name) for module, name in flags]
    for module, name in flags:
        setattr(module, name, True)
    try:
        yield
    finally:
        for (module, name), value in zip(flags, saved, strict=True):
            setattr(module, name, value)


def load_dataset(name: str, split: str, config: str | None = None, *, advice: str = "") -> Any:
    """``datasets.load_dataset(name, config, split=split)``: a dataset on the hub (``Rowan/hellaswag``)
    or in a local folder. If the hub's host does not resolve, only the cache is asked (see the module
    docstring). Every failure (no datasets package, no network and no cached copy, no such split...)
    is one ``DataError`` line, ending in ``advice`` when given (what the user can do instead)."""
    local = Path(name).exists()
    try:
        import datasets

        if local or hub_resolves():
            return datasets.load_dataset(name, config, split=split)
        with offline_mode():
            try:
                return datasets.load_dataset(name, config, split=split)
            except (ConnectionError, FileNotFoundError) as err:  # what datasets raises offline for a dataset it never cached
                raise ConnectionError(f"the name {hub_host()} does not resolve here and datasets' cache holds no copy of {name}") from err
    except Exception as err:  # datasets raises many types; every one means "could not get it"
        if isinstance(err, ImportError) and err.name == "datasets":
            why = f"loading {name} needs the datasets library: pip install 'gpt2lab[data]' (or pip install datasets)"
        else:
            reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
            why = f"could not load {name} ({split}) {'' if local else 'from the Hugging Face hub '}({reason})"
        raise DataError(why + (f"; {advice}" if advice else "")) from None


__all__ = ["hub_host", "hub_resolves", "offline_mode", "load_dataset"]
