"""The README's snippets for other RL libraries, run as written (the checkpoint path swapped for a
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

README = Path(__file__).resolve().parents[1] / "README.md"
LIBRARIES = {"TorchRL": "torchrl", "skrl": "skrl", "Tianshou": "tianshou"}

pytestmark = pytest.mark.clients


def _snippets() -> dict[str, str]:
    text = README.read_text(encoding="utf-8")
    section = text.split("## Using other RL libraries", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    return {block.split(":", 1)[0].lstrip("# "): block for block in blocks}


def test_readme_has_a_snippet_per_library() -> None:
    assert sorted(_snippets()) == sorted(LIBRARIES)


@pytest.mark.parametrize("name", sorted(LIBRARIES))
def test_readme_snippet_runs(name: str, tiny_checkpoint: Path, tmp_path: Path) -> None:
    if importlib.util.find_spec(LIBRARIES[name]) is None:
        pytest.fail(f"{LIBRARIES[name]} is not installed: pip install '.[clients]'")
    code = _snippets()[name]
    assert 'CHECKPOINT = "runs/Breakout/world_model"' in code
    code = code.replace("runs/Breakout/world_model", str(tiny_checkpoint))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=240, cwd=tmp_path, env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    expected = re.search(r"print\(.*\)  # (.*)", code)
    assert expected is not None
    assert proc.stdout.strip().splitlines()[-1] == expected.group(1)
