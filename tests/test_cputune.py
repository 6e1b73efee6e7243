"""The allocator setting of CPU work: large freed blocks stay in the process (no page faults when
the next step allocates them again), off with DIAMOND_ENV_MALLOC=default; the diamond-env command
applies it to its own process, the library never does."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

_FAULTS = """
import resource, sys, torch
from diamond_env.devices import tune_allocator

def faults():  # minor page faults of 20 allocations of a 64 MiB tensor, each freed
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):
        x = torch.ones(16 * 2**20)
        del x
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

applied = tune_allocator()
faults()  # the heap grows to hold the block once
print(applied, faults())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
@pytest.mark.parametrize("setting", ["", "default"])
def test_freed_blocks_are_reused_without_page_faults(setting: str) -> None:
    env = {**os.environ, "DIAMOND_ENV_MALLOC": setting, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", _FAULTS], capture_output=True, text=True, timeout=120, env=env
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    applied, faults = proc.stdout.split()
    page_faults_per_alloc = 2**26 // os.sysconf("SC_PAGE_SIZE")  # 16,384 with 4 KiB pages
    if setting == "default":  # glibc maps and unmaps each block: every page faults again
        assert applied == "False" and int(faults) > 10 * page_faults_per_alloc
    else:
        assert applied == "True" and int(faults) < page_faults_per_alloc


_WHO_APPLIES = """
import sys
import diamond_env.devices as devices
from diamond_env.config import get_preset
from diamond_env.dream.simulator import DreamSimulator
from diamond_env.training.wm_trainer import WorldModelTrainer
from diamond_env.world_model.model import WorldModel
import torch
sys.path.insert(0, sys.argv[1])
from fake_world_model import FakeWorldModel
DreamSimulator(FakeWorldModel(), 2)
wm = WorldModel(get_preset("tiny"), "Breakout", ["NOOP", "FIRE", "RIGHT", "LEFT"])
WorldModelTrainer(wm, get_preset("tiny"), torch.device("cpu"))
print(devices._done)  # None: nobody applied it
"""


def test_the_library_leaves_the_allocator_alone() -> None:
    """Building a dream or a trainer does not change the host process's allocator."""
    here = os.path.dirname(__file__)
    proc = subprocess.run(
        [sys.executable, "-c", _WHO_APPLIES, here],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["None"]


def test_the_command_applies_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """The ``diamond-env`` command owns its process and applies it once, before the command."""
    import diamond_env.devices as devices
    from diamond_env.cli import main as cli

    calls: list[str] = []
    monkeypatch.setattr(devices, "tune_allocator", lambda: calls.append("tuned") or True)
    monkeypatch.setattr(cli, "_cmd_dataset", lambda args: calls.append("command") or 0)
    assert cli.main(["dataset", "verify", "nowhere"]) == 0
    assert calls == ["tuned", "command"]
