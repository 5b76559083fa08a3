"""Advice as data: the claims files (claims/<source>.yaml), their schema and their validation.

A claims file holds one advice source (its citation, language and the family its primary
contrasts form) and its claims. A claim quotes the source verbatim with a translation,
paraphrases it, says what it predicts and which reading of the source is tested, and lists
contrasts. A contrast compares a treatment arm set with a control arm set on one run metric,
per seed (paired), on every workload of the arms' dimension (or the listed ones):

- an arm set is a selector `{dimension: d, <grid key>: value or [values], ...}` (the arms of d
  whose grid values match), a list of selectors (their union, across dimensions), or for the
  search claims `{strategy: s}`; a set of several arms is represented by its best arm on
  validation, chosen on seeds disjoint from the ones compared (analysis.select);
- direction: `higher` or `lower` (the sign of treatment - control the advice predicts), or
  `same` (no difference within the equivalence margin);
- margin: "at least as good", a non-inferiority test against -margin;
- stated: the magnitude the source states (refuted if wholly below half of it, on the
  source's own dataset);
- minus: an interaction, (treatment - control) - (minus.treatment - minus.control);
- equivalence: the margin within which the difference counts as no effect (default: the
  metric's, METRICS);
- primary: exactly one contrast per claim and workload is primary, and only primaries enter
  the family whose error rate the report controls.

Validation (`validate`) runs in the same pass as params.yaml's: an unknown key, an unknown
metric, dimension or strategy, a selector key that is not in the dimension's grid, a
selector that matches no arm of some profile's grid, a claim with no primary or two
primaries on a workload, or a contrast that appears twice, fails naming the claim.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tunebench.spec.config import ConfigError, Params, _format
from tunebench.spec.grid import arms, dimension_workloads

# Run metrics (aggregate.summarize_run and the search studies): label, whether higher is
# better, whether it is a count (an exact sign-flip test instead of the t-test), and the
# default equivalence margin, in the metric's own units.
METRICS: dict[str, tuple[str, bool, bool, float]] = {
    "final_test_acc": ("final test accuracy", True, False, 0.01),
    "test_at_best_val": ("test accuracy at the best validation epoch", True, False, 0.01),
    "test_acc_epoch1": ("test accuracy after epoch 1", True, False, 0.01),
    "final_train_acc": ("final train accuracy", True, False, 0.01),
    "final_test_loss": ("final test loss (MSE, standardised target)", False, False, 0.02),
    "final_train_loss": ("final train loss", False, False, 0.02),
    "loss_epoch1": ("train loss in epoch 1", False, False, 0.05),
    "epochs_to_target": ("epochs to the target validation accuracy (censored at budget+1)", False, True, 0.25),
    "steps_to_target": ("optimizer steps to the target validation accuracy (censored at budget+1 epochs)", False, True, 50.0),
    "epochs_used": ("epochs trained", False, True, 0.5),
    "gap": ("train - test accuracy gap", False, False, 0.01),
    "diverged": ("divergence rate (non-finite loss)", False, True, 0.1),
    "grad_spread": ("log10(max/min) of per-layer gradient norms, epoch 1", False, False, 0.25),
    "grad_trend": ("|slope| of log10 gradient norm per layer, epoch 1 (decades per layer)", False, False, 0.05),
    "trials_to_target": ("trials to the target validation accuracy (never: budget+1)", False, True, 1.0),
    "seconds_to_target": ("training seconds to the target (never: (budget+1)/budget x the total)", False, False, 1.0),
    "best_val": ("best validation accuracy of the study", True, False, 0.005),
}
SEARCH_METRICS = ("trials_to_target", "seconds_to_target", "best_val")


def metric_label(metric: str) -> str:
    return METRICS[metric][0]


def is_count(metric: str) -> bool:
    return METRICS[metric][2]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Selector(BaseModel):
    """Arms of one dimension whose grid values match (`dimension` plus grid keys), or one
    search strategy (`strategy`). Values are compared as the tables write them (text)."""

    model_config = ConfigDict(extra="allow", frozen=True)
    dimension: str | None = None
    strategy: str | None = None
    # A strategy's best after this share of its trial budget (None: the whole budget).
    budget: float | None = Field(None, gt=0, le=1)

    @model_validator(mode="after")
    def _one_kind(self):
        if (self.dimension is None) == (self.strategy is None):
            raise ValueError("an arm selector names a `dimension` (with grid keys) or a `strategy`")
        if self.strategy is not None and self.model_extra:
            raise ValueError(f"a strategy selector takes no grid keys (got {', '.join(self.model_extra)})")
        if self.dimension is not None and self.budget is not None:
            raise ValueError("`budget` belongs to a strategy selector")
        return self

    @property
    def where(self) -> tuple[tuple[str, tuple[str, ...]], ...]:
        """(grid key, allowed values as text) pairs."""
        return tuple((k, tuple(_text(x) for x in (v if isinstance(v, list) else [v])))
                     for k, v in (self.model_extra or {}).items())

    def describe(self) -> str:
        if self.strategy is not None:
            return self.strategy + (f" at {self.budget:g} of its budget" if self.budget else "")
        parts = [f"{k}={'|'.join(v) if len(v) > 1 else v[0]}" for k, v in self.where]
        return f"{self.dimension}: " + (",".join(parts) or "all arms")


def _text(x: Any) -> str:
    """A grid value as the tables write it (str of the parsed YAML value)."""
    return str(x)


class ArmSet(BaseModel):
    """One selector or the union of several (possibly of several dimensions)."""

    model_config = ConfigDict(frozen=True)
    selectors: tuple[Selector, ...]

    @classmethod
    def parse(cls, raw) -> "ArmSet":
        items = raw if isinstance(raw, list) else [raw]
        return cls(selectors=tuple(Selector.model_validate(x) for x in items))

    @property
    def dimensions(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(s.dimension for s in self.selectors if s.dimension))

    @property
    def strategy(self) -> str | None:
        return self.selectors[0].strategy if len(self.selectors) == 1 else None

    @property
    def budget(self) -> float | None:
        return self.selectors[0].budget if len(self.selectors) == 1 else None

    @property
    def search(self) -> bool:
        return any(s.strategy is not None for s in self.selectors)

    def describe(self) -> str:
        return " | ".join(s.describe() for s in self.selectors)


class Minus(_Strict):
    treatment: ArmSet
    control: ArmSet

    @field_validator("treatment", "control", mode="before")
    @classmethod
    def _arms(cls, v):
        return v if isinstance(v, ArmSet) else ArmSet.parse(v)


class Contrast(_Strict):
    label: str
    treatment: ArmSet
    control: ArmSet
    metric: str
    direction: Literal["higher", "lower", "same"]
    primary: bool = False
    workloads: tuple[str, ...] | None = None
    margin: float | None = Field(None, gt=0)  # non-inferiority
    stated: float | None = Field(None, gt=0)  # the source's magnitude, in the predicted direction
    equivalence: float | None = Field(None, gt=0)  # "no effect" margin; None: the metric's
    minus: Minus | None = None
    # Which reading of ambiguous advice this contrast tests (the report prints it beside it).
    reading: str | None = None

    @field_validator("treatment", "control", mode="before")
    @classmethod
    def _arms(cls, v):
        return v if isinstance(v, ArmSet) else ArmSet.parse(v)

    @field_validator("metric")
    @classmethod
    def _metric(cls, v):
        if v not in METRICS:
            raise ValueError(f"unknown metric {v!r}; known: {', '.join(METRICS)}")
        return v

    @model_validator(mode="after")
    def _consistent(self):
        if self.direction == "same" and (self.margin or self.stated):
            raise ValueError("a `same` prediction takes no margin or stated magnitude (it has `equivalence`)")
        if self.treatment.search != self.control.search:
            raise ValueError("treatment and control must both be search strategies or both arms")
        if self.treatment.search and self.metric not in SEARCH_METRICS:
            raise ValueError(f"a search contrast's metric is one of {', '.join(SEARCH_METRICS)}")
        if (self.treatment.budget or self.control.budget) and self.metric != "best_val":
            raise ValueError("a strategy's best at a share of its budget is a best_val contrast")
        return self

    @property
    def expected(self) -> int:
        """The predicted sign of treatment - control (0: no difference)."""
        return {"higher": 1, "lower": -1, "same": 0}[self.direction]

    @property
    def search(self) -> bool:
        return self.treatment.search

    @property
    def equivalence_margin(self) -> float:
        return self.equivalence if self.equivalence is not None else METRICS[self.metric][3]

    def arm_sets(self) -> list[ArmSet]:
        sets = [self.treatment, self.control]
        return sets + ([self.minus.treatment, self.minus.control] if self.minus else [])

    def dimensions(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(d for s in self.arm_sets() for d in s.dimensions))

    def key(self) -> tuple:
        """What makes two contrasts the same test (for the no-duplicate check)."""
        return (self.treatment.describe(), self.control.describe(), self.metric,
                self.minus.treatment.describe() if self.minus else "", self.minus.control.describe() if self.minus else "")


class Measured(_Strict):
    """What the report measures beside the numbers the source reported: per workload, the
    mean of each metric for each labelled arm, or (`by`) for each value of one grid key."""

    dimension: str
    metrics: dict[str, str]  # column label -> metric
    arms: dict[str, dict[str, Any]] = Field(default_factory=dict)  # label -> grid values
    by: str | None = None
    workloads: tuple[str, ...] | None = None
    # A number the source reported, per column label: the report names the arm whose mean
    # comes closest to it (which reading of ambiguous advice reproduces the source).
    closest: dict[str, float] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _closest_columns(self):
        unknown = sorted(set(self.closest) - set(self.metrics))
        if unknown:
            raise ValueError(f"closest: {', '.join(unknown)} is no column of `metrics` ({', '.join(self.metrics)})")
        return self


class Claim(_Strict):
    id: str = Field(pattern=r"^[A-Z]+\d+$")
    quote: str = ""  # the source's own words (required of an advice source; a control has none)
    translation: str | None = None
    paraphrase: str
    prediction: str
    reading: str = ""  # which reading of the source the experiment takes, where it is ambiguous
    reported: str | None = None  # the numbers the source reported
    measured: tuple[Measured, ...] = ()
    disagrees_with: tuple[str, ...] = ()  # ids of another source's claims this one contradicts
    contrasts: tuple[Contrast, ...] = Field(min_length=1)

    @property
    def search(self) -> bool:
        return any(c.search for c in self.contrasts)

    def dimensions(self) -> list[str]:
        return list(dict.fromkeys(d for c in self.contrasts for d in c.dimensions()))


class Source(_Strict):
    id: str = Field(pattern=r"^[a-z0-9_]+$")
    title: str
    title_en: str | None = None
    authors: str | None = None
    date: str | None = None
    url: str | None = None
    language: str = "en"
    cite: str  # how the report names it
    stated_on: str | None = None  # the dataset a stated magnitude applies to
    kind: Literal["advice", "control"] = "advice"  # control: negative controls (A/A), no quotes needed


class ClaimsFile(_Strict):
    source: Source
    claims: tuple[Claim, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _translations(self):
        if self.source.kind == "advice":
            unquoted = [c.id for c in self.claims if not c.quote]
            if unquoted:
                raise ValueError(f"claims {', '.join(unquoted)} need the source's words (quote)")
        if self.source.language != "en":
            missing = [c.id for c in self.claims if not c.translation]
            if missing:
                raise ValueError(f"source language {self.source.language!r}: claims {', '.join(missing)} need a translation")
        return self


def _date_text(raw: dict) -> dict:
    source = raw.get("source")
    if isinstance(source, dict) and source.get("date") is not None:
        raw = {**raw, "source": {**source, "date": str(source["date"])}}  # YAML reads 2019-08-01 as a date
    return raw


def read(path: str | Path) -> ClaimsFile:
    """One claims file, schema-checked (unknown keys fail naming them)."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: claims file not found") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping with `source` and `claims`")
    try:
        return ClaimsFile.model_validate(_date_text(raw))
    except ValidationError as err:
        raise ConfigError(f"{path}: {_claims_error(raw, err)}") from None


