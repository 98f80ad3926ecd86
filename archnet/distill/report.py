"""``report.md`` and PNG plots of a finished run, and the console summary table."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from rich.console import Console
from rich.table import Table

from archnet.utils.io import save_text


@dataclass(frozen=True)
class ReportSpec:
    """What the summary table and bar plot show: ``columns`` are ``(header, metric key, scale,
    format)``; ``bars`` are ``test/<name>`` metrics plotted per model (a task's ``report_spec``)."""

    columns: tuple[tuple[str, str, float, str], ...]
    bars: tuple[str, ...]
    ylabel: str = "accuracy (%)"
    title: str = "test accuracy"
    unit: str = "images"


IMAGE_REPORT = ReportSpec(columns=(("top-1 %", "test/top1", 1.0, ".2f"), ("top-5 %", "test/top5", 1.0, ".2f"),
                                   ("params (M)", "params", 1e-6, ".3f"), ("MACs (M)", "macs", 1e-6, ".2f")),
                          bars=("top1", "top5"))


def plot_losses(stage_metrics: dict[str, dict[str, Any]], path: Path) -> None:
    """Training loss against global step, one colour per stage (log scale)."""
    series = {name: m["curve"] for name, m in stage_metrics.items() if m.get("curve")}
    fig, ax = plt.subplots(figsize=(8, 4))
    for name, curve in series.items():
        ax.plot([c[0] for c in curve], [c[1] for c in curve], label=name, lw=1)
    ax.set_xlabel("global step")
    ax.set_ylabel("stage loss")
    ax.set_yscale("log")
    ax.set_title("distillation loss per stage")
    if 0 < len(series) <= 14:
        ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_accuracy(rows: dict[str, dict[str, float]], path: Path,
                  spec: ReportSpec = IMAGE_REPORT) -> None:
    """Grouped bars: ``spec.bars`` (top-1 / top-5) of teacher and student on the test split."""
    fig, ax = plt.subplots(figsize=(5, 3.5))
    names = list(rows)
    for j, metric in enumerate(spec.bars):
        vals = [rows[n].get(f"test/{metric}", 0.0) for n in names]
        bars = ax.bar([i + 0.38 * j for i in range(len(names))], vals, 0.36, label=metric)
        ax.bar_label(bars, fmt="%.1f", fontsize=7)
    ax.set_xticks([i + 0.19 for i in range(len(names))], names)
    ax.set_ylabel(spec.ylabel)
    ax.set_ylim(0, 105)
    ax.legend()
    ax.set_title(spec.title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def summary_rows(metrics: dict[str, Any], spec: ReportSpec = IMAGE_REPORT) -> list[list[str]]:
    rows = []
    for who in ("teacher", "student"):
        m = metrics[who]
        cells = [format(m[key] * scale, fmt) if key in m else "-" for _, key, scale, fmt in spec.columns]
        rows.append([f"{who} ({m.get('bits', 'fp32')})", *cells,
                     f"{m['s_per_step'] * 1e3:.1f}" if m.get("s_per_step") else "-"])
    return rows


def header(spec: ReportSpec = IMAGE_REPORT) -> list[str]:
    return ["model", *(c[0] for c in spec.columns), "ms / train step"]


HEADER = header()


def print_summary(metrics: dict[str, Any], console: Console | None = None,
                  spec: ReportSpec = IMAGE_REPORT) -> None:
    table = Table(title=f"archnet: {metrics['experiment']} (test split, {metrics['test_samples']} "
                        f"{spec.unit})")
    for h in header(spec):
        table.add_column(h, justify="right" if h != "model" else "left")
    for row in summary_rows(metrics, spec):
        table.add_row(*row)
    (console or Console()).print(table)
    for line in metrics.get("summary_lines", []):
        (console or Console()).print(line)


def write_report(run_dir: Path, metrics: dict[str, Any], stage_rows: list[str],
                 spec: ReportSpec = IMAGE_REPORT) -> None:
    plot_losses(metrics["stages"], run_dir / "loss_per_stage.png")
    plot_accuracy({k: metrics[k] for k in ("teacher", "student")}, run_dir / "accuracy.png", spec)
    cols = header(spec)
    table = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    table += ["| " + " | ".join(r) + " |" for r in summary_rows(metrics, spec)]
    lines = [f"# archnet run: {metrics['experiment']}", "",
             f"Run directory `{run_dir}`, seed {metrics['seed']}, {metrics['date']}, "
             f"{metrics['machine']}.", "",
             *table, "", *metrics.get("summary_lines", []), "",
             "## Stages", "", "| stage | samples | wall (s) | val loss | val agreement % |",
             "|---|---|---|---|---|", *stage_rows, "",
             "![loss per stage](loss_per_stage.png)", "", "![accuracy](accuracy.png)", ""]
    save_text("\n".join(lines), run_dir / "report.md")
