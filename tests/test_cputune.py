"""The allocator setting of CPU work: large freed blocks stay in the process (no page faults when
the next step allocates them again), off with DIAMOND_ENV_MALLOC=default; the simulator and the
world-model trainer apply it."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest
import torch

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
    proc = subprocess.run([sys.executable, "-c", _FAULTS], capture_output=True, text=True,
                          timeout=120, env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    applied, faults = proc.stdout.split()
    page_faults_per_alloc = 2**26 // os.sysconf("SC_PAGE_SIZE")  # 16,384 with 4 KiB pages
    if setting == "default":  # glibc maps and unmaps each block: every page faults again
        assert applied == "False" and int(faults) > 10 * page_faults_per_alloc
    else:
        assert applied == "True" and int(faults) < page_faults_per_alloc


def test_simulator_and_trainer_apply_it_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    from fake_world_model import FakeWorldModel

    import diamond_env.dream.simulator as simulator
    import diamond_env.training.wm_trainer as wm_trainer
    from diamond_env.config import get_preset
    from diamond_env.world_model.model import WorldModel

    calls: list[str] = []
    monkeypatch.setattr(simulator, "tune_allocator", lambda: calls.append("sim"))
    monkeypatch.setattr(wm_trainer, "tune_allocator", lambda: calls.append("trainer"))
    simulator.DreamSimulator(FakeWorldModel(), 2)  # type: ignore[arg-type]
    wm: Any = WorldModel(get_preset("tiny"), "Breakout", ["NOOP", "FIRE", "RIGHT", "LEFT"])
    wm_trainer.WorldModelTrainer(wm, get_preset("tiny"), torch.device("cpu"))
    assert calls == ["sim", "trainer"]
