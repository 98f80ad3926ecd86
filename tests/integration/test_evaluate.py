"""``archnet-evaluate``: a finished run's numbers, recomputed from its directory, and with
``integer=true`` the integer-only simulation's (the chip's) next to them."""
from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def quantized_run(tmp_path_factory, trained_teacher, h) -> tuple[Path, Path]:
    """A finished 2w4a smoke run (schedule=smoke, debug=fast: 128 test images)."""
    root = h.make_root(tmp_path_factory.mktemp("evaluate"), trained_teacher)
    run = root / "outputs" / "w2a4"
    h.run_cli("distill", [*h.SMOKE, "quant=w2a4", f"hydra.run.dir={run}"], root, check=True)
    return root, run


def evaluation(run: Path) -> dict:
    (out,) = (run / "evaluate").glob("*/evaluate.json")
    result = json.loads(out.read_text())
    out.unlink()
    return result


def test_evaluate_recomputes_the_runs_numbers(quantized_run, h) -> None:
    root, run = quantized_run
    proc = h.run_cli("evaluate", [f"run_dir={run}"], root, check=True)
    assert "student" in proc.stdout and "integer" not in proc.stdout
    got = evaluation(run)
    metrics = json.loads((run / "metrics.json").read_text())
    assert got["split"] == "test" and "integer" not in got
    for who in ("teacher", "student"):
        assert got[who]["top1"] == pytest.approx(metrics[who]["test/top1"], abs=1e-9)
        assert got[who]["top5"] == pytest.approx(metrics[who]["test/top5"], abs=1e-9)


def test_integer_simulation_next_to_fake_quant(quantized_run, h) -> None:
    root, run = quantized_run
    proc = h.run_cli("evaluate", [f"run_dir={run}", "integer=true"], root, check=True)
    assert "integer simulation" in proc.stdout
    r = evaluation(run)["integer"]
    assert r["n"] == 128 and r["input_scale"] > 0
    assert set(r["integer"]) == set(r["fake_quant"]) == {"top1", "top5"}
    assert 90 <= r["agreement"] <= 100
    # top-1 can differ only on images whose top-1 class differs
    assert abs(r["integer"]["top1"] - r["fake_quant"]["top1"]) <= 100 - r["agreement"] + 1e-9
    for key in ("integer", "fake_quant"):
        assert 0 <= r[key]["top1"] <= r[key]["top5"] <= 100


@pytest.mark.parametrize("quant, value, expected", [
    ("fp32", "true", "integer=True: false for this run: its weights are float"),
    ("w2a4", "maybe", "integer"),
])
def test_bad_integer_is_one_line_exit_2(tmp_path: Path, quant: str, value: str, expected: str, h) -> None:
    """Refused before anything is written: a float run cannot be simulated in integers."""
    from omegaconf import OmegaConf

    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    q = OmegaConf.load(Path(__file__).parents[2] / "conf" / "quant" / f"{quant}.yaml")
    OmegaConf.save(OmegaConf.create({"name": "x", "quant": q}), run / ".hydra" / "config.yaml")
    (run / "student.pt").write_bytes(b"")
    proc = h.run_cli("evaluate", [f"run_dir={run}", f"integer={value}"], tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and expected in proc.stderr, proc.stderr
    assert not (run / "evaluate").exists()


def test_precise_bn_script_scores_a_run_without_changing_it(quantized_run, h) -> None:
    """scripts/precise_bn.py: the 'as trained' row is the run's own test numbers, the verdict
    follows the held-out agreements, and the run directory is left as it was."""
    import hashlib
    import re
    import subprocess
    import sys

    root, run = quantized_run
    digest = hashlib.sha256((run / "student.pt").read_bytes()).hexdigest()
    script = Path(__file__).resolve().parents[2] / "scripts" / "precise_bn.py"
    proc = subprocess.run([sys.executable, str(script), str(run), "--images", "64"], env=h.cli_env(root),
                          cwd=root, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {m.group(1): [float(v) for v in m.group(2, 3, 4)] for m in re.finditer(
        r"^\| (as trained|precise BN) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \|$", proc.stdout, re.M)}
    assert set(rows) == {"as trained", "precise BN"}, proc.stdout
    metrics = json.loads((run / "metrics.json").read_text())
    assert rows["as trained"][1] == pytest.approx(metrics["student"]["test/top1"], abs=0.006)
    assert rows["as trained"][2] == pytest.approx(metrics["student"]["test/top5"], abs=0.006)
    keep = rows["precise BN"][0] > rows["as trained"][0]
    assert f"would {'keep' if keep else 'discard'} them" in proc.stdout
    assert "population statistics of 64 training images" in proc.stdout
    assert hashlib.sha256((run / "student.pt").read_bytes()).hexdigest() == digest
