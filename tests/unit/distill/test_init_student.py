"""``distill.init_student``: a student starts from another run's student of the same topology:
its quantized weights and BNs copied, learned quantizer steps initialised anew at the new bits
(from the weights, or from each layer's outputs on one batch)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from archnet.convert.resnet import convert_resnet
from archnet.distill.init_student import copy_student, initialize_steps, quantizer_state_keys, source_run
from archnet.errors import ConfigError
from archnet.ops.layers import QConv2d, QLinear
from archnet.ops.lsq import LsqWeight, mse_step
from archnet.ops.quant import QuantConfig, TensorQuantConfig
from archnet.ops.step_fit import output_step

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "convert"))
from resnet_teachers import SHAPE, teacher_of


def quant(weight_bits: int, method: str = "lsq") -> QuantConfig:
    return QuantConfig(weight=TensorQuantConfig(method, weight_bits, per_channel=True, step_init="mse"),
                       act=TensorQuantConfig("fixed", 4, act_multiplier=0.4))


def student_of(bits: int, method: str = "lsq", **rules: object) -> torch.nn.Module:
    return convert_resnet(teacher_of("basic"), quant(bits, method), SHAPE, init_merge_as_add=True, **rules)


def trained_source(bits: int = 4) -> torch.nn.Module:
    """A converted student whose weights moved away from the conversion (a stand-in for
    distillation) and whose steps are set, in eval mode."""
    source = student_of(bits)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in source.parameters():
            p.add_(0.05 * torch.randn_like(p))
    source.train()(torch.randn(8, *SHAPE))  # LSQ steps take their first values
    return source.eval()


def quantized_layers(model: torch.nn.Module) -> dict[str, torch.nn.Module]:
    return {n: m for n, m in model.named_modules() if isinstance(m, (QConv2d, QLinear))}


def test_quantized_weights_and_bns_are_copied_steps_start_anew(tmp_path: Path) -> None:
    source = trained_source(bits=4)
    student = student_of(2)
    steps = quantizer_state_keys(student)
    assert steps and all(k.endswith(("alpha", "init_state")) for k in steps)
    copied = copy_student(student, source)
    own, src = student.state_dict(), source.state_dict()
    assert copied == len(own) - len(steps)
    layers, src_layers = quantized_layers(student), quantized_layers(source)
    with torch.no_grad():
        for name, layer in layers.items():  # the source's q(W), not its latent W
            assert torch.equal(layer.weight, src_layers[name].quantized_weight()), name
            assert not torch.equal(layer.weight, src_layers[name].weight), name
    for name, tensor in own.items():
        if name not in steps and not any(name == f"{n}.weight" for n in layers):
            assert torch.equal(tensor, src[name]), name  # BN, biases, offsets
    stats = {k: v.clone() for k, v in own.items() if "running" in k}
    assert initialize_steps(student.train(), torch.randn(8, *SHAPE)) == len(steps) // 2
    assert student.training  # mode restored
    for name, tensor in stats.items():  # BN statistics untouched
        assert torch.equal(student.state_dict()[name], tensor), name
    bits = []
    for name, layer in layers.items():
        q = layer.weight_quantizer
        if isinstance(q, LsqWeight):
            w = layer.weight.detach()
            bits.append(q.bits)
            assert torch.equal(q.alpha.detach(), mse_step(w, tuple(range(1, w.dim())), True, q.qn, q.qp)), name
    assert set(bits) == {2, 8} and bits.count(8) == 1  # 2 bits, not the source's 4; the head 8


def test_same_bits_copy_computes_the_source() -> None:
    """At the source's own bits its quantized weights lie on its grid; a step fitted to a
    layer's outputs finds a step that reproduces them, so the copy computes the source."""
    source = trained_source(bits=4)
    student = student_of(4)
    copy_student(student, source)
    x = torch.randn(16, *SHAPE)
    initialize_steps(student, x, fit="outputs")
    with torch.no_grad():
        got, ref = student.eval()(x), source(x)
    assert (got - ref).abs().max() < 1e-3 * ref.abs().max()


def test_output_step_has_the_least_output_error() -> None:
    """Same candidate steps as the weight-error fit: the output fit's output error is never
    larger, per channel, and strictly smaller somewhere on smooth (correlated) inputs."""
    torch.manual_seed(0)
    layer = QConv2d(8, 6, 3, 1, 1, bias=False, weight_quantizer=LsqWeight(2, per_channel=True))
    with torch.no_grad():
        layer.weight.normal_(0, 0.05)
        layer.weight[:, :, 1, 1] += torch.eye(6, 8)  # identity taps among small ones
    x = torch.nn.functional.interpolate(torch.randn(16, 8, 4, 4), size=16, mode="bilinear")
    q, w = layer.weight_quantizer, layer.weight.detach()

    def output_error(step: torch.Tensor) -> torch.Tensor:
        wq = torch.round(torch.clamp(w / step, q.qn, q.qp)) * step
        return (layer._conv_forward(x, wq, None) - layer._conv_forward(x, w, None)).pow(2).sum((0, 2, 3))

    by_outputs = output_step(layer, x, candidates=100)
    by_weights = mse_step(w, (1, 2, 3), True, q.qn, q.qp, candidates=100)
    assert by_outputs.shape == (6, 1, 1, 1)
    e_out, e_w = output_error(by_outputs), output_error(by_weights)
    assert bool((e_out <= e_w + 1e-6).all()) and bool((e_out < e_w).any())


def test_source_steps_are_dropped_where_this_student_has_none() -> None:
    """An LSQ source into a DoReFa student: the source's steps are not 'unexpected'."""
    source = trained_source(bits=4)
    student = student_of(2, "dorefa")
    assert not quantizer_state_keys(student)
    copy_student(student, source)
    with torch.no_grad():
        assert torch.equal(student.stem[0].conv.weight, source.stem[0].conv.quantized_weight())


def test_another_topology_is_a_config_error_naming_the_tensor() -> None:
    folded = convert_resnet(teacher_of("basic"), quant(2), SHAPE, fold_add=True)
    with pytest.raises(ConfigError, match=r"distill\.init_student.*a checkpoint of this model \((missing|unexpected)"):
        copy_student(folded, trained_source())


def test_source_must_be_a_finished_run(tmp_path: Path) -> None:
    (tmp_path / "student.pt").write_bytes(b"")
    for bad in (tmp_path, tmp_path / "student.pt", tmp_path / "nothing"):  # no .hydra/config.yaml
        with pytest.raises(ConfigError, match=r"distill\.init_student.*finished archnet-distill run directory"):
            source_run(bad)
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "config.yaml").write_text("{}")
    assert source_run(tmp_path / "student.pt") == tmp_path == source_run(tmp_path)


def test_unknown_step_fit_is_refused() -> None:
    with pytest.raises(ConfigError, match="distill.init_student_steps"):
        initialize_steps(student_of(2), torch.randn(2, *SHAPE), fit="median")
