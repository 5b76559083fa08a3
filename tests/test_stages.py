"""tunebench.pipeline.stages: the modules each pipeline rule depends on, found from the imports, and
dvc.yaml and the Snakemake rules agreeing with them."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

from tunebench.pipeline import stages

ROOT = Path(__file__).resolve().parents[1]


def write_package(folder: Path, modules: dict[str, str]) -> Path:
    """A package of `modules` (dotted name -> source; a dotted name's sub-packages get an
    empty __init__)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, source in modules.items():
        *subs, leaf = name.split(".")
        where = folder.joinpath(*subs)
        where.mkdir(parents=True, exist_ok=True)
        for i in range(len(subs)):
            init = folder.joinpath(*subs[: i + 1], "__init__.py")
            if not init.exists():
                init.write_text("")
        (where / f"{leaf}.py").write_text(source)
    return folder


def test_imported_modules_sees_every_form_and_imports_inside_functions(tmp_path):
    pkg = write_package(tmp_path / "tunebench", {
        name: "" for name in ("alpha", "beta", "gamma", "sub.delta", "sub.epsilon", "sub.theta", "eta", "sub.kappa")})
    source = """
import os
import tunebench.alpha
from tunebench import beta, gamma as g
from tunebench.sub.delta import thing
from .epsilon import other
from . import theta
from ..eta import iota
from ...outside import lam
from tunebenchx import zeta
import tunebenchx.mu

def later():
    from tunebench.sub import kappa
"""
    assert stages.imported_modules(source, package_dir=pkg, module="sub.kappa") == {
        "alpha", "beta", "gamma", "sub.delta", "sub.epsilon", "sub.theta", "eta", "sub.kappa"}


def test_closure_follows_imports_through_other_modules(tmp_path):
    pkg = write_package(tmp_path / "tunebench", {
        "core.entry": "from tunebench.core import middle\nfrom tunebench import CONSTANT\n",
        "core.middle": "def f():\n    from ..spec.leaf import g\n",
        "spec.leaf": "import math\n",
        "unrelated": "from tunebench.core import entry\n",
    })
    # CONSTANT is an attribute of the package, not a module: no file, left out.
    assert stages.module_closure(("core.entry",), pkg) == {"core.entry", "core.middle", "spec.leaf"}


def test_a_missing_entry_module_is_named(tmp_path):
    pkg = write_package(tmp_path / "tunebench", {"entry": ""})
    with pytest.raises(FileNotFoundError, match="'gone'"):
        stages.module_closure(("entry", "gone"), pkg)


def test_code_digest_follows_the_text_of_the_rules_modules_only(tmp_path):
    """A search journal is keyed by it: an edit to a module the search imports must change
    it (fresh studies), an edit elsewhere or a bare touch must not (an interrupted job
    resumes)."""
    pkg = write_package(tmp_path / "tunebench", {
        "spec.config": "", "core.data": "", "studies.search": "from tunebench.core import engine\n",
        "core.engine": "x = 1\n", "reporting.report": "y = 1\n", "kernels.fused": "",
    })
    (pkg / "kernels" / "__init__.py").write_text("from tunebench.kernels import fused\n")
    before = stages.code_digest("run_search", pkg)
    (pkg / "reporting" / "report.py").write_text("y = 2\n")
    (pkg / "studies" / "search.py").touch()
    assert stages.code_digest("run_search", pkg) == before
    (pkg / "core" / "engine.py").write_text("x = 2\n")
    assert stages.code_digest("run_search", pkg) != before
    after_engine = stages.code_digest("run_search", pkg)
    (pkg / "kernels" / "fused.py").write_text("z = 1\n")  # the kernels, found through their registry
    assert stages.code_digest("run_search", pkg) != after_engine


def test_an_unknown_rule_is_named():
    with pytest.raises(KeyError, match="'run_nothing'"):
        stages.rule_modules("run_nothing")


