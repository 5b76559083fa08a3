"""Typed, validated settings: params.yaml -> Params, and one run's RunConfig.

params.yaml is the single source of the experiment grid. It is validated as a whole when
loaded, before anything trains: an unknown key at any level, a wrong type or a bad value
fails with one message that names the key path and the value (ConfigError), so a typo
never silently becomes a default.

A run's settings are layered, later layers win:
    train  <  profiles.<p>.train  <  workloads.<w>.fixed  <  dimensions.<d>.fixed
           <  profiles.<p>.dimensions.<d>  <  the arm (one point of dimensions.<d>.grid)
"""

from __future__ import annotations

import itertools
import math
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

MODELS = ("softmax", "mlp", "cnn", "rnn", "embedbag")
ACTIVATIONS = ("relu", "leaky_relu", "sigmoid", "tanh", "gelu")
INITS = (
    "default",  # PyTorch's own layer defaults (kaiming_uniform with a=sqrt(5))
    "normal_1",  # N(0, 1): the old TensorFlow random_normal default stddev
    "normal_0.1",  # the same, at the scales a reader of "normal" might mean instead
    "normal_0.05",
    "normal_0.01",
    "zeros",
    "xavier_uniform",
    "xavier_normal",
    "kaiming_normal",
    "orthogonal",
)
EMBED_INITS = ("glorot_uniform", "uniform_0.05", "normal_1")
HEADS = ("softmax", "sigmoid", "linear")
# The datasets tunebench prepares itself (tunebench.core.data.DATASETS loads them; a test
# checks that the two lists agree); a user's own are declared under data.user.
BUILTIN_DATASETS = ("fashion_mnist", "mnist", "digits", "diabetes", "synth_tokens", "synth_tokens_30k",
                    "synth_sparse", "cifar10")
TASKS = ("multiclass", "binary", "regression")
OPTIMIZERS = ("sgd", "momentum", "adagrad", "adadelta", "rmsprop", "adam")
# Library defaults (torch.optim; Keras for SGD, which has none in torch): used for lr "default".
DEFAULT_LR = {"sgd": 0.01, "momentum": 0.01, "adagrad": 0.01, "adadelta": 1.0, "rmsprop": 0.01, "adam": 0.001}
SCHEDULES = (
    "constant",
    "step_0.1", "step_0.3", "step_0.5",  # multiply lr at 50% and 75% of the epochs
    "plateau_0.1", "plateau_0.3", "plateau_0.5",  # multiply lr when val accuracy stalls
    "cosine",  # modern reference: cosine to 0 over the epochs
    "linear",  # linear decay toward 0 over the epochs (the Playbook's other recommended family)
)
AUGMENTS = ("none", "shift", "flip", "both")


