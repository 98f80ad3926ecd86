"""Typed schemas of the config nodes archnet owns, checked before any data or model is built.

Type errors come from OmegaConf's structured merge; range errors from ``__post_init__``;
both surface as :class:`ConfigError` naming the full key.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from archnet.distill.init_student import STEP_FITS
from archnet.distill.precise_bn import KEEP as PRECISE_BN_KEEP
from archnet.distill.weight_average import KEEP as AVERAGE_KEEP
from archnet.errors import ConfigError
from archnet.ops.quant import ACT_METHODS, FLOAT_BITS, STEP_INITS, WEIGHT_METHODS


def _positive(node: str, obj: Any, *names: str, minimum: int = 1) -> None:
    for name in names:
        value = getattr(obj, name)
        if value < minimum:
            raise ConfigError(f"{node}.{name}", value, f"an integer >= {minimum}")


@dataclass
class DistillSection:
    batch_size: int = 32
    chunk_steps: int = 100
    val_samples: int = 1000
    log_every: int = 10
    num_workers: int = 0
    adapters: Any = None
    mixup: Any = None  # {p, alpha}: the paper's batch mixup (archnet.distill.mixup)
    stage_files: str = "all"  # all | last: keep every stage's weights, or the newest only
    limit_stages: int | None = None  # smoke runs: only this many stages (first, last, spread)
    feature_units: str = "raw"  # raw | bn (checked by archnet.distill.build.feature_scale)
    calibrate_images: int = 0  # BN calibration at the start (checked by archnet.distill.build.check_calibration)
    calibrate_refit: bool = False  # with it, least-squares merge weights (archnet.convert.calibrate.refit_conv)
    init_student: str | None = None  # a finished run whose student this one starts from (archnet.distill.init_student)
    init_student_steps: str = "weights"  # weights | outputs: how its LSQ steps start (archnet.distill.init_student)
    precise_bn_images: int = 0  # population BN statistics after the last stage (archnet.distill.precise_bn)
    precise_bn_keep: str = "better"  # better | always: keep them only if held-out agreement rises
    average_samples: int = 0  # moving average of the last stage's weights (archnet.distill.weight_average)
    average_keep: str = "better"  # better | always: keep it only if held-out agreement rises

    def __post_init__(self) -> None:
        _positive("distill", self, "batch_size", "chunk_steps", "val_samples", "log_every")
        _positive("distill", self, "num_workers", "precise_bn_images", "average_samples", minimum=0)
        if self.precise_bn_keep not in PRECISE_BN_KEEP:
            raise ConfigError("distill.precise_bn_keep", self.precise_bn_keep, PRECISE_BN_KEEP)
        if self.average_keep not in AVERAGE_KEEP:
            raise ConfigError("distill.average_keep", self.average_keep, AVERAGE_KEEP)
        if self.stage_files not in ("all", "last"):
            raise ConfigError("distill.stage_files", self.stage_files, ("all", "last"))
        if self.init_student_steps not in STEP_FITS:
            raise ConfigError("distill.init_student_steps", self.init_student_steps, STEP_FITS)
        if self.limit_stages is not None and self.limit_stages < 2:
            raise ConfigError("distill.limit_stages", self.limit_stages, "null or an integer >= 2")


@dataclass
class TrainSection:
    epochs: int = 10
    batch_size: int = 128
    label_smoothing: float = 0.1
    warmup_epochs: float = 0.0
    optimizer: Any = None
    module: Any = None  # LightningModule factory (null: image classifier; see teacher/runner.py)

    def __post_init__(self) -> None:
        _positive("train", self, "epochs", "batch_size")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError("train.label_smoothing", self.label_smoothing, "a number in [0, 1)")


@dataclass
class TensorQuantSection:
    method: str = "none"
    bits: int = FLOAT_BITS
    per_channel: bool = False
    signed: bool = False
    act_multiplier: float = 0.1
    step_init: str = "mean"


@dataclass
class QuantSection:
    name: str = "fp32"
    weight: TensorQuantSection = field(default_factory=TensorQuantSection)
    act: TensorQuantSection = field(default_factory=TensorQuantSection)
    head_weight_bits: int = 8
    head_weight_mode: str = "gaussian"
    quantize_first_conv: bool = True
    logit_clip: Any = None

    def __post_init__(self) -> None:
        for cls, methods in (("weight", WEIGHT_METHODS), ("act", ACT_METHODS)):
            sec = getattr(self, cls)
            if sec.method not in methods:
                raise ConfigError(f"quant.{cls}.method", sec.method, methods)
            if sec.method != "none" and not (2 <= sec.bits <= 8 or sec.bits == FLOAT_BITS):
                raise ConfigError(f"quant.{cls}.bits", sec.bits, "an integer in 2..8, or 32 for float")
            if sec.step_init not in STEP_INITS:
                raise ConfigError(f"quant.{cls}.step_init", sec.step_init, STEP_INITS)
        if not (2 <= self.head_weight_bits <= 8 or self.head_weight_bits == FLOAT_BITS):
            raise ConfigError("quant.head_weight_bits", self.head_weight_bits, "2..8 or 32")


def check_node(cfg: DictConfig, key: str, schema: type) -> Any:
    """Merge ``cfg[key]`` (resolved) onto ``schema``; return the typed object or raise ConfigError."""
    node = cfg.get(key)
    if node is None:
        raise ConfigError(key, None, f"a {schema.__name__} node")
    try:  # resolved where it stands: ${paths...} and other root interpolations work
        resolved = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node
        merged = OmegaConf.merge(OmegaConf.structured(schema), resolved)
        return OmegaConf.to_object(merged)
    except OmegaConfBaseException as e:
        full = f"{key}.{e.full_key}" if getattr(e, "full_key", None) else key
        value = getattr(e, "value", None)
        allowed = f"{type(e).__name__}: {str(e).splitlines()[0]}"
        if "Key '" in str(e) and "not in" in str(e):
            allowed = "a key of " + ", ".join(f.name for f in fields(schema))
        raise ConfigError(full, value, allowed) from None


def meta_teacher(cfg: DictConfig) -> torch.nn.Module:
    """The teacher built on the meta device: shapes and tap names, no memory, no weights."""
    with torch.device("meta"):
        return instantiate(cfg.teacher.model)


def check_teacher_checkpoint(cfg: DictConfig, model: torch.nn.Module) -> None:
    from archnet.distill.build import check_state_dict, read_state_dict

    if OmegaConf.is_missing(cfg.teacher, "weights"):
        raise ConfigError("teacher.weights", "???", "torchvision-format weights: a path or URL "
                          "(make ... WEIGHTS=<file>)")
    path = cfg.teacher.get("checkpoint")
    if not path or cfg.teacher.get("weights"):
        return
    if not Path(path).is_file():
        raise ConfigError("teacher.checkpoint", str(path),
                          "an existing checkpoint file (train one with archnet-teacher)")
    check_state_dict(model, read_state_dict(path), "teacher.checkpoint", path)


ACCELERATORS = ("cpu", "gpu", "cuda", "auto")


def validate_trainer(cfg: DictConfig) -> None:
    """The Lightning Trainer node: accelerator, devices and whether this machine has them."""
    node = cfg.get("trainer") or {}
    acc = node.get("accelerator", "auto")
    if acc not in ACCELERATORS:
        raise ConfigError("trainer.accelerator", acc, ACCELERATORS)
    if acc in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError("trainer.accelerator", acc, "cpu or auto (this machine has no CUDA GPU)")
    devices = node.get("devices", "auto")
    if devices != "auto" and not (isinstance(devices, int) and devices >= 1):
        raise ConfigError("trainer.devices", devices, "an integer >= 1, or auto")
    if acc in ("gpu", "cuda") and isinstance(devices, int) and devices > torch.cuda.device_count():
        raise ConfigError("trainer.devices", devices, f"at most {torch.cuda.device_count()} GPUs here")


def validate_common(cfg: DictConfig) -> None:
    if not isinstance(cfg.get("seed"), int) or cfg.seed < 0:
        raise ConfigError("seed", cfg.get("seed"), "a non-negative integer")
    if cfg.get("progress", "auto") not in ("auto", True, False):
        raise ConfigError("progress", cfg.progress, ["auto", True, False])
    validate_trainer(cfg)
    instantiate(cfg.data.module, _recursive_=False)  # constructors check their arguments only


def validate_teacher(cfg: DictConfig) -> None:
    validate_common(cfg)
    check_node(cfg, "train", TrainSection)
    meta_teacher(cfg)


def validate_distill(cfg: DictConfig) -> None:
    """Everything that can be checked without data: sections, quant, schedule, checkpoints."""
    from archnet.distill.build import build_schedule, check_calibration, feature_scale

    validate_common(cfg)
    check_node(cfg, "distill", DistillSection)
    check_node(cfg, "quant", QuantSection)
    feature_scale(cfg)
    teacher = meta_teacher(cfg)
    check_calibration(cfg, teacher)
    if cfg.distill.get("precise_bn_images", 0) and cfg.data.get("task"):
        raise ConfigError("distill.precise_bn_images", cfg.distill.precise_bn_images,
                          "0 for data whose task is not images (data.task is set)")
    if cfg.student.get("_target_") == "archnet.convert.resnet.convert_resnet":
        from archnet.convert.resnet import inner_widths

        width = cfg.student.get("inner_width", 1.0)
        inner_widths(OmegaConf.to_container(width) if OmegaConf.is_list(width) else width,
                     len(list(teacher.blocks())), cfg.student.get("inner_divisor", 4),
                     bool(cfg.student.get("r50_layer2_bug", False)))
    build_schedule(cfg, teacher.tap_names)
    check_teacher_checkpoint(cfg, teacher)
    if cfg.distill.get("init_student"):  # the topology is checked once the student exists
        from archnet.distill.init_student import source_run

        source_run(cfg.distill.init_student)
    check_no_missing(cfg)


def check_no_missing(cfg: DictConfig) -> None:
    """A mandatory value (``???``) left unset is bad input: ``cfg.get`` reads it as ``None``,
    and a run would go on without it (e.g. ``student=searched`` without a topology)."""
    missing = []
    for node in (k for k in cfg if k != "hydra"):  # Hydra's own node has interpolations to ???
        if OmegaConf.is_missing(cfg, node):
            missing.append(str(node))
        elif isinstance(cfg[node], DictConfig):
            missing += sorted(f"{node}.{k}" for k in OmegaConf.missing_keys(cfg[node]))
    if missing:
        raise ConfigError(missing[0], "???", f"a value on the command line ({missing[0]}=...)")
