"""The dream benchmark: real tiny world models stepped a few times (figures checked for sense,
never for speed)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator

import pytest
import torch

from diamond_env.bench import bench_dream, format_dream, format_results, run_bench

DREAM_KEYS = {"frames_per_s", "steps_per_s", "seconds", "steps", "num_envs", "denoising_steps"}


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """One torch thread: on a shared 2-core box two threads competing with other jobs can run
    100x slower (the figures are not checked for speed anyway)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("num_envs", [1, 2])
def test_bench_dream_tiny_returns_consistent_figures(num_envs: int) -> None:
    fig = bench_dream("tiny", num_envs, 2)
    assert DREAM_KEYS <= set(fig)
    assert fig["steps"] == 2 and fig["num_envs"] == num_envs
    assert fig["denoising_steps"] == 3  # the tiny preset keeps the paper's 3 Euler steps
    for key in ("frames_per_s", "steps_per_s", "seconds"):
        assert math.isfinite(fig[key]) and fig[key] > 0, key
    assert fig["steps_per_s"] == pytest.approx(2 / fig["seconds"])
    assert fig["frames_per_s"] == pytest.approx(num_envs * fig["steps_per_s"])
    # the tiny preset: denoiser + reward/end model, well under a million parameters
    assert 100_000 < fig["params"] < 1_000_000


def test_bench_dream_min_seconds_still_times_one_step() -> None:
    fig = bench_dream("tiny", 1, 1, warmup=0, min_seconds=1e6)
    assert fig["steps"] == 1  # ``steps`` caps the timed steps even when time is left


def test_bench_dream_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="num_envs"):
        bench_dream("tiny", 0, 2)
    with pytest.raises(ValueError, match="steps"):
        bench_dream("tiny", 1, 0)


def test_run_bench_dream_section_formats_a_table() -> None:
    results = run_bench(
        sections=("dream",), dream_presets=("tiny",), dream_num_envs=(1, 2), dream_min_seconds=0.05
    )
    assert "collection" not in results and "ale_env_steps_per_s" not in results
    grid = results["dream"]["grid"]
    assert set(grid) == {"tiny"} and set(grid["tiny"]) == {1, 2}
    text = format_results(results)
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("preset"))
    assert header.split() == ["preset", "params", "n=1", "n=2"]
    row = next(line for line in lines if line.startswith("tiny")).split()
    assert float(row[2]) == pytest.approx(grid["tiny"][1]["frames_per_s"], abs=0.01)
    assert float(row[3]) == pytest.approx(grid["tiny"][2]["frames_per_s"], abs=0.01)
    assert "frames/s" in text and "3 denoising steps" in text
    # the table reads the same from the JSON file (where num_envs keys became strings)
    assert format_dream(json.loads(json.dumps(results["dream"]))) == format_dream(results["dream"])


def test_run_bench_rejects_unknown_section() -> None:
    with pytest.raises(ValueError, match="sections"):
        run_bench(sections=("gpu_magic",))


def test_run_dream_grid_rejects_unknown_preset_before_running() -> None:
    with pytest.raises(ValueError, match="presets"):
        run_bench(sections=("dream",), dream_presets=("tiny", "huge"))
    with pytest.raises(ValueError, match="presets"):
        run_bench(sections=("dream",), dream_presets="tiny")
