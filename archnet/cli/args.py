"""Hydra-style ``key=value`` command lines for the small deploy tools (no Hydra run directory).

``parse_kv(argv, known)`` returns ``{key: value}`` for keys in ``known`` and the dotted
overrides under a prefix (``profile.bits.weights=[2,4]``); anything else is a
:class:`~archnet.errors.ConfigError` (one line, exit status 2).
"""
from __future__ import annotations

from collections.abc import Sequence

from archnet.errors import ConfigError


def parse_kv(argv: Sequence[str], known: Sequence[str],
             prefixes: Sequence[str] = ()) -> tuple[dict[str, str], dict[str, list[str]]]:
    """Split ``key=value`` tokens into known keys and ``prefix.<rest>=value`` overrides."""
    values: dict[str, str] = {}
    overrides: dict[str, list[str]] = {p: [] for p in prefixes}
    for token in argv:
        key, eq, value = token.partition("=")
        key = key.lstrip("+")
        if not eq or not key:
            raise ConfigError("argument", token, "key=value (e.g. model=student.onnx)")
        head, dot, rest = key.partition(".")
        if dot and head in overrides:
            overrides[head].append(f"{rest}={value}")
        elif key in known:
            values[key] = value
        else:
            raise ConfigError(key, value, "one of " + ", ".join(list(known) + [f"{p}.<key>" for p in prefixes]))
    return values, overrides