def _claims_error(raw: dict, err: ValidationError) -> str:
    """pydantic's errors with claim indexes replaced by claim ids (claims.3 -> claims.C04)."""
    ids = [c.get("id", str(i)) if isinstance(c, dict) else str(i) for i, c in enumerate(raw.get("claims") or [])]
    text = _format(err)
    for i, cid in sorted(enumerate(ids), key=lambda x: -x[0]):
        text = text.replace(f"claims.{i}.", f"claims.{cid}.")
    return text


class Claims:
    """Every claim of the given files, in file order: `sources`, `claims` (Claim, Source)."""

    def __init__(self, files: list[ClaimsFile]):
        self.files = files
        self.sources = {f.source.id: f.source for f in files}
        self.items: list[tuple[Claim, Source]] = [(c, f.source) for f in files for c in f.claims]
        self.by_id = {c.id: c for c, _ in self.items}
        self.source_of = {c.id: s for c, s in self.items}
        if len(self.by_id) != len(self.items):
            seen = [c.id for c, _ in self.items]
            raise ConfigError(f"claim ids repeat across claims files: {sorted({i for i in seen if seen.count(i) > 1})}")

    def __iter__(self):
        return (c for c, _ in self.items)

    def dimension_claims(self, dimension: str) -> list[str]:
        return [c.id for c in self if dimension in c.dimensions()]

    def figure_group(self, figure: str) -> str:
        """The group a report figure belongs to, named by the claims that read it: "verdicts",
        "calibration", "search-<name>" (the search claims) or "<dimension>-<kind>"."""
        if figure in ("verdicts", "calibration"):
            return figure.capitalize()
        if figure.startswith("search-"):
            ids = [c.id for c in self if c.search]
            return f"{', '.join(ids)}: search" if ids else "search"
        dimension = figure.rsplit("-", 1)[0]
        ids = self.dimension_claims(dimension)
        return f"{', '.join(ids)}: {dimension}" if ids else dimension

    def first_metric(self) -> dict[str, str]:
        """Per dimension, the metric of the first contrast that reads it (what its figures plot)."""
        first: dict[str, str] = {}
        for claim in self:
            for c in claim.contrasts:
                for d in c.dimensions():
                    first.setdefault(d, c.metric)
        return first


