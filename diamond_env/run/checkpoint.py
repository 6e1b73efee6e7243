"""Atomic files and resume state.

Inference artifacts (safetensors + JSON) are written by the models themselves; this module holds
the shared atomic-write helpers and the *resume* state of a training run (optimiser states,
counters, RNG states), saved with ``torch.save`` and read back with ``weights_only=True`` so that
loading never unpickles code.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import random
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors

from diamond_env.run.safe_io import WEIGHTS_MAX_BYTES, InputError, read_json, read_regular


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes, hex: a checkpoint's config records it for each weights file
    so that a truncated or altered file is refused on load."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_sha256(data: bytes, expected: str, path: Path) -> None:
    """Raise ``ValueError`` naming ``path`` when the SHA-256 of ``data`` (its bytes, already read)
    is not ``expected``."""
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise ValueError(
            f"{path}: sha256 {actual[:16]}... does not match {expected[:16]}... recorded at save "
            "time; the file was altered or damaged"
        )


def read_tensors(path: Path, sha256: str | None = None) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file, read once; its bytes are checked against ``sha256``
    first when one was recorded. ``ValueError`` for an unreadable or altered file."""
    data = read_regular(path, WEIGHTS_MAX_BYTES)
    if sha256 is not None:
        check_sha256(data, str(sha256), path)
    try:
        return load_safetensors(data)
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"{path}: not a readable safetensors file ({err})") from err


def atomic_write(path: Path, write: Callable[[Path], object], *, suffix: str = ".tmp") -> None:
    """The one way this package writes a file: ``write(tmp_path)`` on a temporary file beside
    ``path`` (ending in ``suffix``, for writers that choose a format by it), fsync it, rename it
    over ``path``, fsync the directory. A crash leaves the old file or the new one, never half of
    one; the temporary file is removed on failure."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        with tmp_path.open("rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()
    try:
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:  # a directory that cannot be opened (some platforms): the rename stands
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` with :func:`atomic_write`."""
    atomic_write(path, lambda p: p.write_bytes(data))


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` with :func:`atomic_write`."""
    atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def atomic_write_json(path: Path, data: Any) -> None:
    """Write ``data`` as indented JSON, atomically."""
    atomic_write(path, lambda p: p.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8"))


def rng_state() -> dict[str, Any]:
    """The states of Python's, NumPy's and torch's global generators (tensors and plain types)."""
    np_state: tuple[Any, ...] = tuple(np.random.get_state(legacy=True))  # type: ignore[arg-type]
    return {
        "python": repr(random.getstate()),
        "numpy_keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
        "numpy_pos": int(np_state[2]),
        "torch": torch.get_rng_state(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    import ast

    text = state.get("python") if isinstance(state, dict) else None
    if not isinstance(text, str) or len(text) > 64 * 1024:
        raise InputError("resume state: rng.python: expected the repr of random.getstate()")
    try:  # Python's state is 625 ints in a tuple: a few KB, two levels deep
        py_state = ast.literal_eval(text)
        random.setstate((py_state[0], tuple(py_state[1]), py_state[2]))
        keys = state["numpy_keys"].numpy().astype(np.uint32)
        np.random.set_state(("MT19937", keys, int(state["numpy_pos"]), 0, 0.0))
        torch.set_rng_state(state["torch"])
    except (
        ValueError,
        TypeError,
        SyntaxError,
        RecursionError,
        MemoryError,
        KeyError,
        IndexError,
        AttributeError,
        RuntimeError,
    ) as err:
        raise InputError(
            f"resume state: the stored generator states are damaged ({err!r:.100})"
        ) from None


def seed_everything(seed: int) -> None:
    """One seed for Python, NumPy and torch (an int in [0, 2**63))."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise ValueError(f"seed: expected an int in [0, 2**63), got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def save_resume_state(path: Path, state: dict[str, Any]) -> None:
    """Save a resume state (tensors, numbers, strings, nested dicts/lists) atomically."""
    atomic_write(path, lambda p: torch.save(state, p))


def load_resume_state(path: Path) -> dict[str, Any]:
    """Load a resume state without unpickling code (``weights_only=True``).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is damaged or holds something other than plain data.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no resume state at {path}")
    data = read_regular(path, WEIGHTS_MAX_BYTES)
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for damaged files
        raise ValueError(f"resume state {path} is damaged or not a resume state: {err}") from err
    if not isinstance(state, dict):
        raise ValueError(f"resume state {path}: expected a dict, got {type(state).__name__}")
    return state


@contextlib.contextmanager
def restoring(path: Path) -> Iterator[None]:
    """Around the code that puts a loaded resume state into a run: a state that does not fit
    (missing or misshapen entries, a crafted file) becomes one ``InputError`` naming ``path``."""
    try:
        yield
    except InputError:
        raise
    except (KeyError, TypeError, IndexError, AttributeError, RuntimeError, ValueError) as err:
        raise InputError(
            f"{path}: the resume state does not fit this run ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''})"[:300]
        ) from err


def check_run_dir(
    run_dir: Path,
    *,
    resume: bool,
    options: dict[str, Any],
    fixed: Sequence[str],
    markers: Sequence[str] = ("resume.pt",),
    defaults: Mapping[str, Any] | None = None,
) -> None:
    """Refuse to overwrite a run, or to resume one that is not there or was asked otherwise.

    Without ``resume``, any of ``markers`` in ``run_dir`` means a run is there (ValueError). With
    it, ``resume.pt`` must exist (FileNotFoundError) and ``options[k]`` must equal the run's
    ``options.json`` for every ``k`` in ``fixed`` (ValueError listing each difference); a key the
    file lacks (a run started before that option existed) counts as ``defaults[k]``.
    """
    if run_dir.exists() and not run_dir.is_dir():
        raise ValueError(f"{run_dir} is a file, not a run directory; choose another --run-dir")
    if not resume:
        if any((run_dir / name).exists() for name in markers):
            raise ValueError(
                f"{run_dir} already holds a run; pass --resume to continue it or choose another "
                "--run-dir"
            )
        return
    if not (run_dir / "resume.pt").exists():
        raise FileNotFoundError(
            f"--resume: no resume state in {run_dir} (resume.pt is missing: the run never saved; "
            "start it again without --resume)"
        )
    saved = read_json(run_dir / "options.json")
    # An option the run's options.json lacks was added after the run started; the run used what
    # is now its default (new options default to the old behaviour).
    stored = {k: saved.get(k, (defaults or {}).get(k)) for k in fixed}
    diffs = [
        f"{k}: run has {stored[k]!r}, got {options[k]!r}" for k in fixed if stored[k] != options[k]
    ]
    if diffs:
        raise ValueError("--resume with a different configuration: " + "; ".join(diffs))


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``device`` as a torch device that exists here; ``ValueError`` saying why otherwise (an
    unknown name, CUDA asked for where torch has none or no GPU is visible, a GPU index too high)."""
    if device is None:
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(
            f"device: {device!r} is not a torch device name (e.g. 'cpu', 'cuda', 'cuda:1')"
        ) from err
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = "torch was built without CUDA" if torch.version.cuda is None else "no GPU visible"
            raise ValueError(
                f"device: {device!r} asked for, but CUDA is not available here ({why},"
                f" torch {torch.__version__}); use device='cpu'"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device: {device!r}, but only {torch.cuda.device_count()} GPU(s)")
    elif dev.type not in ("cpu", "cuda"):
        try:
            torch.zeros(1, device=dev)
        except (RuntimeError, NotImplementedError, AssertionError) as err:
            raise ValueError(f"device: {device!r} is not usable here ({err})") from err
    return dev
