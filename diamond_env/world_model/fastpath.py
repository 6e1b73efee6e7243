"""Fast paths for dreaming: options that change how the world model runs, never what it computes
(up to rounding), each tested for equivalence against the plain path.

:func:`prepare_world_model` returns a copy of a :class:`WorldModel` (same weights, same
``state_dict`` keys, same ``step``/``burn_in`` contract) with any of:

- ``channels_last``: 4-d weights in channels-last memory format, so convolutions run NHWC;
- ``autocast_dtype``: denoiser and reward/end model under ``torch.autocast`` (bf16 on CPU or
  CUDA, fp16 on CUDA); outputs are cast back, so every returned tensor keeps the plain dtype;
- ``compile``: the denoiser's U-Net compiled in place (``nn.Module.compile``: weights keep their
  names, so the model still saves as a plain checkpoint);
- ``inference_mode``: ``step`` runs under ``torch.inference_mode`` instead of ``no_grad``; its
  outputs are cloned outside, so callers never hold inference tensors;
- ``cuda_graphs`` (CUDA only): each denoiser pass of a given batch shape is captured once in a
  CUDA graph and replayed (static input buffers, no kernel launches from Python).

The prepared model is for imagination (no gradients); train the plain model and prepare again.

``fastpath="auto"`` (the default of the dream envs and of ``train-agent``) picks the options
measured to pay on the model's device (:data:`DEVICE_DEFAULTS`); :func:`resolve_fastpath`
turns any ``fastpath`` argument into option names.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any

import torch

from diamond_env.config import Config, DenoiserConfig, RewEndConfig
from diamond_env.devices import cpu_has_amx_bf16
from diamond_env.models.denoiser import Denoiser
from diamond_env.models.rew_end import LstmState, RewEndModel
from diamond_env.world_model.model import ContextBank, WorldModel, WorldModelStep

AUTOCAST_NAMES = {"bf16": torch.bfloat16, "fp16": torch.float16}
"""Names of the ``autocast_dtype`` choices in :meth:`FastPathOptions.from_names`."""
FLAG_NAMES = ("channels_last", "compile", "inference_mode", "cuda_graphs")
"""The on/off options of :class:`FastPathOptions`."""
DEVICE_DEFAULTS: dict[str, tuple[str, ...]] = {"cpu": ("channels_last",), "cuda": ("cuda_graphs",)}
"""What ``fastpath="auto"`` turns on, per device type, chosen by measurement
(docs/studies/benchmarks-log.md, "Fast-path defaults" and "CUDA on a lent H200"; docs/benchmarks.md).
CPU: channels-last was never slower over the presets and env counts measured and matches the
plain path up to rare one-level rounding flips of 8-bit pixels. CUDA: CUDA graphs pay and match
the plain path up to one level; channels-last and bf16 were slower there. Devices not listed have
not been measured and run the plain path. See :data:`AMX_BF16_DEFAULTS` for CPUs with AMX."""
AMX_BF16_DEFAULTS: tuple[str, ...] = ("channels_last", "bf16")
"""``fastpath="auto"`` on a CPU with AMX bf16 tiles (:func:`diamond_env.devices.cpu_has_amx_bf16`):
there bf16 convolutions run on the tiles, a 32-env dream runs about twice as fast, and the
held-out figures of the shipped Breakout model were those of fp32 (PSNR within 0.02 dB, the same
ball table). Without AMX, bf16 was measured slower than fp32 and stays a choice. bf16 changes
the numbers: frames differ from the fp32 paths by more than their 2-level tolerance over a
long dream, while the same path, seed and actions still repeat bit for bit."""


@dataclass(frozen=True)
class FastPathOptions:
    """Which fast paths :func:`prepare_world_model` turns on (all off = the plain path)."""

    channels_last: bool = False
    autocast_dtype: torch.dtype | None = None
    """``torch.bfloat16`` or ``torch.float16`` (CUDA only); None = full precision."""
    compile: bool = False
    inference_mode: bool = False
    cuda_graphs: bool = False

    @classmethod
    def from_names(cls, names: Iterable[str] | Mapping[str, bool]) -> FastPathOptions:
        """Options from names (a mapping keeps those set True): ``channels_last``, ``bf16``,
        ``fp16``, ``compile``, ``inference_mode``, ``cuda_graphs``."""
        chosen = [k for k, on in names.items() if on] if isinstance(names, Mapping) else names
        chosen = [chosen] if isinstance(chosen, str) else list(chosen)
        known = sorted(set(FLAG_NAMES) | set(AUTOCAST_NAMES))
        unknown = [n for n in chosen if n not in known]
        if unknown:
            raise ValueError(f"fastpath: expected names from {known}, got unknown {unknown}")
        dtypes = [AUTOCAST_NAMES[n] for n in chosen if n in AUTOCAST_NAMES]
        if len(dtypes) > 1:
            raise ValueError(f"fastpath: expected at most one of bf16/fp16, got {chosen}")
        flags = {n: True for n in chosen if n not in AUTOCAST_NAMES}
        return cls(autocast_dtype=dtypes[0] if dtypes else None, **flags)

    def names(self) -> list[str]:
        """The inverse of :meth:`from_names`: the names of the options that are on."""
        out = [f.name for f in fields(self) if f.name != "autocast_dtype" and getattr(self, f.name)]
        out += [n for n, d in AUTOCAST_NAMES.items() if d == self.autocast_dtype]
        return out


AMX_BF16_MIN_ENVS = 32
"""Dreams of at least this many envs get bf16 from ``fastpath="auto"`` on AMX CPUs: measured
there at 32 envs about twice as fast, at 1 env slightly slower than fp32 (docs/benchmarks.md);
batches in between were not measured and keep fp32."""


def resolve_fastpath(
    fastpath: str | Iterable[str] | None,
    device: torch.device | str,
    num_envs: int | None = None,
) -> list[str]:
    """The fast-path names that ``fastpath`` means on ``device``: ``"auto"`` -> the measured
    defaults of the device type (:data:`DEVICE_DEFAULTS`; on a CPU with AMX bf16 and a batch of
    ``num_envs`` >= :data:`AMX_BF16_MIN_ENVS` or unknown, :data:`AMX_BF16_DEFAULTS`); None, ``""``, ``"plain"`` or ``[]``
    -> none; a comma-separated string or a list of names -> those names (validated)."""
    if fastpath is None:
        return []
    if isinstance(fastpath, str):
        if fastpath == "auto":
            kind = torch.device(device).type
            big_batch = num_envs is None or num_envs >= AMX_BF16_MIN_ENVS
            if kind == "cpu" and big_batch and cpu_has_amx_bf16():
                return list(AMX_BF16_DEFAULTS)
            return list(DEVICE_DEFAULTS.get(kind, ()))
        if fastpath == "plain":
            return []
        fastpath = fastpath.split(",")
    names = [name.strip() for name in fastpath if name.strip()]
    if "auto" in names or "plain" in names:
        raise ValueError(f"fastpath: 'auto' and 'plain' stand alone, got {names}")
    FastPathOptions.from_names(names)  # raises for unknown names or two autocast dtypes
    return names


def _autocast(
    device: torch.device, dtype: torch.dtype | None
) -> contextlib.AbstractContextManager[Any]:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


class _DenoiseGraph:
    """One denoiser pass captured in a CUDA graph for fixed input shapes.

    ``__call__`` copies the inputs into static buffers, replays the graph and returns a clone of
    the static output (the next replay overwrites it).
    """

    def __init__(self, fn: Any, *inputs: torch.Tensor) -> None:
        self.fn = fn
        device = inputs[0].device
        with torch.inference_mode(False):  # normal tensors: copied into from any grad mode
            self.inputs = [t.clone() for t in inputs]
        side = torch.cuda.Stream(device=device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(3):  # warm-up: kernel selection and allocator pools settle
                fn(*self.inputs)
        torch.cuda.current_stream(device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.output = fn(*self.inputs)

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        for static, value in zip(self.inputs, inputs, strict=True):
            static.copy_(value)
        self.graph.replay()
        return self.output.clone()


class FastDenoiser(Denoiser):
    """A :class:`Denoiser` whose :meth:`denoise` runs under autocast and, on CUDA with
    ``cuda_graphs`` and gradients off, replays one captured graph per input shape. Training
    (``compute_loss``) is unchanged."""

    def __init__(
        self,
        config: DenoiserConfig,
        num_actions: int,
        *,
        autocast_dtype: torch.dtype | None,
        cuda_graphs: bool,
    ) -> None:
        super().__init__(config, num_actions)
        self.autocast_dtype = autocast_dtype
        self.cuda_graphs = cuda_graphs
        self._graphs: dict[tuple[Any, ...], _DenoiseGraph] = {}

    def _plain_denoise(
        self,
        x: torch.Tensor,
        sigma: torch.Tensor,
        obs_ctx: torch.Tensor,
        act_ctx: torch.Tensor,
        context_sigma: float = 0.0,
        context_eps: torch.Tensor | None = None,
    ) -> torch.Tensor:
        with _autocast(x.device, self.autocast_dtype):
            out = super().denoise(x, sigma, obs_ctx, act_ctx, context_sigma, context_eps)
        return out.to(x.dtype)

    def denoise(
        self,
        x: torch.Tensor,
        sigma: torch.Tensor,
        obs_ctx: torch.Tensor,
        act_ctx: torch.Tensor,
        context_sigma: float = 0.0,
        context_eps: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """As :meth:`Denoiser.denoise`; float ``(B, 3, H, W)`` of ``x``'s dtype."""
        if not (self.cuda_graphs and x.is_cuda and not torch.is_grad_enabled()):
            return self._plain_denoise(x, sigma, obs_ctx, act_ctx, context_sigma, context_eps)
        if context_sigma > 0.0 and context_eps is None:
            return self._plain_denoise(x, sigma, obs_ctx, act_ctx, context_sigma)  # its error
        if context_sigma <= 0.0:
            context_eps = None
        return self._graph_denoise(x, sigma, obs_ctx, act_ctx, context_sigma, context_eps)

    def _noised_denoise(
        self,
        context_sigma: float,
        x: torch.Tensor,
        sigma: torch.Tensor,
        obs_ctx: torch.Tensor,
        act_ctx: torch.Tensor,
        context_eps: torch.Tensor,
    ) -> torch.Tensor:
        return self._plain_denoise(x, sigma, obs_ctx, act_ctx, context_sigma, context_eps)

    def _graph_denoise(
        self,
        x: torch.Tensor,
        sigma: torch.Tensor,
        obs_ctx: torch.Tensor,
        act_ctx: torch.Tensor,
        context_sigma: float,
        context_eps: torch.Tensor | None,
    ) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).expand(x.shape[0])
        inputs: tuple[torch.Tensor, ...] = (x, sigma, obs_ctx, act_ctx)
        if context_eps is not None:
            inputs = (*inputs, context_eps)
        key = (context_sigma, *((tuple(t.shape), t.dtype, t.device) for t in inputs))
        graph = self._graphs.get(key)
        if graph is None:
            fn: Any = self._plain_denoise
            if context_eps is not None:
                fn = functools.partial(self._noised_denoise, context_sigma)
            graph = self._graphs[key] = _DenoiseGraph(fn, *inputs)
        return graph(*inputs)