class ConfigError(ValueError):
    """A bad params.yaml: the message names the key path and the offending value."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RunConfig(_Strict):
    """Everything that defines one training run (besides the data and the seed)."""

    # --- model ---
    model: Literal[MODELS] = "mlp"
    depth: int = Field(1, ge=0, le=64)  # hidden layers (mlp, rnn: 1), conv layers (cnn: >= 2)
    width: int = Field(128, ge=1, le=4096)  # hidden units; cnn: channels of the first conv
    activation: Literal[ACTIVATIONS] = "relu"
    init: Literal[INITS] = "default"
    embed_init: Literal[EMBED_INITS] = "uniform_0.05"
    embed_dim: int = Field(32, ge=1, le=1024)
    batchnorm: bool = False
    # Residual blocks (models.MLP, models.CNN): hidden layers after the first in pairs,
    # h <- act(h + branch(h)), the branch's last layer (or its batch norm's scale) starting at
    # zero, so every block starts as the identity (Goyal et al. 2017; Fixup, Zhang et al. 2019).
    residual: bool = False
    dropout: float = Field(0.0, ge=0.0, lt=1.0)  # drop probability after each hidden layer
    head: Literal[HEADS] = "softmax"  # output activation + matching loss
    task: Literal[TASKS] = "multiclass"  # binary: label = class >= n_classes / 2
    # --- optimisation ---
    optimizer: Literal[OPTIMIZERS] = "sgd"
    lr: float | Literal["default"] = 0.05  # "default" = the optimizer's library default
    lr_scale: float = Field(1.0, gt=0.0)  # multiplies lr: a grid of lr relative to each optimizer's default
    momentum: float = Field(0.9, ge=0.0, lt=1.0)  # only the "momentum" optimizer uses it
    l2: float = Field(0.0, ge=0.0)  # loss += l2 * sum(w^2) over weight matrices/kernels
    l1: float = Field(0.0, ge=0.0)  # loss += l1 * sum(|w|) over weight matrices/kernels
    # How l2 enters the loss: "mean_loss" adds l2 * sum(w^2) to the mean loss (Keras'
    # kernel_regularizer, torch's weight_decay up to a factor 2); "per_example" adds
    # l2 / (2 n) * sum(w^2), n the run's training examples (the lambda / 2m of Ng's course and
    # of Nielsen's book), under which l2 = 1 is a small penalty on a large training set.
    l2_convention: Literal["mean_loss", "per_example"] = "mean_loss"
    clip_norm: float | None = Field(None, gt=0.0)  # clip the global gradient norm (all parameters) to this; None: off
    schedule: Literal[SCHEDULES] = "constant"
    plateau_patience: int = Field(1, ge=1)  # epochs without val gain before a plateau decay
    patience: int | None = Field(None, ge=1)  # early stopping on val accuracy; None = off
    # Score the weights of the best validation epoch (Keras' restore_best_weights), not the last.
    restore_best: bool = False
    epochs: int = Field(5, ge=1, le=10_000)
    steps: int | None = Field(None, ge=1)  # a budget of optimizer updates, replacing epochs (None: epochs)
    batch_size: int = Field(128, ge=1)
    train_fraction: float = Field(1.0, gt=0.0, le=1.0)
    augment: Literal[AUGMENTS] = "none"
    target_accuracy: float = Field(0.8, gt=0.0, le=1.0)  # for "epochs to target"
    # Validation accuracy measured this many times per epoch (at equal shares of its steps),
    # so the time to the target resolves fractions of an epoch.
    evals_per_epoch: int = Field(1, ge=1, le=64)
    # A second (third ...) set of random draws for the same seed: initial weights, data order,
    # dropout masks and augmentation all change, the settings do not (the A/A control claim).
    replicate: int = Field(0, ge=0)

    @field_validator("lr")
    @classmethod
    def _lr_positive(cls, v):
        if v != "default" and not (isinstance(v, (int, float)) and v > 0 and math.isfinite(v)):
            raise ValueError("must be > 0 (or 'default')")
        return v

    @model_validator(mode="after")
    def _consistent(self):
        if self.task == "regression" and self.head == "softmax":
            raise ValueError("head 'softmax' makes no sense for task 'regression'")
        if self.model == "cnn" and self.depth < 2:
            raise ValueError("cnn needs depth >= 2 (conv layers)")
        return self

    @property
    def resolved_lr(self) -> float:
        return (DEFAULT_LR[self.optimizer] if self.lr == "default" else float(self.lr)) * self.lr_scale


RUN_FIELDS = tuple(RunConfig.model_fields)


class Workload(_Strict):
    dataset: str
    model: Literal[MODELS]
    description: str = ""
    fixed: dict[str, Any] = Field(default_factory=dict)  # RunConfig overrides


def _check_arms(grid: dict[str, list[Any]]) -> dict[str, list[Any]]:
    """Every grid key has arms, each once: a repeated value would train the same arm twice
    and give it twice the weight of the others in a best-of-set pick."""
    for key, values in grid.items():
        if not values:
            raise ValueError(f"grid key '{key}' has an empty list of arms")
        # 1 and 1.0 are one arm (one run config); "1" and True are others.
        seen = [float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else yaml.safe_dump(v)
                for v in values]
        repeated = sorted({str(v) for v, key in zip(values, seen) if seen.count(key) > 1})
        if repeated:
            raise ValueError(f"grid key '{key}' lists the arm {', '.join(repeated)} more than once")
    return grid


def _distinct(name: str, values: list) -> list:
    repeated = sorted({v for v in values if values.count(v) > 1})
    if repeated:
        raise ValueError(f"{name} must be distinct; repeated: {', '.join(map(str, repeated))}")
    return values


class Dimension(_Strict):
    workloads: list[str] = Field(min_length=1)
    grid: dict[str, list[Any]] = Field(min_length=1)  # RunConfig field -> arm values (product)
    fixed: dict[str, Any] = Field(default_factory=dict)
    # Train the profile's selection seeds too: a claim picks the best arm of a set here, on
    # those seeds, and compares it on the others (tunebench.analysis.select).
    select: bool = False

    @field_validator("grid")
    @classmethod
    def _arms(cls, v):
        return _check_arms(v)

    @field_validator("workloads")
    @classmethod
    def _unique(cls, v):
        return _distinct("workloads", v)


class DatasetCaps(_Strict):
    max_train: int | None = Field(None, ge=10)
    max_test: int | None = Field(None, ge=10)


class Only(_Strict):
    """A profile's share of the grid: only these dimensions and workloads (None: all)."""

    dimensions: list[str] | None = None
    workloads: list[str] | None = None


