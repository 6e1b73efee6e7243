"""Fewer denoising steps per dreamt frame: distil a world model's sampler into a student.

The teacher's sampler is deterministic (Euler, no churn): a noise draw and a context fix its
frame. The student, started from the teacher's weights, learns to reach the frame the teacher's
``N``-step sampler reaches from the same noise in ``k < N`` steps of its own (Luhman & Luhman,
2021: "knowledge distillation" of the probability-flow ODE; with ``k = 1`` the student's frame is
its denoised estimate at the first level). The loss back-propagates through the student's ``k``
Euler steps and weighs the pixels where the teacher's frame differs from the last context frame
``1 + denoiser.change_weight`` (the ball is a few of 4,096 pixels). The reward/end model and the
starting contexts are the teacher's. The student is a world-model checkpoint like any other,
with ``sampler.num_steps = k``: ``gym.make(..., checkpoint=OUT/world_model)`` dreams with it.

A run directory holds ``options.json``, ``run.json``, ``world_model/`` (the student, kept up to
date), ``resume.pt``, ``metrics.jsonl`` and TensorBoard logs; with ``--heldout`` also
``eval_wm.json`` (teacher and student on the same held-out dreams, beside copy-last-frame).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from diamond_env.config import Config, apply_overrides
from diamond_env.data.dataset import EpisodeDataset
from diamond_env.data.segments import SegmentSampler, to_torch
from diamond_env.evaluation.wm_eval import evaluate_world_model
from diamond_env.models.sampler import draw_normal, karras_sigmas, next_frame
from diamond_env.run.checkpoint import (
    atomic_write_json,
    check_run_dir,
    load_resume_state,
    resolve_device,
    restoring,
    rng_state,
    save_resume_state,
    seed_everything,
    set_rng_state,
)
from diamond_env.run.metrics import MetricsLogger
from diamond_env.run.options import field_defaults, opt
from diamond_env.run.progress import BudgetBar
from diamond_env.run.runinfo import start_run
from diamond_env.run.safe_io import InputError
from diamond_env.training.optim import make_optimizer, optimizer_step
from diamond_env.training.train_wm import eval_scalars
from diamond_env.world_model.model import WorldModel

_FIXED_ON_RESUME = (
    "teacher",
    "dataset",
    "num_steps",
    "student_overrides",
    "init_student",
    "batch_size",
    "lr",
    "change_weight",
    "seed",
)


@dataclass(frozen=True)
class DistillOptions:
    """What ``diamond-env distill`` does; every field is a ``--flag``."""

    teacher: str | None = opt(None, "world-model checkpoint to distil (its sampler is the target)")
    dataset: str | None = opt(
        None, "episodes whose contexts the student learns on (e.g. the teacher's)"
    )
    run_dir: str | None = opt(None, "run directory; the student is written to RUN_DIR/world_model")
    num_steps: int = opt(1, "denoising steps of the student (fewer than the teacher's)")
    student_overrides: str = opt(
        "",
        "a student denoiser of another size, e.g. 'denoiser.channels=[16,16,16,16]' "
        "(whitespace-separated denoiser.field=JSON): it starts from fresh weights instead of the "
        "teacher's and keeps the teacher's reward/end model",
    )
    init_student: str | None = opt(
        None,
        "a student checkpoint (an earlier distillation's world_model) whose denoiser this one "
        "starts from instead of the teacher's: to continue at another --lr, or onto a teacher "
        "trained further",
    )
    steps: int = opt(1_000, "gradient steps; a resumed run continues up to it")
    batch_size: int = opt(0, "contexts per step (0: the teacher's denoiser batch)")
    lr: float = opt(1e-4, "AdamW learning rate (after the teacher preset's warm-up)")
    change_weight: float = opt(
        -1.0,
        "extra weight of the pixels where the teacher's frame differs from the last context "
        "frame (-1: the teacher's denoiser.change_weight)",
    )
    device: str = opt("cpu", "torch device: cpu | cuda")
    seed: int = opt(0, "seed of context sampling and noise")
    save_every: int = opt(100, "gradient steps between saves of the student and resume.pt")
    log_every: int = opt(10, "gradient steps between metrics.jsonl records")
    max_minutes: float = opt(0.0, "stop (save, evaluate) after this much training time; 0: none")
    heldout: str | None = opt(
        None, "episodes never trained on: teacher and student evaluated on them at the end"
    )
    eval_batches: int = opt(8, "held-out evaluation: batches of teacher-forced segments")
    eval_rollouts: int = opt(64, "held-out evaluation: open-loop dreams")
    resume: bool = opt(False, "continue the run in --run-dir where it stopped")
    progress: bool = opt(True, "show a progress bar")

    def options_file(self) -> Path:
        """Where the run stores these options (a resumed run takes the ones not given from it)."""
        if self.run_dir is None:
            raise InputError("--run-dir is required")
        return Path(self.run_dir) / "options.json"

    def validate(self) -> None:
        for name in ("teacher", "dataset", "run_dir"):
            if getattr(self, name) is None:
                raise InputError(f"--{name.replace('_', '-')} is required")
        for name in ("steps", "num_steps", "save_every", "log_every", "eval_batches"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise InputError(f"{name}: expected a positive int, got {value!r}")
        if self.batch_size < 0 or self.eval_rollouts < 0:
            raise InputError("batch_size and eval_rollouts: expected >= 0")
        if not 0.0 < self.lr < 1.0:
            raise InputError(f"lr: expected in (0, 1), got {self.lr}")
        if self.change_weight < 0 and self.change_weight != -1.0:
            raise InputError(f"change_weight: expected >= 0 (or -1), got {self.change_weight}")
        if self.max_minutes < 0:
            raise InputError(f"max_minutes: expected >= 0, got {self.max_minutes}")
        resolve_device(self.device)


def student_config(teacher: Config, num_steps: int) -> Config:
    """The teacher's config with a ``num_steps``-step Euler sampler (everything else kept)."""
    cfg = teacher.sampler
    if cfg.method != "euler" or cfg.s_churn > 0:
        raise InputError(
            "distill: the teacher's sampler must be deterministic Euler (sampler.method 'euler', "
            f"s_churn 0), got {cfg.method!r} with s_churn {cfg.s_churn}"
        )
    if cfg.context_noise > 0:
        raise InputError("distill: a teacher that dreams with context noise is not supported")
    if num_steps >= cfg.num_steps:
        raise InputError(
            f"--num-steps {num_steps}: the student must take fewer steps than the teacher's "
            f"{cfg.num_steps}"
        )
    return dataclasses.replace(teacher, sampler=dataclasses.replace(cfg, num_steps=num_steps))


