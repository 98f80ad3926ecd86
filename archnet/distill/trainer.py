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


class StageProgressBar(RichProgressBar):
    """Rich progress bar labelled with the stage name and its step count, not Lightning epochs."""

    def _get_train_description(self, current_epoch: int) -> str:
        module = self.trainer.lightning_module
        stage = getattr(getattr(module, "stage", None), "name", None)
        if stage is None:
            return super()._get_train_description(current_epoch)
        return f"stage {stage} (step {self.trainer.global_step}/{self.trainer.max_steps})"


def progress_enabled(cfg: DictConfig) -> bool:
    mode = cfg.get("progress", "auto")
    return bool(mode is True or (mode == "auto" and sys.stderr.isatty()))


class BroadcastBuffers(pl.Callback):
    """After a multi-process fit, give every rank rank 0's buffers (BN running statistics).

    DDP broadcasts buffers at the start of each forward, so the last step's BN update
    differs per rank; without this, ranks would evaluate and save different students."""

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        import torch.distributed as dist

        if trainer.world_size > 1 and dist.is_available() and dist.is_initialized():
            for buffer in pl_module.buffers():
                dist.broadcast(buffer, src=0)


class ChunkCheckpoint(ModelCheckpoint):
    """``last.ckpt`` at the end of every chunk (a Lightning epoch); with ``skip_final`` not
    after the stage's last step, whose weights the runner saves as ``state.pt`` anyway
    (``distill.stage_files=last``: a finished stage keeps no ``last.ckpt``)."""

    def __init__(self, dirpath: Path, skip_final: bool) -> None:
        super().__init__(dirpath=dirpath, filename="last", save_top_k=1, every_n_epochs=1,
                         save_on_train_epoch_end=True, enable_version_counter=False)
        self.skip_final = skip_final

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.skip_final and trainer.global_step >= trainer.max_steps:
            return
        super().on_train_epoch_end(trainer, pl_module)


def _on_cpu(accelerator: Any) -> bool:
    import torch

    return accelerator == "cpu" or (accelerator in (None, "auto") and not torch.cuda.is_available())


def make_trainer(cfg: DictConfig, sdir: Path, max_steps: int, extra_callbacks: list | None = None) -> pl.Trainer:
    skip_final = cfg.get("distill", {}).get("stage_files", "all") == "last"
    callbacks: list[Any] = [ChunkCheckpoint(sdir, skip_final), BroadcastBuffers()]
    for node in (cfg.get("callbacks") or {}).values():
        if node is not None:
            callbacks.append(instantiate(node))
    callbacks += list(extra_callbacks or [])
    show = progress_enabled(cfg)
    if show:
        callbacks.append(StageProgressBar(leave=False))
    kwargs = OmegaConf.to_container(cfg.trainer, resolve=True)
    assert isinstance(kwargs, dict)
    if kwargs.get("sync_batchnorm") and _on_cpu(kwargs.get("accelerator")):
        kwargs["sync_batchnorm"] = False  # torch's SyncBatchNorm runs on GPUs only
    return pl.Trainer(**kwargs, max_steps=max_steps, callbacks=callbacks, logger=False,
                      plugins=[AtomicCheckpointIO()], default_root_dir=str(sdir),
                      enable_progress_bar=show, enable_model_summary=False,
                      num_sanity_val_steps=0, limit_val_batches=0, use_distributed_sampler=False)
