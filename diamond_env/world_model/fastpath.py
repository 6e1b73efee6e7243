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
- ``fuse``: fewer operations per pass with gradients off (:func:`fuse_modules`): each adaptive
  group norm's scale and shift applied by the norm itself (one operation instead of three at one
  env, two at more), and the reward/end LSTM's single step computed as one cell (two matrix
  products and four activations instead of the general sequence kernel); with gradients on, the
  modules run as they are;
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
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from diamond_env.devices import cpu_has_amx_bf16
from diamond_env.models.blocks import AdaGroupNorm, ResBlock, UNet
from diamond_env.models.rew_end import LstmState, RewEndEncoder
from diamond_env.world_model.model import WorldModel, WorldModelStep

AUTOCAST_NAMES = {"bf16": torch.bfloat16, "fp16": torch.float16}
"""Names of the ``autocast_dtype`` choices in :meth:`FastPathOptions.from_names`."""
FLAG_NAMES = ("channels_last", "fuse", "compile", "inference_mode", "cuda_graphs")
"""The on/off options of :class:`FastPathOptions`."""
DEVICE_DEFAULTS: dict[str, tuple[str, ...]] = {
    "cpu": ("channels_last", "fuse"),
    "cuda": ("cuda_graphs",),
}
"""What ``fastpath="auto"`` turns on, per device type, chosen by measurement
(docs/studies/benchmarks-log.md, "Fast-path defaults" and "CUDA on a lent H200"; docs/benchmarks.md).
CPU: channels-last was never slower over the presets and env counts measured and matches the
plain path up to rare one-level rounding flips of 8-bit pixels; ``fuse`` was faster at every
batch measured and matches the plain path up to float rounding. CUDA: CUDA graphs pay and match
the plain path up to one level; channels-last and bf16 were slower there. Devices not listed have
not been measured and run the plain path. See :data:`AMX_BF16_DEFAULTS` for CPUs with AMX."""
AMX_BF16_DEFAULTS: tuple[str, ...] = ("channels_last", "bf16", "fuse")
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
    fuse: bool = False
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


AMX_BF16_MIN_ENVS = 2
"""Dreams of at least this many envs get bf16 from ``fastpath="auto"`` on AMX CPUs: measured
there faster than fp32 from 2 envs up and slower at 1 env (docs/benchmarks.md)."""


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


