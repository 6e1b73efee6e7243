"""A tiny deterministic stand-in for :class:`diamond_env.world_model.model.WorldModel`.

It speaks the same interface (``config``, ``game``, ``action_meanings``, ``num_actions``,
``contexts``, ``burn_in``, ``step``, ``device``) with rules simple enough to compute by hand.
Frames are described by their uint8 *level*; every frame is a constant image except the
``MARKER`` pixel, which records the sampler noise so seeding is visible:

- context ``k`` of the bank: frame ``l`` has level ``CONTEXT_STRIDE * k + l``, actions
  ``(k + l) % num_actions``;
- next frame: level ``(level(last frame) + 1 + action) % 256``; marker pixel (all channels) at
  level ``clamp(round(128 + 40 * noise[:, 0, 0, 0]), 0, 255)``;
- reward: ``REWARDS[action]`` (NOOP 0, FIRE +1, RIGHT -1, LEFT 0);
- the LSTM state ``(h, c)`` has width 2; ``h[:, 0]`` counts steps since the burn-in, and the
  step that makes it ``terminate_after`` is a termination (as is ``terminate_action``, if set).

Counters (``burn_in_calls``, ``burn_in_rows``, ``step_calls``) and the last ``sampler`` and
``reward_mode`` received let tests see what the simulator asked for; ``emit_nan = True`` makes
the next ``step`` return a NaN frame.
"""

from __future__ import annotations

import torch
from torch import nn

from diamond_env.config import Config, SamplerConfig, get_preset
from diamond_env.world_model.model import ContextBank, WorldModelStep

MEANINGS = ["NOOP", "FIRE", "RIGHT", "LEFT"]
REWARDS = (0.0, 1.0, -1.0, 0.0)
CONTEXT_STRIDE = 10
NUM_CONTEXT = 4
MARKER = (0, 0)  # (row, column) of the noise marker pixel


def level(frames: torch.Tensor) -> torch.Tensor:
    """The constant level of float frames ``(..., 3, H, W)`` in [-1, 1] (read at pixel (1, 1))."""
    return ((frames[..., 0, 1, 1] + 1.0) * 127.5).round().long()


def marker_level(noise_value: float) -> int:
    """The marker level the fake writes for a first noise value."""
    return int(min(max(round(128.0 + 40.0 * noise_value), 0), 255))


def make_bank(num_contexts: int = 5, num_actions: int = 4) -> ContextBank:
    """Contexts whose frame ``l`` of context ``k`` has level ``CONTEXT_STRIDE * k + l``."""
    k = torch.arange(num_contexts)[:, None]
    steps = torch.arange(NUM_CONTEXT)[None, :]
    levels = (CONTEXT_STRIDE * k + steps).to(torch.uint8)
    obs = levels[:, :, None, None, None].expand(num_contexts, NUM_CONTEXT, 64, 64, 3).clone()
    return ContextBank(obs=obs, act=((k + steps) % num_actions).to(torch.int64))


class FakeWorldModel(nn.Module):
    """Deterministic world model following the rules in the module docstring."""

    def __init__(
        self,
        game: str = "Breakout",
        num_contexts: int = 5,
        terminate_after: int = 4,
        terminate_action: int | None = None,
    ) -> None:
        super().__init__()
        self.config: Config = get_preset("tiny")
        self.game = game
        self.action_meanings = list(MEANINGS)
        self.num_actions = len(MEANINGS)
        self.contexts = make_bank(num_contexts, self.num_actions)
        self.terminate_after = terminate_after
        self.terminate_action = terminate_action
        self.register_buffer("_rewards", torch.tensor(REWARDS))
        self.burn_in_calls = 0
        self.burn_in_rows = 0
        self.step_calls = 0
        self.last_sampler: SamplerConfig | None = None
        self.last_reward_mode: str | None = None
        self.emit_nan = False

    @property
    def device(self) -> torch.device:
        return self._rewards.device

    def burn_in(self, obs: torch.Tensor, act: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if (
            obs.ndim != 5
            or obs.shape[1:] != (NUM_CONTEXT, 3, 64, 64)
            or not obs.is_floating_point()
        ):
            raise ValueError(f"fake burn_in: bad obs {obs.dtype} {tuple(obs.shape)}")
        if act.dtype != torch.int64 or act.shape != obs.shape[:2]:
            raise ValueError(f"fake burn_in: bad act {act.dtype} {tuple(act.shape)}")
        self.burn_in_calls += 1
        self.burn_in_rows += obs.shape[0]
        zeros = obs.new_zeros((obs.shape[0], 2))
        return zeros, zeros.clone()

    def step(
        self,
        obs: torch.Tensor,
        act: torch.Tensor,
        state: tuple[torch.Tensor, torch.Tensor],
        *,
        noise: torch.Tensor | None = None,
        uniforms: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        sampler: SamplerConfig | None = None,
        reward_mode: str = "sample",
    ) -> WorldModelStep:
        n = obs.shape[0]
        if noise is None or uniforms is None:
            raise ValueError("fake step: the simulator must pass noise and uniforms")
        if noise.shape != (n, 3, 64, 64) or uniforms.shape != (n, 2):
            raise ValueError(f"fake step: bad noise/uniforms {noise.shape} {uniforms.shape}")
        if act.dtype != torch.int64 or act.shape != obs.shape[:2]:
            raise ValueError(f"fake step: bad act {act.dtype} {tuple(act.shape)}")
        self.step_calls += 1
        self.last_sampler = sampler
        self.last_reward_mode = reward_mode
        action = act[:, -1]
        new_level = (level(obs[:, -1]) + 1 + action) % 256
        frame = (new_level.float() / 127.5 - 1.0)[:, None, None, None].expand(n, 3, 64, 64)
        frame = frame.clone()
        mark = (128.0 + 40.0 * noise[:, 0, 0, 0]).round().clamp(0, 255) / 127.5 - 1.0
        frame[:, :, MARKER[0], MARKER[1]] = mark[:, None]
        if self.emit_nan:
            frame[0, 0, 5, 5] = float("nan")
        count = state[0][:, 0] + 1
        termination = count >= self.terminate_after
        if self.terminate_action is not None:
            termination |= action == self.terminate_action
        h = state[0].clone()
        h[:, 0] = count
        return WorldModelStep(frame, self._rewards[action], termination, (h, state[1].clone()))


def set_constant_head(rew_end: torch.nn.Module, probs: list[float]) -> None:
    """Make a reward/end model give the same 5 probabilities for every input."""
    rew_end.set_constant_logits(torch.tensor(probs).log().tolist())  # type: ignore[operator]