class Profile(_Strict):
    seeds: list[int] = Field(min_length=1)
    max_train: int | None = Field(None, ge=10)  # training examples kept per dataset (None: all)
    max_test: int | None = Field(None, ge=10)
    # Per-dataset caps: a key set here replaces the profile's for that dataset (null: all).
    datasets: dict[str, DatasetCaps] = Field(default_factory=dict)
    train: dict[str, Any] = Field(default_factory=dict)  # RunConfig overrides for every run
    dimensions: dict[str, dict[str, Any]] = Field(default_factory=dict)  # per-dimension overrides
    grids: dict[str, dict[str, list[Any]]] = Field(default_factory=dict)  # per-dimension grid overrides
    search: dict[str, Any] = Field(default_factory=dict)  # SearchSettings overrides
    only: Only = Field(default_factory=Only)  # run a share of the grid (the smoke profile)
    skip: list[str] = Field(default_factory=list)  # "<workload>/<dimension>" jobs this profile leaves out
    # Per-dimension seeds, replacing `seeds` for that dimension (cheap dimensions get more).
    dimension_seeds: dict[str, list[int]] = Field(default_factory=dict)
    # Seeds on which the best arm of a set is chosen and which are never compared (dimensions
    # with `select: true` train them as well).
    selection_seeds: list[int] = Field(default_factory=list)

    @field_validator("seeds")
    @classmethod
    def _unique(cls, v):
        return _distinct("seeds", v)

    @field_validator("dimension_seeds")
    @classmethod
    def _unique_per_dimension(cls, v):
        for dim, seeds in v.items():
            if not seeds:
                raise ValueError(f"{dim}: an empty list of seeds")
            _distinct(f"{dim} seeds", seeds)
        return v

    def seeds_for(self, dimension: str) -> list[int]:
        """The compared seeds of `dimension` (its selection seeds are separate)."""
        return self.dimension_seeds.get(dimension, self.seeds)

    @model_validator(mode="after")
    def _selection_apart(self):
        _distinct("selection_seeds", self.selection_seeds)
        for dim, seeds in {"": self.seeds, **self.dimension_seeds}.items():
            shared = sorted(set(seeds) & set(self.selection_seeds))
            if shared:
                raise ValueError(f"selection_seeds {shared} are also compared seeds{f' of {dim}' if dim else ''}: "
                                 "the best arm is chosen on seeds that are never compared")
        return self

    @field_validator("grids")
    @classmethod
    def _arms(cls, v):
        for dim, grid in v.items():
            try:
                _check_arms(grid)
            except ValueError as err:
                raise ValueError(f"{dim}: {err}") from None
        return v

    def caps(self, dataset: str) -> tuple[int | None, int | None]:
        """(max_train, max_test) for `dataset`: a cap its entry under `datasets` sets,
        else the profile's."""
        own = self.datasets.get(dataset)
        set_here = own.model_fields_set if own else set()
        return (own.max_train if "max_train" in set_here else self.max_train,
                own.max_test if "max_test" in set_here else self.max_test)


