"""Top-k accuracy of a student as the chip computes it: the integer-only simulation
(:mod:`archnet.deploy.intsim`) on a labelled loader, next to the float32 fake-quantized
student fed the same int8 input.

Float32 rounding at activation-code boundaries can flip a code in the fake-quantized student
and a flipped code propagates (in float64 the two agree exactly), so the accuracy a run
reports and the chip's can differ slightly; this measures by how much.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn

Batches = Iterable[tuple[Tensor, Tensor]]


@torch.no_grad()
def integer_topk(student: nn.Module, loader: Batches, preprocess: Callable[[Tensor], Tensor] = lambda x: x,
                 ks: tuple[int, ...] = (1, 5)) -> dict:
    """``{"integer": {"top1": %, ...}, "fake_quant": {...}, "agreement": %, "n", "input_scale"}``.

    Both models see ``codes * s`` with ``codes = clip(round(x / s), -127, 127)`` and one
    input scale ``s = max |x| / 127`` over the whole loader (a first pass finds it; a chip
    has one fixed input scale). ``agreement``: share of samples with the same top-1 class,
    so ``|integer top-1 - fake_quant top-1| <= 100 - agreement``.
    """
    from archnet.deploy.fold import deploy_student
    from archnet.deploy.intsim import IntSim, quantize_input

    was_training = student.training
    student.eval()
    sim = IntSim(deploy_student(student))
    scale = max(float(preprocess(x).abs().max()) for x, _ in loader) / 127
    hits = {"integer": dict.fromkeys(ks, 0), "fake_quant": dict.fromkeys(ks, 0)}
    same = n = 0
    try:
        for x, y in loader:
            q = quantize_input(preprocess(x), scale)
            logits = {"integer": sim(q), "fake_quant": student(q.codes.float() * scale).double()}
            for key, z in logits.items():
                top = z.topk(min(max(ks), z.shape[1]), dim=1).indices
                for k in ks:
                    hits[key][k] += int((top[:, :k] == y[:, None]).any(1).sum())
            same += int((logits["integer"].argmax(1) == logits["fake_quant"].argmax(1)).sum())
            n += len(y)
    finally:
        student.train(was_training)
    out: dict = {key: {f"top{k}": 100 * h / n for k, h in counts.items()} for key, counts in hits.items()}
    return {**out, "agreement": 100 * same / n, "n": n, "input_scale": scale}
