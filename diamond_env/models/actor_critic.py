"""DIAMOND's recurrent actor-critic (docs/method.md §4): a small conv encoder, an LSTM cell, two linear heads.

Observations enter as float ``(B, 3, 64, 64)`` in [-1, 1] (see :func:`diamond_env.frames.to_model`).
The recurrent state ``(h, c)`` is passed in and returned explicitly, each float32
``(B, lstm_dim)``; nothing is stored on the module.

Artifact: :meth:`ActorCritic.save` writes ``actor_critic.safetensors`` (weights) and
``actor_critic.json`` (config and number of actions) into a directory; :meth:`ActorCritic.load`
rebuilds the model from those two files alone. Nothing is ever unpickled.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from diamond_env.config import IMG_SIZE, ActorCriticConfig
from diamond_env.frames import to_model
from diamond_env.models.blocks import init_lstm
from diamond_env.run.checkpoint import atomic_write, file_sha256, read_tensors, resolve_device
from diamond_env.run.safe_io import (
    MAX_LEVELS,
    MAX_WIDTH,
    InputError,
    building_on_meta,
    check_int,
    check_param_budget,
    check_weights,
    on_meta,
    read_json,
)

State = tuple[torch.Tensor, torch.Tensor]
"""LSTM state ``(h, c)``, each float32 ``(B, lstm_dim)``."""

GROUP_SIZE = 32
"""Channels per group in the encoder's group norms; fewer than 32 channels give one group."""

FORMAT_NAME = "diamond_env.actor_critic"
FORMAT_VERSION = 1
WEIGHTS_FILE = "actor_critic.safetensors"
CONFIG_FILE = "actor_critic.json"


class SmallResBlock(nn.Module):
    """``skip(x) + conv3x3(SiLU(GN(x)))``; the skip is a 1x1 conv when the channel count changes.

    Group norm uses ``max(1, channels // 32)`` groups, so small presets (8 or 16 channels)
    normalise over all channels of a sample at once (one group), as in a layer norm.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(max(1, in_channels // GROUP_SIZE), in_channels)
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
        self.skip: nn.Module = (
            nn.Conv2d(in_channels, out_channels, kernel_size=1)
            if in_channels != out_channels
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_channels, H, W) -> (B, out_channels, H, W)."""
        return self.skip(x) + self.conv(F.silu(self.norm(x)))


