"""λ-returns and the actor-critic loss of DIAMOND (docs/method.md §4), as pure functions.

Time convention (a rollout of ``T`` steps in ``B`` parallel envs with same-step autoreset):

* ``values[:, t]`` is V(obs_t), the value of the observation the agent acted on at step ``t``;
  ``values[:, T]`` is the value of the observation returned by the last step.
* step ``t`` returns ``rewards[:, t]``, ``terminations[:, t]`` and ``truncations[:, t]``.
* after a termination or truncation at step ``t`` the env resets in the same step, so
  ``obs_{t+1}`` (and ``values[:, t+1]``) belong to a **new** episode. The observation the old
  episode ended on is ``info["final_obs"]``; its value goes into ``final_values[:, t]``.

Nothing flows across an episode boundary: at a termination there is no bootstrap, at a
truncation the return bootstraps from ``final_values[:, t]``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def lambda_returns(
    rewards: torch.Tensor,
    values: torch.Tensor,
    terminations: torch.Tensor,
    truncations: torch.Tensor,
    gamma: float,
    lambda_: float,
    *,
    final_values: torch.Tensor | None = None,
    sign_clip: bool = True,
) -> torch.Tensor:
    """λ-returns ``G`` float ``(B, T)`` of a rollout (see the module docstring for the timeline).

    Backward recursion, with ``G_T = V_T`` at the end of the horizon::

        G_t = r_t                                         if terminations[t]
        G_t = r_t + γ final_values[t]                     elif truncations[t]
        G_t = r_t + γ ((1 - λ) V_{t+1} + λ G_{t+1})       otherwise

    Args:
        rewards: float ``(B, T)``. Sign-clipped to {-1, 0, +1} here when ``sign_clip`` is True
            (the default, as DIAMOND does); pass ``sign_clip=False`` if the caller already did or
            wants raw rewards.
        values: float ``(B, T + 1)``, ``values[:, t] = V(obs_t)``; ``values[:, t + 1]`` is ignored
            where step ``t`` ended an episode.
        terminations: bool ``(B, T)``; a termination wins over a truncation at the same step.
        truncations: bool ``(B, T)``.
        gamma: discount in [0, 1]. lambda_: λ in [0, 1] (0: one-step TD targets, 1: Monte-Carlo
            returns bootstrapped at the horizon and at truncations).
        final_values: float ``(B, T)``, V(final obs) of the episode that step ``t`` truncated;
            read only where ``truncations`` is True and ``terminations`` False (fill the rest with
            anything, e.g. zeros). Required when any truncation occurs.

    The result carries gradients of its inputs; pass detached values for targets
    (:func:`actor_critic_loss` detaches ``returns`` itself).
    """
    if rewards.dim() != 2 or rewards.dtype == torch.bool:
        raise ValueError(
            f"rewards: expected a real tensor of shape (B, T), got {rewards.dtype} "
            f"{tuple(rewards.shape)}"
        )
    b, t_len = rewards.shape
    if not values.is_floating_point():
        raise ValueError(f"values: expected a float tensor, got {values.dtype}")
    if values.shape != (b, t_len + 1):
        raise ValueError(f"values: expected shape {(b, t_len + 1)}, got {tuple(values.shape)}")
    for name, flags in (("terminations", terminations), ("truncations", truncations)):
        if flags.shape != (b, t_len) or flags.dtype != torch.bool:
            raise ValueError(
                f"{name}: expected bool of shape {(b, t_len)}, got {flags.dtype} {tuple(flags.shape)}"
            )
    for name, x in (("gamma", gamma), ("lambda_", lambda_)):
        if not 0.0 <= x <= 1.0:
            raise ValueError(f"{name}: expected a float in [0, 1], got {x}")
    if final_values is None:
        if bool(truncations.any()):
            raise ValueError(
                "final_values: required when truncations has a True entry (the value of "
                "info['final_obs'] to bootstrap from), got None"
            )
        final_values = torch.zeros_like(rewards, dtype=values.dtype)
    elif final_values.shape != (b, t_len):
        raise ValueError(
            f"final_values: expected shape {(b, t_len)}, got {tuple(final_values.shape)}"
        )
    rew = rewards.to(values.dtype)
    if sign_clip:
        rew = rew.sign()
    returns = []
    next_return = values[:, t_len]
    for t in reversed(range(t_len)):
        continuing = (1.0 - lambda_) * values[:, t + 1] + lambda_ * next_return
        bootstrap = torch.where(truncations[:, t], final_values[:, t].to(values.dtype), continuing)
        bootstrap = torch.where(terminations[:, t], 0.0, bootstrap)
        next_return = rew[:, t] + gamma * bootstrap
        returns.append(next_return)
    if not returns:
        return rew.clone()
    return torch.stack(returns[::-1], dim=1)


def actor_critic_loss(
    logits: torch.Tensor,
    values: torch.Tensor,
    actions: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor | None = None,
    entropy_weight: float = 1e-3,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """REINFORCE with a value baseline, value regression and an entropy bonus (docs/method.md §4).

    ``loss = mean[-log π(a_t) · sg(G_t - V_t) + (sg(G_t) - V_t)² - entropy_weight · H(π_t)]``

    Args:
        logits: float ``(B, T, A)`` policy logits at each step.
        values: float ``(B, T)`` V(obs_t), with gradients.
        actions: int64 ``(B, T)`` actions taken.
        returns: float ``(B, T)`` targets from :func:`lambda_returns` (detached here).
        mask: bool ``(B, T)``, True for steps that count; the mean runs over those only (masked
            entries may hold anything, even NaN). None: every step counts.
        entropy_weight: weight of the entropy bonus (DIAMOND: 0.001).

    Returns:
        The scalar loss and a dict of detached 0-d tensors: ``loss``, ``policy_loss``,
        ``value_loss``, ``entropy``, ``advantage``, ``return``, ``value`` (means over valid steps;
        no host sync happens here).
    """
    b, t_len = _check_2d(values, "values")
    if logits.dim() != 3 or logits.shape[:2] != (b, t_len):
        raise ValueError(f"logits: expected shape ({b}, {t_len}, A), got {tuple(logits.shape)}")
    if actions.shape != (b, t_len) or actions.dtype != torch.int64:
        raise ValueError(
            f"actions: expected int64 of shape {(b, t_len)}, got {actions.dtype} {tuple(actions.shape)}"
        )
    if returns.shape != (b, t_len):
        raise ValueError(f"returns: expected shape {(b, t_len)}, got {tuple(returns.shape)}")
    if mask is None:
        mask = torch.ones(b, t_len, dtype=torch.bool, device=values.device)
    elif mask.shape != (b, t_len) or mask.dtype != torch.bool:
        raise ValueError(
            f"mask: expected bool of shape {(b, t_len)}, got {mask.dtype} {tuple(mask.shape)}"
        )
    count = mask.sum().clamp(min=1)

    def masked_mean(x: torch.Tensor) -> torch.Tensor:
        return torch.where(mask, x, 0.0).sum() / count

    log_probs = F.log_softmax(logits, dim=-1)
    safe_actions = torch.where(mask, actions, 0)
    log_prob_taken = log_probs.gather(-1, safe_actions[..., None]).squeeze(-1)
    finite_log_probs = log_probs.clamp(min=torch.finfo(log_probs.dtype).min)  # 0·(-inf) -> 0
    entropy = -(log_probs.exp() * finite_log_probs).sum(dim=-1)
    target = returns.detach()
    advantage = target - values.detach()
    policy_loss = masked_mean(-log_prob_taken * advantage)
    value_loss = masked_mean((target - values) ** 2)
    mean_entropy = masked_mean(entropy)
    loss = policy_loss + value_loss - entropy_weight * mean_entropy
    metrics = {
        "loss": loss,
        "policy_loss": policy_loss,
        "value_loss": value_loss,
        "entropy": mean_entropy,
        "advantage": masked_mean(advantage),
        "return": masked_mean(target),
        "value": masked_mean(values),
    }
    return loss, {k: v.detach() for k, v in metrics.items()}


def _check_2d(x: torch.Tensor, name: str) -> tuple[int, int]:
    if x.dim() != 2 or not x.is_floating_point():
        raise ValueError(
            f"{name}: expected a float tensor of shape (B, T), got {x.dtype} {tuple(x.shape)}"
        )
    return x.shape[0], x.shape[1]
