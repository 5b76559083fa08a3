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

from tunebench.spec.config import ConfigError

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


# glibc's mallopt parameters (malloc.h): M_TRIM_THRESHOLD, M_MMAP_MAX.
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
_KEEP_BYTES = 2**31 - 1  # free memory kept at the heap's top before any goes back (the int's max)
_host_memory_retained: bool | None = None


def retain_freed_host_memory() -> bool:
    """Keep freed host memory in the process, for the next allocation of that size: glibc
    serves no block by a fresh mmap and never trims its heap. Once per process; returns
    whether the setting holds (False where the C library is not glibc).

    Why: each training step on a CPU allocates its activations afresh, tens of MB each for a
    CNN at batch 512. glibc serves blocks above its mmap threshold (at most 32 MB) with new
    mappings and unmaps them when freed, so every step faults the same memory in again,
    page by page, zeroed by the kernel. Measured on 2 cores
    (benchmarks/host-memory-2026-11-28/NOTES.md): a large share of the reference CNN's CPU
    time went to the kernel (system time), and it trains markedly faster with the memory
    kept. Changes no number: the same operations on the same values,
    in buffers of the same alignment. The process's peak memory becomes its resident size
    until it ends (a training job is a process of its own)."""
    global _host_memory_retained
    if _host_memory_retained is None:
        _host_memory_retained = False
        if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
            import ctypes

            libc = ctypes.CDLL(None)
            _host_memory_retained = bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, _KEEP_BYTES))
    return _host_memory_retained
