"""Quant config validation and the quantizer factory."""
from __future__ import annotations

import pytest
from torch import nn

from archnet.errors import ConfigError
from archnet.ops.quant import (
    QuantConfig,
    TensorQuantConfig,
    make_activation,
    make_weight_quantizer,
    quant_config,
)
from archnet.ops.quantizers import DorefaGaussianWeight, DorefaWeight, FixedRangeAct, LsqAct, LsqWeight


@pytest.mark.parametrize("bits", [0, 1, 9, 16, 33, 2.5])
def test_bad_bits_raise_config_error(bits) -> None:
    with pytest.raises(ConfigError, match="quant.weight.bits"):
        QuantConfig(weight=TensorQuantConfig("dorefa", bits))
    with pytest.raises(ConfigError, match="quant.act.bits"):
        QuantConfig(act=TensorQuantConfig("fixed", bits))


def test_unknown_methods_raise_config_error() -> None:
    with pytest.raises(ConfigError, match="quant.weight.method='fixed'"):
        QuantConfig(weight=TensorQuantConfig("fixed", 4))
    with pytest.raises(ConfigError, match="quant.act.method='dorefa'"):
        make_activation(TensorQuantConfig("dorefa", 4))
    with pytest.raises(ConfigError, match="quant.head_weight_bits"):
        QuantConfig(head_weight_bits=1)
    with pytest.raises(ConfigError, match="bits"):
        DorefaWeight(1)


def test_factory_classes_and_float() -> None:
    assert isinstance(make_weight_quantizer(TensorQuantConfig("dorefa", 2)), DorefaWeight)
    assert isinstance(make_weight_quantizer(TensorQuantConfig("dorefa", 8), role="head"), DorefaGaussianWeight)
    assert isinstance(make_weight_quantizer(TensorQuantConfig("lsq", 4)), LsqWeight)
    assert isinstance(make_activation(TensorQuantConfig("fixed", 4)), FixedRangeAct)
    assert isinstance(make_activation(TensorQuantConfig("lsq", 4)), LsqAct)
    assert isinstance(make_weight_quantizer(TensorQuantConfig("dorefa", 32)), nn.Identity)
    assert isinstance(make_activation(TensorQuantConfig("none", 32)), nn.ReLU)


def test_quant_config_from_dict() -> None:
    cfg = quant_config({"name": "w2a4", "weight": {"method": "dorefa", "bits": 2},
                        "act": {"method": "fixed", "bits": 4}, "logit_clip": 16.0})
    assert cfg.weight.bits == 2 and not cfg.is_float
    with pytest.raises(ConfigError):
        quant_config({"weight": {"method": "dorefa", "bits": 3.0}})
