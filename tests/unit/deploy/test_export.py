"""ONNX export: onnxruntime reproduces the fake-quantized student; quant.json and summary."""
from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import torch
from deploy_students import INPUT, build_student, calibrate_bn, images, quant

from archnet.convert.resnet import convert_resnet
from archnet.deploy.export import export_student
from archnet.models.resnet import ResNet
from archnet.ops.quant import QuantConfig, TensorQuantConfig

ORT_TOL = 1e-4  # max |logit| difference, onnxruntime vs fake-quant PyTorch (float32 rounding)


def test_export_w2a4(tmp_path) -> None:
    student = build_student(quant())
    x = images(64)
    out = export_student(student, tmp_path, x, "archnet", quant())
    assert out["verdict"] == "pass", out["violations"]
    assert out["ort_max_abs_diff"] < ORT_TOL and out["ort_top1_agreement"] == 1.0
    model = onnx.load(str(tmp_path / "student.onnx"))
    assert model.opset_import[0].version >= 17
    ops = {n.op_type for n in model.graph.node}
    assert {"Conv", "QuantizeLinear", "DequantizeLinear", "Gemm", "MaxPool", "Concat"} <= ops
    assert not ops & {"BatchNormalization", "Add", "GlobalAveragePool", "Round"}
    # every onnxruntime optimisation level (its QDQ rewrites included) gives the same logits
    with torch.no_grad():
        ref = student(images(16, seed=7)).numpy()
    for level in (ort.GraphOptimizationLevel.ORT_DISABLE_ALL, ort.GraphOptimizationLevel.ORT_ENABLE_ALL):
        so = ort.SessionOptions()
        so.graph_optimization_level = level
        sess = ort.InferenceSession(str(tmp_path / "student.onnx"), so, providers=["CPUExecutionProvider"])
        got = sess.run(None, {"input": images(16, seed=7).numpy()})[0]
        assert np.abs(got - ref).max() < ORT_TOL
        assert (got.argmax(1) == ref.argmax(1)).all()
    table = json.loads((tmp_path / "quant.json").read_text())
    conv_bits = {v["bits"] for v in table["weights"].values() if v["kind"] == "conv"}
    assert conv_bits == {2} and table["weights"]["head.codes"]["bits"] == 8
    assert all(v["levels"] <= 2 ** v["bits"] for v in table["weights"].values())
    assert {a["bits"] for a in table["activations"]} == {4}
    summary = (tmp_path / "summary.md").read_text()
    assert "BitOPs" in summary and "| Conv | 12 | yes |" in summary
    layers = table["layers"]
    assert out["bitops"] == sum(la["macs"] * la["w_bits"] * la["a_bits"] for la in layers)
    assert layers[1]["w_bits"] == 2 and layers[1]["a_bits"] == 4 and layers[0]["a_bits"] == 32


def test_export_folded_student(tmp_path) -> None:
    """``student.fold_add``: one conv fewer per block, still only profile operators (no Add)."""
    q = QuantConfig("w8a8", TensorQuantConfig("lsq", 8, per_channel=True, step_init="mse"),
                    TensorQuantConfig("fixed", 8), logit_clip=16.0)
    student = build_student(q, fold_add=True)
    out = export_student(student, tmp_path, images(32), "archnet", q)
    assert out["verdict"] == "pass", out["violations"]
    assert out["ort_max_abs_diff"] < ORT_TOL and out["ort_top1_agreement"] == 1.0
    ops = [n.op_type for n in onnx.load(str(tmp_path / "student.onnx")).graph.node]
    assert ops.count("Conv") == 12 - len(list(student.blocks())) and "Add" not in ops


