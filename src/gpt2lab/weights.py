"""Hugging Face GPT-2 checkpoints <-> ``GPT2``.

A checkpoint directory holds ``config.json`` and the weights as ``model.safetensors``, several
safetensors shards listed in ``model.safetensors.index.json``, or a pickled ``pytorch_model.bin``.
The key table below is the only place that knows how their names and layouts differ from ours.

Loading never holds two copies of the model: the network is built on the ``meta`` device (shapes,
no memory) and, on the CPU, its parameters become copy-on-write views of the files, read (through
the safetensors library) only when used; on a GPU, or in another dtype, each tensor is copied into
its parameter one at a time. Saving writes every file atomically: a crash or a full disk leaves the
previous save readable.
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .config import PRESETS, GPT2Config
from .devices import parse_dtype
from .errors import CheckpointError
from .files import ADAPTER_CONFIG, adapter_base, atomic_write, looks_like_path, run_model_dir
from .model import GPT2

# ---------------------------------------------------------------------------------------------
# The key table
# ---------------------------------------------------------------------------------------------

# OpenAI's GPT-2 used a "Conv1D" (a linear layer storing its matrix as (in, out)); nn.Linear stores
# (out, in). These four matrices of every block are therefore transposed on the way in and out: as
# views, since ``model.Linear(conv1d=True)`` keeps the stored memory order and no number moves.
CONV1D_WEIGHTS = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
# Buffers some checkpoints carry: the causal mask as a (1, 1, n_positions, n_positions) tensor and a
# constant -1e4. We build the mask on the fly, so they carry no information for us.
IGNORED_SUFFIXES = (".attn.bias", ".attn.masked_bias")
PREFIX = "transformer."
# Keys that sit beside ``transformer.*`` rather than under it: the LM head, and the classification
# head of ``GPT2ForSequenceClassification`` (``gpt2lab.classify.GPT2Classifier``).
HEAD_PREFIXES = ("lm_head.", "score.")
WEIGHT_FILES = ("model.safetensors.index.json", "model.safetensors", "pytorch_model.bin.index.json", "pytorch_model.bin")


def hf_key(name: str) -> tuple[str, bool]:
    """Our parameter name -> (the name in a ``GPT2LMHeadModel`` checkpoint, whether it is transposed).

    The names are the same by design; only the Conv1D layout differs.
    """
    return name, name.endswith(CONV1D_WEIGHTS)


def normalize_key(key: str) -> str:
    """A checkpoint key in ``GPT2LMHeadModel`` form: ``GPT2Model`` checkpoints (the original
    ``gpt2`` hub repository among them) store ``h.0.attn...`` without the ``transformer.`` prefix."""
    if key.startswith((PREFIX, *HEAD_PREFIXES)):
        return key
    return PREFIX + key


def is_ignored_key(key: str) -> bool:
    return key.endswith(IGNORED_SUFFIXES)


# ---------------------------------------------------------------------------------------------
# safetensors files, through the safetensors library
# ---------------------------------------------------------------------------------------------
# On the CPU the library hands out each tensor as a view into a private, copy-on-write memory map
# of the file: nothing is read until a tensor is used, then the operating system pages it in from
# its file cache (far cheaper than copying into fresh memory), and writing to a tensor (training)
# copies only the pages written, never the file. benchmarks/bench_load.py measured it against the
# hand-written reader this module had before: the same time and peak memory (benchmarks/README.md).


def _unreadable(path: Path, err: Exception) -> CheckpointError:
    """The library's complaint about a file, as one line that says what to do."""
    reason = str(err).removeprefix("Error while deserializing header: ")
    if "too small" in reason:
        what = "is not a safetensors file"
    elif "not fully covered" in reason or "incomplete" in reason:
        what = "is truncated"
    else:
        what = "is corrupted"
    return CheckpointError(f"{path} {what} ({reason}); download it again")


