"""The protocol every sparse weight format follows, and the checks they share.

A format stores a 2-D weight ``W`` of shape ``[out_features, in_features]`` as a
few plain dense tensors (so a :class:`~metaprune.kernels.SparseLinear` can keep
them as buffers, move them with ``.to`` and save them with safetensors), and
decodes back to exactly the same dense matrix: ``decode(encode(W)) == W``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, fields
from typing import ClassVar

import torch

from metaprune.errors import KernelError

SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def check_weight(weight: torch.Tensor) -> None:
    """Raise :class:`KernelError` unless ``weight`` is a 2-D floating-point dense tensor."""
    if not isinstance(weight, torch.Tensor):
        raise KernelError(f"expected a torch.Tensor weight, got {type(weight).__name__}")
    if weight.layout != torch.strided:
        raise KernelError(f"expected a dense (strided) weight, got layout {weight.layout}; call .to_dense()")
    if weight.dim() != 2:
        raise KernelError(f"expected a 2-D weight [out_features, in_features], got shape {tuple(weight.shape)}")
    if weight.dtype not in SUPPORTED_DTYPES:
        raise KernelError(f"unsupported dtype {weight.dtype}; use one of {[str(d) for d in SUPPORTED_DTYPES]}")


def padded_size(size: int, multiple: int) -> int:
    """The smallest multiple of ``multiple`` that is ``>= size``."""
    return -(-size // multiple) * multiple


@dataclass
class SparseFormat(ABC):
    """A sparse encoding of a dense ``[out_features, in_features]`` weight.

    Subclasses are dataclasses whose fields are ``shape`` followed by tensors;
    :meth:`tensors` and :meth:`from_tensors` convert to and from a name → tensor
    dict so that modules can register them as buffers.
    """

    name: ClassVar[str]
    shape: tuple[int, int]

    @classmethod
    @abstractmethod
    def from_dense(cls, weight: torch.Tensor, **options: int) -> SparseFormat:
        """Encode a dense 2-D weight; zeros (``== 0``) are the pruned entries."""

    @abstractmethod
    def to_dense(self) -> torch.Tensor:
        """Decode to the dense ``[out_features, in_features]`` weight."""

    def tensors(self) -> dict[str, torch.Tensor]:
        """The stored tensors by field name (what a module keeps as buffers)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if isinstance(getattr(self, f.name), torch.Tensor)}

    def metadata(self) -> dict[str, int]:
        """The non-tensor options besides ``shape`` (e.g. ``n`` and ``m`` of N:M)."""
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name != "shape" and not isinstance(getattr(self, f.name), torch.Tensor)
        }

    @classmethod
    def from_tensors(cls, shape: tuple[int, int], tensors: dict[str, torch.Tensor], **metadata: int) -> SparseFormat:
        """Rebuild from :meth:`tensors` and :meth:`metadata` output (no copy)."""
        return cls(tuple(shape), **tensors, **metadata)

    @property
    def nbytes(self) -> int:
        """Bytes a kernel reads to use this weight once (all stored tensors)."""
        return sum(t.numel() * t.element_size() for t in self.tensors().values())

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the stored weight values."""
        return self.values.dtype

    @property
    def device(self) -> torch.device:
        """The device the stored tensors live on."""
        return self.values.device

    def to(self, device: torch.device | str) -> SparseFormat:
        """A copy with every stored tensor moved to ``device``."""
        moved = {name: tensor.to(device) for name, tensor in self.tensors().items()}
        return self.from_tensors(self.shape, moved, **self.metadata())
