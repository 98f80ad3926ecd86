"""Parameter/MAC counts: known teacher figures and the reference's student sizes."""
from __future__ import annotations

import pytest
from torch import nn

from archnet.metrics.complexity import bitops, complexity_table, count_macs, measure


def test_formulas_on_a_small_model():
    m = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1, groups=2), nn.Flatten(), nn.Linear(8 * 5 * 5, 3))
    c = measure(m, (4, 5, 5))
    assert c.conv_macs == 8 * (4 // 2) * 9 * 5 * 5 and c.linear_macs == 200 * 3
    assert c.params == 8 * 2 * 9 + 8 + 200 * 3 + 3
    assert count_macs(m, (4, 5, 5)) == c.macs
    assert bitops(c.macs, 2, 4) == 8 * c.macs


def test_table_matches_known_figures():
    rows = {r["model"]: r for r in complexity_table()}
    # teachers: torchvision's parameter counts, the usual MAC counts at 224 px
    known = {"resnet18": (11_689_512, 1.814e9), "resnet34": (21_797_672, 3.664e9),
             "resnet50": (25_557_032, 4.089e9), "mobilenet_v1": (4_231_976, 0.569e9),
             "mobilenet_v2": (3_504_872, 0.3008e9)}
    for name, (params, macs) in known.items():
        assert rows[name]["teacher_params"] == params
        assert rows[name]["teacher_macs"] == pytest.approx(macs, rel=1e-3)
    # students: reference 1.3/1.4 (GAP head, train-only modules excluded)
    for name, params, macs in (("resnet18", 20.95e6, 5.87e9), ("resnet34", 38.80e6, 9.45e9),
                               ("resnet50", 160.4e6, 46.0e9)):
        assert rows[name]["student_params"] == pytest.approx(params, rel=1e-3)
        assert rows[name]["student_macs"] == pytest.approx(macs, rel=1e-3)
