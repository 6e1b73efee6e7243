"""Optimisers of SPEC §2.3: AdamW, linear warm-up, gradient-norm clipping."""

from __future__ import annotations

import torch
from torch import nn

from diamond_env.config import OptimConfig


def make_optimizer(
    module: nn.Module, cfg: OptimConfig
) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW over ``module``'s parameters and a scheduler that warms the rate up linearly."""
    opt = torch.optim.AdamW(
        module.parameters(), lr=cfg.lr, eps=cfg.eps, weight_decay=cfg.weight_decay
    )
    warmup = max(1, cfg.warmup_steps)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: min(1.0, (step + 1) / warmup))
    return opt, sched


def optimizer_step(
    loss: torch.Tensor,
    module: nn.Module,
    opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LRScheduler,
    max_grad_norm: float,
) -> float:
    """Backward, clip, step, schedule; returns the gradient norm before clipping."""
    opt.zero_grad(set_to_none=True)
    loss.backward()  # type: ignore[no-untyped-call]
    grad_norm = nn.utils.clip_grad_norm_(module.parameters(), max_grad_norm)
    opt.step()
    sched.step()
    return float(grad_norm)
