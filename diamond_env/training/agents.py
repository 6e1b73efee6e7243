"""Training an agent in the dream of a world-model checkpoint: ``diamond-env train-agent``.

``--algo actor-critic`` trains the project's agent (:class:`ImaginationTrainer`, ``--steps``
gradient steps of 15-step imagined rollouts); ``ppo``, ``a2c`` and ``dqn`` train a
stable-baselines3 ``CnnPolicy`` on :func:`diamond_env.dream.sb3.make_sb3_env` with ``VecFrameStack``
(``--steps`` environment steps). Either way ``--out`` ends up an agent directory that
``diamond-env evaluate --agent OUT`` plays in the real game: ``agent.json`` plus
``actor_critic.{json,safetensors}`` or ``sb3_policy.safetensors`` (SB3's ``model.zip`` is written
beside it, but never read back: it unpickles). Metrics go to ``OUT/metrics.jsonl`` and
``OUT/tensorboard``. An actor-critic run saves ``resume.pt`` and continues with ``--resume``.
"""

from __future__ import annotations

import dataclasses
import io
import re
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback

from diamond_env.evaluation.agent_files import save_sb3_agent
from diamond_env.models.actor_critic import ActorCritic
from diamond_env.run.checkpoint import (
    atomic_write,
    atomic_write_json,
    load_resume_state,
    resolve_device,
    restoring,
    rng_state,
    save_resume_state,
    seed_everything,
    set_rng_state,
)
from diamond_env.run.metrics import MetricsLogger
from diamond_env.run.options import opt
from diamond_env.run.paths import resolve_checkpoint
from diamond_env.run.progress import BudgetBar
from diamond_env.run.runinfo import start_session
from diamond_env.run.safe_io import (
    WEIGHTS_MAX_BYTES,
    InputError,
    check_int,
    read_json,
    read_regular,
)
from diamond_env.training.imagination import ImaginationTrainer
from diamond_env.world_model.model import ContextBank, WorldModel

ALGOS = ("actor-critic", "ppo", "a2c", "dqn")

# Atari-style settings (rl-baselines3-zoo) scaled to short dream runs.
SB3_SETTINGS: dict[str, dict[str, Any]] = {
    "ppo": {
        "n_steps": 128,
        "n_epochs": 4,
        "batch_size": 256,
        "learning_rate": 2.5e-4,
        "clip_range": 0.1,
        "ent_coef": 0.01,
        "vf_coef": 0.5,
    },
    "a2c": {"ent_coef": 0.01, "vf_coef": 0.25},
    "dqn": {
        "learning_rate": 1e-4,
        "buffer_size": 50_000,
        "train_freq": 4,
        "target_update_interval": 1_000,
        "exploration_fraction": 0.1,
        "exploration_final_eps": 0.01,
        "optimize_memory_usage": True,
        "replay_buffer_kwargs": {"handle_timeout_termination": False},
    },
}


