"""The ``diamond-env`` command line (also ``python -m diamond_env``).

Each subcommand is a small function over the library; argument parsing happens here only.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

Command = Callable[[argparse.Namespace], int]


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {value}")
    return value


def _cmd_collect(args: argparse.Namespace) -> int:
    from diamond_env.data.collect import collect_until

    env_spec = None
    if args.env_id is not None:
        from diamond_env.real_env import EnvSpec, parse_env_kwargs

        if args.game is not None:
            raise ValueError("collect: give --game (an ALE game) or --env-id, not both")
        env_spec = EnvSpec(args.env_id, parse_env_kwargs(args.env_kwargs), args.render_obs)
        game = args.env_id
    elif args.game is None:
        raise ValueError("collect: give --game (an ALE game) or --env-id (any Gymnasium env)")
    else:
        game = args.game
    policy, epsilon = None, 0.0
    if args.agent is not None:
        from diamond_env.evaluation.real_game import load_collecting_agent

        policy = load_collecting_agent(
            args.agent, game, seed=args.seed, trust_pickle=args.trust_pickle, env=env_spec
        )
        epsilon = args.epsilon
    dataset, stats = collect_until(
        Path(args.out),
        game,
        args.steps,
        policy=policy,
        epsilon=epsilon,
        num_envs=args.num_envs,
        seed=args.seed,
        progress=not args.quiet,
        env_spec=env_spec,
    )
    if stats is None:
        print(
            f"{args.out} already holds {dataset.num_steps} steps (>= {args.steps}); nothing to do"
        )
    else:
        print(
            f"collected {stats.steps} steps in {stats.seconds:.1f} s "
            f"({stats.steps_per_s:.0f} steps/s), {stats.games_finished} games finished"
        )
    info = dataset.info()
    print(
        f"dataset {args.out}: game {info['game']}, {info['num_steps']} steps, "
        f"{info['num_episodes']} episodes, reward signs {info['reward_counts']}"
    )
    return 0


def _cmd_dataset(args: argparse.Namespace) -> int:
    from diamond_env.data.dataset import INDEX_NAME
    from diamond_env.data.repair import move_orphans, rebuild_index, verify_dataset

    root = Path(args.root)
    if args.action == "repair":
        if not (root / INDEX_NAME).exists():
            if not args.game:
                raise ValueError(f"{root / INDEX_NAME} is missing: give --game to rebuild it")
            dataset, skipped = rebuild_index(root, args.game)
            print(
                f"rebuilt {root / INDEX_NAME}: {dataset.num_episodes} episodes, "
                f"{dataset.num_steps} steps; left out (kept on disk): {skipped or 'nothing'}"
            )
        if args.move_orphans:
            moved = move_orphans(root)
            print(f"moved {len(moved)} orphan file(s) to {root / 'orphans'}")
    report = verify_dataset(root)
    print(
        f"{root}: {report['episodes']} episodes, {report['steps']} steps; "
        f"{len(report['corrupt'])} damaged part(s), {len(report['orphans'])} orphan file(s)"
    )
    for line in report["corrupt"]:
        print(f"  damaged: {line}")
    for name in report["orphans"]:
        print(f"  orphan (not in the index, never read): {name}")
    return 0 if report["ok"] else 1


def _cmd_eval_wm(args: argparse.Namespace) -> int:
    import json

    from diamond_env.data.dataset import EpisodeDataset
    from diamond_env.evaluation.wm_eval import evaluate_world_model
    from diamond_env.world_model.model import WorldModel

    dataset = EpisodeDataset.open(args.dataset)
    wm = WorldModel.load(args.checkpoint, device=args.device, expected_game=dataset.game)
    if args.num_denoising_steps:
        wm.sampler_config = dataclasses.replace(
            wm.sampler_config, num_steps=args.num_denoising_steps
        )
    if args.fastpath != "plain":  # the dream's numbers on a fast path (bf16 changes them)
        from diamond_env.world_model.fastpath import with_fastpath

        wm = with_fastpath(wm, args.fastpath)
    data = dataset.load_all()
    grid = Path(args.grid) if args.grid else None
    results = evaluate_world_model(
        wm,
        data,
        seq_len=wm.config.loop.rew_end_seq_len,
        seed=args.seed,
        batches=args.batches,
        num_rollouts=args.rollouts,
        grid_path=grid,
    )
    from diamond_env.evaluation.fidelity import fidelity_lines

    print(
        f"{dataset.game}: {data.num_steps} steps in {data.num_episodes} episodes of "
        f"{args.dataset} (held out only if the model never trained on them)"
    )
    print("\n".join(fidelity_lines(results)))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.out}")
    if grid:
        print(f"wrote {grid}")
    return 0


def _csv(text: str | None, kind: type) -> list[Any] | None:
    return None if not text else [kind(item) for item in text.split(",") if item]


def _cmd_bench(args: argparse.Namespace) -> int:
    import json

    from diamond_env.cli.bench import format_results, run_bench

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    sections = [s for s in args.sections.split(",") if s]
    results = run_bench(
        quick=args.quick,
        game=args.game,
        sections=sections,
        device=args.device,
        dream_presets=_csv(args.presets, str),
        dream_num_envs=_csv(args.num_envs, int),
        dream_min_seconds=args.cell_seconds,
        progress=True,
        train_presets=_csv(args.train_presets, str),
        fastpath=_csv(args.fastpath, str),
    )
    print(format_results(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")
    return 0


def _resumable_options(cls: Any, args: argparse.Namespace) -> Any:
    """The options of a training command; with ``--resume``, those not given are the run's own."""
    from diamond_env.run.options import given_options, namespace_to, with_stored_options

    return with_stored_options(namespace_to(cls, args), given_options(cls, args.argv))