def make_student(teacher: WorldModel, num_steps: int, overrides: str = "") -> WorldModel:
    """A world model with the teacher's contexts and game and a ``num_steps`` sampler, and the
    teacher's weights; with ``overrides`` (``denoiser.field=JSON ...``) a denoiser of that
    config with fresh weights beside the teacher's reward/end model."""
    config = student_config(teacher.config, num_steps)
    if overrides:
        sections = {item.partition(".")[0] for item in overrides.split()}
        if sections != {"denoiser"}:
            raise InputError(
                f"--student-overrides {overrides!r}: only denoiser.field=value items are allowed"
            )
        config = apply_overrides(config, overrides)
    student = WorldModel(config, teacher.game, teacher.action_meanings, teacher.contexts)
    student.env = teacher.env
    if overrides:
        student.rew_end.load_state_dict(teacher.rew_end.state_dict())
    else:
        student.load_state_dict(teacher.state_dict())
    return student.to(teacher.device)


def warm_start(student: WorldModel, earlier: WorldModel, where: str) -> None:
    """Copy ``earlier``'s denoiser into ``student`` (``InputError`` unless both are of the same
    game and actions, denoiser config and number of denoising steps)."""
    why = None
    if (earlier.game, earlier.action_meanings) != (student.game, student.action_meanings):
        why = f"a model of {earlier.game} {earlier.action_meanings}"
    elif earlier.config.denoiser != student.config.denoiser:
        why = "a denoiser of another config (compare --student-overrides)"
    elif earlier.config.sampler.num_steps != student.config.sampler.num_steps:
        why = f"a {earlier.config.sampler.num_steps}-step sampler"
    if why is not None:
        raise InputError(
            f"--init-student {where}: {why}; the student is {student.game}, "
            f"{student.config.sampler.num_steps} step(s)"
        )
    student.denoiser.load_state_dict(earlier.denoiser.state_dict())


