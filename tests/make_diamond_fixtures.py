"""Regenerate ``tests/data/diamond_*.safetensors`` by running DIAMOND's own code.

Usage (DIAMOND's repository checked out anywhere *outside* this project; its code is imported
from there at run time and never copied here)::

    git clone https://github.com/eloialonso/diamond /tmp/diamond   # at 5bcd159
    python tests/make_diamond_fixtures.py --diamond /tmp/diamond --out tests/data
    python tests/make_diamond_fixtures.py --diamond /tmp/diamond --paper-check

The first form writes a reduced-size DIAMOND agent state dict (``diamond_agent.safetensors``,
random weights from DIAMOND's own initialisation, seed 0) and DIAMOND's outputs on fixed inputs
(``diamond_io.safetensors``): the denoiser at several noise levels, the 3-step Euler and Heun
samplers and a churned one from given noise, reward/end logits after a burn-in, actor-critic
logits and values, λ-returns, and the denoiser, reward/end and actor-critic losses on one fixed
batch. ``tests/test_diamond_parity.py`` converts the state dict and compares ours (≤ 1e-5).

``--paper-check`` builds DIAMOND's paper-size agent (``config/agent/default.yaml``), converts it
and prints the largest difference of each output against ours (nothing is written).

Only DIAMOND's models run; the packages its other modules import for training (wandb, omegaconf,
torcheval, cv2) are replaced by empty stand-ins when missing.
"""

from __future__ import annotations

import argparse
import json
import sys
import types
from pathlib import Path

import torch

NUM_ACTIONS = 4
SIGMAS = (5.0, 1.0, 0.1, 0.002)


def stub_missing_modules() -> None:
    """Empty stand-ins for modules DIAMOND's training code imports but its models never call."""

    def confusion(*_args: object, **_kwargs: object) -> torch.Tensor:
        return torch.zeros(1)

    stubs = {
        "wandb": {},
        "omegaconf": {"OmegaConf": object, "DictConfig": dict},
        "cv2": {},
        "hydra": {},
        "hydra.utils": {"instantiate": None},
        "torcheval": {},
        "torcheval.metrics": {},
        "torcheval.metrics.functional": {"multiclass_confusion_matrix": confusion},
    }
    for name, attrs in stubs.items():
        try:
            __import__(name)
        except ImportError:
            module = types.ModuleType(name)
            for key, value in attrs.items():
                setattr(module, key, value)
            sys.modules[name] = module


def diamond_agent_config(models: dict[str, types.ModuleType], paper: bool) -> object:
    """DIAMOND's AgentConfig: paper sizes or a reduced one that keeps every code path
    (attention in the middle blocks with 2 heads, several levels, LSTMs)."""
    diff = models["diffusion"]
    if paper:
        den = diff.InnerModelConfig(
            img_channels=3,
            num_steps_conditioning=4,
            cond_channels=256,
            depths=[2, 2, 2, 2],
            channels=[64, 64, 64, 64],
            attn_depths=[0, 0, 0, 0],
        )
        rew = models["rew_end"].RewEndModelConfig(
            lstm_dim=512,
            img_channels=3,
            img_size=64,
            cond_channels=128,
            depths=[2, 2, 2, 2],
            channels=[32, 32, 32, 32],
            attn_depths=[0, 0, 0, 0],
        )
        ac = models["actor_critic"].ActorCriticConfig(
            lstm_dim=512, img_channels=3, img_size=64, channels=[32, 32, 64, 64], down=[1, 1, 1, 1]
        )
    else:
        den = diff.InnerModelConfig(
            img_channels=3,
            num_steps_conditioning=4,
            cond_channels=16,
            depths=[1, 2, 1],
            channels=[8, 16, 16],
            attn_depths=[0, 1, 0],
        )
        rew = models["rew_end"].RewEndModelConfig(
            lstm_dim=16,
            img_channels=3,
            img_size=64,
            cond_channels=8,
            depths=[1, 1, 1, 1],
            channels=[4, 4, 4, 4],
            attn_depths=[0, 0, 0, 0],
        )
        ac = models["actor_critic"].ActorCriticConfig(
            lstm_dim=16, img_channels=3, img_size=64, channels=[4, 4, 8, 8], down=[1, 1, 1, 1]
        )
    den_cfg = diff.DenoiserConfig(inner_model=den, sigma_data=0.5, sigma_offset_noise=0.3)
    return models["agent"].AgentConfig(
        denoiser=den_cfg, rew_end_model=rew, actor_critic=ac, num_actions=NUM_ACTIONS
    )


