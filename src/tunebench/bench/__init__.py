"""Throughput, per-job and kernel timing: `python -m tunebench.bench [throughput|jobs|kernels|registers] ...`.

throughput (default): samples/s on one device, in one process, for the reference CNN
(conv32-conv64-fc128) and an MLP (2x256) on Fashion-MNIST-shaped data:
  (a) the PyTorch tutorial loop: torchvision FashionMNIST + DataLoader(batch 64) + torch.optim.SGD,
  (b) the engine with one run (engine.train_population, batch 512),
  (c) the engine with populations of K runs (model-samples/s = K x samples/s).
jobs: wall time of every ablation job of a params.yaml (experiment) profile, trained in-process.
kernels: where one engine epoch of a population spends its time, per kernel (torch.profiler;
device time on CUDA, CPU time on a CPU): what to speed up next.
registers: the fused Triton kernels compiled for an H100/H200 (sm_90) without a GPU, with
ptxas's registers per thread, spilled bytes and shared memory, the resident warps per SM,
the tensor-core instruction and the asynchronous copies, per precision and tile set.
Results go to results/bench/*.json (written atomically).

One module a mode (throughput, jobs, kernels, registers), their shared parts in common,
the command line in cli."""

from tunebench.bench.cli import main

__all__ = ["main"]
