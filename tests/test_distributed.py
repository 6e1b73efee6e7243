"""Data-parallel training on the CPU with gloo and two processes (``diamond_env.training.distributed``)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from diamond_env.data.dataset import EpisodeDataset
from diamond_env.run.checkpoint import load_resume_state

TESTS = Path(__file__).parent
sys.path.insert(0, str(TESTS))

from ddp_worker import fixed_step, gradients, weights  # noqa: E402
from test_loop import FAST  # noqa: E402

pytestmark = pytest.mark.e2e  # a slow end-to-end run: left out of `make test-fast`


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rank_env(rank: int, world_size: int, port: int, **extra: str) -> dict[str, str]:
    """The variables torchrun (or srun with a few exports) gives each process."""
    env = dict(
        os.environ,
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world_size),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        OMP_NUM_THREADS="1",
        **extra,
    )
    return env


def launch(args: list[str], world_size: int = 2, **extra: str) -> list[subprocess.Popen[str]]:
    port = free_port()
    return [
        subprocess.Popen(
            args,
            env=rank_env(r, world_size, port, **extra),
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for r in range(world_size)
    ]


def descendants(pid: int) -> list[int]:
    """The processes below ``pid`` (children first), read from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], list(children.get(pid, []))
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def finish(procs: list[subprocess.Popen[str]], timeout: float = 240) -> list[tuple[int, str]]:
    out = []
    for p in procs:
        _, err = p.communicate(timeout=timeout)
        out.append((p.returncode, err))
    return out


def test_a_data_parallel_step_is_the_single_process_step_on_the_whole_batch(
    tiny_checkpoint: Path, breakout_dataset: EpisodeDataset, tmp_path: Path
) -> None:
    """Two ranks of batch 2 take the step one process takes on the 4 segments (gradients and
    weights within 1e-5, the ranks' shares holding different numbers of real targets), and after
    more steps on their own samples both ranks hold the same weights."""
    b = 2
    worker = [
        sys.executable,
        str(TESTS / "ddp_worker.py"),
        str(tiny_checkpoint),
        str(breakout_dataset.root),
        str(tmp_path),
        str(b),
        "5",
    ]
    procs = launch(worker)
    wm, trainer, metrics = fixed_step(tiny_checkpoint, breakout_dataset.root, 0, 1, 2 * b)
    for code, err in finish(procs):
        assert code == 0, err[-3000:]

    ref_grads, ref_weights = gradients(wm), weights(wm)
    initial = weights(type(wm).load(tiny_checkpoint))
    for rank in (0, 1):
        grads = load_file(tmp_path / f"rank-{rank}.grads.safetensors")
        after = load_file(tmp_path / f"rank-{rank}.fixed.safetensors")
        for name, g in ref_grads.items():
            torch.testing.assert_close(grads[name], g, rtol=0, atol=1e-5, msg=name)
        for name, w in ref_weights.items():
            torch.testing.assert_close(after[name], w, rtol=0, atol=1e-5, msg=name)
    moved = max(float((ref_weights[k].float() - initial[k].float()).abs().max()) for k in initial)
    assert moved > 1e-4  # the step changed the weights, so equal weights are evidence

    ddp_metrics = json.loads((tmp_path / "rank-0.metrics.json").read_text())
    for key in ("denoiser/loss", "rew_end/loss", "rew_end/acc_rew", "denoiser/grad_norm"):
        assert ddp_metrics[key] == pytest.approx(metrics[key], rel=1e-5, abs=1e-6), key
    params = {
        n: sum(p.numel() for p in m.parameters())
        for n, m in (("denoiser", wm.denoiser), ("rew_end", wm.rew_end))
    }
    assert ddp_metrics["bytes/denoiser"] == 4 * params["denoiser"]
    assert ddp_metrics["bytes/rew_end"] == 4 * params["rew_end"]

    last = [load_file(tmp_path / f"rank-{r}.last.safetensors") for r in (0, 1)]
    for name in last[0]:
        assert torch.equal(last[0][name], last[1][name]), name
    assert any(not torch.equal(last[0][k], ref_weights[k]) for k in ref_weights)


def _train_wm(run_dir: Path, dataset: EpisodeDataset, *extra: str) -> list[str]:
    return [
        "-m",
        "diamond_env",
        "train-wm",
        "--preset",
        "tiny",
        "--dataset",
        str(dataset.root),
        "--run-dir",
        str(run_dir),
        "--no-progress",
        "--eval-every",
        "0",
        "--eval-rollouts",
        "4",
        *extra,
    ]


