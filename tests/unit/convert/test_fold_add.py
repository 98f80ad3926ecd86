"""``student.fold_add``: the residual add folded into the block's last conv, and
``student.stem_strides``: the imagenet stem's unit strides."""
from __future__ import annotations

import pytest
import torch
from resnet_teachers import SHAPE, assert_calibrated_student_is_the_teacher, block_inputs, teacher_of

from archnet.convert.resnet import convert_resnet
from archnet.errors import ConfigError
from archnet.metrics.complexity import count_macs
from archnet.models.resnet import ResNet
from archnet.ops.quant import QuantConfig


@pytest.mark.parametrize("kind", ["basic", "bottleneck"])
def test_folded_float_student_is_the_teacher(kind: str) -> None:
    """Eval, no calibration: with a shift wide enough that no projection value clips, every
    block output and the logits equal the teacher's; the last conv's tap is gone."""
    teacher = teacher_of(kind)
    student = convert_resnet(teacher, QuantConfig(), SHAPE, fold_add=True, init_preadd_shift=10.0).eval()
    gone = "conv3" if kind == "bottleneck" else "conv2"
    assert f"layer1.0.{gone}" in teacher.tap_names and f"layer1.0.{gone}" not in student.tap_names
    x = torch.randn(32, *SHAPE)
    with torch.no_grad():
        for h, (_, tb), (_, sb) in zip(block_inputs(teacher, x), teacher.blocks(), student.blocks()):
            assert len(sb.main) == len(tb.tap_suffixes) - 2
            assert torch.allclose(sb(h), tb(h), atol=1e-5)
        t_taps, s_taps = teacher.forward_taps(x), student.forward_taps(x)
    assert set(s_taps) < set(t_taps)
    for name, s in s_taps.items():
        assert torch.allclose(s, t_taps[name], atol=1e-4), name


def test_identity_blocks_are_exact_without_a_shift() -> None:
    """An identity shortcut is a block output (>= 0): nothing to shift. A projection shortcut's
    signed output loses its negative part through the unit's ReLU unless shifted."""
    teacher = teacher_of("basic")
    student = convert_resnet(teacher, QuantConfig(), SHAPE, fold_add=True).eval()
    x = torch.randn(32, *SHAPE)
    with torch.no_grad():
        (h1, h2), ((_, t1), (_, t2)), ((_, s1), (_, s2)) = block_inputs(teacher, x), teacher.blocks(), student.blocks()
        assert s1.shortcut is None and s2.shortcut is not None
        assert torch.allclose(s1(h1), t1(h1), atol=1e-5)
        assert (s2(h2) - t2(h2)).abs().max() > 1e-2


def test_sliced_fold_keeps_the_diagonal_blocks() -> None:
    """Above ``max_in_channels`` the folded conv is cut into aligned slices: output slice i reads
    slice i of h and of the shortcut, i.e. the teacher block with conv2's off-diagonal blocks
    zeroed."""
    teacher = teacher_of("basic")  # layer2: 16 + 16 inputs -> two slices of 8 + 8 under 16
    student = convert_resnet(teacher, QuantConfig(), SHAPE, fold_add=True, init_preadd_shift=10.0,
                             max_in_channels=16).eval()
    _, tb = list(teacher.blocks())[1]
    _, sb = list(student.blocks())[1]
    assert sb.merge.n_slices == 2
    h = block_inputs(teacher, torch.randn(16, *SHAPE))[1]
    with torch.no_grad():
        full = tb(h)
        tb.conv2.weight[:8, 8:] = 0.0
        tb.conv2.weight[8:, :8] = 0.0
        diagonal = tb(h)
        assert torch.allclose(sb(h), diagonal, atol=1e-5)
        assert not torch.allclose(sb(h), full, atol=1e-3)


def test_folded_basic_block_costs_one_and_a_half_teachers() -> None:
    """MACs (hook count): conv1 + the last conv over twice its inputs = 1.5x an identity basic
    block; the unfolded student (unit + merge over 2C) is 2x."""
    teacher = teacher_of("basic")
    h = block_inputs(teacher, torch.randn(2, *SHAPE))[0]
    shape = tuple(h.shape[1:])
    folded = convert_resnet(teacher, QuantConfig(), SHAPE, fold_add=True)
    plain = convert_resnet(teacher, QuantConfig(), SHAPE)
    t = count_macs(teacher.layer1[0], shape)
    assert count_macs(folded.body[0], shape) * 2 == 3 * t
    assert count_macs(plain.body[0], shape) == 2 * t


def test_calibrated_folded_student_computes_the_teacher_on_new_inputs() -> None:
    teacher = teacher_of("bottleneck")
    student = convert_resnet(teacher, QuantConfig(), SHAPE, fold_add=True, init_preadd_shift=10.0)
    assert_calibrated_student_is_the_teacher(student, teacher)


def test_fold_slices_a_narrow_h_next_to_a_wide_shortcut() -> None:
    """A bottleneck's last conv sees ``width`` channels next to a ``4 width`` shortcut: each
    aligned slice reads a slice of both (8 + 32 -> 2 slices of 4 + 16); where no slice count
    divides every width under the limit, it is a config error."""
    teacher = teacher_of("bottleneck")  # layer1.0: 8 + 32 inputs, layer2.0: 16 + 64
    student = convert_resnet(teacher, QuantConfig(), SHAPE, fold_add=True, max_in_channels=32)
    merges = {name: [u.conv.in_channels for u in b.merge.units] for name, b in student.blocks()}
    assert merges == {"layer1.0": [20, 20], "layer2.0": [20, 20, 20, 20]}
    with pytest.raises(ConfigError, match=r"student\.fold_add=True.*block layer1\.0.*8\+32"):
        convert_resnet(teacher, QuantConfig(), SHAPE, fold_add=True, max_in_channels=4)


@pytest.mark.parametrize("strides", [(2,), (2, 1), (1, 2), (1, 1, 2)])
def test_stem_strides_keep_the_teachers_stem_shape(strides: tuple[int, ...]) -> None:
    teacher = ResNet("basic", [1, 1], (8, 16), 10, stem="imagenet").eval()
    shape = (3, 32, 32)
    student = convert_resnet(teacher, QuantConfig(), shape, stem_strides=strides).eval()
    x = torch.randn(2, *shape)
    with torch.no_grad():
        assert student.forward_stem(x).shape == teacher.forward_stem(x).shape == (2, 8, 8, 8)
    assert len(student.stem) == len(strides) + 1


@pytest.mark.parametrize("strides", [(), (1, 1), (2, 2), (3,), (1, 4)])
def test_bad_stem_strides(strides: tuple[int, ...]) -> None:
    teacher = ResNet("basic", [1, 1], (8, 16), 10, stem="imagenet")
    with pytest.raises(ConfigError, match="student.stem_strides"):
        convert_resnet(teacher, QuantConfig(), (3, 32, 32), stem_strides=strides)
