"""Which parameters a stage trains; only those get ``requires_grad`` and reach the optimizer.

``trainable: reachable`` (default) keeps the parameters that receive a gradient from the
stage loss (found by one eval-mode backward pass, which moves no BN statistics);
``all`` keeps every parameter; a list of glob patterns keeps matching names (e.g.
``["student.body.3.*", "adapters.*"]``).
"""
from __future__ import annotations

from fnmatch import fnmatch

import torch
from torch import Tensor

from archnet.distill.stage_module import StageModule
from archnet.errors import ConfigError
from archnet.models.taps import eval_mode


def select_trainable(module: StageModule, example: tuple[Tensor, ...]) -> list[str]:
    """Set ``requires_grad`` on the stage's trainable parameters; return their names."""
    named = dict(module.net.named_parameters())
    spec = module.stage.trainable
    for p in named.values():
        p.requires_grad_(True)
    if spec == "all":
        names = list(named)
    elif spec == "reachable":
        module.teacher.to(example[0].device).eval()  # frozen: never moves its BN statistics
        with eval_mode(module.net):
            loss, _ = module.stage_loss(example)
            grads = torch.autograd.grad(loss, list(named.values()), allow_unused=True)
        names = [n for n, g in zip(named, grads) if g is not None]
    elif isinstance(spec, (list, tuple)):
        names = [n for n in named if any(fnmatch(n, pat) for pat in spec)]
    else:
        raise ConfigError(f"schedule[{module.stage.name}].trainable", spec,
                          "reachable, all, or a list of parameter-name patterns")
    if not names:
        raise ConfigError(f"schedule[{module.stage.name}].trainable", spec,
                          "a selection matching at least one parameter")
    keep = set(names)
    for n, p in named.items():
        p.requires_grad_(n in keep)
    return names