def load(paths: list[str | Path], params: Params | None = None, root: Path | None = None) -> Claims:
    """Read and check the claims files; with `params`, validate them against its grid."""
    files = [read(Path(root) / p if root is not None and not Path(p).is_absolute() else p) for p in paths]
    claims = Claims(files)
    if params is not None:
        validate(claims, params)
    return claims


def _selector_arms(sel: Selector, params: Params) -> list[tuple[tuple[str, Any], ...]]:
    """The arms of the active profile's grid that `sel` matches."""
    return [a for a in arms(params, sel.dimension)
            if all(_text(dict(a).get(k)) in values for k, values in sel.where)]


def validate(claims: Claims, params: Params) -> None:
    """Cross-check every claim against params.yaml, for every profile: see the module docstring."""
    strategies = set(params.search.strategies) | {s for p in params.profiles.values()
                                                   for s in p.search.get("strategies", [])}
    seen: dict[tuple, str] = {}  # (source, contrast, workload): a contrast appears once in a source's family
    for claim in claims:
        where = f"claim {claim.id}"
        sid = claims.source_of[claim.id].id
        for i, c in enumerate(claim.contrasts):
            at = f"{where}, contrast {c.label!r}"
            for arm_set in c.arm_sets():
                for sel in arm_set.selectors:
                    if sel.strategy is not None:
                        if sel.strategy not in strategies:
                            raise ConfigError(f"{at}: unknown search strategy {sel.strategy!r}")
                        continue
                    if sel.dimension not in params.dimensions:
                        raise ConfigError(f"{at}: unknown dimension {sel.dimension!r} in selector {sel.describe()!r}")
                    grid = params.dimensions[sel.dimension].grid
                    for key, _ in sel.where:
                        if key not in grid:
                            raise ConfigError(f"{at}: selector {sel.describe()!r}: {key!r} is not a key of "
                                              f"dimensions.{sel.dimension}.grid ({', '.join(grid)})")
                    for pname in params.profiles:
                        p = params.model_copy(update={"profile": pname})
                        if not dimension_workloads(p, sel.dimension):
                            continue  # the dimension does not run in this profile
                        if not _selector_arms(sel, p):
                            raise ConfigError(f"{at}: selector {sel.describe()!r} matches no arm of profile "
                                              f"{pname!r}'s grid for dimension {sel.dimension!r}")
                        several = len(arm_set.selectors) > 1 or len(_selector_arms(sel, p)) > 1
                        if several and not (params.dimensions[sel.dimension].select and p.active.selection_seeds):
                            raise ConfigError(
                                f"{at}: selector {sel.describe()!r} is a set of several arms, chosen on selection seeds: "
                                f"set dimensions.{sel.dimension}.select: true and profiles.{pname}.selection_seeds")
            for wl in c.workloads or ():
                if wl not in params.workloads:
                    raise ConfigError(f"{at}: unknown workload {wl!r}")
                if not c.search and not any(wl in params.dimensions[d].workloads for d in c.dimensions()):
                    raise ConfigError(f"{at}: workload {wl!r} is in none of the contrast's dimensions")
            key = c.key()
            mirror = (key[1], key[0], *key[2:])
            everywhere = c.workloads or ([f"search:{w}" for w in params.search.workloads] if c.search else
                                         [w for d in c.treatment.dimensions for w in params.dimensions[d].workloads])
            for wl in everywhere:
                for k in (key, mirror):
                    if (sid, k, wl) in seen:
                        raise ConfigError(f"{at}: the same contrast as {seen[(sid, k, wl)]} on workload {wl!r} "
                                          "(a contrast appears once in a source)")
                seen[(sid, key, wl)] = at
        _check_primaries(claim, params)


