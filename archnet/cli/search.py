"""``archnet-search``: Cream-style prioritized-path search of an Arch-Net student topology.

Reads the ``search`` primary config (conf/search.yaml): data, teacher (its checkpoint),
quant, trainer.accelerator, logger, ``search.*`` with the groups ``search/space``,
``search/budget``, ``search/board``, ``search/matcher``. Writes ``outputs/<name>/<time>/``
with ``topology.yaml``, ``student_init.pt``, ``supernet.pt``, ``search.json`` and
``retrain.sh`` (the ``archnet-distill student=searched ...`` command that retrains the
selected path). Example: ``archnet-search experiment=search_demo``.
"""
from __future__ import annotations

from omegaconf import DictConfig

from archnet.cli.app import run_cli, run_dir


def validate(cfg: DictConfig) -> None:
    """Sections, quant, teacher checkpoint, and the budget against the space (meta device:
    shapes only), so an infeasible budget fails before a run directory exists."""
    import torch

    from archnet.config.schema import (
        QuantSection,
        check_node,
        check_teacher_checkpoint,
        meta_teacher,
        validate_common,
    )
    from archnet.search.runner import make_supernet, search_section

    validate_common(cfg)
    check_node(cfg, "quant", QuantSection)
    search_section(cfg)
    teacher = meta_teacher(cfg)
    check_teacher_checkpoint(cfg, teacher)
    from hydra.utils import instantiate

    shape = tuple(instantiate(cfg.data.module, _recursive_=False).input_shape)
    with torch.device("meta"):
        make_supernet(cfg, teacher, shape)


def task(cfg: DictConfig) -> float | None:
    from archnet.search.runner import run_search

    result = run_search(cfg, run_dir())
    return result["selected"]["score"] if result else None


def main() -> None:
    run_cli("search", task, validate)


if __name__ == "__main__":
    main()
