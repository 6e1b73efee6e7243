"""``run.json``: what produced a run directory, so that every figure can be traced.

Each command that writes a run directory (``train-wm``, ``train``, ``train-agent``, ``demo``)
records there, atomically: the command, its resolved options, the git commit of the source when
it runs from a checkout (and whether the tree had changes), the versions of the packages that
decide the numbers, the machine (CPU, threads, GPU) and one ``sessions`` entry per start
(``start``, ``end`` in UTC ISO time, ``status`` ``running`` / ``finished``; a session left
``running`` with no end was killed or failed), so a resumed run shows each of its sessions.
"""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from diamond_env.run.checkpoint import atomic_write_json
from diamond_env.run.safe_io import read_json

RUN_FILE = "run.json"
PACKAGES = (
    "diamond_env",
    "torch",
    "numpy",
    "gymnasium",
    "ale-py",
    "stable-baselines3",
    "safetensors",
)


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def source_commit() -> dict[str, Any] | None:
    """``{"commit", "dirty"}`` of the git checkout holding this package, or None (installed)."""
    root = Path(__file__).resolve().parents[2]
    if not (root / ".git").exists():
        return None
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": bool(status.strip())}


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def machine() -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "python": platform.python_version(),
    }
    if torch.cuda.is_available():
        info["cuda_devices"] = [
            torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())
        ]
    try:
        info["load_average"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    return info


class RunSession:
    """One (re)start of a run, recorded in ``run_dir/run.json`` (see :func:`start_session`)."""

    def __init__(self, path: Path, record: dict[str, Any]) -> None:
        self.path = path
        self.record = record

    def finish(self, **results: Any) -> None:
        """Record the session's end (and any JSON-able ``results``)."""
        self.record["sessions"][-1].update(end=_now(), status="finished")
        self.record.update(results)
        atomic_write_json(self.path, self.record)


def start_session(
    run_dir: str | os.PathLike[str], command: str, options: dict[str, Any]
) -> RunSession:
    """Record a (re)start of the run in ``run_dir/run.json`` (earlier sessions are kept). A session
    whose ``end`` stays null was killed or failed."""
    path = Path(run_dir) / RUN_FILE
    record: dict[str, Any] = {}
    if path.exists():
        record = read_json(path)  # a damaged record is refused, not overwritten
    record.update(
        command=command,
        options=options,
        source=source_commit(),
        versions=versions(),
        machine=machine(),
    )
    record.setdefault("sessions", []).append({"start": _now(), "end": None, "status": "running"})
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, record)
    return RunSession(path, record)


def start_run(
    run_dir: Path, command: str, options: dict[str, Any], processes: int = 1
) -> RunSession:
    """What a training command writes before it starts: the run directory, ``options.json`` (the
    options a ``--resume`` takes back) and a new session in ``run.json`` (with the number of
    data-parallel processes)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(run_dir / "options.json", options)
    return start_session(run_dir, command, {**options, "processes": processes})
