"""The command table: every runtime command declares its options next to its handler, the
parser lists exactly the documented commands and flags, every sftc error derives from
`SftcError`, and an `SftcError` from a handler ends the command with its code, shown once."""

from __future__ import annotations

import argparse
import importlib
import inspect
import pkgutil

import pytest

import runtime
import sftlang
from runtime.commands import COMMANDS, ExitCode, run_command
from runtime.plan.sftc_error import SftcError
from sftlang.cli import build_parser, main

# Exceptions defined in runtime/ and sftlang/ that are not shown as `error: <message>`.
NOT_SFTC_ERRORS = {
    "sftlang.columns.ColumnsError": "a sample's columns cannot be read: `sftc check` turns it into a diagnostic",
    "runtime.plan.data_errors.RowProblem": "one row's problem, made a BadRowError or a skip count by the caller",
    "runtime.evaluate.metrics._NotJSON": "control flow inside a metric (caught as ValueError there)",
    "runtime.review.app.BadRequest": "an HTTP 400 answer of the review server, never a command's error",
    "runtime.review.corrections._Refused": "one correction refused, collected into the export's report",
}

# `sftc <command> --help`: its option strings and positionals, as documented.
COMMAND_FLAGS = {
    "check": ["SPEC", "--format", "--devices", "--offline"],
    "fmt": ["SPEC", "--check", "--diff"],
    "diff": ["A", "B", "--format"],
    "plan": ["SPEC", "--json"],
    "preview": ["SPEC", "-n", "--source", "--tokens", "--json"],
    "audit": ["SPEC", "--json", "--near", "--topics", "--source", "--run", "--chart"],
    "run": [
        "SPEC",
        "--fresh",
        "--export",
        "--coordinator",
        "--num-processes",
        "--process-id",
        "--distributed",
    ],
    "eval": ["RUN", "--spec", "--step", "--benchmarks", "--include", "--limit", "--num-fewshot"],
    "generate": [
        "RUN",
        "--prompt",
        "--file",
        "--json",
        "--source",
        "--step",
        "--max-new-tokens",
        "--temperature",
        "--top-p",
        "--top-k",
        "--seed",
    ],
    "chat": ["RUN", "--source", "--step", "--max-new-tokens", "--temperature", "--top-p", "--top-k", "--seed"],
    "export": ["RUN", "--format", "--quant", "--step", "OUT"],
    "review": ["RUN", "--port", "--host", "--token", "--reviewer", "--blind", "--export", "--export-pairs"],
    "bench": ["SPEC", "--steps", "--json"],
}


def _modules(package):
    yield package
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        yield importlib.import_module(info.name)


def test_every_error_class_derives_from_sftc_error_or_says_why_not():
    found = {}
    for package in (sftlang, runtime):
        for module in _modules(package):
            for name, value in vars(module).items():
                if inspect.isclass(value) and issubclass(value, Exception) and value.__module__ == module.__name__:
                    found[f"{module.__name__}.{name}"] = value
    assert "runtime.plan.data_errors.DataError" in found  # the walk reached the packages
    strays = sorted(
        name
        for name, cls in found.items()
        if cls is not SftcError and not issubclass(cls, SftcError) and name not in NOT_SFTC_ERRORS
    )
    assert strays == [], "derive these from SftcError, or list them in NOT_SFTC_ERRORS with a reason"
    stale = sorted(set(NOT_SFTC_ERRORS) - set(found))
    assert stale == []


def test_errors_keep_the_second_bases_their_callers_catch():
    from runtime.platform.distributed import JoinError, LaunchError
    from runtime.platform.mesh import MeshError

    assert issubclass(MeshError, ValueError) and issubclass(LaunchError, ValueError)
    assert issubclass(JoinError, RuntimeError)
    assert SftcError("x").exit_code == ExitCode.FAIL and SftcError("x").help is None


def test_every_runtime_command_module_declares_its_command():
    for name in COMMANDS:
        module = importlib.import_module(f"runtime.commands.sftc_{name}")
        assert module.NAME == name
        assert isinstance(module.HELP, str) and module.HELP
        assert isinstance(module.TAKES_SPEC, bool)
        assert callable(module.add_arguments) and callable(module.main)


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def test_the_parser_lists_exactly_the_documented_commands_and_flags():
    commands = _subparsers(build_parser())
    assert list(commands) == list(COMMAND_FLAGS)
    for name, parser in commands.items():
        flags = []
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            flags.extend(action.option_strings or [action.metavar or action.dest])
        assert flags == COMMAND_FLAGS[name], name


def test_exit_codes_keep_their_values():
    assert [int(code) for code in ExitCode] == [0, 1, 2, 3, 130]


def _raises(error: BaseException):
    def handler(args, console, *rest):
        raise error

    return handler


def test_an_sftc_error_in_a_handler_exits_with_its_code_and_is_shown_once(capsys):
    code = run_command(_raises(SftcError("the data is gone", exit_code=ExitCode.USAGE)), argparse.Namespace())
    assert code == ExitCode.USAGE
    err = capsys.readouterr().err
    assert err.count("error: the data is gone") == 1 and err.count("error") == 1


def test_an_sftc_error_shows_its_help_line(capsys):
    assert run_command(_raises(SftcError("no checkpoint", help="run it first")), argparse.Namespace()) == 1
    assert capsys.readouterr().err.splitlines() == ["error: no checkpoint", "  = help: run it first"]


def test_ctrl_c_in_a_handler_exits_130(capsys):
    assert run_command(_raises(KeyboardInterrupt()), argparse.Namespace()) == 130


def test_a_bug_in_a_handler_is_one_line_and_a_traceback_file(capsys, monkeypatch, tmp_path):
    monkeypatch.delenv("SFTC_DEBUG", raising=False)
    monkeypatch.setenv("SFTC_CACHE", str(tmp_path))
    assert run_command(_raises(ZeroDivisionError("oops")), argparse.Namespace()) == 1
    err = capsys.readouterr().err
    assert err.count("error: sftc failed unexpectedly: ZeroDivisionError: oops") == 1


@pytest.mark.parametrize("code", [ExitCode.FAIL, ExitCode.USAGE])
def test_sftc_exits_with_the_code_of_an_error_a_command_raises(monkeypatch, tmp_path, capsys, code):
    import runtime.commands.sftc_export as export

    def failing(args, console):
        raise SftcError(f"{args.run_dir}: not a run", exit_code=code)

    monkeypatch.setattr(export, "main", failing)
    assert main(["export", str(tmp_path / "nowhere"), str(tmp_path / "out")]) == code
    err = capsys.readouterr().err
    assert err.count(f"error: {tmp_path / 'nowhere'}: not a run") == 1
