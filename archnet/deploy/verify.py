"""Check an ONNX graph against a target profile (:mod:`archnet.deploy.profile`).

Reads only the graph (plus ``quant.json`` next to the model, when present) and works on any
ONNX file, quantized or float. Checks:

* every node's op type is in the profile (``GlobalAveragePool``/``ReduceMean`` also need
  ``allow_global_pool``; ``ReduceMean`` only over H and W);
* ``Conv``: kernel, strides, pads, dilation 1, groups (dense, or depthwise if allowed) and
  input channels <= ``max_in_channels``; ``MaxPool``: window, stride, no padding;
* weight bits of every Conv/Gemm/MatMul: from ``quant.json`` by initializer name (must be an
  allowed width), else the number ``n`` of distinct integer codes behind its
  ``DequantizeLinear``: it needs ``ceil(log2 n)`` bits, which some allowed width must cover
  (a lower bound: a tensor need not use every level); a float weight is 32 bits;
* activation bits of every ``QuantizeLinear``: the range of the ``Clip`` in front of it
  (``(max - min)/scale + 1`` levels), else the zero-point dtype width;
* float activations into a Conv/Gemm/MatMul (anything but the network input that is not
  behind a ``DequantizeLinear``), unless ``bits.allow_float``.
"""
from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Container, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from archnet.deploy.profile import Profile, load_profile

GLOBAL_POOL_OPS = ("GlobalAveragePool", "ReduceMean")
MATMUL_OPS = ("Conv", "Gemm", "MatMul")
PASS_THROUGH = ("MaxPool", "Concat", "Slice", "Split", "Flatten", "Reshape", "Identity", "Relu", "Clip",
                "GlobalAveragePool", "ReduceMean", "Squeeze", "Unsqueeze", "Transpose")
_DTYPE_BITS = {onnx.TensorProto.UINT8: 8, onnx.TensorProto.INT8: 8, onnx.TensorProto.UINT16: 16,
               onnx.TensorProto.INT16: 16, onnx.TensorProto.INT32: 32}
for _name, _bits in (("UINT4", 4), ("INT4", 4), ("UINT2", 2), ("INT2", 2)):
    if hasattr(onnx.TensorProto, _name):
        _DTYPE_BITS[getattr(onnx.TensorProto, _name)] = _bits


@dataclass
class OpRow:
    op_type: str
    count: int
    allowed: bool


@dataclass
class Violation:
    node: str
    op_type: str
    why: str


@dataclass
class TensorBits:
    """Bit width found for one weight or activation tensor (``None`` = float)."""

    node: str
    kind: str  # weight | activation
    bits: int | None
    source: str  # quant.json | levels | clip | dtype | float


@dataclass
class VerifyResult:
    model: str
    profile: str
    rows: list[OpRow] = field(default_factory=list)
    violations: list[Violation] = field(default_factory=list)
    tensors: list[TensorBits] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"ok": self.ok}


def through_identities(name: str, producer: Mapping[str, onnx.NodeProto], stop: Container[str]) -> str:
    """Follow ``name = Identity(x)`` back until a name in ``stop`` (or a non-Identity); the
    exporter leaves such Identities when it merges identical initializers into one."""
    while name not in stop and getattr(producer.get(name), "op_type", None) == "Identity":
        name = producer[name].input[0]
    return name


