"""Does this data fit this model? The checks training and evaluation share, each written once.

Three things must agree before a model reads token ids: the vocabulary (no id may reach past
the model's embedding table), the tokenizer (the same id must mean the same text to both), and
the context (a window may not be longer than the model's position table). Each check raises a
``DataError`` or ``ConfigError`` whose message says what to do.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .config import GPT2Config
from .errors import ConfigError, DataError


def check_data_fits_model(meta: dict[str, Any], config: GPT2Config, data: str | os.PathLike) -> None:
    """A prepared DATA_DIR (its ``meta.json``) uses only ids the model has."""
    n_vocab, max_id = int(meta["tokenizer"]["n_vocab"]), int(meta.get("max_token_id", -1))
    if n_vocab > config.vocab_size or max_id >= config.vocab_size:
        raise DataError(
            f"vocabulary mismatch: {data} was tokenised with {n_vocab:,} tokens (ids up to {max_id:,}), the model "
            f"has {config.vocab_size:,}; prepare the data with the model's tokenizer (--tokenizer)"
        )


def check_tokenizer_fits_model(n_vocab: int, config: GPT2Config) -> None:
    """A tokenizer of ``n_vocab`` tokens produces only ids the model has."""
    if n_vocab > config.vocab_size:
        raise DataError(
            f"vocabulary mismatch: the tokenizer has {n_vocab:,} tokens, the model {config.vocab_size:,}; "
            "pass the model's --tokenizer"
        )


def check_same_tokenizer(model_dir: str | os.PathLike, meta: dict[str, Any], data: str | os.PathLike) -> None:
    """A model directory that carries its own tokenizer must carry the one the data was prepared
    with (compared by ``data.tokenizer_fingerprint``). Without tokenizer files GPT-2's is assumed,
    and the vocabulary-size check is all there is to do."""
    from .data import tokenizer_fingerprint
    from .tokenizer import Tokenizer
    from .vocab_files import find_vocab_files

    model_dir = Path(model_dir)
    if find_vocab_files(model_dir) is None:
        return
    if tokenizer_fingerprint(Tokenizer.from_file(model_dir)) != meta["tokenizer"]["fingerprint"]:
        raise DataError(
            f"tokenizer mismatch: {data} was tokenised with {meta['tokenizer']['name']!r}, but {model_dir} has a "
            f"different tokenizer; prepare the data again with --tokenizer {model_dir}"
        )


def check_window_fits_model(block_size: int, config: GPT2Config) -> None:
    """A window of ``block_size`` tokens fits the model's position table."""
    if block_size > config.block_size:
        raise ConfigError(
            f"--block-size {block_size} is over the model's context of {config.block_size} positions; use at most {config.block_size}"
        )


__all__ = ["check_data_fits_model", "check_tokenizer_fits_model", "check_same_tokenizer", "check_window_fits_model"]
