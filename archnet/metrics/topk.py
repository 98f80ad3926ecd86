"""Top-k accuracy (torchmetrics) of a classifier on a labelled loader, in percent."""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader
from torchmetrics.classification import MulticlassAccuracy


@torch.no_grad()
def evaluate_topk(model: nn.Module, loader: DataLoader, preprocess: Callable[[Tensor], Tensor],
                  num_classes: int, ks: tuple[int, ...] = (1, 5),
                  device: str | torch.device = "cpu") -> dict[str, float]:
    """``{"top1": %, "top5": %}``: share of samples whose label is among the k largest logits."""
    was_training = model.training
    model.eval()
    # each caller scores the whole loader in its own process (e.g. rank 0 only, after DDP):
    # never synchronise with other ranks, which would wait for processes that are not here
    metrics = {k: MulticlassAccuracy(num_classes, top_k=k, average="micro",
                                     sync_on_compute=False).to(device)
               for k in ks if k <= num_classes}
    try:
        for x, y in loader:
            logits = model(preprocess(x.to(device)))
            for m in metrics.values():
                m.update(logits, y.to(device))
    finally:
        model.train(was_training)
    return {f"top{k}": 100.0 * float(m.compute()) for k, m in metrics.items()}


@torch.no_grad()
def agreement(student: nn.Module, teacher: nn.Module, loader: DataLoader,
              preprocess: Callable[[Tensor], Tensor], device: str | torch.device = "cpu") -> float:
    """Percent of samples where student and teacher predict the same class (label-free)."""
    same = total = 0
    for batch in loader:
        x = batch[0] if isinstance(batch, (list, tuple)) else batch
        x = preprocess(x.to(device))
        same += int((student(x).argmax(1) == teacher(x).argmax(1)).sum())
        total += x.shape[0]
    return 100.0 * same / max(total, 1)
