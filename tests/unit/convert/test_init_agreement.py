"""scripts/init_agreement.py: agreement of the converted student with its teacher at init."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[3] / "scripts" / "init_agreement.py"


def test_agreement_counts_equal_argmaxes(script_module):
    teacher = torch.nn.Linear(4, 3)
    student = torch.nn.Linear(4, 3)
    student.load_state_dict(teacher.state_dict())
    x = torch.randn(10, 4)
    assert script_module("init_agreement").agreement(student, teacher, x, batch=3) == 100.0
    with torch.no_grad():
        student.bias.copy_(torch.tensor([1e6, 0.0, 0.0]))  # always class 0
    expected = 100.0 * float((teacher(x).argmax(1) == 0).float().mean())
    assert script_module("init_agreement").agreement(student, teacher, x, batch=4) == pytest.approx(expected)


def run(tmp_path, *overrides):
    proc = subprocess.run([sys.executable, str(SCRIPT), "experiment=demo", "teacher.checkpoint=null",
                           f"paths.root_dir={tmp_path}", "--images", "64", "quant=fp32", *overrides],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = re.search(r"agreement with the teacher at init: ([\d.]+)% \(64 held-out", proc.stdout)
    assert found, proc.stdout
    return float(found.group(1)), proc.stdout


def test_cli_calibrated_float_student_is_the_teacher(tmp_path):
    """Random-weight demo teacher: the shifted, calibrated float student reproduces the
    teacher's pre-ReLU sums and its predictions; without the shift the merges cannot."""
    def merge_errors(out: str) -> list[float]:
        return [float(e) for e in re.search(r"merge relative error per block: (.*)", out).group(1).split()]

    calibrated, out = run(tmp_path, "student.init_merge_as_add=true", "student.init_preadd_shift=6",
                          "distill.calibrate_images=128")
    errors = merge_errors(out)
    assert len(errors) == 3 and max(errors) < 0.01
    assert calibrated >= 95.0
    _, out = run(tmp_path, "student.init_merge_as_add=true", "distill.calibrate_images=128")
    assert max(merge_errors(out)) > 10 * max(errors)
