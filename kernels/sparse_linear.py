"""``SparseLinear``: an ``nn.Linear`` whose weight is stored in a sparse format.

``forward(x) = spmm(W, x) + b`` equals ``F.linear(x, W, b)`` for the dense
(masked) ``W`` it was built from, up to float rounding. The format's tensors are
registered as buffers, so ``.to(device)``, ``state_dict`` and safetensors work.
"""

from __future__ import annotations

import torch
from torch import nn

from metaprune.errors import KernelError

from .cpu_probe import choose_cpu_backend
from .formats import FORMATS, BitmapWeight, SparseFormat, is_n_m_sparse
from .spmm import spmm

FORMAT_CHOICES = (*FORMATS, "auto")


def effective_weight(linear: nn.Linear) -> torch.Tensor:
    """The weight ``linear`` computes with: ``weight_orig * weight_mask`` under ``torch.nn.utils.prune``."""
    if hasattr(linear, "weight_orig") and hasattr(linear, "weight_mask"):
        return (linear.weight_orig * linear.weight_mask).detach()
    return linear.weight.detach()


def sparsity_of(weight: torch.Tensor) -> float:
    """Fraction of exact zeros in ``weight``."""
    return float((weight == 0).sum()) / max(weight.numel(), 1)


def choose_format(weight: torch.Tensor, batch: int = 8, cpu_backend: str | None = None) -> str:
    """The format ``"auto"`` resolves to for ``weight`` on its current device.

    CUDA: ``nm`` if the weight is 2:4-sparse, else ``bitmap`` if it moves fewer
    bytes than dense (sparsity above about 9% in fp16), else ``dense``.
    CPU: ``cpu_backend`` if given (``"dense"`` or ``"csr"``), else whichever the
    timed probe of :func:`choose_cpu_backend` measures faster at ``batch``.
    """
    if weight.device.type == "cuda":
        if weight.shape[1] % 4 == 0 and is_n_m_sparse(weight, 2, 4):
            return "nm"
        dense_bytes = weight.numel() * weight.element_size()
        return "bitmap" if BitmapWeight.from_dense(weight).nbytes < dense_bytes else "dense"
    if cpu_backend is not None:
        if cpu_backend not in ("dense", "csr"):
            raise KernelError(f"cpu_backend must be 'dense' or 'csr', got {cpu_backend!r}")
        return cpu_backend
    return choose_cpu_backend(*weight.shape, sparsity_of(weight), batch, weight.dtype)


class SparseLinear(nn.Module):
    """A linear layer ``y = x W^T + b`` with ``W`` held in a :class:`SparseFormat` (for inference).

    Args:
        weight: the encoded ``[out_features, in_features]`` weight.
        bias: optional ``[out_features]`` bias (kept dense, as a parameter).
    """

    def __init__(self, weight: SparseFormat, bias: torch.Tensor | None = None) -> None:
        super().__init__()
        if not isinstance(weight, SparseFormat):
            raise KernelError(f"weight must be a SparseFormat, got {type(weight).__name__}; use SparseLinear.from_dense")
        self.out_features, self.in_features = weight.shape
        if bias is not None and bias.shape != (self.out_features,):
            raise KernelError(f"bias must have shape ({self.out_features},), got {tuple(bias.shape)}")
        self.format = weight.name
        self.format_metadata = weight.metadata()
        self.tensor_names = tuple(weight.tensors())
        for name, tensor in weight.tensors().items():
            self.register_buffer(name, tensor)
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone(), requires_grad=False)

    @classmethod
    def from_dense(
        cls, linear: nn.Linear, format: str = "auto", *, batch: int = 8, cpu_backend: str | None = None,
        n: int = 2, m: int = 4, block_size: int = 16,
    ) -> SparseLinear:
        """Encode ``linear``'s (masked) weight in ``format``.

        ``format`` is one of ``bitmap``, ``nm`` (N:M with ``n``, ``m``; the weight
        must already be N:M-sparse), ``bsr`` (``block_size`` square blocks), ``csr``,
        ``dense`` or ``auto`` (see :func:`choose_format`; ``batch`` and
        ``cpu_backend`` are passed to it).
        """
        if not isinstance(linear, nn.Linear):
            raise KernelError(f"expected an nn.Linear, got {type(linear).__name__}")
        if format not in FORMAT_CHOICES:
            raise KernelError(f"unknown format {format!r}; choose one of {FORMAT_CHOICES}")
        weight = effective_weight(linear)
        if format == "auto":
            format = choose_format(weight, batch, cpu_backend)
        options = {"nm": {"n": n, "m": m}, "bsr": {"block_rows": block_size, "block_cols": block_size}}
        encoded = FORMATS[format].from_dense(weight, **options.get(format, {}))
        return cls(encoded, None if linear.bias is None else linear.bias.detach())

    @property
    def weight_format(self) -> SparseFormat:
        """The encoded weight, rebuilt from the buffers (no copy)."""
        tensors = {name: getattr(self, name) for name in self.tensor_names}
        return FORMATS[self.format].from_tensors((self.out_features, self.in_features), tensors, **self.format_metadata)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x W^T + b`` for ``x`` of shape ``[..., in_features]``."""
        if x.shape[-1] != self.in_features:
            raise KernelError(f"input has {x.shape[-1]} features, the layer expects {self.in_features}")
        y = spmm(self.weight_format, x.reshape(-1, self.in_features))
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*x.shape[:-1], self.out_features)

    def to_dense_linear(self) -> nn.Linear:
        """An equivalent ``nn.Linear`` (decoded weight)."""
        weight = self.weight_format.to_dense()
        linear = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None,
                           device=weight.device, dtype=weight.dtype)
        with torch.no_grad():
            linear.weight.copy_(weight)
            if self.bias is not None:
                linear.bias.copy_(self.bias)
        return linear

    def extra_repr(self) -> str:
        metadata = "".join(f", {key}={value}" for key, value in self.format_metadata.items())
        return f"in_features={self.in_features}, out_features={self.out_features}, format={self.format}{metadata}"

