"""``diamond-env demo`` (``make demo``): Breakout end to end on a CPU budget, with a report.

Stages, each skipped when its output is already there (so an interrupted demo re-run picks up at
the stage it was in):

1. ``dataset/``: ``real_steps`` steps of random real play; ``heldout/``: ``heldout_steps`` more
   from other games (seed + 777), which no world model here has trained on;
2. ``wm/``: a fresh world model (``train_wm``) trained ``wm_steps`` steps on all but the last
   10 % of the episodes, so the whole pipeline is seen (``wm/eval_wm.json``,
   ``wm/real_vs_imagined.png``);
3. ``fidelity.json``: the fresh world model and the dream's world model (the one shipped inside
   the package, when the game has one: :func:`diamond_env.pretrained`) measured on ``heldout/``;
4. ``actor_critic/``: our actor-critic trained in the dream for ``agent_steps``;
5. ``ppo_dream/``: SB3 PPO trained in the dream for ``ppo_dream_steps`` env steps;
6. ``ppo_real/``: SB3 PPO trained model-free on the same ``real_steps`` real steps;
7. each agent, the shipped agent (when one ships) and a random policy play ``eval_episodes``
   full real games (``scores.json``);
8. ``report.md`` with the scores, the fidelity figures, ``learning_curves.png``,
   ``real_vs_dream.gif`` (real frames above frames the dream's world model imagined from the
   same start and actions) and ``actor_critic_real.gif`` (our agent's first real game).

The agents train in the shipped model's dream by default (``--dream fresh``: in the one the demo
trains, as when the game ships none).
"""

from __future__ import annotations

import dataclasses
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diamond_env.atari import action_meanings, canonical_game
from diamond_env.cli.report import plot_psnr
from diamond_env.data.collect import RandomPolicy, collect_random_until
from diamond_env.data.dataset import EpisodeDataset
from diamond_env.data.segments import life_index
from diamond_env.evaluation.fidelity import fidelity_lines
from diamond_env.evaluation.real_game import EvalResult, evaluate, load_agent, reference_scores
from diamond_env.evaluation.wm_eval import evaluate_world_model, open_loop_rollouts
from diamond_env.run.checkpoint import atomic_write_json
from diamond_env.run.metrics import read_metrics
from diamond_env.run.options import opt
from diamond_env.run.paths import Pretrained, pretrained
from diamond_env.run.runinfo import start_session
from diamond_env.run.safe_io import read_json
from diamond_env.training.agents import TrainAgentOptions, train_agent, train_sb3_real
from diamond_env.training.train_wm import TrainWMOptions, train_world_model
from diamond_env.world_model.model import WorldModel

AGENTS = ("random", "actor_critic", "ppo_dream", "ppo_real", "shipped_agent")
LABELS = {
    "random": "random policy",
    "actor_critic": "our actor-critic, trained only in the dream",
    "ppo_dream": "SB3 PPO, trained only in the dream",
    "ppo_real": "SB3 PPO, model-free on the same real steps",
    "shipped_agent": "the shipped agent (trained only in the shipped dream; its model card says which)",
}
DREAMS = ("shipped", "fresh")
HELDOUT_SEED_OFFSET = 777


@dataclass(frozen=True)
class DemoOptions:
    """What ``diamond-env demo`` does; every field is a ``--flag``."""

    game: str = opt("Breakout", "ALE game name")
    run_dir: str = opt("runs/demo", "output directory")
    preset: str = opt("cpu", "model sizes: tiny | cpu | small | paper")
    real_steps: int = opt(10_000, "real steps: random play for the world model, PPO's budget")
    heldout_steps: int = opt(
        2_000,
        "random real steps of other games, never trained on, on "
        "which the fresh and the shipped world models are compared",
    )
    dream: str = opt(
        "shipped",
        "world model the agents train in: shipped (the package's model "
        "of the game; the fresh one when none ships) | fresh (the one trained here)",
    )
    wm_steps: int = opt(200, "world-model gradient steps")
    agent_steps: int = opt(20, "actor-critic gradient steps in the dream")
    ppo_dream_steps: int = opt(3_000, "SB3 PPO env steps in the dream")
    wm_minutes: float = opt(
        21.0,
        "cap on the world model's time (a loaded machine does the same "
        "steps more slowly, up to this)",
    )
    agent_minutes: float = opt(12.0, "cap on the actor-critic's time")
    ppo_minutes: float = opt(7.5, "cap on SB3 PPO's time in the dream")
    eval_episodes: int = opt(5, "real games per agent")
    device: str = opt("cpu", "torch device: cpu | cuda")
    seed: int = opt(0, "seed of everything")
    progress: bool = opt(True, "show progress bars")


