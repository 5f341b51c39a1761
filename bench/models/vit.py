"""Vision Transformer for small datasets, after the lucidrains vit-pytorch model the CIFAR ViT repos use.

Linear patch embedding, learnable positional embedding and cls token, pre-norm blocks whose
attention width is heads * dim_head (independent of dim), and a LayerNorm + Linear head on the
cls token. The only activation site of a block is inside its MLP.
1-D signals shaped (C, L) are read as images (C, 1, L) and cut into (1, p) patches.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bench.models import MODELS, ActivationFactory
from grafs.errors import UserError


@dataclass(frozen=True)
class ViTConfig:
    dim: int
    depth: int
    heads: int
    mlp_dim: int
    dim_head: int = 64
    patch: tuple[int, int] | None = None  # None: 4x4 for images, (1, 4) for 1-D signals
    dropout: float = 0.1
    emb_dropout: float = 0.1


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, dim_head: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.norm = nn.LayerNorm(dim)
        self.to_qkv = nn.Linear(dim, 3 * heads * dim_head, bias=False)
        self.to_out = nn.Linear(heads * dim_head, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        B, N, _ = x.shape
        q, k, v = self.to_qkv(self.norm(x)).view(B, N, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        # As in the CIFAR repos' copy of vit-pytorch: dropout after the projection, none on attention weights.
        out = F.scaled_dot_product_attention(q, k, v)
        return self.dropout(self.to_out(out.transpose(1, 2).reshape(B, N, -1)))


class FeedForward(nn.Module):
    def __init__(self, dim: int, mlp_dim: int, dropout: float, activation: ActivationFactory):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, mlp_dim)
        self.act = activation()
        self.fc2 = nn.Linear(mlp_dim, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        x = self.dropout(self.act(self.fc1(self.norm(x))))
        return self.dropout(self.fc2(x))


class Block(nn.Module):
    def __init__(self, config: ViTConfig, activation: ActivationFactory):
        super().__init__()
        self.attn = Attention(config.dim, config.heads, config.dim_head, config.dropout)
        self.mlp = FeedForward(config.dim, config.mlp_dim, config.dropout, activation)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(x)
        return x + self.mlp(x)


class ViT(nn.Module):

    def __init__(
        self, config: ViTConfig, activation: ActivationFactory, input_shape: tuple[int, ...], num_classes: int
    ):
        super().__init__()
        self.signal = len(input_shape) == 2
        channels, height, width = (input_shape[0], 1, input_shape[1]) if self.signal else input_shape
        self.patch = config.patch or ((1, 4) if self.signal else (4, 4))
        ph, pw = self.patch
        if height % ph or width % pw:
            raise UserError(f"patch {self.patch} does not tile {height}x{width} inputs; pick a patch that divides them")
        num_patches = (height // ph) * (width // pw)
        self.to_patch_embedding = nn.Linear(channels * ph * pw, config.dim)
        self.pos_embedding = nn.Parameter(torch.randn(1, num_patches + 1, config.dim))
        self.cls_token = nn.Parameter(torch.randn(1, 1, config.dim))
        self.dropout = nn.Dropout(config.emb_dropout)
        self.blocks = nn.Sequential(*[Block(config, activation) for _ in range(config.depth)])
        self.head = nn.Sequential(nn.LayerNorm(config.dim), nn.Linear(config.dim, num_classes))

    def patchify(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, patches, ph * pw * C), patches in row-major order."""
        B, C, H, W = x.shape
        ph, pw = self.patch
        x = x.reshape(B, C, H // ph, ph, W // pw, pw).permute(0, 2, 4, 3, 5, 1)
        return x.reshape(B, (H // ph) * (W // pw), ph * pw * C)

    def forward(self, x: Tensor) -> Tensor:
        if self.signal:
            x = x.unsqueeze(2)
        x = self.to_patch_embedding(self.patchify(x))
        x = torch.cat([self.cls_token.expand(x.size(0), -1, -1), x], dim=1)
        x = self.dropout(x + self.pos_embedding)
        x = self.blocks(x)
        return self.head(x[:, 0])


def _build(
    config: ViTConfig, activation: ActivationFactory, input_shape: tuple[int, ...], num_classes: int, overrides: dict
) -> ViT:
    if len(input_shape) not in (2, 3):
        raise UserError(f"ViT takes images (C, H, W) or signals (C, L), got input_shape {tuple(input_shape)}")
    unknown = sorted(set(overrides) - set(ViTConfig.__dataclass_fields__))
    if unknown:
        raise UserError(f"unknown ViT options {unknown}; valid: {', '.join(ViTConfig.__dataclass_fields__)}")
    if overrides.get("patch") is not None:
        overrides = {**overrides, "patch": tuple(overrides["patch"])}
    return ViT(replace(config, **overrides), activation, tuple(input_shape), num_classes)


@MODELS.register("vit_tiny")
def vit_tiny(activation: ActivationFactory, *, input_shape: tuple[int, ...], num_classes: int, **overrides) -> ViT:
    """The GRAFS paper's "ViT-Tiny" (its search model)."""
    return _build(ViTConfig(dim=512, depth=4, heads=6, mlp_dim=256), activation, input_shape, num_classes, overrides)


@MODELS.register("vit_small")
def vit_small(activation: ActivationFactory, *, input_shape: tuple[int, ...], num_classes: int, **overrides) -> ViT:
    return _build(ViTConfig(dim=512, depth=6, heads=8, mlp_dim=512), activation, input_shape, num_classes, overrides)


@MODELS.register("vit_micro")
def vit_micro(activation: ActivationFactory, *, input_shape: tuple[int, ...], num_classes: int, **overrides) -> ViT:
    """CPU-scale member of the family, for 2-core machines."""
    config = ViTConfig(dim=64, depth=2, heads=4, mlp_dim=128, dim_head=16)
    return _build(config, activation, input_shape, num_classes, overrides)


@MODELS.register("vit_mini")
def vit_mini(activation: ActivationFactory, *, input_shape: tuple[int, ...], num_classes: int, **overrides) -> ViT:
    """CPU-scale, between vit_micro and vit_tiny."""
    config = ViTConfig(dim=96, depth=4, heads=4, mlp_dim=192, dim_head=24)
    return _build(config, activation, input_shape, num_classes, overrides)
