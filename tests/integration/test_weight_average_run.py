"""``distill.average_samples`` end to end: the last stage's average.pt is the moving average of
the student's states after each of its optimizer steps, the saved student is that average
(``average_keep=always``), and a resumed last stage continues the average exactly."""
from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from omegaconf import OmegaConf

# 2 stages x 8 steps of 16 samples, a checkpoint every 2 steps; d = 1 - 16 / 32 = 0.5
AVERAGED = ["schedule.scale=0.5", "distill.average_samples=32", "distill.average_keep=always"]
FAIL = ["+callbacks.fail._target_=archnet.distill.callbacks.FailAtStep",
        "+callbacks.fail.stage=01_logits", "+callbacks.fail.step=5"]


class StudentStates(pl.Callback):
    """The student's state after every optimizer step of the last stage."""

    def __init__(self) -> None:
        self.states: list[dict[str, torch.Tensor]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if pl_module.stage.name == "01_logits":
            self.states.append({k: v.detach().clone() for k, v in pl_module.net.student.state_dict().items()})


@pytest.fixture(scope="module")
def averaged_run(tmp_path_factory, trained_teacher, h):
    """(root, run dir, metrics, the last stage's student states) of one averaged smoke run."""
    root = h.make_root(tmp_path_factory.mktemp("average"), trained_teacher)
    states = StudentStates()
    mp = pytest.MonkeyPatch()
    mp.setenv("ARCHNET_ROOT", str(root))
    try:
        run_dir = root / "run"
        metrics = h.distill(run_dir, h.SMOKE + AVERAGED, extra_callbacks=[states])
        (run_dir / ".hydra").mkdir()
        OmegaConf.save(h.compose("distill", h.SMOKE + AVERAGED), run_dir / ".hydra" / "config.yaml")
    finally:
        mp.undo()
    return root, run_dir, metrics, states


def test_average_is_the_moving_average_and_is_saved(averaged_run, h):
    root, run_dir, metrics, states = averaged_run
    last = h.stage_dirs(run_dir)[-1]
    average = h.load(last / "average.pt")
    assert average["decay"] == 0.5 and average["updates"] == 8 == len(states.states)
    expected = dict(states.states[0])
    for state in states.states[1:]:
        expected = {k: 0.5 * expected[k] + 0.5 * v if v.is_floating_point() else v
                    for k, v in state.items()}
    assert average["state"].keys() == expected.keys()
    for key, value in expected.items():
        assert torch.allclose(average["state"][key], value, atol=1e-6), key
    saved = h.load(run_dir / "student.pt")["state_dict"]
    assert all(torch.equal(saved[k], v) for k, v in average["state"].items())
    trained = h.load(last / "state.pt")
    moved = [k for k, v in average["state"].items()
             if v.is_floating_point() and not torch.allclose(v, trained["student." + k])]
    assert moved  # the average is not the last step's weights
    record = metrics["weight_average"]
    assert record["kept"] is True and record["samples"] == 32 and record["updates"] == 8
    assert 0.0 <= record["agreement_trained"] <= 100.0 and 0.0 <= record["agreement_average"] <= 100.0
    assert "average.pt" not in {p.name for p in h.stage_dirs(run_dir)[0].iterdir()}  # last stage only


def test_resumed_last_stage_continues_the_average(root, h):
    reference = root / "outputs" / "average_reference" / "run"
    h.distill(reference, h.SMOKE + AVERAGED)
    run_dir = root / "outputs" / "average_resumed" / "run"
    with pytest.raises(RuntimeError, match="FailAtStep"):
        h.distill(run_dir, h.SMOKE + AVERAGED + FAIL)
    assert h.load(run_dir / "stages" / "01_logits" / "last.ckpt")["global_step"] == 4
    h.distill(run_dir, h.SMOKE + AVERAGED)
    a = h.load(run_dir / "stages" / "01_logits" / "average.pt")
    b = h.load(reference / "stages" / "01_logits" / "average.pt")
    assert a["updates"] == b["updates"] == 8
    for key, value in b["state"].items():
        assert torch.allclose(a["state"][key], value, atol=1e-6), key


def test_script_compares_the_two_without_changing_the_run(averaged_run, h):
    """scripts/weight_average.py: the averaged row is the saved student (average kept, no
    precise BN in the run), the as-trained row's held-out agreement is the one the run judged."""
    root, run_dir, metrics, _ = averaged_run
    files = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in run_dir.rglob("*") if p.is_file()}
    script = Path(__file__).resolve().parents[2] / "scripts" / "weight_average.py"
    proc = subprocess.run([sys.executable, str(script), str(run_dir), "--images", "64"],
                          env=h.cli_env(root), cwd=root, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {m.group(1, 2): [float(v) for v in m.group(3, 4, 5)] for m in re.finditer(
        r"^\| (as trained|average) \| (as trained|precise BN) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \|$",
        proc.stdout, re.M)}
    assert len(rows) == 4, proc.stdout
    record = metrics["weight_average"]
    assert rows["as trained", "as trained"][0] == pytest.approx(record["agreement_trained"], abs=0.006)
    assert rows["average", "as trained"][0] == pytest.approx(record["agreement_average"], abs=0.006)
    assert rows["average", "as trained"][1] == pytest.approx(metrics["student"]["test/top1"], abs=0.006)
    assert rows["average", "as trained"][2] == pytest.approx(metrics["student"]["test/top5"], abs=0.006)
    assert "average of 8 steps, decay 0.5" in proc.stdout
    assert {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in run_dir.rglob("*") if p.is_file()} == files
