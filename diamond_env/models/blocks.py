"""Network building blocks shared by the denoiser and the reward/termination model.

Every residual block is conditioned by a vector ``cond`` of shape ``(B, cond_channels)`` through
adaptive group norm (a per-channel scale and shift predicted from ``cond``). Feature maps are
float ``(B, C, H, W)``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from diamond_env.run.safe_io import MAX_DEPTH, MAX_LEVELS, MAX_WIDTH, InputError, check_int

GROUP_SIZE = 32
"""Channels per group in every group norm."""

GN_EPS = 1e-5


def num_groups(channels: int) -> int:
    """Groups for a group norm over ``channels`` channels: one group per 32 channels, at least 1."""
    return max(1, channels // GROUP_SIZE)


def group_norm(channels: int, affine: bool = True) -> nn.GroupNorm:
    """Group norm with :data:`GROUP_SIZE` channels per group."""
    return nn.GroupNorm(num_groups(channels), channels, eps=GN_EPS, affine=affine)


def zero_init(conv: nn.Conv2d, bias: bool = True) -> nn.Conv2d:
    """Set the weight of ``conv`` (and its bias unless ``bias=False``) to zero in place; return it.

    DIAMOND zeroes the weight alone of its output convs and of each residual block's second
    conv, and both weight and bias of the attention output projection.
    """
    nn.init.zeros_(conv.weight)
    if bias and conv.bias is not None:
        nn.init.zeros_(conv.bias)
    return conv


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution with padding 1 (keeps the size when ``stride`` is 1, halves it at 2)."""
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1)


class AdaGroupNorm(nn.Module):
    """Group norm without own affine parameters; scale and shift are predicted from ``cond``."""

    def __init__(self, channels: int, cond_channels: int) -> None:
        super().__init__()
        self.norm = group_norm(channels, affine=False)
        self.linear = nn.Linear(cond_channels, 2 * channels)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """``x`` (B, C, H, W), ``cond`` (B, cond_channels) -> (B, C, H, W).

        Returns ``normalised(x) * (1 + scale) + shift``.
        """
        scale, shift = self.linear(cond)[:, :, None, None].chunk(2, dim=1)
        return self.norm(x) * (1.0 + scale) + shift


