"""Top-1/top-5 of a finished run's student as the chip computes it: the integer-only
simulation (:mod:`archnet.deploy.intsim`) on the whole test split, next to the float32
fake-quantized student that ``archnet-distill`` reports, both fed the same int8 input.

Float32 rounding at activation-code boundaries can flip a code in the fake-quantized
student, and a flipped code propagates; in float64 the two agree exactly. This script says
how much the reported numbers move because of it.

Usage: python scripts/intsim_accuracy.py <run dir> [--batch 500]
"""
from __future__ import annotations

import argparse

import torch


def integer_vs_float(student: torch.nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> dict:
    """Top-1/top-5 (%) of the integer simulation (``int``) and of the float32 fake-quantized
    ``student`` (``fq32``) on ``batches`` of (images, labels), both fed the same int8 input
    (one scale, ``max |x| / 127`` over all images), and their top-1 agreement (%)."""
    from archnet.deploy.fold import deploy_student
    from archnet.deploy.intsim import IntSim, quantize_input

    student.eval()
    sim = IntSim(deploy_student(student))
    scale = max(float(x.abs().max()) for x, _ in batches) / 127
    hits = {"int": [0, 0], "fq32": [0, 0]}
    same = n = 0
    with torch.no_grad():
        for x, y in batches:
            q = quantize_input(x, scale)
            logits = {"int": sim(q), "fq32": student(q.codes.float() * scale).double()}
            for key, z in logits.items():
                top5 = z.topk(min(5, z.shape[1]), dim=1).indices
                hits[key][0] += int((top5[:, 0] == y).sum())
                hits[key][1] += int((top5 == y[:, None]).any(1).sum())
            same += int((logits["int"].argmax(1) == logits["fq32"].argmax(1)).sum())
            n += len(y)
    out = {key: (100 * h[0] / n, 100 * h[1] / n) for key, h in hits.items()}
    return {**out, "agreement": 100 * same / n, "n": n, "input_scale": scale}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", help="a finished archnet-distill run directory")
    ap.add_argument("--batch", type=int, default=500, help="images per integer-simulation batch")
    args = ap.parse_args()

    from archnet.distill.build import build_data, build_task
    from archnet.distill.rundir import load_student

    student, cfg = load_student(args.run_dir)
    dm = build_data(cfg, args.batch)
    task = build_task(cfg, dm)
    r = integer_vs_float(student, [(task.preprocess(x), y) for x, y in dm.test_dataloader()])
    for key, label in (("int", "integer simulation"), ("fq32", "fake-quant float32")):
        print(f"{label}: top-1 {r[key][0]:.2f}%, top-5 {r[key][1]:.2f}%")
    print(f"top-1 agreement {r['agreement']:.2f}% on {r['n']} test images (int8 input scale {r['input_scale']:.4g})")


if __name__ == "__main__":
    main()
