"""``archnet-teacher``: train a teacher with labels and save it to ``teacher.checkpoint``.

Reads the ``teacher`` primary config (conf/teacher.yaml): data, teacher.model,
teacher.checkpoint, train.{epochs, batch_size, optimizer, label_smoothing, warmup_epochs},
trainer. The checkpoint is the epoch with the best held-out top-1.
"""
from __future__ import annotations

from omegaconf import DictConfig

from archnet.cli.app import run_cli, run_dir
from archnet.config.schema import validate_teacher


def task(cfg: DictConfig) -> float | None:
    from archnet.teacher.runner import run_teacher

    metrics = run_teacher(cfg, run_dir())
    return metrics.get("teacher", {}).get("test/top1") if metrics else None


def main() -> None:
    run_cli("teacher", task, validate_teacher)


if __name__ == "__main__":
    main()
