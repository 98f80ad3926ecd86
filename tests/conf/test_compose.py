"""Every config option composes, every experiment validates, and (``-m slow``) every
experiment runs end to end with ``debug=fast``. Groups, options and experiments are
discovered from conf/, never listed here."""
from __future__ import annotations

import re
from functools import cache
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from archnet.cli.app import CONF_DIR

CONF = Path(CONF_DIR)
PRIMARY = sorted(p.stem for p in CONF.glob("*.yaml"))
GROUPS = sorted({str(p.parent.relative_to(CONF)) for p in CONF.rglob("*.yaml")
                 if p.parent != CONF} - {"experiment"})
OPTIONS = [(g, p.stem) for g in GROUPS for p in sorted((CONF / g).glob("*.yaml"))]
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
DATA_DIR = CONF.parents[1] / "shared" / "data"


def compose(primary: str, overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            return hydra_compose(primary, overrides=overrides, return_hydra_config=True)
    finally:
        GlobalHydra.instance().clear()


@cache
def groups_of(primary: str) -> frozenset[str]:
    return frozenset(compose(primary, []).hydra.runtime.choices)


def package(group: str, option: str) -> str | None:
    """The node an option file fills: its ``@package`` or the group path (None: global)."""
    head = (CONF / group / f"{option}.yaml").read_text()
    found = re.search(r"^#\s*@package\s+(\S+)", head, re.M)
    pkg = found.group(1) if found else group.replace("/", ".")
    return None if pkg == "_global_" else pkg


def test_discovery_finds_the_groups_and_primaries():
    assert {"distill", "teacher"} <= set(PRIMARY)
    assert {"data", "teacher", "student", "quant", "schedule", "profile", "trainer", "logger",
            "callbacks", "paths", "hydra", "debug"} <= set(GROUPS)
    assert "demo" in EXPERIMENTS


def test_primary_configs_compose():
    for primary in PRIMARY:
        cfg = compose(primary, [])
        assert cfg.hydra.runtime.choices is not None, primary


@pytest.mark.parametrize("group, option", OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_option_composes(group, option, monkeypatch, tmp_path):
    """Into every primary config that lists the group, and always into distill.yaml."""
    monkeypatch.setenv("ARCHNET_ROOT", str(tmp_path))
    targets = [p for p in PRIMARY if group in groups_of(p)]
    if "distill" not in targets:
        targets.append("distill")
    for primary in targets:
        listed = group in groups_of(primary)
        cfg = compose(primary, [f"{'' if listed else '+'}{group}={option}"])
        assert cfg.hydra.runtime.choices[group] == option, (primary, group)
        node = package(group, option)
        if node and not node.startswith("hydra"):
            assert OmegaConf.select(cfg, node) is not None, (primary, node)
    # the option file itself is plain YAML (its own keys, no tabs, no duplicate groups)
    assert isinstance(yaml.safe_load((CONF / group / f"{option}.yaml").read_text()) or {}, dict)


def header_tools(experiment: str) -> set[str]:
    """The ``archnet-<tool>`` commands the file's header runs it with (DESIGN 4: the first
    comment is the command)."""
    head = (CONF / "experiment" / f"{experiment}.yaml").read_text().split("defaults:")[0]
    return set(re.findall(r"archnet-(\w+) experiment=" + re.escape(experiment) + r"\b", head))


def target_of(experiment: str) -> str:
    return "search" if "search" in header_tools(experiment) else "distill"


def primaries_of(experiment: str) -> list[str]:
    """Distill experiments also describe their teacher (archnet-teacher reads them too)."""
    target = target_of(experiment)
    return [target, "teacher"] if target == "distill" else [target]


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_and_resolves(experiment, monkeypatch, tmp_path):
    monkeypatch.setenv("ARCHNET_ROOT", str(tmp_path))
    for primary in primaries_of(experiment):
        cfg = compose(primary, [f"experiment={experiment}"])
        assert cfg.hydra.runtime.choices["experiment"] == experiment
        body = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
        plain = OmegaConf.to_container(body, resolve=True, throw_on_missing=False)
        assert plain["name"], experiment
        assert str(tmp_path) in plain["paths"]["output_dir"]


def _validator(primary: str):
    if primary == "search":
        from archnet.cli.search import validate
        return validate
    from archnet.config import schema
    return getattr(schema, f"validate_{primary}")


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_validates(experiment, root, monkeypatch, h):
    """With ``debug=fast``; a teacher checkpoint that was never trained here is left out
    (``teacher.checkpoint=null``) and data that is not on this machine skips."""
    from archnet.errors import ConfigError, find_config_error

    if DATA_DIR.is_dir():
        monkeypatch.setenv("ARCHNET_DATA", str(DATA_DIR))
    for primary in primaries_of(experiment):
        cfg = compose(primary, [f"experiment={experiment}", "debug=fast"])
        path = cfg.teacher.get("checkpoint")
        if path and not Path(path).is_file():
            cfg.teacher.checkpoint = None
        try:
            _validator(primary)(cfg)
        except Exception as e:
            err = e if isinstance(e, ConfigError) else find_config_error(e)
            if err is not None and str(err.key).startswith("data") and err.value \
                    and not Path(str(err.value)).exists():
                pytest.skip(f"{primary}: data not on this machine ({err})")
            raise


def test_cfg_job_resolve_prints_the_resolved_config(root, h):
    proc = h.run_cli("distill", ["--cfg", "job", "--resolve"], root, timeout=120, check=True)
    assert "distill:" in proc.stdout
    assert "_target_: archnet.distill.schedule.progressive" in proc.stdout
    cfg = yaml.safe_load(proc.stdout)
    assert cfg["paths"]["output_dir"] == f"{root}/outputs"
    assert cfg["teacher"]["checkpoint"] == str(h.teacher_path(root))
    assert cfg["teacher"]["model"]["num_classes"] == 10  # interpolations resolved
    assert "${" not in proc.stdout
    assert sorted(p.name for p in (root / "outputs").iterdir()) == ["teachers"]  # no run dir


# ---------------------------------------------------------------- end to end (slow)
@pytest.fixture(scope="module")
def shared_root(tmp_path_factory):
    """One root for every experiment run: extracted data and caches are reused."""
    return tmp_path_factory.mktemp("experiments")


def teacher_args(experiment: str) -> list[str]:
    """How the header trains this experiment's teacher (``archnet-teacher ...``), on CPU."""
    head = (CONF / "experiment" / f"{experiment}.yaml").read_text().split("defaults:")[0]
    found = re.search(r"archnet-teacher((?:\s+[\w./@+~-]+=[^\s)&;]+)+)", head)
    args = found.group(1).split() if found else [f"experiment={experiment}"]
    return [a for a in args if not a.startswith("trainer=")]


def skip_if_data_missing(proc) -> None:
    """Skip when the CLI refused a data path that does not exist on this machine."""
    found = re.search(r"archnet: error: (data[\w.]*)='([^']*)'", proc.stderr)
    if proc.returncode == 2 and found and found.group(2).startswith("/") \
            and not Path(found.group(2)).exists():
        pytest.skip(f"data not on this machine: {proc.stderr.strip()}")


@pytest.mark.slow
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_runs_with_debug_fast(experiment, shared_root, h, monkeypatch):
    """The header's teacher command, then the experiment's own command, with ``debug=fast``:
    exit 0 and a metrics.json (distill) or search.json (search)."""
    import json

    if DATA_DIR.is_dir():
        monkeypatch.setenv("ARCHNET_DATA", str(DATA_DIR))
    tool = target_of(experiment)
    teacher = h.run_cli("teacher", [*teacher_args(experiment), "debug=fast"], shared_root,
                        timeout=1800)
    skip_if_data_missing(teacher)
    assert teacher.returncode == 0, teacher.stderr[-5000:]
    outputs = shared_root / "outputs"
    before = set(outputs.rglob("metrics.json")) | set(outputs.rglob("search.json"))
    proc = h.run_cli(tool, [f"experiment={experiment}", "debug=fast", "logger=none"],
                     shared_root, timeout=3600)
    skip_if_data_missing(proc)
    assert proc.returncode == 0, proc.stderr[-5000:]
    new = (set(outputs.rglob("metrics.json")) | set(outputs.rglob("search.json"))) - before
    if tool == "search":
        assert any(p.name == "search.json" for p in new), new
    else:
        runs = [p for p in new if (p.parent / "stages").is_dir()]
        assert len(runs) == 1, new
        student = json.loads(runs[0].read_text())["student"]
        assert any(k.startswith("test/") for k in student), student