def test_training_depends_on_the_fused_kernels_found_through_their_registry():
    """fused_conv computes the CNN runs on a GPU; the engine finds it through models.FUSED_CONV,
    not an import, so the training rules name the kernels layer as an entry."""
    for rule in ("run_ablation", "run_search"):
        modules = stages.rule_modules(rule)
        assert {"core.engine", "core.models", "kernels.fused_conv", "spec.grid", "spec.config"} <= set(modules), modules
        assert not set(modules) & stages.NOT_RESULTS.keys()


def test_module_files_are_relative_inside_the_checkout_and_absolute_outside(tmp_path):
    inside = stages.module_files("aggregate", cwd=ROOT)
    assert inside == ["src/tunebench/analysis/aggregate.py"]
    outside = stages.module_files("aggregate", cwd=tmp_path)
    assert outside == [str(ROOT / "src" / "tunebench" / "analysis" / "aggregate.py")]


@pytest.mark.parametrize("stage", sorted(stages.STAGE_RULES))
def test_dvc_stage_lists_exactly_the_modules_its_rules_depend_on(stage):
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    deps = {d for d in dvc["stages"][stage]["deps"] if d.startswith("src/")}
    assert deps == stages.stage_files(stage), (
        f"dvc.yaml stage {stage!r}: missing {sorted(stages.stage_files(stage) - deps)}, "
        f"extra {sorted(deps - stages.stage_files(stage))}")


def rule_blocks() -> dict[str, str]:
    text = "\n".join(p.read_text() for p in sorted((ROOT / "workflow" / "rules").glob("*.smk")))
    text += "\n" + (ROOT / "Snakefile").read_text()
    return {m.group(1): m.group(2) for m in re.finditer(r"^rule (\w+):\n((?:[ \t]+.*\n|\n)*)", text, re.M)}


@pytest.mark.parametrize("rule", sorted(stages.RULE_ENTRIES))
def test_each_rule_takes_its_modules_as_inputs(rule):
    blocks = rule_blocks()
    assert rule in blocks, f"no rule {rule!r} in the workflow"
    assert f'code("{rule}")' in blocks[rule].split("output:")[0], blocks[rule]


def test_every_rule_that_runs_tunebench_is_known():
    """A new rule that runs `python -m tunebench.pipeline.cli` needs its modules listed in RULE_ENTRIES."""
    running = {name for name, body in rule_blocks().items() if "{TB}" in body}
    assert running == set(stages.RULE_ENTRIES)


def cli_imports(command: str) -> set[str]:
    """The tunebench modules that `tunebench.pipeline.cli <command>` imports: in its cmd_ function and
    in the cli helpers that function calls (all of cli's imports sit inside functions)."""
    tree = ast.parse((ROOT / "src" / "tunebench" / "pipeline" / "cli.py").read_text())
    functions = {f.name: f for f in tree.body if isinstance(f, ast.FunctionDef)}
    todo, seen, found = [f"cmd_{command}"], set(), set()
    while todo:
        name = todo.pop()
        if name in seen or name not in functions:
            continue
        seen.add(name)
        found |= stages.imported_modules(ast.unparse(functions[name]), module="pipeline.cli")
        todo += [n.id for n in ast.walk(functions[name]) if isinstance(n, ast.Name)]
    return {m for m in found if stages.module_path(m) is not None and not m.startswith("pipeline.")}


@pytest.mark.parametrize("rule", sorted(stages.RULE_ENTRIES))
def test_rule_entries_cover_what_the_command_imports(rule):
    """RULE_ENTRIES is written by hand: it must hold every module the rule's command imports
    (a new import in cli.py would otherwise escape the rule's inputs)."""
    command = re.search(r"\{TB\} (\w+)", rule_blocks()[rule]).group(1)
    imported = cli_imports(command)
    assert imported, f"found no imports for `tunebench.pipeline.cli {command}`"
    missing = imported - stages.module_closure(stages.RULE_ENTRIES[rule]) - stages.NOT_RESULTS.keys()
    assert not missing, f"rule {rule!r}: `tunebench.pipeline.cli {command}` imports {sorted(missing)}, not in RULE_ENTRIES"
