"""Integer grids: what a quantizer hands to export and integer simulation.

A quantized tensor is ``values = (codes - zero_point) * scale`` with integer ``codes``.
Every quantizer in archnet has ``zero_point = 0``:

* DoReFa weights have no zero level: level ``k in {0..M}`` is ``(k/M - 1/2) * s``. It is
  written with the odd integers ``c = 2k - M in {-M, -M+2, ..., M}`` and ``scale = s / (2M)``,
  so ``values = c * scale`` exactly (2-bit: ``c in {-3, -1, 1, 3}``). The codes need
  ``b + 1`` signed bits of storage (int8 up to 7 bits, int16 at 8 bits) but take only
  ``2^b`` distinct values.
* LSQ and the fixed-range activation have a zero level and plain codes.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from archnet.errors import ConfigError

VALID_BITS = range(2, 9)


def check_bits(bits: int, key: str = "bits") -> int:
    """Return ``bits`` if it is in 2..8, else raise :class:`ConfigError`."""
    if int(bits) != bits or int(bits) not in VALID_BITS:
        raise ConfigError(key, bits, "an integer in 2..8 (32 = float, set in the quant config)")
    return int(bits)


@dataclass
class IntGrid:
    """``values = (codes - zero_point) * scale``; ``codes`` in ``qmin..qmax`` (step ``step``).

    ``scale`` broadcasts against ``codes``: a 0-d tensor (per tensor) or one value per
    output channel / row with trailing singleton dims.
    """

    codes: Tensor
    scale: Tensor
    bits: int
    qmin: int
    qmax: int
    step: int = 1
    zero_point: int = 0

    def dequantize(self) -> Tensor:
        return (self.codes.to(self.scale.dtype) - self.zero_point) * self.scale


@dataclass(frozen=True)
class ActGrid:
    """Static activation quantizer: ``code = clip(round(x / in_scale), qmin, qmax)`` and
    output ``code * out_scale``. ``rounding`` is ``half_up`` (DoReFa) or ``half_even`` (LSQ).

    The fixed-range activation has ``in_scale = 1/(m*M)`` (input step in BN units) but
    ``out_scale = 1/M`` (output in [0, 1]); LSQ has ``in_scale = out_scale = alpha``.
    """

    in_scale: float
    out_scale: float
    qmin: int
    qmax: int
    bits: int
    rounding: str = "half_up"
