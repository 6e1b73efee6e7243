"""The batched dream simulator: N imagined games over one world model, on one torch device.

Everything stays a torch tensor on ``device`` (no numpy): the project's own agent uses this class
directly, and the Gymnasium and stable-baselines3 faces convert at their boundary.

Buffers (all on ``device``): the last L frames ``(N, L, 3, H, W)`` float in [-1, 1], the actions
taken at them ``(N, L)`` int64 (the last slot is filled by the action of the current step), the
reward/end LSTM state, and the steps taken since each env's reset ``(N,)`` int64.

Randomness: counter-based (:mod:`diamond_env.dream.keyed_random`). Env ``i`` owns a key made
from its seed (``seed + i``) and a counter of its draws; each step draws, for all envs in one
batched operation, the sampler noise ``(3, H, W)`` (one draw) and two uniforms (reward class,
termination; the next draw), and each (re)start draws the index of a starting context (one
draw). So env ``i``'s trajectory depends only on its seed and its actions, not on the other envs
or on ``N``, and no step loops over the envs in Python. (With ``s_churn > 0`` the sampler's extra
noise comes from one shared generator seeded with the reset seed: still reproducible, but not
independent of ``N``.)
"""

from __future__ import annotations

import dataclasses
import operator
import os
from collections.abc import Callable, Sequence
from typing import Any, Literal, NamedTuple

import torch

from diamond_env.config import IMG_SIZE, Config, SamplerConfig
from diamond_env.dream import keyed_random
from diamond_env.dream.contexts import BankContexts, ContextSource
from diamond_env.dream.settings import REWARD_MODES, SAMPLERS, DreamSettings
from diamond_env.models.rew_end import LstmState
from diamond_env.run.checkpoint import resolve_device
from diamond_env.run.paths import resolve_checkpoint
from diamond_env.world_model.model import WorldModel

MAX_SEED = 2**63
"""Seeds must fit torch's generators (a signed 64-bit integer)."""
SeedArg = int | Sequence[int | None] | None


class SimStep(NamedTuple):
    """One batched step. ``obs`` (N, 3, H, W) float32 in [-1, 1] (on the 256 uint8 levels; for
    an env that ended this step it is already the first frame of its next episode); ``reward``
    (N,) float32; ``terminated`` and ``truncated`` (N,) bool, never both True; ``final_obs``
    (N, 3, H, W) float32: the frame each env reached this step, before any reset (equal to
    ``obs`` where the env did not end)."""

    obs: torch.Tensor
    reward: torch.Tensor
    terminated: torch.Tensor
    truncated: torch.Tensor
    final_obs: torch.Tensor


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {value!r}")
    return value


def sampler_config(
    base: SamplerConfig, num_denoising_steps: int | None, sampler: str | None
) -> SamplerConfig:
    """``base`` with the number of denoising steps and/or the method (euler/heun) replaced."""
    changes: dict[str, object] = {}
    if num_denoising_steps is not None:
        changes["num_steps"] = _check_int("num_denoising_steps", num_denoising_steps, 1)
    if sampler is not None:
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler: expected one of {list(SAMPLERS)}, got {sampler!r}")
        changes["method"] = sampler
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def step_bytes_per_env(config: Config) -> int:
    """An upper estimate of the memory one env takes in a dream step: 2.5 times the float32
    feature maps the denoiser's encoder keeps for its skip connections, plus 4 MiB (frames, noise,
    convolution workspaces, the reward/end model). Measured peaks on this project's CPU (1 thread,
    8 against 64 envs): tiny 4.4, cpu 5.8, paper 11 MiB per env; the estimate gives 5.7, 7.3
    and 14."""
    cfg, side, maps = config.denoiser, IMG_SIZE, 0
    for channels, depth in zip(cfg.channels, cfg.depths, strict=True):
        maps += (depth + 1) * channels * side * side
        side //= 2
    return int(2.5 * 4 * maps) + 4 * 2**20


