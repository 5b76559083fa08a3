"""The report's provenance: what it says about how the engine computed must follow the
engine's own settings."""

from __future__ import annotations

from tunebench import engine, report


def test_report_states_how_the_engine_computes_on_cuda(monkeypatch):
    """The report's precision line follows the engine's settings, so changing the CUDA
    convolution or the side-by-side groups cannot leave it stale."""

    assert "cuDNN" in report.cuda_precision_note() and "up to 8 architecture groups" in report.cuda_precision_note()
    monkeypatch.setitem(engine.CUDA_CONV_IMPL, "fp32", "triton")
    monkeypatch.setattr(engine, "CUDA_CONCURRENT_GROUPS", 1)
    assert "fused Triton" in report.cuda_precision_note() and "up to 1 architecture" in report.cuda_precision_note()
