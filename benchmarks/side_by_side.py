"""DIAMOND's code and ours, side by side on this machine: dream steps and training steps.

    python benchmarks/side_by_side.py --diamond /path/to/diamond [--rounds 4 --seconds 30]

DIAMOND's repository is checked out by you anywhere outside this project (its code is imported
from there at run time and never copied here; ``tests/make_diamond_fixtures.py`` stubs the modules
its training code imports but its models never call). Both sides get the paper-size networks with
the same weights (DIAMOND's own initialisation, seed 0, converted to ours), the same inputs and the
same settings, fp32:

- ``dream``: one step of 32 envs (``--num-envs``): 3 Euler denoising steps + the reward/end model
  + sampling rewards and ends + the context roll. DIAMOND: ``WorldModelEnv.step``
  (``src/envs/world_model_env.py``) fed by a loader of random real-shaped contexts; ours:
  ``DreamSimulator.step``, plain and with ``fastpath="auto"`` (what ``gym.make`` uses).
- ``denoiser_train``: one AdamW step (lr 1e-4, clip 1.0) on a batch of 32 segments of 4 context
  frames + 1 target + 1 autoregressive target (DIAMOND's ``Denoiser.forward``; ours
  ``Denoiser.compute_sequence_loss``).
- ``rew_end_train``: one AdamW step (clip 100) on 32 sequences of 19 transitions (DIAMOND's
  ``RewEndModel.forward``; ours ``RewEndModel.compute_loss``).

Each measurement runs for ``--seconds`` and the implementations alternate, round after round, so a
change in the machine's load reaches both alike; the ratios come from the same round. The user
and system CPU seconds of each measurement are printed too (system time is spinning or paging).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
NUM_ACTIONS = 4


def load_diamond(checkout: Path) -> dict[str, Any]:
    """DIAMOND's modules imported from ``checkout`` (its ``src`` folder)."""
    src = checkout / "src"
    if not (src / "models" / "diffusion" / "denoiser.py").is_file():
        raise SystemExit(f"--diamond: {checkout} does not look like DIAMOND's repository")
    sys.path.insert(0, str(ROOT / "tests"))
    from make_diamond_fixtures import diamond_agent_config, stub_missing_modules

    sys.path.insert(0, str(src))
    stub_missing_modules()
    import agent as diamond_agent  # type: ignore[import-not-found]
    import envs.world_model_env as diamond_wm_env  # type: ignore[import-not-found]
    import models.actor_critic as diamond_ac  # type: ignore[import-not-found]
    import models.diffusion as diamond_diffusion  # type: ignore[import-not-found]
    import models.rew_end_model as diamond_rew_end  # type: ignore[import-not-found]
    import utils as diamond_utils  # type: ignore[import-not-found]
    from data import Batch  # type: ignore[import-not-found]

    models = {
        "agent": diamond_agent,
        "diffusion": diamond_diffusion,
        "rew_end": diamond_rew_end,
        "actor_critic": diamond_ac,
    }
    return {
        "config": diamond_agent_config(models, paper=True),
        "agent": diamond_agent,
        "diffusion": diamond_diffusion,
        "wm_env": diamond_wm_env,
        "rew_end": diamond_rew_end,
        "actor_critic": diamond_ac,
        "utils": diamond_utils,
        "Batch": Batch,
    }


class _Contexts:
    """What DIAMOND's ``WorldModelEnv`` asks of its data loader: ``batch_sampler.batch_size`` and
    an endless stream of batches of 4 frames and actions (the context; the reward/end model is
    burnt in on its 3 transitions)."""

    def __init__(self, num_envs: int) -> None:
        self.batch_sampler = SimpleNamespace(batch_size=num_envs)
        gen = torch.Generator().manual_seed(0)
        obs = torch.randint(0, 256, (num_envs, 4, 3, 64, 64), generator=gen)
        self.obs = obs.float().div(255).mul(2).sub(1)
        self.act = torch.randint(0, NUM_ACTIONS, (num_envs, 4), generator=gen)

    def __iter__(self) -> Any:
        while True:
            yield SimpleNamespace(obs=self.obs, act=self.act)


