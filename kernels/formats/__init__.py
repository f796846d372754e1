"""Sparse weight formats sharing the :class:`SparseFormat` protocol.

``FORMATS`` maps each format's ``name`` to its class: ``bitmap`` (1x64 tiles
with 64-bit masks), ``nm`` (N:M, e.g. 2:4), ``bsr`` (block-sparse rows), ``csr``
and ``dense``.
"""

from .base import SparseFormat, check_weight
from .bitmap import BitmapWeight
from .bsr import BSRWeight
from .csr import CSRWeight
from .dense import DenseWeight
from .nm import NMWeight, is_n_m_sparse, prune_to_n_m

FORMATS: dict[str, type[SparseFormat]] = {
    cls.name: cls for cls in (BitmapWeight, NMWeight, BSRWeight, CSRWeight, DenseWeight)
}

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
