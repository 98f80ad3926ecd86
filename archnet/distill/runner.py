"""``run_distill(cfg, run_dir)``: convert, then one ``Trainer.fit`` per stage, then evaluate.

Config keys read: ``seed``, ``data``, ``teacher``, ``student``, ``quant``, ``schedule``,
``distill.{batch_size, chunk_steps, val_samples, log_every, adapters, num_workers,
calibrate_images, init_student, init_student_steps, precise_bn_images, precise_bn_keep,
average_samples, average_keep}``,
``trainer``, ``logger``, ``callbacks``, ``progress``. Stages marked DONE are skipped (their
weights reloaded); an unfinished stage resumes from its ``last.ckpt``.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from archnet.data.sampling import StageBatchSampler
from archnet.distill import build, rundir
from archnet.distill.mixup import build_augment
from archnet.distill.schedule import spread
from archnet.distill.stage_eval import evaluate_stage
from archnet.distill.stage_module import DistillNet, StageModule
from archnet.distill.trainable import select_trainable
from archnet.distill.trainer import make_trainer
from archnet.distill.weight_average import AVERAGE, WeightAverage, average_decay
from archnet.utils.dist import all_gather_objects, barrier, is_rank_zero
from archnet.utils.io import save_json, save_torch


def run_stages(cfg: DictConfig, run_dir: Path, net: DistillNet, teacher, dm, task, stages,
               run_logger, extra_callbacks: list | None = None) -> dict[str, dict[str, Any]]:
    """Fit every stage in order; returns per-stage metrics (also in ``stages/*/metrics.json``)."""
    tap_names = teacher.tap_names
    results: dict[str, dict[str, Any]] = {}
    step_offset = 0
    world = make_trainer(cfg, run_dir, max_steps=1).world_size
    global_batch = cfg.distill.batch_size * world
    dirs = [rundir.stage_dir(run_dir, i, s.name) for i, s in enumerate(stages)]
    resume_from = max((i for i, d in enumerate(dirs) if rundir.is_done(d)), default=-1)
    for index, stage in enumerate(stages):
        sdir = dirs[index]
        metrics_path = sdir / "metrics.json"
        total_steps = max(1, stage.samples // global_batch)
        if rundir.is_done(sdir):  # only the newest finished stage's weights matter
            if index == resume_from:
                net.load_state_dict(torch.load(sdir / rundir.STATE, map_location="cpu"))
            results[stage.name] = _read_json(metrics_path)
            step_offset += total_steps
            continue
        last = sdir / rundir.LAST
        restarted = build.restart_student(cfg, net, teacher, dm, task) \
            if stage.restart and not last.exists() else None
        if restarted and is_rank_zero():
            print(f"stage {stage.name}: the student restarts from itself ({restarted['copied']} "
                  f"tensors copied as q(W), {restarted['steps']} quantizer steps fitted anew, "
                  f"{len(restarted['merge_errors'])} merges calibrated, adapters rebuilt)", flush=True)
        averager = _averager(cfg, global_batch) if index == len(stages) - 1 else None
        trainer = make_trainer(cfg, sdir, total_steps,
                               list(extra_callbacks or []) + ([averager] if averager else []))

        def log_step(metrics: dict[str, float], step: int, _off: int = step_offset) -> None:
            if is_rank_zero():
                run_logger.log_metrics(metrics, _off + step)

        if hasattr(task, "augment"):  # images: flip/crop then mixup, keyed by (seed, stage, step)
            task.augment = build_augment(cfg, dm, index)
        module = StageModule(net, teacher, stage, None, global_batch, tap_names,
                             step_logger=log_step, log_every=cfg.distill.log_every, task=task)
        sampler = StageBatchSampler(len(dm.train_set), total_steps, cfg.distill.chunk_steps,
                                    cfg.distill.batch_size, cfg.seed, index,
                                    trainer.global_rank, world,
                                    step_fn=lambda _t=trainer: _t.global_step)
        pool = task.train_dataset(dm)  # label-free: what the student trains on, nothing else
        loader = DataLoader(pool, batch_sampler=sampler,
                            num_workers=cfg.distill.num_workers, collate_fn=task.collate_fn)
        example = task.eval_inputs(next(iter(DataLoader(pool, batch_size=2,
                                                        collate_fn=task.collate_fn))))
        trainable = select_trainable(module, example)
        history_start = len(run_logger.history)
        start = time.perf_counter()
        trainer.fit(module, loader, ckpt_path=str(last) if last.exists() else None)
        wall = time.perf_counter() - start
        val = evaluate_stage(module, dm.val_dataloader(), cfg.distill.val_samples)
        per_rank = all_gather_objects(val)
        metrics = {"samples": total_steps * global_batch, "steps": total_steps,
                   "wall_s": wall, "trainable_params": sum(
                       p.numel() for n, p in net.named_parameters() if n in set(trainable)),
                   **{f"val/{k}": v for k, v in val.items()},
                   "curve": [[step, m[f"{stage.name}/train/loss"]]
                             for step, m in run_logger.history[history_start:]
                             if f"{stage.name}/train/loss" in m]}
        if restarted:
            metrics["restart"] = restarted
        if world > 1:
            metrics["ranks"] = per_rank
            metrics["ranks_agree"] = all(r == per_rank[0] for r in per_rank)
        if is_rank_zero():
            run_logger.log_metrics({f"{stage.name}/val/{k}": v for k, v in val.items()},
                                   step_offset + total_steps)
            save_torch(net.state_dict(), sdir / rundir.STATE)
            if averager is not None:
                save_torch({"state": averager.average, "decay": averager.decay,
                            "updates": averager.updates}, sdir / AVERAGE)
            save_json(metrics, metrics_path)
            rundir.mark_done(sdir)
            if cfg.distill.get("stage_files", "all") == "last":
                rundir.prune_finished(dirs[: index + 1])
            print(f"stage {stage.name}: {total_steps} steps in {wall:.1f} s, val loss "
                  f"{val['loss']:.4g}, agreement with teacher {val['agreement']:.1f}%", flush=True)
        barrier()
        results[stage.name] = metrics
        step_offset += total_steps
    return results


def _averager(cfg: DictConfig, global_batch: int) -> WeightAverage | None:
    """The last stage's moving average of the student's weights (``distill.average_samples``)."""
    horizon = int(cfg.distill.get("average_samples", 0))
    return WeightAverage(average_decay(horizon, global_batch)) if horizon > 0 else None


def _read_json(path: Path) -> dict[str, Any]:
    import json

    return json.loads(path.read_text()) if path.exists() else {}


def run_distill(cfg: DictConfig, run_dir: str | Path, extra_callbacks: list | None = None) -> dict[str, Any]:
    """Convert the teacher, distill through every stage, evaluate; returns metrics.json's dict."""
    from archnet.distill.finish import finish_run

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    dm = build.build_data(cfg, cfg.distill.batch_size)
    if is_rank_zero() and hasattr(dm, "save_manifest"):
        dm.save_manifest(run_dir)  # the label-free training manifest and its hash
    teacher = build.freeze(build.build_teacher(cfg))
    shape = getattr(dm, "input_shape", None)  # None: token ids (no fixed input shape)
    student = build.build_student(cfg, teacher, shape)
    task = build.build_task(cfg, dm)
    start = build.start_student(cfg, student, teacher, dm, task)
    if start["copied"] and is_rank_zero():
        print(f"student starts from {cfg.distill.init_student}: {start['copied']} tensors copied, "
              f"{start['steps']} quantizer steps initialised anew")
    merge_errors = start["merge_errors"]
    if merge_errors and is_rank_zero():
        print(f"calibrated the student's BNs on {cfg.distill.calibrate_images} images: relative "
              f"error of the {len(merge_errors)} merges against the teacher's pre-ReLU sums "
              f"{min(merge_errors):.3g}-{max(merge_errors):.3g}")
    net = DistillNet(student, build.build_adapters(cfg, teacher, student, shape))
    shared = set(student.tap_names)  # taps both networks expose (all of them for rule-based students)
    stages = build.build_schedule(cfg, [t for t in teacher.tap_names if t in shared])
    build.check_tap_pairs(stages, teacher, student, getattr(dm, "input_shape", None))
    stages = spread(stages, cfg.distill.get("limit_stages"))  # all of them unless a smoke run
    run_logger = instantiate(cfg.logger, run_dir=run_dir, enabled=is_rank_zero())
    try:
        stage_metrics = run_stages(cfg, run_dir, net, teacher, dm, task, stages, run_logger,
                                   extra_callbacks)
        return finish_run(cfg, run_dir, net, teacher, dm, task, stages, stage_metrics, run_logger)
    finally:
        run_logger.finish()