class UserData(_Strict):
    """A dataset of the user's: an .npz with x_train, y_train, x_test, y_test."""

    path: str  # relative to the project root, e.g. data/raw/<name>.npz
    task: Literal["multiclass", "regression"] = "multiclass"
    kind: Literal["image", "tabular"] = "tabular"


class DataSettings(_Strict):
    allow_download: bool = False
    download_timeout_s: float = Field(10.0, gt=0)
    val_fraction: float = Field(0.1, gt=0.0, lt=0.9)
    split_seed: int = 0
    synthetic_seed: int = 0
    user: dict[str, UserData] = Field(default_factory=dict)


UNIT_SEP = "~"  # "<workload>~<space>": a workload searched in a named space (SearchSettings.units)


class SearchSpace(_Strict):
    lr: tuple[float, float] = (1e-4, 1.0)  # log-uniform
    l2: tuple[float, float] = (1e-6, 1e-1)  # log-uniform
    dropout: tuple[float, float] = (0.0, 0.6)
    width: list[int] = Field(default_factory=lambda: [32, 64, 128, 256])


class SearchSettings(_Strict):
    workloads: list[str] = Field(default_factory=list)
    strategies: list[Literal["grid", "random", "coarse_to_fine", "qmc", "tpe", "gp"]] = Field(
        default_factory=lambda: ["grid", "random", "coarse_to_fine", "qmc", "tpe", "gp"]
    )
    trials: int = Field(16, ge=4)  # per study
    batch: int = Field(4, ge=1)  # trials trained at once (ask/tell)
    study_seeds: list[int] = Field(default_factory=lambda: [0, 1, 2])
    coarse_fraction: float = Field(0.5, gt=0.0, lt=1.0)  # share of trials in the coarse stage
    target_accuracy: float | None = None  # for "trials to target"; None: workload's target
    storage: str | None = None  # Optuna storage URL (e.g. postgresql://...); None: journal file
    space: SearchSpace = Field(default_factory=SearchSpace)
    # Further search spaces, by name: each workload is searched in `space` (the study unit
    # "<workload>") and in each of these ("<workload>~<name>"), so a strategy's standing can be
    # checked across spaces. A parameter whose range is one value is not searched.
    spaces: dict[str, SearchSpace] = Field(default_factory=dict)
    fixed: dict[str, Any] = Field(default_factory=dict)

    @field_validator("study_seeds", "workloads", "strategies")
    @classmethod
    def _unique(cls, v, info):
        return _distinct(info.field_name, v)

    @field_validator("spaces")
    @classmethod
    def _names(cls, v):
        for name in v:
            if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
                raise ValueError(f"space name {name!r}: letters, digits, '_' and '-' only (it names files)")
        return v

    def units(self) -> list[str]:
        """The search units: each workload in the main space, then in each named space."""
        return list(self.workloads) + [f"{wl}{UNIT_SEP}{name}" for wl in self.workloads for name in self.spaces]

    @staticmethod
    def split(unit: str) -> tuple[str, str | None]:
        """A unit's (workload, space name); None: the main space."""
        workload, _, space = unit.partition(UNIT_SEP)
        return workload, (space or None)

    def for_unit(self, unit: str) -> "SearchSettings":
        """These settings as one unit's studies see them: its space as `space`."""
        _, name = self.split(unit)
        if name is not None and name not in self.spaces:
            raise ConfigError(f"search unit {unit!r}: no search.spaces.{name}; known: {', '.join(self.spaces) or 'none'}")
        return self.model_copy(update={"space": self.spaces[name] if name else self.space, "spaces": {}})


