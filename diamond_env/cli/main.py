"""The ``diamond-env`` command line (also ``python -m diamond_env``).

Each subcommand is a small function over the library; argument parsing happens here only.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from diamond_env.cli.options import (
    BenchOptions,
    CollectOptions,
    DatasetOptions,
    EvaluateOptions,
    EvalWMOptions,
    ImportDataOptions,
    ImportDiamondOptions,
    PlayOptions,
    ReportOptions,
    VideoOptions,
)

if TYPE_CHECKING:
    from diamond_env.cli.demo import DemoOptions
    from diamond_env.training.agents import TrainAgentOptions
    from diamond_env.training.distill import DistillOptions
    from diamond_env.training.loop import TrainOptions
    from diamond_env.training.train_wm import TrainWMOptions


def _cmd_collect(opts: CollectOptions) -> int:
    from diamond_env.data.collect import collect_until

    env_spec = None
    if opts.env_id is not None:
        from diamond_env.real_env import EnvSpec, parse_env_kwargs

        if opts.game is not None:
            raise ValueError("collect: give --game (an ALE game) or --env-id, not both")
        env_spec = EnvSpec(opts.env_id, parse_env_kwargs(opts.env_kwargs), opts.render_obs)
        game = opts.env_id
    elif opts.game is None:
        raise ValueError("collect: give --game (an ALE game) or --env-id (any Gymnasium env)")
    else:
        game = opts.game
    policy, epsilon = None, 0.0
    if opts.agent is not None:
        from diamond_env.evaluation.real_game import load_collecting_agent

        policy = load_collecting_agent(
            opts.agent, game, seed=opts.seed, trust_pickle=opts.trust_pickle, env=env_spec
        )
        epsilon = opts.epsilon
    dataset, stats = collect_until(
        Path(opts.out),
        game,
        opts.steps,
        policy=policy,
        epsilon=epsilon,
        num_envs=opts.num_envs,
        seed=opts.seed,
        progress=not opts.quiet,
        env_spec=env_spec,
    )
    if stats is None:
        print(
            f"{opts.out} already holds {dataset.num_steps} steps (>= {opts.steps}); nothing to do"
        )
    else:
        print(
            f"collected {stats.steps} steps in {stats.seconds:.1f} s "
            f"({stats.steps_per_s:.0f} steps/s), {stats.games_finished} games finished"
        )
    info = dataset.info()
    print(
        f"dataset {opts.out}: game {info['game']}, {info['num_steps']} steps, "
        f"{info['num_episodes']} episodes, reward signs {info['reward_counts']}"
    )
    return 0


def _cmd_dataset(opts: DatasetOptions) -> int:
    from diamond_env.data.dataset import INDEX_NAME
    from diamond_env.data.repair import move_orphans, rebuild_index, verify_dataset

    root = Path(opts.root)
    if opts.action == "repair":
        if not (root / INDEX_NAME).exists():
            if not opts.game:
                raise ValueError(f"{root / INDEX_NAME} is missing: give --game to rebuild it")
            dataset, skipped = rebuild_index(root, opts.game)
            print(
                f"rebuilt {root / INDEX_NAME}: {dataset.num_episodes} episodes, "
                f"{dataset.num_steps} steps; left out (kept on disk): {skipped or 'nothing'}"
            )
        if opts.move_orphans:
            moved = move_orphans(root)
            print(f"moved {len(moved)} orphan file(s) to {root / 'orphans'}")
    report = verify_dataset(root)
    print(
        f"{root}: {report.episodes} episodes, {report.steps} steps; "
        f"{len(report.corrupt)} damaged part(s), {len(report.orphans)} orphan file(s)"
    )
    for line in report.corrupt:
        print(f"  damaged: {line}")
    for name in report.orphans:
        print(f"  orphan (not in the index, never read): {name}")
    return 0 if report.ok else 1


def _cmd_eval_wm(opts: EvalWMOptions) -> int:
    import json

    from diamond_env.data.dataset import EpisodeDataset
    from diamond_env.evaluation.wm_eval import evaluate_world_model
    from diamond_env.world_model.model import WorldModel

    dataset = EpisodeDataset.open(opts.dataset)
    wm = WorldModel.load(opts.checkpoint, device=opts.device, expected_game=dataset.game)
    if opts.num_denoising_steps:
        wm.sampler_config = dataclasses.replace(
            wm.sampler_config, num_steps=opts.num_denoising_steps
        )
    if opts.fastpath != "plain":  # the dream's numbers on a fast path (bf16 changes them)
        from diamond_env.world_model.fastpath import with_fastpath

        wm = with_fastpath(wm, opts.fastpath)
    data = dataset.load_all()
    grid = Path(opts.grid) if opts.grid else None
    results = evaluate_world_model(
        wm,
        data,
        seq_len=wm.config.loop.rew_end_seq_len,
        seed=opts.seed,
        batches=opts.batches,
        num_rollouts=opts.rollouts,
        grid_path=grid,
    )
    if opts.paddle_states:
        from diamond_env.evaluation.paddle import paddle_probe

        results["paddle"] = paddle_probe(
            wm,
            num_states=opts.paddle_states,
            seed=opts.seed,
            grid_path=Path(opts.paddle_grid) if opts.paddle_grid else None,
        )
    if opts.bounce_steps:
        from diamond_env.evaluation.paddle import bounce_check

        results["bounces"] = bounce_check(wm, steps=opts.bounce_steps, seed=opts.seed)
    from diamond_env.evaluation.fidelity import fidelity_lines

    print(
        f"{dataset.game}: {data.num_steps} steps in {data.num_episodes} episodes of "
        f"{opts.dataset} (held out only if the model never trained on them)"
    )
    print("\n".join(fidelity_lines(results)))
    if opts.out:
        Path(opts.out).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {opts.out}")
    if grid:
        print(f"wrote {grid}")
    if "grid" in results.get("paddle", {}):
        print(f"wrote {results['paddle']['grid']}")
    return 0


def _csv(text: str | None, kind: type) -> list[Any] | None:
    return None if not text else [kind(item) for item in text.split(",") if item]


def _cmd_bench(opts: BenchOptions) -> int:
    import json

    from diamond_env.cli.bench import format_results, run_bench

    if opts.threads:
        import torch

        torch.set_num_threads(opts.threads)
    sections = [s for s in opts.sections.split(",") if s]
    results = run_bench(
        quick=opts.quick,
        game=opts.game,
        sections=sections,
        device=opts.device,
        dream_presets=_csv(opts.presets, str),
        dream_num_envs=_csv(opts.num_envs, int),
        dream_min_seconds=opts.cell_seconds,
        progress=True,
        train_presets=_csv(opts.train_presets, str),
        fastpath=_csv(opts.fastpath, str),
    )
    print(format_results(results))
    if opts.json:
        Path(opts.json).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {opts.json}")
    return 0


def _cmd_distill(opts: DistillOptions) -> int:
    from diamond_env.evaluation.fidelity import fidelity_lines
    from diamond_env.training.distill import distill

    results = distill(opts)  # (it checks that the run directory was given)
    print(f"student: {Path(str(opts.run_dir)) / 'world_model'} ({opts.num_steps} denoising steps)")
    for name in ("teacher", "student"):
        if name in results:
            print(f"\n## {name}\n")
            print("\n".join(fidelity_lines(results[name])))
    return 0


def _cmd_train(opts: TrainOptions) -> int:
    from diamond_env.training.loop import train

    result = train(opts)
    if result["finished"] and not result.get("rank", 0):  # rank 0 of a data-parallel run reports
        print(f"run: {opts.resolved_run_dir()} (agent in actor_critic/, scores in eval.json)")
    return 0


def _cmd_train_wm(opts: TrainWMOptions) -> int:
    from diamond_env.training.train_wm import summary_lines, train_world_model

    lines = summary_lines(opts, train_world_model(opts))
    if lines:
        print("\n".join(lines))
    return 0


def _cmd_train_agent(opts: TrainAgentOptions) -> int:
    from diamond_env.training.agents import train_agent

    out = train_agent(opts)
    print(f"agent: {out} (play it in the real game: diamond-env evaluate --agent {out})")
    return 0


def _cmd_demo(opts: DemoOptions) -> int:
    from diamond_env.cli.demo import run_demo

    run_demo(opts)
    return 0


def _cmd_video(opts: VideoOptions) -> int:
    from diamond_env.cli.video import cmd_video

    path = cmd_video(
        opts.checkpoint,
        opts.dataset,
        opts.out,
        agent=opts.agent,
        horizon=opts.horizon,
        num_rollouts=opts.rollouts,
        agent_steps=opts.agent_steps,
        seed=opts.seed,
        scale=opts.scale,
        fps=opts.fps,
        device=opts.device,
        trust_pickle=opts.trust_pickle,
    )
    print(f"wrote {path}")
    return 0


def _cmd_report(opts: ReportOptions) -> int:
    from diamond_env.cli.report import write_report

    path = write_report(
        opts.run_dir,
        videos=opts.videos,
        fidelity=opts.fidelity,
        seed=opts.seed,
        horizon=opts.horizon,
        agent_steps=opts.agent_steps,
        device=opts.device,
    )
    print(f"wrote {path}")
    return 0


def _cmd_play(opts: PlayOptions) -> int:
    from diamond_env.cli.play import KEYS_HELP, play

    print(KEYS_HELP)
    result = play(
        opts.checkpoint,
        agent=opts.agent,
        real=opts.real,
        game=opts.game,
        horizon=opts.horizon,
        seed=opts.seed,
        scale=opts.scale,
        fps=opts.fps,
        device=opts.device,
        max_frames=opts.max_frames,
        record=opts.record,
        trust_pickle=opts.trust_pickle,
    )
    print(f"{result.steps} steps, episode returns {result.returns}")
    for path in result.recorded:
        print(f"recorded {path}")
    return 0


def _cmd_evaluate(opts: EvaluateOptions) -> int:
    from diamond_env.evaluation.real_game import cmd_evaluate

    cmd_evaluate(
        opts.agent,
        opts.game,
        opts.episodes,
        opts.out,
        seed=opts.seed,
        video=opts.video,
        num_envs=opts.num_envs,
        device=opts.device,
        progress=not opts.quiet,
        deterministic=opts.deterministic,
        trust_pickle=opts.trust_pickle,
        baselines=opts.baselines,
    )
    return 0


def _cmd_import_data(opts: ImportDataOptions) -> int:
    from diamond_env.atari import action_meanings, canonical_game
    from diamond_env.config import IMG_SIZE
    from diamond_env.data.importing import import_episodes, minari_episodes, npz_episodes

    game = canonical_game(opts.game)
    meanings = action_meanings(game)
    if (opts.npz is None) == (opts.minari is None):
        raise ValueError("import-data: give exactly one of --npz FOLDER or --minari ID")
    if opts.npz is not None:
        source = f"npz:{Path(opts.npz).name}"
        episodes = list(npz_episodes(Path(opts.npz)))
    else:
        assert opts.minari is not None
        source = f"minari:{opts.minari}"
        root = Path(opts.minari_root) if opts.minari_root else None
        episodes = list(minari_episodes(opts.minari, len(meanings), root))
    settings = {
        "source": source,
        "frame_skip": opts.frame_skip,
        "max_pool_last_two_frames": opts.max_pool,
        "size": IMG_SIZE,
        "interpolation": "area",
    }
    summary = import_episodes(
        episodes, Path(opts.out), game=game, action_meanings=meanings, settings=settings
    )
    print(
        f"imported {summary.episodes} episodes, {summary.steps} steps ({summary.rewards} "
        f"rewards, {summary.life_losses} life losses) from {source} into {opts.out}"
    )
    print(f"train on it: diamond-env train-wm --game {game} --dataset {opts.out} --preset cpu")
    return 0


def _cmd_import_diamond(opts: ImportDiamondOptions) -> int:
    from diamond_env.training.import_diamond import import_diamond

    result = import_diamond(
        opts.checkpoint,
        opts.game,
        opts.out,
        context_steps=opts.context_steps,
        num_contexts=opts.num_contexts,
        context_policy=opts.context_policy,
        seed=opts.seed,
        progress=not opts.quiet,
        force=opts.force,
    )
    print(
        f"world model ({result.config.preset} sizes, {result.num_contexts} real starting "
        f"contexts): {result.world_model}"
    )
    print(f"DIAMOND's actor-critic: {result.agent} (diamond-env evaluate --agent {result.agent})")
    return 0


@dataclasses.dataclass(frozen=True)
class Command:
    """One ``diamond-env`` subcommand: its options dataclass (every field an option) and the
    function that runs it on an instance of that class."""

    name: str
    help: str
    options: str  # "module:Class", imported when the parser is built
    run: str  # name of the function in this module (looked up at call time)

    def options_class(self) -> type:
        module, name = self.options.split(":")
        return getattr(importlib.import_module(module), name)


_CLI = "diamond_env.cli.options"
COMMANDS: tuple[Command, ...] = (
    Command(
        "collect",
        "play the real game (random policy or an agent) into a dataset",
        f"{_CLI}:CollectOptions",
        "_cmd_collect",
    ),
    Command(
        "dataset",
        "check a dataset, rebuild a lost index, set orphans aside",
        f"{_CLI}:DatasetOptions",
        "_cmd_dataset",
    ),
    Command(
        "eval-wm",
        "held-out fidelity of a world model on a dataset",
        f"{_CLI}:EvalWMOptions",
        "_cmd_eval_wm",
    ),
    Command(
        "train",
        "the full DIAMOND loop: collect, world model, agent, evaluate",
        "diamond_env.training.loop:TrainOptions",
        "_cmd_train",
    ),
    Command(
        "train-wm",
        "train a world model from real play (as train_wm.py)",
        "diamond_env.training.train_wm:TrainWMOptions",
        "_cmd_train_wm",
    ),
    Command(
        "distill",
        "a world model that dreams in fewer denoising steps, taught by another",
        "diamond_env.training.distill:DistillOptions",
        "_cmd_distill",
    ),
    Command(
        "train-agent",
        "train our actor-critic or an SB3 agent in a dream",
        "diamond_env.training.agents:TrainAgentOptions",
        "_cmd_train_agent",
    ),
    Command(
        "demo",
        "Breakout end to end on a CPU budget, with report.md",
        "diamond_env.cli.demo:DemoOptions",
        "_cmd_demo",
    ),
    Command(
        "import-data",
        "turn recorded episodes (.npz files or a Minari dataset) into a dataset",
        f"{_CLI}:ImportDataOptions",
        "_cmd_import_data",
    ),
    Command(
        "import-diamond",
        "turn a DIAMOND agent file (<Game>.pt) into a dream env and agent",
        f"{_CLI}:ImportDiamondOptions",
        "_cmd_import_diamond",
    ),
    Command(
        "evaluate",
        "play an agent in the real game and report its scores",
        f"{_CLI}:EvaluateOptions",
        "_cmd_evaluate",
    ),
    Command(
        "video",
        "real vs dreamt frames (open loop), and an agent in both",
        f"{_CLI}:VideoOptions",
        "_cmd_video",
    ),
    Command(
        "report",
        "report.md with plots and videos for a run directory",
        f"{_CLI}:ReportOptions",
        "_cmd_report",
    ),
    Command(
        "play",
        "play the dream (or the real game) with the keyboard",
        f"{_CLI}:PlayOptions",
        "_cmd_play",
    ),
    Command(
        "bench", "measure throughput and print the figures", f"{_CLI}:BenchOptions", "_cmd_bench"
    ),
)
"""Every subcommand, in the order ``--help`` lists them: the parser is built from this table."""


def build_parser() -> argparse.ArgumentParser:
    """The ``diamond-env`` parser: one subparser per :data:`COMMANDS` row, one option per field."""
    from diamond_env.run.options import add_dataclass_arguments

    parser = argparse.ArgumentParser(
        prog="diamond-env",
        description="DIAMOND world models of Atari games as Gymnasium environments.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        add_dataclass_arguments(
            sub.add_parser(command.name, help=command.help), command.options_class()
        )
    return parser


def parse_command(argv: Sequence[str] | None) -> tuple[Command, Any]:
    """The command ``argv`` names and its options; a resumed run takes the options not given
    from its stored ones (:func:`diamond_env.run.options.with_stored_options`)."""
    from diamond_env.run.options import given_options, namespace_to, with_stored_options

    ns = build_parser().parse_args(argv)
    command = next(c for c in COMMANDS if c.name == ns.command)
    cls = command.options_class()
    opts: Any = namespace_to(cls, ns)
    if getattr(opts, "resume", False):  # (a damaged stored file is an InputError)
        given = given_options(cls, list(sys.argv[1:] if argv is None else argv)[1:])
        opts = with_stored_options(opts, given)
    return command, opts


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
        print(
            f"{_command_name(argv)}: error: needs {err.name}, an optional dependency: "
            f"pip install 'diamond_env[{extra}]'",
            file=sys.stderr,
        )
        return 2


def _command_name(argv: Sequence[str] | None) -> str:
    """``diamond-env <command>`` as the user typed it, for one-line errors."""
    words = [a for a in (sys.argv[1:] if argv is None else argv) if not a.startswith("-")]
    return f"diamond-env {words[0]}" if words else "diamond-env"


def _main(argv: Sequence[str] | None) -> int:
    from diamond_env.run.safe_io import InputError

    try:
        command, opts = parse_command(argv)
    except InputError as err:  # a resumed run's stored options are unreadable
        print(f"{_command_name(argv)}: error: {err}", file=sys.stderr)
        return 2
    from diamond_env.devices import tune_allocator
    from diamond_env.training.distributed import launched_by_torchrun

    try:
        several = launched_by_torchrun()
    except InputError as err:
        print(f"diamond-env {command.name}: error: {err}", file=sys.stderr)
        return 2
    if several and command.name not in DATA_PARALLEL:
        print(
            f"diamond-env {command.name}: error: launched as one of {os.environ['WORLD_SIZE']} "
            f"processes (torchrun), but only {' and '.join(DATA_PARALLEL)} run data-parallel; "
            "run it as one process",
            file=sys.stderr,
        )
        return 2
    tune_allocator()  # this process is ours: keep large freed blocks (diamond_env/devices.py)
    try:
        return int(globals()[command.run](opts))
    except (
        ValueError,  # InputError (our refusals of files, names and values) is one
        FileNotFoundError,
        FileExistsError,
        ConnectionError,  # a data-parallel run lost one of its processes
    ) as err:  # a refusal: one line; anything else is a bug and keeps its traceback
        print(f"diamond-env {command.name}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
