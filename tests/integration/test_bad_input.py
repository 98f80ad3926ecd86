"""Bad input on the command line: one line on stderr naming the key and the value, exit
status 2, no traceback, and nothing written (no run directory; an existing run directory
passed with ``hydra.run.dir=`` stays byte-identical).

Every case runs in this process through the console scripts' ``main()`` (the same code path
as the installed script, without the interpreter start-up); a few run as real subprocesses
by default, and all of them do under ``-m slow``.
"""
from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest
import torch
import yaml

from archnet.cli.app import CONF_DIR
from archnet.models.resnet import tiny_resnet

# (id, arguments, key, value): the error line must contain "<key>=" and the value
RAW_MULTI30K = "@RAW_MULTI30K@"  # replaced by a folder with the two raw train files (no shared data needed)
CASES = [
    ("unknown_group_option", ["data=nope"], "data", "nope"),
    ("unknown_experiment", ["experiment=nope"], "experiment", "nope"),
    ("negative_budget", ["schedule.first_samples=-5"], "schedule.first_samples", "-5"),
    ("zero_scale", ["schedule.scale=0"], "schedule.scale", "0"),
    ("zero_passes", ["schedule.passes=0"], "schedule.passes", "0"),
    ("precise_bn_negative", ["distill.precise_bn_images=-1"], "distill.precise_bn_images", "-1"),
    ("precise_bn_keep_unknown", ["distill.precise_bn_keep=sometimes"], "distill.precise_bn_keep",
     "sometimes"),
    ("average_negative", ["distill.average_samples=-1"], "distill.average_samples", "-1"),
    ("average_keep_unknown", ["distill.average_keep=sometimes"], "distill.average_keep", "sometimes"),
    ("restart_passes_not_a_bool", ["schedule.restart_passes=maybe"], "schedule.restart_passes",
     "maybe"),
    ("budget_scaled_to_nothing", ["schedule=smoke", "debug=fast"], "schedule[00_stem].samples",
     "0"),
    ("zero_batch_size", ["distill.batch_size=0"], "distill.batch_size", "0"),
    ("batch_size_not_a_number", ["distill.batch_size=abc"], "distill.batch_size", "abc"),
    ("unknown_tap_progressive", ["schedule.taps=[nope]"], "schedule.taps", "nope"),
    ("unknown_tap_smoke", ["schedule=smoke", "schedule.stages.0.terms.0.tap=nope"],
     "schedule[00_stem].tap", "nope"),
    ("unknown_loss", ["schedule.feature_loss=nope"], "schedule[00_stem].loss", "nope"),
    ("unknown_stage_override", ["+schedule.stage_overrides={99_nope:{samples:1}}"],
     "schedule.stage_overrides", "99_nope"),
    ("negative_seed", ["seed=-1"], "seed", "-1"),
    ("unknown_key", ["distill.nope=1"], "distill.nope", "1"),
    ("unknown_feature_units", ["distill.feature_units=nope"], "distill.feature_units", "nope"),
    ("feature_units_bn_on_translation", ["data=multi30k_deen", f"data.module.data_dir={RAW_MULTI30K}",
                                         "teacher=transformer_small", "student=transformer",
                                         "quant=w2a4", "distill.feature_units=bn"],
     "distill.feature_units", "bn"),
    ("negative_calibrate_images", ["distill.calibrate_images=-1"], "distill.calibrate_images", "-1"),
    ("calibrate_without_merge_as_add", ["distill.calibrate_images=64"], "distill.calibrate_images", "64"),
    ("preadd_shift_without_merge_as_add", ["student.init_preadd_shift=2"], "student.init_preadd_shift", "2"),
    ("unknown_step_init", ["quant=lsq_w2a4", "quant.weight.step_init=max"], "quant.weight.step_init", "max"),
    ("inner_width_above_one", ["student.inner_width=1.5"], "student.inner_width", "1.5"),
    ("inner_width_list_too_short", ["student.inner_width=[0.5,0.5]"], "student.inner_width", "0.5, 0.5"),
    ("refit_not_a_bool", ["distill.calibrate_refit=maybe"], "distill.calibrate_refit", "maybe"),
    ("missing_init_student", ["distill.init_student=/nonexistent/run"], "distill.init_student",
     "/nonexistent/run"),
    ("searched_without_topology", ["student=searched"], "student.topology", "???"),
    ("unparseable_override", ["schedule.stage_overrides.01_logits.samples=1"], "override",
     "schedule.stage_overrides.01_logits.samples=1"),
    ("missing_teacher_checkpoint", ["teacher.checkpoint=/nonexistent.pt"],
     "teacher.checkpoint", "/nonexistent.pt"),
    ("zero_training_images", ["data.module.n_train=0"], "data.module.n_train", "0"),
    ("teacher_and_data_do_not_fit", ["data=multi30k_deen", f"data.module.data_dir={RAW_MULTI30K}"],
     "data.num_classes", "None"),
]
SUBPROCESS_DEFAULT = {"unknown_group_option", "negative_budget", "missing_teacher_checkpoint"}


