"""``searched_student``: the Arch-Net student of a searched topology, for ``archnet-distill``.

``student=searched student.topology=<file or inline>`` builds exactly the student that
``SuperNet.export(path)`` produced during the search: a one-choice-per-block supernet is
built with the same rules and exported, so search and retraining share one code path.

Topology syntax (what ``archnet-search`` writes to ``<run>/topology.yaml``)::

    student: {divisor: 8, max_in_channels: 512, stem: chain, head: flatten}   # optional
    blocks:                        # {block name: entry} or a list in block order
      layer1.0: {n_units: 2, width: 0.75, shortcut: true}

The block entries use the keys of the chain converter's ``BlockTopology`` (``n_units``,
``width``, ``shortcut``) in its mapping form, but the block rule differs (the merge unit
is always present, the shortcut carries ``C_in`` channels through identity/max-pools, widths
round to ``divisor``), so the file is for this builder, not ``convert_chain``.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path as FsPath
from typing import Any

import torch
from omegaconf import OmegaConf
from torch import nn

from archnet.errors import ConfigError
from archnet.models.student import ArchNetStudent
from archnet.ops.quant import QuantConfig
from archnet.search.build import build_supernet

ENTRY_KEYS = ("n_units", "width", "shortcut")
DEFAULTS = {"divisor": 8, "max_in_channels": 512, "stem": "chain", "head": "flatten"}


def load_topology(topology: Any) -> dict:
    """A topology given as a YAML path, a mapping or a per-block list -> plain dict."""
    if OmegaConf.is_config(topology):
        topology = OmegaConf.to_container(topology, resolve=True)
    if isinstance(topology, (str, FsPath)):
        path = FsPath(topology)
        if not path.is_file():
            raise ConfigError("student.topology", str(topology), "a topology YAML file (written by archnet-search)")
        topology = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    if isinstance(topology, Sequence) and not isinstance(topology, str):
        topology = {"blocks": list(topology)}
    if not isinstance(topology, Mapping) or "blocks" not in topology:
        raise ConfigError("student.topology", topology, "a file path, or a mapping with 'blocks'")
    return dict(topology)


def _options(blocks: Any, names: Sequence[str]) -> list[list[tuple[int, float, bool]]]:
    if isinstance(blocks, Mapping):
        unknown = sorted(set(blocks) - set(names))
        if unknown:
            raise ConfigError("student.topology.blocks", unknown, "one of " + ", ".join(names))
        blocks = [blocks.get(n) for n in names]
    if len(blocks) != len(names):
        raise ConfigError("student.topology.blocks", f"{len(blocks)} entries", f"one per block ({len(names)})")
    out = []
    for name, entry in zip(names, blocks):
        entry = dict(entry or {})
        bad = sorted(set(entry) - set(ENTRY_KEYS))
        if bad or set(entry) != set(ENTRY_KEYS):
            raise ConfigError(f"student.topology.blocks.{name}", entry, "keys " + ", ".join(ENTRY_KEYS))
        out.append([(int(entry["n_units"]), float(entry["width"]), bool(entry["shortcut"]))])
    return out


def searched_student(teacher: nn.Module, quant: QuantConfig, input_shape: tuple[int, int, int],
                     topology: Any = None, init: str | None = None, init_from_teacher: bool = True,
                     **student_options: Any) -> ArchNetStudent:
    """Build the searched student of ``teacher`` (module docstring).

    Args:
        teacher: the tapped teacher (its tap names become the student's).
        quant: quantization of the student.
        input_shape: ``(C, H, W)`` of one input.
        topology: file path, mapping or per-block list (module docstring).
        init: optional state-dict file (``<search run>/student_init.pt``) to start from the
            supernet's weights instead of random ones.
        init_from_teacher: copy the teacher's small stem and GAP+FC head where shapes allow.
        **student_options: ``divisor``, ``max_in_channels``, ``stem``, ``head``; override the
            topology file's ``student`` section (``null`` values are ignored).
    """
    if topology is None:
        raise ConfigError("student.topology", None, "a topology file or mapping (archnet-search writes one)")
    topo = load_topology(topology)
    settings = {**DEFAULTS, **dict(topo.get("student") or {}),
                **{k: v for k, v in student_options.items() if v is not None}}
    unknown = sorted(set(settings) - set(DEFAULTS))
    if unknown:
        raise ConfigError("student", unknown, "options " + ", ".join(DEFAULTS))
    options = _options(topo["blocks"], list(teacher.block_names))  # type: ignore[arg-type]
    net = build_supernet(teacher, quant, input_shape, init_from_teacher=init_from_teacher,
                         options=options, **settings)
    net.set_quantize(True)  # export with ``quant`` (float when quant is fp32)
    student = net.export(tuple(0 for _ in options))
    if init:
        if not FsPath(init).is_file():
            raise ConfigError("student.init", init, "a state-dict file (archnet-search's student_init.pt)")
        state = torch.load(init, map_location="cpu")
        missing, unexpected = student.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ConfigError("student.init", init, f"weights of this student and quant config "
                              f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    return student.train()