@dataclass(frozen=True)
class TrainAgentOptions:
    """What ``diamond-env train-agent`` does; every field is a ``--flag``."""

    checkpoint: str | None = opt(
        None,
        "world-model checkpoint directory (train_wm.py's world_model/); default: the one "
        "gym.make would load for --game ($DIAMOND_ENV_HOME, runs/<Game>, the shipped model)",
    )
    game: str = opt("Breakout", "game whose world model to load when --checkpoint is not given")
    out: str = opt(None, "agent directory to write")
    algo: str = opt("actor-critic", "actor-critic | ppo | a2c | dqn")
    steps: int = opt(1_000, "actor-critic: gradient steps; SB3: dream environment steps")
    num_envs: int = opt(8, "SB3: parallel dream envs (actor-critic: the preset's batch)")
    n_stack: int = opt(4, "SB3: frames stacked (VecFrameStack)")
    horizon: int = opt(15, "SB3: dream episodes are truncated after this many steps")
    num_denoising_steps: int = opt(0, "denoising steps per dreamed frame; 0: the checkpoint's")
    device: str = opt("cpu", "torch device: cpu | cuda")
    seed: int = opt(0, "seed of the agent and the dreams")
    save_every: int = opt(
        100, "gradient steps (actor-critic) or x100 environment steps (SB3) between saves"
    )
    max_minutes: float = opt(0.0, "stop (and save) after this much training time; 0: no limit")
    fastpath: str = opt(
        "auto",
        "dream speed options: auto (measured per device) | plain | comma-separated "
        "names from channels_last,fuse,bf16,fp16,inference_mode,compile,cuda_graphs",
    )
    contexts: str | None = opt(
        None,
        "dataset of real play whose windows the dreams start from instead of the checkpoint's "
        "stored contexts (e.g. the world model's training data: many more starting states)",
    )
    num_contexts: int = opt(4096, "with --contexts: windows drawn from it (at most)")
    resume: bool = opt(False, "continue the run in --out (same world model)")
    progress: bool = opt(True, "show a progress bar")

    def options_file(self) -> Path:
        """Where the run stores these options (a resumed run takes the ones not given from it)."""
        return Path(self.out) / "train_options.json"

    def validate(self) -> None:
        if self.algo not in ALGOS:
            raise ValueError(f"algo: expected one of {list(ALGOS)}, got {self.algo!r}")
        resolve_device(self.device)
        for name in ("steps", "num_envs", "n_stack", "horizon", "save_every", "num_contexts"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: expected a positive int, got {getattr(self, name)}")
        if self.num_denoising_steps < 0:
            raise ValueError(f"num_denoising_steps: expected >= 0, got {self.num_denoising_steps}")


def train_agent(opts: TrainAgentOptions) -> Path:
    """Train the agent ``opts`` describes in the dream; returns the agent directory."""
    opts.validate()
    out = Path(opts.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} is a file, not an agent directory; choose another --out")
    started = [n for n in ("agent.json", "resume.pt", SB3_CHECKPOINT) if (out / n).exists()]
    if not opts.resume and started:
        raise ValueError(
            f"{out} already holds an agent or a run ({started[0]}); pass --resume or choose "
            "another --out"
        )
    checkpoint = resolve_checkpoint(opts.game, opts.checkpoint)
    opts = dataclasses.replace(opts, checkpoint=str(checkpoint))
    wm = WorldModel.load(checkpoint, device=opts.device)
    from diamond_env.world_model.fastpath import with_fastpath

    wm = with_fastpath(wm, opts.fastpath)
    if opts.contexts is not None:  # (the model is this run's copy; it is never saved)
        wm.contexts = _contexts_from(opts.contexts, wm, opts.num_contexts, opts.seed)
    identity = _world_model_identity(checkpoint)
    if opts.resume:
        _check_same_world_model(out, identity)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / WORLD_MODEL_ID, identity)
    atomic_write_json(out / "train_options.json", dataclasses.asdict(opts))
    session = start_session(out, "train-agent", dataclasses.asdict(opts))
    seed_everything(opts.seed)
    if opts.algo == "actor-critic":
        _train_actor_critic(opts, wm, out)
    else:
        _train_sb3(opts, wm, out)
    session.finish()
    return out


WORLD_MODEL_ID = "world_model_id.json"


def _contexts_from(dataset: str, wm: WorldModel, num_contexts: int, seed: int) -> ContextBank:
    """Up to ``num_contexts`` starting contexts (windows inside one life) from ``dataset``, which
    must be of ``wm``'s game."""
    from diamond_env.data.dataset import EpisodeDataset
    from diamond_env.training.wm_trainer import build_context_bank

    data = EpisodeDataset.open(dataset)
    if data.game != wm.game:
        raise InputError(f"--contexts {dataset}: a dataset of {data.game}, not of {wm.game}")
    rng = np.random.default_rng(seed)
    bank = build_context_bank(data.load_all(), num_contexts, wm.config.denoiser.num_context, rng)
    bank.validate(wm.config.denoiser.num_context, wm.num_actions)
    return bank


