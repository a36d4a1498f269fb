"""FSDP2 (``torch.distributed.fsdp.fully_shard``): the alternative to DistributedDataParallel when
a model's weights, gradients and AdamW moments do not fit on one GPU.

DDP keeps a whole copy of everything on every rank: for gpt2-xl (1.56B parameters) that is 4 bytes
of weight, 4 of gradient and 8 of moments per parameter, 25 GB per GPU before one activation.
``fully_shard`` keeps 1/N of each on each of N ranks and gathers one block's weights just before
that block runs (forward and backward), reduce-scattering its gradients right after; AdamW then
updates each rank's shard only. The arithmetic is the same as one process with the global batch
(gradients are averaged over ranks as DDP averages them), so the losses are too.

Checkpoints stay the plain format: rank 0 gathers the full state dicts (on the CPU, a tensor at a
time) and writes what a one-process run writes, with the optimizer state keyed by position as
``torch.optim`` keys it. So a run trained with ``--fsdp`` resumes with or without it, on any
number of ranks, and ``model/`` is an ordinary Hugging Face checkpoint.
"""

from __future__ import annotations

import resource
import sys
from typing import Any, cast

import torch
import torch.nn as nn

from ..model import GPT2


def shard_model(model: GPT2) -> None:
    """Shard ``model`` in place over the default process group: each block is one FSDP unit (its
    weights gathered together, then freed), the root holds the rest (embeddings, tied ``lm_head``,
    ``ln_f``). Build the optimizer afterwards: sharding replaces every parameter by a DTensor."""
    from torch.distributed.fsdp import fully_shard

    # FSDP shards row-contiguous tensors only; the Conv1D-ordered (out, in) weights that speed up
    # decoding (``model.Linear``) are stored transposed: same values, rows laid out for sharding
    for param in model.parameters():
        if not param.is_contiguous():
            param.data = param.data.contiguous()
    for block in model.transformer.h:
        fully_shard(block)
    fully_shard(model)


def _options(cpu_offload: bool) -> Any:
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    # cpu_offload: gathered to the CPU of rank 0 alone (the others get {}), so no GPU ever holds it whole
    return StateDictOptions(full_state_dict=True, cpu_offload=cpu_offload)


def full_model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The whole model's state dict on rank 0's CPU ({} on the other ranks), gathered from every
    rank's shards. A collective: every rank calls it."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    return cast(dict[str, torch.Tensor], get_model_state_dict(model, options=_options(True)))


def everyone_model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The whole model's state dict on every rank's CPU, gathered a tensor at a time so that no
    device ever holds more than one whole tensor beside its shards. A collective."""
    from torch.distributed.tensor import DTensor

    return {name: (t.full_tensor() if isinstance(t, DTensor) else t).detach().cpu() for name, t in model.state_dict().items()}


def _parameter_names(optimizer: torch.optim.Optimizer, model: nn.Module) -> list[list[str]]:
    """Each param group's parameters by name, in the optimizer's order (a tied tensor has its first name)."""
    name_of = {id(p): name for name, p in model.named_parameters()}
    return [[name_of[id(p)] for p in group["params"]] for group in optimizer.param_groups]


def full_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The optimizer's whole state on rank 0's CPU ({} elsewhere), in ``optimizer.state_dict()``'s
    own layout (parameters numbered in param-group order), so a one-process run can load it.
    A collective: every rank calls it."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    by_name: dict[str, Any] = dict(get_optimizer_state_dict(model, optimizer, options=_options(True)))
    if not by_name:
        return {}
    names = [n for group in _parameter_names(optimizer, model) for n in group]
    index = {name: i for i, name in enumerate(names)}
    # the hyperparameters and numbering of param_groups are every rank's own, exactly as torch writes them
    return {"state": {index[name]: s for name, s in by_name["state"].items()}, "param_groups": optimizer.state_dict()["param_groups"]}


def load_full_state(model: nn.Module, optimizer: torch.optim.Optimizer, model_state: dict[str, torch.Tensor],
                    optimizer_state: dict[str, Any]) -> None:
    """Put a full (unsharded) model and optimizer state, as a one-process run saves them, into the
    sharded ``model`` and ``optimizer``: each rank keeps its own shard. Every rank calls it with the same states."""
    from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict

    set_model_state_dict(model, cast(Any, model_state), options=_options(False))
    names = _parameter_names(optimizer, model)
    flat = [n for group in names for n in group]
    by_name: Any = {
        "state": {flat[i]: s for i, s in optimizer_state["state"].items()},
        "param_groups": [{**saved, "params": group} for saved, group in zip(optimizer_state["param_groups"], names, strict=True)],
    }
    set_optimizer_state_dict(model, optimizer, by_name, options=_options(False))


def peak_memory(device: torch.device) -> int:
    """This process's peak memory in bytes: what the GPU allocator handed out on ``cuda``, the
    resident set (everything: Python, weights, activations) elsewhere."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # bytes on macOS, kilobytes on Linux


__all__ = ["shard_model", "full_model_state", "everyone_model_state", "full_optimizer_state", "load_full_state", "peak_memory"]
