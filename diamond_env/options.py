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
from collections.abc import Sequence
from typing import Any, TypeVar

T = TypeVar("T")


def opt(default: Any, help: str) -> Any:
    """A dataclass field with a default and a help text."""
    return dataclasses.field(default=default, metadata={"help": help})


def _base_type(annotation: Any) -> Any:
    """``int | None`` -> int; ``str`` -> str."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        non_none = [a for a in args if a is not type(None)]
        return non_none[0] if len(non_none) == 1 else str
    return annotation


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """Add one ``--option`` per field of the dataclass ``cls``."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        help_text = f.metadata.get("help", "")
        kind = _base_type(hints[f.name])
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default,
                                help=help_text)  # fmt: skip
        else:
            default = None if f.default is dataclasses.MISSING else f.default
            # a field typed without None whose default is None must be given
            required = default is None and type(None) not in typing.get_args(hints[f.name])
            parser.add_argument(flag, type=kind, default=default, required=required,
                                help=f"{help_text} (default: {default})")  # fmt: skip


def parse_options(cls: type[T], argv: Sequence[str] | None, description: str = "") -> T:
    """Parse ``argv`` into an instance of the dataclass ``cls``."""
    parser = argparse.ArgumentParser(description=description)
    add_dataclass_arguments(parser, cls)
    ns = parser.parse_args(argv)
    return cls(**{f.name: getattr(ns, f.name) for f in dataclasses.fields(cls)})  # type: ignore[call-arg, arg-type]


def namespace_to(cls: type[T], ns: argparse.Namespace) -> T:
    """The dataclass ``cls`` built from the parsed ``--options`` of :func:`add_dataclass_arguments`."""
    return cls(**{f.name: getattr(ns, f.name) for f in dataclasses.fields(cls)})  # type: ignore[call-arg, arg-type]
