"""The tap contract (DESIGN.md 3.1) for teachers and their converted students: the same
ordered tap names and shapes, ``forward_taps(upto=k)`` returns taps 0..k and computes
nothing after tap k, and no tapped tensor aliases another."""
from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

from archnet.convert.mobilenet import convert_mobilenet
from archnet.convert.resnet import convert_resnet
from archnet.models.mobilenet import mobilenet_v1, mobilenet_v2
from archnet.models.resnet import BasicBlock, Bottleneck, ResNet, tiny_resnet
from archnet.models.student import ArchBlock
from archnet.models.taps import TappedChain, tap_shapes
from archnet.ops.quant import quant_config

SHAPE = (3, 32, 32)
W2A4 = quant_config({"name": "w2a4", "weight": {"method": "dorefa", "bits": 2},
                     "act": {"method": "fixed", "bits": 4}})

TEACHERS: dict[str, Callable[[], TappedChain]] = {
    "tiny_resnet": lambda: tiny_resnet(10),
    "resnet_basic_2x2": lambda: ResNet("basic", (2, 2), (8, 16), 10, stem="small"),
    "resnet_bottleneck": lambda: ResNet("bottleneck", (1, 2), (8, 16), 10, stem="small"),
    "resnet_imagenet_stem": lambda: ResNet("basic", (1, 1), (8, 16), 10, stem="imagenet"),
    # trimmed settings: expand / no-expand, residual / strided blocks, a few taps each
    "mobilenet_v2": lambda: mobilenet_v2(10, width_mult=0.5, stem_stride=1,
                                         setting=[(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 1, 2)]),
    "mobilenet_v1": lambda: mobilenet_v1(10, width_mult=0.5, stem_stride=1,
                                         setting=[(64, 1), (128, 2), (128, 1)]),
}


def convert(teacher: TappedChain, quant=None) -> TappedChain:
    if isinstance(teacher, ResNet):
        return convert_resnet(teacher, quant, SHAPE)
    return convert_mobilenet(teacher, quant, SHAPE)


