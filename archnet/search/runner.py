"""``run_search(cfg, run_dir)``: supernet search, selection and the retrainable topology.

Config keys read: ``seed``, ``name``, ``data``, ``teacher`` (its checkpoint), ``quant``,
``trainer.accelerator``, ``logger``, and ``search.*`` (:mod:`archnet.search.config`):
``samples``/``batch_size``/``warmup_samples``/``quant_start_samples`` (budgets in samples),
``feat_weight``, ``decay``, ``kd_tau``, ``optimizer``, ``lr_scheduler``, ``space``,
``budget``, ``board``, ``matcher``, ``select``.

Writes into ``run_dir``: ``topology.yaml`` (for ``archnet-distill student=searched
student.topology=...``), ``student_init.pt`` (the selected path's weights from the
supernet), ``supernet.pt``, ``search.json`` (budget, board, candidates, selection, timings
and the retraining command) and ``retrain.sh``.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from archnet.distill import build
from archnet.distill.trainer import progress_enabled
from archnet.ops.quant import quant_config
from archnet.search.board import Board
from archnet.search.build import build_supernet
from archnet.search.config import SearchSection
from archnet.search.cost import Budget, CostModel
from archnet.search.data import SearchData
from archnet.search.sampler import feasible_sampler
from archnet.search.select import select_path
from archnet.search.trainer import SupernetTrainer, TrainOptions
from archnet.utils.io import save_json, save_text, save_torch


def search_section(cfg: DictConfig) -> SearchSection:
    """The typed ``search`` node (interpolations resolved against the whole config)."""
    from archnet.config.schema import check_node

    resolved = OmegaConf.create({"search": OmegaConf.to_container(cfg.search, resolve=True)})
    return check_node(resolved, "search", SearchSection)


def supernet_from_config(cfg: DictConfig, teacher: torch.nn.Module, input_shape: tuple[int, int, int]):
    """The supernet of ``search.space`` and ``quant`` for ``teacher``."""
    space = search_section(cfg).space
    return build_supernet(teacher, quant_config(cfg.quant), input_shape, space.n_units, space.widths,
                          space.shortcut, space.divisor, space.max_in_channels, space.stem, space.head)


def make_supernet(cfg: DictConfig, teacher: torch.nn.Module, input_shape: tuple[int, int, int]):
    """``(supernet, cost model, sampler, budget, (lo, hi))`` from the composed config."""
    s = search_section(cfg)
    net = supernet_from_config(cfg, teacher, input_shape)
    model = CostModel(net, input_shape)
    budget = Budget(s.budget.min, s.budget.max, s.budget.unit, s.budget.metric, s.budget.name)
    sampler = feasible_sampler(model, budget, teacher, input_shape, seed=cfg.seed)
    return net, model, sampler, budget, (sampler.lo, sampler.hi)


def _device(cfg: DictConfig) -> torch.device:
    acc = str(cfg.get("trainer", {}).get("accelerator", "cpu"))
    return torch.device("cuda" if acc in ("gpu", "cuda", "auto") and torch.cuda.is_available() else "cpu")


def topology_document(net, path, cfg: DictConfig, selected: dict) -> str:
    s = search_section(cfg)
    doc = {"student": {"divisor": s.space.divisor, "max_in_channels": s.space.max_in_channels,
                       "stem": s.space.stem, "head": s.space.head},
           **net.space.to_topology(path)}
    head = (f"# Searched by archnet-search ({cfg.get('name')}, seed {cfg.seed}): budget {s.budget.name}, "
            f"{s.budget.metric} {selected['cost']:,}, probe agreement {selected['score']:.2f}%\n")
    return head + OmegaConf.to_yaml(OmegaConf.create(doc))


def _quant_args(cfg: DictConfig) -> list[str]:
    """``quant=<name>`` when that config file exists, else every leaf of ``cfg.quant``."""
    from archnet.cli.app import group_options

    if cfg.quant.name in group_options("quant"):
        return [f"quant={cfg.quant.name}"]
    leaves = OmegaConf.to_container(cfg.quant, resolve=True)
    assert isinstance(leaves, dict)
    out = []
    for k, v in leaves.items():
        for kk, vv in (v.items() if isinstance(v, dict) else [(None, v)]):
            key = f"quant.{k}" + (f".{kk}" if kk else "")
            out.append(f"{key}={'null' if vv is None else str(vv).lower() if isinstance(vv, bool) else vv}")
    return out


def _group_choices() -> dict[str, str]:
    """The config group options this run was composed from (empty outside a Hydra run)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return {}
    return {k: v for k, v in HydraConfig.get().runtime.choices.items() if isinstance(v, str)}


