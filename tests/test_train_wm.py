"""train_wm.py end to end on real Breakout data: outputs, learning, resume, refusals."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from diamond_env.config import get_preset
from diamond_env.data.dataset import EpisodeDataset
from diamond_env.data.segments import SegmentSampler
from diamond_env.evaluation.wm_eval import denoising_loss
from diamond_env.run.metrics import read_metrics
from diamond_env.training.train_wm import TrainWMOptions, train_world_model
from diamond_env.training.wm_trainer import (
    WorldModelTrainer,
    build_context_bank,
    split_episodes,
)
from diamond_env.world_model.model import WorldModel

ROOT = Path(__file__).resolve().parents[1]


def _opts(tmp: Path, dataset: EpisodeDataset, **kw: object) -> TrainWMOptions:
    base = TrainWMOptions(
        game="Breakout",
        preset="tiny",
        run_dir=str(tmp / "run"),
        dataset=str(dataset.root),
        steps=6,
        save_every=3,
        eval_every=0,
        log_every=1,
        num_contexts=16,
        progress=False,
        eval_rollouts=4,
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def test_script_collects_trains_and_writes_outputs(tmp_path: Path) -> None:
    run = tmp_path / "D"
    cmd = [
        sys.executable,
        str(ROOT / "train_wm.py"),
        "--game",
        "Breakout",
        "--preset",
        "tiny",
        "--real-steps",
        "400",
        "--steps",
        "4",
        "--run-dir",
        str(run),
        "--no-progress",
        "--num-contexts",
        "8",
        "--eval-rollouts",
        "4",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=True).stdout
    assert "PSNR" in out and "copy" in out  # every figure beside its baseline
    for name in (
        "world_model/config.json",
        "world_model/model.safetensors",
        "metrics.jsonl",
        "eval_wm.json",
        "real_vs_imagined.png",
        "resume.pt",
        "dataset/dataset.json",
    ):
        assert (run / name).exists(), name
    records = read_metrics(run, kind="train")
    assert records[-1]["step"] == 4 and "rew_end/loss" in records[-1]
    assert all(np.isfinite(r["denoiser/loss"]) for r in records)
    wm = WorldModel.load(run / "world_model")
    assert wm.game == "Breakout" and len(wm.contexts) == 8
    assert EpisodeDataset.open(run / "dataset").num_steps == 400


def test_installed_command_takes_the_same_options(
    tmp_path: Path, breakout_dataset: EpisodeDataset, capsys: pytest.CaptureFixture[str]
) -> None:
    from diamond_env.cli.main import main

    argv = [
        "train-wm",
        "--game",
        "Breakout",
        "--preset",
        "tiny",
        "--dataset",
        str(breakout_dataset.root),
        "--steps",
        "2",
        "--run-dir",
        str(tmp_path / "run"),
        "--no-progress",
        "--num-contexts",
        "8",
        "--eval-every",
        "0",
        "--eval-rollouts",
        "4",
        "--overrides",
        "denoiser.predict_change=true loop.rew_end_event_fraction=0.5",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "gradient steps" in out and "copy" in out
    wm = WorldModel.load(tmp_path / "run" / "world_model")
    assert wm.denoiser.config.predict_change and wm.config.loop.rew_end_event_fraction == 0.5
    # the overrides are part of the run: resuming with others is refused
    assert main([*argv[:-1], "denoiser.predict_change=true", "--resume", "--steps", "3"]) == 2
    assert "overrides" in capsys.readouterr().err
    # resuming needs no option again: those not given are the run's own (options.json)
    run = str(tmp_path / "run")
    assert main(["train-wm", "--resume", "--run-dir", run, "--steps", "3", "--no-progress"]) == 0
    stored = json.loads((tmp_path / "run" / "options.json").read_text())
    assert stored["overrides"] == argv[-1] and stored["dataset"] == str(breakout_dataset.root)
    assert stored["num_contexts"] == 8 and stored["steps"] == 3 and stored["resume"]
    assert read_metrics(tmp_path / "run", kind="train")[-1]["step"] == 3
    assert main(argv[:-2] + ["--overrides", "typo.x=1"]) == 2


def test_resume_continues_exactly(tmp_path: Path, breakout_dataset: EpisodeDataset) -> None:
    straight = train_world_model(_opts(tmp_path / "a", breakout_dataset, steps=6))
    train_world_model(_opts(tmp_path / "b", breakout_dataset, steps=3))
    resumed = train_world_model(_opts(tmp_path / "b", breakout_dataset, steps=6, resume=True))
    assert straight["grad_steps"] == resumed["grad_steps"] == 6
    a = WorldModel.load(tmp_path / "a" / "run" / "world_model").state_dict()
    b = WorldModel.load(tmp_path / "b" / "run" / "world_model").state_dict()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
    steps = [r["step"] for r in read_metrics(tmp_path / "b" / "run", kind="train")]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_resume_refuses_changed_configuration(
    tmp_path: Path, breakout_dataset: EpisodeDataset
) -> None:
    train_world_model(_opts(tmp_path, breakout_dataset, steps=3))
    with pytest.raises(ValueError, match="preset"):
        train_world_model(_opts(tmp_path, breakout_dataset, steps=6, preset="small", resume=True))
    with pytest.raises(ValueError, match="--resume"):
        train_world_model(_opts(tmp_path, breakout_dataset, steps=6))


def test_resume_of_a_run_older_than_an_option(
    tmp_path: Path, breakout_dataset: EpisodeDataset
) -> None:
    # a run started before an option existed stored no value for it: it ran with what is now the
    # option's default, so resuming with the default continues and another value is refused
    train_world_model(_opts(tmp_path, breakout_dataset, steps=3))
    path = tmp_path / "run" / "options.json"
    stored = json.loads(path.read_text())
    del stored["overrides"]
    path.write_text(json.dumps(stored))
    assert train_world_model(_opts(tmp_path, breakout_dataset, resume=True))["grad_steps"] == 6
    with pytest.raises(ValueError, match="overrides: run has ''"):
        train_world_model(
            _opts(
                tmp_path,
                breakout_dataset,
                steps=9,
                resume=True,
                overrides="denoiser.predict_change=true",
            )
        )


def test_resume_after_sigkill(tmp_path: Path, breakout_dataset: EpisodeDataset) -> None:
    run = tmp_path / "run"
    cmd = [
        sys.executable,
        str(ROOT / "train_wm.py"),
        "--preset",
        "tiny",
        "--run-dir",
        str(run),
        "--dataset",
        str(breakout_dataset.root),
        "--steps",
        "100000",
        "--save-every",
        "2",
        "--no-progress",
        "--num-contexts",
        "8",
        "--eval-every",
        "0",
        "--eval-rollouts",
        "4",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not (run / "resume.pt").exists():
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    saved = torch.load(run / "resume.pt", weights_only=True)["grad_steps"]
    assert saved >= 2
    results = train_world_model(
        replace(
            _opts(tmp_path, breakout_dataset),
            run_dir=str(run),
            steps=saved + 2,
            save_every=2,
            num_contexts=8,
            resume=True,
        )
    )
    assert results["grad_steps"] == saved + 2


def test_refuses_another_games_dataset(tmp_path: Path, breakout_dataset: EpisodeDataset) -> None:
    with pytest.raises(ValueError, match="Pong"):
        train_world_model(_opts(tmp_path, breakout_dataset, game="Pong"))


def test_held_out_denoising_loss_falls_on_real_frames(breakout_dataset: EpisodeDataset) -> None:
    torch.manual_seed(0)
    config = get_preset("tiny")
    split = split_episodes(breakout_dataset.num_episodes, 0.2)
    train = breakout_dataset.load_all(split.train)
    test = breakout_dataset.load_all(split.test)
    bank = build_context_bank(train, 4, 4, np.random.default_rng(0))
    wm = WorldModel(config, "Breakout", breakout_dataset.action_meanings, bank)
    trainer = WorldModelTrainer(wm, config, torch.device("cpu"))
    den = SegmentSampler(train, 5, pad_after_end=False, seed=1)
    before = denoising_loss(wm, test, batches=3, batch_size=16, seed=0)
    for _ in range(40):
        trainer.denoiser_step(den)
    after = denoising_loss(wm, test, batches=3, batch_size=16, seed=0)
    assert after < 0.5 * before, (before, after)


def test_eval_json_is_complete(tmp_path: Path, breakout_dataset: EpisodeDataset) -> None:
    train_world_model(_opts(tmp_path, breakout_dataset, steps=2))
    run = json.loads((tmp_path / "run" / "run.json").read_text())  # what made the figures
    assert run["command"] == "train-wm" and run["options"]["steps"] == 2
    assert run["versions"]["torch"] == torch.__version__.split("+")[0] or run["versions"]["torch"]
    assert (
        run["machine"]["cpu_count"] and run["source"] is None or len(run["source"]["commit"]) == 40
    )
    assert [s["status"] for s in run["sessions"]] == ["finished"] and run["grad_steps"] == 2
    train_world_model(_opts(tmp_path, breakout_dataset, steps=3, resume=True))
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert [s["status"] for s in run["sessions"]] == ["finished", "finished"]
    assert run["grad_steps"] == 3 and run["sessions"][1]["start"] >= run["sessions"][0]["end"]
    results = json.loads((tmp_path / "run" / "eval_wm.json").read_text())
    assert set(results["psnr"]) == {"1", "5", "15"}
    assert set(results["reward_f1"]) == {"-1", "0", "1"} and set(results["end_f1"]) == {"0", "1"}
    assert len(results["reward_confusion"]) == 3


def test_init_from_starts_from_the_checkpoint(
    tmp_path: Path, breakout_dataset: EpisodeDataset
) -> None:
    train_world_model(_opts(tmp_path / "a", breakout_dataset, steps=4))
    source = tmp_path / "a" / "run" / "world_model"
    # with learning rates 0 the fine-tuned run's weights stay exactly the checkpoint's
    frozen = "denoiser_optim.lr=0 rew_end_optim.lr=0 loop.denoiser_seq_len=5"
    train_world_model(
        _opts(tmp_path / "b", breakout_dataset, steps=2, init_from=str(source), overrides=frozen)
    )
    a = WorldModel.load(source).state_dict()
    b = WorldModel.load(tmp_path / "b" / "run" / "world_model")
    assert b.config.loop.denoiser_seq_len == 5  # the recipe is this run's own
    for key, value in b.state_dict().items():
        torch.testing.assert_close(value, a[key], rtol=0, atol=0, msg=key)
    assert [r["step"] for r in read_metrics(tmp_path / "b" / "run", kind="train")] == [1, 2]
    # without the checkpoint the same run starts elsewhere
    train_world_model(_opts(tmp_path / "c", breakout_dataset, steps=2, overrides=frozen))
    c = WorldModel.load(tmp_path / "c" / "run" / "world_model").state_dict()
    assert any(not torch.equal(c[k], a[k]) for k in a)
    # a run started from a checkpoint is resumed from its own weights, with the same checkpoint
    opts = _opts(tmp_path / "b", breakout_dataset, steps=3, init_from=str(source), overrides=frozen)
    assert train_world_model(replace(opts, resume=True))["grad_steps"] == 3
    with pytest.raises(ValueError, match="init_from"):
        train_world_model(replace(opts, resume=True, init_from=None, steps=4))


def test_init_from_refuses_other_networks(tmp_path: Path, breakout_dataset: EpisodeDataset) -> None:
    train_world_model(_opts(tmp_path / "a", breakout_dataset, steps=1))
    source = str(tmp_path / "a" / "run" / "world_model")
    with pytest.raises(ValueError, match=r"denoiser\.channels.*this run"):
        train_world_model(
            _opts(
                tmp_path / "b",
                breakout_dataset,
                init_from=source,
                overrides="denoiser.channels=[8,8,8,8]",
            )
        )
    with pytest.raises(ValueError, match="predict_change"):
        train_world_model(
            _opts(
                tmp_path / "c",
                breakout_dataset,
                init_from=source,
                overrides="denoiser.predict_change=true",
            )
        )
    with pytest.raises(ValueError, match="a model of Breakout, not Pong"):
        train_world_model(_opts(tmp_path / "d", breakout_dataset, init_from=source, game="Pong"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        train_world_model(_opts(tmp_path / "e", breakout_dataset, init_from=str(tmp_path / "no")))
    # refused before anything is written: the same command with a right checkpoint just runs
    assert not any((tmp_path / name / "run").exists() for name in "bcde")