def run_demo(opts: DemoOptions) -> Path:
    """Run every stage that has not run yet; returns the path of ``report.md``."""
    root = Path(opts.run_dir)
    root.mkdir(parents=True, exist_ok=True)
    game = canonical_game(opts.game)
    atomic_write_json(root / "demo_options.json", dataclasses.asdict(opts))
    session = start_session(root, "demo", dataclasses.asdict(opts))
    timings = _read_json(root / "timings.json")

    def stage(name: str, done: bool, work: Any) -> None:
        if done:
            return
        print(f"== {name}", flush=True)
        start = time.perf_counter()
        work()
        timings[name] = round(time.perf_counter() - start, 1)
        atomic_write_json(root / "timings.json", timings)

    stage(
        "collect",
        False,
        lambda: collect_random_until(
            root / "dataset", game, opts.real_steps, seed=opts.seed, progress=opts.progress
        ),
    )
    stage(
        "collect_heldout",
        False,
        lambda: collect_random_until(
            root / "heldout",
            game,
            opts.heldout_steps,
            seed=opts.seed + HELDOUT_SEED_OFFSET,
            progress=opts.progress,
        ),
    )
    wm_opts = TrainWMOptions(
        game=game,
        preset=opts.preset,
        run_dir=str(root / "wm"),
        dataset=str(root / "dataset"),
        steps=opts.wm_steps,
        device=opts.device,
        seed=opts.seed,
        save_every=500,
        eval_every=0,
        log_every=20,
        progress=opts.progress,
        max_minutes=opts.wm_minutes,
    )
    stage(
        "world_model", (root / "wm" / "eval_wm.json").exists(), lambda: train_world_model(wm_opts)
    )
    shipped = pretrained().get(game)
    checkpoint = dream_checkpoint(root, shipped, opts.dream)
    models = {"fresh": root / "wm" / "world_model"}
    if checkpoint != models["fresh"]:
        models["shipped"] = checkpoint
    stage(
        "fidelity",
        (root / "fidelity.json").exists(),
        lambda: atomic_write_json(
            root / "fidelity.json", _fidelity(models, root / "heldout", game, opts)
        ),
    )
    ac_opts = TrainAgentOptions(
        checkpoint=str(checkpoint),
        out=str(root / "actor_critic"),
        algo="actor-critic",
        steps=opts.agent_steps,
        device=opts.device,
        seed=opts.seed,
        save_every=50,
        max_minutes=opts.agent_minutes,
        progress=opts.progress,
    )
    stage(
        "actor_critic",
        (root / "actor_critic" / "agent.json").exists(),
        lambda: train_agent(ac_opts),
    )
    ppo_opts = dataclasses.replace(
        ac_opts,
        out=str(root / "ppo_dream"),
        algo="ppo",
        steps=opts.ppo_dream_steps,
        max_minutes=opts.ppo_minutes,
    )
    stage("ppo_dream", (root / "ppo_dream" / "agent.json").exists(), lambda: train_agent(ppo_opts))
    stage(
        "ppo_real",
        (root / "ppo_real" / "agent.json").exists(),
        lambda: train_sb3_real(
            game,
            root / "ppo_real",
            steps=opts.real_steps,
            seed=opts.seed,
            device=opts.device,
            progress=opts.progress,
        ),
    )
    scores = _read_json(root / "scores.json")
    agents = {name: root / name for name in AGENTS[1:4]}
    if "shipped" in models and shipped is not None and shipped.agent is not None:
        agents["shipped_agent"] = shipped.agent
    for name in ("random", *agents):
        stage(
            f"evaluate_{name}",
            name in scores,
            lambda name=name: scores.update(
                {name: _evaluate(root, name, agents.get(name), game, opts)}
            ),
        )
        atomic_write_json(root / "scores.json", scores)
    stage("figures", False, lambda: _figures(root, checkpoint, opts.seed))
    report = root / "report.md"
    report.write_text(_report(root, game, opts, scores, timings), encoding="utf-8")
    print(f"wrote {report}")
    session.finish(scores={k: v.get("mean") for k, v in scores.items()})
    return report


