"""Resume (DESIGN.md 3.3): a rerun on the same run directory skips DONE stages without
touching their files and continues the interrupted stage from its last checkpoint; the
result equals an uninterrupted run with the same seed.

(a) a Python exception in stage 2 (``FailAtStep``), in this process;
(b) a real ``SIGKILL`` of the CLI during stage 2.
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import lightning.pytorch as pl
import pytest

# 2 stages x 8 steps of 16 samples, a checkpoint every 2 steps (4 chunks per stage)
RESUME = ["schedule.scale=0.5"]
FAIL = ["+callbacks.fail._target_=archnet.distill.callbacks.FailAtStep",
        "+callbacks.fail.stage=01_logits", "+callbacks.fail.step=5"]
TOL = 1e-6


class StartSteps(pl.Callback):
    """Records ``trainer.global_step`` when each stage's fit starts (after a restore)."""

    def __init__(self) -> None:
        self.starts: dict[str, int] = {}

    def on_train_start(self, trainer, pl_module) -> None:
        self.starts[pl_module.stage.name] = trainer.global_step


def fingerprint(sdir: Path) -> dict[str, tuple[int, str]]:
    return {p.name: (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(sdir.iterdir()) if p.is_file()}


def assert_same_result(resumed: dict, reference: dict, resumed_dir: Path, reference_dir: Path,
                       h) -> None:
    for who in ("teacher", "student"):
        for key in ("test/top1", "test/top5"):
            assert abs(resumed[who][key] - reference[who][key]) <= TOL, (who, key)
    assert list(resumed["stages"]) == list(reference["stages"])
    for name, stage in reference["stages"].items():
        for key in ("val/loss", "val/agreement", "steps", "samples", "trainable_params"):
            assert abs(resumed["stages"][name][key] - stage[key]) <= TOL, (name, key)
    a = h.load(resumed_dir / "student.pt")["state_dict"]
    b = h.load(reference_dir / "student.pt")["state_dict"]
    assert a.keys() == b.keys()
    worst = max(float((a[k].double() - b[k].double()).abs().max()) if a[k].numel() else 0.0
                for k in a)
    assert worst <= TOL, f"student weights differ by up to {worst:g}"


def test_resume_after_an_exception(root, h):
    base = h.SMOKE + RESUME
    run_dir = root / "outputs" / "resume" / "run"
    with pytest.raises(RuntimeError, match="FailAtStep"):
        h.distill(run_dir, base + FAIL)
    stem, logits = run_dir / "stages" / "00_stem", run_dir / "stages" / "01_logits"
    assert (stem / "DONE").exists() and not (logits / "DONE").exists()
    assert not (logits / "state.pt").exists() and not (run_dir / "metrics.json").exists()
    before = fingerprint(stem)
    assert set(before) == {"DONE", "state.pt", "last.ckpt", "metrics.json"}
    interrupted = h.load(logits / "last.ckpt")
    assert interrupted["global_step"] == 4  # the chunk boundary before the failure at step 5

    starts = StartSteps()
    resumed = h.distill(run_dir, base, extra_callbacks=[starts])
    assert starts.starts == {"01_logits": 4}  # stage 1 skipped, stage 2 restored at step 4
    assert fingerprint(stem) == before  # DONE stage untouched: same bytes, same mtime
    assert (logits / "DONE").exists()
    assert h.load(logits / "last.ckpt")["global_step"] == 8
    assert resumed["stages"]["01_logits"]["steps"] == 8

    reference_dir = root / "outputs" / "resume" / "reference"
    reference = h.distill(reference_dir, base)
    assert_same_result(resumed, reference, run_dir, reference_dir, h)
    # the interrupted stage's state equals the reference's at the same step
    ref_curve = dict(map(tuple, reference["stages"]["01_logits"]["curve"]))
    for step, loss in resumed["stages"]["01_logits"]["curve"]:
        assert abs(loss - ref_curve[step]) <= TOL, step



def test_resume_with_stage_files_last(root, h):
    """``distill.stage_files=last``: a finished stage keeps no ``last.ckpt`` and only the
    newest finished stage keeps ``state.pt``; resuming from that (and rerunning a finished
    run) gives the same result as keeping every file."""
    base = h.SMOKE + RESUME
    last = ["distill.stage_files=last"]
    run_dir = root / "outputs" / "pruned" / "run"
    with pytest.raises(RuntimeError, match="FailAtStep"):
        h.distill(run_dir, base + last + FAIL)
    stem, logits = run_dir / "stages" / "00_stem", run_dir / "stages" / "01_logits"
    assert {p.name for p in stem.iterdir()} == {"DONE", "state.pt", "metrics.json"}
    assert h.load(logits / "last.ckpt")["global_step"] == 4

    resumed = h.distill(run_dir, base + last)
    assert {p.name for p in stem.iterdir()} == {"DONE", "metrics.json"}
    assert {p.name for p in logits.iterdir()} == {"DONE", "state.pt", "metrics.json"}
    reference_dir = root / "outputs" / "pruned" / "reference"
    reference = h.distill(reference_dir, base)
    assert {p.name for p in (reference_dir / "stages" / "00_stem").iterdir()} == {
        "DONE", "state.pt", "last.ckpt", "metrics.json"}  # the default keeps everything
    assert_same_result(resumed, reference, run_dir, reference_dir, h)
    # a finished run reruns from the newest state alone (stage 1's state is gone)
    (run_dir / "student.pt").unlink()
    rerun = h.distill(run_dir, base + last)
    assert_same_result(rerun, reference, run_dir, reference_dir, h)

# 40 steps, 20 chunks. A by-name stage override from the command line needs "+" and the
# dict syntax: Hydra's grammar rejects the dotted key (stage names start with a digit).
LONG_STAGE2 = ["+schedule.stage_overrides={01_logits:{samples:640}}"]


def test_resume_after_sigkill(root, h):
    args = h.SMOKE + RESUME + LONG_STAGE2
    run_dir = root / "outputs" / "killed"
    ckpt = run_dir / "stages" / "01_logits" / "last.ckpt"
    log = root / "killed.stderr"
    with open(log, "w") as stderr:
        proc = subprocess.Popen([str(h.BIN / "archnet-distill"), *args,
                                 f"hydra.run.dir={run_dir}"], env=h.cli_env(root), cwd=root,
                                stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        deadline = time.monotonic() + 240
        while not ckpt.exists():
            assert proc.poll() is None, f"exited early ({proc.returncode}): {log.read_text()}"
            assert time.monotonic() < deadline, "stage 2 never wrote a checkpoint"
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    stem = run_dir / "stages" / "00_stem"
    assert (stem / "DONE").exists()
    assert not (ckpt.parent / "DONE").exists(), "the run finished before the kill"
    step_at_kill = h.load(ckpt)["global_step"]
    assert 0 < step_at_kill < 40 and step_at_kill % 2 == 0
    before = fingerprint(stem)

    h.run_cli("distill", [*args, f"hydra.run.dir={run_dir}"], root, check=True)
    assert fingerprint(stem) == before  # stage 1 was not rerun
    assert h.load(ckpt)["global_step"] == 40

    # the uninterrupted reference runs in this process (same code, same single thread)
    reference_dir = root / "outputs" / "unkilled"
    b = h.distill(reference_dir, args)
    a = json.loads((run_dir / "metrics.json").read_text())
    assert_same_result(a, json.loads(json.dumps(b)), run_dir, reference_dir, h)
