"""labs/common/config.py: a typed dataclass becomes the lab's command line (flags, presets, errors)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pytest

from labs.common.config import (
    ConfigError,
    build_parser,
    check_bounds,
    config_diff,
    flag_name,
    param,
    parse_config,
)


@dataclass
class Demo:
    batch_size: int = param(8, "samples per step")
    lr: float = param(0.1, "peak learning rate")
    run_name: str = param("run", "a label for the output")
    device: Literal["auto", "cpu", "cuda"] = param("auto", "where to train")
    ema: bool = param(True, "keep an exponential moving average of the weights")
    smoke: bool = param(False, "preset: a tiny run")

    def __post_init__(self) -> None:
        check_bounds(self, positive="batch_size", non_negative="lr")


PRESETS = {"smoke": {"batch_size": 2, "run_name": "smoke"}}


def parse(argv: list[str]) -> Demo:
    return parse_config(Demo, argv, presets=PRESETS)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([], {"batch_size": 8, "lr": 0.1, "run_name": "run", "device": "auto", "ema": True}),
        (["--batch-size", "16", "--lr", "3e-4"], {"batch_size": 16, "lr": 3e-4}),
        (["--lr=0"], {"lr": 0.0}),  # the bound is inclusive
        (["--device", "cpu"], {"device": "cpu"}),
        (["--no-ema"], {"ema": False}),
        (["--smoke"], {"smoke": True, "batch_size": 2, "run_name": "smoke"}),
        (["--smoke", "--batch-size", "4"], {"batch_size": 4, "run_name": "smoke"}),
        (["--batch-size", "4", "--smoke"], {"batch_size": 4}),  # explicit wins in any order
        (["--no-smoke"], {"smoke": False, "batch_size": 8}),  # a preset switched off is off
        (["--batch_size", "3"], {"batch_size": 3}),  # the field name's spelling
        (["--run_name=my_run"], {"run_name": "my_run"}),  # only the flag's name is respelt
    ],
)
def test_defaults_then_presets_then_explicit_flags(argv, expected):
    cfg = parse(argv)
    assert {k: getattr(cfg, k) for k in expected} == expected


def test_no_argv_reads_the_process_command_line(monkeypatch):
    monkeypatch.setattr("sys.argv", ["lab.py", "--batch-size", "5"])
    assert parse(None).batch_size == 5


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["--batch-size", "many"], "--batch-size"),  # not an int
        (["--lr", "fast"], "--lr"),
        (["--device", "tpu"], "--device"),  # not one of the choices
        (["--lr"], "--lr"),  # no value
        (["--epochs", "3"], "--epochs"),  # not a field
    ],
)
def test_malformed_flags_exit_2_naming_the_flag(capsys, argv, flag):
    with pytest.raises(SystemExit) as e:
        parse(argv)
    assert e.value.code == 2
    assert flag in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "field", "message"),
    [
        (["--batch-size", "0"], "batch_size", "--batch-size: must be >= 1 (got 0)"),
        (["--lr", "-0.5"], "lr", "--lr: must be >= 0 (got -0.5)"),
        (["--smoke", "--batch-size", "-1"], "batch_size", "--batch-size: must be >= 1 (got -1)"),
    ],
)
def test_out_of_bounds_values_raise_a_config_error_naming_the_field(argv, field, message):
    with pytest.raises(ConfigError) as e:
        parse(argv)
    assert e.value.field == field and str(e.value) == message
    assert isinstance(e.value, ValueError)


def test_check_bounds_names_the_first_bad_field():
    @dataclass
    class Two:
        a: int = 0
        b: int = 0

    with pytest.raises(ConfigError) as e:
        check_bounds(Two(), positive="a b")
    assert e.value.field == "a"
    check_bounds(Two(a=1, b=1), positive="a b", non_negative="a b")  # in bounds: no error


@pytest.mark.parametrize(
    ("value", "kind", "message"),
    [
        (0.0, "above_zero", "must be > 0 (got 0.0)"),
        (-1e-9, "above_zero", "must be > 0"),
        (float("nan"), "above_zero", "must be > 0 (got nan)"),
        (1.0, "fraction", "must be in [0, 1) (got 1.0)"),
        (-0.1, "fraction", "must be in [0, 1)"),
        (float("nan"), "fraction", "must be in [0, 1) (got nan)"),
        (1e-9, "above_zero", None),
        (0.0, "fraction", None),
        (0.999, "fraction", None),
    ],
)
def test_check_bounds_on_reals_refuses_nan_too(value, kind, message):
    @dataclass
    class Real:
        x: float = 0.5

    if message is None:
        check_bounds(Real(x=value), **{kind: "x"})
        return
    with pytest.raises(ConfigError) as e:
        check_bounds(Real(x=value), **{kind: "x"})
    assert e.value.field == "x" and message in str(e.value)


def test_help_is_generated_from_the_fields():
    help_text = build_parser(Demo, prog="demo").format_help()
    assert "--batch-size INT" in help_text and "samples per step (default: 8)" in help_text
    assert "{auto,cpu,cuda}" in help_text
    assert "--ema, --no-ema" in help_text


def test_an_unsupported_field_type_is_refused_naming_the_field():
    @dataclass
    class Bad:
        sizes: list = param(None, "not expressible as one flag")

    with pytest.raises(TypeError, match="Bad.sizes"):
        build_parser(Bad)


@pytest.mark.parametrize(
    ("field", "flag"), [("batch_size", "--batch-size"), ("lr", "--lr"), ("a_b_c", "--a-b-c")]
)
def test_flag_name(field, flag):
    assert flag_name(field) == flag


@pytest.mark.parametrize(
    ("old", "new", "ignore", "diff"),
    [
        ({"lr": 0.1, "steps": 10}, {"lr": 0.1, "steps": 10}, (), {}),
        ({"lr": 0.1, "steps": 10}, {"lr": 0.2, "steps": 10}, (), {"lr": (0.1, 0.2)}),
        ({"lr": 0.1, "out_dir": "a"}, {"lr": 0.1, "out_dir": "b"}, ("out_dir",), {}),
        ({"lr": 0.1}, {"lr": 0.1, "new_field": 1}, (), {}),  # a field an older run did not have
        ({"lr": 0.1, "gone": 1}, {"lr": 0.1}, (), {}),
    ],
    ids=["same", "changed", "ignored", "added", "removed"],
)
def test_config_diff_reports_only_changed_shared_fields(old, new, ignore, diff):
    assert config_diff(old, new, ignore) == diff
