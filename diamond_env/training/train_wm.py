"""World-model training from real play: the library side of ``train_wm.py``.

A run directory holds ``options.json`` (what the run was asked to do), ``dataset/`` (when the run
collected its own data), ``world_model/`` (the inference checkpoint, kept up to date),
``resume.pt`` (weights, optimisers, counters and RNG states, read with ``weights_only=True``),
``metrics.jsonl``, ``tensorboard/``, ``eval_wm.json`` and ``real_vs_imagined.png``.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diamond_env.config import IMG_SIZE, apply_overrides, get_preset
from diamond_env.data.collect import collect_random_until
from diamond_env.data.dataset import EpisodeDataset
from diamond_env.data.episode import FlatData
from diamond_env.data.segments import SegmentSampler
from diamond_env.devices import tf32_matmuls
from diamond_env.evaluation.wm_eval import evaluate_world_model
from diamond_env.real_env import check_game, is_ale_game
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
from diamond_env.run.paths import default_run_dir
from diamond_env.run.progress import BudgetBar
from diamond_env.run.runinfo import start_run
from diamond_env.run.safe_io import InputError
from diamond_env.training import distributed
from diamond_env.training.distributed import Distributed, own_state
from diamond_env.training.wm_trainer import (
    WorldModelTrainer,
    build_context_bank,
    make_samplers,
    split_episodes,
)
from diamond_env.world_model.model import WorldModel, check_world_model_sizes

# Options that must not change when a run is resumed.
_FIXED_ON_RESUME = (
    "game",
    "preset",
    "overrides",
    "dataset",
    "real_steps",
    "seed",
    "test_fraction",
    "num_contexts",
    "init_from",
)

# Config fields that shape the networks or what their outputs mean: a run started from another
# checkpoint's weights (--init-from) must have the same; the rest of the recipe (losses, learning
# rates, windows, the dream's sampler) may differ.
_NETWORK_FIELDS = {
    "denoiser": (
        "channels",
        "depths",
        "attn_depths",
        "cond_channels",
        "action_emb_dim",
        "num_context",
        "img_channels",
        "sigma_data",
        "predict_change",
    ),
    "rew_end": (
        "channels",
        "depths",
        "attn_depths",
        "cond_channels",
        "lstm_dim",
        "img_channels",
        "frame_difference",
        "change_grid",
    ),
}


@dataclass(frozen=True)
class TrainWMOptions:
    """What ``python train_wm.py`` does; every field is a ``--flag``."""

    game: str = opt("Breakout", "ALE game name")
    preset: str = opt("tiny", "model sizes: tiny | cpu | small | paper")
    overrides: str = opt(
        "",
        "config overrides, whitespace-separated section.field=JSON, e.g. 'denoiser_optim.lr=1e-3 loop.denoiser_seq_len=5'",
    )
    run_dir: str | None = opt(
        None, "output directory (default: $DIAMOND_ENV_HOME or runs, /<Game>)"
    )
    dataset: str | None = opt(
        None, "episode dataset to train on; without it, --real-steps random steps are collected"
    )
    real_steps: int = opt(10_000, "random-policy steps to collect when no --dataset is given")
    steps: int = opt(1_000, "gradient steps of each network; a resumed run continues up to it")
    resume: bool = opt(False, "continue the run in --run-dir where it stopped")
    device: str = opt("cpu", "torch device: cpu | cuda")
    seed: int = opt(0, "seed of data sampling, model initialisation and noise")
    save_every: int = opt(200, "gradient steps between checkpoint saves")
    eval_every: int = opt(500, "gradient steps between held-out evaluations (0: only at the end)")
    log_every: int = opt(10, "gradient steps between metrics.jsonl records")
    snapshots: bool = opt(
        False, "also keep the world model of every periodic evaluation in snapshots/step-N"
    )
    test_fraction: float = opt(0.1, "share of the episodes (the latest) held out for evaluation")
    num_contexts: int = opt(256, "real starting contexts stored in the checkpoint")
    num_envs: int = opt(1, "real games played at once when collecting")
    progress: bool = opt(True, "show progress bars")
    max_minutes: float = opt(
        0.0, "stop (save, evaluate) after this much training time; 0: no limit"
    )
    eval_rollouts: int = opt(
        16, "open-loop dreams of the final held-out evaluation (periodic ones: half as many)"
    )
    batch_per_rank: int = opt(
        0, "under torchrun: segments per process and step (0: the preset's batch / processes)"
    )
    init_from: str | None = opt(
        None,
        "start the networks from this world-model checkpoint's weights (fresh optimisers, step 0): "
        "fine-tune a trained or shipped model with another recipe or more data",
    )

    def resolved_run_dir(self) -> Path:
        return Path(self.run_dir) if self.run_dir else default_run_dir(self.game)

    def options_file(self) -> Path:
        """Where the run stores these options (a resumed run takes the ones not given from it)."""
        return self.resolved_run_dir() / "options.json"

    def validate(self) -> None:
        if not is_ale_game(check_game(self.game)) and self.dataset is None:  # before any path
            raise InputError(
                f"game {self.game}: not an ALE game; train on a dataset collected from it "
                f"(diamond-env collect --env-id {self.game} ...; then --dataset)"
            )
        check_world_model_sizes(apply_overrides(get_preset(self.preset), self.overrides))
        resolve_device(self.device)
        for name in (
            "steps",
            "real_steps",
            "save_every",
            "log_every",
            "num_contexts",
            "num_envs",
            "eval_rollouts",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}: expected a positive int, got {getattr(self, name)}")
        for name in ("eval_every", "batch_per_rank"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: expected >= 0, got {getattr(self, name)}")


def _load_data(opts: TrainWMOptions, run_dir: Path, collect: bool = True) -> EpisodeDataset:
    """The dataset to train on; without ``--dataset``, the run's own, collected first unless
    ``collect`` is False (the other ranks of a data-parallel run, once rank 0 has collected)."""
    if opts.dataset is not None or not collect:
        path = opts.dataset if opts.dataset is not None else run_dir / "dataset"
        dataset = EpisodeDataset.open(path)
        if dataset.game != check_game(opts.game):
            raise ValueError(f"dataset {path} holds {dataset.game}, not {opts.game}")
    else:
        dataset, _ = collect_random_until(
            run_dir / "dataset",
            opts.game,
            opts.real_steps,
            num_envs=opts.num_envs,
            seed=opts.seed,
            progress=opts.progress,
        )
    if tuple(dataset.frame_shape) != (IMG_SIZE, IMG_SIZE, 3):
        raise ValueError(
            f"dataset frames: expected shape ({IMG_SIZE}, {IMG_SIZE}, 3), got {dataset.frame_shape}"
        )
    return dataset


def _save(
    run_dir: Path,
    wm: WorldModel,
    trainer: WorldModelTrainer,
    samplers: tuple[Any, ...],
    dist: Distributed,
) -> None:
    """Write the checkpoint and ``resume.pt`` (rank 0); every rank sends it its own draw states."""
    own = {"rng": rng_state(), "samplers": [s.rng.bit_generator.state for s in samplers]}
    ranks = dist.gather_states(own)
    if not dist.is_main:
        return
    wm.save(run_dir / "world_model")
    state = trainer.state_dict()
    state.update(own)
    state["world_size"] = dist.world_size
    if dist.enabled:
        state["ranks"] = ranks
    save_resume_state(run_dir / "resume.pt", state)


def _load(
    run_dir: Path, trainer: WorldModelTrainer, samplers: tuple[Any, ...], dist: Distributed
) -> None:
    """Continue from ``resume.pt``: shared weights and optimisers, and this rank's draw states."""
    state = load_resume_state(run_dir / "resume.pt")
    with restoring(run_dir / "resume.pt"):
        trainer.load_state_dict(state)
        own = own_state(state, dist)
        for sampler, s in zip(samplers, own["samplers"], strict=True):
            sampler.rng.bit_generator.state = s
        set_rng_state(own["rng"])


