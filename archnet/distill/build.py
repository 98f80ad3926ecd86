"""Build data, teacher, student, adapters and stages from a composed config."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from archnet.data.base import ImageDataModule
from archnet.distill.schedule import StageSpec
from archnet.errors import ConfigError
from archnet.models.taps import LOGITS, TappedChain
from archnet.ops.quant import quant_config


def build_data(cfg: DictConfig, batch_size: int) -> ImageDataModule:
    dm = instantiate(cfg.data.module, batch_size=batch_size, seed=cfg.seed)
    dm.setup()
    return dm


def build_teacher(cfg: DictConfig, load: bool = True) -> TappedChain:
    """The teacher model, with its checkpoint loaded when ``teacher.checkpoint`` is set."""
    model = instantiate(cfg.teacher.model)
    if not load:
        return model
    if cfg.teacher.get("weights"):  # torchvision-format weights: hub name, path or URL
        from archnet.models.hub import load_into

        load_into(model, cfg.teacher.weights, model_dir=Path(cfg.paths.cache_dir) / "hub")
    elif cfg.teacher.get("checkpoint"):
        load_teacher_checkpoint(model, cfg.teacher.checkpoint)
    return model


def read_state_dict(path: str | Path, key: str = "teacher.checkpoint") -> dict[str, torch.Tensor]:
    """A checkpoint's state dict: ``{"state_dict": ...}`` (archnet) or a bare state dict."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # not a checkpoint: truncated, text, another format
        raise ConfigError(key, str(path), f"a PyTorch checkpoint ({type(e).__name__}: "
                          f"{str(e).splitlines()[0] if str(e) else ''})") from None
    state = obj["state_dict"] if isinstance(obj, dict) and "state_dict" in obj else obj
    if not isinstance(state, dict):
        raise ConfigError(key, str(path), f"a state dict (found {type(state).__name__})")
    return state


def check_state_dict(model: nn.Module, state: dict[str, torch.Tensor], key: str, path: Any,
                     ignore: set[str] | frozenset[str] = frozenset()) -> None:
    """Raise :class:`ConfigError` naming the first missing, unexpected or mis-shaped tensor
    (``ignore``: keys of ``model`` the checkpoint need not hold)."""
    own = {k: v for k, v in model.state_dict().items() if k not in ignore}
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        what = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
        raise ConfigError(key, str(path), f"a checkpoint of this model ({what})")
    for name, tensor in state.items():
        if tuple(tensor.shape) != tuple(own[name].shape):
            raise ConfigError(key, str(path), f"a checkpoint of this model ({name} has shape "
                              f"{tuple(tensor.shape)}, the model needs {tuple(own[name].shape)})")


def load_teacher_checkpoint(model: nn.Module, path: str | Path, key: str = "teacher.checkpoint") -> None:
    if not Path(path).is_file():
        raise ConfigError(key, str(path), "an existing checkpoint file (train one with archnet-teacher)")
    state = read_state_dict(path, key)
    check_state_dict(model, state, key, path)
    model.load_state_dict(state)


