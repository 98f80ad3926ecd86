"""convert_chain on teachers that exist only here: a 5x5/avg-pool VGG and a grouped-SE net."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import Tensor, nn

from archnet.convert.chain import ChainTeacher, convert_chain, parse_topology
from archnet.convert.resnet import SplitConvUnit
from archnet.errors import ConfigError
from archnet.ops.units import ConcatMerge


class VGG5(nn.Module):
    """5x5 convs; average pooling between stages lives in forward, outside the blocks."""

    def __init__(self, widths=(8, 16, 32), num_classes: int = 7) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 5, padding=2), nn.BatchNorm2d(widths[0]), nn.ReLU())
        stages, cin = [], widths[0]
        for w in widths:
            stages.append(nn.Sequential(nn.Conv2d(cin, w, 5, padding=2), nn.ReLU(),
                                        nn.Conv2d(w, w, 5, padding=2), nn.BatchNorm2d(w), nn.ReLU()))
            cin = w
        self.stages = nn.ModuleList(stages)
        self.classifier = nn.Linear(cin, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        h = self.stem(x)
        for stage in self.stages:
            h = F.avg_pool2d(stage(h), 2)
        return self.classifier(h.mean((2, 3)))


class GroupedSE(nn.Module):
    """1x1 -> grouped 3x3 (stride) -> squeeze-excitation gate -> 1x1, plus a projection."""

    def __init__(self, cin: int, cout: int, stride: int, groups: int = 4) -> None:
        super().__init__()
        mid = cout // 2
        self.reduce = nn.Conv2d(cin, mid, 1, bias=False)
        self.grouped = nn.Conv2d(mid, mid, 3, stride, 1, groups=groups, bias=False)
        self.se1, self.se2 = nn.Linear(mid, mid // 4), nn.Linear(mid // 4, mid)
        self.expand = nn.Conv2d(mid, cout, 1, bias=False)
        self.proj = nn.Conv2d(cin, cout, 1, stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        h = F.relu(self.grouped(F.relu(self.reduce(x))))
        gate = torch.sigmoid(self.se2(F.relu(self.se1(h.mean((2, 3))))))
        return self.expand(h * gate[:, :, None, None]) + self.proj(x)  # signed output


class SENet(nn.Module):
    def __init__(self, num_classes: int = 5) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, 2, 1)
        self.body = nn.Sequential(GroupedSE(16, 32, 1), GroupedSE(32, 64, 2), GroupedSE(64, 64, 2))
        self.head = nn.Sequential(nn.Linear(64, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        h = self.stem(x)
        for block in self.body:
            h = F.relu_(block(h))  # in place on the block output: taps must be clones
        return self.head(h.mean((2, 3)))


def _distill_step(conv) -> None:
    stem = conv.signatures[0]
    x = torch.randn(2, stem.in_channels, *stem.in_size)
    with torch.no_grad():
        target = conv.teacher.eval().forward_taps(x)
    out = conv.student.train().forward_taps(x)
    assert list(out) == list(target)
    loss = sum(F.mse_loss(out[k], target[k]) for k in target)
    loss.backward()
    for name, p in conv.student.named_parameters():
        assert p.grad is not None, name


def test_vgg_converts_forward_backward():
    conv = convert_chain(VGG5(), ["stages.0", "stages.1", "stages.2"], "stem", "classifier",
                         input_shape=(3, 32, 32), head="gap")
    assert conv.teacher.tap_names == ["stem", "stages.0.out", "stages.1.out", "stages.2.out", "logits"]
    sigs = {s.name: (s.in_channels, s.out_channels, s.stride) for s in conv.signatures}
    # the avg-pool after stage 0 is folded into stage 1's signature
    assert sigs == {"stem": (3, 8, 1), "stages.0": (8, 8, 1), "stages.1": (8, 16, 2),
                    "stages.2": (16, 32, 2)}
    torch.testing.assert_close(conv.student.head.fc.weight, conv.teacher.model.classifier.weight)
    _distill_step(conv)


def test_grouped_se_converts_with_per_block_topology():
    topology = {"n_units": 3, "width": 0.5, "stem": {"n_units": 2, "downsample": "stride"},
                "blocks": [{"shortcut": False}, {"downsample": "pool"}, None]}
    conv = convert_chain(SENet(), ["body.0", "body.1", "body.2"], "stem", "head.0",
                         topology=topology, input_shape=(3, 30, 30))
    s = conv.student
    b0, b1, b2 = (s.get_submodule(f"body.{i}") for i in range(3))
    assert b0.merge is None and len(b0.main) == 3
    assert isinstance(b1.main[1], nn.MaxPool2d) and isinstance(b1.merge, ConcatMerge)
    assert b1.main[0].conv.in_channels == 32 and b1.main[0].conv.out_channels == 32  # width 0.5 * 64
    assert b2.shortcut is not None and isinstance(b2.shortcut[0], nn.MaxPool2d)  # same channels
    assert [tuple(v.shape[1:]) for v in conv.teacher.forward_taps(torch.zeros(1, 3, 30, 30)).values()][:4] \
        == [(16, 15, 15), (32, 15, 15), (64, 8, 8), (64, 4, 4)]
    _distill_step(conv)


def test_taps_are_clones_and_forward_stops_early():
    teacher = ChainTeacher(SENet().eval(), ["body.0", "body.1", "body.2"], "stem")
    x = torch.randn(2, 3, 16, 16)
    taps = teacher.forward_taps(x)
    assert taps["body.0.out"].min() < 0  # captured before the in-place ReLU
    torch.testing.assert_close(taps["logits"], teacher(x))
    calls = []
    teacher.model.body[2].register_forward_hook(lambda *a: calls.append(1))
    assert list(teacher.forward_taps(x, upto=2)) == ["stem", "body.0.out", "body.1.out"]
    assert not calls


def test_channel_limit_splits_units_and_slices_merge():
    conv = convert_chain(VGG5(widths=(32, 64, 128)), ["stages.0", "stages.1", "stages.2"], "stem",
                         input_shape=(3, 16, 16), max_in_channels=64)
    convs = [m for m in conv.student.modules() if isinstance(m, nn.Conv2d)]
    assert max(c.in_channels // c.groups for c in convs) <= 64
    assert any(isinstance(m, SplitConvUnit) for m in conv.student.modules())
    _distill_step(conv)


def test_bad_topology_is_a_config_error():
    with pytest.raises(ConfigError, match="n_unit"):
        parse_topology({"n_unit": 2}, ["a"])
    with pytest.raises(ConfigError, match="one per block"):
        parse_topology([{}, {}], ["a"])
    with pytest.raises(ConfigError, match="downsample"):
        parse_topology({"downsample": "avg"}, ["a"])
    with pytest.raises(ConfigError, match="one of a"):
        parse_topology({"blocks": {"b": {}}}, ["a"])
    with pytest.raises(ConfigError, match="per-block list"):
        parse_topology("wide", ["a"])
    stem, blocks = parse_topology(OmegaConf.create({"width": 2, "blocks": {"b": {"n_units": 1}}}), ["a", "b"])
    assert stem.n_units == 1 and [(b.n_units, b.width) for b in blocks] == [(2, 2), (1, 2)]


def test_conversion_leaves_a_frozen_teacher_frozen():
    """Regression: the shape probe ran on a wrapper whose own mode was "train" and restored
    it recursively, so a frozen ResNet teacher came back in train mode and the next
    teacher forward moved its BN statistics (seen as a 0.09-point teacher drift)."""
    from archnet.convert.chain_student import chain_student
    from archnet.distill.build import freeze
    from archnet.models.resnet import resnet18

    teacher = freeze(resnet18(num_classes=10, stem="small", width_multiplier=0.25))
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    chain_student(teacher, None, (3, 32, 32), topology={"n_units": 1}, head="flatten")
    assert not any(m.training for m in teacher.modules())
    with torch.no_grad():
        teacher(torch.randn(4, 3, 32, 32))
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
