"""Attention-head removal for timm-style attention modules.

An attention module qualifies when it has a fused ``qkv`` Linear (``dim -> 3 * inner``),
a ``proj`` Linear (``inner -> dim``) and an integer ``num_heads``, and its forward infers
the head dimension from tensor shapes. Removing head ``h`` deletes its rows from each of
the q, k and v blocks of ``qkv`` and its columns from ``proj``; the function is then
exactly that of the original module with the head's output contribution dropped.
"""

from __future__ import annotations

import torch
from torch import nn

from metaprune.errors import PruneError


def is_attention(module: nn.Module) -> bool:
    """Whether ``module`` has the fused-qkv attention layout this module can slice."""
    qkv, proj = getattr(module, "qkv", None), getattr(module, "proj", None)
    return (
        isinstance(qkv, nn.Linear)
        and isinstance(proj, nn.Linear)
        and isinstance(getattr(module, "num_heads", None), int)
        and qkv.out_features % 3 == 0
        and qkv.out_features // 3 == proj.in_features
    )


#: Names of the separate query/key/value projections of Hugging Face attention modules (BERT, ViT, ... / LLaMA-style).
SEPARATE_PROJECTIONS = (("query", "key", "value"), ("q_proj", "k_proj", "v_proj"))


def separate_projections(module: nn.Module) -> tuple[list[nn.Linear], int] | None:
    """``([query, key, value], num_heads)`` of an attention module with separate projections, else None.

    The head count is read from ``num_attention_heads`` or ``num_heads`` (the module's or its config's).
    """
    heads = getattr(module, "num_attention_heads", None) or getattr(module, "num_heads", None)
    config = getattr(module, "config", None)
    heads = heads or getattr(config, "num_attention_heads", None)
    if not isinstance(heads, int) or heads < 1:
        return None
    for names in SEPARATE_PROJECTIONS:
        layers = [getattr(module, name, None) for name in names]
        if all(isinstance(layer, nn.Linear) for layer in layers):
            return layers, heads
    return None


def sync_head_sizes(model: nn.Module) -> None:
    """After channels left the q/k/v projections, set each attention module's head size to match.

    Hugging Face attention modules reshape with ``attention_head_size`` / ``all_head_size``
    (BERT, ViT) or ``head_dim`` (LLaMA-style); the heads stay, each narrower by the same amount.
    """
    for module in model.modules():
        found = separate_projections(module)
        if found is None:
            continue
        (query, _key, _value), heads = found
        inner = query.out_features
        if hasattr(module, "attention_head_size"):
            module.attention_head_size = inner // heads
        if hasattr(module, "all_head_size"):
            module.all_head_size = inner
        if isinstance(getattr(module, "head_dim", None), int):
            module.head_dim = inner // heads


def head_dim(module: nn.Module) -> int:
    """Channels per head of an attention module."""
    return module.qkv.out_features // 3 // module.num_heads


def head_channel_index(module: nn.Module, heads: list[int] | torch.Tensor) -> torch.Tensor:
    """Rows of ``qkv`` (q, k and v blocks, in that order) that belong to ``heads``."""
    inner, width = module.qkv.out_features // 3, head_dim(module)
    heads = torch.as_tensor(heads, dtype=torch.long)
    within = (heads[:, None] * width + torch.arange(width)[None, :]).reshape(-1)
    return torch.cat([within + block * inner for block in range(3)])


def head_rows(module: nn.Module, use_grad: bool = False) -> list[torch.Tensor]:
    """Per-head weight (or gradient) rows, ``[num_heads, k]`` each: qkv rows and proj columns."""
    heads, width = module.num_heads, head_dim(module)
    qkv_weight, proj_weight = module.qkv.weight, module.proj.weight
    if use_grad:
        if qkv_weight.grad is None or proj_weight.grad is None:
            raise PruneError("gradient-based scoring needs gradients; run a backward pass first")
        qkv_weight, proj_weight = qkv_weight.grad, proj_weight.grad
    qkv_rows = qkv_weight.detach().reshape(3, heads, width, -1).permute(1, 0, 2, 3).reshape(heads, -1)
    proj_rows = proj_weight.detach().reshape(proj_weight.shape[0], heads, width).permute(1, 0, 2).reshape(heads, -1)
    return [qkv_rows, proj_rows]


def remove_heads(module: nn.Module, heads: list[int]) -> None:
    """Physically delete ``heads`` from an attention module, in place."""
    if not is_attention(module):
        raise PruneError(f"{type(module).__name__} is not a fused-qkv attention module")
    heads = sorted(set(int(head) for head in heads))
    if not heads:
        return
    if heads[0] < 0 or heads[-1] >= module.num_heads or len(heads) >= module.num_heads:
        raise PruneError(f"cannot remove heads {heads} from a module with {module.num_heads} heads (one must remain)")
    drop = set(head_channel_index(module, heads).tolist())
    keep_qkv = torch.tensor([row for row in range(module.qkv.out_features) if row not in drop])
    inner = module.qkv.out_features // 3
    keep_proj = keep_qkv[keep_qkv < inner]
    _slice_linear(module.qkv, rows=keep_qkv)
    _slice_linear(module.proj, columns=keep_proj)
    module.num_heads -= len(heads)


def _slice_linear(layer: nn.Linear, rows: torch.Tensor | None = None, columns: torch.Tensor | None = None) -> None:
    weight = layer.weight.data
    if rows is not None:
        weight = weight[rows]
        if layer.bias is not None:
            layer.bias = nn.Parameter(layer.bias.data[rows].clone())
        layer.out_features = int(rows.numel())
    if columns is not None:
        weight = weight[:, columns]
        layer.in_features = int(columns.numel())
    layer.weight = nn.Parameter(weight.clone())
