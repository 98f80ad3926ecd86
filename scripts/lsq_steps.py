"""Where a run's LSQ steps ended, against where its start put them.

For every LSQ quantizer of the student of a finished run: the median ``|alpha|``, how many
steps are ``<= 0`` and, when the run's student is rebuilt at its start (conversion rules,
``distill.init_student``, step fit and BN calibration, as ``archnet-distill`` does and
``scripts/init_agreement.py`` prints), the median and 10th / 90th percentiles of
``alpha_end / alpha_start`` per layer.

Usage: python scripts/lsq_steps.py <run dir> [--no-start] [Hydra overrides of the run's start,
       e.g. teacher.checkpoint=...]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="a finished archnet-distill run directory")
    ap.add_argument("--no-start", action="store_true", help="only the run's own steps")
    ap.add_argument("overrides", nargs="*", help="Hydra overrides added to the run's own")
    args = ap.parse_intermixed_args()

    from omegaconf import OmegaConf

    from archnet.distill.init_student import source_run
    from archnet.distill.rundir import load_student

    run = source_run(args.run)
    end, _ = load_student(run)
    ends = {k: v for k, v in end.state_dict().items() if k.endswith(".alpha")}
    starts: dict[str, torch.Tensor] = {}
    if not args.no_start:
        from hydra import compose, initialize_config_dir

        from archnet.cli.app import CONF_DIR
        from archnet.distill.build import build_data, build_student, build_task, build_teacher, start_student

        saved = OmegaConf.load(run / ".hydra" / "overrides.yaml")
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            cfg = compose("distill", overrides=[*saved, *args.overrides])
        torch.manual_seed(cfg.seed)  # as archnet-distill: a random teacher (checkpoint=null) is the same
        dm = build_data(cfg, 250)
        teacher = build_teacher(cfg).eval()
        student = build_student(cfg, teacher, dm.input_shape)
        start_student(cfg, student, teacher, dm, build_task(cfg, dm))
        starts = {k: v for k, v in student.state_dict().items() if k.endswith(".alpha")}
    for key, a in ends.items():
        line = f"{key[:-len('.alpha')]:48s} |alpha| median {float(a.abs().median()):.4f}  <= 0: {int((a <= 0).sum())}/{a.numel()}"
        if key in starts:
            r = (a / starts[key]).flatten().double()
            q = torch.quantile(r, torch.tensor([0.1, 0.5, 0.9], dtype=r.dtype))
            line += f"  end/start p10 {q[0]:.3f} median {q[1]:.3f} p90 {q[2]:.3f}"
        print(line)


if __name__ == "__main__":
    main()
