"""Typed training configs and the command line generated from them.

A lab declares ONE dataclass; every field has a type, a default and a help text that states its
unit and why it exists (`param(default, "...")`). `parse_config` turns that dataclass into an
argparse command line, so the flags, their types, their choices and `--help` can never drift from
the code that reads them:

    int/float/str   -> --batch-size 128
    Literal[...]    -> --device {auto,cpu,cuda}
    bool            -> --ema / --no-ema

Presets are bool fields (e.g. `smoke`) that switch a bundle of values. They are applied first and
explicit flags are applied after them, so `--smoke --epochs 5` means "smoke, but 5 epochs".
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Mapping, Sequence
from typing import Any, Literal, TypeVar, get_args, get_origin, get_type_hints

T = TypeVar("T")


class ConfigError(ValueError):
    """An invalid config value. The message starts with the flag to fix, e.g. `--batch-size`."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{flag_name(field)}: {message}")
        self.field = field


def check_bounds(
    cfg: Any,
    *,
    positive: str = "",
    non_negative: str = "",
    above_zero: str = "",
    fraction: str = "",
) -> None:
    """ConfigError naming the first field out of bounds (each argument: space-separated names).

    `positive` counts must be >= 1, `non_negative` ones >= 0; `above_zero` reals must be > 0 and
    `fraction` reals in [0, 1). The real checks are written `not (...)` so NaN fails them too.
    """
    for names, low in ((positive, 1), (non_negative, 0)):
        for name in names.split():
            if getattr(cfg, name) < low:
                raise ConfigError(name, f"must be >= {low} (got {getattr(cfg, name)})")
    for name in above_zero.split():
        if not getattr(cfg, name) > 0:
            raise ConfigError(name, f"must be > 0 (got {getattr(cfg, name)})")
    for name in fraction.split():
        if not 0 <= getattr(cfg, name) < 1:
            raise ConfigError(name, f"must be in [0, 1) (got {getattr(cfg, name)})")


def param(default: Any, help: str) -> Any:
    """A dataclass field whose help text (unit + why) becomes the flag's `--help` line."""
    return dataclasses.field(default=default, metadata={"help": help})


def flag_name(field: str) -> str:
    """`batch_size` -> `--batch-size`."""
    return "--" + field.replace("_", "-")


def build_parser(
    cls: type, *, prog: str | None = None, description: str | None = None
) -> argparse.ArgumentParser:
    """An argparse parser with one flag per dataclass field.

    Every default is `argparse.SUPPRESS`, so the parsed namespace holds only the flags the user
    actually typed; that is what lets explicit flags win over presets.
    """
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description,
        argument_default=argparse.SUPPRESS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    hints = get_type_hints(cls)
    for f in dataclasses.fields(cls):
        kind = hints[f.name]
        help_text = f"{f.metadata.get('help', '')} (default: {f.default})"
        if kind is bool:
            parser.add_argument(
                flag_name(f.name), action=argparse.BooleanOptionalAction, help=help_text
            )
        elif get_origin(kind) is Literal:
            choices = get_args(kind)
            parser.add_argument(
                flag_name(f.name), type=type(choices[0]), choices=choices, help=help_text
            )
        elif kind in (int, float, str):
            parser.add_argument(
                flag_name(f.name), type=kind, metavar=kind.__name__.upper(), help=help_text
            )
        else:  # pragma: no cover - a lab author error, caught the first time the lab runs
            raise TypeError(f"{cls.__name__}.{f.name}: unsupported field type {kind!r}")
    return parser


def _dashes(argv: Sequence[str]) -> list[str]:
    """Accept `--batch_size` as a spelling of `--batch-size` (the field name people copy)."""
    out = []
    for arg in argv:
        if arg.startswith("--"):
            name, eq, value = arg.partition("=")
            arg = name.replace("_", "-") + eq + value
        out.append(arg)
    return out


def parse_config(
    cls: type[T],
    argv: Sequence[str] | None,
    *,
    presets: Mapping[str, Mapping[str, Any]] | None = None,
    prog: str | None = None,
    description: str | None = None,
) -> T:
    """Build `cls` from a command line: dataclass defaults < active presets < explicit flags.

    argparse exits with code 2 on a malformed flag; a value the dataclass rejects raises
    `ConfigError` (the caller turns it into exit code 2 as well).
    """
    parser = build_parser(cls, prog=prog, description=description)
    explicit = vars(parser.parse_args(_dashes(sys.argv[1:] if argv is None else argv)))
    values: dict[str, Any] = {}
    for name, preset in (presets or {}).items():
        if explicit.get(name):
            values.update(preset)
    values.update(explicit)
    return cls(**values)


def config_diff(old: Mapping[str, Any], new: Mapping[str, Any], ignore: Sequence[str] = ()) -> dict:
    """Fields whose values differ, as {field: (old, new)}; used to warn when a resume changes them."""
    return {
        k: (old.get(k), v)
        for k, v in new.items()
        if k not in ignore and k in old and old.get(k) != v
    }
