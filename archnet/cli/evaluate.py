"""``archnet-evaluate run_dir=<dir>``: top-1/top-5 of a finished run's teacher and deploy
student on ``split`` (test | holdout); prints the table and writes ``evaluate.json`` into
the evaluation's own directory (``<run_dir>/evaluate/<time>/``).

Config keys: ``run_dir``, ``split``, ``batch_size`` (conf/evaluate.yaml).
"""
from __future__ import annotations

from omegaconf import DictConfig

from archnet.cli.app import run_cli, run_dir
from archnet.errors import ConfigError

SPLITS = ("test", "holdout")


def validate(cfg: DictConfig) -> None:
    if cfg.split not in SPLITS:
        raise ConfigError("split", cfg.split, SPLITS)
    if not isinstance(cfg.batch_size, int) or cfg.batch_size < 1:
        raise ConfigError("batch_size", cfg.batch_size, "a positive integer")
    from archnet.distill.rundir import require_finished

    require_finished(cfg.run_dir)


def task(cfg: DictConfig) -> dict:
    from rich.console import Console
    from rich.table import Table

    from archnet.distill.build import build_data, build_teacher, freeze
    from archnet.distill.rundir import load_student
    from archnet.metrics.topk import evaluate_topk
    from archnet.utils.io import save_json

    student, run_cfg = load_student(cfg.run_dir)
    dm = build_data(run_cfg, cfg.batch_size)
    loader = dm.test_dataloader() if cfg.split == "test" else dm.val_dataloader()
    teacher = freeze(build_teacher(run_cfg))
    results = {who: evaluate_topk(m, loader, dm.preprocess, dm.num_classes)
               for who, m in (("teacher", teacher), ("student", student))}
    table = Table(title=f"{run_cfg.get('name')} on {cfg.split} ({len(loader.dataset)} images)")
    for col in ("model", "top-1 %", "top-5 %"):
        table.add_column(col)
    for who, r in results.items():
        table.add_row(who, f"{r['top1']:.2f}", f"{r.get('top5', float('nan')):.2f}")
    Console().print(table)
    save_json({"run_dir": str(cfg.run_dir), "split": cfg.split, **results}, run_dir() / "evaluate.json")
    return results


def main() -> None:
    run_cli("evaluate", task, validate)


if __name__ == "__main__":
    main()
