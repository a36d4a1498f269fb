"""Hugging Face GPT-2 checkpoints <-> ``GPT2``.

A checkpoint directory holds ``config.json`` and the weights as ``model.safetensors``, several
safetensors shards listed in ``model.safetensors.index.json``, or a pickled ``pytorch_model.bin``.
The key table below is the only place that knows how their names and layouts differ from ours.

Loading never holds two copies of the model: the network is built on the ``meta`` device (shapes,
no memory), given storage once, and each tensor is read from disk straight into its parameter.
Peak memory is therefore one model plus the largest single tensor.
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Iterator
from pathlib import Path

import torch

from .config import PRESETS, GPT2Config
from .errors import CheckpointError, ConfigError
from .files import atomic_write, looks_like_path
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
WEIGHT_FILES = ("model.safetensors.index.json", "model.safetensors", "pytorch_model.bin.index.json", "pytorch_model.bin")


def hf_key(name: str) -> tuple[str, bool]:
    """Our parameter name -> (the name in a ``GPT2LMHeadModel`` checkpoint, whether it is transposed).

    The names are the same by design; only the Conv1D layout differs.
    """
    return name, name.endswith(CONV1D_WEIGHTS)


def normalize_key(key: str) -> str:
    """A checkpoint key in ``GPT2LMHeadModel`` form: ``GPT2Model`` checkpoints (the original
    ``gpt2`` hub repository among them) store ``h.0.attn...`` without the ``transformer.`` prefix."""
    if key.startswith(PREFIX) or key.startswith("lm_head."):
        return key
    return PREFIX + key


def is_ignored_key(key: str) -> bool:
    return key.endswith(IGNORED_SUFFIXES)


# ---------------------------------------------------------------------------------------------
# safetensors, read and written a tensor at a time
# ---------------------------------------------------------------------------------------------
# The format: 8 bytes little-endian header length N, N bytes of JSON
# {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, "__metadata__": {...}},
# then the raw little-endian tensor bytes, offsets counted from the end of the header.

_ST_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
_ST_NAMES = {dtype: name for name, dtype in _ST_DTYPES.items()}


def _itemsize(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def read_safetensors_header(path: Path) -> tuple[dict[str, dict], int]:
    """The tensor table of a safetensors file and where its data starts, validated against the file size."""
    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{path} is not a safetensors file (only {size} bytes); download it again")
        (n,) = struct.unpack("<Q", head)
        if n > min(size - 8, 100_000_000):
            raise CheckpointError(f"{path} is corrupted or truncated (header of {n} bytes in a {size}-byte file); download it again")
        try:
            header = json.loads(handle.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise CheckpointError(f"{path} is corrupted: its header is not valid JSON; download it again") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path} is corrupted: its header is not a table of tensors")
    header.pop("__metadata__", None)
    data_start = 8 + n
    for name, info in header.items():
        try:
            begin, end = info["data_offsets"]
            dtype = _ST_DTYPES[info["dtype"]]
            numel = math.prod(info["shape"])
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{path} is corrupted: bad entry for tensor {name!r}") from None
        if end - begin != numel * _itemsize(dtype):
            raise CheckpointError(f"{path} is corrupted: tensor {name!r} has {end - begin} bytes for shape {info['shape']}")
        if data_start + end > size:
            raise CheckpointError(
                f"{path} is truncated: tensor {name!r} ends at byte {data_start + end} but the file has {size}; download it again"
            )
    return header, data_start


class StoredTensor:
    """A tensor inside an open safetensors file, not read yet: the loader decides where its bytes go
    (straight into a parameter when the layout matches, else into a reused scratch buffer)."""

    def __init__(self, handle, path: Path, name: str, shape: list[int], dtype: torch.dtype, offset: int, nbytes: int) -> None:
        self.handle, self.path, self.name = handle, path, name
        self.shape, self.dtype, self.offset, self.nbytes = torch.Size(shape), dtype, offset, nbytes

    def read_into(self, out: torch.Tensor) -> torch.Tensor:
        """Fill ``out`` (contiguous, on the CPU, this dtype and size) with the stored bytes."""
        if self.nbytes:
            self.handle.seek(self.offset)
            if self.handle.readinto(memoryview(out.reshape(-1).view(torch.uint8).numpy())) != self.nbytes:
                raise CheckpointError(f"{self.path} is truncated inside tensor {self.name!r}; download it again")
        return out

    def load(self, scratch: dict[torch.dtype, torch.Tensor] | None = None) -> torch.Tensor:
        """The tensor; with ``scratch``, read into a buffer reused across calls (valid until the next one)."""
        numel = self.shape.numel()
        if scratch is None:
            return self.read_into(torch.empty(self.shape, dtype=self.dtype))
        buffer = scratch.get(self.dtype)
        if buffer is None or buffer.numel() < numel:
            buffer = scratch[self.dtype] = torch.empty(numel, dtype=self.dtype)
        return self.read_into(buffer[:numel].view(self.shape))


def iter_safetensors(path: Path) -> Iterator[StoredTensor]:
    """The tensors of a safetensors file in file order, unread. Reading uses plain file reads, not
    mmap, so no file pages stay mapped and counted against the process."""
    header, data_start = read_safetensors_header(path)
    with open(path, "rb") as handle:
        for name, info in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
            begin, end = info["data_offsets"]
            yield StoredTensor(handle, path, name, info["shape"], _ST_DTYPES[info["dtype"]], data_start + begin, end - begin)


def map_safetensors(path: Path) -> Iterator[tuple[str, torch.Tensor]]:
    """The tensors of a safetensors file as views into a private, copy-on-write memory map of it.

    Nothing is read until a tensor is used, and then the operating system pages it in from its file
    cache, far cheaper than copying into fresh memory; writing to a tensor (training) copies only the
    pages written, never the file. A tensor whose offset does not suit its dtype is copied instead.
    """
    header, data_start = read_safetensors_header(path)
    data = torch.from_file(str(path), shared=False, size=path.stat().st_size, dtype=torch.uint8)  # (file bytes,)
    for name, info in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
        begin, end = info["data_offsets"]
        dtype = _ST_DTYPES[info["dtype"]]
        raw = data[data_start + begin : data_start + end]
        if (data_start + begin) % _itemsize(dtype):
            raw = raw.clone()
        yield name, raw.view(dtype).view(info["shape"])


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors file, read into memory."""
    return {stored.name: stored.load() for stored in iter_safetensors(path)}


