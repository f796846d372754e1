"""The metaprune.kernels package: importing it needs no triton; kernels load on first access."""

import subprocess
import sys

import pytest

import metaprune.kernels


def test_import_does_not_import_triton():
    code = "import sys, metaprune.kernels; assert 'triton' not in sys.modules, 'triton was imported eagerly'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_kernel_functions_load_lazily():
    from metaprune.kernels.triton_bitmap import bitmap_spmm

    assert metaprune.kernels.bitmap_spmm is bitmap_spmm
    with pytest.raises(AttributeError, match="no attribute"):
        metaprune.kernels.not_a_kernel  # noqa: B018


def test_every_public_name_resolves():
    for name in metaprune.kernels.__all__:
        assert getattr(metaprune.kernels, name) is not None