def _init_source(opts: TrainWMOptions) -> WorldModel | None:
    """The checkpoint of ``--init-from`` (None without it, or when resuming), checked against
    this run before anything is written: same game and the same network fields (``ValueError``
    naming each one that differs)."""
    if opts.init_from is None or opts.resume:  # a resumed run has its own weights
        return None
    source = WorldModel.load(opts.init_from)
    if source.game != check_game(opts.game):
        raise ValueError(f"--init-from {opts.init_from}: a model of {source.game}, not {opts.game}")
    config = apply_overrides(get_preset(opts.preset), opts.overrides)
    diffs = []
    for section, names in _NETWORK_FIELDS.items():
        theirs, ours = getattr(source.config, section), getattr(config, section)
        diffs += [
            f"{section}.{name}: checkpoint has {getattr(theirs, name)!r}, this run "
            f"{getattr(ours, name)!r}"
            for name in names
            if getattr(theirs, name) != getattr(ours, name)
        ]
    if source.config.denoiser.context_noise and not config.denoiser.context_noise:
        diffs.append("denoiser.context_noise: checkpoint has True, this run False")
    if diffs:
        raise ValueError(
            f"--init-from {opts.init_from}: its networks differ from this run's (choose the "
            "checkpoint's preset, or overrides that keep these fields): " + "; ".join(diffs)
        )
    return source


