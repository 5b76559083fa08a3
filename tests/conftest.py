"""Settings for the whole test session.

Triton kernels (tunebench.kernels.fused_conv) run on a CPU only through Triton's interpreter, which
must be chosen before any kernel is defined, so it is set here, before the tests import
tunebench. With a CUDA device the kernels compile for it as usual."""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
