"""Teacher attention + RFA adapters: shapes, widths, the residual/zero init, where they live."""
from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from archnet.convert.resnet import convert_resnet
from archnet.distill.adapters import TapAdapter, rfa_adapters
from archnet.distill.stage_module import DistillNet, adapter_key
from archnet.errors import ConfigError
from archnet.models.resnet import resnet18, resnet50
from archnet.models.taps import tap_shapes

SHAPE = (3, 32, 32)


@pytest.fixture(scope="module")
def pair():
    torch.manual_seed(0)
    teacher = resnet18(num_classes=10, stem="small", width_multiplier=0.125).eval()
    return teacher, convert_resnet(teacher, input_shape=SHAPE)


def test_one_adapter_per_feature_tap_with_student_shapes(pair):
    teacher, student = pair
    adapters = rfa_adapters(teacher, student, SHAPE)
    assert list(adapters) == [t for t in teacher.tap_names if t not in ("stem", "logits")]
    x = torch.randn(2, *SHAPE)
    s_taps, t_taps = student.forward_taps(x), teacher.forward_taps(x)
    for tap, adapter in adapters.items():
        assert adapter(s_taps[tap], t_taps[tap]).shape == s_taps[tap].shape


def test_widths_follow_the_reference():
    """R50: attention hidden planes//24 everywhere; RFA C->p->p->C at the 4p taps (2.1)."""
    teacher = resnet50(num_classes=10, stem="small", width_multiplier=0.5).eval()
    student = convert_resnet(teacher, input_shape=SHAPE)
    adapters = rfa_adapters(teacher, student, SHAPE, taps=["layer4.0.conv2", "layer4.0.conv3", "layer4.0.out"])
    shapes = tap_shapes(teacher, SHAPE)
    p = shapes["layer4.0.conv2"][0]  # 256 planes at width 0.5
    for tap, a in adapters.items():
        c = shapes[tap][0]
        assert a.attention.fc1.out_features == p // 24
        assert a.rfa.body[0].in_channels == c and a.rfa.body[0].out_channels == p
        assert a.rfa.body[1].kernel_size == (3, 3) and a.rfa.body[2].out_channels == c
        assert all(m.bias is None for m in a.rfa.body)
    assert shapes["layer4.0.conv3"][0] == 4 * p


def test_forward_is_gate_then_rfa_plus_ungated_s():
    torch.manual_seed(1)
    a = TapAdapter(16, 16, 2)
    s, t = torch.rand(3, 16, 5, 5), torch.randn(3, 16, 5, 5)
    gate = torch.sigmoid(a.attention.fc2(torch.relu(a.attention.fc1(t.mean((2, 3))))))
    expected = a.rfa.body(s * gate[:, :, None, None]) + s
    torch.testing.assert_close(a(s, t), expected)
    assert not torch.allclose(a(s, t), a(s, t + 1.0))  # the teacher drives the gate


def test_zero_init_starts_as_identity_and_still_learns():
    s, t = torch.rand(2, 8, 4, 4, requires_grad=True), torch.randn(2, 8, 4, 4)
    a = TapAdapter(8, 8, 1, residual=True, zero_init=True)
    out = a(s, t)
    torch.testing.assert_close(out, s)
    out.square().sum().backward()
    assert a.rfa.body[-1].weight.grad.abs().sum() > 0
    no_res = TapAdapter(8, 8, None, residual=False, zero_init=True)
    assert no_res(s, t).abs().max() == 0


def test_no_attention_ignores_the_teacher():
    a = TapAdapter(8, 4, None)
    s = torch.rand(2, 8, 4, 4)
    torch.testing.assert_close(a(s, torch.zeros_like(s)), a(s, torch.ones_like(s)))


def test_saved_in_distillnet_not_in_student(pair):
    teacher, student = pair
    net = DistillNet(student, rfa_adapters(teacher, student, SHAPE, taps=["layer1.0.conv1"]))
    keys = net.state_dict().keys()
    assert any(k.startswith(f"adapters.{adapter_key('layer1.0.conv1')}.rfa.") for k in keys)
    assert not any("adapters" in k or "attention" in k or "rfa" in k for k in student.state_dict())
    s = torch.rand(2, *tap_shapes(student, SHAPE)["layer1.0.conv1"])
    assert not torch.equal(net.adapt("layer1.0.conv1", s, s), s)
    assert net.adapt("layer1.0.conv2", s, s) is s  # no adapter: identity


def test_factory_from_config_and_errors(pair):
    teacher, student = pair
    node = OmegaConf.create({"_target_": "archnet.distill.adapters.rfa_adapters", "squeeze": 24,
                             "attention": False, "taps": ["layer2.0.out"]})
    adapters = instantiate(node, _partial_=True)(teacher=teacher, student=student, input_shape=SHAPE)
    assert list(adapters) == ["layer2.0.out"] and adapters["layer2.0.out"].attention is None
    with pytest.raises(ConfigError, match="distill.adapters.taps"):
        rfa_adapters(teacher, student, SHAPE, taps=["layer9.0.out"])
    other = convert_resnet(resnet18(num_classes=10, stem="small", width_multiplier=0.25), input_shape=SHAPE)
    with pytest.raises(ValueError, match="equal"):
        rfa_adapters(teacher, other, SHAPE)
