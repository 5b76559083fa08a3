"""devices: whether training uses a GPU, decided without torch (for the Snakefile), and the
engine's default device obeying the same TUNEBENCH_DEVICE."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tunebench.core import devices, engine
from tunebench.spec.config import ConfigError, RunConfig


def fake_dev(tmp_path: Path, *names: str) -> Path:
    for name in names:
        (tmp_path / name).touch()
    return tmp_path


@pytest.mark.parametrize(
    "files, environ, expected",
    [
        ((), {}, False),
        (("nvidiactl", "nvidia-uvm"), {}, False),  # the driver's control files alone: no GPU
        (("nvidiactl", "nvidia0"), {}, True),
        (("nvidia3",), {}, True),
        (("kfd",), {}, True),  # ROCm, which torch also reaches as "cuda"
        (("nvidia0",), {"CUDA_VISIBLE_DEVICES": ""}, False),
        (("nvidia0",), {"CUDA_VISIBLE_DEVICES": "-1"}, False),
        (("nvidia0",), {"CUDA_VISIBLE_DEVICES": "1"}, True),
        (("nvidia0",), {"TUNEBENCH_DEVICE": "cpu"}, False),
        ((), {"TUNEBENCH_DEVICE": "cuda"}, True),
        ((), {"TUNEBENCH_DEVICE": " CUDA "}, True),
        (("nvidia0",), {"TUNEBENCH_DEVICE": ""}, True),  # set but empty: as unset
    ],
)
def test_local_gpu(tmp_path, files, environ, expected):
    assert devices.local_gpu(environ, fake_dev(tmp_path, *files)) is expected


def test_a_bad_device_value_is_an_error_naming_the_variable(tmp_path):
    with pytest.raises(ConfigError, match=r"TUNEBENCH_DEVICE='tpu': expected one of cpu, cuda"):
        devices.local_gpu({"TUNEBENCH_DEVICE": "tpu"}, tmp_path)


def test_engine_default_device_obeys_the_variable(monkeypatch):
    monkeypatch.delenv("TUNEBENCH_DEVICE", raising=False)
    assert engine.default_device().type == ("cuda" if torch.cuda.is_available() else "cpu")
    monkeypatch.setenv("TUNEBENCH_DEVICE", "cpu")
    assert engine.default_device() == torch.device("cpu")
    monkeypatch.setenv("TUNEBENCH_DEVICE", "cuda")
    if torch.cuda.is_available():
        assert engine.default_device().type == "cuda"
    else:
        with pytest.raises(ConfigError, match="TUNEBENCH_DEVICE=cuda, but torch .* sees no CUDA device"):
            engine.default_device()


def test_cpu_name_reads_the_model_name(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD  EPYC 9B14 96-Core Processor\n")
    assert devices.cpu_name(info) == "AMD EPYC 9B14 96-Core Processor"
    assert devices.cpu_name(tmp_path / "absent")  # falls back to platform's word, never empty


def test_a_cpu_device_label_names_the_model_vector_unit_and_threads(monkeypatch):
    from tunebench.studies.ablate import device_label

    monkeypatch.setattr(devices, "cpu_name", lambda: "Some CPU")
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert device_label(torch.device("cpu")) == f"cpu (Some CPU, {torch.backends.cpu.get_cpu_capability()}, 1 thread)"
    finally:
        torch.set_num_threads(before)


# A child process (the allocator setting is process-wide and cannot be undone): a CNN trained
# under glibc's default or devices.retain_freed_host_memory, at batch 512 and width 32 on 28x28
# images, so that its first layer's activations (51 MB) are above any mmap threshold of glibc
# (at most 32 MB); the minor page faults of each epoch, and every epoch's metrics.
_ALLOCATOR_CHILD = r"""
import json, resource, sys
import torch
from tunebench.core import devices, engine
from tunebench.spec.config import RunConfig
if sys.argv[1] == "retained":
    assert devices.retain_freed_host_memory()
else:  # the engine would set it: keep glibc's default
    devices.retain_freed_host_memory = lambda: False
g = torch.Generator().manual_seed(0)
x, y = torch.randn(1280, 1, 28, 28, generator=g), torch.randint(0, 10, (1280,), generator=g)
data = engine.DeviceData(x[:1024], y[:1024], x[1024:1152], y[1024:1152], x[1152:], y[1152:], 10)
cfg = RunConfig(model="cnn", depth=2, width=32, batch_size=512, epochs=3, optimizer="adam", lr=0.01)
faults = []
log = lambda msg: faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt) if " epoch " in f" {msg.strip()} " else None
run = engine.train(cfg, data, seed=3, log=log)
print(json.dumps({"faults": faults, "epochs": [{k: v for k, v in e.items() if k != "epoch_seconds"} for e in run.epochs]}))
"""


def _allocator_child(setting: str) -> dict:
    out = subprocess.run([sys.executable, "-c", _ALLOCATOR_CHILD, setting], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


@pytest.mark.skipif(devices.platform.libc_ver()[0] != "glibc", reason="the setting is glibc's")
def test_retained_host_memory_stops_the_page_faults_of_each_step_and_changes_no_number():
    default, retained = _allocator_child("default"), _allocator_child("retained")
    assert len(default["faults"]) == len(retained["faults"]) == 3, (default, retained)
    # Faults in the epochs after the first (the first also faults in the model and the data).
    later = {name: r["faults"][-1] - r["faults"][0] for name, r in (("default", default), ("retained", retained))}
    block_pages = 512 * 32 * 28 * 28 * 4 // resource.getpagesize()  # one first-layer activation
    # glibc's default maps each such block afresh and unmaps it when freed: every step faults
    # its activations in again (measured here: ~500k faults over the 2 epochs, 4 steps).
    assert later["default"] > 4 * block_pages, later
    # Retained: freed blocks are reused (measured: a few dozen faults; once, in a full test
    # run, 22k against the default's 364k, the heap growing once more: still 16x fewer).
    assert later["retained"] < later["default"] / 8, later
    assert retained["epochs"] == default["epochs"]  # the same numbers, to the bit


def test_retaining_host_memory_is_a_no_op_off_glibc(monkeypatch):
    monkeypatch.setattr(devices, "_host_memory_retained", None)
    monkeypatch.setattr(devices.platform, "libc_ver", lambda: ("", ""))
    assert devices.retain_freed_host_memory() is False
    assert devices.retain_freed_host_memory() is False  # decided once


def test_the_engine_retains_host_memory_when_it_trains_on_a_cpu(monkeypatch):
    calls = []
    monkeypatch.setattr(devices, "retain_freed_host_memory", lambda: calls.append(1) or True)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 6, generator=g), torch.randint(0, 3, (40,), generator=g)
    data = engine.DeviceData(x[:24], y[:24], x[24:32], y[24:32], x[32:], y[32:], 3)
    engine.train(RunConfig(model="mlp", depth=1, width=8, batch_size=8, epochs=1), data)
    assert calls