def write_safetensors(path: Path, tensors: list[tuple[str, torch.Tensor]], metadata: dict[str, str] | None = None) -> None:
    """Write tensors to ``path`` atomically, converting one at a time (a transposed or GPU tensor
    is made contiguous on the CPU just before its bytes are written, never all at once)."""
    header: dict[str, dict] = {"__metadata__": metadata or {"format": "pt"}}
    offset = 0
    for name, tensor in tensors:
        nbytes = tensor.numel() * tensor.element_size()
        header[name] = {"dtype": _ST_NAMES[tensor.dtype], "shape": list(tensor.shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # data starts 8-byte aligned

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            handle.write(struct.pack("<Q", len(blob)))
            handle.write(blob)
            for _, tensor in tensors:
                data = tensor.detach().to("cpu").contiguous().reshape(-1)
                if data.numel():
                    handle.write(memoryview(data.view(torch.uint8).numpy()))

    atomic_write(path, write)


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
]


def resolve_checkpoint_dir(name_or_path: str | os.PathLike) -> Path:
    """A local directory holding config.json and weights: the path itself, or a hub snapshot.

    A name that is not an existing path is a Hugging Face hub id (``gpt2``, ``openai-community/gpt2-xl``,
    ``user/my-gpt2``), downloaded with ``huggingface_hub`` into its usual cache; ``HF_HUB_OFFLINE=1``
    uses only that cache.
    """
    path = Path(name_or_path).expanduser()
    if path.is_file() and path.name in ("config.json", *WEIGHT_FILES):
        path = path.parent
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise CheckpointError(f"{path} has no config.json; expected a Hugging Face GPT-2 directory (config.json + model.safetensors)")
        return path
    name = str(name_or_path)
    if looks_like_path(name):
        raise CheckpointError(f"no such checkpoint directory: {name}")
    repo_id = f"openai-community/{name}" if name in PRESETS else name
    return _download(repo_id)


def _download(repo_id: str) -> Path:
    try:
        from huggingface_hub import snapshot_download
    except ImportError:  # pragma: no cover - a core dependency
        raise CheckpointError("huggingface_hub is not installed: pip install huggingface_hub, or pass a local directory") from None
    try:
        snapshot = Path(snapshot_download(repo_id, allow_patterns=HUB_ALLOW))
        if not any(snapshot.glob("*.safetensors")):  # older repositories only have the pickle
            snapshot = Path(snapshot_download(repo_id, allow_patterns=HUB_ALLOW + ["pytorch_model*.bin", "pytorch_model.bin.index.json"]))
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


def iter_checkpoint(files: list[Path], mapped: bool = False) -> Iterator[tuple[str, torch.Tensor | StoredTensor]]:
    """Every (key, tensor) of the checkpoint, one at a time; safetensors entries come unread, or as
    views of a memory map with ``mapped``."""
    for file in files:
        if file.suffix == ".safetensors":
            yield from map_safetensors(file) if mapped else ((stored.name, stored) for stored in iter_safetensors(file))
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


def _parse_dtype(dtype: torch.dtype | str | None) -> torch.dtype:
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    names = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
             "fp16": torch.float16, "float16": torch.float16, "half": torch.float16}
    if dtype not in names:
        raise ConfigError(f"unknown dtype {dtype!r}; use fp32, bf16 or fp16")
    return names[dtype]


