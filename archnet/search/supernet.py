"""The weight-sharing supernet of Arch-Net blocks and ``export(path) -> ArchNetStudent``.

``stem -> block_1 .. block_B -> head``; stem and head are fixed, block ``b`` runs the choice
``path[b]`` of :class:`~archnet.search.space.BlockSpace` ``b``:

    h_1 = u_1(x)  [stride, then log2(s) - 1 max-pools],  h_i = u_i(h_{i-1}) for i <= n,
    out = merge(concat[h_n, pool^k(x)])   (shortcut on)   or   merge(h_n)   (off)

with slimmable units (:class:`~archnet.search.slim.SlimUnit`): ``u_1`` slices
``W_1[:m, :C_in]``, ``u_i`` slices ``W_i[:m, :m]`` (elastic depth: the first ``n`` units),
the merge slices ``W_merge[:C_b, [0..m) + [M, M + C_in)]`` of its ``[main M | shortcut
C_in]`` input columns (``M`` = widest ``m``). Main units switch BN and quantizers per width,
the merge per choice. Taps are the teacher's: ``stem``, each block's suffixes (inner
suffix ``j`` is unit ``min(j, n-1)``'s output, ``out`` the merge output) and ``logits``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from archnet.models.student import ArchBlock, ArchNetStudent, Head
from archnet.models.taps import LOGITS
from archnet.ops.quant import QuantConfig, activation_scale, head_weight_config, make_weight_quantizer
from archnet.ops.units import ConcatMerge, ConvUnit
from archnet.search.slim import SlimUnit, float_config
from archnet.search.space import BlockSpace, Choice, Path, SearchSpace, Signature

STEM_KEY = "full"


class SuperBlock(nn.Module):
    """All choices of one block over shared slimmable units (module docstring)."""

    def __init__(self, space: BlockSpace, quant: QuantConfig) -> None:
        super().__init__()
        self.space = space
        sig, big = space.sig, space.max_m
        widths = {f"c{m}": m for m in space.widths}
        first = SlimUnit(sig.cin, big, 2 if sig.stride > 1 else 1, quant, widths)
        rest = [SlimUnit(big, big, 1, quant, widths) for _ in range(space.max_units - 1)]
        self.units = nn.ModuleList([first, *rest])
        self.merge = SlimUnit(big + sig.cin, sig.cout, 1, quant, {c.key: sig.cout for c in space.choices})

    @property
    def sig(self) -> Signature:
        return self.space.sig

    def _pool(self, x: Tensor, times: int) -> Tensor:
        for _ in range(times):
            x = F.max_pool2d(x, 2, 2, ceil_mode=self.sig.ceil_pool)
        return x

    def merge_index(self, c: Choice, device: torch.device) -> slice | Tensor:
        if not c.shortcut:
            return slice(0, c.m)
        big = self.space.max_m
        return torch.cat([torch.arange(c.m, device=device), torch.arange(big, big + self.sig.cin, device=device)])

    def forward_internal(self, x: Tensor, c: Choice) -> tuple[list[Tensor], Tensor]:
        """``([h_1..h_n], out)`` for choice ``c``."""
        hs = []
        h = x
        for i in range(c.n_units):
            h = self.units[i](h, c.width_key, None if i == 0 else slice(0, c.m))
            if i == 0:
                h = self._pool(h, self.sig.log_stride - 1)
            hs.append(h)
        inp = torch.cat([h, self._pool(x, self.sig.log_stride)], 1) if c.shortcut else h
        return hs, self.merge(inp, c.key, self.merge_index(c, x.device))

    def forward_taps(self, x: Tensor, c: Choice) -> list[Tensor]:
        hs, out = self.forward_internal(x, c)
        inner = len(self.sig.tap_suffixes) - 1
        return [hs[min(j, len(hs) - 1)] for j in range(inner)] + [out]

    def _pools(self, times: int) -> list[nn.Module]:
        return [nn.MaxPool2d(2, 2, ceil_mode=self.sig.ceil_pool) for _ in range(times)]

    def export(self, c: Choice) -> ArchBlock:
        main: list[nn.Module] = []
        unit_points = []
        for i in range(c.n_units):
            main.append(self.units[i].export(c.width_key, None if i == 0 else slice(0, c.m)))
            if i == 0:
                main += self._pools(self.sig.log_stride - 1)
            unit_points.append(len(main) - 1)
        merge_unit = self.merge.export(c.key, self.merge_index(c, self.merge.weight.device))
        inner = [unit_points[min(j, c.n_units - 1)] for j in range(len(self.sig.tap_suffixes) - 1)]
        if not c.shortcut:
            main.append(merge_unit)
            return ArchBlock(main, self.sig.tap_suffixes, [*inner, len(main) - 1])
        k = self.sig.log_stride
        shortcut = nn.Sequential(*self._pools(k)) if k else None
        quant = self.merge.quant if self.merge.quantize else float_config(self.merge.quant)
        merge = ConcatMerge(c.m, self.sig.cin, self.sig.cout, quant, max_in_channels=c.m + self.sig.cin)
        merge.units[0] = merge_unit
        return ArchBlock(main, self.sig.tap_suffixes, [*inner, len(main)], shortcut=shortcut, merge=merge)


class SuperHead(nn.Module):
    """``clip(FC(pool(h)), -c, c)`` with a switchable weight quantizer (see :class:`Head`)."""

    def __init__(self, kind: str, channels: int, spatial: tuple[int, int], num_classes: int,
                 quant: QuantConfig) -> None:
        super().__init__()
        ref = Head(kind, channels, spatial, num_classes)  # validates ``kind``; default init
        self.kind, self.channels, self.spatial, self.num_classes = kind, channels, tuple(spatial), num_classes
        self.weight = nn.Parameter(ref.fc.weight.detach().clone())
        self.bias = nn.Parameter(ref.fc.bias.detach().clone())
        self.quant = quant
        self.wq = make_weight_quantizer(head_weight_config(quant), role="head")
        self.quantize = False

    def forward(self, h: Tensor) -> Tensor:
        h = h.mean((2, 3)) if self.kind == "gap" else torch.flatten(h, 1)
        z = F.linear(h, self.wq(self.weight) if self.quantize else self.weight, self.bias)
        clip = self.quant.logit_clip
        return z if clip is None else z.clamp(-clip, clip)

    @torch.no_grad()
    def export(self) -> Head:
        wq = make_weight_quantizer(head_weight_config(self.quant), role="head") if self.quantize else None
        head = Head(self.kind, self.channels, self.spatial, self.num_classes, wq, self.quant.logit_clip)
        head.fc.weight.copy_(self.weight)
        head.fc.bias.copy_(self.bias)
        if wq is not None:
            wq.load_state_dict(self.wq.state_dict())
        return head.train(self.training)

    @torch.no_grad()
    def load_from_gap_fc(self, fc: nn.Linear) -> None:
        ref = Head(self.kind, self.channels, self.spatial, self.num_classes)
        ref.load_from_gap_fc(fc)
        self.weight.copy_(ref.fc.weight)
        self.bias.copy_(ref.fc.bias)


class SuperNet(nn.Module):
    """Fixed stem, one :class:`SuperBlock` per teacher block, fixed head; ``forward(x, path)``."""

    def __init__(self, stem: nn.Sequential, space: SearchSpace, head: SuperHead, quant: QuantConfig) -> None:
        super().__init__()
        self.space, self.quant = space, quant
        self.stem = nn.ModuleList()
        for i, m in enumerate(stem):
            if isinstance(m, ConvUnit):
                cout, cin = m.conv.weight.shape[:2]
                first = i == 0
                unit = SlimUnit(cin, cout, m.conv.stride[0], quant, {STEM_KEY: cout},
                                quantize_weight=quant.quantize_first_conv or not first)
                unit.load_unit(m, STEM_KEY)
                self.stem.append(unit)
            elif isinstance(m, nn.MaxPool2d):
                self.stem.append(nn.MaxPool2d(m.kernel_size, m.stride, ceil_mode=m.ceil_mode))
            else:
                raise TypeError(f"stem module {type(m).__name__}: only ConvUnit and MaxPool2d are supported")
        self.blocks = nn.ModuleList(SuperBlock(b, quant) for b in space.blocks)
        self.head = head

    @property
    def tap_names(self) -> list[str]:
        names = ["stem"]
        for b in self.space.blocks:
            names += [f"{b.sig.name}.{s}" for s in b.sig.tap_suffixes]
        return names + [LOGITS]

    def set_quantize(self, on: bool) -> None:
        """Switch every unit and the head between float and fake-quantized."""
        for m in self.modules():
            if isinstance(m, (SlimUnit, SuperHead)):
                m.quantize = bool(on)

    @torch.no_grad()
    def start_quantization(self) -> None:
        """Turn fake quantization on and fold the activation scale ``a`` into the head,
        ``W <- W / a``: the last unit's outputs become ``a`` times their float values
        (:attr:`tap_scale`; 0.1 for fixed-range activations), so without the fold the logits
        would shrink ``1/a``-fold and the KD terms would see near-uniform student outputs.
        The head has no BN to absorb the scale; every other unit has one. No-op when on."""
        if self.quantize:
            return
        self.set_quantize(True)
        self.head.weight.div_(self.tap_scale)

    @property
    def quantize(self) -> bool:
        return self.head.quantize

    @property
    def tap_scale(self) -> float:
        """``a`` in ``tap ~= a * (BN output)`` for every unit's tap: the activation scale of
        ``quant.act`` while fake-quantized, 1 while float."""
        return activation_scale(self.quant.act) if self.quantize else 1.0

    def forward_stem(self, x: Tensor) -> Tensor:
        for m in self.stem:
            x = m(x, STEM_KEY) if isinstance(m, SlimUnit) else m(x)
        return x

    def forward_taps(self, x: Tensor, path: Path) -> dict[str, Tensor]:
        """Every tap of path ``path`` (names as :attr:`tap_names`)."""
        choices = self.space.choices(path)
        h = self.forward_stem(x)
        out = {"stem": h}
        for block, c in zip(self.blocks, choices):
            taps = block.forward_taps(h, c)
            out.update({f"{block.sig.name}.{s}": t for s, t in zip(block.sig.tap_suffixes, taps)})
            h = taps[-1]
        out[LOGITS] = self.head(h)
        return out

    def forward(self, x: Tensor, path: Path) -> Tensor:
        choices = self.space.choices(path)
        h = self.forward_stem(x)
        for block, c in zip(self.blocks, choices):
            h = block.forward_internal(h, c)[1]
        return self.head(h)

    @torch.no_grad()
    def export(self, path: Path) -> ArchNetStudent:
        """The standalone student of ``path``: same function (eval mode), Arch-Net units only."""
        stem = nn.Sequential(*[m.export(STEM_KEY) if isinstance(m, SlimUnit)
                               else nn.MaxPool2d(m.kernel_size, m.stride, ceil_mode=m.ceil_mode)
                               for m in self.stem])
        blocks = [(b.sig.name, b.export(c)) for b, c in zip(self.blocks, self.space.choices(path))]
        student = ArchNetStudent(stem, blocks, self.head.export())
        return student.to(self.head.weight.device).train(self.training)