class FastRewEndModel(RewEndModel):
    """A :class:`RewEndModel` whose forward runs under autocast; logits and state come back as
    float32, as from the plain model."""

    def __init__(
        self, config: RewEndConfig, num_actions: int, *, autocast_dtype: torch.dtype | None
    ) -> None:
        super().__init__(config, num_actions)
        self.autocast_dtype = autocast_dtype

    def forward(
        self,
        obs: torch.Tensor,
        act: torch.Tensor,
        next_obs: torch.Tensor,
        state: LstmState | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, LstmState]:
        """As :meth:`RewEndModel.forward`."""
        with _autocast(obs.device, self.autocast_dtype):
            rew, end, (h, c) = super().forward(obs, act, next_obs, state)
        return rew.float(), end.float(), (h.float(), c.float())


class FastWorldModel(WorldModel):
    """A :class:`WorldModel` with :class:`FastDenoiser`, :class:`FastRewEndModel` and, with
    ``options.inference_mode``, a :meth:`step` under ``torch.inference_mode``. Build it with
    :func:`prepare_world_model`."""

    def __init__(
        self,
        config: Config,
        game: str,
        action_meanings: list[str],
        contexts: ContextBank,
        options: FastPathOptions,
    ) -> None:
        super().__init__(config, game, action_meanings, contexts)
        self.options = options
        dtype = options.autocast_dtype
        self.denoiser = FastDenoiser(
            config.denoiser, self.num_actions, autocast_dtype=dtype, cuda_graphs=options.cuda_graphs
        )
        self.rew_end = FastRewEndModel(config.rew_end, self.num_actions, autocast_dtype=dtype)

    def step(self, *args: Any, **kwargs: Any) -> WorldModelStep:
        """As :meth:`WorldModel.step` (same arguments, same output dtypes)."""
        if not self.options.inference_mode:
            return super().step(*args, **kwargs)
        with torch.inference_mode():
            out = super().step(*args, **kwargs)
        h, c = out.state
        return WorldModelStep(
            out.next_obs.clone(),
            out.reward.clone(),
            out.termination.clone(),
            (h.clone(), c.clone()),
        )


