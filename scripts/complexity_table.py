"""Parameters and MACs of each teacher family and its Arch-Net student (deploy, float).

Usage: python scripts/complexity_table.py [--size 224] [--head gap|flatten] [--dense]
       [--fold-add] [--stem-strides 2] [--inner-width 0.5] [--families resnet18 resnet34]
Prints a markdown table (for docs/results.md); counts are exact hook counts on the meta
device (no weights, no data). ``--fold-add``, ``--stem-strides`` and ``--inner-width`` set the
ResNet rules ``student.fold_add``, ``student.stem_strides`` and ``student.inner_width``.
"""
from __future__ import annotations

import argparse

from archnet.convert.resnet import PAPER_STEM_STRIDES
from archnet.metrics.complexity import FAMILIES, complexity_table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--head", default="gap", choices=["gap", "flatten"])
    ap.add_argument("--dense", action="store_true", help="MobileNet depthwise convs as dense 3x3")
    ap.add_argument("--fold-add", action="store_true", help="ResNets: student.fold_add=true")
    ap.add_argument("--stem-strides", type=int, nargs="+", default=list(PAPER_STEM_STRIDES),
                    help="ResNets: student.stem_strides (default: the reference's 1 1 2)")
    ap.add_argument("--inner-width", type=float, default=1.0, help="ResNets: student.inner_width")
    ap.add_argument("--families", nargs="+", default=list(FAMILIES), choices=FAMILIES)
    args = ap.parse_args()
    options = {"fold_add": args.fold_add, "stem_strides": tuple(args.stem_strides),
               "inner_width": args.inner_width}
    rows = complexity_table(args.families, args.size, head=args.head, depthwise=not args.dense,
                            resnet_options=options)
    print("| model | teacher params | teacher MACs | student params | student MACs | MACs ratio |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['teacher_params'] / 1e6:.2f} M | {r['teacher_macs'] / 1e9:.3f} G "
              f"| {r['student_params'] / 1e6:.2f} M | {r['student_macs'] / 1e9:.3f} G "
              f"| {r['student_macs'] / r['teacher_macs']:.2f}x |")


if __name__ == "__main__":
    main()
