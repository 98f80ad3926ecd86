"""Every config option composes, every experiment validates, and every experiment runs
end to end with ``debug=fast`` (and tiny model/decoding limits). Groups, options and experiments are
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
    """With ``debug=fast``; a teacher checkpoint or source student that was never trained here
    is left out (``teacher.checkpoint=null``, ``distill.init_student=null``) and data that is
    not on this machine skips."""
    if DATA_DIR.is_dir():
        monkeypatch.setenv("ARCHNET_DATA", str(DATA_DIR))
    for primary in primaries_of(experiment):
        cfg = compose(primary, [f"experiment={experiment}", "debug=fast"])
        path = cfg.teacher.get("checkpoint")
        if path and not Path(path).is_file():
            cfg.teacher.checkpoint = None
        source = cfg.get("distill", {}).get("init_student")  # a student never distilled here
        if source and not Path(source).exists():
            cfg.distill.init_student = None
        validate_or_skip(primary, cfg)


def validate_or_skip(primary: str, cfg) -> None:
    """Validate a composed config; skip the test when it names data this machine lacks."""
    from archnet.errors import ConfigError, find_config_error

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


# ---------------------------------------------------------------- end to end
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


def families() -> dict[str, list[str]]:
    """Experiments grouped by (tool, teacher command): one teacher and one Hydra multirun
    each. Named after the teacher command's experiment and the tool."""
    out: dict[str, list[str]] = {}
    for experiment in EXPERIMENTS:
        key = "+".join(teacher_args(experiment)).replace("experiment=", "") + f"-{target_of(experiment)}"
        out.setdefault(key, []).append(experiment)
    return out


FAMILIES = families()

# Tiny limits on top of debug=fast (DESIGN 4: "tests run every experiment file with tiny
# limits"), by teacher option: debug=fast caps data and budgets, these shrink what it cannot:
# the paper-size Transformer (40 M parameters), its beam-search decoding of three splits,
# and the 60-odd one-step stages of the deepest students (ResNet-50, MobileNetV2).
TRANSFORMER_MODEL = ["teacher.model.cfg.d_model=16", "teacher.model.cfg.d_inner=16",
                     "teacher.model.cfg.n_enc=1", "teacher.model.cfg.n_dec=1",
                     "teacher.model.cfg.n_head=2"]
# 4 of the schedule's stages (first, two between, final; all stages are still built and
# their tap pairs checked), 16 held-out samples per stage, only the newest stage's weights.
# Budgets at a quarter of debug=fast's (the final stage of the paper recipes is 10-50x a
# middle one, so it dominates a smoke run).
SMOKE_STAGES = ["distill.limit_stages=4", "distill.val_samples=16", "distill.stage_files=last",
                "schedule.scale=0.0005"]
TINY = {
    "transformer": {"teacher": [*TRANSFORMER_MODEL, "train.module.val_limit=4", "train.module.val_max_len=6",
                                "train.module.limit=4", "train.module.max_len=6", "train.module.beam=2"],
                    "distill": [*TRANSFORMER_MODEL, "data.task.limit=4", "data.task.max_len=6",
                                "data.task.beam=2", *SMOKE_STAGES]},
    "cnn": {"teacher": [], "search": ["search.scale=0.002"],
            "distill": ["distill.batch_size=16", "export.example_batch=16", "export.parity_images=32",
                        *SMOKE_STAGES]},
}


def tiny_overrides(experiment: str, tool: str) -> list[str]:
    """``++key=value``: a ``-m`` sweep composes its base config without the swept experiment,
    where these keys may not exist yet."""
    choices = compose(target_of(experiment), [f"experiment={experiment}"]).hydra.runtime.choices
    kind = "transformer" if "transformer" in choices["teacher"] else "cnn"
    return [f"++{o}" for o in TINY[kind][tool]]


def source_experiment(experiment: str) -> str | None:
    """The experiment whose student this one starts from (``distill.init_student``'s default,
    ``<outputs>/<source experiment>/<run>``), or None."""
    if target_of(experiment) != "distill":
        return None
    source = compose("distill", [f"experiment={experiment}"]).distill.get("init_student")
    return Path(source).parent.name if source else None


def skip_family_without_data(experiments: list[str], monkeypatch, root: Path) -> None:
    """Compose and check the first experiment in process: no subprocess for data we lack."""
    monkeypatch.setenv("ARCHNET_ROOT", str(root))
    primary = target_of(experiments[0])
    validate_or_skip(primary, compose(primary, [f"experiment={experiments[0]}", "debug=fast",
                                                "teacher.checkpoint=null"]))


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_experiment_runs_with_debug_fast(family, shared_root, h, monkeypatch):
    """Per family: the header's teacher command, then every experiment of the family in one
    ``-m`` sweep, with ``debug=fast`` and the tiny limits above: exit 0, and one
    metrics.json with test metrics (distill) or search.json (search) per experiment."""
    import json

    experiments = FAMILIES[family]
    if DATA_DIR.is_dir():
        monkeypatch.setenv("ARCHNET_DATA", str(DATA_DIR))
    skip_family_without_data(experiments, monkeypatch, shared_root)
    tool = target_of(experiments[0])
    teacher = h.run_cli("teacher", [*teacher_args(experiments[0]), "debug=fast", "logger=none",
                                    *tiny_overrides(experiments[0], "teacher")], shared_root, timeout=1800)
    assert teacher.returncode == 0, teacher.stderr[-5000:]
    outputs = shared_root / "outputs"
    result = "search.json" if tool == "search" else "metrics.json"
    before = set(outputs.rglob(result))
    chained = {e: source for e in experiments if (source := source_experiment(e))}
    plain = [e for e in experiments if e not in chained]
    proc = h.run_cli(tool, ["-m", "experiment=" + ",".join(plain), "debug=fast", "logger=none",
                            *tiny_overrides(experiments[0], tool)], shared_root, timeout=3600)
    assert proc.returncode == 0, proc.stderr[-5000:]
    for experiment, source in chained.items():  # after its source, from the source's run
        runs = [p.parent for p in set(outputs.rglob(result)) - before if (p.parent / "stages").is_dir()
                and json.loads(p.read_text())["experiment"] == source]
        assert len(runs) == 1, (experiment, source, runs)
        proc = h.run_cli(tool, [f"experiment={experiment}", f"distill.init_student={runs[0]}",
                                "debug=fast", "logger=none", *tiny_overrides(experiment, tool)],
                         shared_root, timeout=3600)
        assert proc.returncode == 0, proc.stderr[-5000:]
    new = sorted(set(outputs.rglob(result)) - before)
    if tool == "distill":
        new = [p for p in new if (p.parent / "stages").is_dir()]
    assert len(new) == len(experiments), (experiments, new)
    names = set()
    for path in new:
        doc = json.loads(path.read_text())
        if tool == "search":
            assert doc["selected"]["macs"] > 0, doc["selected"]
        else:
            assert any(k.startswith("test/") for k in doc["student"]), doc["student"]
        names.add(doc["experiment"])
    assert names == set(experiments)
