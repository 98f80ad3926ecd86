"""Export a trained student: deploy copy -> ``student.onnx``, ``quant.json``, ``summary.md``.

ONNX representation (QDQ, opset 21, legacy TorchScript exporter ``dynamo=False``, whose
custom-function symbolics give exact control over the emitted nodes):

* weights are **integer initializers + float scales**: ``DequantizeLinear(codes, scale,
  zero_point=0, axis=0) -> Conv / Gemm``. ``codes`` hold the quantizer's integer grid
  (int8; int16 for 8-bit DoReFa, whose codes ``2k - M`` reach +-255, see
  :mod:`archnet.ops.grid`); ``scale`` has one value per output channel because BN (and
  the activation multiplier) are folded into it (:mod:`archnet.deploy.fold`). The bias
  (folded BN shift) is ``DequantizeLinear(int32 codes, scale)`` on a power-of-two fraction of
  the accumulator step ``s_x s_w`` (float for the first conv, whose input is the float image;
  why not float everywhere: :mod:`archnet.deploy.qdq`).
* activations are **Q/DQ pairs**: ``Clip(0, qmax s) -> QuantizeLinear(s, uint8 zp 0) ->
  DequantizeLinear(s)``; the ``Clip`` is the ReLU and the b-bit range, the pair the grid.
* the input image and the logits are float; the logit clip is a ``Clip``.

The alternative, Q/DQ pairs around float weight tensors that happen to be integer-valued,
was not chosen: the integer codes would only exist implicitly, and onnxruntime would
re-derive (and may re-round) them.

``quant.json`` lists every weight initializer (bits, method, code range, per-channel
scales; ``initializer`` names the tensor that holds the codes in the graph, another layer's
when the exporter merged identical ones) and every activation quantizer (bits, scale,
range), plus layer costs;
``summary.md`` has the operator histogram, parameters, MACs, BitOPs and the verdict of
the profile verifier.
"""
from __future__ import annotations

import dataclasses
import json
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import Tensor, nn

from archnet.deploy.fold import deploy_student
from archnet.deploy.modules import DeployConv, DeployHead
from archnet.deploy.stats import LayerStat, layer_stats, totals

OPSET = 21


def export_onnx(deploy: nn.Module, path: str | Path, example_input: Tensor, opset: int = OPSET) -> onnx.ModelProto:
    """Trace ``deploy`` with the legacy exporter into ``path`` (dynamic batch); check and return it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(deploy, (example_input,), str(path), dynamo=False, opset_version=opset,
                          input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    return model


def run_onnx(path: str | Path, x: Tensor) -> np.ndarray:
    """Logits of the ONNX file under onnxruntime (CPU)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x.detach().cpu().float().numpy()})[0]


def stored_initializer(model: onnx.ModelProto, name: str) -> str:
    """The initializer behind the graph tensor ``name``: itself, or, when the exporter merged
    identical initializers (it does, e.g. for two merge convs that still hold the same identity
    kernels) and left ``name = Identity(kept)``, the kept one."""
    from archnet.deploy.verify import through_identities

    inits = {i.name for i in model.graph.initializer}
    stored = through_identities(name, {o: n for n in model.graph.node for o in n.output}, inits)
    if stored not in inits:
        raise RuntimeError(f"initializer {name!r} missing from the exported graph")
    return stored


def quant_table(deploy: nn.Module, model: onnx.ModelProto, layers: list[LayerStat],
                quant_cfg: Any = None) -> dict[str, Any]:
    """The ``quant.json`` content: bits and scales of every weight and activation tensor."""
    weights, acts = {}, []
    for name, m in deploy.named_modules():
        if not isinstance(m, (DeployConv, DeployHead)):
            continue
        kind = "conv" if isinstance(m, DeployConv) else "fc"
        if m.codes is not None:
            init = f"{name}.codes"
            codes = m.codes.long()
            weights[init] = {"layer": name, "kind": kind, "bits": m.w_bits, "method": m.w_method,
                             "initializer": stored_initializer(model, init),
                             "dtype": str(m.codes.dtype).replace("torch.", ""), "axis": 0,
                             "qmin": int(codes.min()), "qmax": int(codes.max()),
                             "levels": int(codes.unique().numel()), "scale": m.scale.tolist()}
            if m.bias_codes is not None:
                bias = stored_initializer(model, f"{name}.bias_codes")
                weights[init]["bias"] = {"initializer": bias, "dtype": "int32",
                                         "scale": m.bias_scale.tolist()}
        else:
            weights[f"{name}.weight"] = {"layer": name, "kind": kind, "bits": 32, "method": "float"}
        if isinstance(m, DeployConv) and m.act is not None:
            acts.append({"layer": name, **dataclasses.asdict(m.act)})
    cfg = dataclasses.asdict(quant_cfg) if dataclasses.is_dataclass(quant_cfg) else quant_cfg
    return {"format": "archnet-qdq", "opset": OPSET, "quant": cfg, "input": {"dtype": "float32", "bits": 32},
            "weights": weights, "activations": acts, "layers": [la.to_dict() for la in layers],
            "totals": totals(layers)}


def op_histogram(model: onnx.ModelProto) -> dict[str, int]:
    return dict(sorted(Counter(n.op_type for n in model.graph.node).items()))


