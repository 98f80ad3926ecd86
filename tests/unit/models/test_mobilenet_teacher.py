"""MobileNetV1/V2 teachers: torchvision structure, taps, any input size."""
from __future__ import annotations

import pytest
import torch

from archnet.models.mobilenet import make_divisible, mobilenet_v1, mobilenet_v2


def test_parameter_counts_match_the_reference_architectures():
    # torchvision mobilenet_v2: 3,504,872 parameters; MobileNetV1 (with BN): 4,231,976
    assert sum(p.numel() for p in mobilenet_v2().parameters()) == 3_504_872
    assert sum(p.numel() for p in mobilenet_v1().parameters()) == 4_231_976


def test_width_multiplier_and_num_classes():
    m = mobilenet_v2(num_classes=10, width_mult=0.5)
    assert m.features[0][0].out_channels == 16 and m.last_channel == 1280
    assert m.classifier[1].out_features == 10
    assert mobilenet_v2(width_mult=1.4).last_channel == make_divisible(1280 * 1.4) == 1792
    v1 = mobilenet_v1(num_classes=3, width_mult=0.25)
    assert v1.stem[0].out_channels == 8 and v1.fc.in_features == 256


def test_v2_tap_names():
    names = mobilenet_v2().tap_names
    assert names[:6] == ["stem", "features.1.dw", "features.1.out", "features.2.expand",
                         "features.2.dw", "features.2.out"]
    assert names[6:10] == ["features.3.expand", "features.3.dw", "features.3.project", "features.3.out"]
    assert names[-2:] == ["features.18.out", "logits"]
    # 17 inverted residuals: 10 with the residual add (4 taps), 6 without (3), the t=1 one (2)
    assert len(names) == 1 + 10 * 4 + 6 * 3 + 2 + 1 + 1


def test_v1_tap_names():
    names = mobilenet_v1().tap_names
    assert names[:3] == ["stem", "layers.0.dw", "layers.0.out"] and len(names) == 2 + 13 * 2


@pytest.mark.parametrize("factory", [mobilenet_v1, mobilenet_v2])
@pytest.mark.parametrize("size", [32, 57])
def test_taps_match_forward_on_any_input_size(factory, size):
    m = factory(num_classes=4, width_mult=0.35).eval()
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        taps = m.forward_taps(x)
        torch.testing.assert_close(taps["logits"], m(x))
        assert list(m.forward_taps(x, upto=3)) == m.tap_names[:4]
    assert taps["logits"].shape == (2, 4)


def test_v2_project_tap_is_pre_add_and_not_aliased():
    m = mobilenet_v2(num_classes=4, width_mult=0.5).eval()
    with torch.no_grad():
        taps = m.forward_taps(torch.randn(2, 3, 32, 32))
    x_in = taps["features.2.out"]
    torch.testing.assert_close(taps["features.3.out"], taps["features.3.project"] + x_in)
    assert taps["features.3.project"].min() < 0  # linear bottleneck: signed
    assert taps["features.2.dw"].max() <= 6.0  # ReLU6
