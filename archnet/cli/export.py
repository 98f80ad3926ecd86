"""``archnet-export run_dir=<dir>``: the deploy student of a finished run as ONNX.

Folds BN, bakes weights on their integer grids, writes ``<run_dir>/export/`` with
``student.onnx``, ``quant.json``, ``summary.md`` and ``export.json`` (the metrics of
:func:`archnet.deploy.export.export_student`: sizes, MACs, BitOPs, onnxruntime and
integer-simulation parity on test images, profile verdict), and prints the summary.

Config keys (conf/export.yaml): ``run_dir``, ``profile`` (null: the run's profile),
``example_batch``, ``parity_images``, ``exact_check``, ``batch_size``, ``strict`` (exit 1
on violations).
"""
from __future__ import annotations

import sys
from typing import Any

from omegaconf import DictConfig

from archnet.cli.app import run_cli, run_dir
from archnet.errors import ConfigError


def validate(cfg: DictConfig) -> None:
    for key in ("example_batch", "batch_size"):
        if not isinstance(cfg[key], int) or cfg[key] < 1:
            raise ConfigError(key, cfg[key], "a positive integer")
    if not isinstance(cfg.parity_images, int) or cfg.parity_images < 0:
        raise ConfigError("parity_images", cfg.parity_images, "an integer >= 0")
    from archnet.distill.rundir import require_finished

    require_finished(cfg.run_dir)


def test_images(run_cfg: DictConfig, n: int, batch_size: int) -> Any:
    """The first ``n`` test-split images, preprocessed as the student sees them."""
    import torch

    from archnet.distill.build import build_data

    dm = build_data(run_cfg, batch_size)
    batches, have = [], 0
    for x, _ in dm.test_dataloader():
        batches.append(dm.preprocess(x))
        have += len(x)
        if have >= n:
            break
    return torch.cat(batches)[:n]


def task(cfg: DictConfig) -> dict:
    from rich.console import Console
    from rich.markdown import Markdown

    from archnet.deploy.export import export_student
    from archnet.distill.rundir import load_student
    from archnet.ops.quant import quant_config
    from archnet.utils.io import save_json

    student, run_cfg = load_student(cfg.run_dir)
    images = test_images(run_cfg, max(cfg.example_batch, cfg.parity_images), cfg.batch_size)
    profile = cfg.profile if cfg.profile is not None else run_cfg.get("profile", "archnet")
    out_dir = run_dir()
    metrics = export_student(student, out_dir, images[:cfg.example_batch], profile,
                             quant_config(run_cfg.get("quant")),
                             parity_images=images[:cfg.parity_images] if cfg.parity_images else None,
                             exact_check=bool(cfg.get("exact_check", False)))
    save_json(metrics, out_dir / "export.json")
    Console().print(Markdown((out_dir / "summary.md").read_text()))
    if cfg.strict and metrics["verdict"] != "pass":
        sys.exit(1)
    return metrics


def main() -> None:
    run_cli("export", task, validate)


if __name__ == "__main__":
    main()
