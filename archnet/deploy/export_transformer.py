"""ONNX export of a Transformer Arch-Net student: ``student.onnx``, ``quant.json``, ``summary.md``.

The deploy copy runs the student in export mode (one-hot embeddings as a MatMul, no
Gather on the vocabulary; :func:`~archnet.convert.transformer.set_export_mode`) with its
quantizers baked into the QDQ form the profile verifier reads:

* LSQ weights -> an int8 code initializer (stored transposed, ``in x out``) and a per-tensor
  scale: ``DequantizeLinear(codes, alpha) -> MatMul(x, .) [-> Add(bias)]``;
* LSQ activations -> ``Clip(qmin alpha, qmax alpha) -> QuantizeLinear(alpha) ->
  DequantizeLinear(alpha)`` (:class:`~archnet.deploy.qdq.ActQDQFn`);
* float parts stay float (reference 4.3): attention scores, softmax and weighted sums, the
  positional add, BatchNorm (an affine map in eval mode), biases and the logits.

Inputs ``src`` and ``tgt_in`` (int64 ids, dynamic batch and lengths), output ``logits``.
A float student exports as plain float MatMuls. ``quant.json`` gives each weight
initializer's bits (the 8-bit head may use fewer than 2^8 distinct codes).
Run on a finished distillation run: ``python -m archnet.deploy.export_transformer
run_dir=<dir> [profile=transformer] [sentences=8]``.
"""
from __future__ import annotations

import copy
import json
import sys
import warnings
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import Tensor, nn

from archnet.convert.transformer import OneHotEmbedding, set_export_mode
from archnet.deploy.qdq import ActQDQFn
from archnet.ops.layers import QLinear
from archnet.ops.lsq import LsqAct, LsqWeight

OPSET = 17


class DQMatMulFn(torch.autograd.Function):
    """``x (codes * scale) + bias`` with int8 ``codes`` (in x out) and a 0-d ``scale``."""

    @staticmethod
    def forward(ctx, x: Tensor, codes: Tensor, scale: Tensor, bias: Tensor | None) -> Tensor:  # type: ignore[override]
        y = torch.matmul(x, codes.to(x.dtype) * scale)
        return y + bias if bias is not None else y

    @staticmethod
    def symbolic(g: Any, x: Any, codes: Any, scale: Any, bias: Any) -> Any:
        zp = g.op("Constant", value_t=torch.zeros((), dtype=torch.int8))
        y = g.op("MatMul", x, g.op("DequantizeLinear", codes, scale, zp))
        none = bias is None or (hasattr(bias, "node") and bias.node().mustBeNone())
        return y if none else g.op("Add", y, bias)


class DeployQMatMul(nn.Module):
    """A quantized linear map baked to integer codes; ``onehot=True`` takes token ids and
    multiplies their one-hot rows (the export form of :class:`OneHotEmbedding`)."""

    codes: Tensor
    scale: Tensor

    def __init__(self, codes_t: Tensor, scale: Tensor, bias: Tensor | None, bits: int,
                 onehot: bool = False) -> None:
        super().__init__()
        self.register_buffer("codes", codes_t.to(torch.int8).contiguous())
        self.register_buffer("scale", scale.detach().float().reshape(()))
        self.bias = nn.Parameter(bias.detach().clone(), requires_grad=False) if bias is not None else None
        self.bits, self.onehot = bits, onehot

    def forward(self, x: Tensor) -> Tensor:
        if self.onehot:
            vocab = torch.arange(self.codes.shape[0], device=x.device)
            x = (x.unsqueeze(-1) == vocab).to(self.scale.dtype)
        return DQMatMulFn.apply(x, self.codes, self.scale, self.bias)


class DeployAct(nn.Module):
    """A baked LSQ activation quantizer: ``clip(round(x / alpha), qmin, qmax) alpha``."""

    def __init__(self, q: LsqAct) -> None:
        super().__init__()
        self.alpha, self.qmin, self.qmax, self.bits = float(q.alpha.detach()), q.qn, q.qp, q.bits

    def forward(self, x: Tensor) -> Tensor:
        return ActQDQFn.apply(x, self.alpha, self.qmin, self.qmax)