class Params(_Strict):
    profile: str
    profiles: dict[str, Profile] = Field(min_length=1)
    claims: list[str] = Field(default_factory=lambda: ["claims/post.yaml"])  # claims files, one per advice source
    data: DataSettings = Field(default_factory=DataSettings)
    train: dict[str, Any] = Field(default_factory=dict)
    workloads: dict[str, Workload] = Field(min_length=1)
    dimensions: dict[str, Dimension] = Field(default_factory=dict)
    search: SearchSettings = Field(default_factory=SearchSettings)

    @property
    def active(self) -> Profile:
        return self.profiles[self.profile]

    def search_settings(self) -> SearchSettings:
        merged = {**self.search.model_dump(), **self.active.search}
        return SearchSettings.model_validate(merged)


def _format(err: ValidationError, prefix: str = "") -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in (prefix, *e["loc"]) if p != "")
        value = e.get("input")
        shown = repr(value) if not isinstance(value, dict) else "{...}"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        lines.append(f"{loc}: {msg} (value: {shown})")
    return "; ".join(lines)


def run_config(layers: list[tuple[str, dict[str, Any]]]) -> RunConfig:
    """Merge override layers (name, dict) into a RunConfig; errors name the layer and key."""
    merged: dict[str, Any] = {}
    for name, layer in layers:
        for key, value in layer.items():
            if key not in RUN_FIELDS:
                raise ConfigError(f"{name}.{key}: unknown run setting (value: {value!r}); known: {', '.join(RUN_FIELDS)}")
            merged[key] = value
        # A bad value is an error even where a later layer overrides it.
        try:
            RunConfig.model_validate(layer)
        except ValidationError as err:
            bad = [e for e in err.errors() if e["loc"] and e["loc"][0] in layer]
            if bad:
                e = bad[0]
                raise ConfigError(f"{name}.{e['loc'][0]}: {e['msg']} (value: {e.get('input')!r})") from None
    try:
        return RunConfig.model_validate(merged)
    except ValidationError as err:
        # Name the layer that set the offending key (the last one that did).
        parts = []
        for e in err.errors():
            key = str(e["loc"][0]) if e["loc"] else ""
            where = next((n for n, layer in reversed(layers) if key in layer), "train")
            parts.append(f"{where}.{key}: {e['msg']} (value: {e.get('input')!r})" if key else f"{layers[-1][0]}: {e['msg']}")
        raise ConfigError("; ".join(parts)) from None


