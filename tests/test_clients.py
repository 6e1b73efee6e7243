"""The snippets of docs/other-libraries.md, run as written (the checkpoint path swapped for a
real tiny world model). Opt-in (``pytest -m clients``): TorchRL, skrl and Tianshou are not
dependencies of the package (``pip install '.[clients]'``)."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

PAGE = Path(__file__).resolve().parents[1] / "docs" / "other-libraries.md"
LIBRARIES = {"TorchRL": "torchrl", "skrl": "skrl", "Tianshou": "tianshou"}

pytestmark = pytest.mark.clients


def _snippets() -> dict[str, str]:
    text = PAGE.read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    return {block.split(":", 1)[0].lstrip("# "): block for block in blocks}


def test_page_has_a_snippet_per_library() -> None:
    assert sorted(_snippets()) == sorted(LIBRARIES)


@pytest.mark.parametrize("name", sorted(LIBRARIES))
def test_page_snippet_runs(name: str, tiny_checkpoint: Path, tmp_path: Path) -> None:
    if importlib.util.find_spec(LIBRARIES[name]) is None:
        pytest.fail(f"{LIBRARIES[name]} is not installed: pip install '.[clients]'")
    code = _snippets()[name]
    assert 'CHECKPOINT = "runs/Breakout/world_model"' in code
    code = code.replace("runs/Breakout/world_model", str(tiny_checkpoint))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=tmp_path,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    expected = re.search(r"print\(.*\)  # (.*)", code)
    assert expected is not None
    assert proc.stdout.strip().splitlines()[-1] == expected.group(1)
