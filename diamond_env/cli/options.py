"""The options of the commands that are not training runs, one dataclass each.

Every field is a command-line option (:func:`diamond_env.run.options.opt` carries its help
text), so ``diamond-env``'s parser is built from these classes and the training commands' own
options (``TrainOptions``, ``TrainWMOptions``, ``DistillOptions``, ``TrainAgentOptions``,
``DemoOptions``): see :data:`diamond_env.cli.main.COMMANDS`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from diamond_env.run.options import non_negative_int, opt, positive_int, probability

TRUST_PICKLE_HELP = (
    "also load a bare SB3 model.zip: SB3 unpickles it, and a crafted file runs arbitrary code, "
    "so only for files from a source you trust"
)


@dataclass(frozen=True)
class CollectOptions:
    game: str | None = opt(None, "ALE game name, e.g. Breakout")
    env_id: str | None = opt(
        None,
        "instead of --game: any registered Gymnasium env with image observations and discrete "
        "actions, e.g. CarRacing-v3",
    )
    env_kwargs: str | None = opt(
        None, "with --env-id: JSON kwargs of gym.make, e.g. '{\"continuous\": false}'"
    )
    render_obs: bool = opt(
        False,
        "with --env-id: observe the env's rendered frames (render_mode='rgb_array'), for envs "
        "whose observations are not images (e.g. CartPole-v1)",
    )
    steps: int = opt(
        None,
        "collect until the dataset holds this many steps (a rerun tops it up)",
        parse=positive_int,
    )
    out: str = opt(None, "dataset directory (created if missing)")
    num_envs: int = opt(1, "games played at once", parse=positive_int)
    seed: int = opt(0, "seed of the env and the policy")
    agent: str | None = opt(
        None,
        "agent directory that plays instead of the random policy (our actor-critic or an SB3 "
        "agent, as diamond-env evaluate loads it)",
    )
    epsilon: float = opt(
        0.01,
        "with --agent: share of steps played by a uniformly random action instead, so every "
        "action is seen in every kind of state (DIAMOND's 0.01)",
        parse=probability,
    )
    trust_pickle: bool = opt(False, "with --agent: " + TRUST_PICKLE_HELP)
    quiet: bool = opt(False, "no progress bar")


@dataclass(frozen=True)
class DatasetOptions:
    action: str = opt(
        None,
        "verify: read every part against the index, list orphan files (exit 1 on a problem); "
        "repair: rebuild a missing index from the parts (--game) and/or move orphans to "
        "ROOT/orphans/ (--move-orphans); nothing is deleted",
        choices=("verify", "repair"),
        positional=True,
    )
    root: str = opt(None, "dataset directory", positional=True)
    game: str | None = opt(None, "repair: the game, to rebuild a missing index")
    move_orphans: bool = opt(False, "repair: move orphans aside")


@dataclass(frozen=True)
class EvalWMOptions:
    checkpoint: str = opt(None, "world-model checkpoint directory")
    dataset: str = opt(None, "episode dataset (held-out play)")
    out: str | None = opt(None, "write the figures to this JSON file")
    grid: str | None = opt(None, "write a real-vs-imagined PNG here")
    batches: int = opt(8, "batches of 32 segments", parse=positive_int)
    rollouts: int = opt(
        16, "open-loop rollouts of 15 steps for the PSNR figures", parse=positive_int
    )
    seed: int = opt(0, "seed of the segments and the dreams")
    device: str = opt("cpu", "torch device: cpu | cuda")
    fastpath: str = opt(
        "plain",
        "dream on a fast path, as gym.make's fastpath=: plain | auto | comma-separated names "
        "(channels_last,bf16,...): what the path costs in fidelity",
    )
    num_denoising_steps: int = opt(0, "denoising steps per dreamt frame (0: the checkpoint's)")
    paddle_states: int = opt(
        0,
        "Breakout: also run the paddle probe from this many real states (does following the "
        "ball save lives in the dream as in the game?); 0: off",
        parse=non_negative_int,
    )
    paddle_grid: str | None = opt(
        None, "with --paddle-states: a PNG of the first probe runs here (game above dream)"
    )
    bounce_steps: int = opt(
        0,
        "Breakout: also record this many steps of tracker play and check, at each real bounce "
        "off the paddle, whether the dream from the real context repeats it; 0: off",
        parse=non_negative_int,
    )


@dataclass(frozen=True)
class ImportDataOptions:
    game: str = opt(None, "the ALE game the episodes are of, e.g. Breakout")
    npz: str | None = opt(
        None,
        "folder of one .npz per episode (observations, actions, rewards, terminations, "
        "truncations, optional lives)",
    )
    minari: str | None = opt(None, "Minari dataset id, e.g. atari/breakout/expert-v0")
    minari_root: str | None = opt(
        None, "folder holding Minari datasets ($MINARI_DATASETS_PATH or ~/.minari/datasets)"
    )
    out: str = opt(None, "dataset directory (created, or appended to)")
    frame_skip: int | None = opt(
        None,
        "frames the source repeated each action for (recorded, not applied)",
        parse=positive_int,
    )
    max_pool: bool | None = opt(
        None, "whether the source max-pooled the last two frames (recorded)"
    )


@dataclass(frozen=True)
class ImportDiamondOptions:
    checkpoint: str = opt(None, "DIAMOND's .pt file, e.g. Breakout.pt")
    game: str = opt(None, "the game it was trained on, e.g. Breakout")
    out: str = opt(None, "writes OUT/world_model and OUT/agent")
    context_steps: int = opt(
        2000, "real steps played to draw starting contexts from", parse=positive_int
    )
    num_contexts: int = opt(256, "starting contexts kept in the world model", parse=positive_int)
    context_policy: Literal["agent", "random"] = opt(
        "agent",
        "who plays those steps: DIAMOND's actor-critic or a random policy",
        parse=str,
        choices=("agent", "random"),
    )
    seed: int = opt(0, "seed of the context games")
    force: bool = opt(False, "replace a world model, agent or import already in OUT")
    quiet: bool = opt(False, "no progress bar")


@dataclass(frozen=True)
class EvaluateOptions:
    agent: str = opt(None, "agent directory (train-agent's --out)")
    game: str | None = opt(None, "game to play (default: the agent's own)")
    episodes: int = opt(10, "full games to play", parse=positive_int)
    out: str | None = opt(None, "write the scores to this JSON file")
    video: str | None = opt(None, "record the first game (.mp4 or .gif)")
    num_envs: int = opt(1, "games played at once", parse=positive_int)
    seed: int = opt(0, "seed of the games")
    device: str = opt("cpu", "torch device: cpu | cuda")
    quiet: bool = opt(False, "no progress bar")
    deterministic: bool | None = opt(
        None,
        "argmax actions (--no-deterministic: sample); unset: agent.json's choice, else sample "
        "for our actor-critic and argmax for SB3",
    )
    baselines: bool = opt(
        False,
        "also play, on the same games, the random policy and a policy blind to the screen that "
        "takes the agent's own action shares, and print the agent's margin over each in "
        "standard errors",
    )
    trust_pickle: bool = opt(False, TRUST_PICKLE_HELP)


@dataclass(frozen=True)
class VideoOptions:
    checkpoint: str = opt(None, "world-model checkpoint directory")
    dataset: str | None = opt(None, "episode dataset for the open-loop clip")
    out: str = opt(None, "output .mp4 or .gif")
    agent: str | None = opt(None, "agent directory for the agent clip")
    horizon: int = opt(40, "open-loop steps", parse=positive_int)
    rollouts: int = opt(4, "open-loop clips side by side", parse=positive_int)
    agent_steps: int = opt(200, "agent clip steps", parse=positive_int)
    scale: int = opt(3, "pixel upscaling", parse=positive_int)
    fps: int = opt(15, "frames per second of the clip", parse=positive_int)
    seed: int = opt(0, "seed of the clips")
    device: str = opt("cpu", "torch device: cpu | cuda")
    trust_pickle: bool = opt(False, TRUST_PICKLE_HELP)


@dataclass(frozen=True)
class ReportOptions:
    run_dir: str = opt(None, "a train_wm.py or diamond-env train run")
    videos: bool = opt(True, "make the real-vs-dream GIFs when missing")
    fidelity: bool = opt(True, "compute world-model fidelity when the run has none")
    horizon: int = opt(30, "open-loop steps of the real-vs-dream GIF", parse=positive_int)
    agent_steps: int = opt(100, "steps of the agent's GIF", parse=positive_int)
    seed: int = opt(0, "seed of the clips and the fidelity figures")
    device: str = opt("cpu", "torch device: cpu | cuda")


@dataclass(frozen=True)
class PlayOptions:
    checkpoint: str | None = opt(None, "world-model checkpoint directory")
    agent: str | None = opt(None, "agent directory ('m' toggles agent control)")
    real: bool = opt(False, "play the real game instead")
    game: str | None = opt(None, "game (default: the checkpoint's)")
    horizon: int = opt(1000, "dream steps per episode", parse=positive_int)
    scale: int = opt(8, "window pixels per frame pixel", parse=positive_int)
    fps: int = opt(15, "frames per second", parse=positive_int)
    seed: int = opt(0, "seed of the dream or the game")
    device: str = opt("cpu", "torch device: cpu | cuda")
    max_frames: int | None = opt(None, "stop after N frames", parse=positive_int)
    record: str | None = opt(None, "save each episode (npz + gif) in this folder")
    trust_pickle: bool = opt(False, TRUST_PICKLE_HELP)


@dataclass(frozen=True)
class BenchOptions:
    quick: bool = opt(False, "short measurements (a few minutes)")
    game: str = opt("Breakout", "game for the real-env figures")
    json: str | None = opt(None, "also write the figures to this JSON file")
    sections: str = opt(
        "collection,ale_env,dream,train,imagination",
        "comma-separated subset of collection,ale_env,dream,train,imagination (the projection "
        "needs train and imagination)",
    )
    train_presets: str | None = opt(None, "presets of the train and imagination sections")
    fastpath: str | None = opt(
        None,
        "dream with these options on vs off in one run: channels_last,fuse,bf16,fp16,compile,"
        "inference_mode,cuda_graphs",
    )
    presets: str | None = opt(None, "dream presets, e.g. tiny,small,paper")
    num_envs: str | None = opt(None, "dream batch sizes, e.g. 1,8,32,128")
    cell_seconds: float | None = opt(None, "time per dream measurement (unset: 3 quick, 10 full)")
    device: str = opt("cpu", "torch device of the dream: cpu | cuda")
    threads: int = opt(0, "torch CPU threads (0: torch's default)")
