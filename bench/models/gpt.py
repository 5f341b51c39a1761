"""nanoGPT-style decoder-only transformer (karpathy/nanoGPT model.py), activation site in the MLP.

No biases in linears or LayerNorms, weight tying between token embedding and output head,
normal(0, 0.02) init with the residual projections scaled by 1/sqrt(2 * n_layer).
Returns logits (B, T, vocab_size); the trainer computes the loss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bench.models import MODELS, ActivationFactory
from grafs.errors import UserError


@dataclass(frozen=True)
class GPTConfig:
    vocab_size: int
    block_size: int
    n_layer: int
    n_head: int
    n_embd: int
    dropout: float = 0.2


class LayerNorm(nn.Module):
    """LayerNorm without a bias (nn.LayerNorm gained ``bias=False`` late; this is explicit)."""

    def __init__(self, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x, self.weight.shape, self.weight, None, 1e-5)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        if config.n_embd % config.n_head:
            raise UserError(f"n_embd {config.n_embd} must be divisible by n_head {config.n_head}")
        self.n_head = config.n_head
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=False)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=False)
        self.dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: Tensor) -> Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).view(B, T, 3, self.n_head, C // self.n_head).permute(2, 0, 3, 1, 4)
        dropout = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True)
        return self.resid_dropout(self.c_proj(y.transpose(1, 2).reshape(B, T, C)))


class MLP(nn.Module):
    def __init__(self, config: GPTConfig, activation: ActivationFactory):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=False)
        self.act = activation()
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=False)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.c_proj(self.act(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, config: GPTConfig, activation: ActivationFactory):
        super().__init__()
        self.ln_1 = LayerNorm(config.n_embd)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = LayerNorm(config.n_embd)
        self.mlp = MLP(config, activation)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):

    def __init__(self, config: GPTConfig, activation: ActivationFactory):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.block_size, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList([Block(config, activation) for _ in range(config.n_layer)])
        self.ln_f = LayerNorm(config.n_embd)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.wte.weight = self.lm_head.weight
        self.apply(self._init_weights)
        # GPT-2: scale the projections into the residual stream so its variance does not grow with depth.
        for name, param in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(param, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, idx: Tensor) -> Tensor:
        T = idx.size(1)
        if T > self.config.block_size:
            raise ValueError(f"sequence of length {T} is longer than block_size {self.config.block_size}")
        pos = torch.arange(T, device=idx.device)
        x = self.drop(self.wte(idx) + self.wpe(pos))
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.ln_f(x))


def _build(config: GPTConfig, activation: ActivationFactory, overrides: dict) -> GPT:
    unknown = sorted(set(overrides) - set(GPTConfig.__dataclass_fields__))
    if unknown:
        raise UserError(f"unknown GPT options {unknown}; valid: {', '.join(GPTConfig.__dataclass_fields__)}")
    return GPT(replace(config, **overrides), activation)


@MODELS.register("gpt_mini")
def gpt_mini(activation: ActivationFactory, *, vocab_size: int, block_size: int, **overrides) -> GPT:
    """The GRAFS paper's "miniGPT" (its search model)."""
    return _build(GPTConfig(vocab_size, block_size, n_layer=3, n_head=3, n_embd=192), activation, overrides)


@MODELS.register("gpt_tiny")
def gpt_tiny(activation: ActivationFactory, *, vocab_size: int, block_size: int, **overrides) -> GPT:
    return _build(GPTConfig(vocab_size, block_size, n_layer=6, n_head=6, n_embd=384), activation, overrides)


@MODELS.register("gpt_small")
def gpt_small(activation: ActivationFactory, *, vocab_size: int, block_size: int, **overrides) -> GPT:
    return _build(GPTConfig(vocab_size, block_size, n_layer=9, n_head=9, n_embd=576), activation, overrides)


@MODELS.register("gpt_nano")
def gpt_nano(activation: ActivationFactory, *, vocab_size: int, block_size: int, **overrides) -> GPT:
    """CPU-scale member of the family, for 2-core machines."""
    return _build(GPTConfig(vocab_size, block_size, n_layer=2, n_head=2, n_embd=64), activation, overrides)


@MODELS.register("gpt_micro")
def gpt_micro(activation: ActivationFactory, *, vocab_size: int, block_size: int, **overrides) -> GPT:
    """CPU-scale, between gpt_nano and gpt_mini."""
    return _build(GPTConfig(vocab_size, block_size, n_layer=4, n_head=4, n_embd=128), activation, overrides)
