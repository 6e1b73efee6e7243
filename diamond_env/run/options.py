"""Command-line parsing of options dataclasses, for scripts (cleanrl style).

Each field of an options dataclass carries its help text in ``metadata["help"]``; this module
turns such a class into an ``argparse`` parser (``--field-name``) and back into an instance.
Library code never calls it: only scripts and the CLI do, at the edge.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

from diamond_env.run.safe_io import InputError, read_json

T = TypeVar("T")


def opt(
    default: Any,
    help: str,
    *,
    parse: Callable[[str], Any] | None = None,
    choices: Sequence[str] | None = None,
    positional: bool = False,
) -> Any:
    """A dataclass field with a default and a help text; for the command line, ``parse`` turns
    the text into the value (default: the field's type), ``choices`` lists the accepted values
    and ``positional`` makes it an argument without ``--``."""
    metadata: dict[str, Any] = {"help": help, "positional": positional}
    if parse is not None:
        metadata["parse"] = parse
    if choices is not None:
        metadata["choices"] = tuple(choices)
    return dataclasses.field(default=default, metadata=metadata)


def _int_at_least(text: str, minimum: int, words: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {words}, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"expected {words}, got {value}")
    return value


def positive_int(text: str) -> int:
    """``argparse`` type: an integer > 0."""
    return _int_at_least(text, 1, "a positive integer")


def non_negative_int(text: str) -> int:
    """``argparse`` type: an integer >= 0."""
    return _int_at_least(text, 0, "an integer >= 0")


def probability(text: str) -> float:
    """``argparse`` type: a number in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {value}")
    return value


def _base_type(annotation: Any) -> Any:
    """``int | None`` -> int; ``str`` -> str."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        non_none = [a for a in args if a is not type(None)]
        return non_none[0] if len(non_none) == 1 else str
    return annotation


def add_dataclass_arguments(
    parser: argparse.ArgumentParser, cls: type, *, defaults: bool = True
) -> None:
    """Add one ``--option`` per field of the dataclass ``cls``. ``defaults=False`` leaves the
    options not given out of the parsed namespace (see :func:`given_options`)."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        help_text = f.metadata.get("help", "")
        kind = f.metadata.get("parse") or _base_type(hints[f.name])
        choices = f.metadata.get("choices")
        if f.metadata.get("positional"):
            if defaults:  # (given_options asks only for --options)
                parser.add_argument(f.name, type=kind, choices=choices, help=help_text)
        elif kind is bool:
            default = f.default if defaults else argparse.SUPPRESS
            parser.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=default, help=help_text
            )
        else:
            default = None if f.default is dataclasses.MISSING else f.default
            # a field typed without None whose default is None must be given
            required = default is None and type(None) not in typing.get_args(hints[f.name])
            parser.add_argument(
                flag,
                type=kind,
                choices=choices,
                required=required,
                default=default if defaults else argparse.SUPPRESS,
                help=f"{help_text} (required)"
                if required
                else help_text
                if default is None
                else f"{help_text} (default: {default})",
            )


def given_options(cls: type, argv: Sequence[str] | None) -> set[str]:
    """The fields of ``cls`` set on the command line ``argv`` (not left at their default)."""
    parser = argparse.ArgumentParser()
    add_dataclass_arguments(parser, cls, defaults=False)
    ns, _ = parser.parse_known_args(argv)
    return set(vars(ns))


def parse_options(cls: type[T], argv: Sequence[str] | None, description: str = "") -> T:
    """Parse ``argv`` into an instance of the dataclass ``cls``; a resumed run (a ``resume``
    field that is True) takes the options not given from the run's stored ones
    (:func:`with_stored_options`)."""
    parser = argparse.ArgumentParser(description=description)
    add_dataclass_arguments(parser, cls)
    ns = parser.parse_args(argv)
    opts = cls(**{f.name: getattr(ns, f.name) for f in dataclasses.fields(cls)})  # type: ignore[call-arg, arg-type]
    if not getattr(opts, "resume", False):
        return opts
    return with_stored_options(opts, given_options(cls, argv))  # type: ignore[type-var]


class Resumable(Protocol):
    resume: bool

    def options_file(self) -> Path: ...


R = TypeVar("R", bound=Resumable)


def with_stored_options(opts: R, given: set[str]) -> R:
    """For a resumed run, ``opts`` with every option not in ``given`` taken from the options the
    run stored (``opts.options_file()``), so ``--resume --run-dir D`` is enough; options given
    again win (and options fixed for the run are then checked by the run itself). A run without
    stored options is returned unchanged (the run says what is missing)."""
    if not getattr(opts, "resume", False):
        return opts
    path = opts.options_file()
    if not path.is_file():
        return opts
    stored: dict[str, Any] = read_json(path)
    names = {f.name for f in dataclasses.fields(opts)}  # type: ignore[arg-type]
    taken = {
        k: v for k, v in stored.items() if k in names and k not in given and k not in NEVER_STORED
    }
    for key, value in taken.items():
        current = getattr(opts, key)
        ok = (
            value is None
            or current is None
            or type(value) is type(current)
            or (isinstance(current, float) and type(value) is int)
        )
        if not ok:
            raise InputError(
                f"{path}: {key}: expected {type(current).__name__}, got {value!r}; the file was "
                "edited or damaged"
            )
    return dataclasses.replace(opts, **taken)  # type: ignore[type-var]


def field_defaults(cls: Any) -> dict[str, Any]:
    """Each field of the dataclass ``cls`` (or of an instance's class) with its default value;
    fields without one are left out."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


NEVER_STORED = frozenset({"resume", "run_dir", "out"})
"""Options a resumed run never takes from its stored file: where it writes is where the user
pointed it, never a path the file names."""


def namespace_to(cls: type[T], ns: argparse.Namespace) -> T:
    """The dataclass ``cls`` built from the parsed ``--options`` of :func:`add_dataclass_arguments`."""
    return cls(**{f.name: getattr(ns, f.name) for f in dataclasses.fields(cls)})  # type: ignore[call-arg, arg-type]
