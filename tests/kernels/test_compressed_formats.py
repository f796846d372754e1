"""BSR, CSR and dense formats: exact round trips, BSR padding, and the shared protocol."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from kernel_testing import DTYPES, random_sparse

from metaprune.errors import KernelError
from metaprune.kernels.formats import FORMATS, BSRWeight, CSRWeight, DenseWeight


@settings(max_examples=30, deadline=None)
@given(
    format_class=st.sampled_from([BSRWeight, CSRWeight, DenseWeight]),
    out_features=st.integers(1, 40),
    in_features=st.integers(1, 40),
    sparsity=st.sampled_from([0.0, 0.5, 0.95, 1.0]),
    dtype=st.sampled_from(DTYPES),
    seed=st.integers(0, 2**16),
)
def test_round_trip_is_exact(format_class, out_features, in_features, sparsity, dtype, seed):
    weight = random_sparse((out_features, in_features), sparsity, dtype, seed)
    encoded = format_class.from_dense(weight)
    rebuilt = format_class.from_tensors(encoded.shape, encoded.tensors(), **encoded.metadata())
    assert torch.equal(rebuilt.to_dense(), weight) and rebuilt.to_dense().dtype == dtype


def test_bsr_pads_to_whole_blocks_and_keeps_only_non_zero_blocks():
    weight = torch.zeros(20, 10)
    weight[17, 9] = 1.0
    encoded = BSRWeight.from_dense(weight, block_rows=8, block_cols=4)
    assert encoded.blocksize == (8, 4)
    assert encoded.to_torch().shape == (24, 12)
    assert encoded.values.shape == (1, 8, 4)
    assert encoded.col_indices.tolist() == [2]
    assert torch.equal(encoded.to_dense(), weight)


def test_bsr_rejects_empty_blocks():
    with pytest.raises(KernelError):
        BSRWeight.from_dense(torch.ones(4, 4), block_rows=0)


def test_registry_names_every_format():
    assert set(FORMATS) == {"bitmap", "nm", "bsr", "csr", "dense"}
    assert all(cls.name == name for name, cls in FORMATS.items())
