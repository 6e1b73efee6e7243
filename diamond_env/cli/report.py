"""``diamond-env report``: a self-contained ``report.md`` (with PNG plots beside it) for a run
directory of ``train_wm.py`` (world model only) or ``diamond-env train`` (the full loop).

What the report shows, each part when its inputs are there:

* the run's options and headline numbers;
* learning curves from ``metrics.jsonl`` (``report_learning_curves.png``);
* world-model fidelity: open-loop PSNR by horizon (final and over training), reward and
  termination F1 and confusion matrices (``report_psnr.png``, ``report_confusion.png``). A
  ``train_wm.py`` run has them in ``eval_wm.json`` (held-out episodes); for a loop run they are
  computed on the run's most recent episodes (``fidelity.json``; not held out, the loop trains on
  all of its data);
* real-game returns over training and at the end (``report_returns.png``, ``eval.json``);
* videos: ``real_vs_dream.gif`` (open loop) and, with an agent, ``agent_real_vs_dream.gif``, made
  with :mod:`diamond_env.cli.video` when ``world_model/`` and the run's episodes (``dataset/`` or the
  ``--dataset`` it trained on) are there and the GIF is not.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from diamond_env.data.dataset import INDEX_NAME
from diamond_env.evaluation.fidelity import fidelity_lines, markdown_table
from diamond_env.run.checkpoint import atomic_write_text
from diamond_env.run.metrics import read_metrics
from diamond_env.run.safe_io import read_json

CURVE_KEYS = (
    "denoiser/loss",
    "rew_end/loss",
    "rew_end/loss_rew",
    "rew_end/loss_end",
    "actor_critic/loss",
    "actor_critic/imagined_reward",
    "actor_critic/entropy",
    "actor_critic/value",
    "episode_return",
)
"""Training scalars plotted when present (otherwise the first numeric ones found)."""
NOT_SCALARS = ("kind", "step", "time", "real_steps")
FIGURES = {
    "curves": "report_learning_curves.png",
    "psnr": "report_psnr.png",
    "confusion": "report_confusion.png",
    "returns": "report_returns.png",
}


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    data: dict[str, Any] = read_json(path)
    return data


def _figure(ncols: int, nrows: int = 1, width: float = 4.5, height: float = 3.2) -> Any:
    """A matplotlib Figure on the Agg canvas (no pyplot, no global backend change) and its axes."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, height * nrows))
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    return fig, axes


def _save(fig: Any, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    return path.name


def curve_keys(records: list[dict[str, Any]], limit: int = 9) -> list[str]:
    """The training scalars to plot: those of :data:`CURVE_KEYS` present in ``records``, else the
    first ``limit`` numeric keys."""
    present: dict[str, None] = {}
    for r in records:
        for k, v in r.items():
            if k not in NOT_SCALARS and isinstance(v, (int, float)) and not isinstance(v, bool):
                present[k] = None
    chosen = [k for k in CURVE_KEYS if k in present]
    return chosen or list(present)[:limit]


def plot_curves(records: list[dict[str, Any]], out: Path, unit: str = "step") -> str | None:
    """One panel per training scalar against the record's step; None when nothing to plot."""
    keys = curve_keys(records)
    if not keys:
        return None
    ncols = min(3, len(keys))
    fig, axes = _figure(ncols, math.ceil(len(keys) / ncols))
    for ax, key in zip(axes, keys, strict=False):
        pts = [(r["step"], r[key]) for r in records if isinstance(r.get(key), (int, float))]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="." if len(pts) < 30 else None)
        if "loss" in key and all(p[1] > 0 for p in pts):
            ax.set_yscale("log")
        ax.set(title=key, xlabel=unit)
        ax.grid(alpha=0.3)
    for ax in axes[len(keys) :]:
        ax.set_visible(False)
    return _save(fig, out)


