"""``archnet-distill``: teacher -> Arch-Net student, label-free progressive distillation.

Reads the ``distill`` primary config (conf/distill.yaml): data, teacher (its checkpoint),
student, quant, schedule, trainer, logger, distill.*. Writes the run directory
``outputs/<name>/<time>/`` (stages, student.pt, metrics.json, report.md, plots).
Resume: rerun with ``hydra.run.dir=<that directory>``.
"""
from __future__ import annotations

from omegaconf import DictConfig

from archnet.cli.app import run_cli, run_dir
from archnet.config.schema import validate_distill


def task(cfg: DictConfig) -> float | None:
    from archnet.distill.runner import run_distill

    metrics = run_distill(cfg, run_dir())
    return metrics.get("student", {}).get("test/top1") if metrics else None


def main() -> None:
    run_cli("distill", task, validate_distill)


if __name__ == "__main__":
    main()
