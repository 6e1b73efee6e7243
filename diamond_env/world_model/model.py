"""The world model: denoiser + reward/termination model + sampler behind one ``step()``, and its
self-describing checkpoint directory.

Frames given to and returned by the model are float ``(..., 3, 64, 64)`` in [-1, 1]; stored
context frames are uint8 ``(..., 64, 64, 3)``. A checkpoint directory holds ``model.safetensors``
(weights), ``contexts.safetensors`` (real starting contexts) and ``config.json`` (everything needed
to rebuild the modules); nothing is pickled.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import save_file
from torch import nn

from diamond_env._version import __version__
from diamond_env.config import IMG_SIZE, Config, SamplerConfig
from diamond_env.models.denoiser import Denoiser
from diamond_env.models.rew_end import LstmState, RewEndModel
from diamond_env.models.sampler import draw_normal, next_frame
from diamond_env.run.checkpoint import file_sha256, read_tensors, resolve_device
from diamond_env.run.safe_io import (
    InputError,
    building_on_meta,
    check_param_budget,
    check_weights,
    on_meta,
    read_json,
)

FORMAT_VERSION = 2
"""Checkpoint layout version written by :meth:`WorldModel.save`; newer ones are refused, and so
are version-1 checkpoints, whose networks predate DIAMOND's attention residual and reward/end
encoder (their weights would load into a different function)."""

MODEL_FILE = "model.safetensors"
CONTEXTS_FILE = "contexts.safetensors"
CONFIG_FILE = "config.json"


@dataclass
class ContextBank:
    """Real starting contexts recorded with the checkpoint.

    ``obs`` uint8 (K, L, 64, 64, 3); ``act`` int64 (K, L), where ``act[:, i]`` is the action taken
    at ``obs[:, i]``. Kept on the CPU.
    """

    obs: torch.Tensor
    act: torch.Tensor

    def __len__(self) -> int:
        return int(self.obs.shape[0])

    @classmethod
    def empty(cls, num_context: int, img_size: int = IMG_SIZE) -> ContextBank:
        """A bank with no contexts."""
        return cls(
            obs=torch.zeros((0, num_context, img_size, img_size, 3), dtype=torch.uint8),
            act=torch.zeros((0, num_context), dtype=torch.int64),
        )

    def validate(self, num_context: int, num_actions: int, img_size: int = IMG_SIZE) -> None:
        """Raise ``TypeError``/``ValueError`` unless dtypes, shapes and action range are right."""
        if self.obs.dtype != torch.uint8 or self.act.dtype != torch.int64:
            raise TypeError(
                f"contexts: expected obs uint8 and act int64, got {self.obs.dtype} and "
                f"{self.act.dtype}"
            )
        k = self.obs.shape[0] if self.obs.ndim == 5 else -1
        if tuple(self.obs.shape) != (k, num_context, img_size, img_size, 3):
            raise ValueError(
                f"contexts.obs: expected shape (K, {num_context}, {img_size}, {img_size}, 3), got "
                f"{tuple(self.obs.shape)}"
            )
        if tuple(self.act.shape) != (k, num_context):
            raise ValueError(
                f"contexts.act: expected shape ({k}, {num_context}), got {tuple(self.act.shape)}"
            )
        if k > 0 and (int(self.act.min()) < 0 or int(self.act.max()) >= num_actions):
            raise ValueError(
                f"contexts.act: expected actions in [0, {num_actions}), got range "
                f"[{int(self.act.min())}, {int(self.act.max())}]"
            )


@dataclass(frozen=True)
class WorldModelStep:
    """One imagined transition for N environments.

    ``next_obs`` float (N, 3, H, W) in [-1, 1] on the 256 uint8 levels; ``reward`` float32 (N,);
    ``termination`` bool (N,); ``state`` the reward/end LSTM state after the transition.
    """

    next_obs: torch.Tensor
    reward: torch.Tensor
    termination: torch.Tensor
    state: LstmState


def check_world_model_sizes(
    config: Config, num_actions: int = 18, where: str = "world model"
) -> None:
    """Refuse (``InputError``) a config whose networks exceed the size limits of
    :mod:`diamond_env.run.safe_io`, counted on the meta device (nothing is allocated); 18 actions is
    the full Atari action set."""
    check_param_budget(
        [
            lambda: Denoiser(config.denoiser, num_actions),
            lambda: RewEndModel(config.rew_end, num_actions),
        ],
        where,
    )


class WorldModel(nn.Module):
    """Denoiser + reward/termination model + sampler settings for one game."""

    def __init__(
        self,
        config: Config,
        game: str,
        action_meanings: Sequence[str],
        contexts: ContextBank | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(game, str) or not game:
            raise ValueError(f"game: expected a non-empty str, got {game!r}")
        meanings = list(action_meanings)
        if not meanings or not all(isinstance(m, str) for m in meanings):
            raise ValueError(f"action_meanings: expected a non-empty list of str, got {meanings!r}")
        if config.sampler.context_noise > 0.0 and not config.denoiser.context_noise:
            raise ValueError(
                "sampler.context_noise > 0 needs denoiser.context_noise (a denoiser trained "
                "on noised contexts)"
            )
        self.config = config
        self.game = game
        self.env: dict[str, Any] | None = None
        """The Gymnasium env this models when it is not an ALE game (:class:`~diamond_env.
        real_env.EnvSpec` as a dict, saved in ``config.json``); None for ALE games."""
        self.action_meanings = meanings
        self.num_actions = len(meanings)
        self.num_context = config.denoiser.num_context
        self.sampler_config: SamplerConfig = config.sampler
        if not building_on_meta():  # count on the meta device before allocating anything
            check_world_model_sizes(config, len(meanings), f"world model of {game}")
        self.denoiser = Denoiser(config.denoiser, self.num_actions)
        self.rew_end = RewEndModel(config.rew_end, self.num_actions)
        bank = contexts if contexts is not None else ContextBank.empty(self.num_context)
        bank.validate(self.num_context, self.num_actions)
        self.contexts = bank
        self.fastpath: Any = None
        """The :class:`~diamond_env.world_model.fastpath.FastPathOptions` a prepared copy runs with
        (:func:`~diamond_env.world_model.fastpath.prepare_world_model`); None: the plain model."""

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def _check_obs_act(self, obs: torch.Tensor, act: torch.Tensor) -> None:
        expected = (self.num_context, self.config.denoiser.img_channels, IMG_SIZE, IMG_SIZE)
        if obs.ndim != 5 or tuple(obs.shape[1:]) != expected:
            raise ValueError(
                f"obs: expected shape (N, {', '.join(map(str, expected))}), got {tuple(obs.shape)}"
            )
        if not obs.is_floating_point():
            raise TypeError(f"obs: expected a float tensor in [-1, 1], got {obs.dtype}")
        if act.dtype != torch.int64 or tuple(act.shape) != tuple(obs.shape[:2]):
            raise ValueError(
                f"act: expected int64 of shape {tuple(obs.shape[:2])}, got {act.dtype} "
                f"{tuple(act.shape)}"
            )

    @torch.no_grad()
    def burn_in(self, obs: torch.Tensor, act: torch.Tensor) -> LstmState:
        """LSTM state after the L-1 real transitions inside a context.

        ``obs`` (N, L, 3, H, W) float in [-1, 1], ``act`` (N, L) int64. Runs the reward/end model
        on ``(obs[:, :-1], act[:, :-1], obs[:, 1:])``; returns ``(h, c)``, each (N, lstm_dim).
        """
        self._check_obs_act(obs, act)
        if obs.shape[1] < 2:
            zeros = obs.new_zeros((obs.shape[0], self.config.rew_end.lstm_dim))
            return zeros, zeros.clone()
        _, _, state = self.rew_end(obs[:, :-1], act[:, :-1], obs[:, 1:])
        return state

    @torch.no_grad()
    def step(
        self,
        obs: torch.Tensor,
        act: torch.Tensor,
        state: LstmState | None,
        *,
        noise: torch.Tensor | None = None,
        uniforms: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        sampler: SamplerConfig | None = None,
        reward_mode: Literal["sample", "mean"] = "sample",
        denoise_fn: Callable[..., torch.Tensor] | None = None,
    ) -> WorldModelStep:
        """Imagine the next frame, reward and termination for N environments.

        ``obs`` (N, L, 3, H, W) float in [-1, 1] and ``act`` (N, L) int64: the last L frames and
        actions, ``act[:, -1]`` being the action taken now at ``obs[:, -1]``. ``state`` is the
        reward/end LSTM state (from :meth:`burn_in` or the previous step; None = zeros).
        ``noise`` (N, 3, H, W) standard normal starts the sampler; ``uniforms`` (N, 2) in [0, 1)
        draw the reward class and termination. Missing ones are drawn from ``generator`` (noise
        first, then uniforms). ``reward_mode="mean"`` gives p(+1) - p(-1) and ends when
        p(end) > 0.5. With ``sampler.min_change`` > 0, pixels that moved by fewer levels than
        that keep the last frame's colour. With ``sampler.context_noise`` > 0 the denoiser sees
        the context frames with that much noise, drawn from ``generator`` after the uniforms.
        ``denoise_fn`` stands in for ``self.denoiser.denoise`` (e.g. its CUDA-graph replay,
        :class:`~diamond_env.world_model.fastpath.GraphedDenoise`). The context buffers are not
        rolled here.
        """
        self._check_obs_act(obs, act)
        if reward_mode not in ("sample", "mean"):
            raise ValueError(f"reward_mode: expected 'sample' or 'mean', got {reward_mode!r}")
        n, device = obs.shape[0], obs.device
        frame_shape = (n, *obs.shape[2:])
        if noise is None:
            noise = draw_normal(frame_shape, device, generator)
        elif tuple(noise.shape) != frame_shape:
            raise ValueError(f"noise: expected shape {frame_shape}, got {tuple(noise.shape)}")
        if uniforms is None:
            gen_device = device if generator is None else generator.device
            uniforms = torch.rand((n, 2), generator=generator, device=gen_device).to(device)
        elif tuple(uniforms.shape) != (n, 2):
            raise ValueError(f"uniforms: expected shape ({n}, 2), got {tuple(uniforms.shape)}")

        cfg = sampler if sampler is not None else self.sampler_config
        next_obs = next_frame(
            self.denoiser, obs, act, noise.to(device, obs.dtype), cfg, generator, denoise_fn
        )
        logits_rew, logits_end, new_state = self.rew_end.predict(
            obs[:, -1:], act[:, -1:], next_obs[:, None], state
        )
        p_rew = logits_rew[:, 0].float().softmax(dim=-1)  # (N, 3) for rewards -1, 0, +1
        p_end = logits_end[:, 0].float().softmax(dim=-1)[:, 1]
        if reward_mode == "sample":
            u = uniforms.to(device, torch.float32)
            reward_class = (u[:, :1] >= p_rew.cumsum(dim=-1)[:, :-1]).sum(dim=-1)
            reward = (reward_class - 1).to(torch.float32)
            termination = u[:, 1] < p_end
        else:
            reward = p_rew[:, 2] - p_rew[:, 0]
            termination = p_end > 0.5
        return WorldModelStep(next_obs, reward, termination, new_state)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the checkpoint directory ``path`` atomically (build in a temp dir, then rename);
        an existing checkpoint there is replaced. Returns the path.

        A process killed in between leaves either the old or the new checkpoint complete under a
        hidden name; :func:`recover_checkpoint` (run by :meth:`load` and by the next save) puts
        it back and removes what such crashes left behind."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        recover_checkpoint(target)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        try:
            weights = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
            save_file(weights, str(tmp / MODEL_FILE), metadata={"format": "pt"})
            bank = {
                "obs": self.contexts.obs.cpu().contiguous(),
                "act": self.contexts.act.cpu().contiguous(),
            }
            save_file(bank, str(tmp / CONTEXTS_FILE), metadata={"format": "pt"})
            meta = self._describe()
            meta["sha256"] = {name: file_sha256(tmp / name) for name in (MODEL_FILE, CONTEXTS_FILE)}
            (tmp / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n")
            if target.exists():
                old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex}")
                os.replace(target, old)
                os.replace(tmp, target)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return target

    def _describe(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "diamond_env_version": __version__,
            "game": self.game,
            "num_actions": self.num_actions,
            "action_meanings": self.action_meanings,
            "obs_shape": [IMG_SIZE, IMG_SIZE, self.config.denoiser.img_channels],
            "num_context": self.num_context,
            "config": self.config.to_dict(),
            **({"env": self.env} if self.env is not None else {}),
        }

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        device: torch.device | str = "cpu",
        expected_game: str | None = None,
    ) -> WorldModel:
        """Rebuild a world model from a checkpoint directory written by :meth:`save`.

        Raises ``FileNotFoundError`` for a missing directory or file, ``ValueError`` for a corrupt
        file, a weights file whose SHA-256 is not the one ``config.json`` recorded, a key/shape
        mismatch, a newer ``format_version`` or a game other than
        ``expected_game``. The contexts stay on the CPU; the modules go to ``device``.
        """
        root = Path(path)
        device = resolve_device(device)
        recover_checkpoint(root)
        hint = (
            f"create one with `diamond-env train-wm --game {expected_game or '<Game>'} ...` "
            "(it writes a world-model checkpoint directory)"
        )
        if not root.is_dir():
            raise FileNotFoundError(
                f"world-model checkpoint directory {root} does not exist; {hint}"
            )
        for name in (CONFIG_FILE, MODEL_FILE, CONTEXTS_FILE):
            if not (root / name).is_file():
                raise FileNotFoundError(f"checkpoint file {root / name} is missing; {hint}")
        meta = _read_meta(root / CONFIG_FILE)
        if expected_game is not None and meta["game"] != expected_game:
            raise ValueError(
                f"checkpoint {root} is a world model of {meta['game']!r}, expected "
                f"{expected_game!r}"
            )
        try:
            config = Config.from_dict(meta["config"])
            skeleton = on_meta(lambda: cls(config, meta["game"], meta["action_meanings"]))
        except (TypeError, ValueError) as err:
            raise InputError(f"{root / CONFIG_FILE}: invalid config ({err})") from err
        if meta["num_actions"] != skeleton.num_actions:
            raise ValueError(
                f"{root / CONFIG_FILE}: num_actions {meta['num_actions']} does not match "
                f"{skeleton.num_actions} action_meanings"
            )
        digests = meta.get("sha256")
        if digests is None:
            raise ValueError(
                f"{root / CONFIG_FILE}: no sha256 digests of {MODEL_FILE} and {CONTEXTS_FILE}, so "
                "the weights cannot be checked (written by hand or by an old tool); save the model "
                "with WorldModel.save"
            )
        if (
            not isinstance(digests, dict)
            or set(digests) != {MODEL_FILE, CONTEXTS_FILE}
            or not all(_is_digest(d) for d in digests.values())
        ):
            raise InputError(
                f"{root / CONFIG_FILE}: sha256 must map {MODEL_FILE} and {CONTEXTS_FILE} to hex "
                f"digests, got {digests!r}"
            )
        tensors = read_tensors(root / MODEL_FILE, digests[MODEL_FILE])
        check_weights(skeleton.state_dict(), tensors, str(root / MODEL_FILE))
        model = cls(config, meta["game"], meta["action_meanings"])
        _load_weights(model, tensors, root / MODEL_FILE)
        bank = read_tensors(root / CONTEXTS_FILE, digests.get(CONTEXTS_FILE))
        if set(bank) != {"obs", "act"}:
            raise ValueError(
                f"{root / CONTEXTS_FILE}: expected keys ['act', 'obs'], got {sorted(bank)}"
            )
        contexts = ContextBank(obs=bank["obs"], act=bank["act"])
        try:
            contexts.validate(model.num_context, model.num_actions)
        except TypeError as err:
            raise ValueError(f"{root / CONTEXTS_FILE}: {err}") from err
        model.contexts = contexts
        if "env" in meta:  # a model of a non-ALE Gymnasium env: which one, as data
            from diamond_env.real_env import EnvSpec

            model.env = EnvSpec.from_dict(meta["env"], f"{root / CONFIG_FILE}: env").to_dict()
        return model.to(device)


STALE_SECONDS = 600.0
"""A hidden temp/old checkpoint dir untouched this long is left over by a killed save."""


def _complete(directory: Path) -> bool:
    """Whether a checkpoint dir was fully written (config.json, written last, and every file
    it records with a matching digest)."""
    try:
        meta = read_json(directory / CONFIG_FILE)
        digests = meta["sha256"]
        return all(file_sha256(directory / n) == digests[n] for n in (MODEL_FILE, CONTEXTS_FILE))
    except (OSError, ValueError, KeyError, TypeError):
        return False


def recover_checkpoint(target: str | os.PathLike[str], now: float | None = None) -> str | None:
    """Repair what a killed :meth:`WorldModel.save` of ``target`` left behind.

    With ``target`` missing, the newest complete hidden copy (a finished temp dir = the new
    checkpoint, else the renamed old one) is renamed into place. Then hidden temp/old dirs of
    ``target`` that are not in use (untouched for :data:`STALE_SECONDS`, or superseded) are
    removed. Returns what was restored (``"new"`` / ``"old"``) or None.
    """
    target = Path(target)
    parent = target.parent
    if not parent.is_dir():
        return None
    now = time.time() if now is None else now
    temps = sorted(parent.glob(f".{target.name}.tmp-*"), key=lambda p: p.stat().st_mtime)
    olds = sorted(parent.glob(f".{target.name}.old-*"), key=lambda p: p.stat().st_mtime)
    restored = None
    if not target.exists():
        for kind, candidates in (("new", temps), ("old", olds)):
            complete = [p for p in candidates if _complete(p)]
            if complete:
                os.replace(complete[-1], target)
                restored = kind
                break
    if target.exists():
        for leftover in [*olds, *temps]:
            if not leftover.exists():
                continue
            stale = now - leftover.stat().st_mtime > STALE_SECONDS
            if leftover.name.startswith(f".{target.name}.old-") or stale:
                shutil.rmtree(leftover, ignore_errors=True)
    return restored


def _is_digest(value: Any) -> bool:
    """A SHA-256 hex digest (64 hex characters)."""
    return isinstance(value, str) and len(value) == 64 and all(c in HEX for c in value.lower())


HEX = frozenset("0123456789abcdef")


def _read_meta(path: Path) -> dict[str, Any]:
    """Parse and check config.json; raises ``ValueError`` naming the file and the problem."""
    meta: dict[str, Any] = read_json(path)
    required = ("format_version", "game", "num_actions", "action_meanings", "config")
    missing = [key for key in required if key not in meta]
    if missing:
        raise ValueError(f"{path}: missing keys {missing}")
    version = meta["format_version"]
    if not isinstance(version, int) or version < 1:
        raise ValueError(f"{path}: format_version must be a positive int, got {version!r}")
    if version < FORMAT_VERSION:
        raise ValueError(
            f"{path}: format_version {version} was written by diamond_env before its networks "
            f"matched DIAMOND's (attention residual, reward/end encoder); its weights cannot be "
            f"reused: train a new world model with train_wm.py"
        )
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{path}: format_version {version} is newer than the supported {FORMAT_VERSION}; "
            "upgrade diamond_env to load it"
        )
    return meta


def _load_weights(model: nn.Module, tensors: dict[str, torch.Tensor], path: Path) -> None:
    """Copy ``tensors`` into ``model``; ``ValueError`` on any missing, extra or misshapen key."""
    expected = model.state_dict()
    missing, extra = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    if missing or extra:
        raise ValueError(
            f"{path}: weights do not match the config: missing {missing[:5]} "
            f"({len(missing)}), unexpected {extra[:5]} ({len(extra)})"
        )
    for key, value in expected.items():
        if tensors[key].shape != value.shape:
            raise ValueError(
                f"{path}: {key} has shape {tuple(tensors[key].shape)}, expected "
                f"{tuple(value.shape)}"
            )
    model.load_state_dict(tensors, strict=True)