def _world_model_identity(checkpoint: Path) -> dict[str, Any]:
    """What identifies the world model an agent trains in: its files' digests."""
    meta = read_json(checkpoint / "config.json")
    return {"checkpoint": str(checkpoint), "game": meta.get("game"), "sha256": meta.get("sha256")}


def _check_same_world_model(out: Path, identity: dict[str, Any]) -> None:
    path = out / WORLD_MODEL_ID
    if not path.exists():
        raise FileNotFoundError(f"--resume: {path} is missing; {out} holds no resumable run")
    before = read_json(path)
    if before.get("sha256") != identity["sha256"]:
        raise ValueError(
            f"--resume: {out} was trained in the world model {before.get('checkpoint')}, not in "
            f"{identity['checkpoint']} (their weights differ); resume with that one or start a "
            "new --out"
        )


def _train_actor_critic(opts: TrainAgentOptions, wm: WorldModel, out: Path) -> None:
    ac = ActorCritic(wm.config.actor_critic, wm.num_actions).to(wm.device)
    trainer = ImaginationTrainer(
        ac, wm, wm.config, seed=opts.seed, num_denoising_steps=opts.num_denoising_steps or None
    )
    if opts.resume:
        if not (out / "resume.pt").exists():
            raise FileNotFoundError(f"--resume: no resume state in {out} (resume.pt is missing)")
        state = load_resume_state(out / "resume.pt")
        with restoring(out / "resume.pt"):
            trainer.load_state_dict(state["trainer"])
            set_rng_state(state["rng"])
    meta = {
        "kind": "actor_critic",
        "game": wm.game,
        "world_model": str(opts.checkpoint),
        **({"env": wm.env} if wm.env is not None else {}),
    }
    bar = BudgetBar(
        opts.steps, trainer.grad_steps, "actor-critic", opts.max_minutes, disable=not opts.progress
    )
    start, start_step = time.perf_counter(), trainer.grad_steps
    deadline = _deadline(opts.max_minutes)
    with MetricsLogger(out) as log:
        while trainer.grad_steps < opts.steps:
            metrics = trainer.train_step()
            step = trainer.grad_steps
            bar.update(dream_reward=round(metrics["actor_critic/imagined_reward"], 3))
            last = step == opts.steps or time.monotonic() > deadline
            if step % 10 == 0 or last:
                frames = (
                    (step - start_step) * trainer.simulator.num_envs * wm.config.imagination.horizon
                )
                metrics["dream_frames_per_s"] = frames / (time.perf_counter() - start)
                log.log(step, metrics)
            if step % opts.save_every == 0 or last:
                ac.save(out)
                atomic_write_json(out / "agent.json", meta)
                save_resume_state(
                    out / "resume.pt", {"trainer": trainer.state_dict(), "rng": rng_state()}
                )
            if last:
                break
    bar.close()


def _deadline(max_minutes: float) -> float:
    return time.monotonic() + 60 * max_minutes if max_minutes > 0 else float("inf")


def make_sb3_model(algo: str, venv: Any, seed: int, device: str, tensorboard: Path) -> Any:
    """An SB3 ``CnnPolicy`` model of ``algo`` with :data:`SB3_SETTINGS`."""
    import stable_baselines3

    cls = {
        "ppo": stable_baselines3.PPO,
        "a2c": stable_baselines3.A2C,
        "dqn": stable_baselines3.DQN,
    }[algo]
    kwargs = dict(SB3_SETTINGS[algo])
    return cls(
        "CnnPolicy",
        venv,
        seed=seed,
        device=device,
        verbose=0,
        tensorboard_log=str(tensorboard),
        **kwargs,
    )