def freeze(model: nn.Module) -> nn.Module:
    """Eval mode and no gradients: a frozen teacher (DESIGN.md 3.4)."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def _shape(input_shape: Any) -> tuple[int, ...] | None:
    """``input_shape`` as a tuple; ``None`` for data without a fixed input shape (token ids)."""
    return tuple(input_shape) if input_shape is not None else None


def build_student(cfg: DictConfig, teacher: TappedChain, input_shape: tuple[int, int, int] | None) -> TappedChain:
    factory = instantiate(cfg.student, _partial_=True)  # objects are passed at call time
    return factory(teacher=teacher, quant=quant_config(cfg.quant), input_shape=_shape(input_shape))


def build_adapters(cfg: DictConfig, teacher: TappedChain, student: TappedChain,
                   input_shape: tuple[int, int, int] | None) -> dict[str, nn.Module]:
    """Training-only adapters per tap (``distill.adapters``: null for none).

    With ``distill.adapters.taps: null`` and a schedule that names its taps
    (``schedule.taps``), the adapters go on those taps (``stem`` and ``logits`` excepted):
    a student whose inner taps differ from the teacher's (``student=searched``) is
    supervised, and adapted, at its block outputs only."""
    spec = cfg.distill.get("adapters")
    if not spec:
        return {}
    factory = instantiate(spec, _partial_=True)
    kwargs = {}
    schedule_taps = cfg.get("schedule", {}).get("taps")
    if "taps" in spec and spec.taps is None and schedule_taps:
        kwargs["taps"] = [t for t in schedule_taps if t not in ("stem", LOGITS)]
    return factory(teacher=teacher, student=student, input_shape=_shape(input_shape), **kwargs)


def build_schedule(cfg: DictConfig, tap_names: list[str]) -> list[StageSpec]:
    node = OmegaConf.to_container(cfg.schedule, resolve=True)
    assert isinstance(node, dict)
    return instantiate(node, tap_names=tap_names, _convert_="all", _recursive_=False)


FEATURE_UNITS = ("raw", "bn")


def feature_scale(cfg: DictConfig) -> float:
    """``a`` the student's feature taps are divided by (``distill.feature_units``): ``raw`` 1
    (the authors'), ``bn`` the activation quantizer's scale (fixed-range: its multiplier, else 1).
    Only image tasks rescale: ``bn`` with another ``data.task`` and ``a != 1`` is an error."""
    from archnet.ops.quant import activation_scale

    units = cfg.distill.get("feature_units", "raw")
    if units not in FEATURE_UNITS:
        raise ConfigError("distill.feature_units", units, FEATURE_UNITS)
    scale = activation_scale(quant_config(cfg.quant).act) if units == "bn" else 1.0
    task = cfg.data.get("task")
    if scale != 1.0 and task:
        raise ConfigError("distill.feature_units", units,
                          f"raw with data.task {task.get('_target_')} (bn rescales image taps only)")
    return scale


def check_calibration(cfg: DictConfig, teacher: nn.Module) -> int:
    """Validate ``student.init_preadd_shift`` (>= 0; > 0 needs ``student.init_merge_as_add`` or
    ``student.fold_add``) and ``distill.calibrate_images`` (0: off; > 0 needs a ResNet teacher
    and concat merges that start as adds or folded adds, :mod:`archnet.convert.calibrate`);
    returns the number of images."""
    from archnet.models.resnet import ResNet

    as_add = bool(cfg.student.get("init_merge_as_add")) or bool(cfg.student.get("fold_add"))
    shift = cfg.student.get("init_preadd_shift", 0.0)
    if not isinstance(shift, (int, float)) or isinstance(shift, bool) or shift < 0 or (shift > 0 and not as_add):
        raise ConfigError("student.init_preadd_shift", shift,
                          "0, or a number > 0 with student.init_merge_as_add=true or student.fold_add=true")
    n = cfg.distill.get("calibrate_images", 0)
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise ConfigError("distill.calibrate_images", n, "an integer >= 0")
    if n and not (isinstance(teacher, ResNet) and as_add):
        raise ConfigError("distill.calibrate_images", n, "0 unless the teacher is a ResNet and "
                          "student.init_merge_as_add=true or student.fold_add=true")
    return n


@torch.no_grad()
def calibrate_student(cfg: DictConfig, student: nn.Module, teacher: nn.Module, dm: Any,
                      task: Any) -> list[float]:
    """Fit the student's BNs to the teacher on ``distill.calibrate_images`` training images (a
    seeded draw from the label-free pool, the same on every rank); returns the per-block
    relative error of the merge pre-activations (empty when off)."""
    from archnet.convert.calibrate import calibrate_student as calibrate

    n = check_calibration(cfg, teacher)
    if not n:
        return []
    return calibrate(student, teacher, seeded_images(cfg, dm, task, n),
                     refit=bool(cfg.distill.get("calibrate_refit", False)))


def start_student(cfg: DictConfig, student: nn.Module, teacher: nn.Module, dm: Any,
                  task: Any) -> dict[str, Any]:
    """The student's start before the first stage: weights from ``distill.init_student`` (with
    every learned quantizer step set on one batch), then the BN calibration of
    ``distill.calibrate_images``. Returns ``{"copied", "steps", "merge_errors"}``."""
    copied = steps = 0
    if cfg.distill.get("init_student"):
        from archnet.distill.init_student import load_student_init

        copied = load_student_init(student, cfg.distill.init_student)
        steps = _fit_steps(cfg, student, dm, task)
    return {"copied": copied, "steps": steps,
            "merge_errors": calibrate_student(cfg, student, teacher, dm, task)}


def _fit_steps(cfg: DictConfig, student: nn.Module, dm: Any, task: Any) -> int:
    """Every uninitialised LSQ step of ``student`` set on one seeded batch
    (``distill.init_student_steps``); returns how many."""
    from archnet.distill.init_student import initialize_steps

    return initialize_steps(student, seeded_images(cfg, dm, task, cfg.distill.batch_size),
                            cfg.distill.get("init_student_steps", "weights"))


def restart_student(cfg: DictConfig, net: Any, teacher: nn.Module, dm: Any, task: Any) -> dict[str, Any]:
    """Restart ``net`` (a :class:`~archnet.distill.stage_module.DistillNet`) from its own
    student as :func:`start_student` starts one from ``distill.init_student``: weights ``<- q(W)``,
    every LSQ step fitted anew (``distill.init_student_steps``), the BN calibration of
    ``distill.calibrate_images``, fresh adapters. Returns ``{"copied", "steps", "merge_errors"}``."""
    import copy

    from archnet.distill.init_student import copy_student, reset_steps

    net.cpu(), teacher.cpu()  # where the images are; the next fit moves both back
    student = net.student
    source = copy.deepcopy(student)
    reset_steps(student)
    copied = copy_student(student, source, "the student before the restart")
    steps = _fit_steps(cfg, student, dm, task)
    net.set_adapters(build_adapters(cfg, teacher, student, getattr(dm, "input_shape", None)))
    return {"copied": copied, "steps": steps,
            "merge_errors": calibrate_student(cfg, student, teacher, dm, task)}


def seeded_images(cfg: DictConfig, dm: Any, task: Any, n: int) -> torch.Tensor:
    """``n`` images of the label-free pool in a seeded order (the same on every rank)."""
    return torch.cat([inputs[0] for inputs in seeded_batches(cfg, dm, task, n, max(n, 1))])


def seeded_batches(cfg: DictConfig, dm: Any, task: Any, n: int, batch: int) -> Iterator[tuple[torch.Tensor, ...]]:
    """The first ``n`` images of the label-free pool in the seeded order of
    :func:`seeded_images`, as model inputs in batches of at most ``batch``."""
    pool = task.train_dataset(dm)
    order = torch.randperm(len(pool), generator=torch.Generator().manual_seed(cfg.seed))[:n]
    for chunk in order.split(batch):
        yield task.eval_inputs(torch.stack([pool[int(i)] for i in chunk]))


def build_task(cfg: DictConfig, dm: Any) -> Any:
    """The distillation task of the data (``data.task``; images by default)."""
    from archnet.distill.tasks import image_task

    scale = feature_scale(cfg)
    node = cfg.data.get("task")
    return instantiate(node, _partial_=True)(dm=dm) if node else image_task(dm, feature_scale=scale)


def check_tap_pairs(stages: list[StageSpec], teacher: Any, student: Any,
                    input_shape: tuple[int, ...] | None) -> None:
    """Every supervised tap exists in both networks (and, for images, has the same shape)."""
    from archnet.models.taps import tap_shapes

    needed = sorted({t for s in stages for t in s.taps}, key=teacher.tap_names.index)
    for tap in needed:
        if tap not in student.tap_names:
            raise ConfigError("schedule.taps", tap, f"a tap of the student too ({student.tap_names})")
    if input_shape is None:
        return
    t_shapes, s_shapes = tap_shapes(teacher, input_shape), tap_shapes(student, input_shape)
    for tap in needed:
        if t_shapes[tap] != s_shapes[tap]:
            raise ConfigError("schedule.taps", tap, f"a tap whose student shape {s_shapes[tap]} "
                              f"equals the teacher's {t_shapes[tap]}")
