"""The full DIAMOND loop (docs/method.md §5, Algorithm 1): ``diamond-env train``.

1. Initial collection with a uniform policy: at least ``initial_steps_min`` real steps, going on
   (100 at a time) up to ``initial_steps_max`` until the rewards whose sign is not the most
   frequent one number ``initial_min_minority_rewards`` (DIAMOND's rule).
2. Epochs: collect ``steps_per_epoch`` real steps with the current actor-critic (ε from the
   preset) while the budget lasts, then train the world model (denoiser and reward/end model) and
   the actor-critic (in imagination) ``grad_steps_per_epoch`` steps each (the ``first_epoch_*``
   numbers in the first epoch). After the budget, ``extra_epochs`` epochs without collection.
3. Every ``eval_every_epochs`` epochs the agent plays ``eval_episodes`` full real games; at the
   end ``final_eval_episodes`` (``eval.json``).

The real-step budget counts every step written to the dataset and is never exceeded. The run
directory holds ``options.json``, ``dataset/``, ``world_model/``, ``actor_critic/`` (+
``agent.json``, loadable by ``diamond-env evaluate``), ``resume.pt`` (written after every epoch,
read with ``weights_only=True``), ``metrics.jsonl``, ``tensorboard/`` and ``eval.json``. An
interrupted run continues from its last finished epoch with ``--resume``.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from diamond_env.atari import canonical_game, make_atari_env
from diamond_env.config import Config, apply_overrides, get_preset
from diamond_env.data.collect import Collector, RandomPolicy, open_game_dataset
from diamond_env.data.dataset import EpisodeDataset
from diamond_env.data.segments import SegmentSampler
from diamond_env.devices import tf32_matmuls
from diamond_env.evaluation.real_game import ActorCriticPolicy, EvalResult, evaluate
from diamond_env.models.actor_critic import ActorCritic
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
from diamond_env.run.runinfo import start_run
from diamond_env.training import distributed
from diamond_env.training.distributed import Distributed, own_state
from diamond_env.training.imagination import ImaginationTrainer, ReplayContexts
from diamond_env.training.wm_trainer import WorldModelTrainer, build_context_bank, make_samplers
from diamond_env.world_model.model import WorldModel

_FIXED_ON_RESUME = ("game", "preset", "overrides", "real_steps", "seed", "num_contexts")


@dataclass(frozen=True)
class TrainOptions:
    """What ``diamond-env train`` does; every field is a ``--flag``."""

    game: str = opt("Breakout", "ALE game name (one of the 26 Atari 100k games or any ALE game)")
    preset: str = opt("tiny", "model sizes and schedule: tiny | cpu | small | paper")
    run_dir: str | None = opt(
        None, "output directory (default: $DIAMOND_ENV_HOME or runs, /<Game>)"
    )
    real_steps: int = opt(0, "real-step budget; 0: the preset's (paper: 100,000)")
    resume: bool = opt(False, "continue the run in --run-dir from its last finished epoch")
    device: str = opt("cpu", "torch device: cpu | cuda")
    seed: int = opt(0, "seed of collection, sampling, initialisation and dreams")
    num_contexts: int = opt(256, "real starting contexts kept in the world model")
    overrides: str = opt(
        "",
        "config overrides, whitespace-separated section.field=JSON, e.g. 'denoiser_optim.lr=1e-3 loop.denoiser_seq_len=5'",
    )
    max_minutes: float = opt(0.0, "stop after the epoch that passes this time (resumable); 0: none")
    progress: bool = opt(True, "show progress bars")

    def resolved_run_dir(self) -> Path:
        return Path(self.run_dir) if self.run_dir else default_run_dir(canonical_game(self.game))

    def options_file(self) -> Path:
        """Where the run stores these options (a resumed run takes the ones not given from it)."""
        return self.resolved_run_dir() / "options.json"

    def config(self) -> Config:
        config = apply_overrides(get_preset(self.preset), self.overrides)
        if self.real_steps:
            loop = dataclasses.replace(config.loop, real_steps=self.real_steps)
            config = dataclasses.replace(config, loop=loop)
        return config

    def validate(self) -> None:
        loop = self.config().loop
        resolve_device(self.device)
        if self.real_steps < 0:
            raise ValueError(f"real_steps: expected >= 0, got {self.real_steps}")
        if loop.real_steps < loop.initial_steps_min:
            raise ValueError(
                f"real_steps: expected at least the initial collection ({loop.initial_steps_min} "
                f"steps for preset {self.preset!r}), got {loop.real_steps}"
            )
        if self.num_contexts < 1:
            raise ValueError(f"num_contexts: expected a positive int, got {self.num_contexts}")


@dataclass
class _Run:
    """Everything one training run holds in memory."""

    opts: TrainOptions
    config: Config
    run_dir: Path
    dataset: EpisodeDataset
    world_model: WorldModel
    actor_critic: ActorCritic
    wm_trainer: WorldModelTrainer
    ac_trainer: ImaginationTrainer
    samplers: tuple[SegmentSampler, SegmentSampler]
    contexts: ReplayContexts
    dist: Distributed
    epoch: int = 0
    total_epochs: int = 0


def train(opts: TrainOptions) -> dict[str, Any]:
    """Run (or resume) the full loop; returns the final real evaluation (also in eval.json). Under
    ``torchrun`` the gradient steps are data-parallel and rank 0 alone collects, evaluates and
    writes (:mod:`diamond_env.training.distributed`); the other ranks return ``{"rank": r}``."""
    opts.validate()
    run_dir = opts.resolved_run_dir()
    check_run_dir(
        run_dir,
        resume=opts.resume,
        options=dataclasses.asdict(opts),
        fixed=_FIXED_ON_RESUME,
        markers=("resume.pt", "eval.json"),
        defaults=field_defaults(opts),
    )
    device = resolve_device(opts.device)
    with distributed.joined(device) as dist, tf32_matmuls(device):
        return _train(opts, run_dir, dist)


def _train(opts: TrainOptions, run_dir: Path, dist: Distributed) -> dict[str, Any]:
    dist.wait_for_main()  # every rank has checked the run directory before rank 0 writes to it
    session = None
    seed_everything(opts.seed)
    config = opts.config()
    if dist.is_main:
        session = start_run(run_dir, "train", dataclasses.asdict(opts), dist.world_size)
        dataset = open_game_dataset(run_dir / "dataset", opts.game)
        initial_collection(dataset, config, opts.seed, opts.progress)
    dist.wait_for_main()  # rank 0 has collected; the others read what it wrote
    if not dist.is_main:
        dataset = EpisodeDataset.open(run_dir / "dataset")
    run = _build(opts, config, run_dir, dataset, dist)
    if opts.resume:
        with restoring(run_dir / "resume.pt"):
            _load(run, load_resume_state(run_dir / "resume.pt"))
    else:
        budget_left = config.loop.real_steps - dataset.num_steps
        run.total_epochs = math.ceil(budget_left / config.loop.steps_per_epoch)
        run.total_epochs += config.loop.extra_epochs
    deadline = time.monotonic() + 60 * opts.max_minutes if opts.max_minutes > 0 else math.inf
    with MetricsLogger(run_dir, enabled=dist.is_main) as log:
        finished = _epochs(run, log, deadline)
        if not finished:
            if dist.is_main:
                print(
                    f"stopped after epoch {run.epoch}/{run.total_epochs} (--max-minutes); "
                    f"continue with --resume --run-dir {run_dir}"
                )
                assert session is not None
                session.finish(stopped_at_epoch=run.epoch)
            return {
                "epoch": run.epoch,
                "total_epochs": run.total_epochs,
                "finished": False,
                "rank": dist.rank,
            }
        if not dist.is_main:
            dist.wait_for_main()
            return {"finished": True, "rank": dist.rank}
        result = _evaluate(run, config.loop.final_eval_episodes, seed=opts.seed + 10_000)
        log.log(run.epoch, _eval_scalars(result), kind="final_eval")
    payload = {
        **result.to_dict(),
        "epochs": run.epoch,
        "real_steps": run.dataset.num_steps,
        "preset": opts.preset,
        "processes": dist.world_size,
        "finished": True,
    }
    atomic_write_json(run_dir / "eval.json", payload)
    assert session is not None
    session.finish(score=result.mean)
    dist.wait_for_main()
    print(result.summary())
    return payload


def initial_collection(dataset: EpisodeDataset, config: Config, seed: int, progress: bool) -> None:
    """Step 1 of the loop on ``dataset`` (continues an interrupted one; no-op once done)."""
    loop = config.loop
    if dataset.num_steps >= loop.initial_steps_min and (
        dataset.num_steps >= loop.initial_steps_max
        or minority_rewards(dataset) >= loop.initial_min_minority_rewards
    ):
        return
    env = make_atari_env(dataset.game, 1, train=True)
    try:
        collector = Collector(env, dataset, seed=seed + dataset.num_steps)
        policy = RandomPolicy(dataset.num_actions, seed=seed + dataset.num_steps)
        missing = loop.initial_steps_min - dataset.num_steps
        if missing > 0:
            collector.collect(policy, steps=missing, progress=progress)
        while (
            dataset.num_steps < loop.initial_steps_max
            and minority_rewards(dataset) < loop.initial_min_minority_rewards
        ):
            chunk = min(100, loop.initial_steps_max - dataset.num_steps)
            collector.collect(policy, steps=chunk, progress=False)
    finally:
        env.close()


def minority_rewards(dataset: EpisodeDataset) -> int:
    """Steps whose reward sign is not the most frequent sign, summed over the two other signs
    (DIAMOND, ``src/trainer.py``: ``sum(sorted(counts_rew)[:-1])``; with zero rewards the
    majority, that is #(-1) + #(+1))."""
    counts = dataset.reward_counts
    return sum(sorted(counts.get(s, 0) for s in (-1, 0, 1))[:-1])


def _build(
    opts: TrainOptions, config: Config, run_dir: Path, dataset: EpisodeDataset, dist: Distributed
) -> _Run:
    device = dist.device
    data = dataset.load_all()
    bank = build_context_bank(
        data, opts.num_contexts, config.denoiser.num_context, np.random.default_rng(opts.seed)
    )
    wm = WorldModel(config, dataset.game, dataset.action_meanings, bank).to(device)
    ac = ActorCritic(config.actor_critic, dataset.num_actions).to(device)
    for module in (wm.denoiser, wm.rew_end, ac):
        dist.broadcast_module_(module)
    if not dist.is_main:  # the same weights everywhere, but each rank its own noise
        torch.manual_seed(dist.torch_rank_seed(opts.seed))
    weights = config.loop.recency_weights
    samplers = make_samplers(config, data, opts.seed, rank=dist.rank, game=dataset.game)
    contexts = ReplayContexts(
        data,
        config.denoiser.num_context,
        weights,
        device,
        preload=config.imagination.context_preload,
        seed=dist.rank_seed(opts.seed + 4),
    )
    return _Run(
        opts=opts,
        config=config,
        run_dir=run_dir,
        dataset=dataset,
        world_model=wm,
        actor_critic=ac,
        wm_trainer=WorldModelTrainer(wm, config, device, dist=dist),
        ac_trainer=ImaginationTrainer(
            ac, wm, config, seed=dist.torch_rank_seed(opts.seed + 3), contexts=contexts, dist=dist
        ),
        samplers=samplers,
        contexts=contexts,
        dist=dist,
    )


def _epochs(run: _Run, log: MetricsLogger, deadline: float) -> bool:
    """Train epochs until the last one (True) or the deadline (False)."""
    loop, opts, dist = run.config.loop, run.opts, run.dist
    env = make_atari_env(run.dataset.game, 1, train=True) if dist.is_main else None
    collector = (
        None if env is None else Collector(env, run.dataset, seed=opts.seed + run.dataset.num_steps)
    )
    policy = ActorCriticPolicy(run.actor_critic, seed=opts.seed + run.dataset.num_steps)
    bar = tqdm(
        total=run.total_epochs,
        initial=run.epoch,
        unit="epoch",
        desc="train",
        disable=not opts.progress or not dist.is_main,
    )
    try:
        while run.epoch < run.total_epochs:
            first = run.epoch == 0
            to_collect = min(loop.steps_per_epoch, loop.real_steps - run.dataset.num_steps)
            if not first and to_collect > 0:
                if collector is not None:  # rank 0 collects; the others then read its steps
                    stats = collector.collect(
                        policy, steps=to_collect, epsilon=loop.epsilon, progress=False
                    )
                    if stats.game_returns:
                        log.log(
                            run.epoch,
                            {
                                "collect/return": float(np.mean(stats.game_returns)),
                                "collect/games": len(stats.game_returns),
                            },
                            kind="collect",
                        )
                dist.wait_for_main()
                _refresh_data(run)
            metrics = _train_epoch(run, first)
            run.epoch += 1
            metrics["real_steps"] = run.dataset.num_steps
            log.log(run.epoch, metrics)
            if run.epoch % loop.eval_every_epochs == 0 and run.epoch < run.total_epochs:
                if dist.is_main:
                    result = _evaluate(run, loop.eval_episodes, seed=opts.seed + run.epoch)
                    log.log(run.epoch, _eval_scalars(result), kind="eval")
                dist.wait_for_main()
            _save(run)
            bar.update(1)
            bar.set_postfix(real=run.dataset.num_steps, refresh=False)
            out_of_time = dist.main_says(time.monotonic() > deadline)
            if out_of_time and run.epoch < run.total_epochs:
                return False
    finally:
        bar.close()
        if env is not None:
            env.close()
    return True


def _refresh_data(run: _Run) -> None:
    """After collection: samplers, the dreams' starting contexts and the world model's bank (what
    its checkpoint serves) see the new steps."""
    if not run.dist.is_main:  # a reader: the index rank 0 has just written
        run.dataset = EpisodeDataset.open(run.run_dir / "dataset")
    data = run.dataset.load_all(reuse=run.samplers[0].data)
    for sampler in run.samplers:
        sampler.update(data)
    run.contexts.update(data)
    rng = np.random.default_rng(run.opts.seed + run.dataset.num_steps)
    run.world_model.contexts = build_context_bank(
        data, run.opts.num_contexts, run.config.denoiser.num_context, rng
    )


def _train_epoch(run: _Run, first: bool) -> dict[str, float]:
    loop = run.config.loop
    wm_steps = loop.first_epoch_denoiser_steps if first else loop.grad_steps_per_epoch
    ac_steps = loop.first_epoch_actor_critic_steps if first else loop.grad_steps_per_epoch
    show = run.opts.progress and first and run.dist.is_main
    wm_metrics: list[dict[str, float]] = []
    for _ in tqdm(range(wm_steps), desc="world model", disable=not show, leave=False):
        wm_metrics.append(run.wm_trainer.train_step(*run.samplers))
    ac_metrics: list[dict[str, float]] = []
    for _ in tqdm(range(ac_steps), desc="actor-critic", disable=not show, leave=False):
        ac_metrics.append(run.ac_trainer.train_step())
    return {**_mean(wm_metrics), **_mean(ac_metrics)}


def _mean(records: list[dict[str, float]]) -> dict[str, float]:
    if not records:
        return {}
    return {key: float(np.mean([r[key] for r in records])) for key in records[0]}


def _evaluate(run: _Run, episodes: int, seed: int) -> EvalResult:
    policy = ActorCriticPolicy(run.actor_critic, seed=seed)
    return evaluate(policy, run.dataset.game, episodes, seed=seed, progress=False)


def _eval_scalars(result: EvalResult) -> dict[str, float]:
    out = {"return_mean": result.mean, "return_std": result.std, "length_mean": result.mean_length}
    if result.hns is not None:
        out["hns"] = result.hns
    return out


def _save(run: _Run) -> None:
    """Checkpoints and ``resume.pt`` (rank 0), with every rank's own draw and dream states."""
    ac_state = run.ac_trainer.state_dict()
    own = {
        "samplers": [s.rng.bit_generator.state for s in run.samplers],
        "rng": rng_state(),
        "actor_critic": {k: ac_state[k] for k in ImaginationTrainer.PER_RANK_KEYS},
    }
    ranks = run.dist.gather_states(own)
    if not run.dist.is_main:
        return
    run.world_model.save(run.run_dir / "world_model")
    run.actor_critic.save(run.run_dir / "actor_critic")
    atomic_write_json(
        run.run_dir / "actor_critic" / "agent.json",
        {"kind": "actor_critic", "game": run.dataset.game},
    )
    state = {
        "epoch": run.epoch,
        "total_epochs": run.total_epochs,
        "world_model": run.wm_trainer.state_dict(),
        "actor_critic": ac_state,
        "samplers": own["samplers"],
        "real_steps": run.dataset.num_steps,
        "rng": own["rng"],
        "world_size": run.dist.world_size,
    }
    if run.dist.enabled:
        state["ranks"] = ranks
    save_resume_state(run.run_dir / "resume.pt", state)


def _load(run: _Run, state: dict[str, Any]) -> None:
    own = own_state(state, run.dist)
    run.epoch, run.total_epochs = int(state["epoch"]), int(state["total_epochs"])
    run.wm_trainer.load_state_dict(state["world_model"])
    run.world_model.contexts = WorldModel.load(run.run_dir / "world_model").contexts
    _refresh_samplers(run)
    # shared weights and optimiser, this rank's dreams (they carry on where they were)
    run.ac_trainer.load_state_dict({**state["actor_critic"], **own["actor_critic"]})
    for sampler, s in zip(run.samplers, own["samplers"], strict=True):
        sampler.rng.bit_generator.state = s
    set_rng_state(own["rng"])


def _refresh_samplers(run: _Run) -> None:
    data = run.dataset.load_all()
    for sampler in run.samplers:
        sampler.update(data)
    run.contexts.update(data)
