"""End-of-stage metrics on the held-out slice: stage loss and teacher agreement (no labels)."""
from __future__ import annotations

import torch
from torch.utils.data import DataLoader

from archnet.distill.stage_module import StageModule
from archnet.models.taps import eval_mode


@torch.no_grad()
def evaluate_stage(module: StageModule, loader: DataLoader, max_samples: int) -> dict[str, float]:
    """Mean stage loss and top-1 agreement (%) with the teacher over the first
    ``max_samples`` held-out samples (the last batch is cut to fit)."""
    net, teacher, task = module.net, module.teacher, module.task
    loss_sum = agree = seen = counted = 0.0
    with eval_mode(net):
        for batch in loader:
            need = int(max_samples - seen)
            batch = [b[:need].to(module.device) for b in batch] if isinstance(batch, (list, tuple)) \
                else batch[:need].to(module.device)
            inputs = task.eval_inputs(batch)  # labels are dropped here, never used
            loss, _ = module.stage_loss(inputs)
            n = task.batch_size(inputs)
            loss_sum += float(loss) * n
            same, count = task.agreement(net.student(*inputs), teacher(*inputs), inputs)
            agree, counted, seen = agree + same, counted + count, seen + n
            if seen >= max_samples:
                break
    return {"loss": loss_sum / seen, "agreement": 100.0 * agree / max(counted, 1)}
