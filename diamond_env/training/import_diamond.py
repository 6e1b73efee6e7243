"""``diamond-env import-diamond``: DIAMOND's trained agents as dream environments.

DIAMOND publishes a trained agent (denoiser + reward/end model + actor-critic) for each Atari 100k
game (``atari_100k/models/<Game>.pt`` in its Hugging Face repository, downloaded by the user; nothing
downloads at run time). :func:`import_diamond` converts one into

* ``<out>/world_model/``: our checkpoint directory (safetensors + config.json), with a bank of real
  starting contexts played in the real game by our own ALE env, and
* ``<out>/agent/``: DIAMOND's actor-critic as an agent directory that ``diamond-env evaluate`` plays.

The starting contexts come from ``context_steps`` real steps played by the imported actor-critic
itself (sampling its policy, ε = 0.01, as DIAMOND collects), or by a uniform random policy with
``context_policy="random"``; ``num_contexts`` windows of 4 frames are kept, inside one life each.
The ``.pt`` file is read with ``torch.load(weights_only=True)``: no code is unpickled.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from diamond_env.atari import action_meanings, canonical_game, make_atari_env
from diamond_env.config import Config, get_preset
from diamond_env.data.collect import Collector, RandomPolicy, open_game_dataset
from diamond_env.evaluation.real_game import ActorCriticPolicy
from diamond_env.models.actor_critic import ActorCritic
from diamond_env.run.checkpoint import atomic_write_json
from diamond_env.training.wm_trainer import build_context_bank
from diamond_env.world_model.diamond_format import convert, load_into, read_diamond_checkpoint
from diamond_env.world_model.model import ContextBank, WorldModel


@dataclass(frozen=True)
class ImportResult:
    """Where :func:`import_diamond` wrote the world model and the agent."""

    world_model: Path
    agent: Path
    config: Config
    num_contexts: int


def import_diamond(
    checkpoint: str | os.PathLike[str],
    game: str,
    out: str | os.PathLike[str],
    *,
    context_steps: int = 2_000,
    num_contexts: int = 256,
    context_policy: Literal["agent", "random"] = "agent",
    seed: int = 0,
    progress: bool = True,
    force: bool = False,
) -> ImportResult:
    """Convert DIAMOND's agent file ``checkpoint`` for ``game`` into ``out`` (see the module doc).

    Raises ``FileNotFoundError`` for a missing file, ``FileExistsError`` when ``out`` already
    holds an import or a model (unless ``force``), and ``ValueError`` naming what was expected
    for a file that is not a DIAMOND agent state dict, missing or extra keys, shapes that fit no
    config, weights that are not finite floating point, or an action count other than
    ``game``'s minimal action set. Everything is checked before ``out`` is written.
    """
    if context_policy not in ("agent", "random"):
        raise ValueError(f"context_policy: expected 'agent' or 'random', got {context_policy!r}")
    if context_steps < 4 or num_contexts < 1:
        raise ValueError(
            f"context_steps >= 4 and num_contexts >= 1 expected, got {context_steps} and "
            f"{num_contexts}"
        )
    game = canonical_game(game)
    meanings = action_meanings(game)
    source = Path(checkpoint)
    out_dir = Path(out)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"out: {out_dir} exists and is not a directory")
    taken = [name for name in ("world_model", "agent", "import.json") if (out_dir / name).exists()]
    if taken and not force:
        raise FileExistsError(
            f"out: {out_dir} already holds {', '.join(taken)}; choose a new --out or pass --force "
            "to replace them"
        )
    ckpt = convert(read_diamond_checkpoint(source), where=str(source))
    if ckpt.num_actions != len(meanings):
        raise ValueError(
            f"{source}: a model with {ckpt.num_actions} actions, but {game} has "
            f"{len(meanings)} ({', '.join(meanings)}); is it another game's file?"
        )
    paper = get_preset("paper")
    config = replace(
        paper,
        denoiser=ckpt.denoiser_config,
        rew_end=ckpt.rew_end_config,
        actor_critic=ckpt.actor_critic_config,
    )
    if config != paper:
        config = replace(config, preset="diamond")
    wm = WorldModel(config, game, meanings)
    load_into(wm.denoiser, ckpt.denoiser, f"{source}: denoiser")
    load_into(wm.rew_end, ckpt.rew_end, f"{source}: rew_end_model")
    ac = ActorCritic(ckpt.actor_critic_config, ckpt.num_actions)
    load_into(ac, ckpt.actor_critic, f"{source}: actor_critic")

    out_dir.mkdir(parents=True, exist_ok=True)
    wm.contexts = _real_contexts(
        game,
        ac,
        context_policy,
        context_steps,
        num_contexts,
        config.denoiser.num_context,
        seed,
        progress,
    )
    wm_dir = wm.save(out_dir / "world_model")
    agent_dir = out_dir / "agent"
    ac.save(agent_dir)
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    atomic_write_json(
        agent_dir / "agent.json",
        {"kind": "actor_critic", "game": game, "source": "DIAMOND", "sha256": digest},
    )
    atomic_write_json(
        out_dir / "import.json",
        {
            "source_file": source.name,
            "source_sha256": digest,
            "game": game,
            "preset": config.preset,
            "context_policy": context_policy,
            "context_steps": context_steps,
            "num_contexts": len(wm.contexts),
            "seed": seed,
        },
    )
    return ImportResult(wm_dir, agent_dir, config, len(wm.contexts))


def _real_contexts(
    game: str,
    ac: ActorCritic,
    policy_name: str,
    steps: int,
    num_contexts: int,
    num_context: int,
    seed: int,
    progress: bool,
) -> ContextBank:
    """Play ``steps`` real steps and draw ``num_contexts`` starting windows from them."""
    scratch = Path(tempfile.mkdtemp(prefix="diamond-import-"))
    try:
        dataset = open_game_dataset(scratch / "dataset", game)
        env = make_atari_env(game, 1, train=True)
        try:
            collector = Collector(env, dataset, seed=seed)
            if policy_name == "agent":
                with torch.no_grad():
                    policy = ActorCriticPolicy(ac, seed=seed)
                    collector.collect(policy, steps=steps, epsilon=0.01, progress=progress)
            else:
                policy_random = RandomPolicy(dataset.num_actions, seed=seed)
                collector.collect(policy_random, steps=steps, progress=progress)
        finally:
            env.close()
        data = dataset.load_all()
        return build_context_bank(data, num_contexts, num_context, np.random.default_rng(seed))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