def models(name: str) -> list[tuple[str, TappedChain]]:
    torch.manual_seed(0)
    teacher = TEACHERS[name]().eval()
    return [("teacher", teacher), ("student", convert(teacher).eval())]


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    return torch.randn(2, *SHAPE, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name", TEACHERS)
def test_teacher_and_student_share_tap_names_and_shapes(name):
    teacher, student = (m for _, m in models(name))
    names = teacher.tap_names
    assert names[0] == "stem" and names[-1] == "logits" and len(set(names)) == len(names)
    assert student.tap_names == names
    assert tap_shapes(student, SHAPE) == tap_shapes(teacher, SHAPE)
    quantized = convert(teacher, W2A4)
    assert quantized.tap_names == names


@pytest.mark.parametrize("name", TEACHERS)
@torch.no_grad()
def test_forward_taps_prefixes_agree_with_the_full_forward(name, x):
    for _, model in models(name):
        names = model.tap_names
        full = model.forward_taps(x)
        assert list(full) == names
        assert torch.equal(full["logits"], model(x))
        for k in range(len(names)):
            part = model.forward_taps(x, k)
            assert list(part) == names[:k + 1]  # exactly k + 1 taps, in order
            for tap, value in part.items():
                assert torch.equal(value, full[tap]), (k, tap)
        with pytest.raises(IndexError):
            model.forward_taps(x, len(names))


def _fired(model: nn.Module, x: torch.Tensor, upto: int) -> set[str]:
    """Names of the modules that ran during ``forward_taps(x, upto)``."""
    seen: set[str] = set()
    handles = [m.register_forward_hook(lambda mod, inp, out, n=n: seen.add(n))
               for n, m in model.named_modules() if n]
    try:
        with torch.no_grad():
            model.forward_taps(x, upto)
    finally:
        for h in handles:
            h.remove()
    return seen


def _block_of(model: TappedChain) -> dict[str, str | None]:
    """Tap name -> module path of the block that computes it (None: stem or head)."""
    paths = {id(m): n for n, m in model.named_modules()}
    out: dict[str, str | None] = {"stem": None, "logits": None}
    for block_name, block in model.blocks():
        for s in block.tap_suffixes:
            out[f"{block_name}.{s}"] = paths[id(block)]
    return out


def _under(module_name: str, prefix: str) -> bool:
    return module_name == prefix or module_name.startswith(prefix + ".")


@pytest.mark.parametrize("name", TEACHERS)
def test_forward_taps_stops_after_tap_k(name, x):
    for role, model in models(name):
        names = model.tap_names
        owner = _block_of(model)
        blocks = list(dict.fromkeys(v for v in owner.values() if v))  # module paths, in order
        assert len(blocks) == len(model.block_names)
        last = len(names) - 1
        head = _fired(model, x, last) - _fired(model, x, last - 1)
        assert head, "the head runs only for the logits tap"
        fired = [_fired(model, x, k) for k in range(len(names))]
        for k, tap in enumerate(names[:-1]):
            assert not (fired[k] & head), (role, tap, fired[k] & head)
            block = owner[tap]
            later = blocks[blocks.index(block) + 1:] if block else blocks
            ran_later = {m for m in fired[k] for b in later if _under(m, b)}
            assert not ran_later, (role, tap, sorted(ran_later))
            assert fired[k] <= fired[k + 1]
        # an inner tap stops inside its block: no later main-path step runs
        for k, tap in enumerate(names[:-1]):
            block_name = owner[tap]
            if block_name is None:
                continue
            block = model.get_submodule(block_name)
            steps = _main_path(block)
            if steps is None:
                continue
            index = block.tap_suffixes.index(tap.rsplit(".", 1)[1])
            if index == len(block.tap_suffixes) - 1:
                continue
            step = block.tap_points[index] if isinstance(block, ArchBlock) else index
            inside = {m[len(block_name) + 1:] for m in fired[k] if _under(m, block_name)}
            for later in steps[step + 1:]:
                ran = {m for m in inside for p in later if _under(m, p)}
                assert not ran, (role, tap, sorted(ran))


def _main_path(block: nn.Module) -> list[list[str]] | None:
    """A block's internal steps, in order, as lists of sub-module names (None: unknown)."""
    if isinstance(block, ArchBlock):
        steps = [[f"main.{j}"] for j in range(len(block.main))]
        return steps + ([["merge", "shortcut"]] if block.merge is not None else [])
    if isinstance(block, BasicBlock):  # the teacher's pre-add tap may compute the shortcut
        return [["conv1", "bn1"], ["conv2", "bn2"]]
    if isinstance(block, Bottleneck):
        return [["conv1", "bn1"], ["conv2", "bn2"], ["conv3", "bn3"]]
    return None


@pytest.mark.parametrize("name", TEACHERS)
@pytest.mark.parametrize("train", [False, True])
def test_no_tap_aliases_another(name, train, x):
    for role, model in models(name) + [("quantized student", convert(models(name)[0][1], W2A4))]:
        model.train(train)
        with torch.no_grad():
            taps = model.forward_taps(x)
        ptrs = {}
        for tap, t in taps.items():
            ptr = t.untyped_storage().data_ptr()
            assert ptr not in ptrs, f"{role}: {tap} shares storage with {ptrs.get(ptr)}"
            ptrs[ptr] = tap
        before = {k: v.clone() for k, v in taps.items()}
        for tap in taps:
            taps[tap].add_(1.0)
            for other, value in taps.items():
                expected = before[other] + (1.0 if other == tap else 0.0)
                assert torch.equal(value, expected), f"{role}: changing {tap} changed {other}"
            taps[tap].copy_(before[tap])


@pytest.mark.parametrize("make", [lambda a: tiny_resnet(10, alias_preadd=a),
                                  lambda a: ResNet("bottleneck", (1, 1), (8, 16), 10,
                                                   stem="small", alias_preadd=a)])
@torch.no_grad()
def test_alias_preadd_makes_the_preadd_tap_the_block_output(make, x):
    torch.manual_seed(0)
    faithful = make(False).eval()
    torch.manual_seed(0)
    buggy = make(True).eval()
    good, bad = faithful.forward_taps(x), buggy.forward_taps(x)
    preadd = [n for n in faithful.tap_names
              if n.endswith(".conv2" if "layer1.0.conv3" not in faithful.tap_names else ".conv3")]
    assert preadd
    for tap in preadd:
        out = tap.rsplit(".", 1)[0] + ".out"
        assert torch.equal(bad[tap], bad[out])
        assert not torch.equal(good[tap], good[out])
        assert good[tap].min() < 0  # the real pre-add tensor: BN output, before the ReLU
        assert torch.equal(good[out], bad[out])  # the bug only changes what is tapped
    assert torch.equal(faithful(x), buggy(x))
