"""ChannelsLast: NHWC layout for the stage module and its frozen teacher, same function."""
from __future__ import annotations

import copy

import torch

from archnet.convert.resnet import convert_resnet
from archnet.distill.adapters import rfa_adapters
from archnet.distill.callbacks import ChannelsLast
from archnet.distill.schedule import progressive
from archnet.distill.stage_module import DistillNet, StageModule
from archnet.models.resnet import tiny_resnet
from archnet.ops.quant import QuantConfig, TensorQuantConfig

SHAPE = (3, 32, 32)
W2A4 = QuantConfig("w2a4", TensorQuantConfig("dorefa", 2), TensorQuantConfig("fixed", 4), logit_clip=16.0)


def stage_module() -> StageModule:
    torch.manual_seed(0)
    teacher = tiny_resnet().eval().requires_grad_(False)
    student = convert_resnet(teacher, W2A4, SHAPE)
    net = DistillNet(student, rfa_adapters(teacher, student, SHAPE))
    stage = progressive(teacher.tap_names, 8, 8, 8)[-1]
    return StageModule(net, teacher, stage, lambda x: x, 8, teacher.tap_names)


def conv_weights(module: torch.nn.Module) -> list[torch.Tensor]:
    """4-D weights whose two layouts differ (a 1x1 or single-channel kernel is both)."""
    return [p for p in module.parameters() if p.dim() == 4 and p.shape[1] > 1 and p.shape[-1] > 1]


def test_channels_last_converts_student_adapters_and_teacher_and_keeps_the_loss():
    plain = stage_module()
    nhwc = copy.deepcopy(plain)
    assert not any(w.is_contiguous(memory_format=torch.channels_last) for w in conv_weights(plain.net))
    ChannelsLast().on_fit_start(None, nhwc)  # type: ignore[arg-type]
    for m in (nhwc.net.student, nhwc.net.adapters, nhwc.teacher):
        weights = conv_weights(m)
        assert weights and all(w.is_contiguous(memory_format=torch.channels_last) for w in weights)
    x = torch.randn(6, *SHAPE)
    plain.train(), nhwc.train()
    loss_a, _ = plain.stage_loss((x,))
    loss_b, _ = nhwc.stage_loss((x,))
    assert torch.allclose(loss_a, loss_b, rtol=1e-5, atol=1e-6)
    # the layout follows the activations: the student's first conv output is channels-last
    taps = nhwc.net.student.forward_taps(x)
    assert taps["stem"].is_contiguous(memory_format=torch.channels_last)
    # checkpoints are layout-free: the NHWC state dict loads into a plain copy unchanged
    fresh = stage_module()
    fresh.load_state_dict(nhwc.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), nhwc.state_dict().values()))
    assert not conv_weights(fresh.net)[0].is_contiguous(memory_format=torch.channels_last)
