# Helpers with plain names: the rules stay thin and free of logic.
import json
import shlex

from tunebench.core import data, devices
from tunebench.spec import grid
from tunebench.pipeline import journals, layout, locks, stages
from tunebench.spec.config import SearchSettings

P = PARAMS.profile
RESULTS = layout.results(P)
REPORT_DIR = layout.report_dir(P)
LOGS = layout.logs(P)
METRICS = layout.METRICS
# The jobs' command: this interpreter, whatever PATH holds (the Snakefile sets PYTHONPATH).
TB = f"{shlex.quote(sys.executable)} -m tunebench.pipeline.cli"

# Asked once, as the Snakefile is read (a bad TUNEBENCH_DEVICE fails here, naming it).
LOCAL_GPU = devices.local_gpu()

# A user dataset that is missing, unreadable or lacks an array fails now, before any job runs.
for _name in grid.datasets_used(PARAMS):
    if _name in PARAMS.data.user:
        data.check_user_file(_name, PARAMS.data.user[_name].path, workflow.basedir)

# One intra-op thread per training job, whatever --cores: more threads split the float sums
# of oneDNN's and MKL's kernels differently, so a job's results would depend on the cores it
# was given (quick profile, 2-core CPU: 2 threads instead of 1 changed 70 of 1,308 runs, the
# CNN and batch-norm ones, and C22's verdict). Parallelism comes from jobs side by side
# instead, which was also faster there (benchmarks/cpu-pipeline-2026-11-27/NOTES.md).
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
    """The modules that compute `rule`'s outputs (tunebench.pipeline.stages), as its inputs: an edit
    to one reruns the jobs it feeds. Snakemake compares the text of inputs whose times
    changed, so a checkout or `touch` reruns nothing."""
    return stages.module_files(rule)


def profile_flag():
    return f"--profile {P}"


def prepared(dataset):
    return layout.prepared(P, dataset)


def workload_data(wildcards):
    """The prepared data of an ablation's workload or of a search unit's ("<workload>~<space>")."""
    workload, _ = SearchSettings.split(wildcards.workload)
    return prepared(PARAMS.workloads[workload].dataset)


def user_file(wildcards):
    """A user dataset's own file, as its preparation's input: an edit to it reruns that
    dataset's preparation (and what reads it) only."""
    user = PARAMS.data.user.get(wildcards.dataset)
    return [user.path] if user else []


def ablation_tables():
    return [layout.ablation_table(P, wl, dim) for wl, dim in grid.jobs(PARAMS)]


def search_tables():
    s = PARAMS.search_settings()
    return [layout.search_table(P, unit, st) for unit in s.units() for st in s.strategies]


def search_importances():
    return [t.replace(".parquet", ".importance.json") for t in search_tables()]


def benchmarks():
    return [layout.benchmark(t) for t in ablation_tables() + search_tables()]


def all_prepared():
    return [prepared(d) for d in grid.datasets_used(PARAMS)]


def prepared_summaries():
    return [layout.prepared_summary(P, d) for d in grid.datasets_used(PARAMS)]


# Settings each job depends on, as JSON: Snakemake reruns a job when its own settings
# change (rerun trigger "params"), and only that job. A dataset's are its own: the split,
# its caps, its generator seed if synthetic, its entry if a user's (adding a user dataset
# prepares that one only).
def data_settings(wildcards):
    return json.dumps(data.preparation_settings(PARAMS, wildcards.dataset), sort_keys=True)


def job_settings(wildcards):
    runs = grid.job_runs(PARAMS, wildcards.workload, wildcards.dimension)
    return json.dumps([[r.arm, r.seed, r.config.model_dump()] for r in runs], sort_keys=True)


def search_job_settings(wildcards):
    s = PARAMS.search_settings().for_unit(wildcards.workload)
    base = grid.base_layers(PARAMS, SearchSettings.split(wildcards.workload)[0], None)
    return json.dumps([s.model_dump(), base], sort_keys=True, default=str)


# The search code's version, read once as the Snakefile is read.
SEARCH_CODE = stages.code_digest("run_search")


def search_journal(wildcards):
    """The Optuna journal is keyed by the job's settings and the search code's text: an
    interrupted job resumes from its journal, while changed settings or code start fresh
    studies instead of mixing two experiments (or re-emitting the old code's trials)."""
    folder = f"{RESULTS}/search/{wildcards.workload}"
    return str(journals.journal_path(folder, wildcards.strategy, search_job_settings(wildcards), SEARCH_CODE))


def figure_category(wildcards):
    """The Snakemake report's group of a figure: the claims that read it."""
    return CLAIMS.figure_group(wildcards.figure)


# A lock left by a killed Snakemake (none runs here now) would stop this run with a bare
# LockException: remove it, as `snakemake --unlock` would, and say so.
try:
    for _lock in locks.remove_stale(workflow.basedir):
        print(f"tunebench: removed {_lock}, a lock left by a Snakemake that was killed (none runs here now)",
              file=sys.stderr)
except locks.StaleLockWithJobs as err:
    sys.exit(f"tunebench: {err}")
