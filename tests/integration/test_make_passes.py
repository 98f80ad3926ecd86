"""The progressive make targets chain ``PASSES`` runs, each from the previous one's student,
skip runs that already have a student.pt, and refuse a ``PASSES`` that is not a whole number.

Runs the real Makefile in a scratch folder with fake ``archnet-teacher``/``archnet-distill``
executables that log their arguments and write ``<hydra.run.dir>/student.pt``."""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FAKE = """#!/bin/bash
echo "$(basename "$0") $*" >> "{log}"
for arg in "$@"; do
  case $arg in hydra.run.dir=*) mkdir -p "${{arg#*=}}" && touch "${{arg#*=}}/student.pt";; esac
done
"""
EXP = "tiny_imagenet_resnet18_2w4a_progressive"
SOURCE = "tiny_imagenet_resnet18_4w4a_preserved"

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    """A folder where ``make`` finds the Makefile, make/*.mk, an up-to-date install stamp, a
    teacher and fake executables in ``bin/``."""
    (tmp_path / "Makefile").symlink_to(REPO / "Makefile")
    (tmp_path / "make").symlink_to(REPO / "make")
    for name in ("setup.cfg", "pyproject.toml", "constraints.txt"):
        (tmp_path / name).touch()
    past = time.time() - 60
    for name in ("setup.cfg", "pyproject.toml", "constraints.txt"):
        os.utime(tmp_path / name, (past, past))
    (tmp_path / "stamp").touch()
    teacher = tmp_path / "outputs" / "teachers" / "resnet18_tiny_imagenet200_32px_seed0.pt"
    teacher.parent.mkdir(parents=True)
    teacher.touch()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("archnet-teacher", "archnet-distill"):
        (bin_dir / tool).write_text(FAKE.format(log=tmp_path / "calls.log"))
        (bin_dir / tool).chmod(0o755)
    return tmp_path


def make(scratch: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAKE", "MFLAGS"))}
    env.pop("ARCHNET_ROOT", None)
    return subprocess.run(["make", "--no-print-directory", "tiny-imagenet-resnet18-progressive",
                           f"BIN={scratch / 'bin'}", f"STAMP={scratch / 'stamp'}", *args],
                          cwd=scratch, env=env, capture_output=True, text=True, timeout=60)


def calls(scratch: Path) -> list[str]:
    log = scratch / "calls.log"
    return log.read_text().splitlines() if log.exists() else []


def test_passes_chain_from_the_previous_student_and_skip_finished_runs(scratch):
    proc = make(scratch, "PASSES=3")
    assert proc.returncode == 0, proc.stderr
    first, second, third = f"outputs/{EXP}/make", f"outputs/{EXP}/make_pass2", f"outputs/{EXP}/make_pass3"
    assert calls(scratch) == [
        f"archnet-distill experiment={SOURCE} hydra.run.dir=outputs/{SOURCE}/make",
        f"archnet-distill experiment={EXP} hydra.run.dir={first}",
        f"archnet-distill experiment={EXP} distill.init_student={first} hydra.run.dir={second}",
        f"archnet-distill experiment={EXP} distill.init_student={second} hydra.run.dir={third}",
    ]  # the teacher exists: not trained again
    (scratch / "calls.log").unlink()
    assert make(scratch, "PASSES=4").returncode == 0
    assert calls(scratch) == [f"archnet-distill experiment={EXP} distill.init_student={third} "
                              f"hydra.run.dir=outputs/{EXP}/make_pass4"]


def test_one_pass_runs_no_chained_pass(scratch):
    assert make(scratch, "PASSES=1").returncode == 0
    assert [c for c in calls(scratch) if "init_student" in c] == []
    assert len(calls(scratch)) == 2


@pytest.mark.parametrize("value", ["0", "two", "-1"])
def test_bad_passes_is_refused_before_anything_runs(scratch, value):
    proc = make(scratch, f"PASSES={value}")
    assert proc.returncode != 0
    assert f"PASSES={value}: a whole number >= 1 is required" in proc.stderr
    assert calls(scratch) == []
