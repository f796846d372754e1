"""BitmapWeight: hand-checked layout, exact round trips, padding and errors."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from kernel_testing import DTYPES, random_sparse

from metaprune.errors import KernelError
from metaprune.kernels.formats import BitmapWeight
from metaprune.kernels.formats.bitmap import pack_bits, tile_bits


def test_layout_matches_hand_computation():
    weight = torch.zeros(2, 70)
    weight[0, 0], weight[0, 3], weight[0, 63], weight[0, 64] = 1.0, 2.0, 3.0, 4.0
    weight[1, 69] = 5.0
    encoded = BitmapWeight.from_dense(weight)
    # Bit 63 is the int64 sign bit: 1 + 8 + 2**63 wraps to 9 - 2**63.
    assert encoded.bitmaps.tolist() == [[1 + 8 - 2**63, 1], [0, 1 << 5]]
    assert encoded.tile_offsets.tolist() == [[0, 3], [4, 4]]
    assert encoded.values.tolist() == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert encoded.bitmaps.dtype == torch.int64 and encoded.tile_offsets.dtype == torch.int32
    assert encoded.num_tiles == 2


def test_pack_and_unpack_bits_are_inverse_including_the_sign_bit():
    bits = torch.zeros(3, 64, dtype=torch.bool)
    bits[0, 63] = True
    bits[1] = True
    bits[2, ::7] = True
    assert torch.equal(tile_bits(pack_bits(bits)), bits)
    assert pack_bits(bits)[1].item() == -1


def test_offsets_are_exclusive_prefix_of_tile_popcounts():
    weight = random_sparse((9, 200), 0.7, torch.float32)
    encoded = BitmapWeight.from_dense(weight)
    counts = tile_bits(encoded.bitmaps).sum(-1).flatten()
    expected = torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)[:-1]])
    assert torch.equal(encoded.tile_offsets.flatten().long(), expected)


def test_nbytes_counts_values_bitmaps_and_offsets():
    weight = random_sparse((4, 128), 0.5, torch.float16)
    encoded = BitmapWeight.from_dense(weight)
    nnz = int((weight != 0).sum())
    assert encoded.nbytes == nnz * 2 + 4 * 2 * (8 + 4)


@settings(max_examples=40, deadline=None)
@given(
    out_features=st.integers(1, 9),
    in_features=st.integers(1, 150),
    sparsity=st.sampled_from([0.0, 0.3, 0.9, 1.0]),
    dtype=st.sampled_from(DTYPES),
    seed=st.integers(0, 2**16),
)
def test_round_trip_is_exact(out_features, in_features, sparsity, dtype, seed):
    weight = random_sparse((out_features, in_features), sparsity, dtype, seed)
    encoded = BitmapWeight.from_dense(weight)
    decoded = encoded.to_dense()
    assert decoded.dtype == dtype and decoded.shape == weight.shape
    assert torch.equal(decoded, weight)
    assert encoded.values.numel() == int((weight != 0).sum())
    assert encoded.bitmaps.shape == (out_features, -(-in_features // 64))


def test_tensors_and_metadata_rebuild_the_same_weight():
    weight = random_sparse((5, 66), 0.5, torch.float32)
    encoded = BitmapWeight.from_dense(weight)
    assert set(encoded.tensors()) == {"bitmaps", "tile_offsets", "values"}
    assert encoded.metadata() == {}
    rebuilt = BitmapWeight.from_tensors(encoded.shape, encoded.tensors())
    assert torch.equal(rebuilt.to_dense(), weight)


@pytest.mark.parametrize(
    "bad",
    [torch.zeros(64), torch.zeros(2, 64, dtype=torch.int32), torch.zeros(2, 2, 64), torch.eye(64).to_sparse()],
)
def test_bad_weights_raise_kernel_error(bad):
    with pytest.raises(KernelError):
        BitmapWeight.from_dense(bad)