def _levels(gen: torch.Generator, *shape: int) -> torch.Tensor:
    """Random uint8 frames (stored so; the fixture stays small)."""
    return torch.randint(0, 256, shape, generator=gen).to(torch.uint8)


def to_float(frames: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """uint8 frames to [-1, 1] as DIAMOND maps them (``src/data/episode.py``); frames where
    ``mask`` (leading dims) is False become DIAMOND's padding value 0.0."""
    out = frames.float().div(255).mul(2).sub(1)
    if mask is not None:
        out[~mask] = 0.0
    return out


def run_diamond(src: Path, paper: bool) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """DIAMOND's state dict and its outputs on fixed inputs (see the module docstring)."""
    sys.path.insert(0, str(src))
    stub_missing_modules()
    import agent as diamond_agent  # type: ignore[import-not-found]
    import models.actor_critic as diamond_ac  # type: ignore[import-not-found]
    import models.diffusion as diamond_diffusion  # type: ignore[import-not-found]
    import models.rew_end_model as diamond_rew_end  # type: ignore[import-not-found]
    from data import Batch  # type: ignore[import-not-found]

    models = {
        "agent": diamond_agent,
        "diffusion": diamond_diffusion,
        "rew_end": diamond_rew_end,
        "actor_critic": diamond_ac,
    }
    torch.manual_seed(0)
    model = diamond_agent.Agent(diamond_agent_config(models, paper)).eval()
    # DIAMOND zero-initialises several layers; give them values so that every weight matters.
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for value in model.state_dict().values():
            if value.is_floating_point() and not value.any():
                value.copy_(0.05 * torch.randn(value.shape, generator=gen))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    io: dict[str, torch.Tensor] = {}
    den, rew_end, ac = model.denoiser, model.rew_end_model, model.actor_critic
    b, L = 2, 4

    # Denoiser D(x, σ) and the raw network output F at several σ (one sample keeps it small)
    obs_u8 = _levels(gen, 1, L, 3, 64, 64)
    obs = to_float(obs_u8)
    act = torch.randint(0, NUM_ACTIONS, (1, L), generator=gen)
    x = torch.randn(1, 3, 64, 64, generator=gen)
    io.update(den_obs=obs_u8, den_act=act, den_x=x, den_sigmas=torch.tensor(SIGMAS))
    with torch.no_grad():
        for k, s in enumerate(SIGMAS):
            sigma = torch.full((1,), s)
            cs = den.compute_conditioners(sigma)
            io[f"den_F_{k}"] = den.compute_model_output(x, obs.flatten(1, 2), act, cs)
            # D is on the 256 levels: stored as the uint8 level DIAMOND computes before mapping back
            d = den.denoise(x, sigma, obs.flatten(1, 2), act)
            io[f"den_D_{k}"] = d.add(1).div(2).mul(255).round().to(torch.uint8)
            assert torch.equal(to_float(io[f"den_D_{k}"]), d)

    # Samplers from given noise (DIAMOND draws x = randn first, then churn noise per step)
    for name, kwargs in (("euler", {}), ("heun", {"order": 2}), ("churn", {"s_churn": 1.0})):
        sampler = diamond_diffusion.DiffusionSampler(
            den, diamond_diffusion.DiffusionSamplerConfig(num_steps_denoising=3, **kwargs)
        )
        torch.manual_seed(11)
        io[f"sample_{name}"] = sampler.sample(obs, act)[0]
    torch.manual_seed(11)
    io["sample_noise"] = torch.randn(1, 3, 64, 64)

    # Reward/end model: burn-in over 3 transitions, then 4 more from that state
    seq_u8 = _levels(gen, b, 8, 3, 64, 64)
    seq = to_float(seq_u8)
    seq_act = torch.randint(0, NUM_ACTIONS, (b, 8), generator=gen)
    io.update(re_obs=seq_u8, re_act=seq_act)
    with torch.no_grad():
        *_, (h, c) = rew_end.predict_rew_end(seq[:, :3], seq_act[:, :3], seq[:, 1:4])
        lr, le, (h2, c2) = rew_end.predict_rew_end(
            seq[:, 3:7], seq_act[:, 3:7], seq[:, 4:8], (h, c)
        )
    io.update(
        re_burn_h=h[0], re_burn_c=c[0], re_logits_rew=lr, re_logits_end=le, re_h=h2[0], re_c=c2[0]
    )

    # Actor-critic over 5 steps from a zero state
    ac_obs_u8 = _levels(gen, b, 5, 3, 64, 64)
    ac_obs = to_float(ac_obs_u8)
    io["ac_obs"] = ac_obs_u8
    hx = torch.zeros(b, ac.lstm_dim)
    cx = torch.zeros(b, ac.lstm_dim)
    logits, values = [], []
    with torch.no_grad():
        for t in range(5):
            out = ac.predict_act_value(ac_obs[:, t], (hx, cx))
            hx, cx = out.hx_cx
            logits.append(out.logits_act)
            values.append(out.val)
    io.update(ac_logits=torch.stack(logits, 1), ac_values=torch.stack(values, 1))

    # λ-returns and the actor-critic loss on a fixed rollout (the env loop replaced by fixed data)
    T = 15
    rew = torch.randint(-1, 2, (b, T), generator=gen).float() * 3.0
    end = torch.zeros(b, T)
    end[0, 6] = 1
    trunc = torch.zeros(b, T)
    trunc[1, 9] = 1
    trunc[0, 14] = 1
    end[0, 14] = 1  # ended and truncated at once
    vb = torch.randn(b, T, generator=gen)
    io.update(lr_rew=rew, lr_end=end, lr_trunc=trunc, lr_val_bootstrap=vb)
    io["lambda_returns"] = diamond_ac.compute_lambda_returns(rew, end, trunc, vb, 0.985, 0.95)
    loss_logits = torch.randn(b, T, NUM_ACTIONS, generator=gen)
    loss_val = torch.randn(b, T, generator=gen)
    loss_act = torch.randint(0, NUM_ACTIONS, (b, T), generator=gen)
    io.update(acl_logits=loss_logits, acl_val=loss_val, acl_act=loss_act)

    class FixedLoop:
        def send(self, _steps: int) -> tuple[object, ...]:
            return None, loss_act, rew, end, trunc, loss_logits, loss_val, vb, None

    ac.env_loop = FixedLoop()
    ac.loss_cfg = diamond_ac.ActorCriticLossConfig(
        backup_every=T, gamma=0.985, lambda_=0.95, weight_value_loss=1.0, weight_entropy_loss=0.001
    )
    io["ac_loss"] = ac()[0].detach()

    # Denoiser loss on one batch of 4 + 1 + 1 frames (sample 1 padded before its start)
    den.setup_training(
        diamond_diffusion.SigmaDistributionConfig(loc=-0.4, scale=1.2, sigma_min=2e-3, sigma_max=20)
    )
    dl_obs_u8 = _levels(gen, b, 6, 3, 64, 64)
    dl_obs = to_float(dl_obs_u8)
    dl_act = torch.randint(0, NUM_ACTIONS, (b, 6), generator=gen)
    dl_mask = torch.ones(b, 6, dtype=torch.bool)
    dl_mask[1, :2] = False
    dl_obs = to_float(dl_obs_u8, dl_mask)  # DIAMOND pads with 0.0
    dl_act[1, :2] = 0
    io.update(dl_obs=dl_obs_u8, dl_act=dl_act, dl_mask=dl_mask)
    batch = Batch(
        dl_obs.clone(),
        dl_act,
        torch.zeros(b, 6),
        torch.zeros(b, 6),
        torch.zeros(b, 6),
        dl_mask,
        [{}, {}],
        [],
    )
    torch.manual_seed(5)
    io["den_loss"] = den(batch)[0].detach()

    # Reward/end loss on 8 frames; sample 0 ends at step 4 (frames 5.. padded, final frame given)
    rl_obs_u8 = _levels(gen, b, 8, 3, 64, 64)
    rl_obs = to_float(rl_obs_u8)
    rl_act = torch.randint(0, NUM_ACTIONS, (b, 8), generator=gen)
    rl_rew = torch.tensor([[0, 1, 0, 0, -1, 0, 0, 0], [0, 0, 4, 0, 0, 0, 1, 0]]).float()
    rl_end = torch.zeros(b, 8, dtype=torch.long)
    rl_end[0, 4] = 1
    rl_mask = torch.ones(b, 8, dtype=torch.bool)
    rl_mask[0, 5:] = False
    rl_obs = to_float(rl_obs_u8, rl_mask)
    rl_act[0, 5:] = 0
    final_u8 = _levels(gen, 3, 64, 64)
    final = to_float(final_u8)
    io.update(
        rl_obs=rl_obs_u8,
        rl_act=rl_act,
        rl_rew=rl_rew,
        rl_end=rl_end,
        rl_mask=rl_mask,
        rl_final=final_u8,
    )
    batch = Batch(
        rl_obs.clone(),
        rl_act,
        rl_rew,
        rl_end,
        torch.zeros(b, 8),
        rl_mask,
        [{"final_observation": final}, {}],
        [],
    )
    with torch.no_grad():
        io["rew_end_loss"] = rew_end(batch)[0]
    return state, {k: v.contiguous() for k, v in io.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--diamond", type=Path, required=True, help="DIAMOND checkout (root)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "data")
    parser.add_argument("--paper-check", action="store_true", help="compare at paper size")
    parser.add_argument(
        "--paper-pt",
        type=Path,
        default=None,
        help="also save the paper-size agent as DIAMOND saves it (a .pt file)",
    )
    args = parser.parse_args()
    src = args.diamond / "src"
    if not (src / "models" / "diffusion" / "denoiser.py").is_file():
        parser.error(f"--diamond: {args.diamond} does not look like DIAMOND's repository")
    state, io = run_diamond(src, paper=args.paper_check or args.paper_pt is not None)
    if args.paper_pt is not None:
        torch.save(state, args.paper_pt)
        print(f"wrote DIAMOND's paper-size agent state dict to {args.paper_pt}")
    if args.paper_check:
        sys.path.insert(0, str(Path(__file__).parent))
        from test_diamond_parity import compare  # type: ignore[import-not-found]

        diffs = compare(state, io)
        print(json.dumps(diffs, indent=2))
        worst = max(diffs.values())
        print(f"paper size: largest difference {worst:.3g} ({'OK' if worst <= 1e-5 else 'FAIL'})")
        sys.exit(0 if worst <= 1e-5 else 1)
    from safetensors.torch import save_file

    args.out.mkdir(parents=True, exist_ok=True)
    meta = {"source": "github.com/eloialonso/diamond@5bcd159", "num_actions": str(NUM_ACTIONS)}
    save_file(state, str(args.out / "diamond_agent.safetensors"), metadata=meta)
    save_file(io, str(args.out / "diamond_io.safetensors"), metadata=meta)
    print(f"wrote {args.out}/diamond_agent.safetensors and diamond_io.safetensors")


if __name__ == "__main__":
    main()
