"""Profile verifier: the exported student passes; float teachers and off-profile graphs fail
with every violation named; the CLI's exit codes."""
from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from deploy_students import build_student, images, quant
from torch import nn

from archnet.cli.verify import main as verify_main
from archnet.deploy.export import export_student
from archnet.deploy.profile import load_profile
from archnet.deploy.verify import verify_onnx
from archnet.errors import ConfigError
from archnet.models.resnet import tiny_resnet


def _export_float(model: nn.Module, path: Path, shape: tuple[int, ...] = (2, 3, 32, 32)) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (torch.randn(shape),), str(path), dynamo=False, opset_version=17)
    return path


@pytest.fixture(scope="module")
def student_w2a4(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("w2a4")
    export_student(build_student(quant()), out, images(8), "archnet", quant())
    return out / "student.onnx"


def _whys(result) -> list[str]:
    return [f"{v.op_type}: {v.why}" for v in result.violations]


def test_exported_student_passes(student_w2a4: Path) -> None:
    result = verify_onnx(student_w2a4, "archnet")
    assert result.ok, _whys(result)
    rows = {r.op_type: r for r in result.rows}
    assert rows["Conv"].count == 12 and rows["Conv"].allowed
    weights = [t for t in result.tensors if t.kind == "weight"]
    assert {t.bits for t in weights} == {2, 8} and {t.source for t in weights} == {"quant.json"}
    acts = [t for t in result.tensors if t.kind == "activation"]
    assert {t.bits for t in acts} == {4} and {t.source for t in acts} == {"clip"}


def test_bits_without_quant_json_come_from_the_graph(student_w2a4: Path) -> None:
    import onnx

    result = verify_onnx(onnx.load(str(student_w2a4)), "archnet")  # no quant.json beside it
    assert result.ok
    assert {t.source for t in result.tensors if t.kind == "weight"} == {"levels"}


def test_float_teacher_is_rejected_naming_each_violation(tmp_path: Path) -> None:
    result = verify_onnx(_export_float(tiny_resnet(), tmp_path / "teacher.onnx"), "archnet")
    assert not result.ok
    whys = _whys(result)
    assert "Add: op type not in profile" in whys and whys.count("Add: op type not in profile") == 3
    assert "Conv: kernel 1x1 not 3x3" in whys  # the projection shortcuts
    assert "GlobalAveragePool: global pooling not allowed" in whys
    assert "Conv: float weights" in whys
    assert {r.op_type: r.allowed for r in result.rows}["Add"] is False
    gap = verify_onnx(tmp_path / "teacher.onnx", "archnet_gap")
    assert "GlobalAveragePool: global pooling not allowed" not in _whys(gap)


def test_conv_with_513_input_channels_is_rejected(tmp_path: Path) -> None:
    conv = _export_float(nn.Conv2d(513, 8, 3, padding=1), tmp_path / "wide.onnx", (1, 513, 4, 4))
    assert "Conv: 513 input channels > 512" in _whys(verify_onnx(conv, "archnet"))
    ok = _export_float(nn.Conv2d(512, 8, 3, padding=1), tmp_path / "ok.onnx", (1, 512, 4, 4))
    assert not any("input channels" in w for w in _whys(verify_onnx(ok, "archnet")))


def test_8bit_weights_rejected_when_profile_allows_2_and_4(tmp_path: Path) -> None:
    q = quant("dorefa", 8, "fixed", 8)
    out = export_student(build_student(q), tmp_path, images(2), "archnet", q)
    assert out["verdict"] == "pass", out["violations"]
    path = tmp_path / "student.onnx"
    result = verify_onnx(path, "archnet", overrides=["bits.weights=[2,4]"])  # bits from quant.json
    assert "Conv: 8-bit weights not in [2, 4]" in _whys(result)
    assert "Gemm: 8-bit weights not in [2, 4]" in _whys(result)
    import onnx

    bare = onnx.load(str(path))  # no quant.json: bits from the number of integer levels
    result = verify_onnx(bare, "archnet", overrides=["bits.weights=[2,4]"])
    assert any(w.startswith("Conv: weights need") and "more than [2, 4] allow" in w for w in _whys(result))
    assert verify_onnx(bare, "archnet").ok
    narrow = load_profile("archnet", ["bits.activations=[2,4]"])
    assert "QuantizeLinear: 8-bit activations not in [2, 4]" in _whys(verify_onnx(bare, narrow))


def test_depthwise_and_grouped_convs(tmp_path: Path) -> None:
    dw = _export_float(nn.Conv2d(8, 8, 3, padding=1, groups=8), tmp_path / "dw.onnx", (1, 8, 4, 4))
    assert "Conv: depthwise conv not allowed" in _whys(verify_onnx(dw, "archnet"))
    assert not any("depthwise" in w for w in _whys(verify_onnx(dw, "archnet_dw")))
    grouped = _export_float(nn.Conv2d(8, 8, 3, padding=1, groups=2), tmp_path / "g.onnx", (1, 8, 4, 4))
    assert "Conv: grouped conv (group=2)" in _whys(verify_onnx(grouped, "archnet_dw"))


def test_bad_profile_raises_config_error() -> None:
    with pytest.raises(ConfigError, match="profile='nope'"):
        load_profile("nope")
    with pytest.raises(ConfigError, match="profile.bits.weightz"):
        load_profile("archnet", ["bits.weightz=[2]"])


def test_cli_exit_codes(student_w2a4: Path, tmp_path: Path, capsys) -> None:
    def run(*args: str) -> int:
        with pytest.raises(SystemExit) as e:
            verify_main(list(args))
        return int(e.value.code)

    assert run(f"model={student_w2a4}", "profile=archnet") == 0
    assert "Conv" in capsys.readouterr().out
    teacher = _export_float(tiny_resnet(), tmp_path / "teacher.onnx")
    assert run(f"model={teacher}") == 1
    out = capsys.readouterr().out
    assert "Add" in out and "op type not in profile" in out and "kernel 1x1" in out
    for bad in (["profile=nope", f"model={teacher}"], ["model=/no/such.onnx"], ["colour=red"], ["model"]):
        assert run(*bad) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("archnet: error:")
