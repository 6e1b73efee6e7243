"""Run metrics: one JSON object per line in ``metrics.jsonl``, mirrored to TensorBoard."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from diamond_env.run.safe_io import InputError, parse_json


class MetricsLogger:
    """Appends ``{"step": ..., "time": ..., **values}`` records to ``run_dir/metrics.jsonl``.

    Scalars also go to TensorBoard under ``run_dir/tensorboard`` (when ``tensorboard`` is
    importable). Appending means a resumed run continues the same file. ``enabled=False`` (the
    other ranks of a data-parallel run) writes nothing.
    """

    def __init__(self, run_dir: Path, *, tensorboard: bool = True, enabled: bool = True) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / "metrics.jsonl"
        self.enabled = enabled
        self._file: Any = None
        self._writer: Any = None
        if not enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a", encoding="utf-8")
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # pragma: no cover - tensorboard is a declared dependency
                self._writer = None
            else:
                self._writer = SummaryWriter(str(self.run_dir / "tensorboard"))

    def log(self, step: int, values: dict[str, Any], *, kind: str = "train") -> None:
        """Record ``values`` (numbers, or small JSON-able objects) at counter ``step``."""
        if not self.enabled:
            return
        record = {"kind": kind, "step": int(step), "time": time.time(), **_jsonable(values)}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._writer is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)) and math.isfinite(float(value)):
                    self._writer.add_scalar(f"{kind}/{key}", float(value), int(step))

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        if self._writer is not None:
            self._writer.close()

    def __enter__(self) -> MetricsLogger:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _jsonable(values: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        if hasattr(value, "item") and callable(value.item):
            value = value.item()
        if isinstance(value, float) and not math.isfinite(value):
            value = str(value)
        out[key] = value
    return out


def read_metrics(run_dir: Path, kind: str | None = None) -> list[dict[str, Any]]:
    """All records of ``run_dir/metrics.jsonl`` (optionally of one kind), in file order."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    records = []
    with path.open(encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                record = parse_json(line, str(path))
            except InputError:
                continue  # a line cut by a crash mid-write
            if not isinstance(record, dict):
                continue  # not a record of ours
            if kind is None or record.get("kind") == kind:
                records.append(record)
    return records
