"""MACs of ResNet-18 chain students (``student=chain``) for a few topologies vs the teacher.

Usage: python scripts/topology_macs.py [--size 224] [--head gap|flatten] [--classes 1000]
Exact hook counts on the meta device (no weights, no data); prints a markdown table.
"""
from __future__ import annotations

import argparse

import torch

from archnet.convert.chain_student import chain_student
from archnet.metrics.complexity import measure
from archnet.models.resnet import resnet18

TOPOLOGIES = [{"n_units": 2}, {"n_units": 1}, {"n_units": 2, "width": 0.5},
              {"n_units": 2, "width": 0.75}, {"n_units": 2, "shortcut": False}]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--head", default="gap", choices=["gap", "flatten"])
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--small-stem", action="store_true", help="3x3/1 stem + 2x2 pool (Tiny-ImageNet teachers)")
    ap.add_argument("--width", type=float, default=1.0, help="teacher width multiplier")
    args = ap.parse_args()
    shape = (3, args.size, args.size)
    kwargs = {"stem": "small"} if args.small_stem else {}
    with torch.device("meta"):
        teacher = resnet18(num_classes=args.classes, width_multiplier=args.width, **kwargs)
    t = measure(teacher, shape)
    print(f"teacher: {t.params / 1e6:.2f} M params, {t.macs / 1e6:.1f} M MACs\n")
    print("| topology | student params | student MACs | MACs / teacher |")
    print("|---|---|---|---|")
    for topo in TOPOLOGIES:
        with torch.device("meta"):
            student = chain_student(teacher, None, shape, topology=topo, head=args.head)
        s = measure(student, shape)
        print(f"| {topo} | {s.params / 1e6:.2f} M | {s.macs / 1e6:.1f} M | {s.macs / t.macs:.2f}x |")


if __name__ == "__main__":
    main()
