"""Quantizer factory: turns a ``quant`` config node into weight and activation quantizers.

``quant`` has ``weight`` and ``act`` sub-nodes with ``method`` and ``bits``; ``bits=32`` (or
``method=none``) means float: the weight quantizer is the identity and the activation
"quantizer" is a plain ReLU, so a float student adds no nodes. ``head_weight_bits`` sets the
classifier's weight bits (paper: 8) and ``quantize_first_conv`` whether the stem's first
conv (on raw pixels) is quantized (paper: yes).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from archnet.errors import ConfigError

WEIGHT_METHODS = ("none", "dorefa", "lsq")
ACT_METHODS = ("none", "fixed", "lsq")
STEP_INITS = ("mean", "mse")  # LSQ first step: the paper's 2 mean|x| / sqrt(Qp) | least squares
FLOAT_BITS = 32
HEAD_WEIGHT_MODES = ("gaussian", "normal")


def _check_bits(key: str, bits: Any) -> None:
    if not isinstance(bits, int) or isinstance(bits, bool) or not (2 <= bits <= 8 or bits == FLOAT_BITS):
        raise ConfigError(key, bits, f"an integer in 2..8, or {FLOAT_BITS} for float")


def _check_tensor(key: str, cfg: TensorQuantConfig, methods: tuple[str, ...]) -> None:
    if cfg.method not in methods:
        raise ConfigError(f"{key}.method", cfg.method, methods)
    _check_bits(f"{key}.bits", cfg.bits)
    if not cfg.act_multiplier > 0:
        raise ConfigError(f"{key}.act_multiplier", cfg.act_multiplier, "a number > 0")
    if cfg.step_init not in STEP_INITS:
        raise ConfigError(f"{key}.step_init", cfg.step_init, STEP_INITS)


@dataclass
class TensorQuantConfig:
    """How one tensor class is quantized; ``bits`` in 2..8, or 32 for float."""

    method: str = "none"
    bits: int = FLOAT_BITS
    per_channel: bool = False
    signed: bool = False
    act_multiplier: float = 0.1  # fixed-range activations: y = round(clip(m*x, 0, 1) * M) / M
    step_init: str = "mean"      # LSQ: first step 2 mean|x| / sqrt(Qp) (mean) | least-squares (mse)

    @property
    def is_float(self) -> bool:
        return self.method == "none" or self.bits >= FLOAT_BITS


@dataclass
class QuantConfig:
    """The ``quant`` config node."""

    name: str = "fp32"
    weight: TensorQuantConfig = field(default_factory=TensorQuantConfig)
    act: TensorQuantConfig = field(default_factory=TensorQuantConfig)
    head_weight_bits: int = 8
    head_weight_mode: str = "gaussian"
    quantize_first_conv: bool = True
    logit_clip: float | None = None

    def __post_init__(self) -> None:
        """Validate every leaf (raises :class:`~archnet.errors.ConfigError`)."""
        _check_tensor("quant.weight", self.weight, WEIGHT_METHODS)
        _check_tensor("quant.act", self.act, ACT_METHODS)
        _check_bits("quant.head_weight_bits", self.head_weight_bits)
        if self.head_weight_mode not in HEAD_WEIGHT_MODES:
            raise ConfigError("quant.head_weight_mode", self.head_weight_mode, HEAD_WEIGHT_MODES)
        if self.logit_clip is not None and not self.logit_clip > 0:
            raise ConfigError("quant.logit_clip", self.logit_clip, "null or a number > 0")

    @property
    def is_float(self) -> bool:
        return self.weight.is_float and self.act.is_float


def quant_config(node: Any | None) -> QuantConfig:
    """Build a :class:`QuantConfig` from a (validated) config node or ``None`` (float)."""
    if node is None:
        return QuantConfig()
    if isinstance(node, QuantConfig):
        return node
    from omegaconf import OmegaConf

    data = OmegaConf.to_container(node, resolve=True) if not isinstance(node, dict) else dict(node)
    return QuantConfig(
        name=data.get("name", "custom"),
        weight=TensorQuantConfig(**data.get("weight", {})),
        act=TensorQuantConfig(**data.get("act", {})),
        **{k: v for k, v in data.items() if k not in ("name", "weight", "act")},
    )


def make_weight_quantizer(cfg: TensorQuantConfig, role: str = "conv") -> nn.Module:
    """Weight quantizer for ``role`` in {conv, head}; identity when float."""
    _check_tensor("quant.weight", cfg, WEIGHT_METHODS)
    if cfg.is_float:
        return nn.Identity()
    from archnet.ops import quantizers  # deferred: float students never need it

    if cfg.method == "dorefa":
        if role == "head":
            return quantizers.DorefaGaussianWeight(cfg.bits)
        return quantizers.DorefaWeight(cfg.bits, per_channel=cfg.per_channel)
    if cfg.method == "lsq":
        return quantizers.LsqWeight(cfg.bits, per_channel=cfg.per_channel, init=cfg.step_init)
    raise ConfigError("quant.weight.method", cfg.method, WEIGHT_METHODS)


def make_activation(cfg: TensorQuantConfig) -> nn.Module:
    """ReLU followed by the activation quantizer; a quantizer with a zero floor stands in for it."""
    _check_tensor("quant.act", cfg, ACT_METHODS)
    if cfg.is_float:
        return nn.ReLU()
    from archnet.ops import quantizers

    if cfg.method == "fixed":
        return quantizers.FixedRangeAct(cfg.bits, multiplier=cfg.act_multiplier)
    if cfg.method == "lsq":
        return quantizers.LsqAct(cfg.bits, signed=cfg.signed, init=cfg.step_init)
    raise ConfigError("quant.act.method", cfg.method, ACT_METHODS)


def activation_scale(cfg: TensorQuantConfig) -> float:
    """``a`` with ``act(x) ~= a * relu(x)`` inside the representable range: the fixed-range
    quantizer outputs ``clip(m x, 0, 1)`` (``a = m``, reference 4.1); LSQ and ReLU keep the
    input's units (``a = 1``). ``act(x) / a`` is an activation in the units of the BN output."""
    return cfg.act_multiplier if (not cfg.is_float and cfg.method == "fixed") else 1.0


def head_weight_config(cfg: QuantConfig) -> TensorQuantConfig:
    """The classifier's weight quantization: the weight method at ``head_weight_bits``."""
    w = cfg.weight
    return TensorQuantConfig(w.method, cfg.head_weight_bits if not w.is_float else FLOAT_BITS,
                             w.per_channel, w.signed, step_init=w.step_init)