class SelfAttention2d(nn.Module):
    """Multi-head self-attention over the pixels of a feature map, zero-initialised output.

    As in DIAMOND (``src/models/blocks.py``), the residual is taken around the *normalised* input:
    ``GN(x) + out(attention(GN(x)))``. Heads have ``head_dim`` channels (one head when there are
    fewer channels than that).
    """

    def __init__(self, channels: int, head_dim: int = 8) -> None:
        super().__init__()
        self.num_heads = max(1, channels // head_dim)
        if channels % self.num_heads != 0:
            raise ValueError(
                f"channels: expected a multiple of head_dim={head_dim}, got {channels}"
            )
        self.norm = group_norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, kernel_size=1)
        self.out = zero_init(nn.Conv2d(channels, channels, kernel_size=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        b, c, h, w = x.shape
        x = self.norm(x)
        head_dim = c // self.num_heads
        qkv = self.qkv(x).view(b, 3 * self.num_heads, head_dim, h * w).transpose(2, 3)
        q, k, v = qkv.contiguous().chunk(3, dim=1)  # each (B, heads, HW, head_dim)
        # Written out rather than F.scaled_dot_product_attention: the same operations in the same
        # order as DIAMOND's code, so converted checkpoints give its numbers to the last bit.
        weights = ((q @ k.transpose(-2, -1)) / math.sqrt(head_dim)).softmax(dim=-1)
        y = (weights @ v).transpose(2, 3).reshape(b, c, h, w)
        return x + self.out(y)


class ResBlock(nn.Module):
    """GN-SiLU-conv twice with adaptive GN, 1x1 projection on the skip when channels change,
    optional self-attention after the sum. The second conv starts at zero (block = identity)."""

    def __init__(self, in_channels: int, out_channels: int, cond_channels: int, attn: bool) -> None:
        super().__init__()
        self.proj: nn.Module = (
            nn.Conv2d(in_channels, out_channels, kernel_size=1)
            if in_channels != out_channels
            else nn.Identity()
        )
        self.norm1 = AdaGroupNorm(in_channels, cond_channels)
        self.conv1 = conv3x3(in_channels, out_channels)
        self.norm2 = AdaGroupNorm(out_channels, cond_channels)
        self.conv2 = zero_init(conv3x3(out_channels, out_channels), bias=False)
        self.attn: nn.Module = SelfAttention2d(out_channels) if attn else nn.Identity()

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """(B, in_channels, H, W), cond (B, cond_channels) -> (B, out_channels, H, W)."""
        h = self.conv1(F.silu(self.norm1(x, cond)))
        h = self.conv2(F.silu(self.norm2(h, cond)))
        return self.attn(h + self.proj(x))


def _on_meta(t: torch.Tensor) -> bool:
    """Whether ``t`` is a meta tensor (the size checks of :mod:`diamond_env.run.safe_io`): only its
    shape counts there, and a random initialisation on the meta device would load torch's
    decompositions, seconds on a process's first call."""
    return t.device.type == "meta"


class FourierFeatures(nn.Module):
    """Random Fourier features of a scalar: ``cat(cos(2π w t), sin(2π w t))``, w ~ N(0, 1).

    The frequencies are a persistent buffer, so they travel with the weights.
    """

    freqs: torch.Tensor

    def __init__(self, dim: int) -> None:
        super().__init__()
        if dim < 2 or dim % 2 != 0:
            raise ValueError(f"dim: expected an even integer >= 2, got {dim}")
        empty = torch.empty(dim // 2)
        self.register_buffer("freqs", empty if _on_meta(empty) else torch.randn(dim // 2))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """(B,) float -> (B, dim)."""
        angles = 2.0 * math.pi * t[:, None].float() * self.freqs[None, :]
        return torch.cat([angles.cos(), angles.sin()], dim=-1)


class Downsample(nn.Module):
    """Stride-2 3x3 convolution: (B, C, H, W) -> (B, C, H/2, W/2); orthogonal initial weight."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = conv3x3(channels, channels, stride=2)
        nn.init.orthogonal_(self.conv.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest-neighbour x2 then 3x3 convolution: (B, C, H, W) -> (B, C, 2H, 2W)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = conv3x3(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def check_levels(
    where: str, channels: Sequence[int], depths: Sequence[int], attn_depths: Sequence[bool]
) -> None:
    """Raise ``ValueError`` unless the three per-level sequences are non-empty and equally long."""
    if not (len(channels) == len(depths) == len(attn_depths) >= 1):
        raise ValueError(
            f"{where}: channels, depths and attn_depths must have the same non-zero length, got "
            f"{len(channels)}, {len(depths)} and {len(attn_depths)}"
        )
    if min(depths) < 1 or min(channels) < 1:
        raise ValueError(
            f"{where}: expected positive depths and channels, got {depths}, {channels}"
        )
    if len(channels) > MAX_LEVELS or max(depths) > MAX_DEPTH or max(channels) > MAX_WIDTH:
        raise InputError(
            f"{where}: at most {MAX_LEVELS} levels of at most {MAX_DEPTH} blocks and {MAX_WIDTH} "
            f"channels, got channels {tuple(channels)}, depths {tuple(depths)}"
        )


def check_width(where: str, value: Any, high: int = MAX_WIDTH) -> None:
    """``value`` must be an int in ``[1, high]`` (a width read from a config)."""
    check_int(value, where, 1, high)


class UNet(nn.Module):
    """U-Net with a skip from the input of every level and from every block.

    Level ``i`` works at resolution ``H / 2**i`` with ``channels[i]`` channels and ``depths[i]``
    down blocks; the decoder has ``depths[i] + 1`` blocks per level, each taking one skip. Two
    blocks with self-attention sit at the bottom. Input and output have ``channels[0]`` channels.
    """

    def __init__(
        self,
        cond_channels: int,
        channels: Sequence[int],
        depths: Sequence[int],
        attn_depths: Sequence[bool],
    ) -> None:
        super().__init__()
        check_levels("UNet", channels, depths, attn_depths)
        self.down = nn.ModuleList()
        self.up = nn.ModuleList()
        for i, (c, n, attn) in enumerate(zip(channels, depths, attn_depths, strict=True)):
            c_prev = channels[max(0, i - 1)]
            ins = [c_prev] + [c] * (n - 1)
            self.down.append(nn.ModuleList(ResBlock(ci, c, cond_channels, attn) for ci in ins))
            up_ins = [2 * c] * n + [c + c_prev]
            up_outs = [c] * n + [c_prev]
            self.up.insert(
                0,
                nn.ModuleList(
                    ResBlock(ci, co, cond_channels, attn)
                    for ci, co in zip(up_ins, up_outs, strict=True)
                ),
            )
        self.mid = nn.ModuleList(
            ResBlock(channels[-1], channels[-1], cond_channels, attn=True) for _ in range(2)
        )
        self.downsamples = nn.ModuleList(Downsample(c) for c in channels[:-1])
        self.upsamples = nn.ModuleList(Upsample(c) for c in reversed(channels[:-1]))

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """(B, channels[0], H, W), cond (B, cond_channels) -> (B, channels[0], H, W).

        H and W must be divisible by ``2 ** (len(channels) - 1)``.
        """
        skips: list[torch.Tensor] = []
        for i, level in enumerate(self.down):
            if i > 0:
                x = self.downsamples[i - 1](x)
            skips.append(x)
            for block in cast(nn.ModuleList, level):
                x = block(x, cond)
                skips.append(x)
        for block in self.mid:
            x = block(x, cond)
        for i, level in enumerate(self.up):
            if i > 0:
                x = self.upsamples[i - 1](x)
            for block in cast(nn.ModuleList, level):
                x = block(torch.cat([x, skips.pop()], dim=1), cond)
        return x


def init_lstm(lstm: nn.LSTM | nn.LSTMCell) -> None:
    """DIAMOND's LSTM initialisation, in place: Xavier-uniform input weights, orthogonal recurrent
    weights, zero biases except a forget-gate bias of 1 (on ``bias_ih``)."""
    for name, p in lstm.named_parameters():
        with torch.no_grad():
            if name.startswith("weight_ih"):
                nn.init.xavier_uniform_(p)
            elif name.startswith("weight_hh"):
                nn.init.orthogonal_(p)
            elif name.startswith("bias"):
                p.zero_()
                if name.startswith("bias_ih"):
                    gates = p.shape[0] // 4  # PyTorch's gate order: input, forget, cell, output
                    p[gates : 2 * gates] = 1.0


def count_params(module: nn.Module) -> int:
    """Number of trainable parameters of ``module``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def count_flops(module: nn.Module, inputs: Sequence[Any]) -> int:
    """FLOPs of one call ``module(*inputs)``, counted by PyTorch's ``FlopCounterMode``.

    The count runs on copies of the module and of the tensor inputs on the ``meta`` device, so
    nothing is computed and the fused attention kernels are counted too (PyTorch's CPU attention
    kernel is not). A multiply-add counts as 2 FLOPs; only matrix products, convolutions and
    attention are counted (norms, activations and interpolation are not).
    """
    meta_module = copy.deepcopy(module).to("meta")
    meta_inputs = [x.to("meta") if isinstance(x, torch.Tensor) else x for x in inputs]
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        meta_module(*meta_inputs)
    return int(counter.get_total_flops())