def build(d: dict[str, Any], num_envs: int, side: str) -> dict[str, Callable[[], None]]:
    """The operations of one side (``"diamond"`` or ``"ours"``) to time, keyed
    ``<op>/<implementation>``."""
    from diamond_env.atari import action_meanings
    from diamond_env.config import get_preset
    from diamond_env.dream.simulator import DreamSimulator
    from diamond_env.training.optim import make_optimizer, optimizer_step
    from diamond_env.world_model.diamond_format import convert, load_into
    from diamond_env.world_model.fastpath import (
        FastPathOptions,
        prepare_world_model,
        resolve_fastpath,
    )
    from diamond_env.world_model.model import ContextBank, WorldModel

    torch.manual_seed(0)
    ref = d["agent"].Agent(d["config"]).eval()
    ckpt = convert(ref.state_dict(), "DIAMOND's paper-size agent")
    config = get_preset("paper")
    if (ckpt.denoiser_config, ckpt.rew_end_config) != (config.denoiser, config.rew_end):
        raise SystemExit("DIAMOND's paper config converts to something other than our paper preset")
    gen = torch.Generator().manual_seed(1)
    bank = ContextBank(
        obs=torch.randint(0, 256, (64, 4, 64, 64, 3), generator=gen, dtype=torch.uint8),
        act=torch.randint(0, NUM_ACTIONS, (64, 4), generator=gen),
    )
    ours = WorldModel(config, "Breakout", action_meanings("Breakout"), bank)
    load_into(ours.denoiser, ckpt.denoiser, "denoiser")
    load_into(ours.rew_end, ckpt.rew_end, "rew_end")
    ours.eval()
    fast = prepare_world_model(
        ours, FastPathOptions.from_names(resolve_fastpath("auto", ours.device))
    )

    # --- dream: DIAMOND's WorldModelEnv against our simulator (horizon 15 both)
    sampler_cfg = d["diffusion"].DiffusionSamplerConfig(num_steps_denoising=3)
    env_cfg = d["wm_env"].WorldModelEnvConfig(
        horizon=15, num_batches_to_preload=1, diffusion_sampler=sampler_cfg
    )
    their_env = d["wm_env"].WorldModelEnv(
        ref.denoiser, ref.rew_end_model, _Contexts(num_envs), env_cfg
    )
    their_env.reset()
    if side == "ours":  # what the diamond-env command does for its process; never on DIAMOND's
        from diamond_env.devices import tune_allocator

        tune_allocator()
    sims = {
        name: DreamSimulator(model, num_envs, horizon=15, seed=0)
        for name, model in (("ours_plain", ours), ("ours_auto", fast))
        if side == "ours"
    }
    for sim in sims.values():
        sim.reset()
    acts = torch.randint(0, NUM_ACTIONS, (num_envs,), generator=gen)

    # --- training batches (same tensors for both; uint8 levels mapped to [-1, 1])
    b = 32
    den_obs = torch.randint(0, 256, (b, 6, 3, 64, 64), generator=gen).float().div(127.5).sub(1)
    den_act = torch.randint(0, NUM_ACTIONS, (b, 6), generator=gen)
    den_mask = torch.ones(b, 6, dtype=torch.bool)
    t = 19
    re_obs = torch.randint(0, 256, (b, t + 1, 3, 64, 64), generator=gen).float().div(127.5).sub(1)
    re_act = torch.randint(0, NUM_ACTIONS, (b, t + 1), generator=gen)
    re_rew = torch.zeros(b, t + 1)
    re_rew[:, 7] = 1.0
    re_end = torch.zeros(b, t + 1, dtype=torch.long)
    re_mask = torch.ones(b, t + 1, dtype=torch.bool)
    batch = d["Batch"]
    den_batch = batch(
        obs=den_obs,
        act=den_act,
        rew=torch.zeros(b, 6),
        end=torch.zeros(b, 6).long(),
        trunc=torch.zeros(b, 6).long(),
        mask_padding=den_mask,
        info=[{}] * b,
        segment_ids=[None] * b,
    )
    re_batch = batch(
        obs=re_obs,
        act=re_act,
        rew=re_rew,
        end=re_end,
        trunc=torch.zeros_like(re_end),
        mask_padding=re_mask,
        info=[{}] * b,
        segment_ids=[None] * b,
    )

    their_den, their_re = ref.denoiser.train(), ref.rew_end_model.train()
    their_den.setup_training(
        d["diffusion"].SigmaDistributionConfig(loc=-0.4, scale=1.2, sigma_min=2e-3, sigma_max=20)
    )
    utils = d["utils"]
    their_den_opt = utils.configure_opt(their_den, lr=1e-4, weight_decay=1e-2, eps=1e-8)
    their_re_opt = utils.configure_opt(their_re, lr=1e-4, weight_decay=1e-2, eps=1e-8)
    train_wm = WorldModel(config, "Breakout", action_meanings("Breakout"), bank)
    load_into(train_wm.denoiser, ckpt.denoiser, "denoiser")
    load_into(train_wm.rew_end, ckpt.rew_end, "rew_end")
    train_wm.train()
    our_den_opt, our_den_sched = make_optimizer(train_wm.denoiser, config.denoiser_optim)
    our_re_opt, our_re_sched = make_optimizer(train_wm.rew_end, config.rew_end_optim)

    def their_step(model: Any, opt: Any, data: Any, clip: float) -> None:
        loss, _ = model(data)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()

    # DIAMOND's reward/end forward also builds a confusion matrix (torcheval, stubbed here when
    # not installed): its cost is not counted on either side.
    ops = {
        "dream/diamond": lambda: their_env.step(acts),
        "dream/ours_plain": lambda: sims["ours_plain"].step(acts),
        "dream/ours_auto": lambda: sims["ours_auto"].step(acts),
        "denoiser_train/diamond": lambda: their_step(their_den, their_den_opt, den_batch, 1.0),
        "denoiser_train/ours": lambda: optimizer_step(
            train_wm.denoiser.compute_sequence_loss(den_obs, den_act, den_mask),
            train_wm.denoiser,
            our_den_opt,
            our_den_sched,
            1.0,
        ),
        "rew_end_train/diamond": lambda: their_step(their_re, their_re_opt, re_batch, 100.0),
        "rew_end_train/ours": lambda: optimizer_step(
            train_wm.rew_end.compute_loss(
                re_obs[:, :-1],
                re_act[:, :-1],
                re_obs[:, 1:],
                re_rew[:, :-1],
                re_end[:, :-1].bool(),
                re_mask[:, :-1],
            )[0],
            train_wm.rew_end,
            our_re_opt,
            our_re_sched,
            100.0,
        ),
    }
    return {k: v for k, v in ops.items() if (k.endswith("/diamond")) == (side == "diamond")}