def _baked(weight: Tensor, quantizer: nn.Module, bias: Tensor | None, onehot: bool = False,
           col_mask: Tensor | None = None) -> DeployQMatMul | None:
    if not isinstance(quantizer, LsqWeight) or quantizer.per_channel:
        return None
    grid = quantizer.export_grid(weight)
    codes = grid.codes if col_mask is None else grid.codes * col_mask.long()
    return DeployQMatMul(codes.t(), grid.scale, bias, grid.bits, onehot)


@torch.no_grad()
def deploy_transformer(student: nn.Module) -> nn.Module:
    """Eval-mode copy of ``student`` in export mode with LSQ quantizers baked (module docstring)."""
    deploy = copy.deepcopy(student).eval()
    set_export_mode(deploy)
    for parent in list(deploy.modules()):
        for name, child in list(parent.named_children()):
            new: nn.Module | None = None
            if isinstance(child, LsqAct):
                new = DeployAct(child)
            elif isinstance(child, QLinear):
                new = _baked(child.weight, child.weight_quantizer, child.bias)
            elif isinstance(child, OneHotEmbedding):
                new = _baked(child.weight, child.weight_quantizer, None, onehot=True, col_mask=child.col_mask)
            if new is not None:
                setattr(parent, name, new)
    return deploy


class _Logits(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, src: Tensor, tgt_in: Tensor) -> Tensor:
        return self.model(src, tgt_in)


def export_onnx(deploy: nn.Module, path: Path, src: Tensor, tgt_in: Tensor) -> onnx.ModelProto:
    wrapper = _Logits(deploy).eval()  # the exporter sets the whole tree to the wrapper's mode
    axes = {"src": {0: "batch", 1: "src_len"}, "tgt_in": {0: "batch", 1: "tgt_len"},
            "logits": {0: "batch", 1: "tgt_len"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapper, (src, tgt_in), str(path), dynamo=False, opset_version=OPSET,
                          input_names=["src", "tgt_in"], output_names=["logits"], dynamic_axes=axes)
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    return model


def quant_json(deploy: nn.Module, model: onnx.ModelProto) -> dict[str, Any]:
    """Bits of every code initializer and activation quantizer of the exported graph."""
    inits = {i.name for i in model.graph.initializer}
    weights, acts = {}, []
    for name, m in deploy.named_modules():
        if isinstance(m, DeployQMatMul):
            key = f"model.{name}.codes"
            if key in inits:
                c = m.codes.long()
                weights[key] = {"layer": name, "bits": m.bits, "method": "lsq", "scale": float(m.scale),
                                "qmin": int(c.min()), "qmax": int(c.max()), "levels": int(c.unique().numel())}
        elif isinstance(m, DeployAct):
            acts.append({"layer": name, "bits": m.bits, "scale": m.alpha, "qmin": m.qmin, "qmax": m.qmax})
    return {"format": "archnet-qdq-transformer", "opset": OPSET, "weights": weights, "activations": acts}


@torch.no_grad()
def export_transformer(student: nn.Module, out_dir: str | Path, src: Tensor, tgt_in: Tensor,
                       profile: str = "transformer", pad_id: int = 1) -> dict[str, Any]:
    """Write ``student.onnx``, ``quant.json``, ``summary.md`` and ``export.json`` into ``out_dir``.

    Returns paths, ``ort_max_abs_diff`` and ``ort_token_agreement`` (onnxruntime against the
    fake-quantized PyTorch student on real target positions), the profile ``verdict``,
    its ``violations``, the op histogram and ``exceptions``: op types outside the Arch-Net
    operator set (``conf/profile/archnet.yaml``) that the Transformer profile allows.
    """
    import onnxruntime as ort

    from archnet.deploy.profile import load_profile
    from archnet.deploy.verify import verify_onnx

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    was = student.training
    student.eval()
    deploy = deploy_transformer(student)
    path = out / "student.onnx"
    model = export_onnx(deploy, path, src, tgt_in)
    (out / "quant.json").write_text(json.dumps(quant_json(deploy, model), indent=1))
    ref = student(src, tgt_in).float().numpy()
    student.train(was)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"src": src.numpy(), "tgt_in": tgt_in.numpy()})[0]
    real = (tgt_in != pad_id).numpy()
    hist = dict(sorted(Counter(n.op_type for n in model.graph.node).items()))
    tables = {i.name for i in model.graph.initializer if len(i.dims) >= 2}
    lookups = [n.name for n in model.graph.node if n.op_type == "Gather" and n.input[0] in tables]
    result = verify_onnx(path, profile)
    base = set(load_profile("archnet").ops)
    metrics = {"onnx": str(path), "quant_json": str(out / "quant.json"), "profile": result.profile,
               "ort_max_abs_diff": float(np.abs(got - ref).max()),
               "ort_token_agreement": float((got.argmax(-1) == ref.argmax(-1))[real].mean()),
               "verdict": "pass" if result.ok else "fail",
               "violations": [f"{v.node}: {v.why}" for v in result.violations],
               "ops": hist, "exceptions": sorted(op for op in hist if op not in base),
               "table_lookups": lookups,  # Gather on a weight table (none: one-hot MatMul)
               "weight_bits": sorted({t.bits for t in result.tensors if t.kind == "weight" and t.bits}),
               "activation_bits": sorted({t.bits for t in result.tensors if t.kind == "activation"})}
    (out / "export.json").write_text(json.dumps(metrics, indent=1))
    (out / "summary.md").write_text(_summary(metrics))
    return metrics


