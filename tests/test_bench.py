"""The dream benchmark: real tiny world models stepped a few times (figures checked for sense,
never for speed)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from diamond_env.cli.bench import (
    bench_dream,
    cpu_features,
    format_dream,
    format_results,
    machine_info,
    run_bench,
)

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


def test_bench_dream_counts_flops_per_frame() -> None:
    from diamond_env.config import get_preset
    from diamond_env.world_model.flops import count_model_flops

    fig = bench_dream("tiny", 2, 1, warmup=0)
    flops = count_model_flops(get_preset("tiny"), 4)  # Breakout: 4 actions
    assert fig["gflop_per_frame"] * 1e9 == pytest.approx(
        3 * flops.denoiser_forward + flops.rew_end_step
    )
    assert fig["gflop_per_s"] == pytest.approx(fig["frames_per_s"] * fig["gflop_per_frame"])
    assert fig["peak_mem_mb"] > 0 and fig["mem_growth_mb"] >= 0


def test_synthetic_world_model_never_ends_an_episode() -> None:
    from diamond_env.cli.bench import synthetic_world_model
    from diamond_env.frames import to_model

    model = synthetic_world_model("tiny", "Breakout", "cpu", 0)
    out = model.step(to_model(model.contexts.obs), model.contexts.act, None)
    assert not bool(out.termination.any()) and bool((out.reward == 0).all())


def test_bench_train_tiny_figures_are_consistent() -> None:
    from diamond_env.cli.bench import bench_train

    fig = bench_train("tiny", 1, warmup=0)
    for name in ("denoiser", "rew_end"):
        part = fig[name]
        assert part["steps"] == 1 and part["batch_size"] == 8  # the tiny preset's batch
        assert part["samples_per_s"] == pytest.approx(8 * part["steps_per_s"])
        assert part["steps_per_s"] == pytest.approx(1 / part["seconds"])
        assert part["gflop_per_s"] == pytest.approx(
            part["samples_per_s"] * part["gflop_per_sample"]
        )
    # a reward/end sample is 8 transitions (tiny rew_end_seq_len 9), a denoiser sample 2 target
    # frames (4 context + 1 + 1 autoregressive)
    assert fig["rew_end"]["gflop_per_sample"] == pytest.approx(3 * 8 * 0.01839136)
    assert fig["denoiser"]["gflop_per_sample"] == pytest.approx(2 * 3 * 0.265924608)


def test_bench_imagination_tiny_figures_are_consistent() -> None:
    from diamond_env.cli.bench import bench_imagination

    fig = bench_imagination("tiny", 1, warmup=0)
    assert (fig["batch_size"], fig["horizon"], fig["steps"]) == (8, 5, 1)
    assert fig["frames_per_s"] == pytest.approx(8 * 5 * fig["updates_per_s"])
    assert fig["gflop_per_s"] == pytest.approx(fig["updates_per_s"] * fig["gflop_per_update"])
    assert 40 * 0.8 < fig["gflop_per_update"] < 60  # 40 dream frames of 0.82 GFLOP + the agent


def test_run_bench_projects_the_loop_and_compares_fast_paths() -> None:
    from diamond_env.cli.bench import loop_projection
    from diamond_env.config import LoopConfig
    from diamond_env.world_model.flops import loop_counts, project_hours

    results = run_bench(
        sections=("train", "imagination"),
        dream_presets=("tiny",),
        dream_num_envs=(1,),
        dream_min_seconds=0.01,
        fastpath={"inference_mode": True, "channels_last": False},
    )
    train, imag = results["train"]["grid"]["tiny"], results["imagination"]["grid"]["tiny"]
    expected = project_hours(
        loop_counts(LoopConfig()),
        denoiser_steps_per_s=train["denoiser"]["steps_per_s"],
        rew_end_steps_per_s=train["rew_end"]["steps_per_s"],
        actor_critic_steps_per_s=imag["updates_per_s"],
    )
    assert results["projection"]["tiny"] == pytest.approx(expected)
    assert expected["actor_critic"] == pytest.approx(404_600 / imag["updates_per_s"] / 3600)
    cell = results["fastpath"]["grid"]["tiny"][1]
    assert set(cell["frames_per_s"]) == {"plain", "inference_mode"}
    assert cell["ratio"]["plain"] == 1.0
    assert cell["ratio"]["inference_mode"] == pytest.approx(
        cell["frames_per_s"]["inference_mode"] / cell["frames_per_s"]["plain"]
    )
    text = format_results(results)
    line = next(x for x in text.splitlines() if x.startswith("projection  tiny"))
    assert f"{expected['total']:.1f} h" in line
    assert "fastpath    tiny" in text and "imagination tiny" in text and "train       tiny" in text
    assert format_results(json.loads(json.dumps(results))) == text
    assert loop_projection({"train": results["train"]}) == {}  # imagination missing: nothing


def test_cpu_features_reads_model_and_bf16_flags(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    core = (
        "processor\t: {i}\nmodel name\t: Test CPU @ 2.8GHz\nflags\t\t: fpu avx2 avx512f {extra}\n\n"
    )
    info.write_text(
        core.format(i=0, extra="amx_bf16 avx512_bf16")
        + core.format(i=1, extra="amx_bf16 avx512_bf16")
    )
    assert cpu_features(str(info)) == {
        "cpu_model": "Test CPU @ 2.8GHz",
        "cpu_bf16": ["amx_bf16", "avx512_bf16"],
    }
    info.write_text(core.format(i=0, extra=""))
    assert cpu_features(str(info))["cpu_bf16"] == []
    assert cpu_features(str(tmp_path / "missing")) == {}
    assert {"cpu_model", "cpu_bf16"} <= machine_info().keys() or not Path("/proc/cpuinfo").exists()
