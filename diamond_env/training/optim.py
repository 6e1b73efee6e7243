"""Optimisers of docs/method.md §2.3: AdamW, linear warm-up, gradient-norm clipping."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from diamond_env.config import OptimConfig


def make_optimizer(
    module: nn.Module, cfg: OptimConfig
) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW over ``module``'s parameters and a scheduler that warms the rate up linearly.

    As in DIAMOND (``src/utils.py``, ``configure_opt`` and ``get_lr_sched``): weight decay applies
    to the weights of linear, convolution and LSTM layers only (no biases, norms or embeddings),
    and the rate of step ``s`` is ``lr * min(1, s / warmup_steps)``, so the very first step has
    rate 0.
    """
    decay, no_decay = decay_groups(module)
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(groups, lr=cfg.lr, eps=cfg.eps)
    warmup = cfg.warmup_steps
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: 1.0 if step >= warmup else step / max(1, warmup)
    )
    return opt, sched


_DECAYED_MODULES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.LSTM, nn.LSTMCell)


def decay_groups(module: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """``module``'s parameters split into (decayed, not decayed), each sorted by name: the
    weights of linear, convolution and LSTM layers are decayed, everything else is not."""
    decay: dict[str, nn.Parameter] = {}
    no_decay: dict[str, nn.Parameter] = {}
    for prefix, sub in module.named_modules():
        for name, p in sub.named_parameters(recurse=False):
            full = f"{prefix}.{name}" if prefix else name
            is_weight = name.endswith("weight") or name.startswith("weight_")
            (decay if is_weight and isinstance(sub, _DECAYED_MODULES) else no_decay)[full] = p
    return [decay[k] for k in sorted(decay)], [no_decay[k] for k in sorted(no_decay)]


def optimizer_step(
    loss: torch.Tensor,
    module: nn.Module,
    opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LRScheduler,
    max_grad_norm: float,
    reduce_gradients: Callable[[nn.Module], object] | None = None,
) -> float:
    """Backward, clip, step, schedule; returns the gradient norm before clipping.

    ``reduce_gradients(module)``, when given, runs between the backward pass and clipping (the
    data-parallel all-reduce), so clipping sees the gradient of the whole batch.
    """
    opt.zero_grad(set_to_none=True)
    loss.backward()  # type: ignore[no-untyped-call]
    if reduce_gradients is not None:
        reduce_gradients(module)
    grad_norm = nn.utils.clip_grad_norm_(module.parameters(), max_grad_norm)
    opt.step()
    sched.step()
    return float(grad_norm)