def dream_checkpoint(root: Path, shipped: Pretrained | None, dream: str) -> Path:
    """The world model the demo's agents train in, fixed for a run directory at its first run
    (``dream.json``): finished agents are kept on a re-run, so they must not change worlds."""
    if dream not in DREAMS:
        raise ValueError(f"dream: expected one of {list(DREAMS)}, got {dream!r}")
    fresh = root / "wm" / "world_model"
    chosen = shipped.world_model if dream == "shipped" and shipped is not None else fresh
    record = root / "dream.json"
    before = _read_json(record).get("checkpoint")
    if before is not None and Path(before) != chosen:
        raise ValueError(
            f"{root}: its agents trained in the dream of {before}, not {chosen}; use another "
            "--run-dir for the other dream"
        )
    atomic_write_json(record, {"dream": dream, "checkpoint": str(chosen)})
    return chosen


def _fidelity(
    models: dict[str, Path], heldout: Path, game: str, opts: DemoOptions
) -> dict[str, Any]:
    """Each world model's figures on the same held-out games (none of them trained on)."""
    data = EpisodeDataset.open(heldout).load_all()
    out = {}
    for name, path in models.items():
        wm = WorldModel.load(path, expected_game=game, device=opts.device)
        with torch.no_grad():
            out[name] = evaluate_world_model(
                wm,
                data,
                seq_len=wm.config.loop.rew_end_seq_len,
                seed=opts.seed,
                batches=4,
                num_rollouts=32,
            )
        out[name]["checkpoint"] = str(path)
    return out


def _read_json(path: Path) -> dict[str, Any]:
    return read_json(path) if path.exists() else {}


def _evaluate(
    root: Path, name: str, agent: Path | None, game: str, opts: DemoOptions
) -> dict[str, Any]:
    video = root / "actor_critic_real.gif" if name == "actor_critic" else None
    if agent is None:
        policy: Any = RandomPolicy(
            EpisodeDataset.open(root / "dataset").num_actions, seed=opts.seed
        )
    else:  # every agent samples its actions, as DIAMOND's agent does at test time
        policy, _ = load_agent(agent, device=opts.device, seed=opts.seed, deterministic=False)
    result: EvalResult = evaluate(
        policy, game, opts.eval_episodes, seed=opts.seed, video_path=video, progress=opts.progress
    )
    print(f"{LABELS[name]}: {result.summary()}")
    return result.to_dict()


