"""scripts/intsim_accuracy.py: the chip's (integer simulation's) accuracy next to the
float32 fake-quantized student's, on the same int8 input."""
from __future__ import annotations

import torch
from deploy_students import build_student, images, quant

from archnet.deploy.fold import deploy_student
from archnet.deploy.intsim import IntSim, quantize_input


def test_labels_from_the_fake_quant_student(script_module) -> None:
    """Labelled by the fake-quantized student's own top-1 on the int8 input: its top-1 is
    100 %, and the integer simulation's top-1 is exactly their agreement, counted directly."""
    student = build_student(quant()).eval()
    x = images(96)
    scale = float(x.abs().max()) / 127
    q = quantize_input(x, scale)
    with torch.no_grad():
        labels = student(q.codes.float() * scale).argmax(1)
        sim_top1 = IntSim(deploy_student(student))(q).argmax(1)
    r = script_module("intsim_accuracy").integer_vs_float(student, [(x[:50], labels[:50]), (x[50:], labels[50:])])
    assert r["n"] == 96 and r["input_scale"] == scale
    assert r["fq32"][0] == 100.0 and r["fq32"][1] == 100.0
    expected = 100 * float((sim_top1 == labels).float().mean())
    assert r["int"][0] == expected == r["agreement"]
    assert r["int"][1] >= r["int"][0]
