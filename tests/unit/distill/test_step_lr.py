"""``schedule.step_lr_scale``: the LSQ steps get ``scale * lr`` in their own optimizer group
(left out at 0, one plain group at 1), and a training step moves them accordingly."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from archnet.convert.resnet import convert_resnet
from archnet.distill.schedule import progressive
from archnet.distill.stage_module import DistillNet, StageModule
from archnet.errors import ConfigError
from archnet.models.resnet import tiny_resnet
from archnet.ops.lsq import LsqQuantizer
from archnet.ops.quant import QuantConfig, TensorQuantConfig

SHAPE = (3, 32, 32)
LSQ = QuantConfig("lsq_w2a4", TensorQuantConfig("lsq", 2, per_channel=True), TensorQuantConfig("lsq", 4))
OPT = {"_target_": "torch.optim.Adam", "lr": 1e-2}


def stage_module(scale: float) -> StageModule:
    torch.manual_seed(0)
    teacher = tiny_resnet().eval().requires_grad_(False)
    student = convert_resnet(teacher, LSQ, SHAPE)
    stage = progressive(teacher.tap_names, 8, 8, 8, optimizer=OPT, lr_scheduler=None,
                        step_lr_scale=scale)[-1]
    module = StageModule(DistillNet(student), teacher, stage, lambda x: x, 8, teacher.tap_names)
    module.train()
    module.stage_loss((torch.randn(4, *SHAPE),))  # LSQ steps take their shapes at the first forward
    return module


def steps_of(module: StageModule) -> set[int]:
    return {id(m.alpha) for m in module.net.modules() if isinstance(m, LsqQuantizer)}


@pytest.mark.parametrize("scale", [1.0, 0.1, 0.0])
def test_groups_and_learning_rates(scale):
    module = stage_module(scale)
    steps = steps_of(module)
    opt = module.configure_optimizers()
    groups = opt.param_groups
    ids = [{id(p) for p in g["params"]} for g in groups]
    everything = {id(p) for p in module.net.parameters()}
    assert len(steps) > 10 and groups[0]["lr"] == 1e-2
    if scale == 1.0:
        assert len(groups) == 1 and ids[0] == everything
    elif scale == 0.0:
        assert len(groups) == 1 and ids[0] == everything - steps
    else:
        assert len(groups) == 2 and ids[0] == everything - steps and ids[1] == steps
        assert groups[1]["lr"] == pytest.approx(1e-3)
        assert groups[1]["betas"] == groups[0]["betas"]  # the rest from the optimizer's defaults


@pytest.mark.parametrize("scale", [1.0, 0.0])
def test_a_step_moves_the_steps_only_when_they_train(scale):
    module = stage_module(scale)
    opt = module.configure_optimizers()
    alphas = [m.alpha for m in module.net.modules() if isinstance(m, LsqQuantizer)]
    before = [a.detach().clone() for a in alphas]
    weight = module.net.student.stem[0].conv.weight
    w0 = weight.detach().clone()
    loss, _ = module.stage_loss((torch.randn(4, *SHAPE),))
    loss.backward()
    opt.step()
    assert not torch.equal(weight, w0)
    moved = [not torch.equal(a, b) for a, b in zip(alphas, before)]
    assert all(not m for m in moved) if scale == 0.0 else sum(moved) > len(moved) // 2


@pytest.mark.parametrize("value", [-0.5, float("nan"), True, "x"])
def test_bad_step_lr_scale_names_the_stage(value):
    with pytest.raises(ConfigError) as info:
        progressive(tiny_resnet().tap_names, 8, 8, 8, step_lr_scale=value)
    assert info.value.key == "schedule[00_stem].step_lr_scale"


def test_stage_overrides_set_it_per_stage():
    taps = tiny_resnet().tap_names
    stages = progressive(taps, 8, 8, 8, stage_overrides={"10_final": {"step_lr_scale": 0.0}})
    assert [s.step_lr_scale for s in stages] == [1.0] * 10 + [0.0]
    assert dataclasses.asdict(stages[-1])["step_lr_scale"] == 0.0
