"""sparsify swaps exactly the masked Linear layers and keeps the model's outputs."""

import pytest
import torch
import torch.nn.utils.prune as prune
from torch import nn

from metaprune.errors import KernelError
from metaprune.kernels import SparseLinear, is_pruned, sparsify


def pruned_mlp():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 48), nn.ReLU(), nn.Linear(48, 10))
    prune.l1_unstructured(model[0], "weight", amount=0.8)
    prune.random_unstructured(model[2], "weight", amount=0.1)
    return model


@pytest.mark.parametrize("cpu_backend", ["dense", "csr"])
def test_outputs_match_the_masked_model(cpu_backend):
    model = pruned_mlp()
    x = torch.randn(6, 32)
    sparse_model = sparsify(model, cpu_backend=cpu_backend)
    assert isinstance(sparse_model[0], SparseLinear) and sparse_model[0].format == cpu_backend
    # A prune re-parametrisation marks a layer as masked even below min_sparsity.
    assert isinstance(sparse_model[2], SparseLinear)
    assert type(sparse_model[4]) is nn.Linear
    torch.testing.assert_close(sparse_model(x), model(x))


def test_plain_zeros_count_from_min_sparsity():
    model = nn.Sequential(nn.Linear(10, 10), nn.Linear(10, 10))
    with torch.no_grad():
        model[0].weight[:, :4] = 0
    assert is_pruned(model[0], 0.4) and not is_pruned(model[0], 0.5)
    assert isinstance(sparsify(model, 0.4, format="bitmap")[0], SparseLinear)
    with pytest.raises(KernelError, match="nothing to sparsify in Sequential.*sparsest 40% zeros"):
        sparsify(model, 0.5, format="bitmap")  # nothing qualifies: an error, not a silent no-op


def test_a_cnn_without_pruned_linear_layers_is_an_error_naming_what_sparsify_converts():
    from metaprune.prune.masks import set_masks

    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4, 2))
    set_masks(model, {"0": torch.rand(4, 1, 3, 3) > 0.5})
    with pytest.raises(KernelError, match="1 pruned convolution.*stay dense"):
        sparsify(model)


def test_input_model_is_untouched_unless_inplace():
    model = pruned_mlp()
    sparsify(model, cpu_backend="dense")
    assert type(model[0]) is nn.Linear and hasattr(model[0], "weight_mask")
    same = sparsify(model, cpu_backend="dense", inplace=True)
    assert same is model and isinstance(model[0], SparseLinear)


@pytest.mark.parametrize("inplace", [False, True])
def test_a_shared_layer_becomes_one_shared_sparse_layer(inplace):
    shared = nn.Linear(8, 8)
    prune.l1_unstructured(shared, "weight", amount=0.5)
    model = nn.Sequential(shared, nn.ReLU(), shared)
    x = torch.randn(2, 8)
    expected = model(x)
    result = sparsify(model, format="csr", inplace=inplace)
    assert isinstance(result[0], SparseLinear) and result[0] is result[2]
    torch.testing.assert_close(result(x), expected)


def test_bad_arguments_raise():
    with pytest.raises(KernelError, match="min_sparsity"):
        sparsify(pruned_mlp(), min_sparsity=1.5)
    with pytest.raises(KernelError, match="format"):
        sparsify(pruned_mlp(), format="coo")
    with pytest.raises(KernelError, match="nn.Module"):
        sparsify("model")