def plot_psnr(fidelity: dict[str, Any], evals: list[dict[str, Any]], out: Path) -> str | None:
    """Final PSNR against horizon next to copy-last-frame, and PSNR per horizon over training
    (from ``eval`` records; dashed: the copy baseline on the same rollouts)."""
    curve = fidelity.get("psnr_curve") or [
        v for _, v in sorted((int(h), float(v)) for h, v in fidelity.get("psnr", {}).items())
    ]
    horizons = sorted({int(k.split("/")[1]) for r in evals for k in r if k.startswith("psnr/")})
    if not curve:
        return None
    fig, axes = _figure(2 if horizons else 1)
    steps = list(range(1, len(curve) + 1))
    axes[0].plot(steps, curve, marker="o", label="world model")
    if fidelity.get("psnr_copy_curve"):
        axes[0].plot(
            steps,
            fidelity["psnr_copy_curve"],
            marker="x",
            linestyle="--",
            label="copy last real frame",
        )
    axes[0].set(
        title="open-loop PSNR (final, pooled MSE)", xlabel="steps after the context", ylabel="dB"
    )
    axes[0].legend()
    for h in horizons:
        pts = [(r["step"], r[f"psnr/{h}"]) for r in evals if f"psnr/{h}" in r]
        line = axes[1].plot([p[0] for p in pts], [p[1] for p in pts], marker=".", label=f"+{h}")
        base = [(r["step"], r[f"psnr_copy/{h}"]) for r in evals if f"psnr_copy/{h}" in r]
        if base:
            axes[1].plot(
                [p[0] for p in base],
                [p[1] for p in base],
                linestyle="--",
                marker="x",
                color=line[0].get_color(),
            )
    if horizons:
        axes[1].plot([], [], linestyle="--", marker="x", color="grey", label="copy (same rollouts)")
        axes[1].set(title="PSNR during training", xlabel="gradient step", ylabel="dB")
        axes[1].legend()
    for ax in axes:
        ax.grid(alpha=0.3)
    return _save(fig, out)


def plot_confusion(fidelity: dict[str, Any], out: Path) -> str | None:
    """Heat maps of the reward-sign and termination confusion matrices (rows: true class)."""
    names = (
        ("reward_confusion", ["-1", "0", "+1"], "reward sign"),
        ("end_confusion", ["go on", "end"], "termination"),
    )
    mats: list[tuple[list[list[int]], list[str], str]] = [
        (fidelity[key], labels, title) for key, labels, title in names if fidelity.get(key)
    ]
    if not mats:
        return None
    fig, axes = _figure(len(mats), width=3.8, height=3.4)
    for ax, (mat, labels, title) in zip(axes, mats, strict=True):
        share = [[c / max(1, sum(row)) for c in row] for row in mat]  # per true class
        ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
        for i, row in enumerate(mat):
            for j, count in enumerate(row):
                color = "white" if share[i][j] > 0.5 else "black"
                ax.text(j, i, str(count), ha="center", va="center", color=color)
        ticks = list(range(len(labels)))
        ax.set(
            title=title,
            xlabel="predicted",
            ylabel="true",
            xticks=ticks,
            yticks=ticks,
            xticklabels=labels,
            yticklabels=labels,
        )
    return _save(fig, out)


def plot_returns(metrics: list[dict[str, Any]], final: dict[str, Any], out: Path) -> str | None:
    """Real-game returns: evaluation games (mean ± std) and collection games, against epoch."""
    evals = [r for r in metrics if r["kind"] in ("eval", "final_eval") and "return_mean" in r]
    collect = [r for r in metrics if r["kind"] == "collect" and "collect/return" in r]
    if not evals and not collect and not final:
        return None
    fig, axes = _figure(1, width=6)
    ax = axes[0]
    if evals:
        x = [r["step"] for r in evals]
        ax.errorbar(
            x,
            [r["return_mean"] for r in evals],
            yerr=[r.get("return_std", 0) for r in evals],
            marker="o",
            capsize=3,
            label="evaluation (full games)",
        )
    if collect:
        ax.plot(
            [r["step"] for r in collect],
            [r["collect/return"] for r in collect],
            marker=".",
            alpha=0.7,
            label="collection games (with ε)",
        )
    if final.get("mean") is not None:
        ax.axhline(final["mean"], color="k", ls="--", lw=1, label="final evaluation")
    ax.set(title="real-game return", xlabel="epoch", ylabel="return")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, out)


def _confusion_md(mat: list[list[int]], labels: list[str], title: str) -> list[str]:
    lines = [
        f"{title} (rows: true, columns: predicted)",
        "",
        "| true \\ predicted | " + " | ".join(labels) + " |",
        "|---" * (len(labels) + 1) + "|",
    ]
    lines += [
        f"| {lab} | " + " | ".join(map(str, row)) + " |"
        for lab, row in zip(labels, mat, strict=True)
    ]
    return [*lines, ""]


def _fidelity_md(fid: dict[str, Any], where: str, figs: dict[str, str | None]) -> list[str]:
    lines = ["## World-model fidelity", "", where, "", *fidelity_lines(fid)]
    if figs.get("psnr"):
        lines += [f"![PSNR by horizon]({figs['psnr']})", ""]
    if fid.get("reward_confusion"):
        lines += _confusion_md(fid["reward_confusion"], ["-1", "0", "+1"], "Reward sign")
    if fid.get("end_confusion"):
        lines += _confusion_md(fid["end_confusion"], ["go on", "end"], "Termination")
    if figs.get("confusion"):
        lines += [f"![confusion matrices]({figs['confusion']})", ""]
    return lines


