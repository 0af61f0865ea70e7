"""Numeric command-line flags (textclf.flags): a finite number in range or a usage error naming
the flag, never "nan", "inf" or a huge value let through to hang or crash a command."""

from __future__ import annotations

import argparse

import pytest

from textclf import cli
from textclf.flags import integer, number, positive_int


@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf", "Infinity", "1e13", "-0.5",
                                   "abc", "", "0x10"])
def test_number_refuses_what_is_not_a_finite_number_in_range(value):
    with pytest.raises(argparse.ArgumentTypeError) as refused:
        number(0, 1e12)(value)
    assert str(refused.value) == f"expected a number between 0 and {1e12}, found {value!r}"


def test_number_takes_its_bounds_and_spacing():
    parse = number(0, 60_000)
    assert parse("0") == 0.0 and parse("60000") == 60_000.0 and parse(" 3 ") == 3.0
    assert parse("1e3") == 1000.0 and parse("2.5") == 2.5
    with pytest.raises(argparse.ArgumentTypeError, match="between 0 and 60000, found '60000.5'"):
        parse("60000.5")
    assert number(1)("1e300") == 1e300                        # no upper bound: any finite one
    with pytest.raises(argparse.ArgumentTypeError):
        number(1)("1e400")                                    # float("1e400") is inf


def test_number_above_low_excludes_the_low_bound():
    parse = number(0, 1, above_low=True)
    assert parse("1") == 1.0 and parse("1e-9") == 1e-9
    for value in ("0", "-0", "0.0", "nan"):
        with pytest.raises(argparse.ArgumentTypeError,
                           match=rf"expected a number above 0 and at most 1, found '{value}'"):
            parse(value)
    with pytest.raises(argparse.ArgumentTypeError, match="a number above 0, found"):
        number(0, above_low=True)("0")


@pytest.mark.parametrize("value", ["2.5", "1e3", "nan", "inf", "-inf", "0", "-3", "three", "",
                                   "100001", "10" * 20])
def test_integer_refuses_what_is_not_a_whole_number_in_range(value):
    with pytest.raises(argparse.ArgumentTypeError) as refused:
        integer(1, 100_000)(value)
    assert str(refused.value) == f"expected a whole number between 1 and 100000, found {value!r}"


def test_integer_takes_its_bounds_and_spacing():
    parse = integer(0, 2**32 - 1)
    assert parse("0") == 0 and parse(str(2**32 - 1)) == 2**32 - 1 and parse(" 3 ") == 3
    assert parse("+7") == 7
    with pytest.raises(argparse.ArgumentTypeError, match="between 0 and 4294967295"):
        parse(str(2**32))
    assert positive_int("1") == 1 and positive_int(str(10**30)) == 10**30
    with pytest.raises(argparse.ArgumentTypeError, match="a whole number at least 1, found '0'"):
        positive_int("0")


def test_a_bad_value_is_argparses_usage_error_naming_the_flag(capsys):
    parser = argparse.ArgumentParser(prog="tool")
    parser.add_argument("--max-wait-ms", type=number(0, 60_000))
    with pytest.raises(SystemExit) as stopped:
        parser.parse_args(["--max-wait-ms", "nan"])
    err = capsys.readouterr().err
    assert stopped.value.code == 2
    assert err.splitlines()[-1] == ("tool: error: argument --max-wait-ms: expected a number "
                                    "between 0 and 60000, found 'nan'")


# every numeric flag of the commands: `textclf COMMAND ... --flag nan` -----------------------

COMMAND_FLAGS = [   # (command and the arguments it needs to get as far as the flag, flag)
    (["predict", "a text"], "--batch-size"),
    (["predict", "--input", "in.csv", "--output", "out.csv"], "--chunk-size"),
    (["drift", "--current", "logs"], "--max-rows"),
    (["drift", "--current", "logs"], "--seed"),
    (["drift", "--current", "logs"], "--batch-size"),
    (["feedback", "report"], "--min-labels"),
    (["feedback", "report"], "--seed"),
]


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e13", "2.5"])
@pytest.mark.parametrize("argv, flag", COMMAND_FLAGS,
                         ids=[f"{argv[0]} {flag}" for argv, flag in COMMAND_FLAGS])
def test_each_numeric_flag_refuses_a_bad_value_with_a_usage_error(tmp_path, monkeypatch,
                                                                  capsys, argv, flag, value):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stopped:
        cli.main([*argv, f"{flag}={value}"])
    out, err = capsys.readouterr()
    assert stopped.value.code == 2 and out == ""
    assert "Traceback" not in err and err.startswith(f"usage: textclf {argv[0]}")
    assert f"error: argument {flag}: expected a" in err and f"found {value!r}" in err
    assert list(tmp_path.iterdir()) == []                  # refused before doing anything
