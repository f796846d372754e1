"""The CPU dense-vs-CSR probe: measures both, picks the faster, caches per shape."""

import pytest
import torch

from metaprune.errors import KernelError
from metaprune.kernels import cpu_probe


@pytest.fixture(autouse=True)
def empty_cache():
    cpu_probe.clear_probe_cache()
    yield
    cpu_probe.clear_probe_cache()


def test_measures_both_backends():
    timings = cpu_probe.measure_cpu_backends(64, 64, 0.9, batch=2, repeats=2)
    assert set(timings) == {"dense", "csr"} and all(seconds > 0 for seconds in timings.values())


def test_choice_is_the_faster_and_cached(monkeypatch):
    calls = []

    def fake_measure(*args):
        calls.append(args)
        return {"dense": 2.0, "csr": 1.0}

    monkeypatch.setattr(cpu_probe, "measure_cpu_backends", fake_measure)
    assert cpu_probe.choose_cpu_backend(128, 256, 0.91, batch=4) == "csr"
    assert cpu_probe.choose_cpu_backend(128, 256, 0.89, batch=4) == "csr"  # same 0.05 sparsity bucket
    assert len(calls) == 1 and calls[0][2] == 0.9
    cpu_probe.choose_cpu_backend(128, 256, 0.5, batch=4)
    assert len(calls) == 2


def test_half_dtypes_are_always_dense():
    assert cpu_probe.choose_cpu_backend(64, 64, 0.99, dtype=torch.float16) == "dense"


def test_random_weight_has_the_requested_sparsity():
    weight = cpu_probe.random_sparse_weight(100, 100, 0.7, torch.float32)
    assert abs(float((weight == 0).float().mean()) - 0.7) < 0.03


@pytest.mark.parametrize(("sparsity", "batch", "dtype"), [(1.5, 1, torch.float32), (0.5, 0, torch.float32),
                                                          (0.5, 1, torch.float16)])
def test_bad_arguments_raise(sparsity, batch, dtype):
    with pytest.raises(KernelError):
        cpu_probe.measure_cpu_backends(8, 8, sparsity, batch=batch, dtype=dtype)
