"""The Triton kernels compile to sm_90 cubins on this CPU-only machine (beyond the interpreter)."""

import json
import os
import subprocess
import sys

import pytest

from metaprune.errors import KernelError
from metaprune.kernels import triton_aot


@pytest.mark.slow
def test_kernels_compile_for_hopper():
    # A fresh process without TRITON_INTERPRET, so the kernels are real JIT functions.
    environment = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    code = "import json; from metaprune.kernels.triton_aot import compile_for_cuda; print(json.dumps(compile_for_cuda(90)))"
    result = subprocess.run([sys.executable, "-c", code], env=environment, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    sizes = json.loads(result.stdout.splitlines()[-1])
    assert set(sizes) == {f"{kernel}/{dtype}" for kernel in ("bitmap", "nm_2:4") for dtype in triton_aot.TRITON_DTYPES}
    assert all(size > 0 for size in sizes.values())


def test_interpreted_kernels_are_refused(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    with pytest.raises(KernelError, match="TRITON_INTERPRET"):
        triton_aot.compile_for_cuda(90)


def test_unknown_dtype_is_refused():
    with pytest.raises(KernelError, match="dtype"):
        triton_aot.kernel_sources("fp8")
