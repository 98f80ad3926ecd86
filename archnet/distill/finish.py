"""After the last stage: the weight average (``distill.average_samples``) and precise BN
(``distill.precise_bn_images``), test-split evaluation,
``student.pt``, metrics.json, report.md."""
from __future__ import annotations

import datetime
import os
import platform
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from archnet.distill.report import IMAGE_REPORT, print_summary, write_report
from archnet.distill.rundir import stage_dir
from archnet.distill.schedule import stage_table
from archnet.distill.weight_average import AVERAGE, settle_student
from archnet.ops.quant import quant_config
from archnet.utils.dist import is_rank_zero
from archnet.utils.io import save_json, save_torch


def machine() -> str:
    return f"{platform.machine()} {os.cpu_count()} CPU threads, torch {torch.__version__}"


def export_lines(export: dict[str, Any]) -> list[str]:
    """Console lines: profile verdict, integer-simulation and onnxruntime agreement."""
    lines = [f"profile {export['profile']}: {export['verdict'].upper()}"
             + (f" ({len(export['violations'])} violations, see export/summary.md)"
                if export["violations"] else "")]
    sim = export.get("intsim") or {}
    if "top1_agreement" in sim:
        lines.append(f"integer-only simulation vs fake-quant student: top-1 agreement "
                     f"{100 * sim['top1_agreement']:.2f}% on {sim['n']} test images, "
                     f"max logit difference {sim['max_logit_diff']:.3g}")
    if "ort_max_abs_diff" in export:
        lines.append(f"onnxruntime vs PyTorch: max |diff| {export['ort_max_abs_diff']:.2g}, "
                     f"top-1 agreement {100 * export['ort_top1_agreement']:.1f}%")
    return lines


def finish_run(cfg: DictConfig, run_dir: Path, net, teacher, dm, task, stages,
               stage_metrics: dict[str, dict[str, Any]], run_logger) -> dict[str, Any]:
    if not is_rank_zero():
        return {}
    student = net.student
    last = len(stages) - 1
    settled = settle_student(cfg, student, teacher, dm, task,
                             stage_dir(run_dir, last, stages[last].name) / AVERAGE if stages else None)
    average = settled.get("weight_average")
    if average:
        print(f"weight average of the last stage (about {average['samples']} samples, decay "
              f"{average['decay']:.4g}) {'kept' if average['kept'] else 'discarded'} (held-out "
              f"agreement {average['agreement_trained']:.1f}% as trained -> "
              f"{average['agreement_average']:.1f}% averaged)", flush=True)
    precise = settled.get("precise_bn")
    if precise:
        print(f"precise BN: population statistics of {precise['images']} training images "
              f"{'kept' if precise['kept'] else 'discarded'} (held-out agreement "
              f"{precise['agreement_before']:.1f}% -> {precise['agreement_after']:.1f}%)", flush=True)
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
    metrics.update(settled)
    key, label = getattr(task, "primary_metric", ("test/top1", "top-1"))  # the headline metric
    gap = metrics["teacher"][key] - metrics["student"][key]
    metrics[f"{key.split('/')[-1]}_gap"] = gap
    lines = [f"student {label} gap to teacher: {gap:+.2f} points"]
    save_torch({"state_dict": student.state_dict()}, run_dir / "student.pt")
    export_cfg = cfg.get("export") or {}
    enabled = export_cfg.get("enabled", "auto")
    if hasattr(task, "export") and (enabled is True or (enabled == "auto" and not q.is_float)):
        metrics["export"] = export = task.export(
            student, run_dir / "export", dm, cfg.profile.name, q,
            export_cfg.get("example_batch", 64), export_cfg.get("parity_images", 1000))
        lines += export_lines(export)
    metrics["summary_lines"] = lines
    run_logger.log_summary({f"{who}/{k}": v for who in ("teacher", "student")
                            for k, v in metrics[who].items() if isinstance(v, (int, float))})
    stage_rows = [f"| {name} | {m.get('samples')} | {m.get('wall_s', 0):.1f} | "
                  f"{m.get('val/loss', float('nan')):.4g} | {m.get('val/agreement', float('nan')):.1f} |"
                  for name, m in stage_metrics.items()]
    spec = getattr(task, "report_spec", IMAGE_REPORT)
    write_report(run_dir, metrics, stage_rows, spec)
    save_json(metrics, run_dir / "metrics.json")
    print_summary(metrics, spec=spec)
    return metrics
