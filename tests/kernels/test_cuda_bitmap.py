"""The CUDA C++ bitmap SpMV: compiles with nvcc here; runs only where there is a GPU."""

import shutil
import subprocess

import pytest
import torch
from kernel_testing import TOLERANCES, gpu, random_sparse

from metaprune.errors import KernelError
from metaprune.kernels import cuda_bitmap
from metaprune.kernels.formats import BitmapWeight
from metaprune.kernels.reference import bitmap_spmm_reference


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not installed")
def test_kernel_source_compiles_with_nvcc(tmp_path):
    source = cuda_bitmap.SOURCE_DIR / "bitmap_spmv.cu"
    result = subprocess.run(
        ["nvcc", "-c", str(source), "-o", str(tmp_path / "bitmap_spmv.o")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "bitmap_spmv.o").stat().st_size > 0


def test_cpu_inputs_raise_before_anything_is_compiled():
    compiled_before = cuda_bitmap.load_extension.cache_info().currsize
    with pytest.raises(KernelError, match="CUDA"):
        cuda_bitmap.bitmap_spmv_cuda(BitmapWeight.from_dense(torch.eye(4)), torch.ones(1, 4))
    assert cuda_bitmap.load_extension.cache_info().currsize == compiled_before


@gpu
def test_batch_above_one_is_refused_on_gpu():
    weight = BitmapWeight.from_dense(torch.eye(4, device="cuda"))
    with pytest.raises(KernelError, match="batch 1"):
        cuda_bitmap.bitmap_spmv_cuda(weight, torch.ones(2, 4, device="cuda"))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@gpu
def test_matches_reference_on_gpu(dtype):
    weight = BitmapWeight.from_dense(random_sparse((300, 1000), 0.8, dtype).cuda())
    x = torch.randn(1, 1000, device="cuda", dtype=dtype)
    result = cuda_bitmap.bitmap_spmv_cuda(weight, x)
    torch.testing.assert_close(result, bitmap_spmm_reference(weight, x), **TOLERANCES[dtype])
