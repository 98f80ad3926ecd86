"""What a distillation *task* supplies to the generic stage engine.

A task turns a raw batch into model inputs (``forward_taps(*inputs, upto)`` for teacher and
student alike), turns a stage's loss terms into a scalar, and scores student/teacher
agreement. :class:`ImageTask` serves every image classifier; the Transformer track adds
its own task (token-level losses, pad masks).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from archnet.distill.losses import LOSSES
from archnet.distill.schedule import LossTerm
from archnet.models.taps import LOGITS

Adapt = Callable[[str, Tensor, Tensor], Tensor]


class ImageTask:
    """Images in, logits out: ``inputs = (preprocess(x),)``; labels are never read.

    ``feature_scale`` ``a`` divides the student's feature taps (not the logits) before the
    adapter and the loss: ``s / a``. ``a = 1`` compares them as they are (the authors');
    ``a = 0.1`` puts fixed-range quantizer outputs ``clip(0.1 x, 0, 1)`` back into the BN
    units of the teacher's features (``distill.feature_units=bn``).
    """

    collate_fn = None  # default collation

    def __init__(self, preprocess: Callable[[Tensor], Tensor],
                 augment: Callable[[Tensor, int], Tensor] | None = None,
                 feature_scale: float = 1.0) -> None:
        if not feature_scale > 0:
            raise ValueError(f"feature_scale must be > 0, got {feature_scale}")
        self.preprocess, self.augment, self.feature_scale = preprocess, augment, feature_scale

    def train_dataset(self, dm: Any) -> Any:
        """The label-free distillation pool: images only."""
        from archnet.data.sampling import ImagesOnly

        return ImagesOnly(dm.train_set)

    def final_metrics(self, model: torch.nn.Module, dm: Any) -> dict[str, float]:
        """Reported-split metrics of a model: ``test/top1``, ``test/top5`` (%)."""
        from archnet.metrics.topk import evaluate_topk

        scores = evaluate_topk(model, dm.test_dataloader(), self.preprocess, dm.num_classes)
        return {f"test/{k}": v for k, v in scores.items()}

    def train_inputs(self, batch: Tensor, step: int) -> tuple[Tensor, ...]:
        x = self.preprocess(batch)
        return (self.augment(x, step) if self.augment is not None else x,)

    def eval_inputs(self, batch: Any) -> tuple[Tensor, ...]:
        x = batch[0] if isinstance(batch, (list, tuple)) else batch  # drop the label unread
        return (self.preprocess(x),)

    def batch_size(self, inputs: Sequence[Tensor]) -> int:
        return inputs[0].shape[0]

    def loss(self, terms: Sequence[LossTerm], s_taps: dict[str, Tensor], t_taps: dict[str, Tensor],
             inputs: Sequence[Tensor], adapt: Adapt) -> tuple[Tensor, dict[str, Tensor]]:
        """``sum_j w_j * loss_j(adapt_j(s_j / a, t_j), t_j)`` (``a`` = 1 for the logits)."""
        total = inputs[0].new_zeros(())
        parts: dict[str, Tensor] = {}
        for term in terms:
            s, t = s_taps[term.tap], t_taps[term.tap]
            if term.tap != LOGITS and self.feature_scale != 1.0:
                s = s / self.feature_scale
            value = LOSSES[term.loss](adapt(term.tap, s, t), t)
            parts[f"{term.loss}/{term.tap}"] = value.detach()
            total = total + term.weight * value
        return total, parts

    def export(self, student: torch.nn.Module, out_dir: Any, dm: Any, profile: str, quant_cfg: Any,
               example_batch: int = 64, parity_images: int = 1000) -> dict[str, Any]:
        """ONNX export + profile verdict + integer simulation on the first test images."""
        from archnet.deploy.export import export_student

        images, have = [], 0
        for x, _ in dm.test_dataloader():
            images.append(self.preprocess(x))
            have += len(x)
            if have >= max(example_batch, parity_images):
                break
        batch = torch.cat(images)
        return export_student(student, out_dir, batch[:example_batch], profile, quant_cfg,
                              parity_images=batch[:parity_images] if parity_images else None)

    def complexity(self, model: torch.nn.Module, dm: Any) -> dict[str, int]:
        """Parameters and MACs of one forward pass on one input."""
        from archnet.metrics.complexity import count_macs, count_params

        return {"params": count_params(model), "macs": count_macs(model, dm.input_shape)}

    @torch.no_grad()
    def agreement(self, student_logits: Tensor, teacher_logits: Tensor,
                  inputs: Sequence[Tensor]) -> tuple[float, int]:
        """(number of samples whose argmax agrees, number of samples)."""
        same = (student_logits.argmax(-1) == teacher_logits.argmax(-1)).sum()
        return float(same), student_logits.shape[0]


def image_task(dm: Any, augment: Callable[[Tensor, int], Tensor] | None = None,
               feature_scale: float = 1.0) -> ImageTask:
    """``data.task`` factory for image data modules."""
    return ImageTask(dm.preprocess, augment, feature_scale)