def student_frame(
    student: WorldModel, noise: torch.Tensor, obs: torch.Tensor, act: torch.Tensor
) -> torch.Tensor:
    """The student's frame before quantisation, differentiable: its Euler steps from ``noise``
    (the sampler's start, unit variance as DIAMOND's) on its own Karras levels."""
    cfg = student.config.sampler
    den = student.denoiser
    sigmas = karras_sigmas(cfg.num_steps, cfg.sigma_min, cfg.sigma_max, cfg.rho, noise.device)
    x = noise if cfg.start == "unit" else cfg.sigma_max * noise
    origin = den.origin(obs)
    if origin is not None:
        x = x + origin
    for i in range(cfg.num_steps):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = den.denoise(x, sigma.expand(x.shape[0]), obs, act)
        x = x + (x - denoised) / sigma * (sigma_next - sigma)
    return x


def teacher_frame(
    teacher: WorldModel, noise: torch.Tensor, obs: torch.Tensor, act: torch.Tensor
) -> torch.Tensor:
    """The frame the teacher's own sampler reaches from ``noise`` (quantised, as it dreams it),
    before ``min_change`` (which the student's frame meets in its dream too)."""
    cfg = dataclasses.replace(teacher.config.sampler, min_change=0)
    with torch.no_grad():
        return next_frame(teacher.denoiser, obs, act, noise, cfg)


