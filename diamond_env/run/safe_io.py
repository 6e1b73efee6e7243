"""Bounded, checked reads of the files we load, and the error they raise.

Every file the package reads (JSON metadata, safetensors weights, dataset parts, resume states)
goes through :func:`read_regular`: it must be a regular file (not a FIFO, a device or a
directory), a symlink must stay inside the folder it is read from when one is given, and its size
must be under a cap for its kind, checked before a byte is read. JSON goes through
:func:`read_json`: bounded in size and nesting, finite numbers only. A refusal is an
:class:`InputError`: one line naming the file and what is wrong with it.
"""

from __future__ import annotations

import json
import math
import os
import stat
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

KIB, MIB, GIB = 1 << 10, 1 << 20, 1 << 30
JSON_MAX_BYTES = 16 * MIB
"""Metadata files (configs, agent.json, options, run info); a dataset index gets more."""
INDEX_MAX_BYTES = 256 * MIB
WEIGHTS_MAX_BYTES = 4 * GIB
"""A safetensors or ``.pt`` file (the paper-size world model is about 0.2 GB in float32)."""
PART_MAX_BYTES = 2 * GIB
"""One ``.npz`` part of a dataset (a 1,000-step part is about 12 MB compressed)."""
JSON_MAX_DEPTH = 32
"""Nesting of arrays and objects in a JSON file we read (ours go 4 deep)."""


class InputError(ValueError):
    """A file, a name or a value given to us that we refuse; its message is one line naming what
    and why. A ``ValueError``, so callers that catch those keep working."""


def read_regular(
    path: str | os.PathLike[str], max_bytes: int, *, within: Path | None = None
) -> bytes:
    """The bytes of ``path``, a regular file of at most ``max_bytes`` bytes.

    ``within``: the folder the file must lie in once symlinks are resolved. Opening never blocks
    (a FIFO is refused, not waited on) and the size is checked on the open file before reading;
    at most ``max_bytes + 1`` bytes are read, so a file that grows meanwhile is refused too.

    Raises:
        FileNotFoundError: nothing is at ``path``.
        InputError: not a regular file, outside ``within``, or too large.
    """
    path = Path(path)
    if within is not None and not _inside(path, within):
        raise InputError(f"{path}: points outside {within} (to {os.path.realpath(path)}); refused")
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    except OSError as err:
        raise InputError(f"{path}: cannot be opened ({err.strerror})") from err
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise InputError(f"{path}: not a regular file ({_kind(info.st_mode)}); refused")
        if info.st_size > max_bytes:
            raise InputError(
                f"{path}: {info.st_size:,} bytes, more than the {max_bytes:,} allowed for this "
                "kind of file"
            )
        chunks, left = [], max_bytes + 1
        while left > 0:
            chunk = os.read(fd, min(left, 16 * MIB))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        data = b"".join(chunks)
        if len(data) > max_bytes:
            raise InputError(f"{path}: more than the {max_bytes:,} bytes allowed (it grew)")
        return data
    finally:
        os.close(fd)


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text} is out of range")
    return value


def _constant(name: str) -> float:
    """``Infinity`` and ``-Infinity`` (what Python writes for an infinite setting such as the
    sampler's ``s_tmax``); ``NaN`` is refused."""
    if name == "NaN":
        raise ValueError("NaN is not a number we accept")
    return float(name)


def _depth(value: Any, limit: int) -> int:
    """Nesting depth of parsed JSON, stopping past ``limit``."""
    stack, deepest = [(value, 1)], 0
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, depth)
            if deepest > limit:
                return deepest
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return deepest


def parse_json(text: str | bytes, where: str, *, max_depth: int = JSON_MAX_DEPTH) -> Any:
    """Parse JSON text: no ``NaN`` and no number too large for a float (``Infinity`` is taken as
    written), at most ``max_depth`` levels of nesting; ``InputError`` naming ``where`` otherwise."""
    try:
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        value = json.loads(text, parse_float=_finite, parse_constant=_constant)
    except RecursionError:
        raise InputError(
            f"{where}: JSON nested too deeply (more than {max_depth} levels)"
        ) from None
    except (UnicodeDecodeError, ValueError) as err:
        raise InputError(f"{where}: not valid JSON ({err})") from None
    if _depth(value, max_depth) > max_depth:
        raise InputError(f"{where}: JSON nested too deeply (more than {max_depth} levels)")
    return value