def prepare_world_model(
    world_model: WorldModel,
    *,
    channels_last: bool = False,
    autocast_dtype: torch.dtype | None = None,
    compile: bool = False,
    inference_mode: bool = False,
    cuda_graphs: bool = False,
) -> WorldModel:
    """A copy of ``world_model`` (weights copied, on its device, in eval mode) with the chosen
    fast paths (see the module docstring); the original is untouched and the global RNG is not
    consumed. Raises ``ValueError`` for ``cuda_graphs`` off CUDA, fp16 off CUDA or an
    ``autocast_dtype`` other than bf16/fp16."""
    options = FastPathOptions(channels_last, autocast_dtype, compile, inference_mode, cuda_graphs)
    device = world_model.device
    if autocast_dtype not in (None, torch.bfloat16, torch.float16):
        raise ValueError(
            f"autocast_dtype: expected None, torch.bfloat16 or torch.float16, got {autocast_dtype}"
        )
    if autocast_dtype == torch.float16 and device.type != "cuda":
        raise ValueError(f"autocast_dtype: float16 needs a CUDA model, got one on {device}")
    if cuda_graphs and device.type != "cuda":
        raise ValueError(f"cuda_graphs: needs a CUDA model, got one on {device}")
    # built on the CPU and overwritten: the meta device would cost seconds of imports in each
    # new process (its decompositions load on first use), more than initialising the weights
    with torch.random.fork_rng(devices=[]):
        fast = FastWorldModel(
            world_model.config,
            world_model.game,
            world_model.action_meanings,
            world_model.contexts,
            options,
        )
    fast.load_state_dict(world_model.state_dict())
    fast.env = world_model.env
    fast.to(device)
    fast.eval()
    if channels_last:
        fast.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # untyped kwarg
    if compile:
        fast.denoiser.unet.compile()
    return fast


def with_fastpath(
    world_model: WorldModel,
    fastpath: str | Iterable[str] | None,
    num_envs: int | None = None,
) -> WorldModel:
    """``world_model`` prepared with what ``fastpath`` means on its device (:func:`resolve_fastpath`
    for a batch of ``num_envs``); the model itself when that is nothing."""
    names = resolve_fastpath(fastpath, world_model.device, num_envs)
    return (
        prepare_from_options(world_model, FastPathOptions.from_names(names))
        if names
        else world_model
    )


def prepare_from_options(world_model: WorldModel, options: FastPathOptions) -> WorldModel:
    """:func:`prepare_world_model` with the fields of ``options``."""
    return prepare_world_model(
        world_model,
        channels_last=options.channels_last,
        autocast_dtype=options.autocast_dtype,
        compile=options.compile,
        inference_mode=options.inference_mode,
        cuda_graphs=options.cuda_graphs,
    )
