"""The uniformly thinned student with the MACs of a search run's selected path, and its retraining.

Usage: python scripts/thinned_topology.py <search run dir> [--metric macs] [--rel-tol 0.03]

Reads ``<run>/.hydra/config.yaml`` (the search's composed config), ``<run>/search.json``
(the selected path's cost) and ``<run>/retrain.sh``; writes ``<run>/thinned_topology.yaml``
(one ``(n_units, width, shortcut)`` for every block, :mod:`archnet.search.thin`) and
``<run>/retrain_thinned.sh``: the same ``archnet-distill`` command as ``retrain.sh`` (same
recipe, quantization and taps) with the thinned topology and ``name=<...>_thinned``.
"""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from omegaconf import OmegaConf

from archnet.distill import build
from archnet.search.cost import CostModel
from archnet.search.runner import search_section, supernet_from_config
from archnet.search.thin import thinned_topology, topology_cost


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--metric", default="macs", choices=["macs", "params", "bitops"])
    ap.add_argument("--rel-tol", type=float, default=0.03)
    args = ap.parse_args()
    run = args.run_dir
    for name in (".hydra/config.yaml", "search.json", "retrain.sh"):
        if not (run / name).is_file():
            raise SystemExit(f"thinned_topology: {run / name} missing (expected an archnet-search run directory)")
    cfg = OmegaConf.load(run / ".hydra/config.yaml")
    selected = json.loads((run / "search.json").read_text())["selected"]
    s = search_section(cfg)
    dm = build.build_data(cfg, s.batch_size)
    teacher = build.build_teacher(cfg, load=False)
    space = s.space
    net = supernet_from_config(cfg, teacher, dm.input_shape)
    model = CostModel(net, dm.input_shape)
    check = topology_cost(model, selected["topology"]["blocks"])
    if check.get(args.metric) != selected[args.metric]:
        raise SystemExit(f"thinned_topology: cost model gives {check.get(args.metric):,} for the selected path, "
                         f"search.json says {selected[args.metric]:,}")
    thin = thinned_topology(model, selected[args.metric], args.metric, args.rel_tol)
    student = {"divisor": space.divisor, "max_in_channels": space.max_in_channels,
               "stem": space.stem, "head": space.head}
    doc = thin.topology(net.space.names, student)
    out = run / "thinned_topology.yaml"
    out.write_text(f"# Uniformly thinned (scripts/thinned_topology.py): {args.metric} {thin.cost.get(args.metric):,} "
                   f"vs selected {selected[args.metric]:,}; macs {thin.cost.macs:,}, bitops {thin.cost.bitops:,}\n"
                   + OmegaConf.to_yaml(OmegaConf.create(doc)))
    command = (run / "retrain.sh").read_text().strip()
    command = re.sub(r"student\.topology=\S+", f"student.topology={out.resolve()}", command)
    command = re.sub(r"(?<=\s)name=(\S+)", r"name=\1_thinned", command, count=1)
    (run / "retrain_thinned.sh").write_text(command + "\n")
    print(f"selected: macs {selected['macs']:,}, bitops {selected['bitops']:,}")
    print(f"thinned:  macs {thin.cost.macs:,}, bitops {thin.cost.bitops:,} (n_units {thin.n_units}, "
          f"width {thin.width}, shortcut {thin.shortcut}) -> {out}")
    print(f"retrain:  {command}")


if __name__ == "__main__":
    main()