def distill_loss(
    student: WorldModel,
    teacher: WorldModel,
    obs: torch.Tensor,
    act: torch.Tensor,
    noise: torch.Tensor,
    change_weight: float | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted MSE between the student's frame and the teacher's from the same noise and
    context (``obs`` (B, L, 3, H, W) in [-1, 1], ``act`` (B, L)); pixels that move weigh
    ``1 + change_weight`` (None: the student's ``denoiser.change_weight``)."""
    target = teacher_frame(teacher, noise, obs, act)
    pred = student_frame(student, noise, obs, act)
    moved = (target - obs[:, -1]).abs().amax(dim=1, keepdim=True) > 1.0 / 255
    if change_weight is None:
        change_weight = student.config.denoiser.change_weight
    weight = 1.0 + change_weight * moved.to(pred.dtype)
    err = (pred - target).pow(2) * weight
    loss = err.sum() / (weight.sum() * pred.shape[1])
    with torch.no_grad():
        plain = (pred.clamp(-1, 1) - target).pow(2).mean()
    return loss, {"distill/loss": float(loss.detach()), "distill/mse": float(plain)}


def distill(opts: DistillOptions) -> dict[str, Any]:
    """Run (or resume) a distillation; returns the held-out comparison (empty without
    ``--heldout``)."""
    opts.validate()
    assert opts.teacher is not None and opts.dataset is not None and opts.run_dir is not None
    run_dir = Path(opts.run_dir)
    check_run_dir(
        run_dir,
        resume=opts.resume,
        options=dataclasses.asdict(opts),
        fixed=_FIXED_ON_RESUME,
        defaults=field_defaults(opts),
    )
    device = resolve_device(opts.device)
    teacher = WorldModel.load(opts.teacher, device=device)
    # checks the teacher and the overrides before anything is written
    student = make_student(teacher, opts.num_steps, opts.student_overrides)
    if opts.init_student is not None:
        warm_start(student, WorldModel.load(opts.init_student, device=device), opts.init_student)
    with EpisodeDataset.open(opts.dataset) as ds:
        if ds.game != teacher.game or ds.action_meanings != teacher.action_meanings:
            raise InputError(
                f"--dataset {opts.dataset}: episodes of {ds.game} {ds.action_meanings}, the "
                f"teacher is {teacher.game} {teacher.action_meanings}"
            )
        data = ds.load_all()
    session = start_run(run_dir, "distill", dataclasses.asdict(opts), 1)
    seed_everything(opts.seed)
    config = student.config
    ctx = config.denoiser.num_context
    segments = SegmentSampler(
        data,
        ctx + 1,
        pad_after_end=False,
        recency_weights=config.loop.recency_weights,
        seed=opts.seed + 1,
    )
    optim_cfg = dataclasses.replace(config.denoiser_optim, lr=opts.lr)
    optimizer, scheduler = make_optimizer(student.denoiser, optim_cfg)
    batch = opts.batch_size or optim_cfg.batch_size
    step = 0
    if opts.resume:
        state = load_resume_state(run_dir / "resume.pt")
        with restoring(run_dir / "resume.pt"):
            student.denoiser.load_state_dict(state["denoiser"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            segments.rng.bit_generator.state = state["segments"]
            set_rng_state(state["rng"])
            step = int(state["step"])
    teacher.denoiser.eval()
    deadline = time.monotonic() + 60 * opts.max_minutes if opts.max_minutes > 0 else float("inf")
    bar = BudgetBar(opts.steps, step, "distill", opts.max_minutes, disable=not opts.progress)

    def save() -> None:
        student.save(run_dir / "world_model")
        state = {
            "step": step,
            "denoiser": student.denoiser.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "segments": segments.rng.bit_generator.state,
            "rng": rng_state(),
        }
        save_resume_state(run_dir / "resume.pt", state)

    with MetricsLogger(run_dir) as log:
        while step < opts.steps:
            seg = to_torch(segments.sample(batch), device)
            obs, act = seg.obs[:, :ctx], seg.act[:, :ctx]
            noise = draw_normal(tuple(seg.obs[:, ctx].shape), device)
            student.denoiser.train()
            loss, metrics = distill_loss(
                student,
                teacher,
                obs,
                act,
                noise,
                None if opts.change_weight < 0 else opts.change_weight,
            )
            metrics["distill/grad_norm"] = optimizer_step(
                loss, student.denoiser, optimizer, scheduler, optim_cfg.max_grad_norm
            )
            step += 1
            out_of_time = time.monotonic() > deadline
            if step % opts.log_every == 0 or step == opts.steps or out_of_time:
                log.log(step, metrics)
                bar.postfix.update(loss=metrics["distill/loss"])
            bar.update()
            if step % opts.save_every == 0 or step == opts.steps or out_of_time:
                save()
            if out_of_time:
                break
        bar.close()
        if not (run_dir / "world_model").exists():
            save()
        results: dict[str, Any] = {}
        if opts.heldout is not None:
            results = compare_on_heldout(teacher, student, opts)
            log.log(step, eval_scalars(results["student"]), kind="eval")
            atomic_write_json(run_dir / "eval_wm.json", results)
    session.finish(grad_steps=step, headline=results.get("student", {}).get("headline"))
    return results


def compare_on_heldout(
    teacher: WorldModel, student: WorldModel, opts: DistillOptions
) -> dict[str, Any]:
    """Teacher and student on the same held-out segments and dreams (same seed)."""
    assert opts.heldout is not None
    with EpisodeDataset.open(opts.heldout) as ds:
        data = ds.load_all()
    student.denoiser.eval()
    out = {}
    for name, wm in (("teacher", teacher), ("student", student)):
        out[name] = evaluate_world_model(
            wm,
            data,
            seq_len=wm.config.loop.rew_end_seq_len,
            seed=opts.seed,
            batches=opts.eval_batches,
            num_rollouts=opts.eval_rollouts,
        )
    return out