def _summary(m: dict[str, Any]) -> str:
    lines = ["# Exported Transformer student", "", f"- ONNX: `student.onnx` (opset {OPSET}, QDQ)",
             f"- onnxruntime vs fake-quant PyTorch: max |logit diff| {m['ort_max_abs_diff']:.3g}, "
             f"token agreement {m['ort_token_agreement']:.4f}",
             f"- weight bits {m['weight_bits']}, activation bits {m['activation_bits']}",
             f"- profile `{m['profile']}`: **{m['verdict']}**",
             f"- outside the Arch-Net operator set (allowed by the profile): {', '.join(m['exceptions'])}",
             "", "| op | count |", "|---|---:|", *(f"| {k} | {v} |" for k, v in m["ops"].items())]
    if m["violations"]:
        lines += ["", "## Violations", "", *(f"- {v}" for v in m["violations"])]
    return "\n".join(lines) + "\n"


def export_run(run_dir: str | Path, out_dir: str | Path | None = None, profile: str | None = None,
               sentences: int = 8) -> dict[str, Any]:
    """Export the student of a finished run on its first ``sentences`` test pairs."""
    from torch.nn.utils.rnn import pad_sequence

    from archnet.distill.build import build_data
    from archnet.distill.rundir import load_student

    student, cfg = load_student(run_dir)
    dm = build_data(cfg, sentences)
    pairs = [dm.test_set[i] for i in range(min(sentences, len(dm.test_set)))]
    src = pad_sequence([p[0] for p in pairs], batch_first=True, padding_value=dm.pad_id)
    tgt = pad_sequence([p[1] for p in pairs], batch_first=True, padding_value=dm.pad_id)
    return export_transformer(student, out_dir or Path(run_dir) / "export", src, tgt[:, :-1],
                              profile or cfg.get("profile", {}).get("name", "transformer"), dm.pad_id)


def main(argv: Sequence[str] | None = None) -> None:
    from archnet.cli.args import parse_kv
    from archnet.errors import ConfigError, exit_bad_input

    try:
        values, _ = parse_kv(list(sys.argv[1:] if argv is None else argv), ("run_dir", "out_dir", "profile",
                                                                             "sentences"))
        if "run_dir" not in values:
            raise ConfigError("run_dir", None, "a finished distillation run directory")
        m = export_run(values["run_dir"], values.get("out_dir"), values.get("profile"),
                       int(values.get("sentences", 8)))
    except ConfigError as err:
        exit_bad_input(err)
    print(Path(m["onnx"]).with_name("summary.md").read_text())
    sys.exit(0 if m["verdict"] == "pass" else 1)


if __name__ == "__main__":
    main()