class ActorCritic(nn.Module):
    """Conv encoder -> LSTMCell -> policy logits and value, for ``num_actions`` discrete actions.

    Encoder: conv3x3 ``img_channels -> channels[0]``, then one :class:`SmallResBlock` and a 2x2
    max-pool per entry of ``config.channels``; 64x64 frames end as ``channels[-1] x 4 x 4`` for
    four stages. Both heads start at zero (uniform policy, zero value).
    """

    def __init__(self, config: ActorCriticConfig, num_actions: int) -> None:
        super().__init__()
        _validate_config(config, num_actions)
        if not building_on_meta():
            check_param_budget([lambda: ActorCritic(config, num_actions)], "actor-critic")
        self.config = config
        self.num_actions = num_actions
        chans = config.channels
        layers: list[nn.Module] = [nn.Conv2d(config.img_channels, chans[0], 3, padding=1)]
        for c_in, c_out in zip((chans[0], *chans[:-1]), chans, strict=True):
            layers += [SmallResBlock(c_in, c_out), nn.MaxPool2d(2)]
        self.encoder = nn.Sequential(*layers)
        side = IMG_SIZE // 2 ** len(chans)
        self.lstm = nn.LSTMCell(chans[-1] * side * side, config.lstm_dim)
        self.policy_head = nn.Linear(config.lstm_dim, num_actions)
        self.value_head = nn.Linear(config.lstm_dim, 1)
        for head in (self.policy_head, self.value_head):
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)
        init_lstm(self.lstm)

    @property
    def device(self) -> torch.device:
        """Device of the parameters."""
        return self.policy_head.weight.device

    def initial_state(self, batch: int, device: torch.device | str | None = None) -> State:
        """Zero LSTM state ``(h, c)``, each float32 ``(batch, lstm_dim)`` on ``device``
        (default: the model's device)."""
        if not isinstance(batch, int) or batch < 1:
            raise ValueError(f"batch: expected a positive int, got {batch!r}")
        dev = self.device if device is None else torch.device(device)
        h = torch.zeros(batch, self.config.lstm_dim, device=dev)
        return h, torch.zeros_like(h)

    def forward(
        self, obs: torch.Tensor, state: State | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, State]:
        """One step. ``obs`` float ``(B, 3, 64, 64)`` in [-1, 1]; ``state`` ``(h, c)`` or None
        (zeros). Returns logits float ``(B, A)``, value float ``(B,)`` and the new state."""
        self._check_obs(obs, "obs")
        if state is None:
            state = self.initial_state(obs.shape[0], obs.device)
        self._check_state(state, obs.shape[0])
        features = self.encoder(obs).flatten(start_dim=1)
        h, c = self.lstm(features, state)
        return self.policy_head(h), self.value_head(h).squeeze(-1), (h, c)

    def burn_in(
        self,
        obs: torch.Tensor,
        state: State | None = None,
        mask: torch.Tensor | None = None,
    ) -> State:
        """Run the LSTM over context frames and return the state after the last one.

        ``obs`` float ``(B, L, 3, 64, 64)`` in [-1, 1]; ``state`` the state before the first frame
        (None: zeros); ``mask`` bool ``(B, L)``, False where a frame is padding (e.g. before an
        episode starts): there the row's state is carried over unchanged. Equivalent to calling
        :meth:`forward` frame by frame, but the encoder runs once over all ``B*L`` frames.
        Gradients flow; wrap the call in ``torch.no_grad()`` when none are wanted.
        """
        if obs.dim() != 5:
            raise ValueError(f"obs: expected shape (B, L, C, H, W), got {tuple(obs.shape)}")
        b, seq_len = obs.shape[:2]
        if mask is not None and (mask.shape != (b, seq_len) or mask.dtype != torch.bool):
            raise ValueError(
                f"mask: expected bool of shape {(b, seq_len)}, got {mask.dtype} {tuple(mask.shape)}"
            )
        if state is None:
            state = self.initial_state(b, obs.device)
        self._check_state(state, b)
        if seq_len == 0:
            return state
        flat = obs.flatten(0, 1)
        self._check_obs(flat, "obs")
        features = self.encoder(flat).flatten(start_dim=1).unflatten(0, (b, seq_len))
        h, c = state
        for t in range(seq_len):
            h_new, c_new = self.lstm(features[:, t], (h, c))
            if mask is None:
                h, c = h_new, c_new
            else:
                keep = mask[:, t, None]
                h, c = torch.where(keep, h_new, h), torch.where(keep, c_new, c)
        return h, c

    @torch.no_grad()
    def act(
        self,
        obs: torch.Tensor | np.ndarray,
        state: State | None = None,
        *,
        deterministic: bool = False,
        epsilon: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, State]:
        """Choose actions without gradients (collection and evaluation).

        ``obs``: uint8 ``(B, 64, 64, 3)`` in [0, 255] (tensor or NumPy array, as the envs serve
        it) or float ``(B, 3, 64, 64)`` in [-1, 1]; moved to the model's device. The action is
        sampled from the policy (``deterministic``: argmax), then with probability ``epsilon``
        replaced by a uniform random action. ``generator`` (on the model's device) makes the
        draws reproducible. Returns actions int64 ``(B,)`` and the new state.
        """
        if not 0.0 <= epsilon <= 1.0:
            raise ValueError(f"epsilon: expected a float in [0, 1], got {epsilon}")
        x = torch.as_tensor(obs, device=self.device)
        x = to_model(x) if x.dtype == torch.uint8 else x.float()
        logits, _, state = self(x, state)
        if deterministic:
            actions = logits.argmax(dim=-1)
        else:
            actions = torch.multinomial(logits.softmax(dim=-1), 1, generator=generator).squeeze(-1)
        if epsilon > 0.0:
            b = actions.shape[0]
            explore = torch.rand(b, device=actions.device, generator=generator) < epsilon
            random_actions = torch.randint(
                self.num_actions, (b,), device=actions.device, generator=generator
            )
            actions = torch.where(explore, random_actions, actions)
        return actions, state

    @staticmethod
    def reset_state(state: State, mask: torch.Tensor) -> State:
        """Return ``state`` with the rows where ``mask`` (bool ``(B,)``) is True set to zero,
        e.g. the envs whose episode just restarted. The input tensors are not modified."""
        h, c = state
        if mask.shape != (h.shape[0],) or mask.dtype != torch.bool:
            raise ValueError(
                f"mask: expected bool of shape ({h.shape[0]},), got {mask.dtype} {tuple(mask.shape)}"
            )
        reset = mask.to(h.device)[:, None]
        return torch.where(reset, 0.0, h), torch.where(reset, 0.0, c)

    def save(self, directory: str | os.PathLike[str]) -> None:
        """Write ``actor_critic.safetensors`` and ``actor_critic.json`` into ``directory``
        (created if needed), each atomically (temp file + rename)."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        meta = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "num_actions": self.num_actions,
            "config": dataclasses.asdict(self.config),
        }
        text = json.dumps(meta, indent=2)
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        atomic_write(
            out / WEIGHTS_FILE, lambda p: save_file(tensors, str(p), metadata={"config": text})
        )
        meta["sha256"] = file_sha256(out / WEIGHTS_FILE)  # loading requires it
        text = json.dumps(meta, indent=2)
        atomic_write(out / CONFIG_FILE, lambda p: p.write_text(text + "\n"))

    @classmethod
    def load(
        cls, directory: str | os.PathLike[str], device: torch.device | str = "cpu"
    ) -> ActorCritic:
        """Rebuild a model written by :meth:`save`. Raises ``FileNotFoundError`` naming a missing
        file and ``ValueError`` naming a corrupt or mismatching one."""
        config_path = Path(directory) / CONFIG_FILE
        weights_path = Path(directory) / WEIGHTS_FILE
        device = resolve_device(device)
        config, num_actions, digest = _read_config(config_path)
        skeleton = on_meta(lambda: cls(config, num_actions))  # shapes, no memory
        if not weights_path.is_file():
            raise FileNotFoundError(f"actor-critic weights not found: {weights_path}")
        tensors = read_tensors(weights_path, digest)
        _check_tensors(skeleton.state_dict(), tensors, weights_path)
        check_weights(skeleton.state_dict(), tensors, str(weights_path))
        model = cls(config, num_actions)
        model.load_state_dict(tensors)
        return model.to(device)

    def _check_obs(self, obs: torch.Tensor, name: str) -> None:
        expected = (self.config.img_channels, IMG_SIZE, IMG_SIZE)
        if obs.dim() != 4 or tuple(obs.shape[1:]) != expected:
            raise ValueError(
                f"{name}: expected shape (B, {', '.join(map(str, expected))}), "
                f"got {tuple(obs.shape)}"
            )
        if not obs.is_floating_point():
            raise TypeError(f"{name}: expected a float tensor in [-1, 1], got {obs.dtype}")

    def _check_state(self, state: State, batch: int) -> None:
        expected = (batch, self.config.lstm_dim)
        if len(state) != 2 or any(tuple(s.shape) != expected for s in state):
            shapes = [tuple(s.shape) for s in state]
            raise ValueError(f"state: expected (h, c) each of shape {expected}, got {shapes}")


def _validate_config(config: ActorCriticConfig, num_actions: int) -> None:
    if not isinstance(config, ActorCriticConfig):
        raise TypeError(f"config: expected ActorCriticConfig, got {type(config).__name__}")
    if isinstance(num_actions, bool) or not isinstance(num_actions, int) or num_actions < 1:
        raise ValueError(f"num_actions: expected a positive int, got {num_actions!r}")
    chans = config.channels
    if not chans or any(not isinstance(c, int) or c < 1 for c in chans):
        raise ValueError(f"config.channels: expected positive ints, got {chans!r}")
    if len(chans) > MAX_LEVELS or max(chans) > MAX_WIDTH:
        raise InputError(
            f"config.channels: at most {MAX_LEVELS} stages of at most {MAX_WIDTH} "
            f"channels, got {chans!r}"
        )
    check_int(config.lstm_dim, "config.lstm_dim", 1, MAX_WIDTH)
    check_int(config.img_channels, "config.img_channels", 1, 64)
    check_int(num_actions, "num_actions", 1, MAX_WIDTH)
    if IMG_SIZE % 2 ** len(chans) != 0:
        raise ValueError(
            f"config.channels: {len(chans)} stages do not divide the {IMG_SIZE}-pixel frame"
        )
    if config.lstm_dim < 1 or config.img_channels < 1:
        raise ValueError(
            f"config: expected positive lstm_dim and img_channels, got {config.lstm_dim} "
            f"and {config.img_channels}"
        )


def _read_config(path: Path) -> tuple[ActorCriticConfig, int, str]:
    if not path.is_file():
        raise FileNotFoundError(
            f"actor-critic config not found: {path} (ActorCritic.save(directory) writes it)"
        )
    meta = read_json(path)
    if meta.get("format") != FORMAT_NAME:
        raise ValueError(f"{path}: expected an object with format={FORMAT_NAME!r}")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{path}: expected format_version {FORMAT_VERSION}, got {meta.get('format_version')!r}"
        )
    fields = {f.name for f in dataclasses.fields(ActorCriticConfig)}
    raw = meta.get("config")
    if not isinstance(raw, dict) or set(raw) != fields:
        got = sorted(raw) if isinstance(raw, dict) else raw
        raise ValueError(f"{path}: config: expected keys {sorted(fields)}, got {got}")
    kwargs: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()}
    num_actions: Any = meta.get("num_actions")
    try:
        config = ActorCriticConfig(**kwargs)
        _validate_config(config, num_actions)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path}: {err}") from err
    digest = meta.get("sha256")
    if not isinstance(digest, str) or len(digest) != 64:
        raise ValueError(
            f"{path}: no sha256 of {WEIGHTS_FILE}: it was written before diamond_env recorded "
            "digests (or edited by hand), so its weights cannot be checked; train the agent again"
        )
    return config, num_actions, digest


def _check_tensors(
    expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor], path: Path
) -> None:
    missing, unexpected = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"{path}: weights do not match the config: missing {missing}, unexpected {unexpected}"
        )
    for key, ref in expected.items():
        if found[key].shape != ref.shape or found[key].dtype != ref.dtype:
            raise ValueError(
                f"{path}: {key}: expected {ref.dtype} {tuple(ref.shape)}, "
                f"got {found[key].dtype} {tuple(found[key].shape)}"
            )
