"""``student: chain``: a topology-built Arch-Net student for any tapped teacher.

:func:`archnet.convert.chain.convert_chain` builds one student block per teacher block from
the block's measured signature (channels, stride) and a ``topology`` node (``n_units``,
``width``, ``shortcut``, ``downsample``, per block or as defaults). This wrapper gives it a
teacher of the tap contract (ResNet, MobileNetV1/V2, or an existing
:class:`~archnet.convert.chain.ChainTeacher`) and returns the student alone, as
``distill.build.build_student`` expects.

The student taps are ``stem``, ``<block>.out`` and ``logits``: the teacher's block outputs
(its inner taps, e.g. a ResNet's ``conv1``/``conv2``, have no student counterpart), so a
schedule over such a pair supervises the taps both expose.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import nn

from archnet.convert.chain import ChainTeacher, convert_chain
from archnet.errors import ConfigError
from archnet.models.mobilenet import MobileNetV1, MobileNetV2
from archnet.models.resnet import ResNet
from archnet.models.student import ArchNetStudent
from archnet.models.taps import TappedChain
from archnet.ops.quant import QuantConfig

# Module whose output is the ``stem`` tap, and the final classifier, per teacher family.
STEM_MODULES = {ResNet: "maxpool", MobileNetV2: "features.0", MobileNetV1: "stem"}
HEAD_MODULES = {ResNet: "fc", MobileNetV2: "classifier.1", MobileNetV1: "fc"}


def _lookup(table: Mapping[type, str], teacher: nn.Module, key: str) -> str:
    for cls, name in table.items():
        if isinstance(teacher, cls):
            return name
    raise ConfigError(f"student.{key}", None, f"a module name of {type(teacher).__name__} "
                      "(no default for this teacher family)")


def chain_student(teacher: TappedChain, quant: QuantConfig | None = None,
                  input_shape: tuple[int, int, int] = (3, 224, 224),
                  topology: Mapping | Sequence | None = None, head: str = "flatten",
                  max_in_channels: int = 512, stem_name: str | None = None,
                  head_name: str | None = None) -> ArchNetStudent:
    """The chain student of ``teacher`` (weights random, head copied from ``head_name``).

    Args:
        teacher: a tapped teacher; its ``block_names`` are the blocks to convert.
        quant: quantization of the student's units.
        input_shape: ``(C, H, W)`` of one image (the signatures are measured at this size).
        topology: ``student.topology`` (see :func:`archnet.convert.chain.parse_topology`).
        head: ``flatten`` or ``gap``.
        max_in_channels: dense convs above this many inputs are split into groups.
        stem_name: module whose output is the stem tap (default per family).
        head_name: the teacher's final ``nn.Linear`` (default per family; a ChainTeacher
            without it gets a random head).
    """
    if isinstance(teacher, ChainTeacher):
        model, stem = teacher.model, stem_name or teacher.stem_name
    else:
        model = teacher
        stem = stem_name or _lookup(STEM_MODULES, teacher, "stem_name")
        head_name = head_name or _lookup(HEAD_MODULES, teacher, "head_name")
    conversion = convert_chain(model, teacher.block_names, stem, head_name, topology,
                               tuple(input_shape), quant, head, max_in_channels)
    return conversion.student
