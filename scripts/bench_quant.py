#!/usr/bin/env python
"""Training-step time of the demo student at fp32 and at 2w4a (quantizer overhead).

The demo student is ``convert_resnet(tiny_resnet(), input 3x32x32)``; one step is forward ->
MSE on the logits (against fixed random targets, standing in for the teacher) -> backward ->
Adam step, batch 64. 2w4a: DoReFa 2-bit weights, fixed-range 4-bit activations, 8-bit
gaussian classifier, logit clip 16 (the paper's recipe). The two models are timed in
alternating rounds (so machine load hits both alike) after warm-up; the median wall and
process-CPU step times of each are reported with their ratios (CPU time is the steadier
number on a shared machine).

    python scripts/bench_quant.py --steps 20 --out bench_quant.json
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from datetime import datetime, timezone

import torch
import torch.nn.functional as F

from archnet.convert.resnet import convert_resnet
from archnet.models.resnet import tiny_resnet
from archnet.ops.quant import QuantConfig, TensorQuantConfig

CONFIGS = {
    "fp32": QuantConfig(),
    "w2a4": QuantConfig("w2a4", TensorQuantConfig("dorefa", 2), TensorQuantConfig("fixed", 4), logit_clip=16.0),
}


def make_step(quant: QuantConfig, batch: int, seed: int = 0):
    torch.manual_seed(seed)
    model = convert_resnet(tiny_resnet(), quant=quant, input_shape=(3, 32, 32)).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, target = torch.randn(batch, 3, 32, 32), torch.randn(batch, 10)

    def step() -> tuple[float, float]:
        t0, c0 = time.perf_counter(), time.process_time()
        opt.zero_grad(set_to_none=True)
        F.mse_loss(model(x), target).backward()
        opt.step()
        return time.perf_counter() - t0, time.process_time() - c0

    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20, help="timed steps per model (>= 10)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    args = ap.parse_args()
    if args.steps < 10:
        ap.error("--steps must be >= 10")
    if args.threads:
        torch.set_num_threads(args.threads)
    steps = {name: make_step(q, args.batch) for name, q in CONFIGS.items()}
    for _ in range(args.warmup):
        for step in steps.values():
            step()
    wall: dict[str, list[float]] = {name: [] for name in steps}
    cpu: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(args.steps):  # alternate, so load changes hit both models
        for name, step in steps.items():
            w, c = step()
            wall[name].append(w)
            cpu[name].append(c)
    med = {name: statistics.median(t) for name, t in wall.items()}
    med_cpu = {name: statistics.median(t) for name, t in cpu.items()}
    result = {
        "what": "demo student training step (fwd + MSE on logits + bwd + Adam), batch "
                f"{args.batch}, 3x32x32, median of {args.steps} after {args.warmup} warm-up",
        "median_s": med, "ratio_w2a4_over_fp32": med["w2a4"] / med["fp32"],
        "median_cpu_s": med_cpu, "cpu_ratio_w2a4_over_fp32": med_cpu["w2a4"] / med_cpu["fp32"],
        "wall_s": wall, "cpu_s": cpu, "torch": torch.__version__, "threads": torch.get_num_threads(),
        "machine": platform.platform(), "processor": platform.processor(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    for name in steps:
        print(f"{name:5s} median step {med[name] * 1e3:8.2f} ms wall, {med_cpu[name] * 1e3:8.2f} ms CPU")
    print(f"ratio w2a4 / fp32: {result['ratio_w2a4_over_fp32']:.3f} wall, "
          f"{result['cpu_ratio_w2a4_over_fp32']:.3f} CPU  (target <= 1.3)")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
