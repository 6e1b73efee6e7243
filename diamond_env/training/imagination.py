"""Training the actor-critic in imagination only (SPEC §4).

One gradient step = one batch of dream rollouts on a :class:`DreamSimulator` (all tensors on the
simulator's device, no numpy):

1. every env restarts from a real context of the world model's bank (seeded from the trainer's
   generator, so a resumed run replays the same dreams);
2. the actor-critic's LSTM is burnt in (no gradient) over the first ``L - 1`` context frames, and
   the first step consumes the last one, so the agent has seen all ``L`` frames when it acts;
3. ``horizon`` steps: sample ``a_t ~ π(obs_t)``, dream one step. An env that terminates mid-way is
   restarted by the simulator in the same step; its LSTM state is zeroed and burnt in on the new
   context. Every env is truncated when ``horizon`` steps have passed since its (re)start, and the
   value of the frame it was truncated on is the bootstrap;
4. λ-returns (γ, λ, rewards sign-clipped) and REINFORCE with a value baseline and an entropy bonus,
   back-propagated through the whole rollout; AdamW with warm-up and gradient clipping.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from diamond_env.config import Config
from diamond_env.envs.simulator import DreamSimulator
from diamond_env.models.actor_critic import ActorCritic, State
from diamond_env.training.optim import make_optimizer, optimizer_step
from diamond_env.training.returns import actor_critic_loss, lambda_returns
from diamond_env.world_model import WorldModel

_STEP_FIELDS = ("logits", "values", "final_values", "actions", "rewards", "terminations",
                "truncations")  # fmt: skip


@dataclass
class Rollout:
    """One batch of dream trajectories, ``B`` envs by ``T`` steps.

    ``logits`` float (B, T, A) and ``values`` float (B, T) carry gradients; ``bootstrap`` (B,) is
    V(obs_T) (no gradient); ``final_values`` (B, T) V(final frame) where a step truncated (zeros
    elsewhere); ``actions`` int64, ``rewards`` float, ``terminations``/``truncations`` bool, all
    (B, T).
    """

    logits: torch.Tensor
    values: torch.Tensor
    bootstrap: torch.Tensor
    final_values: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    terminations: torch.Tensor
    truncations: torch.Tensor


class ImaginationTrainer:
    """Trains ``actor_critic`` on dreams of ``world_model`` with the settings of ``config``.

    Args:
        actor_critic: the agent; must be on the world model's device.
        world_model: the (frozen here) world model; its context bank supplies the starts.
        config: ``config.imagination`` (batch size, horizon, γ, λ, entropy weight) and
            ``config.actor_critic_optim`` are used.
        seed: seeds the dreams and the action draws.
        num_denoising_steps: override of the world model's sampler (None: its own).
    """

    def __init__(
        self,
        actor_critic: ActorCritic,
        world_model: WorldModel,
        config: Config,
        *,
        seed: int = 0,
        num_denoising_steps: int | None = None,
    ) -> None:
        if actor_critic.num_actions != world_model.num_actions:
            raise ValueError(
                f"actor_critic: expected {world_model.num_actions} actions (the world model's "
                f"game), got {actor_critic.num_actions}"
            )
        if actor_critic.device != world_model.device:
            raise ValueError(
                f"actor_critic: expected it on the world model's device {world_model.device}, "
                f"got {actor_critic.device}"
            )
        self.actor_critic = actor_critic
        self.world_model = world_model
        self.config = config
        self.num_denoising_steps = num_denoising_steps
        self.simulator = self._make_simulator(seed)
        self.opt, self.sched = make_optimizer(actor_critic, config.actor_critic_optim)
        self.seeds = torch.Generator().manual_seed(seed)
        self.action_generator = torch.Generator(device=world_model.device).manual_seed(seed + 1)
        self.grad_steps = 0

    @property
    def device(self) -> torch.device:
        return self.world_model.device

    def _make_simulator(self, seed: int) -> DreamSimulator:
        imagination = self.config.imagination
        return DreamSimulator(
            self.world_model,
            imagination.batch_size,
            horizon=imagination.horizon,
            num_denoising_steps=self.num_denoising_steps,
            seed=seed,
        )

    def refresh_contexts(self) -> None:
        """Start dreams from the world model's current context bank (after it was replaced)."""
        self.simulator = self._make_simulator(0)  # every rollout reseeds it anyway

    def _burn_in(self, context: torch.Tensor) -> State:
        with torch.no_grad():
            return self.actor_critic.burn_in(context[:, :-1])

    def rollout(self) -> Rollout:
        """Dream ``horizon`` steps in every env from fresh real contexts (see the module doc)."""
        sim, ac = self.simulator, self.actor_critic
        seed = int(torch.randint(0, 2**62, (1,), generator=self.seeds).item())
        sim.reset(seed=seed)
        context = sim.context_obs
        state = self._burn_in(context)
        obs = context[:, -1]
        steps: dict[str, list[torch.Tensor]] = {name: [] for name in _STEP_FIELDS}
        zeros = torch.zeros(sim.num_envs, device=self.device)
        for _ in range(self.config.imagination.horizon):
            logits, value, state = ac(obs, state)
            probs = logits.detach().softmax(dim=-1)
            action = torch.multinomial(probs, 1, generator=self.action_generator).squeeze(-1)
            out = sim.step(action)
            final_value = zeros
            if bool(out.truncated.any()):
                with torch.no_grad():
                    _, v_final, _ = ac(out.final_obs, state)
                final_value = torch.where(out.truncated, v_final, zeros)
            done = out.terminated | out.truncated
            if bool(done.any()):
                state = self._restart(state, done)
            items = (logits, value, final_value, action, out.reward, out.terminated, out.truncated)
            for name, item in zip(_STEP_FIELDS, items, strict=True):
                steps[name].append(item)
            obs = out.obs
        with torch.no_grad():
            _, bootstrap, _ = ac(obs, state)
        stacked = {name: torch.stack(items, dim=1) for name, items in steps.items()}
        return Rollout(bootstrap=bootstrap, **stacked)

    def _restart(self, state: State, done: torch.Tensor) -> State:
        """Zero the LSTM rows of the envs that restarted and burn them in on their new context."""
        rows = done.nonzero().squeeze(-1)
        fresh = self._burn_in(self.simulator.context_obs[rows])
        keep = ~done[:, None]
        restarted = []
        for old, new in zip(state, fresh, strict=True):
            full = torch.zeros_like(old.detach())
            full[rows] = new
            restarted.append(torch.where(keep, old, full))
        return restarted[0], restarted[1]

    def train_step(self) -> dict[str, float]:
        """One rollout and one optimiser step; returns scalar metrics (``actor_critic/...``)."""
        imagination = self.config.imagination
        self.actor_critic.train()
        ro = self.rollout()
        values = torch.cat([ro.values, ro.bootstrap[:, None]], dim=1)
        returns = lambda_returns(
            ro.rewards, values.detach(), ro.terminations, ro.truncations,
            imagination.gamma, imagination.lambda_, final_values=ro.final_values,
        )  # fmt: skip
        loss, parts = actor_critic_loss(
            ro.logits, ro.values, ro.actions, returns, entropy_weight=imagination.entropy_weight
        )
        grad_norm = optimizer_step(
            loss, self.actor_critic, self.opt, self.sched,
            self.config.actor_critic_optim.max_grad_norm,
        )  # fmt: skip
        self.grad_steps += 1
        metrics = {f"actor_critic/{k}": float(v) for k, v in parts.items()}
        metrics["actor_critic/grad_norm"] = grad_norm
        metrics["actor_critic/imagined_reward"] = float(ro.rewards.sum(dim=1).mean())
        metrics["actor_critic/imagined_terminations"] = float(ro.terminations.float().mean())
        return metrics

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs (plain tensors and numbers)."""
        return {
            "actor_critic": self.actor_critic.state_dict(),
            "opt": self.opt.state_dict(),
            "sched": self.sched.state_dict(),
            "seeds": self.seeds.get_state(),
            "action_generator": self.action_generator.get_state(),
            "grad_steps": self.grad_steps,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.actor_critic.load_state_dict(state["actor_critic"])
        self.opt.load_state_dict(state["opt"])
        self.sched.load_state_dict(state["sched"])
        self.seeds.set_state(state["seeds"])
        self.action_generator.set_state(state["action_generator"])
        self.grad_steps = int(state["grad_steps"])