def _cmd_distill(args: argparse.Namespace) -> int:
    from diamond_env.evaluation.fidelity import fidelity_lines
    from diamond_env.training.distill import DistillOptions, distill

    opts = _resumable_options(DistillOptions, args)
    results = distill(opts)
    print(f"student: {Path(opts.run_dir) / 'world_model'} ({opts.num_steps} denoising steps)")
    for name in ("teacher", "student"):
        if name in results:
            print(f"\n## {name}\n")
            print("\n".join(fidelity_lines(results[name])))
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from diamond_env.training.loop import TrainOptions, train

    opts = _resumable_options(TrainOptions, args)
    result = train(opts)
    if result["finished"] and not result.get("rank", 0):  # rank 0 of a data-parallel run reports
        print(f"run: {opts.resolved_run_dir()} (agent in actor_critic/, scores in eval.json)")
    return 0


def _cmd_train_wm(args: argparse.Namespace) -> int:
    from diamond_env.training.train_wm import TrainWMOptions, summary_lines, train_world_model

    opts = _resumable_options(TrainWMOptions, args)
    lines = summary_lines(opts, train_world_model(opts))
    if lines:
        print("\n".join(lines))
    return 0


def _cmd_train_agent(args: argparse.Namespace) -> int:
    from diamond_env.training.agents import TrainAgentOptions, train_agent

    out = train_agent(_resumable_options(TrainAgentOptions, args))
    print(f"agent: {out} (play it in the real game: diamond-env evaluate --agent {out})")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from diamond_env.cli.demo import DemoOptions, run_demo
    from diamond_env.run.options import namespace_to

    run_demo(namespace_to(DemoOptions, args))
    return 0