class _AffineTable:
    """The scale and shift of every adaptive group norm under one module (a U-Net, an encoder)
    whose forward passes one ``cond`` to all of them, from one matrix product per pass instead of
    one per norm. The stacked weights are rebuilt whenever a norm's linear changed in place."""

    def __init__(self, root: nn.Module) -> None:
        self.norms = [m for m in root.modules() if isinstance(m, AdaGroupNorm)]
        self.params = [p for m in self.norms for p in (m.linear.weight, m.linear.bias)]
        self.current: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._key: tuple[Any, ...] | None = None

    def _stacked(self) -> tuple[torch.Tensor, torch.Tensor]:
        key = tuple((p.data_ptr(), p._version) for p in self.params)
        if key != self._key:
            halves = [(m.linear.weight.chunk(2), m.linear.bias.chunk(2)) for m in self.norms]
            self.weight = torch.cat([w[0] for w, _ in halves] + [w[1] for w, _ in halves])
            self.bias = torch.cat([b[0] for _, b in halves] + [b[1] for _, b in halves])
            self._key = key
        return self.weight, self.bias

    def fill(self, cond: torch.Tensor) -> None:
        """Compute every norm's ``(1 + scale, shift)``, each (B, C), for this pass."""
        weight, bias = self._stacked()
        out = torch.addmm(bias, cond, weight.t())
        total = out.shape[1] // 2
        scale1, shift = out[:, :total] + 1.0, out[:, total:]
        offset = 0
        for m in self.norms:
            c = m.norm.num_channels
            self.current[id(m)] = (scale1[:, offset : offset + c], shift[:, offset : offset + c])
            offset += c

    def wrap(self, forward: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        """The root's ``forward(x, cond)`` filling the table for the pass (gradients off)."""

        def wrapped(x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
            if torch.is_grad_enabled():
                return forward(x, cond)
            self.fill(cond)
            try:
                return forward(x, cond)
            finally:
                self.current.clear()

        return wrapped


def _fused_ada_norm(
    module: AdaGroupNorm, table: _AffineTable | None
) -> Callable[..., torch.Tensor]:
    """``module.forward`` with the scale and shift applied by the group norm itself (its affine
    weight and bias) at batch 1, by one ``addcmul`` at larger batches, taken from ``table`` when
    its root filled it; as it is under autograd."""
    plain, norm = module.forward, module.norm

    def forward(x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            return plain(x, cond)
        packed = None if table is None else table.current.get(id(module))
        if packed is None:
            scale, shift = module.linear(cond).chunk(2, dim=1)
            scale1 = 1.0 + scale
        else:
            scale1, shift = packed
        if x.shape[0] == 1:
            return F.group_norm(x, norm.num_groups, scale1.reshape(-1), shift.reshape(-1), norm.eps)
        normed = F.group_norm(x, norm.num_groups, eps=norm.eps)
        return torch.addcmul(shift[:, :, None, None], normed, scale1[:, :, None, None])

    return forward


def _fused_res_block(block: ResBlock) -> Callable[..., torch.Tensor]:
    """``block.forward`` with its activations and residual sum in place (on tensors the block
    itself just made) and its parts' forwards called directly (no module-call overhead, no
    identity calls); as it is under autograd."""
    plain = block.forward
    conv1, conv2 = block.conv1, block.conv2
    proj = None if isinstance(block.proj, nn.Identity) else cast(nn.Conv2d, block.proj)
    attn = None if isinstance(block.attn, nn.Identity) else block.attn

    def forward(x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            return plain(x, cond)
        h = F.silu(block.norm1.forward(x, cond), inplace=True)
        h = conv1._conv_forward(h, conv1.weight, conv1.bias)
        h = F.silu(block.norm2.forward(h, cond), inplace=True)
        h = conv2._conv_forward(h, conv2.weight, conv2.bias)
        h = h.add_(x if proj is None else proj._conv_forward(x, proj.weight, proj.bias))
        return h if attn is None else attn(h)

    return forward


def _fused_lstm(lstm: nn.LSTM) -> Callable[..., Any]:
    """``lstm.forward`` for one time step of a one-layer, batch-first LSTM computed as one cell
    (the gate order i, f, g, o of ``torch.nn.LSTM``); other calls and autograd as they are."""
    plain = lstm.forward
    simple = lstm.num_layers == 1 and lstm.batch_first and not lstm.bidirectional
    simple = simple and not lstm.proj_size and lstm.bias

    def forward(
        x: torch.Tensor, hx: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        if torch.is_grad_enabled() or not simple or x.ndim != 3 or x.shape[1] != 1:
            return plain(x, hx)
        if hx is None:
            h = c = x.new_zeros((x.shape[0], lstm.hidden_size))
        else:
            h, c = hx[0][0], hx[1][0]
        w_ih, w_hh, b_ih, b_hh = (
            cast(torch.Tensor, getattr(lstm, name))
            for name in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")
        )
        gates = torch.addmm(b_ih, x[:, 0], w_ih.t()) + torch.addmm(b_hh, h, w_hh.t())
        i, f, g, o = gates.chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h[:, None], (h[None], c[None])

    return forward


def fuse_modules(model: nn.Module) -> None:
    """Give every adaptive group norm and LSTM of ``model`` the fused inference forward of the
    ``fuse`` fast path, and every U-Net and reward/end encoder (one ``cond`` for all their norms)
    one matrix product for all their norms' scales and shifts (instance attributes: other
    instances of the classes are untouched)."""
    tables: dict[int, _AffineTable] = {}
    for root in model.modules():
        if isinstance(root, UNet | RewEndEncoder):
            table = _AffineTable(root)
            root.forward = table.wrap(root.forward)  # type: ignore[method-assign]
            tables.update({id(m): table for m in table.norms})
    for module in model.modules():
        if isinstance(module, AdaGroupNorm):
            module.forward = _fused_ada_norm(module, tables.get(id(module)))  # type: ignore[method-assign]
        elif isinstance(module, ResBlock):
            module.forward = _fused_res_block(module)  # type: ignore[method-assign]
        elif isinstance(module, nn.LSTM):
            module.forward = _fused_lstm(module)  # type: ignore[method-assign]


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
    model's ``step`` (inference mode); ``channels_last``, ``fuse`` and ``compile`` change the
    copy's weights' layout, its norms' and LSTM's forward (:func:`fuse_modules`) and compile its
    U-Net. The copy's ``fastpath`` holds ``options``; the
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
    if options.fuse:
        fuse_modules(fast)
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
