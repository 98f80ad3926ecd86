"""How close a converted student is to its teacher before any distillation.

Builds the student of a distill config exactly as ``archnet-distill`` does (conversion rules,
quantization, ``student.init_preadd_shift``, the weights of ``distill.init_student`` and the BN
calibration of ``distill.calibrate_images`` when set, :mod:`archnet.convert.calibrate`) and prints its top-1
agreement with the teacher, eval mode, on the held-out *training* images (never the reported
split), plus the per-block relative error of the calibrated merges.

Usage: python scripts/init_agreement.py experiment=tiny_imagenet_resnet18_8w8a_calibrated
       [--images 1000] [more Hydra overrides, e.g. quant=fp32 distill.calibrate_images=512]
"""
from __future__ import annotations

import argparse

import torch


def agreement(student: torch.nn.Module, teacher: torch.nn.Module, x: torch.Tensor, batch: int = 250) -> float:
    """Top-1 agreement (%) of ``student`` with ``teacher`` on ``x``, both in eval mode."""
    student.eval()
    teacher.eval()
    with torch.no_grad():
        same = sum(int((teacher(xb).argmax(1) == student(xb).argmax(1)).sum()) for xb in x.split(batch))
    return 100.0 * same / len(x)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=1000, help="held-out images scored")
    ap.add_argument("overrides", nargs="*", help="Hydra overrides of the distill config")
    args = ap.parse_intermixed_args()

    from hydra import compose, initialize_config_dir

    from archnet.cli.app import CONF_DIR
    from archnet.distill.build import build_data, build_student, build_task, build_teacher, start_student

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("distill", overrides=args.overrides)
    torch.manual_seed(cfg.seed)  # as archnet-distill: a random teacher (checkpoint=null) is the same
    dm = build_data(cfg, 250)
    teacher = build_teacher(cfg).eval()
    student = build_student(cfg, teacher, dm.input_shape)
    task = build_task(cfg, dm)
    errors = start_student(cfg, student, teacher, dm, task)["merge_errors"]
    parts, n = [], 0
    for batch in dm.val_dataloader():  # the held-out slice of train
        parts.append(task.eval_inputs(batch)[0])
        n += len(parts[-1])
        if n >= args.images:
            break
    x = torch.cat(parts)[: args.images]
    if errors:
        print("merge relative error per block: " + " ".join(f"{e:.3f}" for e in errors))
    print(f"agreement with the teacher at init: {agreement(student, teacher, x):.1f}% "
          f"({len(x)} held-out training images)")


if __name__ == "__main__":
    main()
