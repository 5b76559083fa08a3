"""Smoke tests of the benchmark (python -m tunebench.bench) on a CPU with tiny sizes: both
modes run, print their tables and write JSON whose numbers are measured (positive, finite,
ratios against the tutorial loop consistent with the rows)."""

from __future__ import annotations

import json
import math
import platform
import sys
from pathlib import Path

import pytest
import torch
import yaml

from tunebench import bench
from tunebench.core import engine
from tunebench.bench import common, kernels, throughput

sys.path.insert(0, str(Path(__file__).parent))
from test_pipeline import P, RESULTS, SMOKE, ablation_jobs, smoke_params  # noqa: E402  the end-to-end tests' project


def test_throughput_mode_prints_ratios_and_writes_json(tmp_path, capsys):
    code = bench.main(["throughput", "--device", "cpu", "--models", "mlp", "--samples", "1024", "--populations", "2",
                       "--tutorial-samples", "256", "--batch", "128", "--raw-dir", str(tmp_path / "raw"),
                       "--compile", "both", "--out-dir", str(tmp_path)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "x tutorial" in printed and "(c) engine, population 2" in printed
    rows = json.loads((tmp_path / "throughput-cpu.json").read_text())["fp32+compile"]["rows"]
    # (a) tutorial, (b) one run, (c) population, and the population again through torch.compile
    assert [r["K"] for r in rows] == [1, 1, 2, 2]
    assert [r.get("compiled", False) for r in rows] == [False, False, False, True] and "[compiled]" in rows[3]["row"]
    assert "loss_vs_eager" in rows[3], (rows, printed)
    assert abs(rows[3]["loss_vs_eager"]) < 1e-4 and "vs eager)" in printed  # the same runs, rounded otherwise
    tutorial = rows[0]["samples_per_s"]
    for r in rows:
        assert r["samples_per_s"] > 0 and math.isfinite(r["tflops"])
        assert math.isclose(r["vs_tutorial"], r["samples_per_s"] / tutorial)
    assert "train_loss" not in rows[0] and all(0 < r["train_loss"] < 10 for r in rows[1:])  # 10 classes: ln 10 = 2.3
    assert "train loss" in printed
    assert "one run at a time" not in printed  # no CNN rows: no note on how the engine trains CNNs here
    # Every row under the allocator setting the engine uses on a CPU (devices.retain_freed_host_memory).
    meta = json.loads((tmp_path / "throughput-cpu.json").read_text())["fp32+compile"]["meta"]
    assert meta["host_memory_retained"] is (platform.libc_ver()[0] == "glibc")


def test_cpu_cnn_rows_say_the_engine_trains_these_cnns_one_at_a_time(tmp_path, capsys):
    """On a CPU the CNN's population rows stack runs though the engine would not (28x28
    images: engine.CPU_CNN_STACK_MAX_PIXELS), so the table says which rate the pipeline gets."""
    assert 28 * 28 > engine.CPU_CNN_STACK_MAX_PIXELS
    code = bench.main(["throughput", "--device", "cpu", "--models", "cnn", "--samples", "256", "--populations", "2",
                       "--tutorial-samples", "64", "--batch", "64", "--raw-dir", str(tmp_path / "raw"),
                       "--out-dir", str(tmp_path)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "(c) engine, population 2" in printed
    assert f"more than {engine.CPU_CNN_STACK_MAX_PIXELS} pixels one run at a time" in printed


def test_jobs_mode_times_every_job_and_the_process_start_up(tmp_path, capsys):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(SMOKE, sort_keys=False, allow_unicode=True))
    code = bench.main(["jobs", "--device", "cpu", "--params", str(params), "--search",
                       "--raw-dir", str(tmp_path / "raw"), "--out-dir", str(tmp_path)])
    assert code == 0
    result = json.loads((tmp_path / "jobs-smoke-cpu.json").read_text())
    meta = result["meta"]
    from tunebench.spec import grid

    assert meta["complete"] and len(result["jobs"]) == meta["jobs_total"] == len(ablation_jobs())
    assert len(result["search_jobs"]) == meta["search_jobs_total"] == 2
    assert sum(j["runs"] for j in result["jobs"]) == meta["runs_total"] == len(grid.expand(smoke_params()))
    seconds = [j["seconds"] for j in result["jobs"] + result["search_jobs"]]
    assert all(s > 0 for s in seconds) and meta["startup_seconds"] > 0
    assert math.isclose(meta["serial_pipeline_seconds"], sum(seconds) + len(seconds) * meta["startup_seconds"])
    assert "process start-up" in capsys.readouterr().out


def test_jobs_budgets_count_ablation_and_search_jobs_separately_and_a_profile_resumes(tmp_path):
    """A spent ablation budget still leaves the search jobs their own budget, so a short
    device lease samples both kinds of job."""
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(SMOKE, sort_keys=False, allow_unicode=True))
    code = bench.main(["jobs", "--device", "cpu", "--params", str(params), "--search", "--max-seconds", "0",
                       "--raw-dir", str(tmp_path / "raw"), "--out-dir", str(tmp_path)])
    assert code == 0
    result = json.loads((tmp_path / "jobs-smoke-cpu.json").read_text())
    assert not result["jobs"] and len(result["search_jobs"]) == 2 and not result["meta"]["complete"]

    # A second call resumes: runs only the ablation jobs, keeps the timed search jobs.
    first = tmp_path / "first.json"
    (tmp_path / "jobs-smoke-cpu.json").rename(first)
    code = bench.main(["jobs", "--device", "cpu", "--params", str(params), "--search", "--resume", str(first),
                       "--raw-dir", str(tmp_path / "raw"), "--out-dir", str(tmp_path)])
    assert code == 0
    resumed = json.loads((tmp_path / "jobs-smoke-cpu.json").read_text())
    meta = resumed["meta"]
    assert meta["complete"] and len(resumed["jobs"]) == len(ablation_jobs())
    assert resumed["search_jobs"] == [{**j, "call": result["meta"]["time"]} for j in result["search_jobs"]]
    assert meta["startup_seconds"] == result["meta"]["startup_seconds"] and meta["resumed"] == [result["meta"]["time"]]
    assert meta["total_seconds"] > result["meta"]["total_seconds"]

    wrong = {**result, "meta": {**result["meta"], "precision": "bf16"}}
    first.write_text(json.dumps(wrong))
    with pytest.raises(ValueError, match="precision is 'bf16'"):
        bench.main(["jobs", "--device", "cpu", "--params", str(params), "--resume", str(first),
                    "--raw-dir", str(tmp_path / "raw"), "--out-dir", str(tmp_path)])


def test_jobs_compile_both_times_each_ablation_job_both_ways_in_one_run(tmp_path, monkeypatch, capsys):
    """--compile both: each ablation job eagerly, then compiled (the search jobs stay eager),
    both times in the job's row and a total ratio printed, in a JSON of its own; a resumed
    result must have been compiled alike. (The compile itself is tests/test_engine.py's:
    here the flag is recorded and every job trains eagerly, for time.)"""
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(SMOKE, sort_keys=False, allow_unicode=True))
    seen = []
    train = engine.train_population

    def recording(*args, compile_step=False, **kw):
        seen.append(compile_step)
        return train(*args, **kw)
    monkeypatch.setattr(engine, "train_population", recording)
    args = ["jobs", "--device", "cpu", "--params", str(params), "--raw-dir", str(tmp_path / "raw"),
            "--out-dir", str(tmp_path)]
    assert bench.main(args + ["--compile", "both", "--search"]) == 0
    result = json.loads((tmp_path / "jobs-smoke-cpu-compile-vs-eager.json").read_text())
    n = len(ablation_jobs())
    assert result["meta"]["compile_step"] == "both" and len(result["jobs"]) == n
    assert seen[:2 * n] == [False, True] * n and len(seen) > 2 * n and not any(seen[2 * n:])  # then the search jobs, eager
    assert all(j["seconds"] > 0 and j["compiled_seconds"] > 0 for j in result["jobs"])
    printed = capsys.readouterr().out
    assert f"torch.compile: {n} ablation jobs took" in printed and "compiled" in printed
    assert not (tmp_path / "jobs-smoke-cpu.json").exists()
    with pytest.raises(ValueError, match="compile_step is 'both'"):
        bench.main(args + ["--compile", "on", "--resume", str(tmp_path / "jobs-smoke-cpu-compile-vs-eager.json")])


def test_triton_tile_sets_become_rows_and_unknown_names_fail():
    assert common.conv_variants("native,triton", "P=64,W=8;R=64") == [
        ("native", {}), ("triton", {}), ("triton", {"P": 64, "W": 8}), ("triton", {"R": 64})]
    assert common.conv_variants("triton", None) == [("triton", {})]
    # The defaults' row always comes first, once, whatever the sweep lists.
    assert common.conv_variants("triton", "W=8;;W=8") == [("triton", {}), ("triton", {"W": 8})]
    from tunebench.kernels import fused_conv as fused_conv

    with fused_conv.tiles(P=64, W=8):
        assert (fused_conv.BLOCK_P, fused_conv.NUM_WARPS) == (64, 8)
    assert (fused_conv.BLOCK_P, fused_conv.NUM_WARPS) == (32, 4)  # restored
    with pytest.raises(ValueError, match="unknown tile name"):
        with fused_conv.tiles(Q=1):
            pass


def test_tile_rows_say_how_far_their_loss_is_from_the_default_tiles():
    """Same seeds and data, other kernels: a tile set's loss is compared with the default
    tiles' row of the same model, K, precision and graph mode, and with no other."""
    def row(K, loss, tiles=None, graphs=True, precision="bf16", conv="triton"):
        return dict(model="cnn", row="(c) engine" + (" [CUDA graph]" if graphs else ""), K=K, precision=precision,
                    conv=conv, tiles=tiles or {}, train_loss=loss)
    rows = throughput.loss_vs_default_tiles([
        row(64, 0.50), row(64, 0.40, conv="native"), row(128, 0.80), row(64, 0.60, graphs=False),
        row(64, 0.51, {"G": 1}), row(128, 0.80 * 1.25, {"G": 1}), row(64, 0.30, {"G": 1}, graphs=False),
        row(64, 0.9, {"G": 1}, precision="tf32"), dict(model="cnn", row="(c)", K=64, precision="bf16", conv="triton",
                                                        tiles={"G": 1}, skipped="CUDA out of memory")])
    assert [r.get("loss_vs_default_tiles") for r in rows] == pytest.approx(
        [None, None, None, None, 0.02, 0.25, -0.5, None, None])


def test_fastest_conv_compares_the_largest_population_all_reached():
    row = lambda conv, K, rate, tiles=None: dict(model="cnn", conv=conv, K=K, tiles=tiles or {}, samples_per_s=rate)  # noqa: E731
    rows = [row("native", 1, 10.0), row("native", 64, 50.0), row("native", 128, 51.0),
            row("triton", 1, 5.0), row("triton", 64, 90.0), row("triton", 64, 999.0, {"P": 64}),
            dict(model="cnn", conv="triton", K=128, tiles={}, skipped="CUDA out of memory"),
            dict(model="mlp", K=128, samples_per_s=1e9)]
    assert throughput.fastest_conv(rows) == "triton"  # at K=64, the largest both reached; tile rows ignored
    assert throughput.fastest_conv([r for r in rows if r.get("conv") != "triton"]) == "native"
    assert throughput.fastest_conv([], default="gemm") == "gemm"
    assert throughput.fastest_conv([row("native", 128, 1.0), row("triton", 64, 2.0)]) == "triton"
    # The pipeline does not compile its step: a compiled row does not pick its convolution.
    assert throughput.fastest_conv(rows + [row("native", 64, 1e6) | {"compiled": True}]) == "triton"


def test_compiled_rows_say_how_far_their_loss_is_from_the_eager_step():
    def row(K, loss, compiled=False, conv="native", tiles=None, graphs=True):
        return dict(model="cnn", row="(c)" + (" [CUDA graph]" if graphs else ""), K=K, precision="bf16", conv=conv,
                    tiles=tiles or {}, train_loss=loss, compiled=compiled)
    rows = throughput.loss_vs_eager(throughput.loss_vs_default_tiles([
        row(128, 0.50), row(128, 0.40, conv="triton"), row(128, 0.52, compiled=True),
        row(128, 0.30, compiled=True, conv="triton"), row(64, 0.9, compiled=True), row(128, 0.9, compiled=True, graphs=False)]))
    assert [r.get("loss_vs_eager") for r in rows] == pytest.approx([None, None, 0.04, -0.25, None, None])
    # a compiled default-tiles row is not the default tiles' reference for tile rows
    assert all("loss_vs_default_tiles" not in r for r in rows)
    timed = [r | {"samples_per_s": 10.0 * (i + 1), "vs_tutorial": 1.0} for i, r in enumerate(rows[:3])]
    # The compiled row (30) is the fastest, but 4% off its eager row's loss: left out at 1%.
    line = throughput.target_summary(timed, target=100.0)
    assert "20 model-samples/s" in line and "triton conv tiles default)" in line and "1 row(s) left out" in line
    line = throughput.target_summary(timed, target=100.0, tolerance=0.05)
    assert "30 model-samples/s" in line and "native conv, compiled)" in line and "left out" not in line


def test_fastest_tiles_skips_a_fast_variant_whose_loss_disagrees():
    def row(K, rate, tiles=None, loss_off=None, conv="triton"):
        r = dict(model="cnn", conv=conv, K=K, tiles=tiles or {}, samples_per_s=rate, precision="bf16", vs_tutorial=rate)
        return r | ({"loss_vs_default_tiles": loss_off} if loss_off is not None else {})
    rows = [row(128, 50.0, conv="native"), row(16, 99.0, {"G": 1}, 0.0), row(128, 10.0),
            row(128, 30.0, {"G": 1, "B": 1}, -0.004), row(128, 40.0, {"G": 1, "A": 1}, 0.2),
            row(128, 45.0, {"T": 1}, float("nan")), dict(model="cnn", conv="triton", K=128, tiles={"P": 64}, skipped="x"),
            dict(model="mlp", K=128, samples_per_s=1e9)]
    # At K=128 (the largest Triton K): A=1 is fastest but its loss is 20% off, T=1's is NaN.
    assert throughput.fastest_tiles(rows) == "G=1,B=1"
    assert throughput.fastest_tiles(rows, tolerance=0.5) == "G=1,A=1"
    assert throughput.fastest_tiles([r for r in rows if not r.get("tiles")]) == "default"
    assert throughput.fastest_tiles([row(128, 1.0, conv="native")]) is None
    line = throughput.target_summary(rows, target=45.0)
    # Any CNN population counts here, not only the largest: G=1 at K=16 (99) beats native (50);
    # A=1 (20% off) and T=1 (NaN) are left out and counted; the MLP row is not a CNN row.
    assert "99 model-samples/s" in line and "K=16" in line and "tiles G=1" in line and "MET (2.20x)" in line
    assert "2 row(s) left out" in line
    slow = throughput.target_summary([row(128, 30.0, {"G": 1, "B": 1}, -0.004), row(128, 40.0, {"A": 1}, 0.2)], target=60.0)
    assert "30 model-samples/s" in slow and "not met (0.50x)" in slow and "1 row(s) left out" in slow
    assert throughput.target_summary([dict(model="mlp", K=128, samples_per_s=1e9)]) == "CNN population: no row measured"


def test_fused_kernel_rates_count_each_kinds_work():
    """The reference CNN's fused layers and the work each kind of fused kernel does: what
    turns `bench kernels`' device times into TFLOP/s per kind."""
    from tunebench.core import models

    shape = models.DataShape((1, 28, 28), 10)
    layers = kernels.fused_conv_layers(common.ARCHS["cnn"], shape)
    assert layers == [(1, 32, 28, 28), (32, 64, 14, 14)]
    assert kernels.fused_conv_layers(common.ARCHS["cnn"].model_copy(update={"batchnorm": True}), shape) == []
    flops = kernels.fused_conv_flops(layers, K=2, train_examples=10, eval_examples=5)
    conv1, conv2 = 2 * 9 * 1 * 32 * 28 * 28, 2 * 9 * 32 * 64 * 14 * 14
    assert flops == {"forward": 2 * 15 * (conv1 + conv2), "input grad": 2 * 10 * conv2,
                     "weight grad": 2 * 10 * (conv1 + conv2)}
    rows = [dict(name="_fwd_kernel", ms=2.0), dict(name="_fwd_kernel_cl", ms=1.0), dict(name="_wgrad_kernel_cl", ms=4.0),
            dict(name="ampere_sgemm_128x64_nn", ms=9.0), dict(name="_wgrad_kernel_gcl", ms=1.0),
            dict(name="_unpool_kernel", ms=0.5)]
    rates = kernels.fused_kernel_rates(rows, {"forward": 6e12, "input grad": 1e12, "weight grad": 2e12})
    # Every variant counts as its kind; a kind with no kernel (input grad) is left out, and
    # the unpooling (G=1) has a time but no rate.
    assert rates == [dict(kind="forward", ms=3.0, tflop=6.0, tflops=2000.0),
                     dict(kind="weight grad", ms=5.0, tflop=2.0, tflops=400.0),
                     dict(kind="unpool", ms=0.5, tflop=0.0, tflops=None)]
    # As kernel_table calls it: 100 trained examples per run plus the warm-up batch (512),
    # and 2 evaluations of 20 val + 20 test + 100 train examples.
    dd = engine.DeviceData(torch.zeros(100, 1, 28, 28), torch.zeros(100), torch.zeros(20, 1, 28, 28), torch.zeros(20),
                           torch.zeros(20, 1, 28, 28), torch.zeros(20), 10)
    [fwd] = kernels.fused_kernels_in_epoch(common.ARCHS["cnn"], dd, 4, 100, [dict(name="_fwd_kernel", ms=1.0)])
    assert fwd["tflop"] * 1e12 == 4 * (100 + 512 + 2 * (20 + 20 + 100)) * (conv1 + conv2)


def test_kernels_mode_ranks_where_an_epoch_spends_its_time(tmp_path, capsys):
    code = bench.main(["kernels", "--device", "cpu", "--models", "mlp", "--samples", "1024", "--populations", "2",
                       "--batch", "128", "--raw-dir", str(tmp_path / "raw"), "--out-dir", str(tmp_path)])
    assert code == 0
    result = json.loads((tmp_path / "kernels-cpu.json").read_text())["mlp-native-fp32-K2"]
    rows, meta = result["rows"], result["meta"]
    assert meta["K"] == 2 and meta["samples"] == 2 * 1024 and meta["time_kind"] == "cpu"
    assert 0 < len(rows) <= 15 and any("mm" in r["name"] for r in rows)  # the MLP's matrix products are there
    assert [r["ms"] for r in rows] == sorted((r["ms"] for r in rows), reverse=True)
    assert all(r["ms"] > 0 and r["calls"] > 0 for r in rows) and 0 < sum(r["share"] for r in rows) <= 1 + 1e-9
    assert math.isclose(sum(r["ms"] for r in rows) / meta["profiled_ms"], sum(r["share"] for r in rows))
    assert "ms of cpu time" in capsys.readouterr().out


def test_kernels_mode_profiles_each_tile_set_under_its_tiles(tmp_path, monkeypatch, capsys):
    """--triton-tiles in kernels mode: a profile per tile set of the fused kernels, after the
    defaults', each taken with those tiles in force and stored under its own key."""
    from tunebench.kernels import fused_conv as fused_conv

    seen = []

    def fake_kernel_table(cfg, K, dd, precision, n, conv_impl="native", top=15):
        seen.append((conv_impl, fused_conv.GRAD_CL, fused_conv.NUM_WARPS))
        return {"meta": {"device": "cpu", "model": cfg.model, "K": K, "precision": precision, "conv": conv_impl,
                         "samples": n * K, "profiled_ms": 1.0, "time_kind": "cpu"}, "rows": []}

    monkeypatch.setattr(kernels, "kernel_table", fake_kernel_table)
    assert bench.main(["kernels", "--device", "cpu", "--models", "cnn", "--conv", "native,triton", "--triton-tiles",
                       "G=0;G=0,W=8", "--samples", "256", "--populations", "2", "--batch", "128",
                       "--raw-dir", str(tmp_path / "raw"), "--out-dir", str(tmp_path)]) == 0
    warps = fused_conv.NUM_WARPS
    assert seen == [("native", 1, warps), ("triton", 1, warps), ("triton", 0, warps), ("triton", 0, 8)]
    assert fused_conv.GRAD_CL == 1  # restored
    result = json.loads((tmp_path / "kernels-cpu.json").read_text())
    assert list(result) == ["cnn-native-fp32-K2", "cnn-triton-fp32-K2", "cnn-triton-G=0-fp32-K2",
                            "cnn-triton-G=0,W=8-fp32-K2"]
    assert [r["meta"]["tiles"] for r in result.values()] == ["default", "default", "G=0", "G=0,W=8"]
    assert "conv=triton tiles G=0,W=8 on cpu" in capsys.readouterr().out


def test_gpu_check_script_summarises_what_the_steps_left(tmp_path):
    """scripts/gpu_check.sh with no step: its set-up, its summary of the JSON the steps
    write (given here from a tiny CPU run of each bench mode) and its log archive - the
    parts no CPU dry run of a GPU step would otherwise check before a GPU session."""
    import os
    import subprocess
    import tarfile

    out = tmp_path / "out"
    raw = str(tmp_path / "raw")
    assert bench.main(["throughput", "--device", "cpu", "--models", "mlp", "--samples", "512", "--populations", "2",
                       "--tutorial-samples", "128", "--batch", "128", "--raw-dir", raw, "--out-dir", str(out / "bench")]) == 0
    assert bench.main(["kernels", "--device", "cpu", "--models", "mlp", "--samples", "512", "--populations", "2",
                       "--batch", "128", "--raw-dir", raw, "--out-dir", str(out / "bench")]) == 0
    root = Path(__file__).parent.parent
    env = {**os.environ, "OUT": str(out), "PY": sys.executable, "STEPS": "none"}
    proc = subprocess.run(["bash", str(root / "scripts" / "gpu_check.sh")], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    summary = (out / "summary.txt").read_text()
    assert "throughput-cpu.json fp32" in summary and "(c) engine, population 2" in summary
    assert "mlp K=2 fp32 conv=native on cpu" in summary
    assert "fp32: CNN population: no row measured" in summary  # the target line, for an MLP-only table
    with tarfile.open(out / "logs.tgz") as archive:
        assert archive.getnames() == ["logs"]
    assert sorted(p.name for p in out.iterdir()) == ["bench", "env.txt", "logs.tgz", "summary.txt"]


def test_gpu_check_step_tells_a_time_out_from_another_kill(tmp_path):
    """scripts/step.sh, each gpu_check step's wrapper: a command stopped at its limit by
    SIGTERM, or one that ignores SIGTERM and is killed 10 s later (Snakemake cleaning up
    its jobs did, on a loaded CPU), is reported as TIMED OUT; a command killed before its
    limit (the kernel's out-of-memory killer) is a failure but not a time-out. Every
    failure is listed and the steps after it still run."""
    import subprocess

    root = Path(__file__).parent.parent
    script = f"""
        OUT={tmp_path}; source {root}/scripts/step.sh
        step polite 1 {tmp_path}/polite.log sleep 30
        step stubborn 1 {tmp_path}/stubborn.log bash -c 'trap "" TERM; sleep 30'
        step killed 60 {tmp_path}/killed.log bash -c 'kill -9 $$'
        step fine 60 {tmp_path}/fine.log true
        echo "failed: ${{failed[*]}}"
    """
    proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    summary = (tmp_path / "summary.txt").read_text()
    outcomes = summary.split("=== ")[1:]
    assert [o.split()[1] for o in outcomes] == ["polite", "stubborn", "killed", "fine"]
    assert "TIMED OUT after 1s\n" in outcomes[0] and "FAILED (exit 124): polite" in outcomes[0]
    assert "TIMED OUT after 1s (killed 10 s later" in outcomes[1] and "FAILED (exit 137): stubborn" in outcomes[1]
    assert "TIMED OUT" not in outcomes[2] and "FAILED (exit 137): killed" in outcomes[2]
    assert "FAILED" not in outcomes[3]
    assert proc.stdout.strip().endswith("failed: polite stubborn killed")


@pytest.mark.slow
def test_gpu_check_pipeline_step_runs_snakemake_and_reads_its_log(tmp_path):
    """gpu_check.sh's `pipeline` step on the smoke project (its ablation half, for time):
    Snakemake through this interpreter, which the rules run although PATH has no Python of
    it (the GPU image has python3 only); the log read back into bench/pipeline-smoke.json;
    the tables come back in pipeline-results.tgz. Then the same step cut off by its time
    limit, and resumed."""
    import base64
    import os
    import shutil
    import subprocess
    import tarfile

    from test_pipeline import make_project

    from tunebench.spec import grid
    from tunebench.pipeline import layout

    (tmp_path / "project").mkdir()
    project = make_project(tmp_path / "project")
    (project / "scripts").mkdir()
    for script in ("gpu_check.sh", "step.sh"):
        shutil.copy(Path(__file__).parent.parent / "scripts" / script, project / "scripts")
    out = tmp_path / "out"
    src = str(Path(__file__).parent.parent / "src")
    env = {"HOME": os.environ.get("HOME", "/root"), "PATH": "/usr/bin:/bin", "PYTHONPATH": src, "OUT": str(out),
           "PY": sys.executable, "STEPS": "pipeline", "PIPELINE_PROFILE": P, "PIPELINE_CORES": "2",
           "PIPELINE_GPU_SLOTS": "2", "PIPELINE_ARGS": f"{RESULTS}/runs.parquet", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(["bash", "scripts/gpu_check.sh"], cwd=project, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    summary = json.loads((out / "bench" / f"pipeline-{P}.json").read_text())
    # The data sets prepared, the ablation jobs, the aggregate: all done, 2 training jobs side by side.
    params = smoke_params()
    n_data = len({params.workloads[wl].dataset for wl, _ in grid.jobs(params)})
    n_steps = n_data + len(ablation_jobs()) + 1
    assert (summary["steps_done"], summary["steps_total"], summary["complete"]) == (n_steps, n_steps, True)
    assert {r["rule"]: r["done"] for r in summary["per_rule"]} == {
        "prepare_data": n_data, "run_ablation": len(ablation_jobs()), "aggregate": 1}
    assert summary["training_jobs_at_once"] == 2 and summary["wall_seconds"] > 0
    assert f"{n_steps} of {n_steps} steps (complete)" in (out / "summary.txt").read_text()
    with tarfile.open(out / "pipeline-results.tgz") as archive:
        names = archive.getnames()
    job = ablation_jobs()[0]
    assert {f"{RESULTS}/runs.parquet", layout.ablation_table(P, *job.split("/")),
            f"{layout.logs(P)}/aggregate.log"} <= set(names)
    assert not [n for n in names if ".checkpoints" in n]
    assert sorted(p.name for p in out.iterdir()) == ["bench", "env.txt", "logs.tgz", "pipeline-results.tgz",
                                                     "summary.txt"]

    # A pipeline cut off by its time limit (a GPU lease's): a failed step and an incomplete
    # summary, not a crash; what it finished still comes back.
    shutil.rmtree(out)
    for made in ("results", "logs", "reports", ".snakemake", "data/prepared"):
        shutil.rmtree(project / made, ignore_errors=True)
    proc = subprocess.run(["bash", "scripts/gpu_check.sh"], cwd=project, env={**env, "PIPELINE_S": "6"},
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "TIMED OUT after 6s" in proc.stdout and "FAILED steps: snakemake" in proc.stdout
    summary = json.loads((out / "bench" / f"pipeline-{P}.json").read_text())
    assert not summary["complete"] and summary["steps_done"] < n_steps
    assert (out / "pipeline-results.tgz").is_file() and "(NOT complete)" in (out / "summary.txt").read_text()
    # A table whose job ended as the limit struck may be marked incomplete: that one is redone.
    incomplete = project / ".snakemake" / "incomplete"
    marked = {base64.b64decode(m.name).decode() for m in incomplete.iterdir()} if incomplete.is_dir() else set()
    done_before = {p: p.stat().st_mtime_ns for p in (project / "results").rglob("*.parquet")
                   if str(p.relative_to(project)) not in marked}

    # The next call on the same machine resumes it: the steps its log saw finish do not run
    # again (a job that finished as the limit struck may also count as done), and the tables
    # already made are kept as they are.
    shutil.rmtree(out)
    proc = subprocess.run(["bash", "scripts/gpu_check.sh"], cwd=project, env={**env, "PIPELINE_RESUME": "1"},
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    resumed = json.loads((out / "bench" / f"pipeline-{P}.json").read_text())
    assert resumed["complete"] and resumed["steps_total"] <= n_steps - summary["steps_done"]
    assert resumed["per_rule"][-1]["rule"] == "aggregate"
    assert {p: p.stat().st_mtime_ns for p in done_before} == done_before
