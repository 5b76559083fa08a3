# Helpers with plain names: the rules stay thin and free of logic.
import json

from tunebench import devices, grid, journals, stages

# Asked once, as the Snakefile is read (a bad TUNEBENCH_DEVICE fails here, naming it).
LOCAL_GPU = devices.local_gpu()

# One intra-op thread per training job, whatever --cores: more threads split the float sums
# of oneDNN's and MKL's kernels differently, so a job's results would depend on the cores it
# was given (quick profile, 2-core CPU: 2 threads instead of 1 changed 70 of 1,308 runs, the
# CNN and batch-norm ones, and C22's verdict). Parallelism comes from jobs side by side
# instead, which was also faster there: 703 s one job at a time with 2 threads, 482 s two at
# a time with 1 thread (benchmarks/cpu-pipeline-2026-11-27/NOTES.md).
TRAIN_THREADS = 1


def train_gpus(wildcards):
    """The `gpu` resource a training job takes. 1 where it trains on a GPU: a local CUDA
    device (LOCAL_GPU: device files, CUDA_VISIBLE_DEVICES, or TUNEBENCH_DEVICE), or
    any cluster executor (whose profile turns it into `sbatch --gpus=1`, or drops it). There
    the `gpu` slots (--resources gpu=N; the default profile sets 1) say how many share the
    GPU. 0 on a CPU-only machine: then as many training jobs run at once as --cores allows,
    one core each. A callable, so Snakemake asks it per job once the executor is known
    (while the Snakefile is read, `workflow.local_exec` is True under any executor)."""
    return 1 if not workflow.local_exec or LOCAL_GPU else 0


def code(rule):
    """The modules that compute `rule`'s outputs (tunebench.stages), as its inputs: an edit
    to one reruns the jobs it feeds. Snakemake compares the text of inputs whose times
    changed, so a checkout or `touch` reruns nothing."""
    return stages.module_files(rule)


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
    return json.dumps([PARAMS.data.model_dump(), *PARAMS.active.caps(wildcards.dataset)], sort_keys=True)


def job_settings(wildcards):
    runs = grid.job_runs(PARAMS, wildcards.workload, wildcards.dimension)
    return json.dumps([[r.arm, r.seed, r.config.model_dump()] for r in runs], sort_keys=True)


def search_job_settings(wildcards):
    s = PARAMS.search_settings()
    base = grid.base_layers(PARAMS, wildcards.workload, None)
    return json.dumps([s.model_dump(), base], sort_keys=True, default=str)


# The search code's version, read once as the Snakefile is read.
SEARCH_CODE = stages.code_digest("run_search")


def search_journal(wildcards):
    """The Optuna journal is keyed by the job's settings and the search code's text: an
    interrupted job resumes from its journal, while changed settings or code start fresh
    studies instead of mixing two experiments (or re-emitting the old code's trials)."""
    folder = f"results/search/{wildcards.workload}"
    return str(journals.journal_path(folder, wildcards.strategy, search_job_settings(wildcards), SEARCH_CODE))
