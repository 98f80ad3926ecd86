"""What ``distill.precise_bn_images`` would do to a finished run's student.

Loads the run's student and teacher, replaces every BN's running statistics by the population
statistics of ``--images`` label-free training images (:mod:`archnet.distill.precise_bn`, the
run's seed) and prints the held-out agreement with the teacher (the whole held-out training
slice: what ``precise_bn_keep=better`` decides on) and the test-split
top-1 / top-5 before and after. The run directory is not changed.

Usage: python scripts/precise_bn.py <run dir> [--images 2048] [Hydra-style overrides of the
       run's config, e.g. teacher.checkpoint=...]
"""
from __future__ import annotations

import argparse
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="a finished archnet-distill run directory")
    ap.add_argument("--images", type=int, default=2048, help="training images for the statistics")
    ap.add_argument("overrides", nargs="*", help="key=value overrides of the run's config")
    args = ap.parse_intermixed_args()

    from omegaconf import OmegaConf

    from archnet.distill.build import build_data, build_task, build_teacher
    from archnet.distill.init_student import source_run
    from archnet.distill.precise_bn import apply_precise_bn
    from archnet.distill.rundir import load_student

    run = source_run(args.run)
    student, cfg = load_student(run)
    OmegaConf.set_struct(cfg, False)
    cfg.merge_with_dotlist(args.overrides)
    cfg.distill.precise_bn_images, cfg.distill.precise_bn_keep = args.images, "always"
    dm = build_data(cfg, cfg.distill.batch_size)
    teacher = build_teacher(cfg).eval()
    task = build_task(cfg, dm)
    before = task.final_metrics(student, dm)
    record = apply_precise_bn(cfg, student, teacher, dm, task)
    if record is None:
        raise SystemExit(f"{run}: the student has no BatchNorm (or --images is 0): nothing to do")
    after = task.final_metrics(student, dm)
    better = record["agreement_after"] > record["agreement_before"]
    print(f"run {run}: population statistics of {record['images']} training images")
    print("| | held-out agreement % | test top-1 % | test top-5 % |")
    print("|---|---|---|---|")
    print(f"| as trained | {record['agreement_before']:.2f} | {before['test/top1']:.2f} | {before['test/top5']:.2f} |")
    print(f"| precise BN | {record['agreement_after']:.2f} | {after['test/top1']:.2f} | {after['test/top5']:.2f} |")
    print(f"precise_bn_keep=better would {'keep' if better else 'discard'} them")


if __name__ == "__main__":
    main()
