"""Kernel tests run Triton in its CPU interpreter when there is no GPU.

``TRITON_INTERPRET`` is read when a kernel is decorated, so it must be set
before any test module imports the Triton kernel modules.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
