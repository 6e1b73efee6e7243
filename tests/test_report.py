"""``write_report`` on a real tiny ``train_wm`` run and on a loop-shaped run directory."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from PIL import Image

from diamond_env.cli.report import curve_keys, write_report
from diamond_env.config import get_preset
from diamond_env.data.dataset import EpisodeDataset
from diamond_env.models.actor_critic import ActorCritic
from diamond_env.run.metrics import MetricsLogger
from diamond_env.training.train_wm import TrainWMOptions, train_world_model


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """One torch thread: the test machine's two cores are shared (and oversubscription hurts)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _linked_files(report: str) -> list[str]:
    return re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report)


def _check_links(root: Path, report: str) -> list[str]:
    """Every image the report shows exists beside it and opens; returns their names."""
    names = _linked_files(report)
    for name in names:
        with Image.open(root / name) as im:
            assert im.size[0] > 100 and im.size[1] > 100, name
    return names


def test_report_of_a_real_train_wm_run(breakout_dataset: EpisodeDataset, tmp_path: Path) -> None:
    root = tmp_path / "run"
    opts = TrainWMOptions(
        game="Breakout",
        preset="tiny",
        run_dir=str(root),
        steps=4,
        log_every=2,
        dataset=str(breakout_dataset.root),
        eval_every=0,
        num_contexts=8,
        progress=False,
    )
    train_world_model(opts)
    path = write_report(root, horizon=3)
    assert path == root / "report.md"
    text = path.read_text()
    fid = json.loads((root / "eval_wm.json").read_text())
    assert text.startswith("# Breakout: world-model run (train_wm.py)")
    for h, value in fid["psnr"].items():
        assert f"| open-loop PSNR, {h} steps after the context | {value:.2f} dB |" in text
    conf = fid["reward_confusion"]
    assert f"| 0 | {conf[1][0]} | {conf[1][1]} | {conf[1][2]} |" in text
    assert sum(map(sum, conf)) == fid["transitions"] > 0
    end = fid["end_confusion"]
    assert f"| end | {end[1][0]} | {end[1][1]} |" in text
    assert "- denoiser/loss: " in text and "at gradient step 4" in text
    names = _check_links(root, text)
    expected = ["report_learning_curves.png", "report_psnr.png", "report_confusion.png"]
    assert names[: len(expected)] == expected
    assert {"real_vs_dream.gif", "real_vs_imagined.png"} <= set(names)
    assert "Real-game returns" not in text and not (root / "report_returns.png").exists()
    with Image.open(root / "real_vs_dream.gif") as im:
        assert im.n_frames == 4 + 3  # L context frames + horizon
    assert not (root / "fidelity.json").exists()  # the held-out figures were used


def _loop_run(root: Path, checkpoint: Path, dataset: Path) -> dict[str, float]:
    """A directory laid out as ``diamond-env train`` leaves it, with real models and data."""
    shutil.copytree(checkpoint, root / "world_model")
    (root / "dataset").symlink_to(dataset, target_is_directory=True)
    torch.manual_seed(0)
    ActorCritic(get_preset("tiny").actor_critic, 4).save(root / "actor_critic")
    agent = {"kind": "actor_critic", "game": "Breakout"}
    (root / "actor_critic" / "agent.json").write_text(json.dumps(agent))
    (root / "options.json").write_text(json.dumps({"game": "Breakout", "preset": "tiny"}))
    with MetricsLogger(root, tensorboard=False) as log:
        for epoch in (1, 2, 3):
            log.log(
                epoch,
                {
                    "denoiser/loss": 1.0 / epoch,
                    "actor_critic/loss": 0.5,
                    "real_steps": 200 + 100 * epoch,
                },
            )
            log.log(epoch, {"collect/return": float(epoch)}, kind="collect")
        log.log(2, {"return_mean": 1.5, "return_std": 0.5}, kind="eval")
        log.log(3, {"return_mean": 2.0, "return_std": 1.0}, kind="final_eval")
    final = {"episodes": 2, "mean": 2.0, "std": 1.0, "min": 1.0, "max": 3.0, "hns": 0.0104}
    (root / "eval.json").write_text(json.dumps(final))
    return final


def test_report_of_a_loop_run(
    tiny_checkpoint: Path, breakout_dataset: EpisodeDataset, tmp_path: Path
) -> None:
    root = tmp_path / "loop"
    _loop_run(root, tiny_checkpoint, breakout_dataset.root)
    text = write_report(root, horizon=3, agent_steps=2).read_text()
    assert text.startswith("# Breakout: full DIAMOND loop (diamond-env train)")
    assert "| real steps used | 500 |" in text and "| last training record | epoch 3 |" in text
    assert "| return mean ± std | 2.0 ± 1.0 |" in text and "| min / max | 1 / 3 |" in text
    assert "| human-normalised score | 0.010 |" in text
    assert "random 1.7, human 30.5, diamond 132.5" in text  # docs/method.md §6 reference scores
    fid = json.loads((root / "fidelity.json").read_text())  # computed: no eval_wm.json here
    assert "not held out" in text
    for h, value in fid["psnr"].items():
        assert f"| open-loop PSNR, {h} steps after the context | {value:.2f} dB |" in text
    names = _check_links(root, text)
    assert {"report_returns.png", "real_vs_dream.gif", "agent_real_vs_dream.gif"} <= set(names)
    with Image.open(root / "agent_real_vs_dream.gif") as im:
        assert im.n_frames == 4 + 2  # the shared real start + agent steps
    mtime = (root / "real_vs_dream.gif").stat().st_mtime_ns
    write_report(root, fidelity=False)  # videos are kept, not remade
    assert (root / "real_vs_dream.gif").stat().st_mtime_ns == mtime


def test_curve_keys_and_missing_run(tmp_path: Path) -> None:
    records = [
        {
            "kind": "train",
            "step": 1,
            "time": 0.0,
            "zeta": 1.0,
            "rew_end/loss": 2.0,
            "denoiser/loss": 3.0,
            "flag": True,
            "real_steps": 5,
        }
    ]
    assert curve_keys(records) == ["denoiser/loss", "rew_end/loss"]  # known ones, in order
    assert curve_keys([{"kind": "train", "step": 1, "b": 1, "a": 2.0, "s": "x"}]) == ["b", "a"]
    with pytest.raises(FileNotFoundError, match="expected metrics.jsonl or world_model"):
        write_report(tmp_path)
