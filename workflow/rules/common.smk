# Helpers with plain names: the rules stay thin and free of logic.
import hashlib
import json

from tunebench import grid


def gpu_slots():
    """Training jobs at once: the `gpu` resource of this invocation (`--resources gpu=N`;
    the default profile sets 1: one job per GPU)."""
    slots = workflow.global_resources.get("gpu")
    slots = getattr(slots, "value", slots)  # Snakemake wraps the number in a Resource
    return max(1, int(slots)) if slots else 1


def train_threads():
    """Each training job's share of the cores. Not all of them: a job claiming every core
    would run alone whatever `--resources gpu=N` allows (Snakemake counts threads against
    --cores). On one GPU, 2-3 jobs side by side overlap one job's process start-up and CUDA
    warm-up with another's training; each sizes its populations from the GPU memory still
    free, and halves one on a CUDA out-of-memory error (engine.train_population)."""
    return max(1, workflow.cores // gpu_slots())


def profile_flag():
    return f"--profile {PARAMS.profile}"


def prepared(dataset):
    return f"data/prepared/{dataset}.npz"


def workload_data(wildcards):
    return prepared(PARAMS.workloads[wildcards.workload].dataset)


def ablation_tables():
    return [f"results/ablations/{wl}/{dim}.parquet" for wl, dim in grid.jobs(PARAMS)]


def search_tables():
    s = PARAMS.search_settings()
    return [f"results/search/{wl}/{st}.parquet" for wl in s.workloads for st in s.strategies]


def search_importances():
    return [t.replace(".parquet", ".importance.json") for t in search_tables()]


def all_prepared():
    return [prepared(d) for d in grid.datasets_used(PARAMS)]


# Settings each job depends on, as JSON: Snakemake reruns a job when its own settings
# change (rerun trigger "params"), and only that job.
def data_settings(wildcards):
    return json.dumps([PARAMS.data.model_dump(), PARAMS.active.max_train, PARAMS.active.max_test], sort_keys=True)


def job_settings(wildcards):
    runs = grid.job_runs(PARAMS, wildcards.workload, wildcards.dimension)
    return json.dumps([[r.arm, r.seed, r.config.model_dump()] for r in runs], sort_keys=True)


def search_job_settings(wildcards):
    s = PARAMS.search_settings()
    base = grid.base_layers(PARAMS, wildcards.workload, None)
    return json.dumps([s.model_dump(), base], sort_keys=True, default=str)


def search_journal(wildcards):
    """The Optuna journal is keyed by the job's settings: an interrupted job resumes from its
    journal, while changed settings start fresh studies instead of mixing two experiments."""
    digest = hashlib.sha256(search_job_settings(wildcards).encode()).hexdigest()[:10]
    return f"results/search/{wildcards.workload}/{wildcards.strategy}-{digest}.journal"