@torch.no_grad()
def load_weights(model: GPT2, tensors: Iterator[tuple[str, torch.Tensor | StoredTensor]], *, assign: bool = False) -> None:
    """Copy checkpoint tensors into ``model``, checking that every parameter is filled exactly once
    with a tensor of the right shape, and that nothing in the checkpoint is left over.

    A stored tensor whose layout, dtype and device already match its parameter is read from disk
    straight into it (the Conv1D matrices too: ``model.Linear(conv1d=True)`` keeps them in the stored
    order); the others (a dtype change, a GPU) pass through one scratch buffer that is reused, so
    memory stays at one model plus one tensor.

    With ``assign``, each parameter is replaced by the checkpoint's tensor itself (converted to the
    parameter's dtype if needed): the model may be on the ``meta`` device, and memory-mapped tensors
    stay mapped.
    """
    cfg = model.config
    expected: dict[str, tuple[torch.Tensor, bool, str]] = {}
    for name, param in model.named_parameters():  # a tied lm_head is the same tensor as wte: listed once
        key, transposed = hf_key(name)
        expected[key] = (param, transposed, name)
    filled: set[str] = set()
    unexpected: list[str] = []
    scratch: dict[torch.dtype, torch.Tensor] = {}
    for raw_key, tensor in tensors:
        key = normalize_key(raw_key)
        if is_ignored_key(key):
            continue
        if key not in expected:
            if key == "lm_head.weight" and cfg.tie_word_embeddings:
                continue  # some checkpoints store the tied head as well; it is wte by definition
            if key.endswith(".bias") and not torch.count_nonzero(_materialize(tensor, scratch)):
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
            value = tensor.load() if isinstance(tensor, StoredTensor) else tensor
            value = value.to(param.dtype)  # a no-op when the dtypes match: the mapped view is kept
            owner, _, attr = name.rpartition(".")
            setattr(model.get_submodule(owner), attr, torch.nn.Parameter(value.t() if transposed else value))
            filled.add(key)
            continue
        target = param.data.t() if transposed else param.data  # in the checkpoint's layout
        direct = (isinstance(tensor, StoredTensor) and tensor.dtype == param.dtype and param.device.type == "cpu"
                  and target.is_contiguous())  # the model keeps Conv1D matrices in their stored order
        if direct:
            tensor.read_into(target)
        else:
            source = _materialize(tensor, scratch)
            param.copy_(source.t() if transposed else source)
        filled.add(key)
    missing = [k for k in expected if k not in filled]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} tensor(s): {', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} tensor(s): {', '.join(unexpected[:8])}{' ...' if len(unexpected) > 8 else ''}")
        raise CheckpointError("checkpoint does not fit the model: " + "; ".join(parts))


def _materialize(tensor: torch.Tensor | StoredTensor, scratch: dict[torch.dtype, torch.Tensor]) -> torch.Tensor:
    return tensor.load(scratch) if isinstance(tensor, StoredTensor) else tensor


def from_pretrained(
    name_or_path: str | os.PathLike,
    dtype: torch.dtype | str | None = None,
    device: torch.device | str | None = None,
) -> GPT2:
    """Build a ``GPT2`` from a Hugging Face checkpoint (local directory or hub id), in eval mode.

    Args:
        name_or_path: a directory with ``config.json`` and weights, or a hub id (``gpt2``,
            ``gpt2-medium``, ``openai-community/gpt2-xl``...).
        dtype: parameter dtype (``torch.bfloat16``, ``"fp16"``...); default float32.
        device: where the parameters live; default CPU.
    """
    directory = resolve_checkpoint_dir(name_or_path)
    config = GPT2Config.from_json_file(directory / "config.json")
    files = weight_files(directory)
    dtype = _parse_dtype(dtype)
    device = torch.device(device) if device is not None else torch.device("cpu")
    with torch.device("meta"):  # shapes only: no memory, no random init that is overwritten anyway
        model = GPT2(config).to(dtype=dtype)
    if device.type == "cpu" and all(f.suffix == ".safetensors" for f in files):
        # the parameters become copy-on-write views of the files (converted only where dtype differs)
        load_weights(model, iter_checkpoint(files, mapped=True), assign=True)
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


def save_pretrained(model: GPT2, directory: str | os.PathLike, max_shard_size: int | str | None = None) -> Path:
    """Write ``config.json`` and the weights in Hugging Face's format.

    With ``max_shard_size`` (bytes or "500MB"), weights larger than that are split into
    ``model-00001-of-0000N.safetensors`` files plus ``model.safetensors.index.json``.
    Every file is written atomically.
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
    for stale in directory.glob("model*.safetensors*"):  # a previous save with other sharding
        stale.unlink()
    if len(shards) == 1:
        write_safetensors(directory / "model.safetensors", shards[0])
    else:
        weight_map = {}
        total = 0
        for i, shard in enumerate(shards, start=1):
            name = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
            write_safetensors(directory / name, shard)
            for key, tensor in shard:
                weight_map[key] = name
                total += tensor.numel() * tensor.element_size()
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        atomic_write(directory / "model.safetensors.index.json", lambda tmp: tmp.write_text(json.dumps(index, indent=2) + "\n"))
    model.config.to_json_file(directory / "config.json")
    return directory
