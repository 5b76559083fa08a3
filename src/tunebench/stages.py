"""Which of tunebench's modules compute each pipeline rule's outputs.

Snakemake's rules take these files as inputs, so an edit to one reruns the jobs it feeds
(and only those), and dvc.yaml lists the same files as its stages' deps
(tests/test_stages.py checks that the two agree). Without them a change to the training
code reran nothing: Snakemake watched settings, data and rules, and `dvc repro` then
recorded the new code in dvc.lock beside tables made by the old one.

A rule's modules are found, not listed: every tunebench module that its command's modules
import, directly or through others, including imports inside functions (popconv, the fused
Triton kernels that bf16 CNN populations use on a GPU, is imported only there). So a new
module the engine comes to use becomes a dependency without anyone remembering to add it.
Left out (NOT_RESULTS): modules that change no number in an output.
"""

from __future__ import annotations

import ast
import hashlib
from functools import cache
from pathlib import Path

PACKAGE = "tunebench"
PACKAGE_DIR = Path(__file__).resolve().parent

# The modules each rule's command (tunebench.cli) calls into.
RULE_ENTRIES: dict[str, tuple[str, ...]] = {
    "prepare_data": ("config", "data"),
    "run_ablation": ("config", "data", "engine", "ablate"),
    "run_search": ("config", "data", "engine", "search"),
    "aggregate": ("aggregate",),
    "report": ("config", "report"),
}

NOT_RESULTS: dict[str, str] = {
    "devices": "picks the device (a property of the machine, which each table's device column names)",
    "layout": "names the files",
    "locks": "removes stale Snakemake locks",
    "snakelog": "formats log lines",
    "journals": "names the search jobs' Optuna journals and deletes other code's",
}

# dvc.yaml's stages and the Snakemake rules each one runs (its `cmd` targets them).
STAGE_RULES: dict[str, tuple[str, ...]] = {
    "prepare": ("prepare_data",),
    "ablate": ("run_ablation",),
    "search": ("run_search",),
    "report": ("aggregate", "report"),
}


def imported_modules(source: str, package: str = PACKAGE) -> set[str]:
    """The names of `package`'s modules that Python `source`, a module of that package,
    imports anywhere in it (`import tunebench.x`, `from tunebench import x`,
    `from tunebench.x import y`, and the relative `from . import x`, `from .x import y`). A name
    from `from tunebench import x` may be a module or an attribute; callers keep modules."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith(f"{package}."))
        elif isinstance(node, ast.ImportFrom) and node.level <= 1:
            # Level 1 is `from . import x` or `from .x import y`, inside the package itself.
            module = ".".join(part for part in (package if node.level else "", node.module or "") if part)
            if module == package:
                found.update(a.name for a in node.names)
            elif module.startswith(f"{package}."):
                found.add(module.split(".")[1])
    return found


def module_closure(entries: tuple[str, ...], package_dir: Path = PACKAGE_DIR) -> frozenset[str]:
    """`entries` and every package module they import, directly or through others."""
    seen: set[str] = set()
    todo = list(entries)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        path = package_dir / f"{name}.py"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: module {name!r} is imported but missing")
        seen.add(name)
        stat = path.stat()
        todo.extend(m for m in _file_imports(path, stat.st_mtime_ns, stat.st_size) if (package_dir / f"{m}.py").is_file())
    return frozenset(seen)


@cache
def _file_imports(path: Path, mtime_ns: int, size: int) -> frozenset[str]:
    """imported_modules of one file, parsed once per version of it: the Snakefile asks for
    five rules whose modules overlap (all five on this 2-core CPU: 270-380 ms without this,
    105-120 ms with it)."""
    return frozenset(imported_modules(path.read_text()))


def rule_modules(rule: str, package_dir: Path = PACKAGE_DIR) -> list[str]:
    """The modules whose code computes `rule`'s outputs, sorted."""
    if rule not in RULE_ENTRIES:
        raise KeyError(f"no modules known for rule {rule!r}: expected one of {', '.join(RULE_ENTRIES)}")
    return sorted(module_closure(RULE_ENTRIES[rule], package_dir) - NOT_RESULTS.keys())


def module_files(rule: str, package_dir: Path = PACKAGE_DIR, cwd: Path | None = None) -> list[str]:
    """`rule`'s modules as files of the package that is imported (a checkout's src/, or
    wherever PYTHONPATH or an install points): relative to `cwd` where they lie under it
    (`src/tunebench/engine.py` in a checkout), absolute elsewhere."""
    cwd = (Path.cwd() if cwd is None else cwd).resolve()
    files = []
    for module in rule_modules(rule, package_dir):
        path = package_dir / f"{module}.py"
        files.append(path.relative_to(cwd).as_posix() if path.is_relative_to(cwd) else str(path))
    return files


def stage_files(stage: str, package_dir: Path = PACKAGE_DIR) -> set[str]:
    """The module files dvc.yaml lists as `stage`'s deps, relative to the checkout."""
    return {f"src/{PACKAGE}/{m}.py" for rule in STAGE_RULES[stage] for m in rule_modules(rule, package_dir)}


def code_digest(rule: str, package_dir: Path = PACKAGE_DIR) -> str:
    """12 hex digits of the text of `rule`'s modules: the key that resumable state (a search
    job's Optuna journal) carries, so that it is resumed only by the code that began it.
    Without it, a search job rerun for a changed engine found its studies complete in the
    old journal and re-emitted the old code's trials without training one."""
    digest = hashlib.sha256()
    for module in rule_modules(rule, package_dir):
        digest.update(module.encode() + b"\0" + (package_dir / f"{module}.py").read_bytes() + b"\0")
    return digest.hexdigest()[:12]
