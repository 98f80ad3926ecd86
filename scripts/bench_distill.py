"""Images/s of one distillation step (or one teacher-training step) on the CPU/GPU.

A distillation step is the final stage of the progressive schedule (the costliest): every
feature tap both models share plus the logits, the frozen teacher's forward under no_grad,
the student's forward + backward through the per-tap adapters (teacher attention + RFA, as
the recipe) and an Adam step. ``--mode teacher`` times supervised teacher training instead
(forward, cross-entropy, backward, SGD step). Warm-up steps are discarded; the median of
``--steps`` timed steps is reported (wall clock, and the process CPU time summed over its
threads, which a loaded machine inflates less), with the load average before and after.

    python scripts/bench_distill.py --model resnet18 --size 64 --batch 32 --threads 2 \
        --topology paper --json bench.json

``--topology paper`` is the authors' student (``student/resnet_paper`` or
``student/mobilenet``); ``default`` is the chain student (``student/chain``) with its
default topology (2 units per block, concat shortcut).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from contextlib import nullcontext

import torch
import torch.nn.functional as F

from archnet.convert.chain_student import chain_student
from archnet.convert.mobilenet import convert_mobilenet
from archnet.convert.resnet import convert_resnet
from archnet.distill.adapters import rfa_adapters
from archnet.distill.losses import LOSSES
from archnet.distill.schedule import progressive
from archnet.distill.stage_module import DistillNet
from archnet.metrics.complexity import count_macs
from archnet.models import mobilenet, resnet
from archnet.ops.quant import QuantConfig, TensorQuantConfig

MODELS = {"resnet18": resnet.resnet18, "resnet34": resnet.resnet34, "resnet50": resnet.resnet50,
          "mobilenet_v1": mobilenet.mobilenet_v1, "mobilenet_v2": mobilenet.mobilenet_v2}


def quant_from_name(name: str) -> QuantConfig:
    """``fp32`` or ``wXaY`` (DoReFa weights, fixed-range activations, logits clipped at 16)."""
    if name == "fp32":
        return QuantConfig()
    w, a = name[1:].split("a")
    return QuantConfig(name, TensorQuantConfig("dorefa", int(w)), TensorQuantConfig("fixed", int(a)),
                       logit_clip=16.0)


def build(args: argparse.Namespace):
    kw = {"num_classes": args.classes}
    if args.model.startswith("resnet"):
        kw.update(stem=args.stem, width_multiplier=args.width)
    else:
        kw.update(width_mult=args.width, stem_stride=1 if args.stem == "small" else 2)
    teacher = MODELS[args.model](**kw).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    shape, q = (3, args.size, args.size), quant_from_name(args.quant)
    if args.topology == "default":
        student = chain_student(teacher, q, shape)
    elif args.model.startswith("resnet"):
        student = convert_resnet(teacher, q, shape, head="gap", center_fill=1e-10,
                                 init_head_from_teacher=False, r50_layer2_bug=True)
    else:
        student = convert_mobilenet(teacher, q, shape)
    adapters = rfa_adapters(teacher, student, shape) if args.adapters else {}
    return teacher, DistillNet(student, adapters), shape


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet18", choices=sorted(MODELS))
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--topology", default="paper", choices=("paper", "default"))
    ap.add_argument("--mode", default="distill", choices=("distill", "teacher"))
    ap.add_argument("--quant", default="w2a4", help="fp32 or wXaY (default w2a4)")
    ap.add_argument("--stem", default="imagenet", choices=("imagenet", "small"), help="small: ResNet 3x3/1 stem + 2x2 pool, MobileNet stem stride 1")
    ap.add_argument("--width", type=float, default=1.0, help="teacher width multiplier")
    ap.add_argument("--classes", type=int, default=100)
    ap.add_argument("--no-adapters", dest="adapters", action="store_false")
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--bf16", action="store_true", help="bfloat16 autocast")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--json", default=None, help="write the result here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    load_before = os.getloadavg()
    teacher, net, shape = build(args)
    dev = torch.device(args.device)
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    teacher.to(dev, memory_format=fmt)
    net.to(dev, memory_format=fmt).train()
    x = torch.randn(args.batch, *shape, device=dev).contiguous(memory_format=fmt)
    y = torch.randint(0, args.classes, (args.batch,), device=dev)
    amp = torch.autocast(dev.type, dtype=torch.bfloat16) if args.bf16 else nullcontext()
    common = [t for t in teacher.tap_names if t in set(net.student.tap_names)]
    stage = progressive(common, 1, 1, 1)[-1]
    if args.mode == "teacher":
        model = teacher.train().requires_grad_(True)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    else:
        opt = torch.optim.Adam(net.parameters(), lr=1e-3, weight_decay=1e-7)

    def step() -> None:
        with amp:
            if args.mode == "teacher":
                loss = F.cross_entropy(model(x), y)
            else:
                with torch.no_grad():
                    t_taps = teacher.forward_taps(x)
                s_taps = net.student.forward_taps(x)
                loss = sum(term.weight * LOSSES[term.loss](
                    net.adapt(term.tap, s_taps[term.tap], t_taps[term.tap]).float(),
                    t_taps[term.tap].float()) for term in stage.terms)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if dev.type == "cuda":
            torch.cuda.synchronize()

    times, cpu = [], []
    for i in range(args.warmup + args.steps):
        start, start_cpu = time.perf_counter(), time.process_time()
        step()
        if i >= args.warmup:
            times.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
    med = statistics.median(times)
    result = {
        **{k: v for k, v in vars(args).items() if k != "json"},
        "images_per_s": args.batch / med, "s_per_step": med, "step_times_s": times,
        "cpu_s_per_step": statistics.median(cpu),  # process CPU time (all threads): load-robust
        "taps": len(stage.terms), "adapter_params": sum(p.numel() for p in net.adapters.parameters()),
        "student_params": sum(p.numel() for p in net.student.parameters()),
        "teacher_macs": count_macs(teacher, shape), "student_macs": count_macs(net.student, shape),
        "load_avg_before": load_before, "load_avg_after": os.getloadavg(),
        "machine": f"{platform.machine()} {os.cpu_count()} CPUs, torch {torch.__version__}",
    }
    print(f"{args.model} {args.mode} {args.topology} {args.size}px batch {args.batch} {args.quant}: "
          f"{result['images_per_s']:.1f} images/s ({med * 1000:.0f} ms/step, median of {args.steps}; "
          f"{result['cpu_s_per_step'] * 1000:.0f} ms CPU); "
          f"load {load_before[0]:.2f} -> {result['load_avg_after'][0]:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