class _Graph:
    """Lookups over one (shape-inferred) ONNX graph."""

    def __init__(self, model: onnx.ModelProto) -> None:
        try:
            model = onnx.shape_inference.infer_shapes(model)
        except Exception:
            pass
        g = model.graph
        self.consts = {i.name: numpy_helper.to_array(i) for i in g.initializer}
        for n in g.node:
            if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
                self.consts[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
        self.producer = {o: n for n in g.node for o in n.output}
        self.shapes: dict[str, list[int | None]] = {}
        for v in list(g.value_info) + list(g.input) + list(g.output):
            dims = v.type.tensor_type.shape.dim
            self.shapes[v.name] = [d.dim_value if d.HasField("dim_value") else None for d in dims]
        for name, arr in self.consts.items():
            self.shapes[name] = list(arr.shape)
        self.inputs = {i.name for i in g.input} - set(self.consts)

    def weight_source(self, name: str) -> tuple[np.ndarray | None, str | None]:
        """``(integer codes, initializer name)`` behind a DequantizeLinear, or ``(float array, name)``."""
        node = self.producer.get(name)
        while node is not None and node.op_type in ("Identity", "Transpose", "Reshape"):
            name, node = node.input[0], self.producer.get(node.input[0])
        if node is not None and node.op_type == "DequantizeLinear":
            codes = through_identities(node.input[0], self.producer, self.consts)
            return self.consts.get(codes), codes
        return self.consts.get(name), name if name in self.consts else None


def node_name(n: onnx.NodeProto, i: int) -> str:
    return n.name or f"{n.op_type}_{i}:{n.output[0] if n.output else ''}"


def _attr(n: onnx.NodeProto, name: str, default: Any = None) -> Any:
    for a in n.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _check_conv(n: onnx.NodeProto, name: str, g: _Graph, p: Profile, bad: list[Violation]) -> None:
    w_shape = g.shapes.get(n.input[1])
    kernel = list(_attr(n, "kernel_shape", w_shape[2:] if w_shape else []))
    group = int(_attr(n, "group", 1))
    if kernel != list(p.conv.kernel):
        bad.append(Violation(name, "Conv", f"kernel {'x'.join(map(str, kernel))} not {'x'.join(map(str, p.conv.kernel))}"))
    strides = list(_attr(n, "strides", [1] * len(kernel)))
    if any(s not in p.conv.strides for s in strides):
        bad.append(Violation(name, "Conv", f"strides {strides} not in {list(p.conv.strides)}"))
    pads = list(_attr(n, "pads", [0] * 2 * len(kernel)))
    auto_pad = _attr(n, "auto_pad", b"NOTSET")
    if auto_pad not in (b"NOTSET", "NOTSET"):
        bad.append(Violation(name, "Conv", f"auto_pad {auto_pad!r}; explicit pads {list(p.conv.pads)} only"))
    elif pads != list(p.conv.pads):
        bad.append(Violation(name, "Conv", f"pads {pads} not {list(p.conv.pads)}"))
    if any(d != 1 for d in _attr(n, "dilations", [1])):
        bad.append(Violation(name, "Conv", f"dilations {list(_attr(n, 'dilations'))}, only 1"))
    x_shape = g.shapes.get(n.input[0])
    cin = x_shape[1] if x_shape and len(x_shape) > 1 and x_shape[1] else (w_shape[1] * group if w_shape else None)
    cout = w_shape[0] if w_shape else None
    depthwise = group > 1 and group == cin == cout and (w_shape is None or w_shape[1] == 1)
    if group != 1 and not (depthwise and p.conv.allow_depthwise):
        what = "depthwise conv not allowed" if depthwise else f"grouped conv (group={group})"
        bad.append(Violation(name, "Conv", what))
    depth = 1 if depthwise else cin
    if depth is not None and depth > p.conv.max_in_channels:
        bad.append(Violation(name, "Conv", f"{cin} input channels > {p.conv.max_in_channels}"))


def _check_pool(n: onnx.NodeProto, name: str, g: _Graph, p: Profile, bad: list[Violation]) -> None:
    if n.op_type == "MaxPool":
        kernel, strides = list(_attr(n, "kernel_shape", [])), list(_attr(n, "strides", [1, 1]))
        pads = list(_attr(n, "pads", [0, 0, 0, 0]))
        if kernel != list(p.maxpool.kernel) or strides != list(p.maxpool.strides) or any(pads):
            bad.append(Violation(name, "MaxPool", f"window {kernel} stride {strides} pads {pads}; only "
                                 f"{list(p.maxpool.kernel)} stride {list(p.maxpool.strides)} unpadded"))
    elif n.op_type == "ReduceMean" and p.allow_global_pool:
        axes = _attr(n, "axes")
        if axes is None and len(n.input) > 1:
            axes = g.consts.get(n.input[1])
        rank = len(g.shapes.get(n.input[0]) or [0] * 4)
        axes = sorted(int(a) % rank for a in (axes if axes is not None else range(rank)))
        if axes != [2, 3]:
            bad.append(Violation(name, "ReduceMean", f"mean over axes {axes}; only global pooling over H, W"))


def _weight_bits(n: onnx.NodeProto, name: str, g: _Graph, p: Profile, qj: dict[str, Any],
                 bad: list[Violation], out: list[TensorBits]) -> None:
    arr, init = g.weight_source(n.input[1])
    if arr is None:
        bits, source = None, "float"  # computed weight: not a fixed integer grid
    elif np.issubdtype(arr.dtype, np.integer):
        levels = int(np.unique(arr).size)
        entry = qj.get(init or "")
        if entry and isinstance(entry.get("bits"), int) and entry["bits"] < 32:
            bits, source = int(entry["bits"]), "quant.json"
            if levels > 2**bits:
                bad.append(Violation(name, n.op_type, f"weight has {levels} levels, more than 2^{bits}"))
        else:
            bits, source = max(1, math.ceil(math.log2(levels))), "levels"
    else:
        bits, source = None, "float"
    out.append(TensorBits(name, "weight", bits, source))
    if bits is None:
        if not p.bits.allow_float:
            bad.append(Violation(name, n.op_type, "float weights"))
    elif source == "levels":  # a lower bound: fits if some allowed width holds that many levels
        if not any(b >= bits for b in p.bits.weights):
            bad.append(Violation(name, n.op_type, f"weights need {bits} bits ({levels} levels), "
                                 f"more than {list(p.bits.weights)} allow"))
    elif bits not in p.bits.weights:
        bad.append(Violation(name, n.op_type, f"{bits}-bit weights not in {list(p.bits.weights)}"))


def _act_bits(n: onnx.NodeProto, name: str, g: _Graph, p: Profile, bad: list[Violation],
              out: list[TensorBits]) -> None:
    zp = g.consts.get(n.input[2]) if len(n.input) > 2 else None
    dtype_bits = 8 if zp is None else _DTYPE_BITS.get(onnx.helper.np_dtype_to_tensor_dtype(zp.dtype), 8)
    bits, source = dtype_bits, "dtype"
    clip, scale = g.producer.get(n.input[0]), g.consts.get(n.input[1])
    if clip is not None and clip.op_type == "Clip" and scale is not None and scale.size == 1 and len(clip.input) == 3:
        lo, hi = g.consts.get(clip.input[1]), g.consts.get(clip.input[2])
        if lo is not None and hi is not None:
            levels = int(round((float(hi) - float(lo)) / float(scale))) + 1
            bits, source = min(dtype_bits, max(1, math.ceil(math.log2(levels)))), "clip"
    out.append(TensorBits(name, "activation", bits, source))
    if bits not in p.bits.activations:
        bad.append(Violation(name, n.op_type, f"{bits}-bit activations not in {list(p.bits.activations)}"))


def _load_quant_json(model: str | Path | onnx.ModelProto, quant_json: str | Path | dict | None) -> dict[str, Any]:
    if isinstance(quant_json, dict):
        return quant_json.get("weights", {})
    path = Path(quant_json) if quant_json is not None else None
    if path is None and not isinstance(model, onnx.ModelProto):
        path = Path(model).with_name("quant.json")
    if path is None or not path.is_file():
        return {}
    return json.loads(path.read_text()).get("weights", {})


def verify_onnx(model: str | Path | onnx.ModelProto, profile: str | Path | Profile = "archnet",
                quant_json: str | Path | dict | None = None, overrides: list[str] | None = None) -> VerifyResult:
    """Check ``model`` against ``profile``; see the module docstring for the rules."""
    p = profile if isinstance(profile, Profile) else load_profile(profile, overrides)
    proto = model if isinstance(model, onnx.ModelProto) else onnx.load(str(model))
    qj = _load_quant_json(model, quant_json)
    g = _Graph(proto)
    res = VerifyResult(str(model) if not isinstance(model, onnx.ModelProto) else proto.graph.name, p.name)

    def allowed(op: str) -> bool:
        return op in p.ops and (op not in GLOBAL_POOL_OPS or p.allow_global_pool)

    counts = Counter(n.op_type for n in proto.graph.node)
    res.rows = [OpRow(op, c, allowed(op)) for op, c in sorted(counts.items())]
    kind: dict[str, str] = {x: "input" for x in g.inputs}  # input | quant | float
    bad = res.violations
    for i, n in enumerate(proto.graph.node):
        name = node_name(n, i)
        if not allowed(n.op_type):
            why = "global pooling not allowed" if n.op_type in GLOBAL_POOL_OPS else "op type not in profile"
            bad.append(Violation(name, n.op_type, why))
        if n.op_type == "Conv":
            _check_conv(n, name, g, p, bad)
        _check_pool(n, name, g, p, bad)
        if n.op_type in MATMUL_OPS:
            _weight_bits(n, name, g, p, qj, bad, res.tensors)
            if kind.get(n.input[0], "float") == "float" and not p.bits.allow_float:
                bad.append(Violation(name, n.op_type, "float activation input (not quantized)"))
        if n.op_type == "QuantizeLinear":
            _act_bits(n, name, g, p, bad, res.tensors)
        data_inputs = n.input if n.op_type == "Concat" else n.input[:1]
        data = [kind.get(x, "float") for x in data_inputs if x and x not in g.consts]
        if n.op_type == "DequantizeLinear":
            k = "quant"
        elif n.op_type in PASS_THROUGH and data:
            k = "float" if "float" in data else ("input" if "input" in data else "quant")
        else:
            k = "float"
        for o in n.output:
            kind[o] = k
    return res