def _summary(out: dict[str, Any], hist: dict[str, int], layers: list[LayerStat], verdict: Any) -> str:
    lines = ["# Exported student", "",
             f"- ONNX: `student.onnx` (opset {OPSET}, QDQ: integer weight initializers + per-channel "
             "scales, Q/DQ activation pairs)",
             f"- parameters: {out['params']:,}", f"- MACs / image: {out['macs']:,}",
             f"- BitOPs / image (MACs x w_bits x a_bits): {out['bitops']:,}",
             f"- onnxruntime vs fake-quant PyTorch: max |logit diff| {out['ort_max_abs_diff']:.3g}, "
             f"top-1 agreement {out['ort_top1_agreement']:.4f} on {out['ort_n']} inputs"]
    if "skipped" in out.get("intsim", {}):
        lines.append(f"- integer simulation skipped: {out['intsim']['skipped']}")
    elif "intsim" in out:
        s = out["intsim"]
        lines.append(f"- integer simulation vs fake-quant: top-1 agreement {s['top1_agreement']:.4f}, "
                     f"max |logit diff| {s['max_logit_diff']:.3g} on {s['n']} inputs")
        if "exact_top1_agreement" in s:
            lines.append(f"- integer simulation vs deploy model in float64: top-1 agreement "
                         f"{s['exact_top1_agreement']:.4f}, max |logit diff| {s['exact_max_logit_diff']:.3g}; "
                         f"vs fake-quant in float64: {s['fq64_top1_agreement']:.4f}, "
                         f"{s['fq64_max_logit_diff']:.3g}")
    lines += [f"- profile `{out['profile']}`: **{out['verdict']}**", "", "## Operators", "",
              "| op | count | allowed |", "|---|---:|---|"]
    allowed = {r.op_type: r.allowed for r in verdict.rows}
    lines += [f"| {op} | {n} | {'yes' if allowed.get(op, False) else 'no'} |" for op, n in hist.items()]
    lines += ["", "## Layers", "", "| layer | kind | in | out | params | MACs | w bits | a bits | BitOPs |",
              "|---|---|---|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {la.name} | {la.kind} | {'x'.join(map(str, la.in_shape))} | {'x'.join(map(str, la.out_shape))}"
              f" | {la.params:,} | {la.macs:,} | {la.w_bits} | {la.a_bits} | {la.bitops:,} |" for la in layers]
    if verdict.violations:
        lines += ["", "## Violations", ""] + [f"- `{v.node}` ({v.op_type}): {v.why}" for v in verdict.violations]
    return "\n".join(lines) + "\n"


@torch.no_grad()
def export_student(student: nn.Module, out_dir: str | Path, example_input: Tensor,
                   profile_name: str = "archnet", quant_cfg: Any = None,
                   parity_images: Tensor | None = None, exact_check: bool = False) -> dict[str, Any]:
    """Write ``student.onnx``, ``quant.json`` and ``summary.md`` into ``out_dir``.

    Args:
        student: trained :class:`~archnet.models.student.ArchNetStudent` (not modified).
        out_dir: output folder (created).
        example_input: a batch of network inputs; traced, and used for the onnxruntime check.
        profile_name: verifier profile (name in ``conf/profile`` or a YAML path).
        quant_cfg: the run's ``QuantConfig`` (recorded in ``quant.json``).
        parity_images: optional images for the integer-simulation check (:mod:`intsim`).
        exact_check: also compare the integer simulation with the deploy and fake-quant models
            run in float64 (:func:`archnet.deploy.intsim.compare`).

    Returns:
        Metrics: paths, ``params``/``macs``/``bitops``, ``ort_max_abs_diff`` and
        ``ort_top1_agreement`` (onnxruntime vs fake-quant student), ``intsim`` (if asked),
        ``verdict`` (``pass``/``fail``) and ``violations``.
    """
    from archnet.deploy.verify import verify_onnx

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    was_training = student.training
    student.eval()
    deploy = deploy_student(student)
    onnx_path = out_dir / "student.onnx"
    model = export_onnx(deploy, onnx_path, example_input)
    layers = layer_stats(deploy, example_input)
    table = quant_table(deploy, model, layers, quant_cfg)
    (out_dir / "quant.json").write_text(json.dumps(table, indent=1))
    ref = student(example_input).float().numpy()
    got = run_onnx(onnx_path, example_input)
    out: dict[str, Any] = {"onnx": str(onnx_path), "quant_json": str(out_dir / "quant.json"),
                           "summary": str(out_dir / "summary.md"), **table["totals"],
                           "ort_max_abs_diff": float(np.abs(got - ref).max()),
                           "ort_top1_agreement": float((got.argmax(1) == ref.argmax(1)).mean()),
                           "ort_n": len(ref)}
    if parity_images is not None:
        from archnet.deploy.intsim import compare, integer_ready

        float_layer = integer_ready(deploy)
        out["intsim"] = (compare(student, parity_images, deploy=deploy, check_exact=exact_check)
                         if float_layer is None
                         else {"skipped": f"layer {float_layer} is not quantized"})
    student.train(was_training)
    result = verify_onnx(onnx_path, profile_name)
    out.update(profile=result.profile, verdict="pass" if result.ok else "fail",
               violations=[f"{v.node}: {v.why}" for v in result.violations])
    (out_dir / "summary.md").write_text(_summary(out, op_histogram(model), layers, result))
    return out
