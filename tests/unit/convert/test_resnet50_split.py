"""ResNet50 conversion under the 512-input-channel limit (reference 1.4)."""
from __future__ import annotations

import torch
from torch import nn

from archnet.convert.resnet import SplitConvUnit, convert_resnet, split_groups
from archnet.models.resnet import resnet50
from archnet.models.taps import tap_shapes


def test_split_groups():
    assert [split_groups(c, o, 512) for c, o in ((256, 64), (1024, 256), (2048, 512), (960, 160))] \
        == [1, 2, 4, 2]


def test_resnet50_converts_under_the_channel_limit():
    with torch.device("meta"):  # shapes only: 160 M parameters need no values here
        teacher = resnet50(num_classes=10)
        student = convert_resnet(teacher, input_shape=(3, 64, 64), head="gap")
    convs = [m for m in student.modules() if isinstance(m, nn.Conv2d)]
    assert max(c.in_channels // c.groups for c in convs) == 512
    assert all(c.groups == 1 and c.kernel_size == (3, 3) for c in convs)
    # reference table 1.4: layer3 blocks 2-6 conv1 2 x (512->128); layer4.0 conv1 2 x (512->256),
    # its projection 2 x (512->1024, s2); layer4 blocks 2-3 conv1 4 x (512->128)
    expect = {"body.8": (2, 128), "body.13": (2, 256), "body.14": (4, 128)}
    for name, (g, co) in expect.items():
        unit = student.get_submodule(name).main[0]
        assert isinstance(unit, SplitConvUnit) and unit.groups == g
        assert unit.units[0].conv.in_channels == 512 and unit.units[0].conv.out_channels == co
    proj = student.get_submodule("body.13").shortcut
    assert proj.groups == 2 and proj.units[0].conv.stride == (2, 2)
    assert proj.units[0].conv.out_channels == 1024
    assert tap_shapes(student, (3, 64, 64)) == tap_shapes(teacher, (3, 64, 64))
    # 160.4 M deploy parameters with the 1000-class GAP head (reference 1.4): 10 classes here
    n = sum(p.numel() for p in student.parameters())
    assert n == 160_428_328 - 2049 * 990


def test_split_init_from_teacher_is_block_diagonal():
    # half-width ResNet50 under a 256-channel limit: the same splits at a quarter of the cost
    teacher = resnet50(num_classes=10, width_multiplier=0.5)
    student = convert_resnet(teacher, input_shape=(3, 32, 32), init_split_from_teacher=True,
                             max_in_channels=256)
    unit = student.get_submodule("body.14").main[0]  # layer4.1.conv1: 1024 -> 256, 4 groups
    assert unit.groups == 4
    w = teacher.layer4[1].conv1.weight
    torch.testing.assert_close(unit.units[2].conv.weight[:, :, 1, 1], w[128:192, 512:768, 0, 0])
    torch.testing.assert_close(unit.units[2].bn.running_mean, teacher.layer4[1].bn1.running_mean[128:192])


def test_r50_layer2_bug_flag():
    teacher = resnet50(num_classes=10, width_multiplier=0.25).eval()
    student = convert_resnet(teacher, input_shape=(3, 32, 32), r50_layer2_bug=True).eval()
    for i in range(4):
        block = student.get_submodule(f"body.{3 + i}")
        assert block.merge is None and block.shortcut is None
    assert student.get_submodule("body.7").merge is not None  # layer3 unaffected
    with torch.no_grad():
        taps = student.forward_taps(torch.randn(1, 3, 32, 32))
    assert torch.equal(taps["layer2.1.out"], taps["layer2.1.conv3"])