def available_bytes(device: torch.device) -> int | None:
    """Free memory on ``device``: CUDA's free memory, or the kernel's MemAvailable on a CPU
    (None where neither can be read)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory_for(config: Config, num_envs: int, device: torch.device) -> None:
    """Refuse a ``num_envs`` whose dream step would not fit in the free memory of ``device``
    (:func:`step_bytes_per_env`), before anything is allocated."""
    free = available_bytes(device)
    need = num_envs * step_bytes_per_env(config)
    if free is not None and need > free:
        gib = 2**30
        raise ValueError(
            f"num_envs: {num_envs} envs need about {need / gib:.1f} GiB for a dream step "
            f"({step_bytes_per_env(config) / 2**20:.0f} MiB each for this model size) and "
            f"{free / gib:.1f} GiB is free on {device}; use at most {free // (need // num_envs)} "
            "envs"
        )


class DreamSimulator:
    """N dream games at once over one world model, with same-step autoreset.

    Args:
        world_model: the model (denoiser + reward/end); its context bank supplies the starts.
        num_envs: N, the number of parallel games.
        device: where buffers and generators live; None = the world model's device. The model
            must already be there (it is shared, so it is never moved behind the owner's back).
        horizon: an env is truncated when its step count since reset reaches ``horizon``.
        num_denoising_steps: denoising steps per frame; None = the checkpoint's.
        sampler: "euler" or "heun"; None = the checkpoint's.
        reward_mode: "sample" (reward and end drawn from the predicted categoricals) or "mean"
            (expected reward, end when p(end) > 0.5).
        seed: seeds the generators now (env i gets ``seed + i``); None = from torch's global RNG.
        autoreset: reset ended envs inside :meth:`step` (False: they keep dreaming until the
            caller resets them, as a single Gymnasium env does).
        context_source: where (re)starts take their contexts from instead of the world model's
            bank (:mod:`diamond_env.dream.contexts`; e.g. recency-weighted draws from the replay,
            as DIAMOND's training does). ``reset(context_index=...)`` always picks from the bank.
        denoise_fn: stands in for ``world_model.denoiser.denoise`` in every step (same result;
            e.g. :class:`~diamond_env.world_model.fastpath.GraphedDenoise` over the live model a
            trainer updates in place, which a prepared copy could not follow).
    """

    def __init__(
        self,
        world_model: WorldModel,
        num_envs: int,
        *,
        device: torch.device | str | None = None,
        horizon: int = 15,
        num_denoising_steps: int | None = None,
        sampler: Literal["euler", "heun"] | None = None,
        reward_mode: Literal["sample", "mean"] = "sample",
        seed: int | None = None,
        autoreset: bool = True,
        context_source: ContextSource | None = None,
        denoise_fn: Callable[..., torch.Tensor] | None = None,
    ) -> None:
        self.denoise_fn = denoise_fn
        self.num_envs = _check_int("num_envs", num_envs, 1)
        self.horizon = _check_int("horizon", horizon, 1)
        if reward_mode not in REWARD_MODES:
            raise ValueError(
                f"reward_mode: expected one of {list(REWARD_MODES)}, got {reward_mode!r}"
            )
        self.reward_mode = reward_mode
        self.autoreset = bool(autoreset)
        model_device = torch.device(world_model.device)
        self.device = model_device if device is None else resolve_device(device)
        if self.device != model_device:
            raise ValueError(
                f"device: the world model is on {model_device}, got device={str(self.device)!r}; "
                "move the model first or pass device=None"
            )
        check_memory_for(world_model.config, self.num_envs, self.device)
        self.world_model = world_model
        self.sampler_config = sampler_config(
            world_model.config.sampler, num_denoising_steps, sampler
        )
        self.bank = BankContexts(world_model.contexts, self.device)
        self.contexts: ContextSource = self.bank if context_source is None else context_source
        self.num_contexts, self.num_context = len(self.bank), self.bank.num_context
        self.frame_shape: tuple[int, int, int] = self.bank.frame_shape
        self._keys = torch.zeros(self.num_envs, dtype=torch.int64, device=self.device)
        self._counters = torch.zeros(self.num_envs, dtype=torch.int64, device=self.device)
        self._churn_generator = torch.Generator(device=self.device)
        if seed is None:
            seed = int(torch.randint(0, 2**62, (1,)).item())
        self._seed_envs(self._per_env_seeds(seed), range(self.num_envs))
        self._obs: torch.Tensor | None = None
        self._closed = False
        self._act = torch.zeros((self.num_envs, self.num_context), dtype=torch.int64)
        self._state: LstmState | None = None
        self._elapsed = torch.zeros(self.num_envs, dtype=torch.int64, device=self.device)

    # ---------------------------------------------------------------- read-only views
    @property
    def num_actions(self) -> int:
        return int(self.world_model.num_actions)

    @property
    def action_meanings(self) -> list[str]:
        return list(self.world_model.action_meanings)

    @property
    def game(self) -> str:
        return str(self.world_model.game)

    @property
    def obs(self) -> torch.Tensor:
        """Current frames (N, 3, H, W) float32 in [-1, 1] (a copy)."""
        return self._buffers()[:, -1].clone()

    @property
    def context_obs(self) -> torch.Tensor:
        """The last L frames (N, L, 3, H, W) float32 in [-1, 1], current last (a copy)."""
        return self._buffers().clone()

    @property
    def context_act(self) -> torch.Tensor:
        """The actions (N, L - 1) int64 taken at ``context_obs[:, :-1]`` (a copy)."""
        self._buffers()
        return self._act[:, :-1].clone()

    @property
    def elapsed_steps(self) -> torch.Tensor:
        """Steps (N,) int64 taken since each env's last reset (a copy)."""
        return self._elapsed.clone()

    def close(self) -> None:
        """Release the buffers; any later ``reset``/``step`` raises ``RuntimeError``."""
        self._closed = True
        self._obs = None

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("DreamSimulator: the env was closed; make a new one")

    def _buffers(self) -> torch.Tensor:
        self._check_open()
        if self._obs is None:
            raise RuntimeError("DreamSimulator: call reset() before step() or reading buffers")
        return self._obs

    # ---------------------------------------------------------------- reset
    def reset(
        self,
        seed: SeedArg = None,
        mask: torch.Tensor | Sequence[bool] | None = None,
        context_index: Sequence[int | None] | None = None,
    ) -> torch.Tensor:
        """(Re)start the envs in ``mask`` (all when None) from real contexts.

        ``seed``: an int seeds env i with ``seed + i``; a sequence gives one seed (or None) per
        env; None keeps the generators running. ``mask``: bool (N,), at least one True; the
        first reset must cover every env. ``context_index``: per env, a bank index to start
        from instead of a random one (None entries draw; the draw happens either way, so the
        generator streams do not shift). Returns the current frames (N, 3, H, W) float32.
        """
        self._check_open()
        envs = self._mask_indices(mask)
        if self._obs is None and len(envs) != self.num_envs:
            raise ValueError("mask: the first reset must reset every env (all True)")
        if seed is not None:
            self._seed_envs(self._per_env_seeds(seed), envs)
        chosen = None if context_index is None else self._chosen(envs, context_index)
        self._start(envs, *self._contexts(self._draw_uniforms(envs), chosen))
        return self.obs

    def _contexts(
        self, uniforms: torch.Tensor, chosen: list[int | None] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Frames (M, L, C, H, W) float and actions (M, L) of the contexts to start from: the
        source's draws for ``uniforms`` (M,), with bank entries where ``chosen`` names one."""
        obs, act = self.contexts.draw(uniforms)
        expected = (len(uniforms), self.num_context, *self.frame_shape)
        if tuple(obs.shape) != expected or tuple(act.shape) != expected[:2]:
            raise ValueError(
                f"context_source: expected frames {expected} and actions {expected[:2]}, got "
                f"{tuple(obs.shape)} and {tuple(act.shape)}"
            )
        obs, act = obs.to(self.device, torch.float32), act.to(self.device, torch.int64)
        rows = [j for j, k in enumerate(chosen or []) if k is not None]
        if rows:
            picked = torch.tensor([chosen[j] for j in rows], device=self.device)  # type: ignore[index]
            index = torch.tensor(rows, device=self.device)
            obs[index], act[index] = self.bank.at(picked)
        return obs, act

    def _per_env_seeds(self, seed: SeedArg) -> list[int | None]:
        if isinstance(seed, int) and not isinstance(seed, bool):
            _check_int("seed", seed, 0)
            if seed + self.num_envs > MAX_SEED:
                raise ValueError(f"seed: expected an int in [0, 2**63 - num_envs), got {seed}")
            return [seed + i for i in range(self.num_envs)]
        if isinstance(seed, Sequence) and len(seed) == self.num_envs:
            seeds = [
                None if s is None else _check_int(f"seed[{i}]", s, 0) for i, s in enumerate(seed)
            ]
            if any(s is not None and s >= MAX_SEED for s in seeds):
                raise ValueError(f"seed: expected ints in [0, 2**63), got {list(seed)}")
            return seeds
        raise ValueError(
            f"seed: expected None, an int >= 0 or a sequence of {self.num_envs} ints/None, "
            f"got {seed!r}"
        )

    def _seed_envs(self, seeds: list[int | None], envs: Sequence[int]) -> None:
        """Give the envs in ``envs`` whose seed is not None a fresh key and counter."""
        chosen = [i for i in envs if seeds[i] is not None]
        if not chosen:
            return
        rows = torch.tensor(chosen, device=self.device)
        values = torch.tensor([seeds[i] for i in chosen], dtype=torch.int64)
        self._keys[rows] = keyed_random.keys_from_seeds(values).to(self.device)
        self._counters[rows] = 0
        first = seeds[chosen[0]]
        assert first is not None
        self._churn_generator.manual_seed(first)

    def _mask_indices(self, mask: torch.Tensor | Sequence[bool] | None) -> list[int]:
        if mask is None:
            return list(range(self.num_envs))
        values = torch.as_tensor(mask)
        if values.dtype != torch.bool or tuple(values.shape) != (self.num_envs,):
            raise ValueError(
                f"mask: expected bool of shape ({self.num_envs},), got {values.dtype} "
                f"{tuple(values.shape)}"
            )
        envs = [i for i, on in enumerate(values.tolist()) if on]
        if not envs:
            raise ValueError("mask: expected at least one True entry, got none")
        return envs

    def _chosen(self, envs: list[int], context_index: Sequence[int | None]) -> list[int | None]:
        """The bank entry (or None: a draw) each env in ``envs`` starts from."""
        if len(context_index) != self.num_envs:
            raise ValueError(
                f"context_index: expected {self.num_envs} entries (int or None), "
                f"got {len(context_index)}"
            )
        chosen: list[int | None] = [None] * len(envs)
        for j, i in enumerate(envs):
            k = context_index[i]
            if k is None:
                continue
            try:
                value = operator.index(k) if not isinstance(k, bool) else -1
            except TypeError:
                value = -1
            if not 0 <= value < self.num_contexts:
                raise ValueError(
                    f"context_index[{i}]: expected an int in [0, {self.num_contexts}), got {k!r}"
                )
            chosen[j] = value
        return chosen

    def _draw_uniforms(self, envs: Sequence[int]) -> torch.Tensor:
        """One uniform in [0, 1) per env in ``envs``, each that env's next draw (the context
        source turns it into a start; made whether or not it is used, so streams never shift)."""
        rows = torch.tensor(list(envs), device=self.device)
        u = keyed_random.uniform(self._keys[rows], self._counters[rows], 1)[:, 0]
        self._counters[rows] += 1
        return u

    def _start(self, envs: list[int], obs: torch.Tensor, act: torch.Tensor) -> None:
        """Load contexts (frames (M, L, C, H, W), actions (M, L)) into envs ``envs`` (M) and burn
        the reward/end LSTM in."""
        h, c = self.world_model.burn_in(obs, act)
        if not bool(torch.isfinite(h).all() & torch.isfinite(c).all()):
            raise RuntimeError("world model burn_in produced NaN or Inf in the LSTM state")
        if self._obs is None or self._state is None or len(envs) == self.num_envs:
            self._obs, self._act, self._state = obs, act.clone(), (h, c)
            self._elapsed.zero_()
            return
        rows = torch.tensor(envs, device=self.device)
        self._obs[rows] = obs
        self._act[rows] = act
        for buffer, fresh in zip(self._state, (h, c), strict=True):
            buffer[rows] = fresh.to(buffer.dtype)
        self._elapsed[rows] = 0

    # ---------------------------------------------------------------- step
    def step(self, actions: torch.Tensor) -> SimStep:
        """Advance every env by one action; envs that end are reset in the same call.

        ``actions``: integer tensor (N,) with values in [0, num_actions) (any device). Raises
        ``TypeError``/``ValueError`` for a bad batch (nothing changes; the env stays usable) and
        ``RuntimeError`` when the model returns NaN/Inf (nothing is committed).
        """
        obs = self._buffers()
        act = self._act.clone()
        act[:, -1] = self._check_actions(actions)
        noise, uniforms = self._draw_step_randomness()
        out = self.world_model.step(
            obs,
            act,
            self._state,
            noise=noise,
            uniforms=uniforms,
            generator=self._churn_generator,
            sampler=self.sampler_config,
            reward_mode=self.reward_mode,
            **({} if self.denoise_fn is None else {"denoise_fn": self.denoise_fn}),
        )
        next_obs, reward = out.next_obs.float(), out.reward.float()
        elapsed = self._elapsed + 1
        terminated = out.termination.to(torch.bool)
        truncated = (elapsed >= self.horizon) & ~terminated
        done = terminated | truncated
        finite = torch.stack([torch.isfinite(t).all() for t in (next_obs, reward, *out.state)])
        host = torch.cat([finite.all().view(1), done]).tolist()  # the one sync of a step
        if not host[0]:
            raise RuntimeError(
                "world model step produced NaN or Inf (next frame, reward or LSTM state); "
                "the simulator state was left unchanged"
            )
        self._obs = torch.cat([obs[:, 1:], next_obs[:, None]], dim=1)
        self._act = torch.cat([act[:, 1:], torch.zeros_like(act[:, :1])], dim=1)
        self._state = (out.state[0].clone(), out.state[1].clone())
        self._elapsed = elapsed
        ended = [i for i, d in enumerate(host[1:]) if d]
        if self.autoreset and ended:
            self._start(ended, *self._contexts(self._draw_uniforms(ended)))
        return SimStep(self.obs, reward, terminated, truncated, next_obs)

    def state_dict(self) -> dict[str, Any]:
        """Everything that decides the next steps (buffers and generator states), for resuming a
        loop that runs across calls exactly. Plain tensors only."""
        obs = self._buffers()
        assert self._state is not None
        return {
            "obs": obs.cpu(),
            "act": self._act.cpu(),
            "h": self._state[0].cpu(),
            "c": self._state[1].cpu(),
            "elapsed": self._elapsed.cpu(),
            "keys": self._keys.cpu(),
            "counters": self._counters.cpu(),
            "churn_generator": self._churn_generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (same number of envs and context shape)."""
        if tuple(state["obs"].shape) != (self.num_envs, self.num_context, *self.frame_shape):
            raise ValueError(
                f"state: frames of shape {tuple(state['obs'].shape)} do not fit {self.num_envs} "
                f"envs of {self.num_context} x {self.frame_shape}"
            )
        if "keys" not in state:
            raise ValueError(
                "state: dreams saved by an older diamond_env (one torch.Generator per env); "
                "this version draws its randomness by key and counter and cannot carry them on"
            )
        self._obs = state["obs"].to(self.device)
        self._act = state["act"].to(self.device)
        self._state = (state["h"].to(self.device), state["c"].to(self.device))
        self._elapsed = state["elapsed"].to(self.device)
        self._keys = state["keys"].to(self.device).clone()
        self._counters = state["counters"].to(self.device).clone()
        self._churn_generator.set_state(state["churn_generator"])

    def _check_actions(self, actions: torch.Tensor) -> torch.Tensor:
        n, k = self.num_envs, self.num_actions
        expected = f"an integer torch.Tensor of shape ({n},) with values in [0, {k})"
        if not isinstance(actions, torch.Tensor):
            raise TypeError(f"actions: expected {expected}, got {type(actions).__name__}")
        if actions.is_floating_point() or actions.is_complex() or actions.dtype == torch.bool:
            raise TypeError(f"actions: expected {expected}, got dtype {actions.dtype}")
        if tuple(actions.shape) != (n,):
            raise ValueError(f"actions: expected {expected}, got shape {tuple(actions.shape)}")
        act = actions.to(self.device, torch.int64)
        bad = (act < 0) | (act >= k)
        if bool(bad.any()):
            where = bad.nonzero().flatten()[:5].tolist()
            raise ValueError(
                f"actions: expected {expected}, got {act[where].tolist()} at envs {where}"
            )
        return act

    def _draw_step_randomness(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per env, its next two draws: noise (C, H, W) standard normal, then 2 uniforms; one
        batched operation each for all envs."""
        size = self.frame_shape[0] * self.frame_shape[1] * self.frame_shape[2]
        noise = keyed_random.normal(self._keys, self._counters, size)
        uniforms = keyed_random.uniform(self._keys, self._counters + 1, 2)
        self._counters += 2
        return noise.view(self.num_envs, *self.frame_shape), uniforms


def make_simulator(
    game: str | None,
    num_envs: int,
    *,
    checkpoint: str | os.PathLike[str] | None = None,
    world_model: WorldModel | None = None,
    settings: DreamSettings | None = None,
    seed: int | None = None,
    autoreset: bool = True,
    **setting_kwargs: Any,
) -> DreamSimulator:
    """A simulator over ``world_model``, or over the checkpoint of ``game`` loaded once.

    ``settings`` (or its fields as keyword arguments, which override it) says how the dream runs:
    :class:`~diamond_env.dream.settings.DreamSettings`. ``checkpoint`` None means the first
    default place (:func:`diamond_env.run.paths.resolve_checkpoint`). With a fast path the
    simulator runs a prepared copy of the model; ``fastpath="auto"`` applies to a model loaded
    here, and a ``world_model`` passed in runs as it is (it stays the caller's: later training of
    it reaches the dream). ``seed`` and ``autoreset`` go to :class:`DreamSimulator`.
    """
    if settings is None:
        settings = DreamSettings.from_kwargs(**setting_kwargs)
    elif setting_kwargs:
        settings = dataclasses.replace(settings, **setting_kwargs)
    device, fastpath = settings.device, settings.fastpath
    loaded = world_model is None
    if game is None:  # Dream-v0: the model's own game
        if world_model is None:
            if checkpoint is None:
                raise ValueError(
                    "Dream-v0: checkpoint=... is required (the world-model directory to dream "
                    "with, e.g. runs/<Game>/world_model)"
                )
            world_model = WorldModel.load(checkpoint, device=device or "cpu")
        game = world_model.game
    if not isinstance(game, str) or not game:
        raise ValueError(f"game: expected a non-empty str such as 'Breakout', got {game!r}")
    from diamond_env.world_model.fastpath import with_fastpath

    if world_model is None:
        path = resolve_checkpoint(game, checkpoint)
        world_model = WorldModel.load(path, device=device or "cpu", expected_game=game)
    elif world_model.game != game:
        raise ValueError(
            f"world_model: expected a model of {game!r}, got one of {world_model.game!r}"
        )
    if fastpath == "auto" and not (loaded and isinstance(world_model, WorldModel)):
        fastpath = None  # a model passed in stays the caller's; fast paths are WorldModel's
    world_model = with_fastpath(world_model, fastpath, num_envs)
    return DreamSimulator(
        world_model,
        num_envs,
        device=device,
        horizon=settings.truncate_at,
        num_denoising_steps=settings.num_denoising_steps,
        sampler=settings.sampler,
        reward_mode=settings.reward_mode,
        seed=seed,
        autoreset=autoreset,
    )