def _figures(root: Path, dream: Path, seed: int) -> None:
    """``learning_curves.png`` and ``real_vs_dream.gif``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    wm = read_metrics(root / "wm", kind="train")
    axes[0].plot([m["step"] for m in wm], [m["denoiser/loss"] for m in wm], label="denoiser")
    axes[0].plot([m["step"] for m in wm], [m["rew_end/loss"] for m in wm], label="reward/end")
    axes[0].set(title="world model (training loss)", xlabel="gradient step", yscale="log")
    ac = read_metrics(root / "actor_critic", kind="train")
    axes[1].plot([m["step"] for m in ac], [m["actor_critic/imagined_reward"] for m in ac])
    axes[1].set(title="actor-critic: reward per 15-step dream", xlabel="gradient step")
    for name, label in (("ppo_dream", "in the dream"), ("ppo_real", "real (model-free)")):
        rows = read_metrics(root / name)
        axes[2].plot([m["step"] for m in rows], [m["episode_return"] for m in rows], label=label)
    axes[2].set(title="SB3 PPO: mean episode return", xlabel="env step")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[0].legend()
    axes[2].legend()
    fig.tight_layout()
    fig.savefig(root / "learning_curves.png", dpi=80)
    plt.close(fig)
    _real_vs_dream_gif(root, dream, seed)


def _real_vs_dream_gif(
    root: Path, dream: Path, seed: int, horizon: int = 40, rollouts: int = 4
) -> None:
    from PIL import Image

    wm = WorldModel.load(dream)
    data = EpisodeDataset.open(root / "heldout").load_all()
    longest_life = int(life_index(data).lengths.max())  # a rollout stays inside one life
    horizon = min(horizon, longest_life - wm.num_context + 1)
    with torch.no_grad():
        ro = open_loop_rollouts(wm, data, num_rollouts=rollouts, horizon=horizon, seed=seed)
    frames = []
    for t in range(horizon):
        real = np.concatenate(list(ro.real[:, t]), axis=1)
        imagined = np.concatenate(list(ro.imagined[:, t]), axis=1)
        gap = np.full((2, real.shape[1], 3), 255, np.uint8)
        grid = np.concatenate([real, gap, imagined], axis=0)
        frames.append(Image.fromarray(np.repeat(np.repeat(grid, 3, axis=0), 3, axis=1)))
    frames[0].save(
        root / "real_vs_dream.gif", save_all=True, append_images=frames[1:], duration=100, loop=0
    )


def _comparison(fidelity: dict[str, Any]) -> list[str]:
    """One row per world model: the headline figures beside copy and majority."""
    if not fidelity:
        return []
    first = next(iter(fidelity.values()))
    horizons = list(first.get("psnr_copy", {}))
    rows = [
        "| world model | PSNR " + " / ".join(f"h{h}" for h in horizons) + " (dB) | "
        "MAE on changing pixels | reward F1 | life-loss F1 |",
        "|---|---|---|---|---|",
    ]

    def f1(fid: dict[str, Any], key: str) -> str:
        return f"{fid[key]['rare_f1']:.2f}" if key in fid else "n/a"

    for name, fid in fidelity.items():
        psnr = " / ".join(f"{fid['psnr'][h]:.1f}" for h in horizons if h in fid.get("psnr", {}))
        mae = fid.get("changed_pixels", {}).get("model_mae")
        rows.append(
            f"| {name} | {psnr} | {'n/a' if mae is None else f'{mae:.1f}'} | "
            f"{f1(fid, 'reward_events')} | {f1(fid, 'end_events')} |"
        )
    copy = " / ".join(f"{first['psnr_copy'][h]:.1f}" for h in horizons)
    copy_mae = first.get("changed_pixels", {}).get("copy_mae")
    rows.append(
        f"| copy the last frame / majority class | {copy} | "
        f"{'n/a' if copy_mae is None else f'{copy_mae:.1f}'} | 0.00 | 0.00 |"
    )
    return [*rows, ""]


def _minutes(timings: dict[str, float], stage: str) -> str:
    """How long a stage took, as the report says it ("7.1 min"; "?" when not recorded)."""
    return f"{timings[stage] / 60:.1f} min" if stage in timings else "? min"


def _report(
    root: Path, game: str, opts: DemoOptions, scores: dict[str, Any], timings: dict[str, float]
) -> str:
    ref = reference_scores(game)
    fresh_eval = _read_json(root / "wm" / "eval_wm.json")
    fidelity = _read_json(root / "fidelity.json")
    evals = [r for r in read_metrics(root / "wm") if r.get("kind") == "eval"]
    psnr_path = plot_psnr(fresh_eval, evals, root / "wm" / "report_psnr.png")
    psnr_png = Path(psnr_path) if psnr_path else None
    wm_steps = fresh_eval.get("grad_steps", "?")
    ac_rows = read_metrics(root / "actor_critic", kind="train")
    dream = _read_json(root / "dream.json")
    shipped = "shipped" in fidelity
    package = pretrained().get(game) if shipped else None
    card = package.card if package is not None else {}
    made = card.get("training", {})
    assert isinstance(made, dict)
    where = (
        f"the world model shipped inside the package (`{dream.get('checkpoint')}`: "
        f"{made.get('grad_steps', '?')} gradient steps, {made.get('minutes', '?')} minutes on "
        f"{made.get('machine', '?')}; its model card beside it)"
        if shipped
        else "the world model trained in this demo"
    )
    sections = []
    for name, fid in fidelity.items():
        sections += [f"### {name.capitalize()} world model", "", *fidelity_lines(fid)]
    lines = [
        f"# diamond_env demo: {game}",
        "",
        f"Preset `{opts.preset}`, {opts.real_steps:,} real steps of random play; a fresh world "
        f"model trained {wm_steps} gradient steps ({_minutes(timings, 'world_model')}); agents "
        f"trained only in the dream of {where}: actor-critic {ac_rows[-1]['step'] if ac_rows else 0} "
        f"steps ({_minutes(timings, 'actor_critic')}), SB3 PPO ({_minutes(timings, 'ppo_dream')}); "
        f"on {platform.machine()} with torch {torch.__version__} ({opts.device}).",
        "",
        f"## Real-game scores ({opts.eval_episodes} full games each, sampled actions)",
        "",
        f"| agent | mean ± std | min | max | human-normalised | action shares, % "
        f"({' / '.join(action_meanings(game))}) |",
        "|---|---|---|---|---|---|",
    ]
    for name in AGENTS:
        s = scores.get(name)
        if s:
            hns = "n/a" if s["hns"] is None else f"{s['hns']:.3f}"
            # scores written before actions were counted have none: their shares are empty
            shares = " / ".join(f"{100 * p:.0f}" for p in EvalResult(**s).action_shares) or "–"
            lines.append(
                f"| {LABELS[name]} | {s['mean']:.1f} ± {s['std']:.1f} | {s['min']:g} | "
                f"{s['max']:g} | {hns} | {shares} |"
            )
    lines += [
        "",
        "An agent that moves less than the random policy can outscore it without looking at the "
        "screen: `diamond-env evaluate --agent AGENT --episodes 100 --baselines` compares it, on "
        "the same games, with a policy blind to the screen that has its action shares.",
        "",
        f"References (docs/method.md §6): random {ref['random']:g}, human {ref['human']:g}, DIAMOND "
        f"{ref['diamond']:g} (100k real steps, ≈2.9 GPU-days per game).",
        "",
        f"## World-model fidelity ({opts.heldout_steps:,} held-out steps of other games)",
        "",
        "Every figure beside its trivial baseline: repeating the last real frame (copy) for "
        "frames, always predicting the most frequent class (majority) for rewards and ends. "
        "No model here has trained on these games.",
        "",
        *_comparison(fidelity),
        *sections,
        "The fresh model over its training (its own held-out episodes):",
        "",
        *([f"![PSNR by horizon](wm/{psnr_png.name})", ""] if psnr_png else []),
        "![real vs dream](real_vs_dream.gif)",
        "",
        "Top: real held-out frames; bottom: the dream the agents trained in, from the same four "
        "real frames, fed the same actions (open loop).",
        "",
        "![real vs imagined](wm/real_vs_imagined.png)",
        "",
        "The fresh model's dream beside real frames (open loop).",
        "",
        "## Learning curves",
        "",
        "![learning curves](learning_curves.png)",
        "",
        "## Our agent in the real game (first evaluation game)",
        "",
        "![actor-critic](actor_critic_real.gif)",
        "",
        "## Stage timings (seconds)",
        "",
        *(f"- {name}: {seconds:g}" for name, seconds in timings.items()),
        "",
    ]
    return "\n".join(lines)