def test_export_with_merged_duplicate_initializers(tmp_path) -> None:
    """Two merge convs with the same integer codes (untrained identity kernels): the exporter
    keeps one initializer and leaves ``Identity`` for the other; the profile check and
    ``quant.json`` follow it to the kept one."""
    q = QuantConfig("w4a4", TensorQuantConfig("lsq", 4, per_channel=True), TensorQuantConfig("fixed", 4),
                    logit_clip=16.0)
    torch.manual_seed(0)
    student = convert_resnet(ResNet("basic", [2, 1], (8, 16), 10, stem="small"), q, INPUT,
                             init_merge_as_add=True)
    calibrate_bn(student)
    first, second = (b.merge.units[0].conv for _, b in list(student.blocks())[:2])
    assert torch.equal(first.weight, second.weight)
    out = export_student(student, tmp_path, images(32), "archnet", q)
    assert out["verdict"] == "pass", out["violations"]
    model = onnx.load(str(tmp_path / "student.onnx"))
    kept = {i.name for i in model.graph.initializer}
    weights = json.loads((tmp_path / "quant.json").read_text())["weights"]
    assert "body.1.merge.units.0.codes" not in kept
    assert weights["body.1.merge.units.0.codes"]["initializer"] == "body.0.merge.units.0.codes"
    assert all(w["initializer"] in kept for w in weights.values() if "initializer" in w)


def test_export_lsq_gap_student(tmp_path) -> None:
    """LSQ weights and activations (different step per layer), GAP head, gap profile."""
    q = quant("lsq", 4, "lsq", 4)
    student = build_student(q, head="gap")
    out = export_student(student, tmp_path, images(32), "archnet_gap", q)
    assert out["verdict"] == "pass", out["violations"]
    assert out["ort_max_abs_diff"] < ORT_TOL and out["ort_top1_agreement"] == 1.0


def test_export_channel_with_zero_bn_gain(tmp_path) -> None:
    """A BN gain of 0 (calibration fits one to a dead teacher channel) gives the channel a zero
    scale: its bias alone once overflowed int32 on the accumulator grid (``OverflowError``) and
    a zero scale is no valid DequantizeLinear scale. Deployed, its codes are 0 on a unit scale."""
    q = QuantConfig("w4a4", TensorQuantConfig("lsq", 4, per_channel=True, step_init="mse"),
                    TensorQuantConfig("fixed", 4), logit_clip=16.0)
    student = build_student(q, init_merge_as_add=True)
    merge_bn = student.body[1].merge.units[0].bn
    with torch.no_grad():
        merge_bn.weight[3] = 0.0
        merge_bn.bias[3] = 2.5  # the channel outputs clip(0.1 * 2.5) for every input
    out = export_student(student, tmp_path, images(64), "archnet", q)
    assert out["verdict"] == "pass", out["violations"]
    assert out["ort_max_abs_diff"] < ORT_TOL and out["ort_top1_agreement"] == 1.0
    from archnet.deploy.fold import deploy_student

    unit = deploy_student(student).body[1].merge.units[0]
    assert float(unit.scale.flatten()[3]) == 1.0 and not unit.codes[3].any()
    assert float(unit.scale.flatten().min()) > 0


def test_export_channel_with_a_vanishing_bn_gain(tmp_path) -> None:
    """A gain of 1e-10 (seen after distillation): the bias is over 2^31 accumulator steps, so
    the channel is deployed as constant (codes 0, scale 1) instead of failing to export."""
    q = QuantConfig("w2a4", TensorQuantConfig("lsq", 2, per_channel=True, step_init="mse"),
                    TensorQuantConfig("fixed", 4), logit_clip=16.0)
    student = build_student(q, init_merge_as_add=True)
    unit_bn = student.body[1].main[0].bn
    with torch.no_grad():
        unit_bn.weight[2] = 1e-10
        unit_bn.bias[2] = 0.03
    out = export_student(student, tmp_path, images(64), "archnet", q, parity_images=images(256))
    assert out["verdict"] == "pass", out["violations"]
    assert out["ort_max_abs_diff"] < ORT_TOL and out["ort_top1_agreement"] == 1.0
    assert out["intsim"]["top1_agreement"] == 1.0
    from archnet.deploy.fold import deploy_student

    unit = deploy_student(student).body[1].main[0]
    assert float(unit.scale.flatten()[2]) == 1.0 and not unit.codes[2].any()
    assert bool((unit.scale.flatten()[torch.arange(len(unit.scale.flatten())) != 2] != 1.0).all())