def _returns_md(final: dict[str, Any], game: str, fig: str | None) -> list[str]:
    from diamond_env.evaluation.real_game import reference_scores

    lines = ["## Real-game returns", ""]
    if final.get("mean") is not None:
        rows = [
            ("games", str(final.get("episodes", "?"))),
            ("return mean ± std", f"{final['mean']:.1f} ± {final.get('std', 0):.1f}"),
            ("min / max", f"{final.get('min', 0):g} / {final.get('max', 0):g}"),
            (
                "human-normalised score",
                "n/a" if final.get("hns") is None else f"{final['hns']:.3f}",
            ),
        ]
        lines += markdown_table(rows, ("final evaluation (eval.json)", "value"))
    try:
        ref = reference_scores(game)
    except ValueError:
        ref = None
    if ref is not None:
        refs = ", ".join(f"{k} {v:g}" for k, v in ref.items())
        lines += [f"References (Atari 100k scores): {refs}.", ""]
    return [*lines, f"![real-game returns]({fig})", ""] if fig else lines


def _fidelity(root: Path, wm: Any, kind: str, seed: int) -> tuple[dict[str, Any], str]:
    """``eval_wm.json`` (held out) when there, else figures computed now on recent episodes."""
    stored = _read_json(root / "eval_wm.json")
    if stored:
        n = stored.get("test_episodes", "?")
        if n == 0:
            return stored, (
                "On the episodes the model trained on: the run had too few episodes to hold any "
                "out, so these are NOT held-out figures (eval_wm.json)."
            )
        return stored, f"On {n} held-out episode(s) the model never trained on (eval_wm.json)."
    data_dir = dataset_dir(root)
    if wm is None or data_dir is None:
        return {}, ""
    from diamond_env.cli.video import recent_episodes
    from diamond_env.data.dataset import EpisodeDataset
    from diamond_env.evaluation.wm_eval import evaluate_world_model

    data = recent_episodes(EpisodeDataset.open(data_dir), wm.num_context + 15)
    fid = evaluate_world_model(wm, data, seq_len=wm.config.loop.rew_end_seq_len, seed=seed)
    fid["episodes"] = int(data.num_episodes)
    (root / "fidelity.json").write_text(json.dumps(fid, indent=2) + "\n", encoding="utf-8")
    where = (
        f"Computed now on the run's {data.num_episodes} most recent episode(s) "
        f"(fidelity.json). The {kind} trains on all its data: these are not held out."
    )
    return fid, where


def dataset_dir(root: Path) -> Path | None:
    """The run's episodes: ``dataset/`` inside it, else the ``--dataset`` it was trained on."""
    named = _read_json(root / "options.json").get("dataset")
    for path in (root / "dataset", Path(named) if isinstance(named, str) else None):
        if path is not None and (path / INDEX_NAME).is_file():
            return path
    return None


def _video_data(root: Path, data_dir: Path, wm: Any, horizon: int) -> Any:
    """Held-out episodes of a ``train_wm`` run when long enough, else the most recent ones."""
    from diamond_env.cli.video import recent_episodes
    from diamond_env.data.dataset import EpisodeDataset
    from diamond_env.training.wm_trainer import split_episodes

    dataset = EpisodeDataset.open(data_dir)
    fraction = _read_json(root / "options.json").get("test_fraction")
    if isinstance(fraction, float):
        test = split_episodes(dataset.num_episodes, fraction).test
        if test and int(dataset.episode_lengths[test].max()) > wm.num_context:
            return dataset.load_all(test)
    return recent_episodes(dataset, wm.num_context + horizon)


def make_videos(root: Path, wm: Any, *, seed: int, horizon: int, agent_steps: int) -> list[str]:
    """Write the missing ``real_vs_dream.gif`` (needs the run's dataset) and, for a run with an
    agent in ``actor_critic/``, ``agent_real_vs_dream.gif``. Returns the names written."""
    from diamond_env.cli.video import agent_clip, open_loop_clip, render_clip, write_video
    from diamond_env.evaluation.real_game import load_agent

    written = []
    data_dir = dataset_dir(root)
    if data_dir is not None and not (root / "real_vs_dream.gif").exists():
        data = _video_data(root, data_dir, wm, horizon)
        clip = open_loop_clip(wm, data, horizon=horizon, num_rollouts=3, seed=seed)
        written.append(write_video(render_clip(clip, scale=2), root / "real_vs_dream.gif").name)
    agent_dir = root / "actor_critic"
    if (agent_dir / "agent.json").is_file() and not (root / "agent_real_vs_dream.gif").exists():
        policy, _ = load_agent(agent_dir, device=wm.device, seed=seed)
        clip = agent_clip(wm, policy, steps=agent_steps, seed=seed)
        written.append(
            write_video(render_clip(clip, scale=2), root / "agent_real_vs_dream.gif").name
        )
    return written


