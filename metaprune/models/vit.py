"""A small Vision Transformer (Dosovitskiy et al., 2021) for low-resolution images.

Patches are embedded by a ``patch x patch`` stride-``patch`` conv; a class token and a learned
position embedding are added; ``depth`` pre-norm blocks

    x = x + Attention(LayerNorm(x)),   x = x + MLP(LayerNorm(x))

follow, and a linear head reads the normalised class token. :class:`Attention` infers the
per-head dimension from its tensors, so structured pruning may remove whole heads (then
``num_heads`` is lowered) or channels within every head and the module keeps working.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from metaprune.errors import ConfigError
from metaprune.models.registry import register_model


class Attention(nn.Module):
    """Multi-head self-attention, ``softmax(q k^T / sqrt(d_head)) v`` per head, then ``proj``.

    ``qkv`` is one ``Linear(dim, 3 * num_heads * d_head)``; its output is laid out as
    ``(q|k|v, head, channel)``. The head dimension is read from the tensor, not stored. The
    softmax scale is fixed at construction (``d_head ** -0.5`` of the dense model) so that
    removing channels inside the heads does not silently change the attention temperature.
    """

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ConfigError(f"embedding dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = rearrange(self.qkv(x), "b n (three h d) -> three b h n d", three=3, h=self.num_heads)
        attended = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        return self.proj(rearrange(attended, "b h n d -> b n (h d)"))


class FeedForward(nn.Module):
    """``fc2(GELU(fc1(x)))``."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class TransformerBlock(nn.Module):
    """Pre-norm residual block: attention then feed-forward."""

    def __init__(self, dim: int, num_heads: int, mlp_hidden_dim: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = FeedForward(dim, mlp_hidden_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    """ViT classifier on ``in_channels x image_size x image_size`` images."""

    def __init__(self, num_classes: int, in_channels: int, image_size: int, dim: int, depth: int,
                 num_heads: int, patch_size: int, mlp_ratio: float) -> None:
        super().__init__()
        num_patches = (image_size // patch_size) ** 2
        self.patch_embed = nn.Conv2d(in_channels, dim, patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, dim))
        self.blocks = nn.Sequential(
            *[TransformerBlock(dim, num_heads, round(dim * mlp_ratio)) for _ in range(depth)]
        )
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = rearrange(self.patch_embed(x), "b c h w -> b (h w) c")
        cls_tokens = self.cls_token.expand(tokens.shape[0], -1, -1)
        tokens = torch.cat([cls_tokens, tokens], dim=1) + self.pos_embed
        return self.head(self.norm(self.blocks(tokens))[:, 0])


@register_model("vit_tiny")
def vit_tiny(num_classes: int = 10, in_channels: int = 1, image_size: int = 16, dim: int = 64,
             depth: int = 4, num_heads: int = 4, patch_size: int = 4, mlp_ratio: float = 2.0) -> VisionTransformer:
    """A tiny ViT (defaults: dim 64, depth 4, 4 heads, 4x4 patches, MLP hidden 2 x dim)."""
    for name, value in (("dim", dim), ("depth", depth), ("num_heads", num_heads), ("patch_size", patch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"vit_tiny {name} must be a positive integer, got {value!r}")
    if image_size % patch_size:
        raise ConfigError(f"image_size {image_size} is not divisible by patch_size {patch_size}")
    if mlp_ratio <= 0:
        raise ConfigError(f"vit_tiny mlp_ratio must be positive, got {mlp_ratio!r}")
    return VisionTransformer(num_classes, in_channels, image_size, dim, depth, num_heads, patch_size, mlp_ratio)
