"""Training the actor-critic in imagination only (docs/method.md §4), as DIAMOND's env loop does it.

One gradient step = ``horizon`` steps of ``B`` dreams on a :class:`DreamSimulator` (all tensors on
the simulator's device, no numpy). The dreams **run on across gradient steps** (DIAMOND,
``src/coroutines/env_loop.py``): a step continues each dream where the previous one stopped, so
dreams drift out of phase and episodes cross the ``horizon``-step windows.

1. The very first reset starts every env from a real context with a zero LSTM state and no
   burn-in of the actor-critic (DIAMOND ``env_loop.py:18-22``).
2. Each step: ``a_t ~ π(obs_t)``, dream one step. An env that terminates, or is truncated
   ``horizon`` steps after its (re)start, restarts in the same step from a fresh context; its
   LSTM state is zeroed and burnt in over the new context's first ``L - 1`` frames **with
   gradients** (DIAMOND ``env_loop.py:53-56``), and V(final frame) is the truncation bootstrap.
3. λ-returns (γ, λ, rewards sign-clipped), bootstrapped with V(obs_T) at the window's end, and
   REINFORCE with a value baseline and an entropy bonus; AdamW with warm-up and clipping. The
   LSTM state is detached between gradient steps.

Starting contexts come from the world model's bank, or, in the full training loop, from
:class:`ReplayContexts`: windows of the replay drawn with the recency weights, left padding
allowed (0.0), preloaded in batches and served in order as DIAMOND's ``WorldModelEnv`` does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from diamond_env.config import Config
from diamond_env.data.episode import FlatData
from diamond_env.data.segments import Segment, SegmentSampler, to_torch
from diamond_env.dream.contexts import ContextSource
from diamond_env.dream.simulator import DreamSimulator
from diamond_env.models.actor_critic import ActorCritic, State
from diamond_env.training.distributed import Distributed
from diamond_env.training.optim import make_optimizer, optimizer_step
from diamond_env.training.returns import actor_critic_loss, lambda_returns
from diamond_env.world_model.fastpath import GraphedDenoise
from diamond_env.world_model.model import WorldModel

_STEP_FIELDS = (
    "logits",
    "values",
    "final_values",
    "actions",
    "rewards",
    "terminations",
    "truncations",
)


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


class ReplayContexts:
    """Starting contexts from real play: windows of ``num_context`` frames of one life, drawn with
    the recency weights, padding allowed before a life's start (DIAMOND's actor-critic data loader,
    ``src/trainer.py:176-180``). ``preload`` windows are drawn at once and served in order; when
    fewer are left than asked for, a fresh set is drawn (``src/envs/world_model_env.py``). DIAMOND
    also burns the reward/end model in at preload time; here the simulator burns each context in
    when it starts, with the current weights. Frames are kept as uint8 until served.
    """

    def __init__(
        self,
        data: FlatData,
        num_context: int,
        recency_weights: tuple[float, ...],
        device: torch.device | str,
        *,
        preload: int = 8192,
        seed: int | tuple[int, ...] = 0,
    ) -> None:
        if preload < 1:
            raise ValueError(f"preload: expected a positive int, got {preload}")
        self.sampler = SegmentSampler(
            data, num_context, pad_after_end=False, recency_weights=recency_weights, seed=seed
        )
        self.device = torch.device(device)
        self.preload = preload
        self._segment: Segment | None = None
        self._cursor = 0

    def update(self, data: FlatData) -> None:
        """Draw from ``data`` from the next preload on (the current set is served first)."""
        self.sampler.update(data)

    def draw(self, uniforms: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """:class:`~diamond_env.dream.contexts.ContextSource`: ``len(uniforms)`` contexts from this
        source's own recency-weighted draws (the uniforms are not used)."""
        return self.take(len(uniforms))

    def take(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` contexts: frames float (n, L, 3, H, W) (padding 0.0) and actions int64 (n, L),
        the last action slot 0 (the agent's action goes there)."""
        if self._segment is None or self._cursor + n > len(self._segment.episode):
            self._segment = self.sampler.sample(max(n, self.preload))
            self._cursor = 0
        rows = slice(self._cursor, self._cursor + n)
        self._cursor += n
        seg = self._segment
        part = Segment(**{k: v[rows] for k, v in vars(seg).items()})
        t = to_torch(part, self.device)
        act = torch.cat([t.act, torch.zeros_like(t.act[:, :1])], dim=1)
        return t.obs, act

    def state_dict(self) -> dict[str, Any]:
        """The draw state and where the preloaded contexts lie (life and start of each, not their
        pixels, which :meth:`load_state_dict` reads back from the data), as plain values."""
        seg = self._segment
        where = (
            None if seg is None else (torch.from_numpy(seg.episode), torch.from_numpy(seg.start))
        )
        return {
            "rng": self.sampler.rng.bit_generator.state,
            "preloaded": where,
            "cursor": self._cursor,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (after :meth:`update` with the same data or more)."""
        self.sampler.rng.bit_generator.state = state["rng"]
        where = state["preloaded"]
        self._segment = (
            None if where is None else self.sampler.gather(where[0].numpy(), where[1].numpy())
        )
        self._cursor = int(state["cursor"])


class ImaginationTrainer:
    """Trains ``actor_critic`` on dreams of ``world_model`` with the settings of ``config``.

    Args:
        actor_critic: the agent; must be on the world model's device.
        world_model: the (frozen here) world model; its context bank supplies the starts.
        config: ``config.imagination`` (batch size, horizon, γ, λ, entropy weight) and
            ``config.actor_critic_optim`` are used.
        seed: seeds the dreams and the action draws.
        num_denoising_steps: override of the world model's sampler (None: its own).
        contexts: where dreams (re)start (None: the world model's bank), e.g.
            :class:`ReplayContexts`.
        dist: the data-parallel run this process belongs to (None: a plain run). Each rank then
            dreams ``batch_size / processes`` envs with its own seeds, and the gradients are
            averaged over the ranks before clipping (every rank's loss is a mean over as many
            steps); the metrics returned are the means over the ranks.
        cuda_graphs: replay each denoiser pass of the dreams from a CUDA graph (DIAMOND compiles
            its dream so); None: on for a CUDA world model. The same numbers up to rounding; the
            graphs read the live weights, so the world model's training reaches the dreams.
    """

    def __init__(
        self,
        actor_critic: ActorCritic,
        world_model: WorldModel,
        config: Config,
        *,
        seed: int = 0,
        num_denoising_steps: int | None = None,
        contexts: ContextSource | None = None,
        dist: Distributed | None = None,
        cuda_graphs: bool | None = None,
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
        self.contexts = contexts
        if cuda_graphs is None:  # DIAMOND compiles its dream with CUDA graphs (src/trainer.py)
            cuda_graphs = world_model.device.type == "cuda"
        if cuda_graphs and world_model.device.type != "cuda":
            raise ValueError(
                f"cuda_graphs: needs a CUDA world model, got one on {world_model.device}"
            )
        # replays read the live weights, which the world model's optimiser updates in place
        self.denoise_fn = GraphedDenoise(world_model.denoiser.denoise) if cuda_graphs else None
        self.dist = dist if dist is not None else Distributed(device=world_model.device)
        self.batch_size = self.dist.per_rank(
            config.imagination.batch_size, "imagination.batch_size"
        )
        self.simulator = self._make_simulator(seed)
        self.opt, self.sched = make_optimizer(actor_critic, config.actor_critic_optim)
        self.seeds = torch.Generator().manual_seed(seed)
        self.action_generator = torch.Generator(device=world_model.device).manual_seed(seed + 1)
        self.grad_steps = 0
        self._obs: torch.Tensor | None = None  # the dreams' current frames, None before the first
        self._state: State | None = None

    @property
    def device(self) -> torch.device:
        return self.world_model.device

    def _make_simulator(self, seed: int) -> DreamSimulator:
        imagination = self.config.imagination
        return DreamSimulator(
            self.world_model,
            self.batch_size,
            horizon=imagination.horizon,
            num_denoising_steps=self.num_denoising_steps,
            seed=seed,
            context_source=self.contexts,
            denoise_fn=self.denoise_fn,
        )

    def refresh_contexts(self) -> None:
        """Restart the dreams from the world model's current context bank (after it was
        replaced); the next rollout begins with a fresh reset."""
        self.simulator = self._make_simulator(0)
        self._obs, self._state = None, None

    def rollout(self) -> Rollout:
        """Dream ``horizon`` more steps in every env, carrying on from the last rollout (see the
        module doc)."""
        sim, ac = self.simulator, self.actor_critic
        if self._obs is None or self._state is None:
            seed = int(torch.randint(0, 2**62, (1,), generator=self.seeds).item())
            self._obs = sim.reset(seed=seed)
            self._state = ac.initial_state(sim.num_envs, self.device)
        obs = self._obs
        state = (self._state[0].detach(), self._state[1].detach())
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
        self._obs, self._state = obs, (state[0].detach(), state[1].detach())
        stacked = {name: torch.stack(items, dim=1) for name, items in steps.items()}
        return Rollout(bootstrap=bootstrap, **stacked)

    def _restart(self, state: State, done: torch.Tensor) -> State:
        """Zero the LSTM rows of the envs that restarted and burn them in on the first ``L - 1``
        frames of their new context, with gradients (as DIAMOND)."""
        rows = done.nonzero().squeeze(-1)
        fresh = self.actor_critic.burn_in(self.simulator.context_obs[rows, :-1])
        keep = ~done[:, None]
        restarted = []
        for old, new in zip(state, fresh, strict=True):
            full = old.new_zeros(old.shape).index_copy(0, rows, new)
            restarted.append(torch.where(keep, old, full))
        return restarted[0], restarted[1]

    def train_step(self) -> dict[str, float]:
        """One rollout and one optimiser step; returns scalar metrics (``actor_critic/...``)."""
        imagination = self.config.imagination
        self.actor_critic.train()
        ro = self.rollout()
        values = torch.cat([ro.values, ro.bootstrap[:, None]], dim=1)
        returns = lambda_returns(
            ro.rewards,
            values.detach(),
            ro.terminations,
            ro.truncations,
            imagination.gamma,
            imagination.lambda_,
            final_values=ro.final_values,
        )
        loss, parts = actor_critic_loss(
            ro.logits, ro.values, ro.actions, returns, entropy_weight=imagination.entropy_weight
        )
        reduce = self.dist.average_gradients_ if self.dist.enabled else None
        grad_norm = optimizer_step(
            loss,
            self.actor_critic,
            self.opt,
            self.sched,
            self.config.actor_critic_optim.max_grad_norm,
            reduce,
        )
        self.grad_steps += 1
        scalars = {f"actor_critic/{k}": v for k, v in parts.items()}
        scalars["actor_critic/imagined_reward"] = ro.rewards.sum(dim=1).mean()
        scalars["actor_critic/imagined_terminations"] = ro.terminations.float().mean()
        metrics = self.dist.reduce_scalars(scalars, mean=True)
        metrics["actor_critic/grad_norm"] = grad_norm
        return metrics

    PER_RANK_KEYS = ("seeds", "action_generator", "loop", "contexts")
    """Keys of :meth:`state_dict` that differ between the ranks of a data-parallel run."""

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs (plain tensors and numbers)."""
        return {
            "actor_critic": self.actor_critic.state_dict(),
            "opt": self.opt.state_dict(),
            "sched": self.sched.state_dict(),
            "seeds": self.seeds.get_state(),
            "action_generator": self.action_generator.get_state(),
            "grad_steps": self.grad_steps,
            "loop": None
            if self._obs is None or self._state is None
            else {
                "obs": self._obs.cpu(),
                "h": self._state[0].cpu(),
                "c": self._state[1].cpu(),
                "simulator": self.simulator.state_dict(),
            },
            "contexts": self.contexts.state_dict()
            if isinstance(self.contexts, ReplayContexts)
            else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.actor_critic.load_state_dict(state["actor_critic"])
        self.opt.load_state_dict(state["opt"])
        self.sched.load_state_dict(state["sched"])
        self.seeds.set_state(state["seeds"])
        self.action_generator.set_state(state["action_generator"])
        self.grad_steps = int(state["grad_steps"])
        loop = state.get("loop")
        if loop is None:
            self._obs, self._state = None, None
        else:
            self.simulator.load_state_dict(loop["simulator"])
            self._obs = loop["obs"].to(self.device)
            self._state = (loop["h"].to(self.device), loop["c"].to(self.device))
        if isinstance(self.contexts, ReplayContexts) and state.get("contexts") is not None:
            self.contexts.load_state_dict(state["contexts"])
