"""Seconds per step of Transformer teacher training and of each distillation period, and
the wall-time estimate of a whole recipe (teacher + student) from them.

Composes the real config of ``--experiment`` (plus ``--set`` overrides), builds the data
(full Multi30k unless ``data.module.subset`` is set), the teacher, the student, the RFA
adapters and the schedule, then times ``--steps`` steps (after ``--warmup``) of: teacher
training (teacher-forced label-smoothed CE, backward, Adam step) on the recipe's token
batches, and distillation (frozen teacher forward, student forward + backward through the
adapters, AdamW step) on ``distill.batch_size`` sentences for a few periods. The estimate
multiplies median step times by the recipe's step counts (periods between two timed ones
interpolated linearly) and adds decoding (greedy validation BLEU every teacher epoch,
beam-search BLEU on every test split for teacher and student). Times are CPU seconds of
this process, which on a shared machine stay close to what an idle machine would take
with the same number of threads.

    OMP_NUM_THREADS=1 python scripts/bench_transformer.py --experiment multi30k_small_ende_2w4a \
        --threads 1 --json bench.json
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def _time(step, batches, warmup: int, steps: int) -> float:
    """Median CPU seconds (this process, all its threads) of one step: on a shared machine
    wall time depends on the other load, CPU time much less (a busy core is not counted)."""
    times = []
    for i, batch in enumerate(batches):
        start = time.process_time()
        step(batch)
        if i >= warmup:
            times.append(time.process_time() - start)
        if len(times) >= steps:
            break
    return statistics.median(times)


def main() -> None:
    from conftest import compose
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from archnet.data.sampling import StageBatchSampler
    from archnet.distill import build
    from archnet.distill.stage_module import DistillNet, StageModule
    from archnet.teacher.translation import TranslationTeacherModule

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--experiment", default="multi30k_small_ende_2w4a")
    ap.add_argument("--set", nargs="*", default=[], help="extra Hydra overrides")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--periods", type=int, nargs="*", default=None, help="period indices to time")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = compose("distill", [f"experiment={args.experiment}", "logger=none", *args.set])
    load1 = os.getloadavg()[0]
    dm = build.build_data(cfg, cfg.train.batch_size)
    teacher = build.build_teacher(cfg, load=False)
    # teacher training
    module = TranslationTeacherModule(teacher, dm, OmegaConf.to_container(cfg.train.optimizer), 1000,
                                      **{k: v for k, v in OmegaConf.to_container(cfg.train.module).items()
                                         if k in ("optimizer_override",)})
    opt = module.configure_optimizers()["optimizer"]
    teacher.train()

    def teacher_step(batch):
        opt.zero_grad()
        module.training_step(batch, 0).backward()
        opt.step()

    loader = dm.train_dataloader()
    t_teacher = _time(teacher_step, loader, args.warmup, args.steps)
    teacher_steps = len(loader) * cfg.train.epochs
    # distillation
    build.freeze(teacher)
    student = build.build_student(cfg, teacher, None)
    net = DistillNet(student, build.build_adapters(cfg, teacher, student, None))
    stages = build.build_schedule(cfg, teacher.tap_names)
    task = build.build_task(cfg, dm)
    periods = args.periods if args.periods is not None else sorted({0, len(stages) // 2, len(stages) - 2,
                                                                    len(stages) - 1})
    b = cfg.distill.batch_size
    per_stage = {}
    for k in periods:
        stage = stages[k]
        sm = StageModule(net, teacher, stage, None, b, teacher.tap_names, task=task)
        params = [p for p in net.parameters() if p.requires_grad]
        opt = instantiate(stage.optimizer, params=params, _convert_="all")

        def distill_step(batch, sm=sm, opt=opt):
            opt.zero_grad()
            sm.stage_loss(task.train_inputs(batch, 0))[0].backward()
            opt.step()

        sampler = StageBatchSampler(len(dm.train_set), args.steps + args.warmup, 1000, b, 0, k)
        batches = DataLoader(task.train_dataset(dm), batch_sampler=sampler, collate_fn=task.collate_fn)
        per_stage[k] = _time(distill_step, batches, args.warmup, args.steps)
    # decoding: greedy validation BLEU per teacher epoch, beam-search BLEU at the end
    from archnet.metrics.translation import score_split

    n_dec = 50
    start = time.process_time()
    score_split(teacher, dm, dm.val_split, beam=1, limit=n_dec, max_len=cfg.train.module.val_max_len)
    greedy = (time.process_time() - start) / n_dec
    start = time.process_time()
    score_split(teacher, dm, dm.test_split, beam=cfg.data.task.beam, limit=n_dec, max_len=cfg.data.task.max_len)
    beam = (time.process_time() - start) / n_dec
    decode_s = (greedy * len(dm.split(dm.val_split)) * cfg.train.epochs
                + beam * 1000 * len(cfg.data.task.splits) * 3)  # teacher test, then teacher + student
    steps = [max(1, s.samples // b) for s in stages]
    known = sorted(per_stage)
    est = 0.0
    for i, n in enumerate(steps):  # linear interpolation between timed periods
        lo = max([k for k in known if k <= i], default=known[0])
        hi = min([k for k in known if k >= i], default=known[-1])
        t = per_stage[lo] if hi == lo else per_stage[lo] + (per_stage[hi] - per_stage[lo]) * (i - lo) / (hi - lo)
        est += n * t
    out = {"experiment": args.experiment, "threads": args.threads, "load_before": load1,
           "load_after": os.getloadavg()[0], "train_pairs": len(dm.train_set),
           "teacher_s_per_step": t_teacher, "teacher_steps": teacher_steps,
           "teacher_estimate_s": t_teacher * teacher_steps,
           "distill_s_per_step": {stages[k].name: v for k, v in per_stage.items()},
           "distill_steps": sum(steps), "distill_estimate_s": est,
           "greedy_s_per_sentence": greedy, "beam_s_per_sentence": beam, "decode_estimate_s": decode_s,
           "total_estimate_h": (t_teacher * teacher_steps + est + decode_s) / 3600}
    print(json.dumps(out, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