def _cmd_video(args: argparse.Namespace) -> int:
    from diamond_env.cli.video import cmd_video

    path = cmd_video(
        args.checkpoint,
        args.dataset,
        args.out,
        agent=args.agent,
        horizon=args.horizon,
        num_rollouts=args.rollouts,
        agent_steps=args.agent_steps,
        seed=args.seed,
        scale=args.scale,
        fps=args.fps,
        device=args.device,
        trust_pickle=args.trust_pickle,
    )
    print(f"wrote {path}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from diamond_env.cli.report import write_report

    path = write_report(
        args.run_dir,
        videos=args.videos,
        fidelity=args.fidelity,
        seed=args.seed,
        horizon=args.horizon,
        agent_steps=args.agent_steps,
        device=args.device,
    )
    print(f"wrote {path}")
    return 0


def _cmd_play(args: argparse.Namespace) -> int:
    from diamond_env.cli.play import KEYS_HELP, play

    print(KEYS_HELP)
    result = play(
        args.checkpoint,
        agent=args.agent,
        real=args.real,
        game=args.game,
        horizon=args.horizon,
        seed=args.seed,
        scale=args.scale,
        fps=args.fps,
        device=args.device,
        max_frames=args.max_frames,
        record=args.record,
        trust_pickle=args.trust_pickle,
    )
    print(f"{result.steps} steps, episode returns {result.returns}")
    for path in result.recorded:
        print(f"recorded {path}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from diamond_env.evaluation.real_game import cmd_evaluate

    cmd_evaluate(
        args.agent,
        args.game,
        args.episodes,
        args.out,
        seed=args.seed,
        video=args.video,
        num_envs=args.num_envs,
        device=args.device,
        progress=not args.quiet,
        deterministic=args.deterministic,
        trust_pickle=args.trust_pickle,
        baselines=args.baselines,
    )
    return 0


def _cmd_import_data(args: argparse.Namespace) -> int:
    from diamond_env.atari import action_meanings, canonical_game
    from diamond_env.config import IMG_SIZE
    from diamond_env.data.importing import import_episodes, minari_episodes, npz_episodes

    game = canonical_game(args.game)
    meanings = action_meanings(game)
    if (args.npz is None) == (args.minari is None):
        raise ValueError("import-data: give exactly one of --npz FOLDER or --minari ID")
    if args.npz is not None:
        source = f"npz:{Path(args.npz).name}"
        episodes = list(npz_episodes(Path(args.npz)))
    else:
        source = f"minari:{args.minari}"
        root = Path(args.minari_root) if args.minari_root else None
        episodes = list(minari_episodes(args.minari, len(meanings), root))
    settings = {
        "source": source,
        "frame_skip": args.frame_skip,
        "max_pool_last_two_frames": args.max_pool,
        "size": IMG_SIZE,
        "interpolation": "area",
    }
    summary = import_episodes(
        episodes, Path(args.out), game=game, action_meanings=meanings, settings=settings
    )
    print(
        f"imported {summary.episodes} episodes, {summary.steps} steps ({summary.rewards} "
        f"rewards, {summary.life_losses} life losses) from {source} into {args.out}"
    )
    print(f"train on it: diamond-env train-wm --game {game} --dataset {args.out} --preset cpu")
    return 0


def _cmd_import_diamond(args: argparse.Namespace) -> int:
    from diamond_env.training.import_diamond import import_diamond

    result = import_diamond(
        args.checkpoint,
        args.game,
        args.out,
        context_steps=args.context_steps,
        num_contexts=args.num_contexts,
        context_policy=args.context_policy,
        seed=args.seed,
        progress=not args.quiet,
        force=args.force,
    )
    print(
        f"world model ({result.config.preset} sizes, {result.num_contexts} real starting "
        f"contexts): {result.world_model}"
    )
    print(f"DIAMOND's actor-critic: {result.agent} (diamond-env evaluate --agent {result.agent})")
    return 0


def _add_trust_pickle(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--trust-pickle",
        action="store_true",
        help="also load a bare SB3 model.zip: SB3 unpickles it, and a crafted file runs "
        "arbitrary code, so only for files from a source you trust",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="diamond-env",
        description="DIAMOND world models of Atari games as Gymnasium environments.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "collect", help="play the real game (random policy or an agent) into a dataset"
    )
    p.add_argument("--game", default=None, help="ALE game name, e.g. Breakout")
    p.add_argument(
        "--env-id",
        default=None,
        help="instead of --game: any registered Gymnasium env with image observations "
        "and discrete actions, e.g. CarRacing-v3",
    )
    p.add_argument(
        "--env-kwargs",
        default=None,
        help="with --env-id: JSON kwargs of gym.make, e.g. '{\"continuous\": false}'",
    )
    p.add_argument(
        "--render-obs",
        action="store_true",
        help="with --env-id: observe the env's rendered frames (render_mode='rgb_array'), "
        "for envs whose observations are not images (e.g. CartPole-v1)",
    )
    p.add_argument(
        "--steps",
        type=_positive_int,
        required=True,
        help="collect until the dataset holds this many steps (a rerun tops it up)",
    )
    p.add_argument("--out", required=True, help="dataset directory (created if missing)")
    p.add_argument("--num-envs", type=_positive_int, default=1, help="games played at once")
    p.add_argument("--seed", type=int, default=0, help="seed of the env and the policy")
    p.add_argument(
        "--agent",
        default=None,
        help="agent directory that plays instead of the random policy (our actor-critic or an "
        "SB3 agent, as diamond-env evaluate loads it)",
    )
    p.add_argument(
        "--epsilon",
        type=_probability,
        default=0.01,
        help="with --agent: share of steps played by a uniformly random action instead, so every "
        "action is seen in every kind of state (default: DIAMOND's 0.01)",
    )
    p.add_argument(
        "--trust-pickle",
        action="store_true",
        help="with --agent: allow a bare SB3 model.zip (unpickled: runs code from the file)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_collect)

    p = sub.add_parser("dataset", help="check a dataset, rebuild a lost index, set orphans aside")
    p.add_argument(
        "action",
        choices=("verify", "repair"),
        help="verify: read every part against the index, list orphan files (exit 1 "
        "on a problem); repair: rebuild a missing index from the parts (--game) "
        "and/or move orphans to ROOT/orphans/ (--move-orphans); nothing is deleted",
    )
    p.add_argument("root", help="dataset directory")
    p.add_argument("--game", default=None, help="repair: the game, to rebuild a missing index")
    p.add_argument("--move-orphans", action="store_true", help="repair: move orphans aside")
    p.set_defaults(func=_cmd_dataset)

    p = sub.add_parser("eval-wm", help="held-out fidelity of a world model on a dataset")
    p.add_argument("--checkpoint", required=True, help="world-model checkpoint directory")
    p.add_argument("--dataset", required=True, help="episode dataset (held-out play)")
    p.add_argument("--out", default=None, help="write the figures to this JSON file")
    p.add_argument("--grid", default=None, help="write a real-vs-imagined PNG here")
    p.add_argument("--batches", type=_positive_int, default=8, help="batches of 32 segments")
    p.add_argument(
        "--rollouts",
        type=_positive_int,
        default=16,
        help="open-loop rollouts of 15 steps for the PSNR figures",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--fastpath",
        default="plain",
        help="dream on a fast path, as gym.make's fastpath=: plain (default) | auto | "
        "comma-separated names (channels_last,bf16,...): what the path costs in fidelity",
    )
    p.add_argument(
        "--num-denoising-steps",
        type=int,
        default=0,
        help="denoising steps per dreamt frame (0: the checkpoint's)",
    )
    p.set_defaults(func=_cmd_eval_wm)

    from diamond_env.run.options import add_dataclass_arguments
    from diamond_env.training.agents import TrainAgentOptions
    from diamond_env.training.loop import TrainOptions

    p = sub.add_parser("train", help="the full DIAMOND loop: collect, world model, agent, evaluate")
    add_dataclass_arguments(p, TrainOptions)
    p.set_defaults(func=_cmd_train)

    from diamond_env.training.train_wm import TrainWMOptions

    p = sub.add_parser("train-wm", help="train a world model from real play (as train_wm.py)")
    add_dataclass_arguments(p, TrainWMOptions)
    p.set_defaults(func=_cmd_train_wm)

    from diamond_env.training.distill import DistillOptions

    p = sub.add_parser(
        "distill", help="a world model that dreams in fewer denoising steps, taught by another"
    )
    add_dataclass_arguments(p, DistillOptions)
    p.set_defaults(func=_cmd_distill)

    p = sub.add_parser("train-agent", help="train our actor-critic or an SB3 agent in a dream")
    add_dataclass_arguments(p, TrainAgentOptions)
    p.set_defaults(func=_cmd_train_agent)

    from diamond_env.cli.demo import DemoOptions

    p = sub.add_parser("demo", help="Breakout end to end on a CPU budget, with report.md")
    add_dataclass_arguments(p, DemoOptions)
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser(
        "import-data", help="turn recorded episodes (.npz files or a Minari dataset) into a dataset"
    )
    p.add_argument("--game", required=True, help="the ALE game the episodes are of, e.g. Breakout")
    p.add_argument(
        "--npz",
        default=None,
        help="folder of one .npz per episode (observations, actions, rewards, "
        "terminations, truncations, optional lives)",
    )
    p.add_argument(
        "--minari", default=None, help="Minari dataset id, e.g. atari/breakout/expert-v0"
    )
    p.add_argument(
        "--minari-root",
        default=None,
        help="folder holding Minari datasets (default: $MINARI_DATASETS_PATH or "
        "~/.minari/datasets)",
    )
    p.add_argument("--out", required=True, help="dataset directory (created, or appended to)")
    p.add_argument(
        "--frame-skip",
        type=_positive_int,
        default=None,
        help="frames the source repeated each action for (recorded, not applied)",
    )
    p.add_argument(
        "--max-pool",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="whether the source max-pooled the last two frames (recorded)",
    )
    p.set_defaults(func=_cmd_import_data)

    p = sub.add_parser(
        "import-diamond", help="turn a DIAMOND agent file (<Game>.pt) into a dream env and agent"
    )
    p.add_argument("--checkpoint", required=True, help="DIAMOND's .pt file, e.g. Breakout.pt")
    p.add_argument("--game", required=True, help="the game it was trained on, e.g. Breakout")
    p.add_argument("--out", required=True, help="writes OUT/world_model and OUT/agent")
    p.add_argument(
        "--context-steps",
        type=_positive_int,
        default=2000,
        help="real steps played to draw starting contexts from",
    )
    p.add_argument(
        "--num-contexts",
        type=_positive_int,
        default=256,
        help="starting contexts kept in the world model",
    )
    p.add_argument(
        "--context-policy",
        choices=("agent", "random"),
        default="agent",
        help="who plays those steps: DIAMOND's actor-critic or a random policy",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--force", action="store_true", help="replace a world model, agent or import already in OUT"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_import_diamond)

    p = sub.add_parser("evaluate", help="play an agent in the real game and report its scores")
    p.add_argument("--agent", required=True, help="agent directory (train-agent's --out)")
    p.add_argument("--game", default=None, help="game to play (default: the agent's own)")
    p.add_argument("--episodes", type=_positive_int, default=10, help="full games to play")
    p.add_argument("--out", default=None, help="write the scores to this JSON file")
    p.add_argument("--video", default=None, help="record the first game (.mp4 or .gif)")
    p.add_argument("--num-envs", type=_positive_int, default=1, help="games played at once")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--deterministic",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="argmax actions (--no-deterministic: sample); default: agent.json's "
        "choice, else sample for our actor-critic and argmax for SB3",
    )
    p.add_argument(
        "--baselines",
        action="store_true",
        help="also play, on the same games, the random policy and a policy blind to "
        "the screen that takes the agent's own action shares, and print the agent's "
        "margin over each in standard errors",
    )
    _add_trust_pickle(p)
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("video", help="real vs dreamt frames (open loop), and an agent in both")
    p.add_argument("--checkpoint", required=True, help="world-model checkpoint directory")
    p.add_argument("--dataset", default=None, help="episode dataset for the open-loop clip")
    p.add_argument("--out", required=True, help="output .mp4 or .gif")
    p.add_argument("--agent", default=None, help="agent directory for the agent clip")
    p.add_argument("--horizon", type=_positive_int, default=40, help="open-loop steps")
    p.add_argument("--rollouts", type=_positive_int, default=4, help="open-loop clips side by side")
    p.add_argument("--agent-steps", type=_positive_int, default=200, help="agent clip steps")
    p.add_argument("--scale", type=_positive_int, default=3, help="pixel upscaling")
    p.add_argument("--fps", type=_positive_int, default=15)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    _add_trust_pickle(p)
    p.set_defaults(func=_cmd_video)

    p = sub.add_parser("report", help="report.md with plots and videos for a run directory")
    p.add_argument("--run-dir", required=True, help="a train_wm.py or diamond-env train run")
    p.add_argument(
        "--videos",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="make the real-vs-dream GIFs when missing",
    )
    p.add_argument(
        "--fidelity",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="compute world-model fidelity when the run has none",
    )
    p.add_argument("--horizon", type=_positive_int, default=30)
    p.add_argument("--agent-steps", type=_positive_int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("play", help="play the dream (or the real game) with the keyboard")
    p.add_argument("--checkpoint", default=None, help="world-model checkpoint directory")
    p.add_argument("--agent", default=None, help="agent directory ('m' toggles agent control)")
    p.add_argument("--real", action="store_true", help="play the real game instead")
    p.add_argument("--game", default=None, help="game (default: the checkpoint's)")
    p.add_argument("--horizon", type=_positive_int, default=1000, help="dream steps per episode")
    p.add_argument("--scale", type=_positive_int, default=8, help="window pixels per frame pixel")
    p.add_argument("--fps", type=_positive_int, default=15)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--max-frames", type=_positive_int, default=None, help="stop after N frames")
    p.add_argument("--record", default=None, help="save each episode (npz + gif) in this folder")
    _add_trust_pickle(p)
    p.set_defaults(func=_cmd_play)

    p = sub.add_parser("bench", help="measure throughput and print the figures")
    p.add_argument("--quick", action="store_true", help="short measurements (a few minutes)")
    p.add_argument("--game", default="Breakout", help="game for the real-env figures")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    p.add_argument(
        "--sections",
        default="collection,ale_env,dream,train,imagination",
        help="comma-separated subset of collection,ale_env,dream,train,imagination (default: all;"
        " the projection needs train and imagination)",
    )
    p.add_argument(
        "--train-presets", default=None, help="presets of the train and imagination sections"
    )
    p.add_argument(
        "--fastpath",
        default=None,
        help="dream with these options on vs off in one run: channels_last,bf16,fp16,compile,"
        "inference_mode,cuda_graphs",
    )
    p.add_argument("--presets", default=None, help="dream presets, e.g. tiny,small,paper")
    p.add_argument("--num-envs", default=None, help="dream batch sizes, e.g. 1,8,32,128")
    p.add_argument(
        "--cell-seconds",
        type=float,
        default=None,
        help="time per dream measurement (default: 3 quick, 10 full)",
    )
    p.add_argument("--device", default="cpu", help="torch device of the dream: cpu | cuda")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.set_defaults(func=_cmd_bench)
    return parser


DATA_PARALLEL = ("train-wm", "train")
"""Commands that run data-parallel under torchrun (:mod:`diamond_env.training.distributed`)."""


OPTIONAL_MODULES = {
    "stable_baselines3": "train",
    "tensorboard": "train",
    "matplotlib": "train",
    "PIL": "train",
    "pygame": "viewer",
    "minari": "minari",
}
"""Modules of the optional extras (pyproject.toml), and the extra that installs each."""


def main(argv: Sequence[str] | None = None) -> int:
    """The ``diamond-env`` command; returns its exit status (2: a refusal, printed in one line)."""
    try:
        return _main(argv)
    except ModuleNotFoundError as err:  # an optional dependency; any other is a bug
        extra = OPTIONAL_MODULES.get((err.name or "").split(".")[0])
        if extra is None:
            raise
        words = [a for a in (sys.argv[1:] if argv is None else argv) if not a.startswith("-")]
        name = f"diamond-env {words[0]}" if words else "diamond-env"
        print(
            f"{name}: error: needs {err.name}, an optional dependency: "
            f"pip install 'diamond_env[{extra}]'",
            file=sys.stderr,
        )
        return 2


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = argv  # which options were given (a resumed run takes the others from its files)
    func: Command = args.func
    from diamond_env.devices import tune_allocator
    from diamond_env.run.safe_io import InputError
    from diamond_env.training.distributed import launched_by_torchrun

    try:
        several = launched_by_torchrun()
    except InputError as err:
        print(f"diamond-env {args.command}: error: {err}", file=sys.stderr)
        return 2
    if several and args.command not in DATA_PARALLEL:
        print(
            f"diamond-env {args.command}: error: launched as one of {os.environ['WORLD_SIZE']} "
            f"processes (torchrun), but only {' and '.join(DATA_PARALLEL)} run data-parallel; "
            "run it as one process",
            file=sys.stderr,
        )
        return 2
    tune_allocator()  # this process is ours: keep large freed blocks (diamond_env/devices.py)
    try:
        return func(args)
    except (
        ValueError,  # InputError (our refusals of files, names and values) is one
        FileNotFoundError,
        FileExistsError,
        ConnectionError,  # a data-parallel run lost one of its processes
    ) as err:  # a refusal: one line; anything else is a bug and keeps its traceback
        print(f"diamond-env {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
