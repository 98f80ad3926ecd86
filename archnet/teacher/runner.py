"""``run_teacher(cfg, run_dir)``: train a teacher with labels, keep the best held-out epoch.

Config keys read: ``seed``, ``data``, ``teacher.{model, checkpoint}``,
``train.{epochs, batch_size, optimizer, label_smoothing, warmup_epochs, module}``, ``trainer``,
``progress``. ``train.module`` (null: the image classifier's :class:`TeacherModule`) is a
LightningModule factory called with ``model, dm, optimizer, total_steps, warmup_steps,
label_smoothing``; it names the metric that selects the checkpoint (``monitor``) and
provides ``test_metrics(dm)``, ``complexity(dm)`` and ``describe(test_metrics)``.
Writes ``teacher.pt`` and ``metrics.json`` in the run directory and copies the checkpoint
to ``teacher.checkpoint`` (atomically).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar
from omegaconf import DictConfig, OmegaConf

from archnet.distill.build import build_data
from archnet.distill.finish import machine
from archnet.distill.trainer import progress_enabled
from archnet.metrics.complexity import count_macs, count_params
from archnet.metrics.topk import evaluate_topk
from archnet.teacher.epoch_lines import EpochLines
from archnet.teacher.module import TeacherModule
from archnet.utils.io import save_json, save_torch


def run_teacher(cfg: DictConfig, run_dir: str | Path) -> dict[str, Any]:
    run_dir = Path(run_dir)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    dm = build_data(cfg, cfg.train.batch_size)
    model = instantiate(cfg.teacher.model)
    steps_per_epoch = len(dm.train_dataloader())
    total = steps_per_epoch * cfg.train.epochs
    optimizer = OmegaConf.to_container(cfg.train.optimizer, resolve=True)
    warmup = int(cfg.train.warmup_epochs * steps_per_epoch)
    node = cfg.train.get("module")
    if node is None:  # image classifier
        module: Any = TeacherModule(model, dm.preprocess, dm.num_classes, optimizer, total,
                                    cfg.train.label_smoothing, warmup,
                                    augment=dm.batch_augment(0) if hasattr(dm, "batch_augment") else None)
    else:  # a module from config, e.g. archnet.teacher.translation.TranslationTeacherModule
        module = instantiate(node, _partial_=True)(model=model, dm=dm, optimizer=optimizer,
                                                   total_steps=total, warmup_steps=warmup,
                                                   label_smoothing=cfg.train.label_smoothing)
    monitor = getattr(module, "monitor", "val/top1")
    best = ModelCheckpoint(dirpath=run_dir / "checkpoints", monitor=monitor, mode="max",
                           filename="best", save_top_k=1, enable_version_counter=False)
    show = progress_enabled(cfg)
    extra = [instantiate(node) for node in (cfg.get("callbacks") or {}).values() if node is not None]
    trainer_kwargs = OmegaConf.to_container(cfg.trainer, resolve=True)
    assert isinstance(trainer_kwargs, dict)
    trainer = pl.Trainer(**trainer_kwargs, max_epochs=cfg.train.epochs, logger=False,
                         callbacks=[best, RichProgressBar(leave=False) if show else EpochLines(), *extra],
                         enable_progress_bar=show, enable_model_summary=False,
                         num_sanity_val_steps=0, default_root_dir=str(run_dir))
    start = time.perf_counter()
    trainer.fit(module, dm)
    wall = time.perf_counter() - start
    if trainer.global_rank != 0:
        return {}
    state = torch.load(best.best_model_path, map_location="cpu", weights_only=False)["state_dict"]
    model.load_state_dict({k[len("model."):]: v for k, v in state.items() if k.startswith("model.")})
    if node is None:
        top = evaluate_topk(model, dm.test_dataloader(), dm.preprocess, dm.num_classes)
        test = {f"test/{k}": v for k, v in top.items()}
        size = {"params": count_params(model), "macs": count_macs(model, dm.input_shape)}
        line = f"test top-1 {top['top1']:.2f}%, top-5 {top.get('top5', 0):.2f}%"
    else:
        test, size = module.test_metrics(dm), module.complexity(dm)
        line = module.describe(test)
    metrics = {"experiment": cfg.get("name", "teacher"), "seed": cfg.seed, "machine": machine(),
               "teacher": {**test, f"holdout/{monitor.split('/')[-1]}": float(best.best_model_score),
                           **size, "epochs": cfg.train.epochs, "train_wall_s": wall,
                           "s_per_step": wall / max(1, total)}}
    payload = {"state_dict": model.state_dict(),
               "teacher": OmegaConf.to_container(cfg.teacher, resolve=True),
               "data": cfg.data.name, "metrics": metrics["teacher"]}
    save_torch(payload, run_dir / "teacher.pt")
    if cfg.teacher.get("checkpoint"):
        save_torch(payload, cfg.teacher.checkpoint)
    save_json(metrics, run_dir / "metrics.json")
    print(f"teacher {cfg.teacher.name}: {line} -> {cfg.teacher.get('checkpoint') or run_dir / 'teacher.pt'}")
    return metrics