def _init_weights(wm: WorldModel, source: WorldModel) -> None:
    """Copy ``source``'s denoiser and reward/end weights into ``wm`` (the same networks, or a
    denoiser that adds ``context_noise`` to them: its context-noise embedding is this run's)."""
    if source.action_meanings != wm.action_meanings:
        raise ValueError(
            f"--init-from: the checkpoint's actions {source.action_meanings} are not the "
            f"dataset's {wm.action_meanings}"
        )
    with torch.no_grad():  # float16 shipped weights become this run's float32 ones
        weights = source.denoiser.state_dict()
        if wm.denoiser.noise_cond_emb is not None and source.denoiser.noise_cond_emb is None:
            weights["noise_cond_emb.freqs"] = wm.denoiser.noise_cond_emb.freqs
        wm.denoiser.load_state_dict(weights)
        wm.rew_end.load_state_dict(source.rew_end.state_dict())


def train_world_model(opts: TrainWMOptions) -> dict[str, Any]:
    """Run (or resume) world-model training; returns the final held-out evaluation (on the other
    ranks of a data-parallel run, ``{"rank": r}``)."""
    opts.validate()
    run_dir = opts.resolved_run_dir()
    check_run_dir(
        run_dir,
        resume=opts.resume,
        options=dataclasses.asdict(opts),
        fixed=_FIXED_ON_RESUME,
        defaults=field_defaults(opts),
    )
    source = _init_source(opts)
    device = resolve_device(opts.device)
    with distributed.joined(device) as dist, tf32_matmuls(device):
        return _train(opts, run_dir, dist, source)


def _train(
    opts: TrainWMOptions, run_dir: Path, dist: Distributed, source: WorldModel | None = None
) -> dict[str, Any]:
    dist.wait_for_main()  # every rank has checked the run directory before rank 0 writes to it
    session = None
    if dist.is_main:
        session = start_run(run_dir, "train-wm", dataclasses.asdict(opts), dist.world_size)
    config = apply_overrides(get_preset(opts.preset), opts.overrides)
    seed_everything(opts.seed)
    dataset = _load_data(opts, run_dir) if dist.is_main else None
    dist.wait_for_main()  # rank 0 has collected
    if dataset is None:
        dataset = _load_data(opts, run_dir, collect=False)
    split = split_episodes(dataset.num_episodes, opts.test_fraction)
    train_data = dataset.load_all(split.train)
    test_data = dataset.load_all(split.test) if split.test else train_data
    bank = build_context_bank(
        train_data, opts.num_contexts, config.denoiser.num_context, np.random.default_rng(opts.seed)
    )
    wm = WorldModel(config, dataset.game, dataset.action_meanings, bank)
    wm.env = dataset.settings.get("env")  # a non-ALE env: which one, for the dream and evaluate
    if source is not None:
        _init_weights(wm, source)
    wm.to(dist.device)
    dist.broadcast_module_(wm.denoiser)
    dist.broadcast_module_(wm.rew_end)
    if not dist.is_main:  # the same weights everywhere, but each rank its own noise
        torch.manual_seed(dist.torch_rank_seed(opts.seed))
    trainer = WorldModelTrainer(
        wm, config, dist.device, dist=dist, batch_per_rank=opts.batch_per_rank or None
    )
    samplers = make_samplers(config, train_data, opts.seed, rank=dist.rank, game=wm.game)
    if opts.resume:
        _load(run_dir, trainer, samplers, dist)
    with MetricsLogger(run_dir, enabled=dist.is_main) as log:
        _loop(opts, run_dir, wm, trainer, samplers, test_data, log)
        results: dict[str, Any] = {"rank": dist.rank}
        if dist.is_main:
            results = evaluate_world_model(
                wm,
                test_data,
                seq_len=config.loop.rew_end_seq_len,
                seed=opts.seed,
                num_rollouts=opts.eval_rollouts,
                grid_path=run_dir / "real_vs_imagined.png",
            )
            log.log(trainer.grad_steps, eval_scalars(results), kind="eval")
        dist.wait_for_main()
    if not dist.is_main:
        return results
    results["grad_steps"] = trainer.grad_steps
    results["test_episodes"] = len(split.test)
    results["processes"] = dist.world_size
    atomic_write_json(run_dir / "eval_wm.json", results)
    assert session is not None
    session.finish(grad_steps=trainer.grad_steps, headline=results.get("headline"))
    return results


