"""What ships inside the package: the wheel carries the pretrained world model and agent, and the
installed package steps the default dream env without a checkpoint argument."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from diamond_env.run.paths import PRETRAINED_ROOT, pretrained

pytestmark = pytest.mark.e2e  # a slow end-to-end run: left out of `make test-fast`

ROOT = Path(__file__).resolve().parents[1]

SNIPPET = """
import logging, sys
import gymnasium as gym, diamond_env

logging.basicConfig(level=logging.INFO)
assert diamond_env.__file__.startswith(sys.argv[1]), diamond_env.__file__
e = gym.make("DiamondDream-Breakout-v0")
e.reset(seed=0)
reward, terminated = e.step(1)[1:3]
assert isinstance(reward, float) and isinstance(terminated, bool), (reward, terminated)
print("stepped", reward, terminated)
"""


def test_the_wheel_carries_the_shipped_models_and_steps_the_default_env(tmp_path: Path) -> None:
    shipped = pretrained()
    assert "Breakout" in shipped and shipped["Breakout"].agent is not None
    package = ROOT / "diamond_env"
    files = sorted(
        p.relative_to(ROOT).as_posix() for p in PRETRAINED_ROOT.rglob("*") if p.is_file()
    )
    assert any(f.endswith("world_model/model.safetensors") for f in files)
    # build from a copy, so the build leaves nothing in the checkout
    source = tmp_path / "source"
    source.mkdir()
    shutil.copytree(package, source / "diamond_env", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(ROOT / "pyproject.toml", source / "pyproject.toml")
    shutil.copy2(ROOT / "README.md", source / "README.md")
    pip = [sys.executable, "-m", "pip", "-q"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), str(source)],
        check=True,
    )
    (wheel,) = tmp_path.glob("diamond_env-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert [f for f in files if f not in names] == []
    size = sum((ROOT / f).stat().st_size for f in files)
    assert size <= 20 * 2**20, f"the shipped models hold {size / 2**20:.1f} MiB (at most 20)"

    site = tmp_path / "site"
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)], check=True)
    env = {k: v for k, v in os.environ.items() if k != "DIAMOND_ENV_HOME"}
    env["PYTHONPATH"] = str(site)
    run = tmp_path / "elsewhere"  # no runs/ here: the lookup ends at the shipped model
    run.mkdir()
    out = subprocess.run(
        [sys.executable, "-c", SNIPPET, str(site)],
        cwd=run,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("stepped")
    shipped_path = site / "diamond_env" / "pretrained" / "Breakout" / "world_model"
    assert f"DiamondDream-Breakout: world model {shipped_path}" in out.stderr  # logged
