"""End-of-stage metrics on the held-out slice: stage loss and teacher agreement (no labels)."""
from __future__ import annotations

import torch
from torch.utils.data import DataLoader

from archnet.distill.stage_module import StageModule


@torch.no_grad()
def evaluate_stage(module: StageModule, loader: DataLoader, max_samples: int) -> dict[str, float]:
    """Mean stage loss and top-1 agreement (%) with the teacher over ``max_samples`` images."""
    net, teacher = module.net, module.teacher
    was_training = net.training
    net.eval()
    loss_sum = agree = seen = 0.0
    try:
        for x, _ in loader:  # labels are dropped here, never used
            x = module.preprocess(x.to(module.device))
            loss, _ = module.stage_loss(x)
            loss_sum += float(loss) * x.shape[0]
            agree += float((net.student(x).argmax(1) == teacher(x).argmax(1)).sum())
            seen += x.shape[0]
            if seen >= max_samples:
                break
    finally:
        net.train(was_training)
    return {"loss": loss_sum / seen, "agreement": 100.0 * agree / seen}
