"""``archnet-verify model=<file.onnx> [profile=archnet] [quant=<quant.json>] [profile.<key>=<value>]``

Checks an ONNX graph against a target profile (``conf/profile/<name>.yaml`` or a YAML path;
dotted overrides such as ``profile.bits.weights=[2,4]``). ``quant.json`` next to the model is
read when present. Prints the operator table (op type, count, allowed?) and every
violation. Exit status: 0 when nothing violates the profile, 1 when something does, 2 on
bad arguments (one line on stderr). Writes nothing.
"""
from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from archnet.errors import ConfigError, exit_bad_input

KEYS = ("model", "profile", "quant")


def print_result(result) -> None:
    """Rich table of op types and the list of violations."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=f"{result.model} vs profile {result.profile}")
    for col in ("op type", "count", "allowed?"):
        table.add_column(col)
    for row in result.rows:
        table.add_row(row.op_type, str(row.count), "yes" if row.allowed else "[red]no[/red]")
    console.print(table)
    if result.ok:
        console.print("[green]OK[/green]: the model fits the profile")
        return
    console.print(f"[red]{len(result.violations)} violation(s)[/red]:")
    for v in result.violations:
        console.print(f"  {v.node} ({v.op_type}): {v.why}", highlight=False, markup=False, soft_wrap=True)


def run_verify(argv: Sequence[str]):
    """Parse ``argv`` and verify; raises :class:`ConfigError` on bad arguments."""
    from archnet.cli.args import parse_kv
    from archnet.deploy.verify import verify_onnx

    values, overrides = parse_kv(argv, KEYS, prefixes=("profile",))
    model = values.get("model")
    if not model:
        raise ConfigError("model", model, "path to an .onnx file (model=<file.onnx>)")
    if not Path(model).is_file():
        raise ConfigError("model", model, "an existing .onnx file")
    quant = values.get("quant")
    if quant is not None and not Path(quant).is_file():
        raise ConfigError("quant", quant, "an existing quant.json file")
    try:
        return verify_onnx(model, values.get("profile", "archnet"), quant_json=quant,
                           overrides=overrides["profile"])
    except ConfigError:
        raise
    except Exception as err:
        raise ConfigError("model", model, f"a readable ONNX model ({type(err).__name__})") from err


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        sys.exit(0)
    try:
        result = run_verify(argv)
    except ConfigError as err:
        exit_bad_input(err)
    print_result(result)
    sys.exit(0 if result.ok else 1)


if __name__ == "__main__":
    main()
