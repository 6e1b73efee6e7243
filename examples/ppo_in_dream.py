"""Train stable-baselines3 PPO inside a DIAMOND dream, then play the REAL game with it.

    python examples/ppo_in_dream.py --checkpoint runs/Breakout/world_model --steps 20000

Every frame, reward and episode end PPO sees while training comes from the world model; the
real game (ALE) is only used at the end, to score the agent against a random policy. The agent
directory written to --out plays again with ``diamond-env evaluate --agent OUT``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import VecFrameStack

import diamond_env  # registers DiamondDream-<Game>-v0
from diamond_env.dream.sb3 import make_sb3_env
from diamond_env.evaluation.agent_files import save_sb3_agent
from diamond_env.evaluation.real_game import EvalResult, RandomPolicy, SB3Policy, evaluate
from diamond_env.run.paths import default_run_dir, resolve_checkpoint

N_STACK = 4


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--checkpoint",
        default=None,
        help="world-model checkpoint directory (default: runs/<Game>/world_model)",
    )
    p.add_argument("--game", default="Breakout")
    p.add_argument("--num-envs", type=int, default=8, help="parallel dream envs (one model)")
    p.add_argument("--steps", type=int, default=20_000, help="dream env steps to train on")
    p.add_argument(
        "--horizon",
        type=int,
        default=15,
        help="dream episodes are truncated after this many steps (DIAMOND: 15)",
    )
    p.add_argument("--eval-episodes", type=int, default=5, help="full real games per policy")
    p.add_argument(
        "--deterministic",
        action="store_true",
        help="argmax actions in the real game (default: sample, as DIAMOND does)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--out", default=None, help="agent directory to write (default: runs/<Game>/ppo_in_dream)"
    )
    return p.parse_args()


def score_line(name: str, result: EvalResult) -> str:
    hns = "n/a" if result.hns is None else f"{result.hns:.3f}"
    return f"  {name:<20} return {result.mean:7.1f} ± {result.std:5.1f}   human-normalised {hns}"


def main() -> None:
    args = parse_args()
    checkpoint = resolve_checkpoint(args.game, args.checkpoint)
    out = Path(args.out or default_run_dir(args.game) / "ppo_in_dream")

    # 1. The dream: num_envs games imagined by one world model, 4 frames stacked for the CNN.
    venv = make_sb3_env(
        diamond_env.env_id(args.game),
        num_envs=args.num_envs,
        checkpoint=checkpoint,
        horizon=args.horizon,
    )
    dream = VecFrameStack(venv, n_stack=N_STACK)
    dream.seed(args.seed)

    # 2. PPO with Atari-style settings (rl-baselines3-zoo), rollouts shortened for small budgets.
    n_steps = min(128, max(8, args.steps // args.num_envs))
    model = PPO(
        "CnnPolicy",
        dream,
        n_steps=n_steps,
        batch_size=min(256, n_steps * args.num_envs),
        n_epochs=4,
        learning_rate=2.5e-4,
        clip_range=0.1,
        ent_coef=0.01,
        seed=args.seed,
        verbose=0,
    )
    model.learn(total_timesteps=args.steps)
    dream_returns = [float(ep["r"]) for ep in model.ep_info_buffer or []]
    if dream_returns:
        print(
            f"dream: {model.num_timesteps} steps, last {len(dream_returns)} dream episodes "
            f"returned {np.mean(dream_returns):.2f} on average"
        )
    dream.close()

    # 3. An agent directory that load_agent / `diamond-env evaluate --agent` understand.
    #    The policy goes in as safetensors + JSON (loading it unpickles nothing); SB3's own
    #    model.zip is written beside it for PPO.load.
    save_sb3_agent(
        model,
        out,
        {
            "n_stack": N_STACK,
            "game": args.game,
            "deterministic": args.deterministic,
            "world_model": str(checkpoint),
        },
    )
    print(f"saved agent: {out}")

    # 4. The real game: full games, same seeds for both policies.
    agent = SB3Policy(model, n_stack=N_STACK, deterministic=args.deterministic, seed=args.seed)
    ppo = evaluate(agent, args.game, args.eval_episodes, seed=args.seed, progress=False)
    random = evaluate(
        RandomPolicy(agent.num_actions, seed=args.seed),
        args.game,
        args.eval_episodes,
        seed=args.seed,
        progress=False,
    )
    print(f"real {args.game}, {args.eval_episodes} full games each:")
    print(score_line("PPO (dream-trained)", ppo))
    print(score_line("random policy", random))


if __name__ == "__main__":
    main()
