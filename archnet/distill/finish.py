"""After the last stage: test-split evaluation, ``student.pt``, metrics.json, report.md."""
from __future__ import annotations

import datetime
import os
import platform
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from archnet.distill.report import print_summary, write_report
from archnet.distill.schedule import stage_table
from archnet.ops.quant import quant_config
from archnet.utils.dist import is_rank_zero
from archnet.utils.io import save_json, save_torch


def machine() -> str:
    return f"{platform.machine()} {os.cpu_count()} CPU threads, torch {torch.__version__}"


def finish_run(cfg: DictConfig, run_dir: Path, net, teacher, dm, task, stages,
               stage_metrics: dict[str, dict[str, Any]], run_logger) -> dict[str, Any]:
    if not is_rank_zero():
        return {}
    student = net.student
    q = quant_config(cfg.quant)
    bits = "fp32" if q.is_float else f"{q.weight.bits}w{q.act.bits}a"
    steps = sum(m.get("steps", 0) for m in stage_metrics.values())
    wall = sum(m.get("wall_s", 0.0) for m in stage_metrics.values())
    metrics: dict[str, Any] = {
        "experiment": cfg.get("name", "run"), "seed": cfg.seed,
        "date": datetime.date.today().isoformat(), "machine": machine(),
        "test_samples": len(dm.test_set),
        "teacher": {**task.final_metrics(teacher, dm),
                    **task.complexity(teacher, dm),
                    "bits": "fp32"},
        "student": {**task.final_metrics(student, dm),
                    **task.complexity(student, dm),
                    "bits": bits, "s_per_step": wall / steps if steps else None},
        "stages": stage_metrics,
        "schedule": stage_table(stages),
        "distill_wall_s": wall,
        "samples": sum(m.get("samples", 0) for m in stage_metrics.values()),
    }
    gap = metrics["teacher"]["test/top1"] - metrics["student"]["test/top1"]
    metrics["top1_gap"] = gap
    metrics["summary_lines"] = [f"student top-1 gap to teacher: {gap:+.2f} points"]
    save_torch({"state_dict": student.state_dict()}, run_dir / "student.pt")
    run_logger.log_summary({f"{who}/{k}": v for who in ("teacher", "student")
                            for k, v in metrics[who].items() if isinstance(v, (int, float))})
    stage_rows = [f"| {name} | {m.get('samples')} | {m.get('wall_s', 0):.1f} | "
                  f"{m.get('val/loss', float('nan')):.4g} | {m.get('val/agreement', float('nan')):.1f} |"
                  for name, m in stage_metrics.items()]
    write_report(run_dir, metrics, stage_rows)
    save_json(metrics, run_dir / "metrics.json")
    print_summary(metrics)
    return metrics
