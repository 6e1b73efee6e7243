"""Put a trained world model (and its dream-trained agent) inside the package, with a model card.

Maintainers run this once per shipped game; users never need it. It measures the model on a
held-out dataset in float32 and float16, keeps float16 weights only when every open-loop PSNR
stays within ``--fp16-tolerance`` dB of float32, and writes::

    diamond_env/pretrained/<Game>/world_model/   (config.json, model.safetensors, contexts)
    diamond_env/pretrained/<Game>/agent/         (when --agent is given)
    diamond_env/pretrained/<Game>/card.json      (what the model card says, machine-readable)
    diamond_env/pretrained/<Game>/MODEL_CARD.md

Usage::

    python tools/ship_pretrained.py --world-model RUN/world_model --heldout HELDOUT_DATASET \\
        --training training.json [--agent AGENT_DIR --scores SCORES_JSON] [--paddle-states 96]
    python tools/ship_pretrained.py --agent-only --game Breakout --agent AGENT_DIR \\
        --scores SCORES_JSON [--training training.json]

The second form replaces only the shipped agent (and its scores, and the training record when
given) and keeps the shipped world model and its measurements: agents are retrained more often
than models. Either way an agent ships only if it was trained in the world model being shipped
(its ``world_model_id.json`` digests match those of ``--world-model``, recorded in the card).

``training.json`` records how the model was made (command, data, steps, minutes, machine, date);
``--scores`` is ``diamond-env evaluate --out`` of the agent (or a ``{"name": result}`` map).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from diamond_env.data.dataset import EpisodeDataset
from diamond_env.evaluation.fidelity import fidelity_lines
from diamond_env.evaluation.paddle import paddle_probe
from diamond_env.evaluation.wm_eval import evaluate_world_model
from diamond_env.run.paths import PRETRAINED_ROOT
from diamond_env.run.safe_io import read_json
from diamond_env.training.agents import WORLD_MODEL_ID
from diamond_env.world_model.model import WorldModel

AGENT_FILES = (
    "agent.json",
    "actor_critic.json",
    "actor_critic.safetensors",
    "sb3_policy.safetensors",
)


def measure(path: Path, heldout: EpisodeDataset, rollouts: int, seed: int) -> dict[str, Any]:
    wm = WorldModel.load(path, expected_game=heldout.game)
    with torch.no_grad():
        return evaluate_world_model(
            wm,
            heldout.load_all(),
            seq_len=wm.config.loop.rew_end_seq_len,
            seed=seed,
            batches=8,
            num_rollouts=rollouts,
        )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--agent-only", action="store_true", help="replace only the shipped agent")
    p.add_argument("--game", default=None, help="with --agent-only: whose shipped agent")
    p.add_argument("--world-model", type=Path, default=None)
    p.add_argument("--heldout", type=Path, default=None, help="dataset never trained on")
    p.add_argument("--training", type=Path, default=None, help="JSON: how the model was made")
    p.add_argument("--agent", type=Path, default=None)
    p.add_argument("--scores", type=Path, default=None, help="JSON: the agent's real scores")
    p.add_argument("--rollouts", type=int, default=64)
    p.add_argument("--fp16-tolerance", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--paddle-states",
        type=int,
        default=0,
        help="Breakout: the card also gives the paddle probe from this many real states",
    )
    args = p.parse_args(argv)
    if args.paddle_states < 0:
        p.error(f"--paddle-states: expected >= 0, got {args.paddle_states}")
    if args.agent_only:
        if args.game is None or args.agent is None or args.scores is None:
            p.error("--agent-only needs --game, --agent and --scores")
        if args.world_model is not None or args.heldout is not None:
            p.error("--agent-only keeps the shipped world model: drop --world-model/--heldout")
        return ship_agent_only(args.game, args.agent, args.scores, args.training)
    if args.world_model is None or args.heldout is None or args.training is None:
        p.error("--world-model, --heldout and --training are required (or --agent-only)")
    source_sha256 = read_json(args.world_model / "config.json").get("sha256")
    if args.agent is not None:
        check_agent_world(args.agent, source_sha256)

    # read everything that can be wrong before the package's copy is replaced
    scores = None if args.scores is None else read_scores(args.scores)
    heldout = EpisodeDataset.open(args.heldout)
    full = measure(args.world_model, heldout, args.rollouts, args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        half = WorldModel.load(args.world_model).half()
        half.save(Path(tmp) / "world_model")
        reduced = measure(Path(tmp) / "world_model", heldout, args.rollouts, args.seed)
        gaps = {h: abs(reduced["psnr"][h] - full["psnr"][h]) for h in full["psnr"]}
        use_fp16 = max(gaps.values()) <= args.fp16_tolerance
        source = Path(tmp) / "world_model" if use_fp16 else args.world_model
        if args.paddle_states:  # on the weights that ship
            probe = paddle_probe(
                WorldModel.load(source), num_states=args.paddle_states, seed=args.seed
            )
        game = heldout.game
        root = PRETRAINED_ROOT / game
        if root.exists():
            shutil.rmtree(root)  # the package's own copy, replaced as a whole
        shutil.copytree(source, root / "world_model")
    fidelity = reduced if use_fp16 else full
    if args.paddle_states:
        fidelity["paddle"] = probe
    card: dict[str, Any] = {
        "game": game,
        "training": json.loads(args.training.read_text(encoding="utf-8")),
        "weights": "float16" if use_fp16 else "float32",
        "fp16_psnr_gap_db": {str(h): round(float(g), 4) for h, g in gaps.items()},
        "heldout": {
            "dataset": str(args.heldout.name),
            "steps": heldout.num_steps,
            "games": heldout.num_episodes,
            "rollouts": args.rollouts,
            "seed": args.seed,
        },
        "fidelity": fidelity,
        "source_sha256": source_sha256,
    }
    if args.agent is not None:
        copy_agent(args.agent, root / "agent")
        if scores is not None:
            card["agent_scores"] = portable(scores)
    write_card(root, card)
    print(
        f"wrote {root} ({package_mib(root):.1f} MiB, {card['weights']} weights, "
        f"fp16 PSNR gap {max(gaps.values()):.3f} dB)"
    )
    return 0


def ship_agent_only(game: str, agent: Path, scores_path: Path, training: Path | None) -> int:
    """Replace the shipped agent of ``game`` (and its scores; the training record when given)."""
    root = PRETRAINED_ROOT / game
    card_path = root / "card.json"
    if not card_path.is_file():
        raise SystemExit(f"--agent-only: {game} has no shipped model ({card_path} is missing)")
    card = read_json(card_path)
    if "source_sha256" not in card:
        raise SystemExit(
            f"--agent-only: {card_path} does not record which weights were measured; ship the "
            "world model again with --world-model"
        )
    check_agent_world(agent, card["source_sha256"])
    scores = read_scores(scores_path)
    new_training = None if training is None else read_json(training)
    if (root / "agent").exists():
        shutil.rmtree(root / "agent")
    copy_agent(agent, root / "agent")
    card["agent_scores"] = portable(scores)
    if new_training is not None:
        card["training"] = new_training
    write_card(root, card)
    print(f"wrote {root / 'agent'} and the card ({package_mib(root):.1f} MiB in all)")
    return 0


def check_agent_world(agent: Path, source_sha256: Any) -> None:
    """Exit unless ``agent`` was trained in the world model whose file digests are
    ``source_sha256``: a shipped agent plays the dream shipped beside it."""
    identity = agent / WORLD_MODEL_ID
    if not identity.is_file():
        raise SystemExit(f"{agent}: no {WORLD_MODEL_ID}, so which dream it learnt in is unknown")
    trained_in = read_json(identity)
    if not source_sha256 or trained_in.get("sha256") != source_sha256:
        raise SystemExit(
            f"{agent} was trained in {trained_in.get('checkpoint')}, not in the world model "
            "being shipped (their weights differ)"
        )


def copy_agent(agent: Path, dest: Path) -> None:
    dest.mkdir(parents=True)
    for name in AGENT_FILES:
        if (agent / name).exists():
            shutil.copy2(agent / name, dest / name)
    meta = read_json(dest / "agent.json")
    if "world_model" in meta:  # the shipped agent's world is the model beside it
        meta["world_model"] = "../world_model"
    (dest / "agent.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")


def write_card(root: Path, card: dict[str, Any]) -> None:
    (root / "card.json").write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    (root / "MODEL_CARD.md").write_text(model_card(card), encoding="utf-8")


def package_mib(root: Path) -> float:
    return sum(f.stat().st_size for f in root.rglob("*") if f.is_file()) / 2**20


def read_scores(path: Path) -> dict[str, dict[str, Any]]:
    """``{name: evaluate result}`` from ``path``: such a map, or one ``diamond-env evaluate --out``
    result (named "shipped agent"). Raises ``ValueError`` for anything else."""
    scores = json.loads(path.read_text(encoding="utf-8"))
    if isinstance(scores, dict) and "mean" in scores:
        scores = {"shipped agent": scores}
    keys = ("mean", "std", "episodes")
    if not isinstance(scores, dict) or not all(
        isinstance(r, dict) and all(k in r for k in keys) for r in scores.values()
    ):
        raise ValueError(f"{path}: expected an evaluate result or a map of them (with {keys})")
    return scores


def portable(value: Any) -> Any:
    """``value`` with every absolute path cut to its last part: no path of the maintainer's
    machine goes into the package."""
    if isinstance(value, dict):
        return {k: portable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [portable(v) for v in value]
    if isinstance(value, str) and Path(value).is_absolute():
        return Path(value).name
    return value


def model_card(card: dict[str, Any]) -> str:
    t = card["training"]
    lines = [f"# Shipped world model: {card['game']}", ""]
    lines += [f"- {key}: {value}" for key, value in t.items()]
    h = card["heldout"]
    lines += [
        f"- weights: {card['weights']} (float16 kept only when every held-out PSNR is within "
        f"0.1 dB of float32; gaps {card['fp16_psnr_gap_db']})",
        "",
        f"## Held-out fidelity ({h['dataset']}: {h['steps']} random-play steps in {h['games']} "
        f"games never trained on, {h['rollouts']} open-loop rollouts, seed {h['seed']})",
        "",
        *fidelity_lines(card["fidelity"]),
    ]
    scores = card.get("agent_scores")
    if scores:
        lines += [
            "",
            "## Agent scores in the real game",
            "",
            "| agent | games | mean | std | SE |",
            "|---|---:|---:|---:|---:|",
        ]
        for name, r in scores.items():
            se = r["std"] / max(1, r["episodes"]) ** 0.5
            lines.append(
                f"| {name} | {r['episodes']} | {r['mean']:.2f} | {r['std']:.2f} | {se:.2f} |"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
