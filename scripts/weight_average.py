"""The last stage's weights as trained against their moving average, for a finished run.

Needs a run made with ``distill.average_samples`` (its last stage keeps ``state.pt``, the
weights as trained, and ``average.pt``, :mod:`archnet.distill.weight_average`). Prints, for
each, without and with precise BN (``--images`` label-free training images, the run's seed):
the held-out agreement with the teacher (the whole held-out training slice, what
``average_keep`` and ``precise_bn_keep`` decide on) and the test-split top-1 / top-5. The run
directory is not changed.

Usage: python scripts/weight_average.py <run dir> [--images 2048] [Hydra-style overrides of
       the run's config, e.g. teacher.checkpoint=...]
"""
from __future__ import annotations

import argparse
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="a finished archnet-distill run directory")
    ap.add_argument("--images", type=int, default=2048, help="training images for precise BN (0: skip)")
    ap.add_argument("overrides", nargs="*", help="key=value overrides of the run's config")
    args = ap.parse_intermixed_args()

    import torch
    from omegaconf import OmegaConf

    from archnet.distill.build import build_data, build_task, build_teacher
    from archnet.distill.init_student import source_run
    from archnet.distill.precise_bn import apply_precise_bn, heldout_agreement
    from archnet.distill.rundir import STATE, load_student
    from archnet.distill.weight_average import AVERAGE

    run = source_run(args.run)
    student, cfg = load_student(run)
    OmegaConf.set_struct(cfg, False)
    cfg.merge_with_dotlist(args.overrides)
    cfg.distill.precise_bn_images, cfg.distill.precise_bn_keep = args.images, "always"
    last = sorted(p for p in (run / "stages").iterdir() if p.is_dir())[-1]
    if not (last / AVERAGE).is_file():
        raise SystemExit(f"{run}: {last.name} has no {AVERAGE} (the run had distill.average_samples=0)")
    trained = {k[len("student."):]: v for k, v in torch.load(last / STATE, map_location="cpu").items()
               if k.startswith("student.")}
    average = torch.load(last / AVERAGE, map_location="cpu")
    dm = build_data(cfg, cfg.distill.batch_size)
    teacher = build_teacher(cfg).eval()
    task = build_task(cfg, dm)
    print(f"run {run}: last stage {last.name}, average of {average['updates']} steps, decay {average['decay']:.4g}")
    print("| weights | BN statistics | held-out agreement % | test top-1 % | test top-5 % |")
    print("|---|---|---|---|---|")
    for name, state in (("as trained", trained), ("average", average["state"])):
        student.load_state_dict(state)
        rows = [("as trained", None)]
        if args.images > 0:
            rows.append(("precise BN", True))
        for stats, precise in rows:
            if precise:
                apply_precise_bn(cfg, student, teacher, dm, task)
            agreement = heldout_agreement(student, teacher, task, dm.val_dataloader())
            test = task.final_metrics(student, dm)
            print(f"| {name} | {stats} | {agreement:.2f} | {test['test/top1']:.2f} | {test['test/top5']:.2f} |")


if __name__ == "__main__":
    main()
