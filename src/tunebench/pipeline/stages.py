"""Which of tunebench's modules compute each pipeline rule's outputs.

Snakemake's rules take these files as inputs, so an edit to one reruns the jobs it feeds
(and only those), and dvc.yaml lists the same files as its stages' deps
(tests/test_stages.py checks that the two agree). Without them a change to the training
code reran nothing: Snakemake watched settings, data and rules, and `dvc repro` then
recorded the new code in dvc.lock beside tables made by the old one.

A rule's modules are found, not listed: every tunebench module that its command's modules
import, directly or through others, including imports inside functions. So a new module the
engine comes to use becomes a dependency without anyone remembering to add it. The fused CNN
kernels (tunebench.kernels), which the engine finds through a registry rather than an import,
are an entry of the training rules. Left out (NOT_RESULTS): modules that change no number in
an output.
"""

from __future__ import annotations

import ast
import hashlib
from functools import cache
from pathlib import Path

PACKAGE = "tunebench"
PACKAGE_DIR = Path(__file__).resolve().parents[1]

# The modules each rule's command (tunebench.pipeline.cli) calls into, as dotted names below
# the package ("core.engine"; a sub-package's name alone is its __init__). The fused CNN kernels
# ("kernels") compute the training tables wherever a GPU trains.
RULE_ENTRIES: dict[str, tuple[str, ...]] = {
    "prepare_data": ("spec.config", "core.data"),
    "run_ablation": ("spec.config", "core.data", "core.engine", "studies.ablate", "kernels"),
    "run_search": ("spec.config", "core.data", "core.engine", "studies.search", "kernels"),
    "aggregate": ("analysis.aggregate",),
    "report": ("spec.config", "reporting.report"),
}

NOT_RESULTS: dict[str, str] = {
    "core.devices": "picks the device (a property of the machine, which each table's device column names)",
    "pipeline.layout": "names the files",
    "pipeline.locks": "removes stale Snakemake locks",
    "pipeline.snakelog": "formats log lines",
    "pipeline.journals": "names the search jobs' Optuna journals and deletes other code's",
}

# dvc.yaml's stages and the Snakemake rules each one runs (its `cmd` targets them).
STAGE_RULES: dict[str, tuple[str, ...]] = {
    "prepare": ("prepare_data",),
    "ablate": ("run_ablation",),
    "search": ("run_search",),
    "report": ("aggregate", "report"),
}


def module_path(name: str, package_dir: Path = PACKAGE_DIR) -> Path | None:
    """The file of dotted module `name` below the package: a module, or a sub-package's
    __init__; None if there is neither."""
    base = package_dir.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def imported_modules(source: str, package: str = PACKAGE, package_dir: Path = PACKAGE_DIR,
                     module: str = "") -> set[str]:
    """The dotted names (below `package`) of the package's modules that Python `source`
    imports anywhere in it: `import tunebench.a.b`, `from tunebench.a import b` (b a module,
    or else an attribute of a), `from tunebench.a.b import c`, and the relative forms
    (`from .b import c`, `from .. import a`) resolved against `module`, the dotted name of
    the module that `source` is."""
    found: set[str] = set()
    here = [package, *module.split(".")] if module else [package]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(a.name.split(".", 1)[1] for a in node.names if a.name.startswith(f"{package}."))
            continue
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level:  # relative to the importing module's package
            if node.level >= len(here):
                continue  # above the package
            full = ".".join(here[: len(here) - node.level] + ([node.module] if node.module else []))
        else:
            full = node.module or ""
        if full != package and not full.startswith(f"{package}."):
            continue
        below = full[len(package) + 1:]
        for alias in node.names:
            name = f"{below}.{alias.name}" if below else alias.name
            if module_path(name, package_dir) is not None:
                found.add(name)
            elif below:
                found.add(below)
    return {name for name in found if name}


def module_closure(entries: tuple[str, ...], package_dir: Path = PACKAGE_DIR) -> frozenset[str]:
    """`entries` and every package module they import, directly or through others."""
    seen: set[str] = set()
    todo = list(entries)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        path = module_path(name, package_dir)
        if path is None:
            raise FileNotFoundError(f"{package_dir}: module {name!r} is imported but missing")
        seen.add(name)
        stat = path.stat()
        todo.extend(m for m in _file_imports(path, name, package_dir, stat.st_mtime_ns, stat.st_size)
                    if module_path(m, package_dir) is not None)
    return frozenset(seen)


@cache
def _file_imports(path: Path, name: str, package_dir: Path, mtime_ns: int, size: int) -> frozenset[str]:
    """imported_modules of module `name` (file `path`), parsed once per version of it: the
    Snakefile asks for five rules whose modules overlap."""
    return frozenset(imported_modules(path.read_text(), PACKAGE, package_dir, module=name))


def rule_modules(rule: str, package_dir: Path = PACKAGE_DIR) -> list[str]:
    """The modules whose code computes `rule`'s outputs, sorted."""
    if rule not in RULE_ENTRIES:
        raise KeyError(f"no modules known for rule {rule!r}: expected one of {', '.join(RULE_ENTRIES)}")
    return sorted(module_closure(RULE_ENTRIES[rule], package_dir) - NOT_RESULTS.keys())


def module_files(rule: str, package_dir: Path = PACKAGE_DIR, cwd: Path | None = None) -> list[str]:
    """`rule`'s modules as files of the package that is imported (a checkout's src/, or
    wherever PYTHONPATH or an install points): relative to `cwd` where they lie under it
    (`src/tunebench/core/engine.py` in a checkout), absolute elsewhere."""
    cwd = (Path.cwd() if cwd is None else cwd).resolve()
    files = []
    for module in rule_modules(rule, package_dir):
        path = module_path(module, package_dir)
        files.append(path.relative_to(cwd).as_posix() if path.is_relative_to(cwd) else str(path))
    return files


def stage_files(stage: str, package_dir: Path = PACKAGE_DIR) -> set[str]:
    """The module files dvc.yaml lists as `stage`'s deps, relative to the checkout."""
    return {f"src/{PACKAGE}/{module_path(m, package_dir).relative_to(package_dir).as_posix()}"
            for rule in STAGE_RULES[stage] for m in rule_modules(rule, package_dir)}


def code_digest(rule: str, package_dir: Path = PACKAGE_DIR) -> str:
    """12 hex digits of the text of `rule`'s modules: the key that resumable state (a search
    job's Optuna journal) carries, so that it is resumed only by the code that began it.
    Without it, a search job rerun for a changed engine found its studies complete in the
    old journal and re-emitted the old code's trials without training one."""
    digest = hashlib.sha256()
    for module in rule_modules(rule, package_dir):
        digest.update(module.encode() + b"\0" + module_path(module, package_dir).read_bytes() + b"\0")
    return digest.hexdigest()[:12]
