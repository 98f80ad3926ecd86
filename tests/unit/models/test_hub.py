"""torchvision-format state dicts load strictly into archnet's teachers."""
from __future__ import annotations

from collections import OrderedDict

import pytest
import torch

from archnet.errors import ConfigError
from archnet.models.hub import check_state_dict, load_into, load_state_dict
from archnet.models.mobilenet import mobilenet_v2
from archnet.models.resnet import resnet18, resnet34, resnet50

# torchvision's own key names and shapes (torchvision.models.*().state_dict()), listed literally.
TORCHVISION_KEYS = {
    "resnet18": {
        "conv1.weight": (64, 3, 7, 7), "bn1.weight": (64,), "bn1.bias": (64,),
        "bn1.running_mean": (64,), "bn1.running_var": (64,), "bn1.num_batches_tracked": (),
        "layer1.0.conv1.weight": (64, 64, 3, 3), "layer1.0.bn1.running_var": (64,),
        "layer1.1.conv2.weight": (64, 64, 3, 3), "layer2.0.conv1.weight": (128, 64, 3, 3),
        "layer2.0.downsample.0.weight": (128, 64, 1, 1), "layer2.0.downsample.1.weight": (128,),
        "layer2.0.downsample.1.running_mean": (128,), "layer4.1.bn2.bias": (512,),
        "fc.weight": (1000, 512), "fc.bias": (1000,),
    },
    "resnet34": {
        "layer1.2.conv2.weight": (64, 64, 3, 3), "layer2.3.bn2.running_var": (128,),
        "layer3.5.conv2.weight": (256, 256, 3, 3), "layer3.0.downsample.0.weight": (256, 128, 1, 1),
        "layer4.2.bn2.running_mean": (512,), "fc.weight": (1000, 512),
    },
    "resnet50": {
        "conv1.weight": (64, 3, 7, 7), "layer1.0.conv1.weight": (64, 64, 1, 1),
        "layer1.0.conv3.weight": (256, 64, 1, 1), "layer1.0.bn3.weight": (256,),
        "layer1.0.downsample.0.weight": (256, 64, 1, 1), "layer2.0.conv2.weight": (128, 128, 3, 3),
        "layer2.0.downsample.0.weight": (512, 256, 1, 1), "layer3.5.conv1.weight": (256, 1024, 1, 1),
        "layer4.0.downsample.0.weight": (2048, 1024, 1, 1), "layer4.2.conv3.weight": (2048, 512, 1, 1),
        "fc.weight": (1000, 2048), "fc.bias": (1000,),
    },
    "mobilenet_v2": {
        "features.0.0.weight": (32, 3, 3, 3), "features.0.1.weight": (32,),
        "features.0.1.running_mean": (32,), "features.1.conv.0.0.weight": (32, 1, 3, 3),
        "features.1.conv.0.1.bias": (32,), "features.1.conv.1.weight": (16, 32, 1, 1),
        "features.1.conv.2.running_var": (16,), "features.2.conv.0.0.weight": (96, 16, 1, 1),
        "features.2.conv.1.0.weight": (96, 1, 3, 3), "features.2.conv.2.weight": (24, 96, 1, 1),
        "features.2.conv.3.weight": (24,), "features.17.conv.2.weight": (320, 960, 1, 1),
        "features.18.0.weight": (1280, 320, 1, 1), "features.18.1.num_batches_tracked": (),
        "classifier.1.weight": (1000, 1280), "classifier.1.bias": (1000,),
    },
}
# torchvision state_dict lengths (parameters + buffers, num_batches_tracked included)
TORCHVISION_LEN = {"resnet18": 122, "resnet34": 218, "resnet50": 320, "mobilenet_v2": 314}
FACTORIES = {"resnet18": resnet18, "resnet34": resnet34, "resnet50": resnet50,
             "mobilenet_v2": mobilenet_v2}


def _plain(model: torch.nn.Module) -> OrderedDict:
    """A state dict as torchvision's .pth files hold it: no ``_metadata``."""
    return OrderedDict((k, v.clone()) for k, v in model.state_dict().items())


@pytest.mark.parametrize("arch", list(FACTORIES))
def test_torchvision_names_and_strict_load(arch, tmp_path):
    src = FACTORIES[arch]()
    state = _plain(src)
    assert len(state) == TORCHVISION_LEN[arch]
    for key, shape in TORCHVISION_KEYS[arch].items():
        assert tuple(state[key].shape) == shape, key
    path = tmp_path / f"{arch}.pth"
    torch.save(state, path)
    dst = load_into(FACTORIES[arch](), path)
    for k, v in dst.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_old_checkpoints_without_num_batches_tracked_and_wrapped(tmp_path):
    src = resnet18(num_classes=10)
    state = {f"module.{k}": v for k, v in _plain(src).items() if not k.endswith("num_batches_tracked")}
    torch.save({"state_dict": state, "epoch": 3}, tmp_path / "ckpt.pth")
    dst = load_into(resnet18(num_classes=10), tmp_path / "ckpt.pth")
    torch.testing.assert_close(dst.fc.weight, src.fc.weight)


def test_mismatch_names_keys_and_shapes():
    state = _plain(resnet18())
    del state["layer1.0.conv1.weight"]
    state["extra.weight"] = torch.zeros(1)
    state["fc.weight"] = torch.zeros(10, 512)
    with pytest.raises(ConfigError) as e:
        check_state_dict(resnet18(), state, "x.pth")
    msg = str(e.value)
    assert "\n" not in msg
    assert "layer1.0.conv1.weight" in msg and "extra.weight" in msg
    assert "fc.weight (10, 512) vs model (1000, 512)" in msg


def test_url_file_scheme_and_offline_error(tmp_path):
    src = mobilenet_v2(num_classes=3, width_mult=0.25)
    torch.save(_plain(src), tmp_path / "w.pth")
    dst = load_into(mobilenet_v2(num_classes=3, width_mult=0.25), (tmp_path / "w.pth").as_uri(),
                    model_dir=tmp_path / "hub")
    torch.testing.assert_close(dst.classifier[1].weight, src.classifier[1].weight)
    with pytest.raises(ConfigError, match="offline") as e:
        load_state_dict("http://127.0.0.1:9/resnet18-f37072fd.pth", model_dir=tmp_path / "hub")
    assert "\n" not in str(e.value)


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_state_dict(tmp_path / "nope.pth")
    (tmp_path / "bad.pth").write_text("not a checkpoint")
    with pytest.raises(ConfigError, match="not a state dict"):
        load_state_dict(tmp_path / "bad.pth")
