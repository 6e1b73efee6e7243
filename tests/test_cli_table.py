"""The ``diamond-env`` parser is built from a table of options dataclasses."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from diamond_env.cli.main import COMMANDS, build_parser, parse_command
from diamond_env.cli.options import CollectOptions, DatasetOptions, EvaluateOptions


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_option_is_a_field_of_its_command_class() -> None:
    subs = _subparsers(build_parser())
    assert list(subs) == [c.name for c in COMMANDS]
    for command in COMMANDS:
        dests = {a.dest for a in subs[command.name]._actions if a.dest != "help"}
        fields = {f.name for f in dataclasses.fields(command.options_class())}
        assert dests == fields, command.name


def test_the_parsed_options_are_the_command_class() -> None:
    command, opts = parse_command(["collect", "--game", "Pong", "--steps", "5", "--out", "d"])
    assert command.name == "collect"
    assert opts == CollectOptions(game="Pong", steps=5, out="d")
    _, opts = parse_command(["dataset", "repair", "root", "--move-orphans"])
    assert opts == DatasetOptions(action="repair", root="root", move_orphans=True)
    _, opts = parse_command(["evaluate", "--agent", "a", "--no-deterministic"])
    assert isinstance(opts, EvaluateOptions) and opts.deterministic is False
    _, opts = parse_command(["evaluate", "--agent", "a"])
    assert opts.deterministic is None and opts.episodes == 10


@pytest.mark.parametrize(
    "argv",
    [
        ["collect", "--game", "Pong", "--steps", "0", "--out", "d"],  # not a positive integer
        ["collect", "--game", "Pong", "--out", "d"],  # --steps is required
        ["collect", "--steps", "5", "--out", "d", "--agent", "a", "--epsilon", "1.5"],
        ["dataset", "mend", "root"],  # not one of the choices
        [
            "import-diamond",
            "--checkpoint",
            "c",
            "--game",
            "g",
            "--out",
            "o",
            "--context-policy",
            "expert",
        ],
    ],
)
def test_bad_values_are_refused_by_the_parser(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        parse_command(argv)
    assert exc.value.code == 2
    assert "error:" in capsys.readouterr().err
