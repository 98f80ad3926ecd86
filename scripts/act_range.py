"""Fixed-range activation error per teacher tap, for a few activation multipliers.

The fixed-range quantizer maps ``x`` (BN units) to ``q = round(clip(m x, 0, 1) M) / M``,
``M = 2^b - 1``: range ``[0, 1/m]``, step ``1 / (m M)``. For each feature tap ``t`` of a
trained teacher this prints ``E = mean((q(t) / m - relu(t))^2) / mean(relu(t)^2)``, the relative
error of representing the teacher's (ReLU'd) tensor, on held-out *training* images (never the
reported split). A student compared in BN units (``distill.feature_units=bn``) has to live with
this error at every tap; ``quant.act.act_multiplier`` picks ``m``.

Usage: python scripts/act_range.py experiment=tiny_imagenet_resnet18_2w4a [--bits 4]
       [--multipliers 0.1,0.2,0.3,0.4,0.5] [--images 256] [more Hydra overrides]
"""
from __future__ import annotations

import argparse

import torch

from archnet.ops.quantizers import FixedRangeAct


def relative_error(t: torch.Tensor, bits: int, multiplier: float) -> float:
    """``mean((q(t)/m - relu(t))^2) / mean(relu(t)^2)`` with the library's quantizer."""
    r = t.relu()
    q = FixedRangeAct(bits, multiplier)(t) / multiplier
    return float((q - r).pow(2).mean() / r.pow(2).mean().clamp_min(1e-12))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bits", type=int, default=4)
    ap.add_argument("--multipliers", default="0.1,0.2,0.3,0.4,0.5")
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("overrides", nargs="*", help="Hydra overrides of the distill config")
    args = ap.parse_args()
    ms = [float(m) for m in args.multipliers.split(",")]

    from hydra import compose, initialize_config_dir

    from archnet.cli.app import CONF_DIR
    from archnet.distill.build import build_data, build_teacher
    from archnet.models.taps import LOGITS

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("distill", overrides=args.overrides)
    torch.manual_seed(cfg.seed)  # as archnet-distill: a random teacher (checkpoint=null) is the same
    dm = build_data(cfg, args.images)
    teacher = build_teacher(cfg).eval()
    x = dm.preprocess(next(iter(dm.val_dataloader()))[0])[: args.images]  # held-out train slice
    with torch.no_grad():
        taps = {k: v for k, v in teacher.forward_taps(x).items() if k != LOGITS}
    print(f"{len(x)} held-out training images, {args.bits}-bit activations\n")
    print("| tap | " + " | ".join(f"m={m}" for m in ms) + " | p99 |")
    print("|---|" + "---|" * (len(ms) + 1))
    rows = {name: [relative_error(t, args.bits, m) for m in ms] for name, t in taps.items()}
    for name, row in rows.items():
        p99 = torch.quantile(taps[name].relu().flatten()[:100_000], 0.99)
        print(f"| {name} | " + " | ".join(f"{e:.4f}" for e in row) + f" | {p99:.2f} |")
    means = [sum(column) / len(column) for column in zip(*rows.values())]
    print("| **mean** | " + " | ".join(f"**{e:.4f}**" for e in means) + " | |")
    print(f"\nlowest mean error: act_multiplier={ms[means.index(min(means))]}")


if __name__ == "__main__":
    main()