def test_a_rank_that_dies_makes_the_other_exit_with_a_clear_error(
    breakout_dataset: EpisodeDataset, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    args = [
        sys.executable,
        *_train_wm(
            run_dir, breakout_dataset, "--steps", "100000", "--save-every", "2", "--log-every", "1"
        ),
    ]
    procs = launch(args, DIAMOND_ENV_DIST_TIMEOUT="30")
    try:
        deadline = time.monotonic() + 120
        while not (run_dir / "resume.pt").exists():
            assert time.monotonic() < deadline, "no step was saved in 120 s"
            assert all(p.poll() is None for p in procs), finish(procs)
            time.sleep(0.2)
        procs[1].kill()
        start = time.monotonic()
        code, err = finish(procs[:1], timeout=90)[0]
        waited = time.monotonic() - start
    finally:
        for p in procs:
            p.kill()
    assert code == 2, err[-2000:]
    assert "another process of this run stopped answering" in err, err[-2000:]
    assert "--resume" in err
    assert waited < 60


def test_torchrun_run_killed_with_kill_9_resumes(
    breakout_dataset: EpisodeDataset, tmp_path: Path
) -> None:
    """``torchrun --nproc_per_node 2 -m diamond_env train-wm`` killed with SIGKILL (launcher and
    workers) after a save continues from it with ``--resume``, and cannot be resumed by another process count."""
    run_dir = tmp_path / "run"
    torchrun = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(free_port()),
    ]
    args = _train_wm(
        run_dir, breakout_dataset, "--steps", "8", "--save-every", "2", "--log-every", "1"
    )
    env = dict(os.environ, OMP_NUM_THREADS="1")
    run = subprocess.Popen(
        [*torchrun, *args],
        env=env,
        start_new_session=True,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 150
        while True:
            assert run.poll() is None, run.communicate()[0][-3000:]
            assert time.monotonic() < deadline, "no save within 150 s"
            if (run_dir / "resume.pt").exists():
                saved = int(load_resume_state(run_dir / "resume.pt")["grad_steps"])
                if saved >= 2:
                    break
            time.sleep(0.1)
    finally:  # the launcher and its workers (which torchrun starts in sessions of their own)
        for pid in [*descendants(run.pid), run.pid]:
            os.kill(pid, signal.SIGKILL)
        run.wait()
        time.sleep(0.5)
    saved = int(load_resume_state(run_dir / "resume.pt")["grad_steps"])
    assert 2 <= saved < 8
    logged_before = len((run_dir / "metrics.jsonl").read_text().splitlines())

    one = subprocess.run(
        [sys.executable, *args, "--resume"], env=env, text=True, capture_output=True, timeout=120
    )
    assert one.returncode == 2
    assert "trained by 2 process(es)" in one.stderr and "--nproc_per_node 2" in one.stderr

    again = subprocess.run(
        [*torchrun[:-1], str(free_port()), *args, "--resume"],
        env=env,
        text=True,
        capture_output=True,
        timeout=240,
    )
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-3000:]
    results = json.loads((run_dir / "eval_wm.json").read_text())
    assert results["grad_steps"] == 8 and results["processes"] == 2
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").open()]
    resumed = [r["step"] for r in records[logged_before:] if r["kind"] == "train"]
    assert resumed == list(range(saved + 1, 9))  # on from the save, logged by rank 0 alone
    assert again.stdout.count("world model:") == 1


def test_full_loop_under_two_processes_stops_and_resumes(tmp_path: Path) -> None:
    """``diamond-env train`` data-parallel: rank 0 collects within the budget and writes; the
    ranks dream their own envs (their states travel in resume.pt), stop together at the
    deadline and resume from the same epoch."""
    run_dir = tmp_path / "run"
    args = [
        sys.executable,
        "-m",
        "diamond_env",
        "train",
        "--preset",
        "tiny",
        "--run-dir",
        str(run_dir),
        "--real-steps",
        "300",
        "--num-contexts",
        "16",
        "--no-progress",
        "--overrides",
        FAST,
    ]
    results = finish(launch([*args, "--max-minutes", "1e-6"]))
    assert all(code == 0 for code, _ in results), results[0][1][-3000:] + results[1][1][-3000:]
    state = load_resume_state(run_dir / "resume.pt")
    assert state["epoch"] == 1 < state["total_epochs"] and state["world_size"] == 2
    from diamond_env.training.distributed import rank_state

    own = [rank_state(state["ranks"], r, 2) for r in (0, 1)]
    assert own[0]["samplers"] != own[1]["samplers"]  # each rank draws its own segments
    dreams = [o["actor_critic"]["loop"]["obs"] for o in own]
    assert dreams[0].shape[0] == 4 and not torch.equal(dreams[0], dreams[1])  # 8 envs / 2 ranks

    results = finish(launch([*args, "--resume"]))
    assert all(code == 0 for code, _ in results), results[0][1][-3000:] + results[1][1][-3000:]
    final = json.loads((run_dir / "eval.json").read_text())
    assert final["finished"] and final["processes"] == 2 and final["real_steps"] == 300
    assert EpisodeDataset.open(run_dir / "dataset").num_steps == 300
    epochs = [
        json.loads(line)["step"]
        for line in (run_dir / "metrics.jsonl").open()
        if json.loads(line)["kind"] == "train"
    ]
    assert epochs == list(range(1, final["epochs"] + 1))  # rank 0 logs, no epoch twice


def test_commands_that_are_not_data_parallel_refuse_to_run_under_torchrun(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from diamond_env.cli.main import main

    monkeypatch.setenv("WORLD_SIZE", "2")
    out = tmp_path / "data"
    assert main(["collect", "--game", "Breakout", "--steps", "10", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "only train-wm and train run data-parallel" in err and "one process" in err
    assert not out.exists()