def read_json(
    path: str | os.PathLike[str],
    *,
    max_bytes: int = JSON_MAX_BYTES,
    within: Path | None = None,
    object_only: bool = True,
) -> Any:
    """A bounded JSON file (see :func:`read_regular` and :func:`parse_json`); with
    ``object_only``, it must hold an object."""
    value = parse_json(read_regular(path, max_bytes, within=within), str(path))
    if object_only and not isinstance(value, dict):
        raise InputError(f"{path}: expected a JSON object, got {type(value).__name__}")
    return value


def check_int(value: Any, where: str, low: int, high: int) -> int:
    """``value`` as an int in ``[low, high]`` (bools refused); ``InputError`` naming ``where``."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InputError(f"{where}: expected an integer in [{low:,}, {high:,}], got {value!r}")
    return value


def confined(base: Path, name: Any, where: str) -> Path:
    """``base / name`` for a relative ``name`` read from one of our files that stays inside
    ``base`` (no absolute path, no ``..`` out of it, no symlink out of it)."""
    if not isinstance(name, str) or not name or "\x00" in name:
        raise InputError(f"{where}: expected a relative path, got {name!r}")
    candidate = Path(name)
    if candidate.is_absolute():
        raise InputError(
            f"{where}: {name!r} is an absolute path; only paths inside {base} are read"
        )
    path = base / candidate
    if not _inside(path, base):
        raise InputError(f"{where}: {name!r} points outside {base}; refused")
    return path


def _inside(path: Path, root: Path) -> bool:
    """Whether ``path``, symlinks resolved, is ``root`` or lies below it."""
    real, base = Path(os.path.realpath(path)), Path(os.path.realpath(root))
    return real == base or base in real.parents


MAX_PARAMS = 500_000_000
"""Parameters of one network built from a file or options (2 GB in float32; the paper-size world
model has about 13 M): a larger one is refused before it is allocated."""
MAX_WIDTH = 1 << 16
"""Channels, embedding and LSTM widths read from a file."""
MAX_LEVELS = 8
MAX_DEPTH = 32
MAX_CONTEXT = 64


_INITS = (
    "normal_",
    "uniform_",
    "orthogonal_",
    "trunc_normal_",
    "kaiming_normal_",
    "kaiming_uniform_",
    "xavier_normal_",
    "xavier_uniform_",
    "sparse_",
)


def _keep(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    return tensor


def on_meta(build: Callable[[], nn.Module]) -> nn.Module:
    """``build()`` on torch's meta device: the shapes of a network without its memory. Random
    initialisers do nothing meanwhile: there they would only load torch's decompositions (and
    ``torch._dynamo``), seconds on a process's first call, for values a meta tensor has not."""
    saved = {name: getattr(nn.init, name) for name in _INITS}
    try:
        for name in _INITS:
            setattr(nn.init, name, _keep)
        with torch.device("meta"):
            return build()
    finally:
        for name, fn in saved.items():
            setattr(nn.init, name, fn)


def building_on_meta() -> bool:
    """Whether networks made now land on the meta device (inside :func:`on_meta`)."""
    return torch.empty(0).device.type == "meta"


def check_param_budget(
    builds: Sequence[Callable[[], nn.Module]], where: str, limit: int = MAX_PARAMS
) -> int:
    """The parameter count of the networks ``builds`` make, counted on the meta device;
    ``InputError`` naming ``where`` above ``limit``."""
    total = sum(p.numel() for build in builds for p in on_meta(build).parameters())
    if total > limit:
        raise InputError(
            f"{where}: the networks would have {total:,} parameters, more than the {limit:,} "
            "allowed; check the widths and depths"
        )
    return total


def check_weights(
    expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor], where: str
) -> None:
    """``found`` (read from a file) must hold exactly ``expected``'s keys (a state dict, meta
    tensors will do), each of the same shape and kind of dtype, floating-point ones finite;
    ``InputError`` naming ``where`` and the first key that is not."""
    missing = sorted(set(expected) - set(found))
    extra = sorted(set(found) - set(expected))
    if missing or extra:
        raise InputError(
            f"{where}: weights do not match the config: missing {missing[:5]} ({len(missing)}), "
            f"unexpected {extra[:5]} ({len(extra)})"
        )
    for key, ref in expected.items():
        value = found[key]
        if tuple(value.shape) != tuple(ref.shape):
            raise InputError(
                f"{where}: {key} has shape {tuple(value.shape)}, expected {tuple(ref.shape)}"
            )
        if ref.is_floating_point():
            if value.dtype not in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
                raise InputError(f"{where}: {key} is {value.dtype}, expected floating point")
            if not bool(torch.isfinite(value).all()):
                raise InputError(f"{where}: {key} holds NaN or infinite values")
        elif value.dtype != ref.dtype:
            raise InputError(f"{where}: {key} is {value.dtype}, expected {ref.dtype}")