def _train_sb3(opts: TrainAgentOptions, wm: WorldModel, out: Path) -> None:
    from stable_baselines3.common.vec_env import VecFrameStack

    from diamond_env.dream.registration import GENERIC_ID
    from diamond_env.dream.sb3 import make_sb3_env

    venv = make_sb3_env(
        GENERIC_ID,
        num_envs=opts.num_envs,
        world_model=wm,
        horizon=opts.horizon,
        num_denoising_steps=opts.num_denoising_steps or None,
    )
    venv.seed(opts.seed)
    stacked = VecFrameStack(venv, opts.n_stack)
    model = make_sb3_model(opts.algo, stacked, opts.seed, opts.device, out / "tensorboard")
    if opts.algo == "dqn":
        model.learning_starts = min(10_000, max(opts.steps // 10, model.batch_size))
    done = 0
    if opts.resume:
        done = _load_sb3_checkpoint(model, out)
    every = 100 * opts.save_every
    with MetricsLogger(out, tensorboard=False) as log:
        callback = _ProgressCallback(
            opts.steps,
            log,
            opts.progress,
            opts.max_minutes,
            start=done,
            save=lambda m: _save_sb3_checkpoint(m, out),
            save_every=every,
        )
        if done < opts.steps:
            model.learn(opts.steps - done, callback=callback, reset_num_timesteps=not done)
    _save_sb3_checkpoint(model, out)
    # sampled at test time like DIAMOND's agent: an argmax policy that never presses FIRE plays
    # Breakout until the 108k-frame cap (`evaluate --deterministic` still gives the argmax)
    save_sb3_agent(
        model,
        out,
        {
            "n_stack": opts.n_stack,
            "game": wm.game,
            "deterministic": False,
            "world_model": str(opts.checkpoint),
            **({"env": wm.env} if wm.env is not None else {}),
        },
    )
    stacked.close()


SB3_CHECKPOINT = "checkpoint.zip"
SB3_RESUME = "sb3_resume.json"


def _save_sb3_checkpoint(model: Any, out: Path) -> None:
    """The weights and optimiser state (``checkpoint.zip``, replaced atomically) and the step
    count (``sb3_resume.json``) that :func:`_load_sb3_checkpoint` reads back."""
    atomic_write(out / SB3_CHECKPOINT, model.save, suffix=".zip")  # SB3 adds .zip otherwise
    atomic_write_json(out / SB3_RESUME, {"num_timesteps": int(model.num_timesteps)})


SB3_MEMBERS = re.compile(
    r"^(data|_stable_baselines3_version|system_info\.txt|[a-z_]+(\.[a-z_]+)?\.pth)$"
)
"""The members SB3's ``save`` writes into a checkpoint zip (the policy and optimiser states as
``<name>.pth``)."""


def check_sb3_checkpoint(path: Path) -> None:
    """``path``: a regular zip file of at most ``WEIGHTS_MAX_BYTES``, holding only the members
    SB3 writes and unpacking to no more than that; ``InputError`` naming the first problem."""
    data = read_regular(path, WEIGHTS_MAX_BYTES)
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = archive.infolist()
    except zipfile.BadZipFile as err:
        raise InputError(f"{path}: not a zip file ({err})") from None
    odd = [m.filename for m in members if SB3_MEMBERS.match(m.filename) is None]
    if odd:
        raise InputError(f"{path}: unexpected members {odd[:5]}; not a checkpoint SB3 wrote")
    if sum(m.file_size for m in members) > WEIGHTS_MAX_BYTES:
        raise InputError(f"{path}: unpacks to more than {WEIGHTS_MAX_BYTES:,} bytes")


def _load_sb3_checkpoint(model: Any, out: Path) -> int:
    """Put the saved weights and optimiser state into ``model`` (read as tensors with
    ``weights_only`` loading, no pickled data) and return the steps already done. A DQN replay
    buffer is not kept: it refills from the dream."""
    if not (out / SB3_RESUME).exists() or not (out / SB3_CHECKPOINT).exists():
        raise FileNotFoundError(f"--resume: no SB3 checkpoint in {out} ({SB3_CHECKPOINT})")
    done = check_int(
        read_json(out / SB3_RESUME).get("num_timesteps"),
        f"{out / SB3_RESUME}: num_timesteps",
        0,
        10**12,
    )
    check_sb3_checkpoint(out / SB3_CHECKPOINT)
    try:
        model.set_parameters(str(out / SB3_CHECKPOINT), exact_match=True)
    except (ValueError, KeyError, RuntimeError, OSError, zipfile.BadZipFile) as err:
        raise InputError(f"{out / SB3_CHECKPOINT}: not a checkpoint of this agent ({err})") from err
    model.num_timesteps = done
    return done


class _ProgressCallback(BaseCallback):
    """tqdm over environment steps, the mean episode return into metrics.jsonl, a checkpoint
    every ``save_every`` steps, and a stop at ``total`` steps or the deadline."""

    def __init__(
        self,
        total: int,
        log: MetricsLogger,
        progress: bool,
        max_minutes: float,
        start: int = 0,
        save: Any = None,
        save_every: int = 0,
    ) -> None:
        super().__init__()
        self.total, self.log, self.progress = total, log, progress
        self.max_minutes, self.deadline = max_minutes, _deadline(max_minutes)
        self.bar: BudgetBar | None = None
        self.next_log = start
        self.start, self.save, self.save_every = start, save, save_every
        self.next_save = start + save_every

    def _on_training_start(self) -> None:
        self.bar = BudgetBar(
            self.total, self.start, "sb3", self.max_minutes, disable=not self.progress
        )

    def _on_step(self) -> bool:
        assert self.bar is not None
        self.bar.update(self.training_env.num_envs)
        if self.num_timesteps >= self.next_log:
            # every 1 % of the budget, and at least every 256 steps: a minute-bounded run (the
            # demo's) may stop far short of its step budget
            self.next_log = self.num_timesteps + max(1, min(self.total // 100, 256))
            episodes = self.model.ep_info_buffer
            if episodes:
                returns = [float(e["r"]) for e in episodes]
                self.log.log(self.num_timesteps, {"episode_return": float(np.mean(returns))})
                self.bar.postfix.update(episode_return=round(float(np.mean(returns)), 2))
        if self.save is not None and self.save_every and self.num_timesteps >= self.next_save:
            self.next_save = self.num_timesteps + self.save_every
            self.save(self.model)
        # SB3 rounds up to whole rollouts; stopping here never spends more than ``total`` steps
        return self.num_timesteps < self.total and time.monotonic() < self.deadline

    def _on_training_end(self) -> None:
        if self.bar is not None:
            self.bar.close()


def train_sb3_real(
    game: str,
    out: str | Path,
    *,
    algo: str = "ppo",
    steps: int = 10_000,
    num_envs: int = 8,
    n_stack: int = 4,
    seed: int = 0,
    device: str = "cpu",
    progress: bool = True,
    max_minutes: float = 0.0,
) -> Path:
    """Model-free baseline: an SB3 agent trained on ``steps`` real steps (docs/method.md §1 settings, a lost
    life ends the learner's episode as in DIAMOND's training env), saved like :func:`train_agent`.
    """
    from stable_baselines3.common.atari_wrappers import EpisodicLifeEnv
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.vec_env import DummyVecEnv, VecFrameStack

    from diamond_env.atari import canonical_game, make_single_atari_env

    if algo not in SB3_SETTINGS:
        raise ValueError(f"algo: expected one of {sorted(SB3_SETTINGS)}, got {algo!r}")
    game = canonical_game(game)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)

    def make(i: int) -> Any:
        def thunk() -> Any:
            env = EpisodicLifeEnv(Monitor(make_single_atari_env(game)))  # type: ignore[arg-type]
            env.reset(seed=seed + i)
            return env

        return thunk

    venv = VecFrameStack(DummyVecEnv([make(i) for i in range(num_envs)]), n_stack)
    model = make_sb3_model(algo, venv, seed, device, out / "tensorboard")
    if algo == "dqn":
        model.learning_starts = min(10_000, max(steps // 10, model.batch_size))
    with MetricsLogger(out, tensorboard=False) as log:
        model.learn(steps, callback=_ProgressCallback(steps, log, progress, max_minutes))
    save_sb3_agent(
        model, out, {"n_stack": n_stack, "game": game, "real_steps": steps, "deterministic": False}
    )
    venv.close()
    return out
