"""Optional GPU layer: fused Triton convolution kernels for populations of CNNs (fused_conv)
and what they cost on sm_90 counted without a GPU (sass_cost). Importing this package
registers the kernels with tunebench.core.models.FUSED_CONV, where the engine finds them;
nothing below this layer imports it."""

from tunebench.kernels import fused_conv  # noqa: F401  registers the kernels