def file_tree(root: Path) -> dict[str, tuple[int, bytes] | None]:
    """Every path below ``root``: files as (mtime_ns, bytes), folders as None."""
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, p.read_bytes()) if p.is_file()
            else None for p in sorted(root.rglob("*"))}


def assert_one_line_error(code, out: str, err: str, key: str, value: str) -> str:
    assert code == 2, (code, err[-3000:])
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    line = lines[0]
    assert line.startswith("archnet: error: "), line
    assert f"{key}=" in line and value in line, line
    assert "Traceback" not in err + out
    assert out.strip() == "", out
    return line


class InProcess:
    """Runs ``archnet-<tool> args`` through ``archnet.cli.<tool>.main`` in this process."""

    def __init__(self, monkeypatch, capsys) -> None:
        self.monkeypatch, self.capsys = monkeypatch, capsys
        monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)

    def __call__(self, tool: str, args: list[str]) -> tuple[object, str, str]:
        main = importlib.import_module(f"archnet.cli.{tool}").main
        self.monkeypatch.setattr(sys, "argv", [f"archnet-{tool}", *args])
        self.capsys.readouterr()
        with pytest.raises(SystemExit) as info:
            main()
        out, err = self.capsys.readouterr()
        return info.value.code, out, err


@pytest.fixture
def in_process(monkeypatch, capsys):
    return InProcess(monkeypatch, capsys)


def check(runner, root: Path, tool: str, args: list[str], key: str, value: str) -> str:
    before = file_tree(root)
    line = assert_one_line_error(*runner(tool, args), key, value)
    assert file_tree(root) == before, "a failed command wrote files"
    return line


def subprocess_runner(h, root: Path):
    def run(tool: str, args: list[str]):
        proc = h.run_cli(tool, args, root, timeout=180)
        return proc.returncode, proc.stdout, proc.stderr
    return run