def _loop(
    opts: TrainWMOptions,
    run_dir: Path,
    wm: WorldModel,
    trainer: WorldModelTrainer,
    samplers: tuple[SegmentSampler, SegmentSampler],
    test_data: FlatData,
    log: MetricsLogger,
) -> None:
    dist = trainer.dist
    seq_len = trainer.config.loop.rew_end_seq_len
    deadline = time.monotonic() + 60 * opts.max_minutes if opts.max_minutes > 0 else float("inf")
    bar = BudgetBar(
        opts.steps,
        trainer.grad_steps,
        "world model",
        opts.max_minutes,
        disable=not opts.progress or not dist.is_main,
    )
    while trainer.grad_steps < opts.steps:
        metrics = trainer.train_step(*samplers)
        step = trainer.grad_steps
        out_of_time = dist.main_says(time.monotonic() > deadline)
        if step % opts.log_every == 0 or step == opts.steps or out_of_time:
            log.log(step, metrics)
            bar.postfix.update(den=metrics["denoiser/loss"], rew_end=metrics["rew_end/loss"])
        bar.update()
        if opts.eval_every and step % opts.eval_every == 0 and step < opts.steps:
            if dist.is_main:
                results = evaluate_world_model(
                    wm,
                    test_data,
                    seq_len=seq_len,
                    seed=opts.seed,
                    batches=2,
                    num_rollouts=max(1, opts.eval_rollouts // 2),
                )
                log.log(step, eval_scalars(results), kind="eval")
                if opts.snapshots:
                    wm.save(run_dir / "snapshots" / f"step-{step:07d}")
            dist.wait_for_main()
        if step % opts.save_every == 0 or step == opts.steps or out_of_time:
            _save(run_dir, wm, trainer, samplers, dist)
        if out_of_time:
            break
    bar.close()
    if dist.main_says(not (run_dir / "world_model").exists()):  # every rank takes part in a save
        _save(run_dir, wm, trainer, samplers, dist)


def eval_scalars(results: dict[str, Any]) -> dict[str, float]:
    """The numbers of an evaluation, flattened for metrics.jsonl and TensorBoard."""
    out = {
        "denoising_loss": results["denoising_loss"],
        "reward_accuracy": results["reward_accuracy"],
        "end_accuracy": results["end_accuracy"],
    }
    for key in ("reward_f1", "end_f1", "psnr", "psnr_copy"):
        for cls, value in results.get(key, {}).items():
            out[f"{key}/{cls}"] = value
    dyn = results.get("changed_pixels")
    if dyn:
        out.update(
            {
                f"changed_pixels/{k}": float(dyn[k])
                for k in ("model_mae", "copy_mae", "model_psnr", "copy_psnr")
            }
        )
    for key in ("reward_events", "end_events", "dream_reward_events", "dream_end_events"):
        if key in results:
            out[f"{key}/rare_f1"] = results[key]["rare_f1"]
    ball = results.get("ball")
    if ball and "error" not in ball:
        for key in ("within", "present"):
            out.update({f"ball/{key}/{h}": v for h, v in ball[key].items() if v is not None})
        for name in (
            "dreamt_rewards",
            "true_rewards",
            "real_rewards",
            "false_life_losses",
            "dreams",
        ):
            out[f"ball/{name}"] = float(ball[name])
    return out


def summary_lines(opts: TrainWMOptions, results: dict[str, Any]) -> list[str]:
    """What a finished run prints: where the model is, and its figures beside the baselines."""
    from diamond_env.evaluation.fidelity import fidelity_lines

    if results.get("rank", 0):  # another rank of a data-parallel run: rank 0 reports
        return []
    run_dir = opts.resolved_run_dir()
    if results["test_episodes"]:
        where = f"on {results['test_episodes']} held-out episodes (never trained on)"
    else:
        where = "on the TRAINING episodes (too few episodes to hold any out): not held-out figures"
    return [
        f"world model: {run_dir / 'world_model'} ({results['grad_steps']} gradient steps)",
        f"figures {where}; real vs imagined: {run_dir / 'real_vs_imagined.png'}",
        *fidelity_lines(results),
    ]
