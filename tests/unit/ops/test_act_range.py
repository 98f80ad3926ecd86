"""scripts/act_range.py: the relative error of the fixed-range activation grid."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[3] / "scripts" / "act_range.py"


def test_values_on_the_grid_have_no_error(script_module):
    # m = 0.25, 2 bits (M = 3): levels k / (m M) = 4k/3 BN units, range [0, 4]
    t = torch.tensor([0.0, 4 / 3, 8 / 3, 4.0, -1.0])
    assert script_module("act_range").relative_error(t, 2, 0.25) == pytest.approx(0.0, abs=1e-12)


def test_clipped_and_rounded_values(script_module):
    rel = script_module("act_range").relative_error
    # 8 BN units clip to the top of the range 4: (8 - 4)^2 / 8^2
    assert rel(torch.tensor([8.0]), 2, 0.25) == pytest.approx(0.25)
    # 0.5 rounds (half up) to 4/3 * round(0.375) = 0: error (0.5)^2 / 0.5^2 = 1
    assert rel(torch.tensor([0.5]), 2, 0.25) == pytest.approx(1.0)
    assert rel(torch.tensor([-3.0, -1.0]), 4, 0.1) == 0.0  # nothing survives the ReLU


def test_cli_prints_a_table_and_the_best_multiplier(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "experiment=demo", "teacher.checkpoint=null",
                           f"paths.root_dir={tmp_path}", "--images", "16", "--multipliers", "0.1,0.5"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| ") and "---" not in line]
    assert rows[0].startswith("| tap | m=0.1 | m=0.5 |")
    assert rows[-1].startswith("| **mean** |") and len(rows) > 3
    best = re.search(r"lowest mean error: act_multiplier=([\d.]+)", proc.stdout)
    assert best and float(best.group(1)) in (0.1, 0.5)
