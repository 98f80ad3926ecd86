"""A Lightning ``Trainer`` for one stage: max steps, chunked atomic checkpoints, no logger
(archnet's run logger is shared across stages), progress bar only on a terminal."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar
from omegaconf import DictConfig, OmegaConf

from archnet.distill.rundir import AtomicCheckpointIO


def progress_enabled(cfg: DictConfig) -> bool:
    mode = cfg.get("progress", "auto")
    return bool(mode is True or (mode == "auto" and sys.stderr.isatty()))


def make_trainer(cfg: DictConfig, sdir: Path, max_steps: int, extra_callbacks: list | None = None) -> pl.Trainer:
    callbacks: list[Any] = [ModelCheckpoint(dirpath=sdir, filename="last", save_top_k=1,
                                            every_n_epochs=1, save_on_train_epoch_end=True,
                                            enable_version_counter=False)]
    for node in (cfg.get("callbacks") or {}).values():
        if node is not None:
            callbacks.append(instantiate(node))
    callbacks += list(extra_callbacks or [])
    show = progress_enabled(cfg)
    if show:
        callbacks.append(RichProgressBar(leave=False))
    kwargs = OmegaConf.to_container(cfg.trainer, resolve=True)
    assert isinstance(kwargs, dict)
    return pl.Trainer(**kwargs, max_steps=max_steps, callbacks=callbacks, logger=False,
                      plugins=[AtomicCheckpointIO()], default_root_dir=str(sdir),
                      enable_progress_bar=show, enable_model_summary=False,
                      num_sanity_val_steps=0, limit_val_batches=0, use_distributed_sampler=False)
