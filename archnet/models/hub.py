"""Load torchvision-format state dicts (local path or URL) into archnet's own teachers.

archnet's ResNet and MobileNetV2 use torchvision's parameter names, so the official
ImageNet checkpoints load strictly. A source is a local file, an ``http(s)://`` URL
(downloaded once into the torch hub cache by ``torch.hub.load_state_dict_from_url``), or a
short name from :data:`TORCHVISION_URLS`. Every failure is a one-line
:class:`~archnet.errors.ConfigError` under the config key ``teacher.weights``.
"""
from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from archnet.errors import ConfigError

KEY = "teacher.weights"
# torchvision IMAGENET1K_V1 weights (the numbers the paper's teachers match, reference section 0).
TORCHVISION_URLS = {
    "resnet18": "https://download.pytorch.org/models/resnet18-f37072fd.pth",
    "resnet34": "https://download.pytorch.org/models/resnet34-b627a593.pth",
    "resnet50": "https://download.pytorch.org/models/resnet50-0676ba61.pth",
    "mobilenet_v2": "https://download.pytorch.org/models/mobilenet_v2-b0353104.pth",
}
_NBT = "num_batches_tracked"


def _is_url(source: str) -> bool:
    return source.startswith(("http://", "https://", "file://"))


def load_state_dict(source: str | Path, model_dir: str | Path | None = None) -> dict[str, Tensor]:
    """Read a state dict from ``source`` onto the CPU.

    Wrapped checkpoints (``{"state_dict": ...}`` or ``{"model": ...}``) are unwrapped and a
    DDP ``module.`` prefix is stripped.
    """
    source = TORCHVISION_URLS.get(str(source), source)
    try:
        if _is_url(str(source)):
            obj = torch.hub.load_state_dict_from_url(
                str(source), model_dir=None if model_dir is None else str(model_dir),
                map_location="cpu", progress=False)
        else:
            path = Path(source).expanduser()
            if not path.is_file():
                raise ConfigError(KEY, str(source), "no such file (a path, an http(s) URL or one of "
                                  + ", ".join(TORCHVISION_URLS) + ")")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except ConfigError:
        raise
    except (OSError, ValueError) as e:  # URLError is an OSError: offline, DNS, HTTP errors
        reason = " ".join(str(getattr(e, "reason", e)).split())
        raise ConfigError(KEY, str(source), f"could not be read ({type(e).__name__}: {reason}); "
                          "offline? download the file elsewhere and pass its local path") from None
    except (pickle.UnpicklingError, RuntimeError, EOFError) as e:  # corrupt or not a checkpoint
        reason = " ".join(str(e).split())[:200]
        raise ConfigError(KEY, str(source), f"is not a state dict ({type(e).__name__}: {reason})") from None
    return _unwrap(obj, str(source))


def _unwrap(obj: object, source: str) -> dict[str, Tensor]:
    for key in ("state_dict", "model"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
    if not isinstance(obj, Mapping) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise ConfigError(KEY, source, "is not a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def check_state_dict(model: nn.Module, state: Mapping[str, Tensor], source: str = "<state dict>") -> None:
    """Raise a one-line ConfigError naming missing/unexpected keys and shape mismatches.

    A missing BN ``num_batches_tracked`` (pre-2018 checkpoints) is not an error.
    """
    expected = model.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith(_NBT)]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k} {tuple(state[k].shape)} vs model {tuple(v.shape)}"
              for k, v in expected.items() if k in state and state[k].shape != v.shape]
    problems = []
    for label, items in (("missing keys", missing), ("unexpected keys", unexpected),
                         ("shape mismatches", shapes)):
        if items:
            shown = ", ".join(items[:5]) + (f" (+{len(items) - 5} more)" if len(items) > 5 else "")
            problems.append(f"{len(items)} {label}: {shown}")
    if problems:
        raise ConfigError(KEY, source, f"does not fit {type(model).__name__}: " + "; ".join(problems))


def load_into(model: nn.Module, source: str | Path | Mapping[str, Tensor],
              model_dir: str | Path | None = None) -> nn.Module:
    """Strictly load ``source`` (path, URL, short name or state dict) into ``model``; returns it."""
    name = "<state dict>" if isinstance(source, Mapping) else str(source)
    state = dict(source) if isinstance(source, Mapping) else load_state_dict(source, model_dir)
    check_state_dict(model, state, name)
    for k, v in model.state_dict().items():
        if k.endswith(_NBT) and k not in state:
            state[k] = torch.zeros_like(v)
    model.load_state_dict(state, strict=True)
    return model
