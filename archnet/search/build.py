"""Build a :class:`~archnet.search.supernet.SuperNet` from a tapped teacher.

Signatures come from the teacher's ``stem`` and ``<block>.out`` tap shapes. The stem is
fixed (not searched):

* ``chain``: one 3x3 unit, then 2x2 max-pools for the stem's stride (the chain converter's
  stem rule); a ResNet teacher with the ``small`` stem (3x3 conv + 2x2 max-pool) gives its
  conv and BN to that unit;
* ``resnet``: the ResNet converter's stem (``imagenet``: three 3x3 units + max-pool).

The head is :class:`~archnet.models.student.Head` (``flatten`` or ``gap``), initialised
from the teacher's ``fc`` when it is a GAP+FC classifier.
"""
from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from archnet.errors import ConfigError
from archnet.models.taps import LOGITS, tap_shapes
from archnet.ops.quant import QuantConfig
from archnet.search.space import SearchSpace, Signature, teacher_signatures
from archnet.search.supernet import SuperHead, SuperNet

STEMS = ("chain", "resnet")


def reference_stem(teacher: nn.Module, sig: Signature, kind: str = "chain",
                   init_from_teacher: bool = True) -> nn.Sequential:
    """The float stem (``ConvUnit`` and ``MaxPool2d`` modules) the supernet copies."""
    from archnet.convert.resnet import convert_stem
    from archnet.models.resnet import ResNet

    if kind not in STEMS:
        raise ConfigError("search.space.stem", kind, STEMS)
    is_resnet = isinstance(teacher, ResNet)
    if kind == "resnet" or (is_resnet and teacher.stem_kind == "small"):
        if not is_resnet:
            raise ConfigError("search.space.stem", kind, "chain (the teacher is not an archnet ResNet)")
        return convert_stem(teacher, QuantConfig(), init_from_teacher)
    from archnet.convert.chain import STEM_TOPOLOGY, BlockSignature, build_units

    bsig = BlockSignature(sig.name, sig.cin, sig.cout, sig.in_size, sig.out_size, sig.stride)
    return nn.Sequential(*build_units(bsig, STEM_TOPOLOGY, QuantConfig(), first=True))


def build_supernet(teacher: nn.Module, quant: QuantConfig, input_shape: tuple[int, int, int],
                   n_units: Sequence[int] = (1, 2, 3), widths: Sequence[float] = (0.5, 0.75, 1.0),
                   shortcut: Sequence[bool] = (True, False), divisor: int = 8,
                   max_in_channels: int = 512, stem: str = "chain", head: str = "flatten",
                   init_from_teacher: bool = True,
                   options: Sequence[Sequence[tuple[int, float, bool]]] | None = None) -> SuperNet:
    """The supernet over ``n_units x widths x shortcut`` per block (or explicit per-block
    ``options``) for ``teacher`` on inputs of ``input_shape``; taps are checked against the
    teacher's (a mismatch is a :class:`ConfigError`)."""
    input_shape = tuple(input_shape)  # type: ignore[assignment]
    stem_sig, sigs = teacher_signatures(teacher, input_shape)
    if options is None:
        space = SearchSpace.build(sigs, n_units, widths, shortcut, divisor, max_in_channels)
    else:
        space = SearchSpace.from_options(sigs, options, divisor, max_in_channels)
    shapes = tap_shapes(teacher, input_shape)
    last = sigs[-1]
    super_head = SuperHead(head, last.cout, last.out_size, shapes[LOGITS][0], quant)
    fc = getattr(teacher, "fc", None)
    if init_from_teacher and isinstance(fc, nn.Linear) and fc.in_features == last.cout \
            and fc.out_features == super_head.num_classes:
        super_head.load_from_gap_fc(fc)
    net = SuperNet(reference_stem(teacher, stem_sig, stem, init_from_teacher), space, super_head, quant)
    net.to(next(teacher.parameters()).device)
    got = tap_shapes(net.export(space.largest()), input_shape)
    bad = [f"{k}: student {got.get(k)} vs teacher {v}" for k, v in shapes.items()
           if k in net.tap_names and got.get(k) != v and (k == "stem" or k == LOGITS or k.endswith(".out"))]
    if bad:
        raise ConfigError("search.space", stem, "student taps do not match the teacher's: " + "; ".join(bad))
    return net
