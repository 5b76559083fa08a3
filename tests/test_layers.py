"""The package's layers: spec <- core <- kernels <- studies <- analysis <- reporting <-
pipeline (and bench), each importing only from those below it (import-linter's contract in
pyproject.toml), and no import cycle between modules (grimp's import graph)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")


def lint(src: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(src)}
    return subprocess.run([str(LINT), "--config", str(ROOT / "pyproject.toml"), "--no-cache"], cwd=src.parent,
                          env=env, capture_output=True, text=True, timeout=300)


CYCLES = """
import json, sys
import grimp
import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

graph = grimp.build_graph("tunebench", cache_dir=None)
modules = sorted(graph.modules)
index = {m: i for i, m in enumerate(modules)}
edges = [(index[m], index[t]) for m in modules for t in graph.find_modules_directly_imported_by(m) if t in index]
rows, cols = zip(*edges) if edges else ((), ())
adjacency = csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(modules), len(modules)))
_, labels = connected_components(adjacency, directed=True, connection="strong")
groups = {}
for m, label in zip(modules, labels):
    groups.setdefault(int(label), []).append(m)
print(json.dumps([g for g in groups.values() if len(g) > 1]))
"""


def cycles(src: Path) -> list[list[str]]:
    """The import graph's strongly connected components of more than one module (imports
    inside functions count: grimp reads every import statement). In a process of its own,
    with `src` first on the path: here `tunebench` is already imported from the checkout, and
    grimp would find that one."""
    out = subprocess.run([sys.executable, "-c", CYCLES], env={**os.environ, "PYTHONPATH": str(src)},
                         capture_output=True, text=True, timeout=300, check=True)
    return json.loads(out.stdout)


def test_imports_point_only_down():
    out = lint(ROOT / "src")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "1 kept, 0 broken" in out.stdout


def test_no_import_cycle():
    assert cycles(ROOT / "src") == []


@pytest.fixture
def package_copy(tmp_path) -> Path:
    src = tmp_path / "src"
    shutil.copytree(ROOT / "src" / "tunebench", src / "tunebench", ignore=shutil.ignore_patterns("__pycache__"))
    return src


def test_an_upward_import_breaks_the_contract(package_copy):
    """The check is not vacuous: the engine importing the report (core -> reporting) fails it."""
    engine = package_copy / "tunebench" / "core" / "engine.py"
    engine.write_text(engine.read_text() + "\n\ndef _upward():\n    from tunebench.reporting import report  # noqa\n")
    out = lint(package_copy)
    assert out.returncode != 0 and "BROKEN" in out.stdout
    assert "tunebench.core.engine -> tunebench.reporting.report" in out.stdout


def test_a_cycle_is_found(package_copy):
    grid = package_copy / "tunebench" / "spec" / "grid.py"
    config = package_copy / "tunebench" / "spec" / "config.py"
    assert "tunebench.spec.grid" not in config.read_text()
    config.write_text(config.read_text() + "\n\ndef _cycle():\n    from tunebench.spec import grid  # noqa\n")
    assert any({"tunebench.spec.config", "tunebench.spec.grid"} <= set(c) for c in cycles(package_copy))
    assert grid.exists()
