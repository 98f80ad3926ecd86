"""Target profiles: what ONNX graph a chip accepts (``conf/profile/<name>.yaml``).

A profile lists the allowed op types and, for the ops that need it, their attributes
(conv kernel/stride/padding/groups and the input-channel limit, max-pool window), whether
global average pooling is allowed, and the bit widths each tensor class may have.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from archnet.errors import ConfigError

PROFILE_DIR = Path(__file__).resolve().parents[2] / "conf" / "profile"


@dataclass
class ConvRule:
    """``Conv`` nodes: ``kernel`` (h, w), allowed ``strides``, ``pads`` (4 values), input
    channel limit, ``allow_depthwise`` (``group == C_in == C_out``; other groups never)."""

    kernel: list[int] = field(default_factory=lambda: [3, 3])
    strides: list[int] = field(default_factory=lambda: [1, 2])
    pads: list[int] = field(default_factory=lambda: [1, 1, 1, 1])
    max_in_channels: int = 512
    allow_depthwise: bool = False


@dataclass
class PoolRule:
    """``MaxPool`` nodes: window and stride, no padding."""

    kernel: list[int] = field(default_factory=lambda: [2, 2])
    strides: list[int] = field(default_factory=lambda: [2, 2])


@dataclass
class BitsRule:
    """Allowed bit widths of weights (conv and FC) and of quantized activations; float
    weights / float activations into a conv or FC (other than the network input) only
    with ``allow_float``."""

    weights: list[int] = field(default_factory=lambda: [2, 4, 8])
    activations: list[int] = field(default_factory=lambda: [2, 4, 8])
    allow_float: bool = False


@dataclass
class Profile:
    """One target chip."""

    name: str = "archnet"
    ops: list[str] = field(default_factory=list)
    conv: ConvRule = field(default_factory=ConvRule)
    maxpool: PoolRule = field(default_factory=PoolRule)
    allow_global_pool: bool = False
    bits: BitsRule = field(default_factory=BitsRule)


def available_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))


def load_profile(name: str | Path | Any, overrides: list[str] | None = None) -> Profile:
    """Load profile ``name`` (a file in ``conf/profile``, a YAML path, or an already composed
    ``profile`` config node) with dotted ``overrides`` such as ``bits.weights=[2,4]``;
    raises :class:`ConfigError` when invalid."""
    from omegaconf import DictConfig, OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    if isinstance(name, (dict, DictConfig)):
        source: Any = name
    else:
        path = Path(name)
        if path.suffix not in (".yaml", ".yml"):
            path = PROFILE_DIR / f"{name}.yaml"
        if not path.is_file():
            raise ConfigError("profile", str(name), available_profiles())
        source = OmegaConf.load(path)
    try:
        cfg = OmegaConf.merge(OmegaConf.structured(Profile), source)
    except OmegaConfBaseException as err:
        raise ConfigError("profile", str(name), str(err).splitlines()[0]) from None
    for item in overrides or []:
        key, _, value = item.partition("=")
        try:
            cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist([item]))
        except OmegaConfBaseException as err:
            raise ConfigError(f"profile.{key}", value, str(err).splitlines()[0]) from None
    profile: Any = OmegaConf.to_object(cfg)
    if not profile.ops:
        raise ConfigError("profile.ops", profile.ops, "a non-empty list of ONNX op types")
    return profile