def retrain_command(cfg: DictConfig, net, run_dir: Path) -> str:
    """The ``archnet-distill`` command retraining the selected path (only block outputs are
    supervised: the searched blocks' inner units do not mirror the teacher's inner taps).

    With ``search.retrain_experiment`` the distillation recipe (data, teacher, schedule) is
    that experiment's, otherwise the search's own data/teacher options; the quantization is
    always the search's (the path was selected under it)."""
    taps = ",".join(["stem", *(f"{b.sig.name}.out" for b in net.space.blocks)])
    recipe = cfg.search.get("retrain_experiment")
    if recipe:
        picks = [f"experiment={recipe}"]
    else:
        choices = _group_choices()
        picks = [f"data={choices.get('data', cfg.data.name)}",
                 f"teacher={choices.get('teacher', cfg.teacher.name)}"]
    args = ["archnet-distill", *picks, *_quant_args(cfg), "student=searched",
            f"student.topology={run_dir.resolve() / 'topology.yaml'}", f"seed={cfg.seed}",
            f"name={cfg.get('name', 'search')}_retrain", f"'schedule.taps=[{taps}]'"]
    return " ".join(args)


def run_search(cfg: DictConfig, run_dir: str | Path) -> dict[str, Any]:
    """Search, select, and write the run directory (module docstring); returns search.json."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    s = search_section(cfg)
    device = _device(cfg)
    dm = build.build_data(cfg, s.batch_size)
    teacher = build.freeze(build.build_teacher(cfg)).to(device)
    net, model, sampler, budget, (lo, hi) = make_supernet(cfg, teacher, dm.input_shape)
    data = SearchData(dm.train_set, dm.preprocess, s.board.probe_size, cfg.seed, device, s.num_workers)
    board = Board(s.board.size, s.board.gap)
    matcher = instantiate(s.matcher).to(device)
    steps = max(1, s.samples // s.batch_size)
    opt = instantiate(OmegaConf.create(s.optimizer), params=[p for p in net.parameters() if p.requires_grad])
    sched = instantiate(OmegaConf.create(s.lr_scheduler), optimizer=opt, T_max=steps) if s.lr_scheduler else None
    opts = TrainOptions(steps, s.batch_size, s.warmup_samples // s.batch_size, s.quant_start_samples // s.batch_size,
                        s.decay, s.feat_weight, s.kd_tau, s.board.score, s.board.cache_slice, s.log_every,
                        progress_enabled(cfg))
    logger = instantiate(cfg.logger, run_dir=run_dir, enabled=True)
    try:
        trainer = SupernetTrainer(net, teacher, sampler, data, board, matcher, opt, sched, opts, logger.log_metrics)
        summary = trainer.fit()
        print(f"archnet-search: search done in {summary['wall_s'] / 60:.1f} min; scoring the board's "
              f"{len(board)} paths and {s.select.random_paths} random ones on the probe slice", flush=True)
        start = time.perf_counter()
        best, candidates = select_path(net, teacher, data, sampler, [e.path for e in board], s.select.random_paths,
                                       s.select.recal_samples, s.batch_size)
        select_wall = time.perf_counter() - start
        student = net.export(best.path).cpu()
        save_text(topology_document(net, best.path, cfg, best.to_dict()), run_dir / "topology.yaml")
        save_torch(student.state_dict(), run_dir / "student_init.pt")
        save_torch({"state_dict": net.state_dict(), "quantize": net.quantize}, run_dir / "supernet.pt")
        command = retrain_command(cfg, net, run_dir)
        save_text(command + "\n", run_dir / "retrain.sh")
        cost = model.path_cost(best.path)
        result = {"experiment": cfg.get("name"), "seed": cfg.seed, "budget": budget.describe(lo, hi),
                  "budget_range": [lo, hi], "metric": budget.metric, "feasible_paths": sampler.count,
                  "space_sizes": net.space.sizes, "n_paths": net.space.n_paths,
                  "dropped_choices": {b.sig.name: b.dropped for b in net.space.blocks if b.dropped},
                  "search": summary, "select_wall_s": select_wall,
                  "candidates": [c.to_dict() for c in candidates],
                  "selected": best.to_dict() | {"macs": cost.macs, "params": cost.params, "bitops": cost.bitops,
                                                "topology": net.space.to_topology(best.path)},
                  "retrain_command": command}
        save_json(result, run_dir / "search.json")
        logger.log_summary({"search/selected_score": best.score, "search/selected_cost": best.cost})
        print(f"archnet-search: selected {best.path} ({budget.metric} {best.cost:,}, probe agreement "
              f"{best.score:.2f}%) -> {run_dir / 'topology.yaml'}\nretrain: {command}")
        return result
    finally:
        logger.finish()
