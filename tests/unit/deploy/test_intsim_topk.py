"""integer_topk: the chip's (integer simulation's) accuracy next to the float32
fake-quantized student's, on the same int8 input."""
from __future__ import annotations

import torch
from deploy_students import build_student, images, quant

from archnet.deploy.fold import deploy_student
from archnet.deploy.intsim import IntSim, quantize_input
from archnet.deploy.intsim_topk import integer_topk


def test_labels_from_the_fake_quant_student() -> None:
    """Labelled by the fake-quantized student's own top-1 on the int8 input: its top-1 is
    100 %, and the integer simulation's top-1 is exactly their agreement, counted directly."""
    student = build_student(quant()).eval()
    x = images(96)
    scale = float(x.abs().max()) / 127
    q = quantize_input(x, scale)
    with torch.no_grad():
        labels = student(q.codes.float() * scale).argmax(1)
        sim_top1 = IntSim(deploy_student(student))(q).argmax(1)
    r = integer_topk(student, [(x[:50], labels[:50]), (x[50:], labels[50:])])
    assert r["n"] == 96 and r["input_scale"] == scale
    assert r["fake_quant"] == {"top1": 100.0, "top5": 100.0}
    expected = 100 * float((sim_top1 == labels).float().mean())
    assert r["integer"]["top1"] == expected == r["agreement"]
    assert r["integer"]["top5"] >= r["integer"]["top1"]


def test_one_input_scale_over_all_batches_after_preprocess() -> None:
    """The input scale is max |preprocess(x)| / 127 over the whole loader, not per batch,
    and the student keeps its train/eval mode."""
    student = build_student(quant()).train()
    x = images(40)
    big = x.clone()
    big[30:] *= 3  # the largest values are in the second batch
    labels = torch.zeros(40, dtype=torch.long)
    r = integer_topk(student, [(big[:30], labels[:30]), (big[30:], labels[30:])], preprocess=lambda t: t / 2)
    assert r["input_scale"] == float((big / 2).abs().max()) / 127
    assert r["n"] == 40 and student.training
    assert abs(r["integer"]["top1"] - r["fake_quant"]["top1"]) <= 100 - r["agreement"] + 1e-9
