"""Shared entry-point plumbing: check the command line and the composed config *before*
Hydra creates a run directory, then hand over to ``@hydra.main``.

Bad input (unknown group option, bad value, missing path) prints one line on stderr and
exits with status 2; nothing is written. ``HYDRA_FULL_ERROR=1`` shows tracebacks.
"""
from __future__ import annotations

import itertools
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException, InstantiationException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from archnet.errors import ConfigError, exit_bad_input, find_config_error

CONF_DIR = str(Path(__file__).resolve().parents[2] / "conf")
FLAGS_WITHOUT_RUN = ("--cfg", "-c", "--help", "-h", "--hydra-help", "--info", "-i",
                     "--shell-completion", "-sc", "--resolve", "--package", "-p",
                     "--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd",
                     "--experimental-rerun", "--version")


def group_options(group: str) -> list[str]:
    folder = Path(CONF_DIR) / group
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def _job_overrides(argv: list[str]) -> tuple[list[list[str]], bool]:
    """Expand sweeps (``k=a,b``) into one override list per job; check group options."""
    overrides = [a for a in argv if not a.startswith("-")]
    parser = OverridesParser.create()
    for text in overrides:  # one line naming the override Hydra's grammar cannot parse
        try:
            parser.parse_overrides([text])
        except HydraException as e:
            raise ConfigError("override", text, "key=value in Hydra's override grammar ("
                              + str(e).splitlines()[0].split(":")[0] + ")") from None
    parsed = parser.parse_overrides(overrides)
    choices: list[list[str]] = []
    for ov in parsed:
        key = ov.key_or_group
        values = [str(v) for v in ov.sweep_string_iterator()] if ov.is_sweep_override() else [
            ov.get_value_element_as_str() if not ov.is_delete() else None]
        group = key.split("@")[0]
        options = group_options(group) if not group.startswith("hydra") else []
        if options:
            for v in values:
                if v not in options and v not in ("null", None):
                    raise ConfigError(group, v, options)
        prefix = ("~" if ov.is_delete() else "+" if ov.is_add() else "++" if ov.is_force_add() else "")
        choices.append([f"{prefix}{key}={v}" if v is not None else f"{prefix}{key}" for v in values])
    return [list(c) for c in itertools.product(*choices)], len(parsed) > 0


def precheck(config_name: str, argv: list[str], validate: Callable[[DictConfig], None]) -> None:
    if any(a in FLAGS_WITHOUT_RUN or a.split("=")[0] in FLAGS_WITHOUT_RUN for a in argv):
        return  # Hydra prints or explains; nothing runs, nothing is written
    jobs, _ = _job_overrides(argv)
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        for overrides in jobs:
            try:
                cfg = compose(config_name, overrides=overrides)
            except HydraException as e:
                raise ConfigError("overrides", " ".join(overrides), str(e).splitlines()[0]) from None
            try:
                validate(cfg)
            except (OmegaConfBaseException, InstantiationException) as e:
                raise _as_config_error(e) from None
    GlobalHydra.instance().clear()


def _as_config_error(exc: Exception) -> ConfigError:
    """A config that composes but cannot be resolved or instantiated is bad input too: a
    missing interpolation key, or a constructor rejecting its arguments."""
    found = find_config_error(exc)
    if found is not None:
        return found
    cause = exc.__cause__ if isinstance(exc, InstantiationException) and exc.__cause__ else exc
    text = str(cause).splitlines()[0] if str(cause) else ""
    missing = re.search(r"Interpolation key '([^']+)' not found", str(exc))
    if missing:  # a node refers to a key that the chosen options do not define
        return ConfigError(missing.group(1), None, "a key the composed config defines "
                           "(these options do not fit together)")
    where = re.search(r"full_key: (\S+)", str(exc))
    key = getattr(exc, "full_key", None) or (where.group(1) if where else "config")
    target = re.search(r"target '([^']+)'", str(exc))
    return ConfigError(key, target.group(1) if target else None, f"{type(cause).__name__}: {text}")


def run_cli(config_name: str, task: Callable[[DictConfig], Any],
            validate: Callable[[DictConfig], None]) -> None:
    """Validate every job of the command line, then run ``task`` under ``@hydra.main``."""
    from archnet.cli.quiet import quiet_third_party

    quiet_third_party()
    try:
        precheck(config_name, sys.argv[1:], validate)
    except Exception as e:
        _exit_if_bad_input(e)
        raise

    @hydra.main(config_path=CONF_DIR, config_name=config_name, version_base="1.3")
    def _main(cfg: DictConfig) -> Any:
        try:
            return task(cfg)
        except Exception as e:
            _exit_if_bad_input(e)
            raise

    _main()


def _exit_if_bad_input(exc: BaseException) -> None:
    err = find_config_error(exc)
    if err is not None:
        exit_bad_input(err)


def run_dir() -> Path:
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir)
