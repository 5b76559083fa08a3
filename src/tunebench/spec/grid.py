"""The experiment grid: params -> runs. One pure function used by the Snakefile, the CLI,
the tests and the report, so a run that is missing from the results is a DAG error, never
a silently smaller mean."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# The layering of settings (base_layers), a dimension's arms and the active profile's jobs are
# config's: params.yaml is validated by building every run from them.
from tunebench.spec.config import Params, RunConfig, arms, base_layers, jobs, run_config


@dataclass(frozen=True)
class Run:
    workload: str
    dimension: str
    arm: str  # human label, e.g. "init=xavier_uniform" or "optimizer=adam,depth=8"
    factors: tuple[tuple[str, Any], ...]  # the arm as (key, value) pairs
    seed: int
    config: RunConfig

    @property
    def run_id(self) -> str:
        return f"{self.workload}/{self.dimension}/{self.arm}/s{self.seed}"


def arm_label(factors: tuple[tuple[str, Any], ...]) -> str:
    return ",".join(f"{k}={v}" for k, v in factors)


def seeds(params: Params, dimension: str) -> list[int]:
    """Every seed a dimension's arms train: the compared ones, then the selection seeds where
    a claim chooses the best arm of a set (dimensions.<d>.select)."""
    prof = params.active
    extra = prof.selection_seeds if params.dimensions[dimension].select else []
    return prof.seeds_for(dimension) + extra


def job_runs(params: Params, workload: str, dimension: str) -> list[Run]:
    layers = base_layers(params, workload, dimension)
    runs = []
    for factors in arms(params, dimension):
        label = arm_label(factors)
        cfg: RunConfig = run_config(layers + [(f"dimensions.{dimension}.grid", dict(factors))])
        for seed in seeds(params, dimension):
            runs.append(Run(workload, dimension, label, factors, seed, cfg))
    return runs


def shared_settings(params: Params, workload: str, dimension: str) -> dict[str, Any]:
    """The settings every arm of one job shares, with the values its runs used: every layer
    but the arm's, the profile's overrides included, so a report that shows these cannot
    show a dimension's `fixed` that the active profile overrode. Keys: those some layer of
    params.yaml sets (the rest are RunConfig's defaults), in layer order."""
    runs = job_runs(params, workload, dimension)
    arm_keys = {key for key, _ in runs[0].factors}
    named = dict.fromkeys(key for _, layer in base_layers(params, workload, dimension) for key in layer)
    return {key: getattr(runs[0].config, key) for key in named if key not in arm_keys}


def dimension_workloads(params: Params, dimension: str) -> list[str]:
    """The workloads `dimension` runs on in the active profile (none where `only` leaves it out)."""
    return [wl for wl, dim in jobs(params) if dim == dimension]


def expand(params: Params) -> list[Run]:
    return [run for wl, dim in jobs(params) for run in job_runs(params, wl, dim)]


def datasets_used(params: Params) -> list[str]:
    names = {params.workloads[wl].dataset for wl, _ in jobs(params)}
    names |= {params.workloads[wl].dataset for wl in params.search_settings().workloads}
    return sorted(names)
