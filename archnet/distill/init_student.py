"""``distill.init_student``: start a student from another run's trained student.

Progressive bit widths (a 2w4a student from a distilled 4w4a one, same topology): every
weight of the new student is the source's *quantized* weight ``q_src(W)`` (what the source
computes with; its latent ``W`` is a training artefact, and re-quantizing ``W`` finely undoes
the source's rounding that its BNs and later layers were trained on), every bias and BN
tensor is copied, and every learned quantizer step (LSQ ``alpha`` and its ``init_state``) is
left out, so each step is initialised anew at *this* run's bit width
(:func:`initialize_steps`). The adapters are not part of a student and start as configured.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from archnet.errors import ConfigError
from archnet.ops.layers import QConv2d, QLinear
from archnet.ops.lsq import LsqQuantizer, LsqWeight
from archnet.ops.step_fit import output_step

KEY = "distill.init_student"


def source_run(source: str | Path) -> Path:
    """The finished run directory ``source`` names (itself, or the folder of its student.pt)."""
    path = Path(source)
    run = path.parent if path.is_file() and path.name == "student.pt" else path
    if not ((run / ".hydra" / "config.yaml").is_file() and (run / "student.pt").is_file()):
        raise ConfigError(KEY, str(source), "a finished archnet-distill run directory "
                          "(.hydra/config.yaml and student.pt)")
    return run


def quantizer_state_keys(model: nn.Module) -> set[str]:
    """State-dict keys of every learned quantizer step in ``model``."""
    return {f"{name}.{key}" if name else key
            for name, module in model.named_modules() if isinstance(module, LsqQuantizer)
            for key in module.state_dict(keep_vars=True) if "." not in key}


@torch.no_grad()
def effective_state(source: nn.Module) -> dict[str, Tensor]:
    """``source``'s state dict with each quantized layer's ``weight`` replaced by ``q(W)``
    (eval mode) and its learned steps left out."""
    source.eval()
    steps = quantizer_state_keys(source)
    state = {k: v for k, v in source.state_dict().items() if k not in steps}
    for name, m in source.named_modules():
        if isinstance(m, (QConv2d, QLinear)):
            state[f"{name}.weight"] = m.quantized_weight().detach().clone()
    return state


def copy_student(student: nn.Module, source: nn.Module, label: str | Path = "source") -> int:
    """Copy ``source`` into ``student`` (see the module docstring); a student of another
    topology is a :class:`ConfigError` naming the first missing, unexpected or mis-shaped
    tensor. Returns the number of tensors copied."""
    from archnet.distill.build import check_state_dict

    state = effective_state(source)
    skip = quantizer_state_keys(student)
    check_state_dict(student, state, KEY, label, ignore=skip)
    student.load_state_dict(state, strict=False)
    return len(state)


def load_student_init(student: nn.Module, source: str | Path) -> int:
    """:func:`copy_student` from the student of the finished run ``source``."""
    from archnet.distill.rundir import load_student

    return copy_student(student, load_student(source_run(source))[0], source)


STEP_FITS = ("weights", "outputs")


def reset_steps(model: nn.Module) -> int:
    """Mark every learned quantizer step of ``model`` uninitialised (the next
    :func:`initialize_steps` or training forward sets it anew); returns how many."""
    quantizers = [m for m in model.modules() if isinstance(m, LsqQuantizer)]
    for q in quantizers:
        q.init_state.zero_()
        q._initialized = False
    return len(quantizers)


@torch.no_grad()
def initialize_steps(student: nn.Module, x: Tensor, fit: str = "weights") -> int:
    """Initialise every learned quantizer step that has none yet with one forward of ``x``:
    quantizers in training mode (their first training forward sets the step), everything
    else in eval mode (BN statistics untouched). ``fit="outputs"``: each LSQ weight step is
    instead the one with the least output error of its layer on the inputs it receives in
    that forward (:func:`archnet.ops.step_fit.output_step`; layer by layer, each fed by the
    layers before it already quantized). Without this a step waits for the first stage that
    trains its layer, and the per-stage agreement of a copied student would be computed with
    a head whose step is still 1 (every weight code 0). Returns how many steps were set."""
    if fit not in STEP_FITS:
        raise ConfigError("distill.init_student_steps", fit, STEP_FITS)
    fresh = [m for m in student.modules() if isinstance(m, LsqQuantizer) and not bool(m.init_state)]
    hooks = []
    if fit == "outputs":
        def fit_step(layer: nn.Module, inputs: tuple[Tensor, ...]) -> None:
            layer.weight_quantizer.set_step(output_step(layer, inputs[0]))

        hooks = [m.register_forward_pre_hook(fit_step) for m in student.modules()
                 if isinstance(m, (QConv2d, QLinear)) and isinstance(m.weight_quantizer, LsqWeight)
                 and m.weight_quantizer in fresh]
    was_training = student.training
    student.eval()
    for q in fresh:
        q.train()
    try:
        student(x)
    finally:
        student.train(was_training)
        for h in hooks:
            h.remove()
    return len(fresh)