def work_per_call(num_envs: int) -> dict[str, int]:
    """FLOPs of one call of each operation (:mod:`diamond_env.world_model.flops`, paper preset): a dream step
    is ``num_envs`` frames of 3 denoiser passes + a reward/end step; a training step is 3 x the
    forward of its batch (32 samples of 2 denoiser targets, or 32 reward/end segments)."""
    from diamond_env.config import get_preset
    from diamond_env.world_model.flops import (
        count_model_flops,
        denoiser_sample_flops,
        dream_frame_flops,
        rew_end_sample_flops,
    )

    flops = count_model_flops(get_preset("paper"), NUM_ACTIONS)
    return {
        "dream": num_envs * dream_frame_flops(flops, 3),
        "denoiser_train": 32 * denoiser_sample_flops(flops, targets=2),
        "rew_end_train": 32 * rew_end_sample_flops(flops),
    }


def fp32_peak() -> tuple[float, str]:
    """This CPU's fp32 peak in GFLOP/s from /proc/cpuinfo: CPUs x clock x FLOPs per cycle, where
    a core with FMA does 2 fused multiply-adds per cycle on 8 (AVX2) or 16 (AVX-512) lanes, each
    2 FLOPs (0 and a note when it cannot be read)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            text = f.read()
    except OSError:
        return 0.0, "no /proc/cpuinfo"
    flags = set(
        next(
            (ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), []
        )
    )
    mhz = [float(ln.split(":", 1)[1]) for ln in text.splitlines() if ln.startswith("cpu MHz")]
    if not mhz or "fma" not in flags:
        return 0.0, "clock or FMA flag not found"
    lanes = 16 if "avx512f" in flags else 8
    per_cycle = 2 * lanes * 2
    cpus = os.cpu_count() or 1
    peak = cpus * max(mhz) / 1000 * per_cycle
    how = (
        f"{cpus} CPUs x {max(mhz) / 1000:.2f} GHz x {per_cycle} FLOP/cycle "
        f"(2 FMA units x {lanes} fp32 lanes x 2)"
    )
    return peak, how


def measure(op: Callable[[], None], seconds: float) -> dict[str, float]:
    """Calls per second over at least ``seconds`` (one warm-up call first), with CPU times."""
    op()
    before, start, calls = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter(), 0
    while True:
        op()
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            break
    after = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "per_s": calls / elapsed,
        "calls": calls,
        "seconds": elapsed,
        "user_s": after.ru_utime - before.ru_utime,
        "sys_s": after.ru_stime - before.ru_stime,
    }


def _worker(conn: Any, side: str, diamond: Path, num_envs: int, threads: int) -> None:
    """One side in its own process (its allocator state untouched by the other side's code)."""
    if threads:
        torch.set_num_threads(threads)
    ops = build(load_diamond(diamond), num_envs, side)
    conn.send(sorted(ops))
    while (msg := conn.recv()) is not None:
        name, seconds = msg
        conn.send(measure(ops[name], seconds))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--diamond", type=Path, required=True, help="DIAMOND checkout (root)")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--seconds", type=float, default=30.0, help="per measurement")
    p.add_argument("--num-envs", type=int, default=32)
    p.add_argument("--ops", default="dream,denoiser_train,rew_end_train")
    p.add_argument("--threads", type=int, default=0, help="torch threads; 0: torch's default")
    p.add_argument("--out", type=Path, default=None, help="write every measurement as JSON")
    args = p.parse_args()
    ctx = multiprocessing.get_context("spawn")
    workers, names = {}, {}
    for side in ("diamond", "ours"):
        parent, child = ctx.Pipe()
        proc = ctx.Process(
            target=_worker, args=(child, side, args.diamond.resolve(), args.num_envs, args.threads)
        )
        proc.start()
        workers[side] = (parent, proc)
        names[side] = parent.recv()
    with open("/proc/loadavg", encoding="ascii") as f:
        load = f.read().split()[:3]
    threads = args.threads or torch.get_num_threads()
    print(
        f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, {threads} "
        f"threads, load average {' '.join(load)}, {time.strftime('%Y-%m-%d %H:%M')}; each side "
        "in its own process, alternating"
    )
    peak, how = fp32_peak()
    work = work_per_call(args.num_envs)
    print(f"fp32 peak {peak:.0f} GFLOP/s = {how}")
    rows: list[dict[str, Any]] = []
    wanted = args.ops.split(",")
    for r in range(args.rounds):
        for op in wanted:
            got = {}
            for side in ("diamond", "ours"):
                conn = workers[side][0]
                for name in names[side]:
                    if name.startswith(op + "/"):
                        conn.send((name, args.seconds))
                        got[name.split("/")[1]] = conn.recv()
            base = got["diamond"]["per_s"]
            for m in got.values():
                m["gflop_per_s"] = m["per_s"] * work[op] / 1e9
            cells = ", ".join(
                f"{impl} {m['per_s']:.3g}/s (x{m['per_s'] / base:.2f}, "
                f"{m['gflop_per_s']:.1f} GFLOP/s = {100 * m['gflop_per_s'] / (peak or 1):.0f} % of peak, "
                f"sys {m['sys_s']:.0f} s of {m['user_s'] + m['sys_s']:.0f} s CPU)"
                for impl, m in got.items()
            )
            print(f"round {r + 1} {op}: {cells}", flush=True)
            rows.append({"round": r + 1, "op": op, **got})
    for conn, proc in workers.values():
        conn.send(None)
        proc.join()
    print("\nmedian over rounds (ratio to DIAMOND's code, from the same round):")
    for op in wanted:
        mine = [row for row in rows if row["op"] == op]
        for impl in mine[0]:
            if impl in ("round", "op", "diamond"):
                continue
            ratios = sorted(row[impl]["per_s"] / row["diamond"]["per_s"] for row in mine)
            rates = sorted(row[impl]["per_s"] for row in mine)
            ref = sorted(row["diamond"]["per_s"] for row in mine)
            mid = len(ratios) // 2
            print(
                f"  {op:15s} {impl:11s} {rates[mid]:.3g}/s vs DIAMOND {ref[mid]:.3g}/s: "
                f"x{ratios[mid]:.2f} (rounds: {', '.join(f'{x:.2f}' for x in ratios)})"
            )
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
