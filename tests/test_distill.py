"""``diamond-env distill``: a student that dreams in fewer denoising steps, taught by its teacher's
own sampler, on the tiny world model written by the tree of 0.1.0 (tests/data/v0.1.0)."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import gymnasium as gym
import pytest
import torch

from diamond_env.cli.main import main
from diamond_env.data.dataset import EpisodeDataset
from diamond_env.data.segments import SegmentSampler, to_torch
from diamond_env.models.sampler import draw_normal
from diamond_env.run.safe_io import InputError
from diamond_env.training.distill import (
    DistillOptions,
    distill,
    make_student,
    student_config,
    student_frame,
    teacher_frame,
)
from diamond_env.world_model.model import WorldModel

OLD = Path(__file__).parent / "data" / "v0.1.0"


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    root = tmp_path / "ds"
    shutil.copytree(OLD / "dataset", root)
    return root


def _batch(root: Path, wm: WorldModel, n: int = 8) -> tuple[torch.Tensor, ...]:
    with EpisodeDataset.open(root) as ds:
        data = ds.load_all()
    ctx = wm.config.denoiser.num_context
    seg = to_torch(SegmentSampler(data, ctx + 1, pad_after_end=False, seed=5).sample(n))
    gen = torch.Generator().manual_seed(3)
    noise = draw_normal(tuple(seg.obs[:, ctx].shape), "cpu", gen)
    return seg.obs[:, :ctx], seg.act[:, :ctx], noise


def test_student_euler_is_the_samplers_euler(dataset: Path) -> None:
    """With the teacher's own steps, the differentiable Euler of the student is the dream's
    sampler, up to the quantisation the sampler applies to each denoised estimate."""
    teacher = WorldModel.load(OLD / "world_model")
    obs, act, noise = _batch(dataset, teacher)
    with torch.no_grad():
        mine = student_frame(teacher, noise, obs, act).clamp(-1, 1)
    theirs = teacher_frame(teacher, noise, obs, act)
    steps = teacher.config.sampler.num_steps
    assert (mine - theirs).abs().max().item() <= (steps + 1) / 127.5


def test_student_config_and_refusals() -> None:
    teacher = WorldModel.load(OLD / "world_model")
    student = make_student(teacher, 1)
    assert student.config.sampler.num_steps == 1
    assert dataclasses.replace(student.config, sampler=teacher.config.sampler) == teacher.config
    for key, value in teacher.state_dict().items():
        assert torch.equal(student.state_dict()[key], value)
    with pytest.raises(InputError, match="fewer steps"):
        student_config(teacher.config, teacher.config.sampler.num_steps)
    heun = dataclasses.replace(
        teacher.config, sampler=dataclasses.replace(teacher.config.sampler, method="heun")
    )
    with pytest.raises(InputError, match="deterministic Euler"):
        student_config(heun, 1)
    with pytest.raises(InputError, match="--teacher is required"):
        DistillOptions(dataset="x", run_dir="y").validate()


def test_distillation_brings_the_student_to_its_teacher(dataset: Path, tmp_path: Path) -> None:
    teacher = WorldModel.load(OLD / "world_model")
    obs, act, noise = _batch(dataset, teacher)
    target = teacher_frame(teacher, noise, obs, act)

    def gap(wm: WorldModel) -> float:
        with torch.no_grad():
            return (student_frame(wm, noise, obs, act).clamp(-1, 1) - target).pow(2).mean().item()

    before = gap(make_student(teacher, 1))
    run = tmp_path / "run"
    opts = DistillOptions(
        teacher=str(OLD / "world_model"),
        dataset=str(dataset),
        run_dir=str(run),
        steps=40,
        lr=1e-3,
        progress=False,
    )
    distill(opts)
    after = gap(WorldModel.load(run / "world_model"))
    assert after < 0.8 * before, (before, after)


def test_cli_resume_and_the_student_serves_a_dream(dataset: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    argv = ["distill", "--teacher", str(OLD / "world_model"), "--dataset", str(dataset)]
    argv += ["--run-dir", str(run), "--steps", "3", "--save-every", "2", "--no-progress"]
    assert main(argv) == 0
    assert main(argv) == 2  # a run is there: refused without --resume
    assert main(["distill", "--resume", "--run-dir", str(run), "--steps", "5"]) == 0
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert len(lines) >= 2
    env = gym.make("diamond_env:Dream-v0", checkpoint=str(run / "world_model"))
    assert env.unwrapped.simulator.sampler_config.num_steps == 1  # type: ignore[attr-defined]
    obs, _ = env.reset(seed=0)
    assert env.step(0)[0].shape == obs.shape
    env.close()


def test_eval_wm_measures_a_fast_path_and_fewer_steps(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval.json"
    argv = ["eval-wm", "--checkpoint", str(OLD / "world_model"), "--dataset", str(dataset)]
    argv += ["--batches", "1", "--rollouts", "2", "--out", str(out)]
    argv += ["--fastpath", "channels_last,bf16", "--num-denoising-steps", "1"]
    assert main(argv) == 0
    assert "psnr" in out.read_text()
    assert main([*argv[:-4], "--fastpath", "nonsense"]) == 2


def test_a_slimmer_student_starts_fresh_beside_the_teachers_reward_model(
    dataset: Path, tmp_path: Path
) -> None:
    teacher = WorldModel.load(OLD / "world_model")
    slim = make_student(teacher, 1, "denoiser.channels=[4,4,4,4]")
    assert slim.config.denoiser.channels == (4, 4, 4, 4)
    assert sum(p.numel() for p in slim.denoiser.parameters()) < sum(
        p.numel() for p in teacher.denoiser.parameters()
    )
    for key, value in teacher.rew_end.state_dict().items():
        assert torch.equal(slim.rew_end.state_dict()[key], value)
    with pytest.raises(InputError, match="only denoiser"):
        make_student(teacher, 1, "rew_end.lstm_dim=8")
    with pytest.raises(ValueError, match="no field"):
        make_student(teacher, 1, "denoiser.width=8")
    run = tmp_path / "slim"
    opts = DistillOptions(
        teacher=str(OLD / "world_model"),
        dataset=str(dataset),
        run_dir=str(run),
        steps=3,
        student_overrides="denoiser.channels=[4,4,4,4]",
        progress=False,
    )
    distill(opts)
    saved = WorldModel.load(run / "world_model")  # an ordinary checkpoint of the slim size
    assert saved.config.denoiser.channels == (4, 4, 4, 4) and saved.config.sampler.num_steps == 1


def test_a_student_continues_from_an_earlier_one(dataset: Path, tmp_path: Path) -> None:
    """``--init-student``: the denoiser starts from an earlier student's (not the teacher's), and a
    student of another size, step count or game is refused before anything is written."""
    base = {"teacher": str(OLD / "world_model"), "dataset": str(dataset), "progress": False}
    first = tmp_path / "first"
    distill(DistillOptions(**base, run_dir=str(first), steps=6, lr=1e-3))  # type: ignore[arg-type]
    earlier = WorldModel.load(first / "world_model")
    teacher = WorldModel.load(OLD / "world_model")
    changed = [
        k
        for k, v in earlier.denoiser.state_dict().items()
        if not torch.equal(v, teacher.denoiser.state_dict()[k])
    ]
    assert changed  # the earlier student moved away from the teacher

    second = tmp_path / "second"
    opts = DistillOptions(
        **base,  # type: ignore[arg-type]
        run_dir=str(second),
        init_student=str(first / "world_model"),
        steps=1,
        lr=1e-9,  # one step that barely moves: the start is what is seen
    )
    distill(opts)
    cont = WorldModel.load(second / "world_model")
    for key in changed:
        assert torch.allclose(cont.denoiser.state_dict()[key], earlier.denoiser.state_dict()[key])
    for key, value in teacher.rew_end.state_dict().items():
        assert torch.equal(cont.rew_end.state_dict()[key], value)

    slim = tmp_path / "slim"
    distill(
        DistillOptions(
            **base,  # type: ignore[arg-type]
            run_dir=str(slim),
            steps=1,
            student_overrides="denoiser.channels=[4,4,4,4]",
        )
    )
    refused = tmp_path / "refused"
    with pytest.raises(InputError, match="--init-student .*another config"):
        distill(
            DistillOptions(**base, run_dir=str(refused), init_student=str(slim / "world_model"))
        )  # type: ignore[arg-type]
    assert not refused.exists()
    argv = ["distill", "--teacher", str(OLD / "world_model"), "--dataset", str(dataset)]
    argv += ["--run-dir", str(refused), "--init-student", str(tmp_path / "nowhere")]
    assert main(argv) == 2
    assert not (refused / "resume.pt").exists()
