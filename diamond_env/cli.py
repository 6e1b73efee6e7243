"""The ``diamond-env`` command line (also ``python -m diamond_env``).

Each subcommand is a small function over the library; argument parsing happens here only.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

Command = Callable[[argparse.Namespace], int]


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _cmd_collect(args: argparse.Namespace) -> int:
    from diamond_env.atari import ATARI_SETTINGS, canonical_game, make_atari_env
    from diamond_env.data.collect import Collector, RandomPolicy
    from diamond_env.data.dataset import EpisodeDataset

    game = canonical_game(args.game)
    env = make_atari_env(game, args.num_envs, train=True)
    dataset = EpisodeDataset.open_or_create(
        Path(args.out),
        game=game,
        settings=ATARI_SETTINGS,
        num_actions=int(env.single_action_space.n),  # type: ignore[attr-defined]
        action_meanings=env.get_action_meanings(),
    )
    missing = args.steps - dataset.num_steps
    if missing <= 0:
        print(
            f"{args.out} already holds {dataset.num_steps} steps (>= {args.steps}); nothing to do"
        )
        return 0
    if dataset.num_steps:
        print(f"{args.out} holds {dataset.num_steps} steps; collecting {missing} more")
    # A rerun after an interruption must not replay the games it already holds.
    seed = args.seed + dataset.num_steps
    collector = Collector(env, dataset, seed=seed)
    policy = RandomPolicy(int(env.single_action_space.n), seed=seed)  # type: ignore[attr-defined]
    stats = collector.collect(policy, steps=missing, progress=not args.quiet)
    env.close()
    print(
        f"collected {stats.steps} steps in {stats.seconds:.1f} s ({stats.steps_per_s:.0f} steps/s), "
        f"{stats.games_finished} games finished"
    )
    info = dataset.info()
    print(
        f"dataset {args.out}: game {info['game']}, {info['num_steps']} steps, "
        f"{info['num_episodes']} episodes, reward signs {info['reward_counts']}"
    )
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    import json

    from diamond_env.bench import format_results, run_bench

    results = run_bench(quick=args.quick, game=args.game)
    print(format_results(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="diamond-env",
        description="DIAMOND world models of Atari games as Gymnasium environments.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("collect", help="play the real game with a random policy into a dataset")
    p.add_argument("--game", required=True, help="ALE game name, e.g. Breakout")
    p.add_argument(
        "--steps",
        type=_positive_int,
        required=True,
        help="collect until the dataset holds this many steps (a rerun tops it up)",
    )
    p.add_argument("--out", required=True, help="dataset directory (created if missing)")
    p.add_argument("--num-envs", type=_positive_int, default=1, help="games played at once")
    p.add_argument("--seed", type=int, default=0, help="seed of the env and the policy")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_collect)

    p = sub.add_parser("bench", help="measure throughput and print the figures")
    p.add_argument("--quick", action="store_true", help="short measurements (a few minutes)")
    p.add_argument("--game", default="Breakout", help="game for the real-env figures")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    p.set_defaults(func=_cmd_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Command = args.func
    try:
        return func(args)
    except (ValueError, TypeError, FileNotFoundError) as err:
        print(f"diamond-env {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
