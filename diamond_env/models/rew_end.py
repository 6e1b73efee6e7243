"""Reward / termination model (docs/method.md §2.2): an action-conditioned residual encoder of each
transition (frame, next frame), an LSTM over time and a small head giving 5 logits.

Frames are float ``(B, T, 3, H, W)`` in [-1, 1], actions int64 ``(B, T)``; ``act[:, t]`` is taken
at ``obs[:, t]`` and leads to ``next_obs[:, t]``. Reward classes are 0, 1, 2 for a reward sign of
-1, 0, +1; termination classes are 0 (continue) and 1 (end).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from diamond_env.config import IMG_SIZE, RewEndConfig
from diamond_env.models.blocks import (
    Downsample,
    ResBlock,
    check_levels,
    check_width,
    conv3x3,
    init_lstm,
)

LstmState = tuple[torch.Tensor, torch.Tensor]
"""``(h, c)``, each float ``(B, lstm_dim)``."""

NUM_REW_CLASSES = 3
NUM_END_CLASSES = 2


class RewEndEncoder(nn.Module):
    """Residual encoder conditioned on a vector: (B, C_in, H, W) -> (B, channels[-1], h, w)
    with ``h = H / 2 ** (len(channels) - 1)``; ends with two attention blocks, whose output goes to
    the LSTM as it is (no final norm or activation, as in DIAMOND's ``RewEndEncoder``)."""

    def __init__(self, config: RewEndConfig) -> None:
        super().__init__()
        check_levels("RewEndConfig", config.channels, config.depths, config.attn_depths)
        chans, cond = config.channels, config.cond_channels
        inputs = (3 if config.frame_difference else 2) * config.img_channels
        self.conv_in = conv3x3(inputs, chans[0])
        self.levels = nn.ModuleList()
        for i, (c, n, attn) in enumerate(
            zip(chans, config.depths, config.attn_depths, strict=True)
        ):
            ins = [chans[max(0, i - 1)]] + [c] * (n - 1)
            self.levels.append(nn.ModuleList(ResBlock(ci, c, cond, attn) for ci in ins))
        self.downsamples = nn.ModuleList(Downsample(c) for c in chans[:-1])
        self.mid = nn.ModuleList(ResBlock(chans[-1], chans[-1], cond, attn=True) for _ in range(2))

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for i, level in enumerate(self.levels):
            if i > 0:
                h = self.downsamples[i - 1](h)
            for block in cast(nn.ModuleList, level):
                h = block(h, cond)
        for block in self.mid:
            h = block(h, cond)
        return h


class RewEndModel(nn.Module):
    """Predicts the reward sign and termination of each transition of a sequence."""

    def __init__(self, config: RewEndConfig, num_actions: int, img_size: int = IMG_SIZE) -> None:
        super().__init__()
        if not isinstance(num_actions, int) or num_actions < 1:
            raise ValueError(f"num_actions: expected a positive int, got {num_actions!r}")
        if not config.event_weight > 0:
            raise ValueError(
                f"event_weight: expected a positive weight, got {config.event_weight!r}"
            )
        check_levels("RewEndConfig", config.channels, config.depths, config.attn_depths)
        check_width("RewEndConfig.cond_channels", config.cond_channels)
        check_width("RewEndConfig.lstm_dim", config.lstm_dim)
        check_width("RewEndConfig.img_channels", config.img_channels, 64)
        check_width("num_actions", num_actions)
        factor = 2 ** (len(config.channels) - 1)
        if img_size % factor != 0:
            raise ValueError(
                f"img_size: expected a multiple of {factor} for {len(config.channels)} levels, "
                f"got {img_size}"
            )
        self.config = config
        self.num_actions = num_actions
        self.img_size = img_size
        self.act_emb = nn.Embedding(num_actions, config.cond_channels)
        self.encoder = RewEndEncoder(config)
        if config.change_grid < 0 or (config.change_grid and img_size % config.change_grid):
            raise ValueError(
                f"change_grid: expected 0 (off) or a divisor of {img_size}, "
                f"got {config.change_grid!r}"
            )
        feat = config.channels[-1] * (img_size // factor) ** 2 + config.change_grid**2
        self.lstm = nn.LSTM(feat, config.lstm_dim, batch_first=True)
        self.head = nn.Sequential(
            nn.Linear(config.lstm_dim, config.lstm_dim),
            nn.SiLU(),
            nn.Linear(config.lstm_dim, NUM_REW_CLASSES + NUM_END_CLASSES, bias=False),
        )
        init_lstm(self.lstm)

    @torch.no_grad()
    def set_constant_logits(self, logits: Sequence[float]) -> None:
        """Make the head give the same 5 logits (reward classes -1, 0, +1, then continue, end)
        for every input, in place: for benchmarks and tests. The last layer has no bias (as in
        DIAMOND), so one hidden unit is held constant and the last layer reads only that one."""
        values = torch.as_tensor(logits, dtype=torch.float32)
        if values.shape != (NUM_REW_CLASSES + NUM_END_CLASSES,):
            raise ValueError(f"logits: expected 5 values, got {tuple(values.shape)}")
        first, last = cast(nn.Linear, self.head[0]), cast(nn.Linear, self.head[-1])
        first.weight.zero_()
        first.bias.zero_()
        first.bias[0] = 3.0
        last.weight.zero_()
        last.weight[:, 0] = values.to(last.weight) / F.silu(torch.tensor(3.0))

    def _check_inputs(self, obs: torch.Tensor, act: torch.Tensor, next_obs: torch.Tensor) -> None:
        c, s = self.config.img_channels, self.img_size
        if obs.ndim != 5 or tuple(obs.shape[2:]) != (c, s, s):
            raise ValueError(f"obs: expected shape (B, T, {c}, {s}, {s}), got {tuple(obs.shape)}")
        if next_obs.shape != obs.shape:
            raise ValueError(
                f"next_obs: expected shape {tuple(obs.shape)}, got {tuple(next_obs.shape)}"
            )
        if tuple(act.shape) != tuple(obs.shape[:2]):
            raise ValueError(f"act: expected shape {tuple(obs.shape[:2])}, got {tuple(act.shape)}")
        if act.dtype != torch.int64:
            raise TypeError(f"act: expected dtype torch.int64, got {act.dtype}")

    def forward(
        self,
        obs: torch.Tensor,
        act: torch.Tensor,
        next_obs: torch.Tensor,
        state: LstmState | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, LstmState]:
        """(B, T, 3, H, W), (B, T) int64, (B, T, 3, H, W), state ``(h, c)`` or None (zeros) ->
        reward logits (B, T, 3), termination logits (B, T, 2), new state."""
        self._check_inputs(obs, act, next_obs)
        b, t = act.shape
        frames = (
            [obs, next_obs, next_obs - obs] if self.config.frame_difference else [obs, next_obs]
        )
        pairs = torch.cat(frames, dim=2).flatten(0, 1)
        feats = self.encoder(pairs, self.act_emb(act.flatten())).reshape(b, t, -1)
        if self.config.change_grid:
            feats = torch.cat([feats, self.change_map(obs, next_obs)], dim=-1)
        hx = None if state is None else (state[0][None].contiguous(), state[1][None].contiguous())
        out, (h, c) = self.lstm(feats, hx)
        logits = self.head(out)
        return logits[..., :NUM_REW_CLASSES], logits[..., NUM_REW_CLASSES:], (h[0], c[0])

    def predict(
        self,
        obs: torch.Tensor,
        act: torch.Tensor,
        next_obs: torch.Tensor,
        state: LstmState | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, LstmState]:
        """As :meth:`forward`, with the weighting of training undone: a cross-entropy that
        weighs rewards and ends ``w = config.event_weight`` learns odds ``w`` times the data's,
        so ``log w`` is taken off their logits (nothing changes with DIAMOND's ``w = 1``).
        What the dream and the evaluations use."""
        logits_rew, logits_end, new_state = self(obs, act, next_obs, state)
        w = self.config.event_weight
        if w != 1.0:
            shift = math.log(w)
            logits_rew = logits_rew - logits_rew.new_tensor([shift, 0.0, shift])
            logits_end = logits_end - logits_end.new_tensor([0.0, shift])
        return logits_rew, logits_end, new_state

    def change_map(self, obs: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
        """(B, T, C, H, W) twice -> (B, T, change_grid ** 2): where the frame changed, and how
        much (mean absolute difference over colours, max over each cell)."""
        b, t = obs.shape[:2]
        change = (next_obs - obs).abs().mean(dim=2).flatten(0, 1)[:, None]
        cells = F.adaptive_max_pool2d(change, self.config.change_grid)
        return cells.reshape(b, t, -1)

    def compute_loss(
        self,
        obs: torch.Tensor,
        act: torch.Tensor,
        next_obs: torch.Tensor,
        rew: torch.Tensor,
        end: torch.Tensor,
        mask: torch.Tensor,
        count: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Cross-entropy of the reward sign and of termination, averaged over unmasked steps
        (rewards and ends weighted ``config.event_weight``, 1 in DIAMOND).

        ``count``: the number of unmasked steps to divide by (a 0-d tensor; default: those of
        this batch). Data-parallel training passes the count over all ranks, so the summed
        gradients are those of the global batch's mean; the metrics are then this rank's
        shares of the global ones.

        ``rew`` (B, T) float raw rewards, ``end`` (B, T) bool, ``mask`` (B, T) bool (False marks
        padding). The LSTM starts from zeros. Returns the summed loss (scalar) and float metrics
        ``loss_rew``, ``loss_end``, ``acc_rew``, ``acc_end``.
        """
        for name, value, dtype in (("end", end, torch.bool), ("mask", mask, torch.bool)):
            if tuple(value.shape) != tuple(act.shape) or value.dtype != dtype:
                raise ValueError(
                    f"{name}: expected {dtype} of shape {tuple(act.shape)}, got {value.dtype} "
                    f"{tuple(value.shape)}"
                )
        if tuple(rew.shape) != tuple(act.shape) or not rew.is_floating_point():
            raise ValueError(
                f"rew: expected float of shape {tuple(act.shape)}, got {rew.dtype} "
                f"{tuple(rew.shape)}"
            )
        logits_rew, logits_end, _ = self(obs, act, next_obs)
        rew_cls = rew.sign().long() + 1
        end_cls = end.long()
        weights = mask.to(logits_rew.dtype)
        count = (weights.sum() if count is None else count.to(weights)).clamp(min=1.0)
        w = self.config.event_weight
        w_rew = None if w == 1.0 else logits_rew.new_tensor([w, 1.0, w])
        w_end = None if w == 1.0 else logits_end.new_tensor([1.0, w])
        ce_rew = F.cross_entropy(
            logits_rew.flatten(0, 1), rew_cls.flatten(), weight=w_rew, reduction="none"
        )
        ce_end = F.cross_entropy(
            logits_end.flatten(0, 1), end_cls.flatten(), weight=w_end, reduction="none"
        )
        loss_rew = (ce_rew * weights.flatten()).sum() / count
        loss_end = (ce_end * weights.flatten()).sum() / count
        with torch.no_grad():
            acc_rew = ((logits_rew.argmax(-1) == rew_cls).to(weights.dtype) * weights).sum() / count
            acc_end = ((logits_end.argmax(-1) == end_cls).to(weights.dtype) * weights).sum() / count
        metrics = {
            "loss_rew": float(loss_rew.detach()),
            "loss_end": float(loss_end.detach()),
            "acc_rew": float(acc_rew),
            "acc_end": float(acc_end),
        }
        return loss_rew + loss_end, metrics
