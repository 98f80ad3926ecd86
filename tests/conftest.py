"""Shared fixtures: composed configs, a tiny trained teacher (trained once per session),
an isolated ``ARCHNET_ROOT`` per test, and CLI helpers.

W&B never touches the network: ``WANDB_MODE=offline`` and ``WANDB_SILENT=true`` are set
for the whole session (and inherited by every subprocess started from a test).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

# One intra-op thread: the test machine's 2 cores are shared, and oversubscribed OpenMP
# threads make every convolution 10x slower. Subprocesses inherit it (see cli_env).
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
_SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
if _SHARED_DATA.is_dir():  # tests run with an ARCHNET_ROOT in tmp; the data stays where it is
    os.environ.setdefault("ARCHNET_DATA", str(_SHARED_DATA))
os.environ["WANDB_MODE"] = "offline"
os.environ["WANDB_SILENT"] = "true"
os.environ.setdefault("WANDB_DISABLE_GIT", "true")
os.environ.setdefault("WANDB_DISABLE_CODE", "true")

import torch  # noqa: E402  (after the thread settings above)

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TEACHER_NAME = "tiny_resnet_synthetic_seed{seed}.pt"


def compose(config_name: str = "distill", overrides: list[str] | None = None):
    """The composed config ``config_name`` with ``overrides`` (reads ``$ARCHNET_ROOT``)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from archnet.cli.app import CONF_DIR

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return hydra_compose(config_name, overrides=list(overrides or []), return_hydra_config=False)


@pytest.fixture(scope="session")
def compose_cfg() -> Callable:
    return compose


@pytest.fixture(scope="session")
def script_module() -> Callable:
    """``load(name)`` imports ``scripts/<name>.py`` as a module (the scripts are no package)."""
    import importlib.util

    def load(name: str):
        spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load


def teacher_path(root: Path, seed: int = 0) -> Path:
    return Path(root) / "outputs" / "teachers" / TEACHER_NAME.format(seed=seed)


@pytest.fixture(scope="session")
def trained_teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny_resnet teacher trained for one epoch on 512 synthetic images (seed 0)."""
    root = tmp_path_factory.mktemp("teacher_root")
    mp = pytest.MonkeyPatch()
    mp.setenv("ARCHNET_ROOT", str(root))
    try:
        from archnet.teacher.runner import run_teacher

        cfg = compose("teacher", ["debug=fast", "progress=false"])
        run_teacher(cfg, root / "teacher_run")
    finally:
        mp.undo()
    path = teacher_path(root)
    assert path.is_file()
    return path


def make_root(path: Path, trained_teacher: Path) -> Path:
    """``path`` as an ``ARCHNET_ROOT`` holding the seed-0 teacher at its default place."""
    dest = teacher_path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(trained_teacher, dest)
    return Path(path)


@pytest.fixture
def root(tmp_path: Path, trained_teacher: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty ``ARCHNET_ROOT`` (set in the environment) holding the seed-0 teacher."""
    make_root(tmp_path, trained_teacher)
    monkeypatch.setenv("ARCHNET_ROOT", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def cli_env(root: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(ARCHNET_ROOT=str(root), WANDB_MODE="offline", WANDB_SILENT="true",
               PYTHONWARNINGS="ignore")
    env.pop("HYDRA_FULL_ERROR", None)
    return env


def run_cli(tool: str, args: list[str], root: Path, timeout: float = 300,
            check: bool = False) -> subprocess.CompletedProcess:
    """Run ``archnet-<tool> args...`` in ``root`` with ``ARCHNET_ROOT=root``."""
    proc = subprocess.run([str(BIN / f"archnet-{tool}"), *args], env=cli_env(root), cwd=root,
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"archnet-{tool} {' '.join(args)} exited {proc.returncode}\n"
                             f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-5000:]}")
    return proc


_THIS = sys.modules[__name__]


@pytest.fixture(scope="session")
def h():
    """This module: the shared helpers (``h.distill``, ``h.run_cli``, ``h.SMOKE``...).

    Test modules cannot ``import conftest``: other folders have their own conftest.py."""
    return _THIS


# schedule=smoke at a quarter of its budget: 2 stages x 4 steps of 16 samples, chunks of 2
SMOKE = ["debug=fast", "schedule=smoke", "schedule.scale=0.25", "distill.batch_size=16",
         "distill.chunk_steps=2", "distill.log_every=1", "logger=none", "progress=false"]


def distill(run_dir: Path, overrides: list[str], extra_callbacks: list | None = None) -> dict:
    """``run_distill`` in this process on the composed distill config (``$ARCHNET_ROOT`` set)."""
    from archnet.distill.runner import run_distill

    cfg = compose("distill", overrides)
    return run_distill(cfg, run_dir, extra_callbacks=extra_callbacks)


def distill_fresh(tmp_path_factory: pytest.TempPathFactory, trained_teacher: Path, name: str,
                  overrides: list[str]) -> tuple[Path, dict]:
    """:func:`distill` into ``<a new ARCHNET_ROOT named name>/run`` (the environment restored
    after): for module-scoped fixtures, which cannot use ``monkeypatch``."""
    root = make_root(tmp_path_factory.mktemp(name), trained_teacher)
    mp = pytest.MonkeyPatch()
    mp.setenv("ARCHNET_ROOT", str(root))
    try:
        run_dir = root / "run"
        return run_dir, distill(run_dir, overrides)
    finally:
        mp.undo()


def stage_dirs(run_dir: Path) -> list[Path]:
    return sorted(p for p in (Path(run_dir) / "stages").iterdir() if p.is_dir())


def load(path: Path):
    import torch

    return torch.load(path, map_location="cpu", weights_only=False)


@pytest.fixture
def data_or_skip():
    """A context manager: a ConfigError about a data path that does not exist skips the test."""
    import contextlib

    from archnet.errors import find_config_error

    @contextlib.contextmanager
    def guard():
        try:
            yield
        except Exception as e:
            err = find_config_error(e)
            if err is not None and str(err.key).startswith("data") and err.value \
                    and not Path(str(err.value)).exists():
                pytest.skip(f"data not on this machine ({err})")
            raise

    return guard