@pytest.fixture(scope="module")
def raw_multi30k(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Multi30k folder as far as validation looks: ``train.{en,de}.gz`` present."""
    import gzip

    folder = tmp_path_factory.mktemp("multi30k_raw")
    for lang in ("en", "de"):
        with gzip.open(folder / f"train.{lang}.gz", "wt") as f:
            f.write("a\n")
    return folder


def with_raw_multi30k(args: list[str], folder: Path) -> list[str]:
    return [a.replace(RAW_MULTI30K, str(folder)) for a in args]


@pytest.mark.parametrize("args, key, value", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_distill_bad_input(root, in_process, raw_multi30k, args, key, value):
    check(in_process, root, "distill", with_raw_multi30k(args, raw_multi30k), key, value)


@pytest.mark.parametrize("args, key, value", [
    pytest.param(*c[1:], id=c[0], marks=() if c[0] in SUBPROCESS_DEFAULT else pytest.mark.slow)
    for c in CASES])
def test_distill_bad_input_subprocess(root, h, raw_multi30k, args, key, value):
    check(subprocess_runner(h, root), root, "distill", with_raw_multi30k(args, raw_multi30k), key, value)


def test_teacher_bad_input(root, h):
    check(subprocess_runner(h, root), root, "teacher", ["train.epochs=0"], "train.epochs", "0")


def test_teacher_checkpoint_of_another_shape(root, in_process):
    wrong = root / "wrong_widths.pt"
    torch.save({"state_dict": tiny_resnet(10, widths=(8, 16, 32)).state_dict()}, wrong)
    line = check(in_process, root, "distill", [f"teacher.checkpoint={wrong}"],
                 "teacher.checkpoint", str(wrong))
    assert "conv1.weight has shape (8, 3, 3, 3), the model needs (16, 3, 3, 3)" in line


@pytest.mark.parametrize("content", [b"not a checkpoint\n", b""], ids=["text", "empty"])
def test_teacher_checkpoint_that_is_not_a_checkpoint(root, in_process, content):
    junk = root / "junk.pt"
    junk.write_bytes(content)
    check(in_process, root, "distill", [f"teacher.checkpoint={junk}"], "teacher.checkpoint",
          str(junk))


def test_a_sweep_is_checked_job_by_job_before_anything_runs(root, h):
    """seed 0 has a teacher, seed 3 has none: the whole sweep stops before job 0 starts."""
    line = check(subprocess_runner(h, root), root, "distill", ["-m", "seed=0,3", "debug=fast"],
                 "teacher.checkpoint", "seed3.pt")
    assert "seed0" not in line


def test_existing_run_directory_is_left_byte_identical(root, h, in_process):
    run_dir = root / "outputs" / "earlier" / "run"
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "config.yaml").write_text("seed: 0\n")
    (run_dir / "stages" / "00_stem").mkdir(parents=True)
    (run_dir / "stages" / "00_stem" / "DONE").write_text("done\n")
    (run_dir / "stages" / "00_stem" / "state.pt").write_bytes(b"\x00weights")
    (run_dir / "metrics.json").write_text("{}\n")
    check(subprocess_runner(h, root), root, "distill",
          [f"hydra.run.dir={run_dir}", "distill.batch_size=0"], "distill.batch_size", "0")
    check(in_process, root, "distill",
          [f"hydra.run.dir={run_dir}", "teacher.checkpoint=/nonexistent.pt"],
          "teacher.checkpoint", "/nonexistent.pt")


def _path_keys() -> list:
    """(data option, key) for every data option whose module reads a folder."""
    out = []
    for f in sorted(Path(CONF_DIR, "data").glob("*.yaml")):
        module = (yaml.safe_load(f.read_text()) or {}).get("module") or {}
        for k in module:
            if k in ("root", "source_dir", "data_dir", "path"):
                out.append(pytest.param(f.stem, k, id=f"{f.stem}-{k}"))
    return out


@pytest.mark.parametrize("option, key", _path_keys() or [pytest.param(
    None, None, marks=pytest.mark.skip(reason="no data option reads a path yet"))])
def test_missing_data_path(root, in_process, option, key):
    """The data folder does not exist: the error names the data key and the path. (Data
    options that do not fit the default teacher are paired with the teacher they need.)"""
    args = [f"data={option}", f"data.module.{key}=/nonexistent/data"]
    teacher = _teacher_for(option)
    if teacher:
        args += [f"teacher={teacher}", "teacher.checkpoint=null", "student=transformer",
                 "schedule=transformer", "quant=fp32"]
    check(in_process, root, "distill", args, f"data.module.{key}", "/nonexistent/data")


def _teacher_for(data_option: str) -> str | None:
    return "transformer_small" if data_option.startswith("multi30k") else None


# Known engine gap: bad input too, but it passes validation and fails only after Hydra has
# created the run directory.
@pytest.mark.xfail(strict=True, reason="trainable patterns are checked only when the stage "
                   "starts: exit 2 and one line, but the run directory is already written")
def test_trainable_pattern_matching_nothing(root, h):
    check(subprocess_runner(h, root), root, "distill",
          ["+schedule.stage_overrides={00_stem:{trainable:[nope.*]}}"],
          "schedule[00_stem].trainable", "nope.*")


def test_bad_trainer_devices(root, h):
    check(subprocess_runner(h, root), root, "distill", ["trainer.devices=0"], "trainer.devices",
          "0")