def contrast_workloads(c: Contrast, params: Params) -> list[str]:
    """The workloads a contrast runs on in the active profile."""
    if c.search:  # search units: a workload in each search space ("<workload>~<space>")
        settings = params.search_settings()
        return [u for u in settings.units() if c.workloads is None or settings.split(u)[0] in c.workloads]
    ran = [wl for d in c.treatment.dimensions for wl in dimension_workloads(params, d)]
    ran = list(dict.fromkeys(ran))
    return [wl for wl in (c.workloads or ran) if wl in ran]


def _check_primaries(claim: Claim, params: Params) -> None:
    """Exactly one primary contrast per workload the claim covers, in every profile."""
    for pname in params.profiles:
        p = params.model_copy(update={"profile": pname})
        covered: dict[str, list[str]] = {}
        for c in claim.contrasts:
            for wl in contrast_workloads(c, p):
                covered.setdefault(wl, [])
                if c.primary:
                    covered[wl].append(c.label)
        for wl, primaries in covered.items():
            if len(primaries) != 1:
                what = "no primary contrast" if not primaries else f"{len(primaries)} primary contrasts ({primaries})"
                raise ConfigError(f"claim {claim.id}: {what} on workload {wl!r} (profile {pname!r}); exactly one "
                                  "contrast per claim and workload is primary")
