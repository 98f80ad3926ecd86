"""One experiment logger shared by every stage of a run (W&B, CSV or none).

Steps are global across stages (``offset + stage step``) so W&B sees one monotonic
history. W&B runs offline unless the user sets ``WANDB_MODE`` or ``logger.mode=online``;
its run id is kept in the run directory so a resumed experiment continues the same run.
"""
from __future__ import annotations

import csv
import os
import uuid
from pathlib import Path
from typing import Any


class RunLogger:
    """No-op logger; subclasses write somewhere. Only rank 0 should write."""

    def __init__(self, run_dir: str | Path | None = None, enabled: bool = True) -> None:
        self.run_dir = Path(run_dir) if run_dir else None
        self.enabled = enabled
        self.history: list[tuple[int, dict[str, float]]] = []

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        if self.enabled:
            self.history.append((step, dict(metrics)))
            self._write(metrics, step)

    def _write(self, metrics: dict[str, float], step: int) -> None:
        pass

    def log_summary(self, summary: dict[str, Any]) -> None:
        pass

    def finish(self) -> None:
        pass


class CsvRunLogger(RunLogger):
    """Appends ``step,key,value`` rows to ``<run_dir>/metrics.csv``."""

    def _write(self, metrics: dict[str, float], step: int) -> None:
        assert self.run_dir is not None
        path = self.run_dir / "metrics.csv"
        new = not path.exists()
        with open(path, "a", newline="") as f:
            w = csv.writer(f)
            if new:
                w.writerow(["step", "key", "value"])
            for k, v in metrics.items():
                w.writerow([step, k, v])


class WandbRunLogger(RunLogger):
    """Weights & Biases, offline by default, one run per experiment (resumable by id)."""

    def __init__(self, run_dir: str | Path | None = None, enabled: bool = True,
                 project: str = "archnet", mode: str | None = None, name: str | None = None,
                 config: dict | None = None, tags: list[str] | None = None) -> None:
        super().__init__(run_dir, enabled)
        self._run = None
        if not enabled:
            return
        import wandb

        assert self.run_dir is not None
        id_file = self.run_dir / "wandb_id.txt"
        run_id = id_file.read_text().strip() if id_file.exists() else uuid.uuid4().hex[:12]
        id_file.write_text(run_id + "\n")
        mode = mode or os.environ.get("WANDB_MODE") or "offline"
        self._run = wandb.init(project=project, dir=str(self.run_dir), id=run_id, resume="allow",
                               mode=mode, name=name, config=config, tags=tags,
                               settings=wandb.Settings(silent=True, console="off"))

    def _write(self, metrics: dict[str, float], step: int) -> None:
        if self._run is not None:
            self._run.log(metrics, step=step)

    def log_summary(self, summary: dict[str, Any]) -> None:
        if self._run is not None:
            self._run.summary.update(summary)

    def finish(self) -> None:
        """Finish the run and shut the W&B service down (``wandb.teardown``): ``run.finish``
        can return before the service has written the last records of the offline
        ``.wandb`` log (seen under load), and the ``atexit`` teardown is not reliable in
        processes started by ``multiprocessing`` (DDP ranks). The log is complete on return."""
        if self._run is not None:
            import wandb

            self._run.finish()
            self._run = None
            wandb.teardown()
