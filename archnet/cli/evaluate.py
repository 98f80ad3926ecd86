"""``archnet-evaluate run_dir=<dir>``: top-1/top-5 of a finished run's teacher and deploy
student on ``split`` (test | holdout); prints the table and writes ``evaluate.json`` into
the evaluation's own directory (``<run_dir>/evaluate/<time>/``).

``integer=true`` (quantized image students) adds the chip's numbers: the integer-only
simulation on the same split, next to the float32 fake-quantized student fed the same int8
input, and their top-1 agreement (:func:`archnet.deploy.intsim_topk.integer_topk`).

Config keys: ``run_dir``, ``split``, ``batch_size``, ``integer`` (conf/evaluate.yaml).
"""
from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from archnet.cli.app import run_cli, run_dir
from archnet.errors import ConfigError

SPLITS = ("test", "holdout")


def validate(cfg: DictConfig) -> None:
    if cfg.split not in SPLITS:
        raise ConfigError("split", cfg.split, SPLITS)
    if not isinstance(cfg.batch_size, int) or cfg.batch_size < 1:
        raise ConfigError("batch_size", cfg.batch_size, "a positive integer")
    if not isinstance(cfg.integer, bool):
        raise ConfigError("integer", cfg.integer, "true or false")
    from archnet.distill.rundir import require_finished

    require_finished(cfg.run_dir)
    if cfg.integer:
        check_integer_ready(OmegaConf.load(Path(str(cfg.run_dir)) / ".hydra/config.yaml"))


def check_integer_ready(run_cfg: DictConfig) -> None:
    """``integer=true`` needs an image-classification run whose weights and activations are
    quantized (the integer simulation has no float layers and no translation model)."""
    if run_cfg.get("data", {}).get("task"):
        raise ConfigError("integer", True, "false for this run: integer simulation covers image "
                          "classifiers, not the translation task")
    quant = run_cfg.get("quant", {})
    for part in ("weight", "act"):
        if quant.get(part, {}).get("method", "none") == "none":
            raise ConfigError("integer", True, f"false for this run: its {part}s are float "
                              f"(quant={quant.get('name')}); integer simulation needs quantized weights "
                              "and activations")


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
    rows = dict(results)
    if cfg.integer:
        from archnet.deploy.intsim_topk import integer_topk

        results["integer"] = integer_topk(student, loader, dm.preprocess)
        rows["student, int8 input, fake quant"] = results["integer"]["fake_quant"]
        rows["student, int8 input, integer simulation"] = results["integer"]["integer"]
    table = Table(title=f"{run_cfg.get('name')} on {cfg.split} ({len(loader.dataset)} images)")
    for col in ("model", "top-1 %", "top-5 %"):
        table.add_column(col)
    for who, r in rows.items():
        table.add_row(who, f"{r['top1']:.2f}", f"{r.get('top5', float('nan')):.2f}")
    console = Console()
    console.print(table)
    if cfg.integer:
        console.print(f"integer simulation vs fake quant: same top-1 on {results['integer']['agreement']:.2f} % "
                      f"of {results['integer']['n']} images (int8 input scale {results['integer']['input_scale']:.4g})")
    save_json({"run_dir": str(cfg.run_dir), "split": cfg.split, **results}, run_dir() / "evaluate.json")
    return results


def main() -> None:
    run_cli("evaluate", task, validate)


if __name__ == "__main__":
    main()
