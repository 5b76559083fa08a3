"""A newcomer's first run: the README's commands in a clean copy of the repository, with a PATH
that holds no venv and nothing activated.

The copy holds what a clone would (tracked files and untracked ones git does not ignore).
Its venv is a fresh one that borrows this one's packages (a `.pth` adding its site-packages),
so the copy's own `make setup` has nothing left to install; the jobs must still find their
interpreter without PATH: a bare `python` there is the system's, without tunebench."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from test_pipeline import ROOT

pytestmark = pytest.mark.slow

SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"


def clean_copy(dest: Path) -> Path:
    """The files a `git clone` of this working tree would hold."""
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, files):
        src = ROOT / name
        if src.is_file():  # a tracked file deleted in the working tree is not copied
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


def borrowed_venv(project: Path) -> None:
    """project/.venv: a fresh venv whose python sees this venv's packages, with the entry
    points the Makefile runs, marked as set up (newer than the requirements)."""
    venv = project / ".venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    (Path(site) / "borrowed.pth").write_text(f"import site; site.addsitedir({sysconfig.get_paths()['purelib']!r})\n")
    for name in ("snakemake", "tunebench", "dvc"):
        script = (Path(sys.executable).parent / name).read_text().splitlines()
        (venv / "bin" / name).write_text("\n".join([f"#!{py}", *script[1:]]) + "\n")
        (venv / "bin" / name).chmod(0o755)
    (venv / ".installed").touch()


def newcomer_env() -> dict:
    """Nothing activated: the system's PATH, no PYTHONPATH, no venv."""
    keep = {k: v for k, v in os.environ.items() if k in ("HOME", "LANG", "LC_ALL", "TMPDIR", "USER")}
    return {**keep, "PATH": SYSTEM_PATH, "OMP_NUM_THREADS": "1", "TUNEBENCH_DEVICE": "cpu"}


@pytest.fixture
def clone(tmp_path) -> Path:
    project = clean_copy(tmp_path / "tunebench")
    borrowed_venv(project)
    return project


def test_make_report_on_the_smoke_profile_with_nothing_activated(clone):
    out = subprocess.run(["make", "report", "PROFILE=smoke", "CORES=2"], cwd=clone, env=newcomer_env(),
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    assert (clone / "reports" / "smoke" / "report.md").is_file()
    assert "No module named" not in out.stdout + out.stderr


def readme_snakemake_command() -> list[str]:
    """The README's command that runs the smoke profile with the project's own Snakemake."""
    for line in (ROOT / "README.md").read_text().splitlines():
        if re.match(r"\.venv/bin/snakemake .*profile=smoke", line):
            return shlex.split(line.split("#")[0])
    raise AssertionError("README.md prints no `.venv/bin/snakemake ... profile=smoke` command")


def test_the_readmes_snakemake_command_with_nothing_activated(clone):
    cmd = readme_snakemake_command()
    out = subprocess.run(cmd, cwd=clone, env=newcomer_env(), capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    assert (clone / "reports" / "smoke" / "report.md").is_file()
