"""devices: whether training uses a GPU, decided without torch (for the Snakefile), and the
engine's default device obeying the same TUNEBENCH_DEVICE."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tunebench import devices, engine
from tunebench.config import ConfigError


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
    from tunebench.ablate import device_label

    monkeypatch.setattr(devices, "cpu_name", lambda: "Some CPU")
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert device_label(torch.device("cpu")) == f"cpu (Some CPU, {torch.backends.cpu.get_cpu_capability()}, 1 thread)"
    finally:
        torch.set_num_threads(before)
