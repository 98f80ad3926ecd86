"""User-facing errors: one line on stderr, exit status 2, no traceback."""
from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import Any, NoReturn

EXIT_BAD_INPUT = 2


class ConfigError(ValueError):
    """A bad configuration value, reported as ``archnet: <key>=<value>: <what is allowed>``."""

    def __init__(self, key: str, value: Any, allowed: str | Iterable[Any]) -> None:
        if not isinstance(allowed, str):
            allowed = "one of " + ", ".join(str(a) for a in allowed)
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"{key}={value!r}: {allowed}")


def exit_bad_input(err: ConfigError) -> NoReturn:
    """Print ``err`` as one line and exit with status 2 (full traceback with HYDRA_FULL_ERROR=1)."""
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        raise err
    print(f"archnet: error: {err}", file=sys.stderr)
    sys.exit(EXIT_BAD_INPUT)


def find_config_error(exc: BaseException) -> ConfigError | None:
    """The ConfigError behind ``exc`` (e.g. wrapped by Hydra's instantiate), if any."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, ConfigError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return None
