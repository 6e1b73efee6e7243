"""The dream from any RL code that speaks Gymnasium: a cleanrl-style loop and subprocess workers.

    python examples/plain_gymnasium_loop.py --checkpoint runs/Breakout/world_model --steps 200

1. One batched simulator for N envs (``gym.make_vec``): the fast way, one model in memory.
2. The same env in Gymnasium's ``AsyncVectorEnv`` (one subprocess per env, as libraries that
   build one env per worker do): the id carries its module, ``diamond_env:DiamondDream-...``, so
   a fresh worker imports (and registers) the package itself; each worker loads its own model.

A dream step is already an Atari-preprocessed step (frame skip, no-op starts, a lost life ends
the dream), so Atari wrappers (NoopReset, MaxAndSkip, FireReset, EpisodicLife) do not belong on
it.
"""

from __future__ import annotations

import argparse
import time

import gymnasium as gym
import numpy as np

import diamond_env  # noqa: F401  (registers DiamondDream-<Game>-v0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", default=None, help="world model (default: the lookup order)")
    p.add_argument("--game", default="Breakout")
    p.add_argument("--num-envs", type=int, default=4)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--workers", type=int, default=2, help="subprocess envs for part 2 (0: skip)")
    args = p.parse_args()
    env_id = f"diamond_env:DiamondDream-{args.game}-v0"
    kwargs = {} if args.checkpoint is None else {"checkpoint": args.checkpoint}

    # 1. cleanrl style: a vector env, random actions, episode returns from same-step autoreset
    envs = gym.make_vec(env_id, num_envs=args.num_envs, **kwargs)
    obs, _ = envs.reset(seed=0)
    returns, finished = np.zeros(args.num_envs), []
    start = time.perf_counter()
    for _ in range(args.steps // args.num_envs):
        obs, rew, term, trunc, info = envs.step(envs.action_space.sample())
        returns += rew
        for i in np.flatnonzero(term | trunc):  # ended this step; obs[i] already starts anew
            finished.append(returns[i])
            returns[i] = 0.0
    rate = args.steps / (time.perf_counter() - start)
    envs.close()
    print(
        f"batched: {args.num_envs} envs, {rate:.1f} dream steps/s, {len(finished)} dreams "
        f"ended, mean return {np.mean(finished) if finished else 0.0:.2f}, obs {obs.shape} "
        f"{obs.dtype}"
    )

    # 2. one env per subprocess worker
    if args.workers:
        workers = gym.vector.AsyncVectorEnv(
            [lambda: gym.make(env_id, **kwargs) for _ in range(args.workers)]
        )
        obs, _ = workers.reset(seed=0)
        for _ in range(5):
            obs, rew, term, trunc, info = workers.step(workers.action_space.sample())
        workers.close()
        print(f"subprocess workers: {args.workers} envs stepped, obs {obs.shape} {obs.dtype}")


if __name__ == "__main__":
    main()
