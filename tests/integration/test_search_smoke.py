"""archnet-search end to end on synthetic data: a short 4w4a search fills the board and
selects a path within budget; archnet-distill retrains it (student=searched); the exported
ONNX student passes the ``archnet`` profile and costs what the search predicted."""
from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent
W4A4 = ["quant.name=w4a4", "quant.weight.method=dorefa", "quant.weight.bits=4",
        "quant.act.method=fixed", "quant.act.bits=4"]
DATA = ["data.module.n_train=768", "data.module.n_val=128", "data.module.n_test=128"]
QUIET = ["logger=none", "progress=false"]


def run(args: list[str], root: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    import os

    env = dict(os.environ, ARCHNET_ROOT=str(root), WANDB_MODE="offline", PYTHONWARNINGS="ignore")
    env.pop("HYDRA_FULL_ERROR", None)
    proc = subprocess.run(args, env=env, cwd=root, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{args[0]} exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


def test_search_select_retrain_export(root: Path):
    search_dir = root / "search_run"
    proc = run([str(BIN / "archnet-search"), "experiment=search_demo", *QUIET, *DATA, *W4A4,
         f"hydra.run.dir={search_dir}", "search.samples=640", "search.batch_size=32",
         "search.warmup_samples=160", "search.quant_start_samples=320", "search.board.probe_size=64",
         "search.matcher.update_every=5", "search.matcher.inner_batch=8",
         "search.select.random_paths=3", "search.select.recal_samples=64"], root)
    steps = 640 // 32  # progress=false: one line per tenth of the steps, ending at the last
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("search step ")]
    assert [ln.split(":")[0] for ln in lines] == [f"search step {k}/{steps}" for k in range(2, steps + 1, 2)]
    result = json.loads((search_dir / "search.json").read_text())
    lo, hi = result["budget_range"]
    assert len(result["search"]["board"]) == 4  # the board fills
    assert result["search"]["meta_updates"] > 0
    selected = result["selected"]
    assert lo <= selected["cost"] == selected["macs"] <= hi
    assert {"topology.yaml", "student_init.pt", "supernet.pt", "retrain.sh"} <= {p.name for p in search_dir.iterdir()}

    script = Path(__file__).resolve().parents[2] / "scripts" / "thinned_topology.py"
    run([sys.executable, str(script), str(search_dir)], root)  # the equal-MACs uniform baseline
    thinned = shlex.split((search_dir / "retrain_thinned.sh").read_text())
    header = (search_dir / "thinned_topology.yaml").read_text().splitlines()[0]
    thin_macs = int(header.split("macs ")[1].split(" ")[0].replace(",", ""))
    assert abs(thin_macs - selected["macs"]) <= 0.03 * selected["macs"]
    assert any(a.endswith("_thinned") and a.startswith("name=") for a in thinned)

    retrain = shlex.split((search_dir / "retrain.sh").read_text())
    assert retrain[0] == "archnet-distill"
    distill_dir = root / "retrain_run"
    run([str(BIN / retrain[0]), *retrain[1:], *QUIET, *DATA, f"hydra.run.dir={distill_dir}",
         f"student.init={search_dir / 'student_init.pt'}", "schedule.first_samples=64",
         "schedule.middle_samples=32", "schedule.final_samples=64", "distill.val_samples=32"], root)
    metrics = json.loads((distill_dir / "metrics.json").read_text())
    assert metrics["student"]["macs"] == selected["macs"] and metrics["student"]["bits"] == "4w4a"

    run([str(BIN / "archnet-export"), f"run_dir={distill_dir}", "parity_images=16", "example_batch=8"], root)
    export = json.loads((distill_dir / "export" / "export.json").read_text())
    assert export["verdict"] == "pass", export["violations"]
    assert (export["macs"], export["params"], export["bitops"]) == (
        selected["macs"], selected["params"], selected["bitops"])
