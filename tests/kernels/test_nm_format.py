"""NMWeight and prune_to_n_m: hand examples, exact round trips and errors."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from kernel_testing import DTYPES, random_sparse

from metaprune.errors import KernelError
from metaprune.kernels.formats import NMWeight, is_n_m_sparse, prune_to_n_m


def test_prune_to_n_m_keeps_largest_magnitudes_per_group():
    weight = torch.tensor([[0.1, -3.0, 2.0, 0.5, 1.0, 1.0, -1.0, 0.0]])
    expected = torch.tensor([[0.0, -3.0, 2.0, 0.0, 1.0, 1.0, 0.0, 0.0]])  # tie at |1|: lower indices kept
    assert torch.equal(prune_to_n_m(weight, 2, 4), expected)
    assert is_n_m_sparse(expected, 2, 4) and not is_n_m_sparse(weight, 2, 4)


def test_encoding_matches_hand_computation():
    weight = torch.tensor([[0.0, -3.0, 2.0, 0.0, 0.0, 0.0, 0.0, 5.0]])
    encoded = NMWeight.from_dense(weight, 2, 4)
    assert encoded.values.tolist() == [[-3.0, 2.0, 0.0, 5.0]]
    # The second group has one non-zero; a zero position (0) fills the spare slot.
    assert encoded.indices.tolist() == [[1, 2, 0, 3]]
    assert encoded.indices.dtype == torch.uint8
    assert encoded.metadata() == {"n": 2, "m": 4}


@settings(max_examples=40, deadline=None)
@given(
    out_features=st.integers(1, 8),
    groups=st.integers(1, 12),
    n_m=st.sampled_from([(2, 4), (1, 4), (4, 8), (2, 3), (4, 4)]),
    sparsity=st.sampled_from([0.0, 0.5, 1.0]),
    dtype=st.sampled_from(DTYPES),
    seed=st.integers(0, 2**16),
)
def test_round_trip_is_exact(out_features, groups, n_m, sparsity, dtype, seed):
    n, m = n_m
    weight = prune_to_n_m(random_sparse((out_features, groups * m), sparsity, dtype, seed), n, m)
    encoded = NMWeight.from_dense(weight, n, m)
    assert encoded.values.shape == (out_features, groups * n)
    decoded = encoded.to_dense()
    assert decoded.dtype == dtype and torch.equal(decoded, weight)


def test_dense_weight_that_is_not_n_m_raises():
    with pytest.raises(KernelError, match="prune_to_n_m"):
        NMWeight.from_dense(torch.ones(2, 8), 2, 4)


@pytest.mark.parametrize(("n", "m", "in_features"), [(2, 4, 6), (3, 2, 8), (0, 4, 8), (2, 300, 300)])
def test_bad_n_m_raises(n, m, in_features):
    with pytest.raises(KernelError):
        prune_to_n_m(torch.ones(2, in_features), n, m)