def validate(raw: dict[str, Any], known_datasets: tuple[str, ...]) -> Params:
    """Check params as a whole: schema, cross references, and every run config of the grid."""
    try:
        params = Params.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format(err)) from None
    if params.profile not in params.profiles:
        raise ConfigError(f"profile: unknown profile {params.profile!r}; known: {', '.join(params.profiles)}")
    for pname in params.profiles:
        if not re.fullmatch(r"[A-Za-z0-9_-]+", pname):
            raise ConfigError(f"profiles.{pname}: a profile's name names its folders (results/<profile>/, "
                              "reports/<profile>/): letters, digits, '_' and '-' only")
    clash = sorted(set(known_datasets) & set(params.data.user))
    if clash:
        raise ConfigError(f"data.user.{clash[0]}: {clash[0]!r} is a built-in dataset; give the user data another name")
    datasets = set(known_datasets) | set(params.data.user)
    for name, wl in params.workloads.items():
        if wl.dataset not in datasets:
            raise ConfigError(f"workloads.{name}.dataset: unknown dataset {wl.dataset!r}; known: {', '.join(sorted(datasets))}")
    for dname, dim in params.dimensions.items():
        for wl in dim.workloads:
            if wl not in params.workloads:
                raise ConfigError(f"dimensions.{dname}.workloads: unknown workload {wl!r}")
        for key in dim.grid:
            if key not in RUN_FIELDS:
                raise ConfigError(f"dimensions.{dname}.grid.{key}: unknown run setting; known: {', '.join(RUN_FIELDS)}")
    for pname, prof in params.profiles.items():
        for section in ("dimensions", "grids", "dimension_seeds"):
            for dim in getattr(prof, section):
                if dim not in params.dimensions:
                    raise ConfigError(f"profiles.{pname}.{section}.{dim}: unknown dimension {dim!r}")
        for name in prof.datasets:
            if name not in datasets:
                raise ConfigError(f"profiles.{pname}.datasets.{name}: unknown dataset {name!r}; known: {', '.join(sorted(datasets))}")
        for dim, grid in prof.grids.items():
            for key, values in grid.items():
                if key not in params.dimensions[dim].grid:
                    raise ConfigError(f"profiles.{pname}.grids.{dim}.{key}: not a key of dimensions.{dim}.grid")
                if not values:
                    raise ConfigError(f"profiles.{pname}.grids.{dim}.{key}: empty list of arms")
        for dim in prof.only.dimensions or []:
            if dim not in params.dimensions:
                raise ConfigError(f"profiles.{pname}.only.dimensions: unknown dimension {dim!r}")
        for wl in prof.only.workloads or []:
            if wl not in params.workloads:
                raise ConfigError(f"profiles.{pname}.only.workloads: unknown workload {wl!r}")
        for job in prof.skip:
            wl, _, dim = job.partition("/")
            if dim not in params.dimensions or wl not in params.dimensions[dim].workloads:
                raise ConfigError(f"profiles.{pname}.skip: {job!r} is no job (<workload>/<dimension> of dimensions.<d>.workloads)")
        try:
            SearchSettings.model_validate({**params.search.model_dump(), **prof.search})
        except ValidationError as err:
            raise ConfigError(_format(err, f"profiles.{pname}.search")) from None
    search = params.search_settings()
    for wl in search.workloads:
        if wl not in params.workloads:
            raise ConfigError(f"search.workloads: unknown workload {wl!r}")
    # Build every run config of the active profile now, so a bad arm fails before training.
    for workload, dimension in jobs(params):
        layers = base_layers(params, workload, dimension)
        for factors in arms(params, dimension):
            run_config(layers + [(f"dimensions.{dimension}.grid", dict(factors))])
    return params


# ----------------------------------------------------------------------------- the grid's parts
def arms(params: Params, dimension: str) -> list[tuple[tuple[str, Any], ...]]:
    """Cartesian product of the dimension's grid, in the order params.yaml lists it."""
    grid = {**params.dimensions[dimension].grid, **params.active.grids.get(dimension, {})}
    keys = list(grid)
    return [tuple(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]


def base_layers(params: Params, workload: str, dimension: str | None) -> list[tuple[str, dict[str, Any]]]:
    wl = params.workloads[workload]
    layers = [
        ("train", params.train),
        (f"profiles.{params.profile}.train", params.active.train),
        (f"workloads.{workload}", {"model": wl.model}),
        (f"workloads.{workload}.fixed", wl.fixed),
    ]
    if dimension is not None:
        layers += [
            (f"dimensions.{dimension}.fixed", params.dimensions[dimension].fixed),
            (f"profiles.{params.profile}.dimensions.{dimension}", params.active.dimensions.get(dimension, {})),
        ]
    return layers


def jobs(params: Params) -> list[tuple[str, str]]:
    """(workload, dimension) pairs: one Snakemake job each; the active profile's `only`
    keeps a share of them (the smoke profile runs a few dimensions on tiny data) and its
    `skip` leaves some out (a CPU profile, the CNN jobs a GPU profile runs)."""
    only, skip = params.active.only, set(params.active.skip)
    return [(wl, dim) for dim, spec in params.dimensions.items() if only.dimensions is None or dim in only.dimensions
            for wl in spec.workloads if (only.workloads is None or wl in only.workloads) and f"{wl}/{dim}" not in skip]


def load(path: str | Path, known_datasets: tuple[str, ...] | None = None, profile: str | None = None) -> Params:
    """Read and validate params.yaml; `profile` overrides the file's `profile` key."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    if profile is not None:
        raw = {**raw, "profile": profile}
    if known_datasets is None:
        known_datasets = BUILTIN_DATASETS
    try:
        return validate(raw, known_datasets)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
