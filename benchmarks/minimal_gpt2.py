"""The reference: GPT-2 and its training step as the popular from-scratch repositories write them.

The same network as ``gpt2lab.model.GPT2`` in plain PyTorch (SDPA attention, tanh GELU, a head tied
to the token embedding, ``F.cross_entropy`` on the logits, the vocabulary padded to 50,304, fused
AdamW on CUDA and the foreach one elsewhere, gradient clipping at 1.0, no host sync in the step,
``torch.compile`` when asked). Its module names are gpt2lab's, so ``load_gpt2lab_state`` reads a
gpt2lab model's weights straight in and both start from the very same numbers. ``bench_train.py``
runs it beside gpt2lab and transformers.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class Attention(nn.Module):
    def __init__(self, n_embd: int, n_head: int) -> None:
        super().__init__()
        self.n_head = n_head
        self.c_attn = nn.Linear(n_embd, 3 * n_embd)
        self.c_proj = nn.Linear(n_embd, n_embd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, C) -> (B, T, C)
        B, T, C = x.shape
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in self.c_attn(x).split(C, dim=2))  # 3 x (B, H, T, D)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, H, T, D)
        return self.c_proj(y.transpose(1, 2).reshape(B, T, C))  # (B, T, C)


class MLP(nn.Module):
    def __init__(self, n_embd: int) -> None:
        super().__init__()
        self.c_fc = nn.Linear(n_embd, 4 * n_embd)
        self.c_proj = nn.Linear(4 * n_embd, n_embd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, C) -> (B, T, C)
        return self.c_proj(F.gelu(self.c_fc(x), approximate="tanh"))


class Block(nn.Module):
    def __init__(self, n_embd: int, n_head: int) -> None:
        super().__init__()
        self.ln_1, self.attn = nn.LayerNorm(n_embd), Attention(n_embd, n_head)
        self.ln_2, self.mlp = nn.LayerNorm(n_embd), MLP(n_embd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, C)
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class MinimalGPT2(nn.Module):
    """ids (B, T) -> logits (B, T, padded_vocab); ``loss(idx, targets)`` is the mean cross-entropy
    over the real vocabulary (the padding columns never enter the softmax)."""

    def __init__(self, vocab_size: int, block_size: int, n_layer: int, n_head: int, n_embd: int, pad_to: int = 64) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        padded = -(-vocab_size // pad_to) * pad_to  # 50257 -> 50304: matrix products like multiples of 64
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(padded, n_embd), wpe=nn.Embedding(block_size, n_embd),
            h=nn.ModuleList(Block(n_embd, n_head) for _ in range(n_layer)), ln_f=nn.LayerNorm(n_embd),
        ))
        self.lm_head = nn.Linear(n_embd, padded, bias=False)
        self.lm_head.weight = self.transformer.wte.weight  # tied
        for name, p in self.named_parameters():  # GPT-2's initialisation (load_gpt2lab_state replaces it)
            if p.dim() == 2:
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * n_layer) if name.endswith("c_proj.weight") else 0.02)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        T = idx.size(1)
        x = self.transformer.wte(idx) + self.transformer.wpe(torch.arange(T, device=idx.device))  # (B, T, C)
        for block in self.transformer.h:
            x = block(x)
        return self.lm_head(self.transformer.ln_f(x))  # (B, T, V')

    def loss(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = self(idx)  # (B, T, V')
        return F.cross_entropy(logits.view(-1, logits.size(-1))[:, : self.vocab_size].float(), targets.reshape(-1))


def load_gpt2lab_state(model: MinimalGPT2, state: dict[str, torch.Tensor]) -> None:
    """Copy a gpt2lab GPT2's ``state_dict()`` in (same names; vocabulary rows zero-padded)."""
    own = model.state_dict()
    with torch.no_grad():
        for name, value in state.items():
            if name in own:
                own[name].zero_()
                own[name][: value.size(0)].copy_(value)


def make_optimizer(model: nn.Module, lr: float = 6e-4, weight_decay: float = 0.1) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only; the fused kernel on CUDA, the foreach one elsewhere."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    on_cuda = next(model.parameters()).device.type == "cuda"
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), fused=on_cuda, foreach=not on_cuda)


class MinimalTrainer:
    """The training step: forward under autocast, backward, clip to 1.0, AdamW, no host sync."""

    def __init__(self, model: MinimalGPT2, dtype: torch.dtype = torch.float32, compile: bool = False) -> None:
        self.model = model
        self.device = next(model.parameters()).device
        self.dtype = dtype
        self.loss_fn = torch.compile(model.loss) if compile else model.loss
        self.optimizer = make_optimizer(model)
        self.scaler = torch.amp.GradScaler(self.device.type) if dtype == torch.float16 else None

    def step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One optimizer step on (B, T) ids and targets; returns the loss as a device tensor."""
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32):
            loss = self.loss_fn(x, y)
        (self.scaler.scale(loss) if self.scaler else loss).backward()
        if self.scaler:
            self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss.detach()