def iter_safetensors(path: str | os.PathLike) -> Iterator[tuple[str, torch.Tensor]]:
    """The (name, tensor) pairs of a safetensors file, in file order, as copy-on-write views of the file."""
    path = Path(path)
    try:
        with safe_open(path, framework="pt") as handle:
            for name in handle.keys():
                yield name, handle.get_tensor(name)
    except SafetensorError as err:
        raise _unreadable(path, err) from None


def read_safetensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors file (copy-on-write views of it, on the CPU)."""
    return dict(iter_safetensors(path))


def write_safetensors(path: str | os.PathLike, tensors: list[tuple[str, torch.Tensor]], metadata: dict[str, str] | None = None) -> Path:
    """Write tensors to ``path`` atomically with the safetensors library.

    A contiguous CPU tensor is written from its own memory (no copy); a transposed view is made
    contiguous first, and a GPU tensor is copied to the CPU (all of a file's at once: shard a big
    GPU model with ``save_pretrained(max_shard_size=...)`` to bound that). A full disk is an
    ``OSError`` with ``errno.ENOSPC``, as from any other write.
    """
    contiguous = {name: tensor.detach().contiguous() for name, tensor in tensors}

    def write(tmp: Path) -> None:
        try:
            save_file(contiguous, tmp, metadata=metadata or {"format": "pt"})
        except SafetensorError as err:
            reason = str(err).removeprefix("Error while serializing: ")
            code = errno.ENOSPC if "os error 28" in reason else errno.EIO
            raise OSError(code, f"cannot write {path}: {reason}") from None

    return atomic_write(path, write)


# ---------------------------------------------------------------------------------------------
# Finding a checkpoint
# ---------------------------------------------------------------------------------------------

HUB_ALLOW = [
    "config.json",
    "generation_config.json",
    "*.safetensors",
    "model.safetensors.index.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "merges.txt",
    ADAPTER_CONFIG,  # a LoRA adapter's repository: its adapter_model.safetensors comes with *.safetensors
]


def resolve_checkpoint_dir(name_or_path: str | os.PathLike, *, adapter: bool = False) -> Path:
    """A local directory holding config.json and weights: the path itself (a training run's directory:
    the model it saved, ``run/model``), or a hub snapshot. With ``adapter``, a PEFT adapter's directory
    (``adapter_config.json``: ``resolve_model`` finds its base) is one too.

    A name that is not an existing path is a Hugging Face hub id (``gpt2``, ``openai-community/gpt2-xl``,
    ``user/my-gpt2``), downloaded with ``huggingface_hub`` into its usual cache; ``HF_HUB_OFFLINE=1``
    uses only that cache.
    """
    path = run_model_dir(name_or_path)  # a training run's directory: the model it saved
    if path.is_file() and path.name in ("config.json", ADAPTER_CONFIG, *WEIGHT_FILES):
        path = path.parent
    if not path.is_dir():
        name = str(name_or_path)
        if looks_like_path(name):
            raise CheckpointError(f"no such checkpoint directory: {name}")
        path = _download(f"openai-community/{name}" if name in PRESETS else name)
    if (path / "config.json").is_file() or (adapter and adapter_base(path) is not None):
        return path
    if (path / ADAPTER_CONFIG).is_file():
        raise CheckpointError(f"{path} is a LoRA adapter (adapter_config.json), not a whole model, and this needs the whole one: pass "
                              "the model it was merged into (a run's model/), or merge it: GPT2.from_pretrained(adapter directory) does")
    raise CheckpointError(f"{path} has no config.json; expected a Hugging Face GPT-2 directory (config.json + model.safetensors)")


def resolve_model(name_or_path: str | os.PathLike) -> tuple[Path, list[Path]]:
    """(the directory of the whole model, the LoRA adapters to put on it in order: none for a model).

    A PEFT adapter (``adapter_config.json`` + ``adapter_model.safetensors``: ``train --lora-rank``'s
    ``run/adapter``, or an adapter on the hub) names its base model, a hub id or a path, which is
    resolved in turn: it may be an adapter too (a LoRA run that started from an adapter).
    """
    directory = resolve_checkpoint_dir(name_or_path, adapter=True)
    adapters: list[Path] = []
    while (base := adapter_base(directory)) is not None:
        adapters.insert(0, directory)
        if len(adapters) > 16:
            raise CheckpointError(f"the adapter in {adapters[-1]} names bases that lead back to adapters ({len(adapters)} of them); "
                                  "check the base_model_name_or_path of each adapter_config.json")
        try:
            directory = resolve_checkpoint_dir(base, adapter=True)
        except CheckpointError as err:
            raise CheckpointError(f"the base model of the adapter in {adapters[0]} ({base!r}, its base_model_name_or_path): {err}") from None
    return directory, adapters


def _download(repo_id: str) -> Path:
    try:
        from huggingface_hub import snapshot_download
    except ImportError:  # pragma: no cover - a core dependency
        raise CheckpointError("huggingface_hub is not installed: pip install huggingface_hub, or pass a local directory") from None
    try:
        snapshot = Path(snapshot_download(repo_id, allow_patterns=HUB_ALLOW))
        if not any(snapshot.glob("*.safetensors")):  # older repositories only have the pickle
            snapshot = Path(snapshot_download(repo_id, allow_patterns=HUB_ALLOW + ["pytorch_model*.bin", "pytorch_model.bin.index.json",
                                                                                   "adapter_model.bin"]))  # (an older PEFT's adapter)
    except Exception as err:  # the hub library raises many types; all mean "could not get it"
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"could not get {repo_id!r} from the Hugging Face hub ({type(err).__name__}: {reason[:200]}); "
            "check the name and your network, or pass a local directory with config.json and model.safetensors"
        ) from None
    return snapshot


def weight_files(directory: Path) -> list[Path]:
    """The weight files of a checkpoint directory, safetensors preferred."""
    for index_name, single in (("model.safetensors.index.json", "model.safetensors"), ("pytorch_model.bin.index.json", "pytorch_model.bin")):
        index = directory / index_name
        if index.is_file():
            try:
                shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
                raise CheckpointError(f"{index} is not a valid shard index (needs a 'weight_map' object)") from None
            missing = [s for s in shards if not (directory / s).is_file()]
            if missing:
                raise CheckpointError(f"{directory} is missing shard(s) listed in {index_name}: {', '.join(missing)}")
            return [directory / s for s in shards]
        if (directory / single).is_file():
            return [directory / single]
    raise CheckpointError(
        f"no weights in {directory}: expected model.safetensors, model.safetensors.index.json with its shards, or pytorch_model.bin"
    )


def iter_checkpoint(files: list[Path]) -> Iterator[tuple[str, torch.Tensor]]:
    """Every (key, tensor) of the checkpoint, one at a time, as views of the files (copy-on-write maps)."""
    for file in files:
        if file.suffix == ".safetensors":
            yield from iter_safetensors(file)
        else:
            try:
                # weights_only: a pickle can run code when loaded; this refuses anything but tensors
                state = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
            except Exception as err:
                raise CheckpointError(f"cannot read {file} as a PyTorch weights file ({type(err).__name__}: {str(err)[:200]})") from None
            yield from state.items()
            del state


# ---------------------------------------------------------------------------------------------
# Loading and saving
# ---------------------------------------------------------------------------------------------


@torch.no_grad()
def load_weights(model: GPT2, tensors: Iterator[tuple[str, torch.Tensor]], *, assign: bool = False) -> None:
    """Copy checkpoint tensors into ``model``, checking that every parameter is filled exactly once
    with a tensor of the right shape, and that nothing in the checkpoint is left over.

    The Conv1D matrices need no transpose of their numbers: ``model.Linear(conv1d=True)`` keeps them
    in the stored order, so a parameter's transposed view has the checkpoint's layout.

    With ``assign``, each parameter is replaced by the checkpoint's tensor itself (converted to the
    parameter's dtype if needed): the model may be on the ``meta`` device, and memory-mapped tensors
    stay mapped, so memory holds one model. Without it, each tensor is copied into its parameter
    (any device, any dtype), one tensor at a time.
    """
    cfg = model.config
    expected: dict[str, tuple[torch.Tensor, bool, str]] = {}
    for name, parameter in model.named_parameters():  # a tied lm_head is the same tensor as wte: listed once
        key, transposed = hf_key(name)
        expected[key] = (parameter, transposed, name)
    filled: set[str] = set()
    unexpected: list[str] = []
    for raw_key, tensor in tensors:
        key = normalize_key(raw_key)
        if is_ignored_key(key):
            continue
        if key not in expected:
            if key == "lm_head.weight" and cfg.tie_word_embeddings:
                continue  # some checkpoints store the tied head as well; it is wte by definition
            if key.endswith(".bias") and not torch.count_nonzero(tensor):
                continue  # zero biases stand for the biases a bias-free model does not have
            unexpected.append(raw_key)
            continue
        param, transposed, name = expected[key]
        want = torch.Size(param.shape[::-1] if transposed else param.shape)  # in the checkpoint's layout
        if tensor.shape != want:
            raise CheckpointError(
                f"shape mismatch for {raw_key}: the checkpoint has {tuple(tensor.shape)}, the model expects {tuple(want)}; "
                "does config.json match these weights?"
            )
        if assign:
            value = tensor.to(param.dtype)  # a no-op when the dtypes match: the mapped view is kept
            owner, _, attr = name.rpartition(".")
            setattr(model.get_submodule(owner), attr, torch.nn.Parameter(value.t() if transposed else value))
        else:
            param.copy_(tensor.t() if transposed else tensor)
        filled.add(key)
    missing = [k for k in expected if k not in filled]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} tensor(s): {', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} tensor(s): {', '.join(unexpected[:8])}{' ...' if len(unexpected) > 8 else ''}")
        raise CheckpointError("checkpoint does not fit the model: " + "; ".join(parts))


def from_pretrained(
    name_or_path: str | os.PathLike,
    dtype: torch.dtype | str | None = None,
    device: torch.device | str | None = None,
    *,
    build: Callable[[GPT2Config], GPT2] = GPT2,
) -> GPT2:
    """Build a ``GPT2`` from a Hugging Face checkpoint (local directory or hub id), in eval mode.

    Args:
        name_or_path: a directory with ``config.json`` and weights, or a hub id (``gpt2``,
            ``gpt2-medium``, ``openai-community/gpt2-xl``...); or a PEFT LoRA adapter's directory or
            hub id, which gives its base model with the adapter merged in (``resolve_model``).
        dtype: parameter dtype (``torch.bfloat16``, ``"fp16"``...); default float32.
        device: where the parameters live; default CPU.
        build: makes the (empty) network from the config: ``GPT2``, or a subclass with more
            parameters (``GPT2Classifier``'s ``score``), whose checkpoint keys are its parameter names.
    """
    directory, adapters = resolve_model(name_or_path)
    if adapters:  # the base model, each adapter attached and folded in: a plain GPT2 that computes the adapted model
        from .lora import load_adapter, merge_lora

        model = from_pretrained(directory, dtype, device, build=build)
        # (attaching draws A's initial values, which the file's replace: the caller's random state is left as it was)
        with torch.random.fork_rng(devices=[model.device] if model.device.type == "cuda" else []):
            for adapter in adapters:
                model = merge_lora(load_adapter(model, adapter))
        return model.eval()
    config = GPT2Config.from_json_file(directory / "config.json")
    files = weight_files(directory)
    dtype = parse_dtype(dtype)
    device = torch.device(device) if device is not None else torch.device("cpu")
    with torch.device("meta"):  # shapes only: no memory, no random init that is overwritten anyway
        model = build(config).to(dtype=dtype)
    if device.type == "cpu":
        # the parameters become copy-on-write views of the files (converted only where dtype differs)
        load_weights(model, iter_checkpoint(files), assign=True)
    else:
        if config.tie_word_embeddings:
            del model.lm_head.weight  # shared with wte: give storage once, then tie again
        model = model.to_empty(device=device)
        load_weights(model, iter_checkpoint(files))
    model.tie_weights()
    return model.eval()


def _parse_size(size: int | str) -> int:
    if isinstance(size, int):
        return size
    units = {"KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "B": 1}
    text = size.strip().upper()
    for unit, factor in units.items():
        if text.endswith(unit):
            return int(float(text[: -len(unit)]) * factor)
    return int(text)


def hf_state(model: GPT2) -> list[tuple[str, torch.Tensor]]:
    """The model's tensors under their checkpoint names and layouts (views, no copies).

    A tied head is left out, as transformers does. Biases a bias-free model lacks are written as
    zeros (the same function), because transformers' GPT-2 always has them.
    """
    out: list[tuple[str, torch.Tensor]] = []
    for name, param in model.named_parameters():
        key, transposed = hf_key(name)
        out.append((key, param.detach().t() if transposed else param.detach()))
    cfg = model.config
    if not (cfg.bias and cfg.qkv_bias):
        present = {k for k, _ in out}
        zeros = lambda n: torch.zeros(n, dtype=model.dtype)  # noqa: E731
        for i in range(cfg.n_layer):
            for key, width in ((f"h.{i}.attn.c_attn.bias", 3 * cfg.n_embd), (f"h.{i}.attn.c_proj.bias", cfg.n_embd),
                               (f"h.{i}.mlp.c_fc.bias", cfg.mlp_dim), (f"h.{i}.mlp.c_proj.bias", cfg.n_embd),
                               (f"h.{i}.ln_1.bias", cfg.n_embd), (f"h.{i}.ln_2.bias", cfg.n_embd)):
                if PREFIX + key not in present:
                    out.append((PREFIX + key, zeros(width)))
        if PREFIX + "ln_f.bias" not in present:
            out.append((PREFIX + "ln_f.bias", zeros(cfg.n_embd)))
    return out


def save_pretrained(model: GPT2, directory: str | os.PathLike, max_shard_size: int | str | None = None,
                    extra_config: dict[str, Any] | None = None) -> Path:
    """Write ``config.json`` and the weights in Hugging Face's format.

    With ``max_shard_size`` (bytes or "500MB"), weights larger than that are split into
    ``model-00001-of-0000N.safetensors`` files plus ``model.safetensors.index.json``.
    ``extra_config``: entries added to (or replacing) config.json's, e.g. a classifier's
    ``architectures``, ``id2label`` and ``pad_token_id``. Every file is written atomically.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = hf_state(model)
    limit = _parse_size(max_shard_size) if max_shard_size is not None else None
    shards: list[list[tuple[str, torch.Tensor]]] = [[]]
    size = 0
    for key, tensor in tensors:
        nbytes = tensor.numel() * tensor.element_size()
        if limit is not None and shards[-1] and size + nbytes > limit:
            shards.append([])
            size = 0
        shards[-1].append((key, tensor))
        size += nbytes
    written = []
    if len(shards) == 1:
        written.append(write_safetensors(directory / "model.safetensors", shards[0]))
    else:
        weight_map = {}
        total = 0
        for i, shard in enumerate(shards, start=1):
            name = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
            written.append(write_safetensors(directory / name, shard))
            for key, tensor in shard:
                weight_map[key] = name
                total += tensor.numel() * tensor.element_size()
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        written.append(atomic_write(directory / "model.safetensors.index.json", lambda tmp: tmp.write_text(json.dumps(index, indent=2) + "\n")))
    # a previous save with other sharding goes only now, so a failed write (a full disk) leaves it loadable
    for stale in directory.glob("model*.safetensors*"):
        if stale not in written:
            stale.unlink()
    if extra_config is None:
        model.config.to_json_file(directory / "config.json")
    else:
        hf = {**model.config.to_hf_dict(), **extra_config}
        atomic_write(directory / "config.json", lambda tmp: tmp.write_text(json.dumps(hf, indent=2) + "\n", encoding="utf-8"))
    return directory
