"""The run directory (DESIGN.md 3.3): ``stages/NN_name/{last.ckpt, state.pt, DONE}``,
``student.pt``, ``metrics.json``, ``report.md``; Hydra owns ``.hydra/``.

A stage is finished when its ``DONE`` marker exists; ``state.pt`` then holds the student
and adapter weights it ended with. ``last.ckpt`` is the Lightning checkpoint of an
unfinished stage (written atomically) from which a rerun resumes. With
``distill.stage_files=last`` only the newest finished stage keeps ``state.pt`` and no
finished stage keeps ``last.ckpt``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from archnet.utils.io import atomic_write, save_text

DONE = "DONE"
STATE = "state.pt"
LAST = "last.ckpt"


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint IO that never leaves a half-written file."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        atomic_write(path, lambda tmp: torch.save(checkpoint, tmp))


def stage_dir(run_dir: Path, index: int, name: str) -> Path:
    """``stages/<name>``; stage names already start with their two-digit index."""
    return Path(run_dir) / "stages" / name


def is_done(sdir: Path) -> bool:
    return (sdir / DONE).exists()


def mark_done(sdir: Path) -> None:
    save_text("done\n", sdir / DONE)


def prune_finished(finished: list[Path]) -> None:
    """``distill.stage_files=last``: drop ``last.ckpt`` of finished stages and every
    ``state.pt`` but the newest (``finished[-1]``, the resume point)."""
    for sdir in finished:
        (sdir / LAST).unlink(missing_ok=True)
    for sdir in finished[:-1]:
        (sdir / STATE).unlink(missing_ok=True)


def load_run_config(run_dir: str | Path):
    """The composed config a run was started with (``<run_dir>/.hydra/config.yaml``)."""
    from omegaconf import OmegaConf

    from archnet.errors import ConfigError

    path = Path(run_dir) / ".hydra" / "config.yaml"
    if not path.is_file():
        raise ConfigError("run_dir", str(run_dir), "a run directory holding .hydra/config.yaml")
    return OmegaConf.load(path)


def load_student(run_dir: str | Path):
    """``(student, cfg)``: the deploy student of a finished run (no training-only modules)."""
    from archnet.distill.build import build_student, build_teacher
    from archnet.errors import ConfigError

    cfg = load_run_config(run_dir)
    weights = Path(run_dir) / "student.pt"
    if not weights.is_file():
        raise ConfigError("run_dir", str(run_dir), "a finished run (student.pt is missing)")
    teacher = build_teacher(cfg, load=False)
    student = build_student(cfg, teacher, _input_shape(cfg))
    student.load_state_dict(torch.load(weights, map_location="cpu")["state_dict"])
    return student.eval(), cfg


def _input_shape(cfg) -> tuple[int, int, int] | None:
    from hydra.utils import instantiate

    shape = getattr(instantiate(cfg.data.module, _recursive_=False), "input_shape", None)
    return tuple(shape) if shape is not None else None


def require_finished(run_dir: str | Path) -> None:
    """Raise ConfigError(run_dir) unless ``run_dir`` holds a finished distillation run."""
    from archnet.errors import ConfigError

    for needed in (".hydra/config.yaml", "student.pt"):
        if not (Path(str(run_dir)) / needed).is_file():
            raise ConfigError("run_dir", str(run_dir), f"a finished distillation run ({needed} is missing)")
