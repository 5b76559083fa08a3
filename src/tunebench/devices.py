"""Where training runs, decided alike by the Snakefile and the engine.

The Snakefile needs the answer at every invocation to decide whether training jobs share a
GPU (one at a time per `gpu` slot) or each take a CPU core (as many at once as --cores), and
importing torch there would cost ~2 s a call. So this module does not import torch: it reads
the device files a CUDA (or ROCm) driver creates and CUDA_VISIBLE_DEVICES. Where that guess
is wrong (device files without a CUDA build of torch, say), TUNEBENCH_DEVICE=cpu|cuda says
which, and the engine obeys the same variable.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping
from pathlib import Path

from tunebench.config import ConfigError

DEVICE_ENV = "TUNEBENCH_DEVICE"
DEVICES = ("cpu", "cuda")


def requested(environ: Mapping[str, str] = os.environ) -> str | None:
    """TUNEBENCH_DEVICE if set ("cpu" or "cuda"), else None; any other value is an error."""
    value = environ.get(DEVICE_ENV, "").strip().lower()
    if not value:
        return None
    if value not in DEVICES:
        raise ConfigError(f"{DEVICE_ENV}={environ[DEVICE_ENV]!r}: expected one of {', '.join(DEVICES)} (or unset)")
    return value


def local_gpu(environ: Mapping[str, str] = os.environ, dev: Path = Path("/dev")) -> bool:
    """Whether training on this machine will use a GPU: TUNEBENCH_DEVICE if set; otherwise
    an NVIDIA (/dev/nvidia0, ...) or ROCm (/dev/kfd) device that CUDA_VISIBLE_DEVICES does
    not hide ("" and "-1" hide every device, as CUDA reads them)."""
    wanted = requested(environ)
    if wanted is not None:
        return wanted == "cuda"
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return False
    return any(dev.glob("nvidia[0-9]*")) or (dev / "kfd").exists()


def cpu_name(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's model name (Linux's /proc/cpuinfo), else platform's word for it: the report
    states it, since other CPUs' kernels sum floats in another order."""
    try:
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                return " ".join(value.split())
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"
