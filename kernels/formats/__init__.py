"""Sparse weight formats sharing the :class:`SparseFormat` protocol.

``FORMATS`` (a :class:`~metaprune.registry.Registry`) maps each format's ``name`` to its class: ``bitmap`` (1x64 tiles
with 64-bit masks), ``nm`` (N:M, e.g. 2:4), ``bsr`` (block-sparse rows), ``csr``
and ``dense``.
"""

from metaprune.errors import KernelError
from metaprune.registry import Registry

from .base import SparseFormat, check_weight
from .bitmap import BitmapWeight
from .bsr import BSRWeight
from .csr import CSRWeight
from .dense import DenseWeight
from .nm import NMWeight, is_n_m_sparse, prune_to_n_m

FORMATS: Registry[type[SparseFormat]] = Registry("sparse format", error=KernelError)
for _format in (BitmapWeight, NMWeight, BSRWeight, CSRWeight, DenseWeight):
    FORMATS.add(_format.name, _format)

__all__ = [
    "FORMATS",
    "BSRWeight",
    "BitmapWeight",
    "CSRWeight",
    "DenseWeight",
    "NMWeight",
    "SparseFormat",
    "check_weight",
    "is_n_m_sparse",
    "prune_to_n_m",
]