VIDEOS = {
    "real_vs_dream.gif": "Left: real episodes; right: the world model's dream from the same first "
    "real frames, fed the same real actions (open loop, no feedback).",
    "agent_real_vs_dream.gif": "The agent in the real game (left) and in the dream (right), both "
    "started from the same real frames; each side's actions come from its own frames.",
    "real_vs_imagined.png": "Rows in pairs: real held-out frames above imagined ones.",
}


def _videos_md(root: Path) -> list[str]:
    lines = []
    for name, caption in VIDEOS.items():
        if (root / name).exists():
            lines += [f"![{name}]({name})", "", caption, ""]
    lines += [f"- video: [{p.name}]({p.name})" for p in sorted(root.glob("*.mp4"))]
    return ["## Real vs dream", "", *lines, ""] if lines else []


def write_report(
    run_dir: str | os.PathLike[str],
    *,
    videos: bool = True,
    fidelity: bool = True,
    seed: int = 0,
    horizon: int = 30,
    agent_steps: int = 100,
    device: str = "cpu",
) -> Path:
    """Write ``run_dir/report.md`` and its figures; returns the report's path.

    ``videos``: make the missing GIFs (see :func:`make_videos`); ``fidelity``: for a run without
    ``eval_wm.json``, compute the world model's figures on recent episodes. Both need
    ``world_model/``. Raises ``FileNotFoundError`` when ``run_dir`` holds no run.
    """
    root = Path(run_dir)
    metrics = read_metrics(root)
    if not root.is_dir() or not (metrics or (root / "world_model").is_dir()):
        raise FileNotFoundError(
            f"run directory {root}: expected metrics.jsonl or world_model/ from train_wm.py or "
            "diamond-env train"
        )
    opts, final = _read_json(root / "options.json"), _read_json(root / "eval.json")
    is_loop = bool(final) or (root / "actor_critic").is_dir()
    kind = "full DIAMOND loop (diamond-env train)" if is_loop else "world-model run (train_wm.py)"
    if not (root / "world_model").is_dir() and not (root / "eval_wm.json").exists():
        kind = "run"  # e.g. train-agent's output: learning curves only
    wm = None
    if (root / "world_model").is_dir():
        from diamond_env.world_model.model import WorldModel

        wm = WorldModel.load(root / "world_model", device=device).eval()
    fid, where = _fidelity(root, wm if fidelity else None, kind, seed)
    if videos and wm is not None:
        make_videos(root, wm, seed=seed, horizon=horizon, agent_steps=agent_steps)
    train = [r for r in metrics if r["kind"] == "train"]
    unit = "epoch" if is_loop else "gradient step"
    figs = {
        "curves": plot_curves(train, root / FIGURES["curves"], unit),
        "psnr": plot_psnr(fid, [r for r in metrics if r["kind"] == "eval"], root / FIGURES["psnr"]),
        "confusion": plot_confusion(fid, root / FIGURES["confusion"]),
        "returns": plot_returns(metrics, final, root / FIGURES["returns"]) if is_loop else None,
    }
    game = wm.game if wm is not None else str(opts.get("game", "?"))
    lines = [f"# {game}: {kind}", "", f"Run directory `{root}`.", ""]
    lines += markdown_table(_headline(train, fid, final, opts, unit), ("headline", "value"))
    if figs["curves"]:
        last = train[-1]
        keys = [k for k in curve_keys(train) if isinstance(last.get(k), (int, float))]
        lines += ["## Learning curves", "", f"![learning curves]({figs['curves']})", ""]
        lines += [*(f"- {k}: {last[k]:.4g} at {unit} {last['step']}" for k in keys), ""]
    lines += _fidelity_md(fid, where, figs) if fid else []
    lines += _returns_md(final, game, figs["returns"]) if is_loop else []
    lines += _videos_md(root)
    lines += ["## Options", "", *(f"- `{k}`: `{v}`" for k, v in opts.items()), ""] if opts else []
    out = root / "report.md"
    atomic_write_text(out, "\n".join(lines))
    return out


def _headline(
    train: list[dict[str, Any]],
    fid: dict[str, Any],
    final: dict[str, Any],
    opts: dict[str, Any],
    unit: str,
) -> list[tuple[str, str]]:
    rows = [("preset", str(opts.get("preset", "?")))]
    if train:
        rows.append(("last training record", f"{unit} {train[-1]['step']}"))
        if "real_steps" in train[-1]:
            rows.append(("real steps used", f"{train[-1]['real_steps']:,}"))
    if "grad_steps" in fid:
        rows.append(("world-model gradient steps", str(fid["grad_steps"])))
    psnr = fid.get("psnr", {})
    if psnr:
        h = max(psnr, key=int)
        rows.append((f"open-loop PSNR after {h} steps", f"{psnr[h]:.2f} dB"))
    if final.get("mean") is not None:
        rows.append(("final real-game return", f"{final['mean']:.1f} ± {final.get('std', 0):.1f}"))
    return rows
