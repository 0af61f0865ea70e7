"""`textclf` behaves like other command-line tools: help on stdout, clear usage errors,
a version, help text for every option of every command."""

from __future__ import annotations

import argparse
import importlib
import re
import subprocess

import pytest

from textclf import cli


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as stopped:
        cli.main(list(argv))
    out, err = capsys.readouterr()
    return stopped.value.code, out, err


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_goes_to_stdout_and_lists_every_command(capsys, flag):
    code, out, err = run_cli(capsys, flag)

    assert code == 0 and err == ""
    assert out.startswith("usage: textclf")
    for command, summary in cli.COMMANDS.items():
        assert f"  {command} " in out and summary in out


def test_the_installed_entry_point_prints_help():
    result = subprocess.run(["textclf", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "commands:" in result.stdout and result.stderr == ""


def test_unknown_command_is_named_with_the_usage(capsys):
    code, out, err = run_cli(capsys, "trian")

    assert code == 2 and out == ""
    assert err.startswith("usage: textclf") and "unknown command 'trian'" in err
    assert "train" in err                                    # the choices are listed


def test_no_command_is_a_usage_error(capsys):
    code, out, err = run_cli(capsys)
    assert code == 2 and out == "" and "usage: textclf" in err and "a command is required" in err


def test_version(capsys):
    from importlib.metadata import version

    code, out, _ = run_cli(capsys, "--version")
    assert code == 0 and out == f"textclf {version('textclf')}\n"


def command_modules():
    """(command, module) for each command whose module exists yet."""
    found = []
    for command in cli.COMMANDS:
        try:
            found.append(pytest.param(command, importlib.import_module(cli.module_name(command)),
                                      id=command))
        except ModuleNotFoundError as err:
            if err.name != cli.module_name(command):     # a missing dependency is a failure
                raise
            found.append(pytest.param(command, None, id=command, marks=pytest.mark.skip(
                reason=f"{cli.module_name(command)} does not exist yet")))
    return found


class _Parsed(Exception):
    """Stops a command's main() at parse time, before it does any work."""


def declared_arguments(module, monkeypatch) -> list[tuple[str, dict]]:
    """Every argument the command's parser (and its sub-parsers) declares: (name, kwargs)."""
    declared = []
    add_argument = argparse.ArgumentParser.add_argument

    def recording(self, *names, **kwargs):
        declared.append((names[0] if names else kwargs.get("dest", "?"), kwargs))
        return add_argument(self, *names, **kwargs)

    def stop(self, *args, **kwargs):
        raise _Parsed

    monkeypatch.setattr(argparse.ArgumentParser, "add_argument", recording)
    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", stop)
    monkeypatch.setattr(argparse.ArgumentParser, "parse_known_args", stop)
    with pytest.raises(_Parsed):
        module.main(["--help"])
    return declared


@pytest.mark.parametrize("command, module", command_modules())
def test_every_option_of_every_command_has_help(command, module, monkeypatch):
    declared = declared_arguments(module, monkeypatch)

    assert declared, f"textclf {command} declares no arguments"
    missing = [name for name, kwargs in declared
               if not kwargs.get("help") or kwargs.get("help") == argparse.SUPPRESS
               and name not in ("-h", "--help")]
    assert not missing, f"textclf {command}: no help text for {missing}"


@pytest.mark.parametrize("command, module", command_modules())
def test_no_numeric_option_takes_what_int_or_float_would(command, module, monkeypatch):
    """`type=float` takes "nan", "inf" and "1e13"; textclf.flags' types take a finite number
    in range, so every numeric option uses one of them (tests/test_flags.py)."""
    bare = [name for name, kwargs in declared_arguments(module, monkeypatch)
            if kwargs.get("type") in (int, float)]
    assert not bare, f"textclf {command}: {bare} use type=int or float; use textclf.flags"


@pytest.mark.parametrize("command, module", command_modules())
def test_help_shows_what_a_user_needs_not_the_modules_internal_notes(command, module, capsys):
    with pytest.raises(SystemExit) as stopped:
        module.main(["--help"])
    out, _ = capsys.readouterr()

    assert stopped.value.code == 0 and out.startswith(f"usage: textclf {command}")
    # Notes for people reading the code talk about the code: which function is pure, which
    # one does the I/O (e.g. "`build_report` is pure; `collect` reads ..."). Users cannot
    # act on them.
    own = [name for name, obj in vars(module).items()
           if callable(obj) and getattr(obj, "__module__", None) == module.__name__]
    called = [name for name in own if re.search(rf"\b{name}\(", out)]
    assert not called, f"textclf {command} --help names internal functions: {called}"
    for phrase in ("is pure", "entry point", "the core"):
        assert not re.search(rf"\b{phrase}\b", out), f"textclf {command} --help says {phrase!r}"


def test_usage_errors_and_data_errors_read_differently(tmp_path, monkeypatch, capsys):
    from textclf import report

    with pytest.raises(SystemExit) as usage:
        report.main(["--sort-by"])                           # a flag without its value
    _, err = capsys.readouterr()
    assert usage.value.code == 2 and err.startswith("usage: textclf report")
    assert "argument --sort-by: expected one argument" in err

    monkeypatch.chdir(tmp_path)                              # no DVC project here
    with pytest.raises(SystemExit) as data:
        report.main([])
    _, err = capsys.readouterr()
    assert data.value.code == 2 and err.startswith("error: ") and "usage:" not in err
    assert "Traceback" not in err and str(tmp_path) in err


def test_the_console_script_freezes_the_collector_on_the_way_out(monkeypatch, capsys):
    """`textclf` (the installed script) runs `main`, then gc.freeze() whatever happened, so
    the interpreter's exit skips its final collections; `main` itself never freezes."""
    import gc
    from importlib.metadata import entry_points

    (script,) = [e for e in entry_points(group="console_scripts") if e.name == "textclf"]
    assert script.value == "textclf.cli:run"
    frozen = []
    monkeypatch.setattr(gc, "freeze", lambda: frozen.append(True))
    for argv, code in ((["textclf", "--version"], 0), (["textclf", "no-such-command"], 2)):
        monkeypatch.setattr("sys.argv", argv)
        with pytest.raises(SystemExit) as stopped:
            cli.run()
        assert stopped.value.code == code
    assert frozen == [True, True]
    run_cli(capsys, "--version")
    assert frozen == [True, True]
