"""How far dreams drift apart across fast paths and torch thread counts, same seed and actions.

    python benchmarks/fastpath_tolerance.py CHECKPOINT [--steps 150 --num-envs 8]

The reference is the plain path on 1 thread; each other setting prints the first step whose
frames differ, the largest difference (of 255 levels) per step, the share of differing values
and whether the rewards were equal.
"""

from __future__ import annotations

import argparse

import gymnasium as gym
import numpy as np
import torch

import diamond_env  # noqa: F401  (registers DiamondDream-<Game>-v0)


def rollout(
    checkpoint: str, fastpath: str, threads: int, steps: int, num_envs: int
) -> tuple[np.ndarray, np.ndarray]:
    torch.set_num_threads(threads)
    env = gym.make_vec(
        "DiamondDream-Breakout-v0",
        num_envs=num_envs,
        checkpoint=checkpoint,
        fastpath=fastpath,
        horizon=10**6,
    )
    obs, _ = env.reset(seed=0)
    rng = np.random.default_rng(0)
    frames, rewards = [obs], []
    for _ in range(steps):
        obs, rew, *_ = env.step(rng.integers(0, env.single_action_space.n, num_envs))
        frames.append(obs)
        rewards.append(rew)
    env.close()
    return np.stack(frames).astype(int), np.stack(rewards)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint")
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--num-envs", type=int, default=8)
    args = p.parse_args()
    ref, ref_rew = rollout(args.checkpoint, "plain", 1, args.steps, args.num_envs)
    for fastpath, threads in (("plain", 2), ("auto", 1), ("auto", 2)):
        frames, rewards = rollout(args.checkpoint, fastpath, threads, args.steps, args.num_envs)
        diff = np.abs(frames - ref)
        per_step = diff.reshape(len(diff), -1).max(axis=1)
        first = int(np.argmax(per_step > 0)) if per_step.any() else None
        print(
            f"{fastpath} on {threads} threads: first differing step {first}, largest difference "
            f"per step {per_step.tolist()}, share of differing values {(diff > 0).mean():.2e}, "
            f"rewards equal {bool((rewards == ref_rew).all())}",
            flush=True,
        )


if __name__ == "__main__":
    main()
