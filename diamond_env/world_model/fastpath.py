"""Fast paths for dreaming: options that change how the world model runs, never what it computes
(up to rounding), each tested for equivalence against the plain path.

:func:`prepare_world_model` returns a copy of a :class:`WorldModel` (same class, same weights,
same ``state_dict`` keys, same ``step``/``burn_in`` contract) whose functions are wrapped by any
of:

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

import functools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any

import torch

from diamond_env.devices import cpu_has_amx_bf16
from diamond_env.models.rew_end import LstmState
from diamond_env.world_model.model import WorldModel, WorldModelStep

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


DenoiseFn = Callable[..., torch.Tensor]
""":meth:`Denoiser.denoise`'s signature: ``(x, sigma, obs_ctx, act_ctx, context_sigma=0.0,
context_eps=None) -> (B, 3, H, W)``."""


def autocast_denoise(denoise: DenoiseFn, dtype: torch.dtype) -> DenoiseFn:
    """``denoise`` run under ``torch.autocast(dtype)``; the result comes back in ``x``'s dtype."""

    @functools.wraps(denoise)
    def wrapped(x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        with torch.autocast(x.device.type, dtype=dtype):
            out = denoise(x, *args, **kwargs)
        return out.to(x.dtype)

    return wrapped


def autocast_rew_end(forward: Callable[..., Any], dtype: torch.dtype) -> Callable[..., Any]:
    """A reward/end model's ``forward`` run under ``torch.autocast(dtype)``; logits and LSTM
    state come back as float32, as from the plain model."""

    @functools.wraps(forward)
    def wrapped(
        obs: torch.Tensor,
        act: torch.Tensor,
        next_obs: torch.Tensor,
        state: LstmState | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, LstmState]:
        with torch.autocast(obs.device.type, dtype=dtype):
            rew, end, (h, c) = forward(obs, act, next_obs, state)
        return rew.float(), end.float(), (h.float(), c.float())

    return wrapped


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


class GraphedDenoise:
    """``denoise`` replayed from CUDA graphs: on CUDA with gradients off, each input shape is
    captured once (:attr:`graphs`) and replayed; otherwise ``denoise`` runs as it is."""

    def __init__(self, denoise: DenoiseFn) -> None:
        self.denoise = denoise
        self.graphs: dict[tuple[Any, ...], _DenoiseGraph] = {}

    def __call__(
        self,
        x: torch.Tensor,
        sigma: torch.Tensor,
        obs_ctx: torch.Tensor,
        act_ctx: torch.Tensor,
        context_sigma: float = 0.0,
        context_eps: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if not (x.is_cuda and not torch.is_grad_enabled()) or (
            context_sigma > 0.0 and context_eps is None  # (the denoiser's own error)
        ):
            return self.denoise(x, sigma, obs_ctx, act_ctx, context_sigma, context_eps)
        if context_sigma <= 0.0:
            context_eps = None
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).expand(x.shape[0])
        inputs: tuple[torch.Tensor, ...] = (x, sigma, obs_ctx, act_ctx)
        if context_eps is not None:
            inputs = (*inputs, context_eps)
        key = (context_sigma, *((tuple(t.shape), t.dtype, t.device) for t in inputs))
        graph = self.graphs.get(key)
        if graph is None:

            def fn(*args: torch.Tensor) -> torch.Tensor:
                return self.denoise(*args[:4], context_sigma, *args[4:])

            graph = self.graphs[key] = _DenoiseGraph(fn, *inputs)
        return graph(*inputs)


def in_inference_mode(step: Callable[..., WorldModelStep]) -> Callable[..., WorldModelStep]:
    """``WorldModel.step`` under ``torch.inference_mode``; its outputs are cloned outside, so
    callers never hold inference tensors."""

    @functools.wraps(step)
    def wrapped(*args: Any, **kwargs: Any) -> WorldModelStep:
        with torch.inference_mode():
            out = step(*args, **kwargs)
        h, c = out.state
        return WorldModelStep(
            out.next_obs.clone(),
            out.reward.clone(),
            out.termination.clone(),
            (h.clone(), c.clone()),
        )

    return wrapped


def prepare_world_model(world_model: WorldModel, options: FastPathOptions) -> WorldModel:
    """A copy of ``world_model`` (weights copied, on its device, in eval mode) that runs with the
    fast paths ``options`` turns on, each a wrapper of one function of the copy: the denoiser's
    ``denoise`` (autocast, CUDA graphs), the reward/end model's ``forward`` (autocast) and the
    model's ``step`` (inference mode); ``channels_last`` and ``compile`` change the copy's
    weights' layout and compile its U-Net. The copy's ``fastpath`` holds ``options``; the
    original is untouched and the global RNG is not consumed. Raises ``ValueError`` for
    ``cuda_graphs`` off CUDA, fp16 off CUDA or an ``autocast_dtype`` other than bf16/fp16."""
    device = world_model.device
    dtype = options.autocast_dtype
    if dtype not in (None, torch.bfloat16, torch.float16):
        raise ValueError(
            f"autocast_dtype: expected None, torch.bfloat16 or torch.float16, got {dtype}"
        )
    if dtype == torch.float16 and device.type != "cuda":
        raise ValueError(f"autocast_dtype: float16 needs a CUDA model, got one on {device}")
    if options.cuda_graphs and device.type != "cuda":
        raise ValueError(f"cuda_graphs: needs a CUDA model, got one on {device}")
    # built on the CPU and overwritten: the meta device would cost seconds of imports in each
    # new process (its decompositions load on first use), more than initialising the weights
    with torch.random.fork_rng(devices=[]):
        fast = WorldModel(
            world_model.config, world_model.game, world_model.action_meanings, world_model.contexts
        )
    fast.load_state_dict(world_model.state_dict())
    fast.env = world_model.env
    fast.sampler_config = world_model.sampler_config
    fast.to(device)
    fast.eval()
    if options.channels_last:
        fast.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # untyped kwarg
    if options.compile:
        fast.denoiser.unet.compile()
    # instance attributes: the wrappers shadow the methods of this copy only
    denoise: DenoiseFn = fast.denoiser.denoise
    if dtype is not None:
        denoise = autocast_denoise(denoise, dtype)
        fast.rew_end.forward = autocast_rew_end(fast.rew_end.forward, dtype)  # type: ignore[method-assign]
    if options.cuda_graphs:
        denoise = GraphedDenoise(denoise)
    fast.denoiser.denoise = denoise  # type: ignore[method-assign]
    if options.inference_mode:
        fast.step = in_inference_mode(fast.step)  # type: ignore[method-assign]
    fast.fastpath = options
    return fast


def with_fastpath(
    world_model: WorldModel,
    fastpath: str | Iterable[str] | None,
    num_envs: int | None = None,
) -> WorldModel:
    """``world_model`` prepared with what ``fastpath`` means on its device (:func:`resolve_fastpath`
    for a batch of ``num_envs``); the model itself when that is nothing."""
    names = resolve_fastpath(fastpath, world_model.device, num_envs)
    if not names:
        return world_model
    return prepare_world_model(world_model, FastPathOptions.from_names(names))
