"""Crafted and broken inputs: each refused in one line (CLI exit 2), fast, small, and with
nothing written, changed or left behind. One test per failure class of the security probe."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from diamond_env.cli.main import main
from diamond_env.config import get_preset
from diamond_env.data.dataset import EpisodeDataset
from diamond_env.models.actor_critic import ActorCritic
from diamond_env.run.checkpoint import (
    file_sha256,
    load_resume_state,
    save_resume_state,
    set_rng_state,
)
from diamond_env.run.paths import PRETRAINED_ROOT
from diamond_env.run.safe_io import InputError, read_json, read_regular
from diamond_env.world_model.model import WorldModel

SHIPPED = PRETRAINED_ROOT / "Breakout"
DATA = Path(__file__).parent / "data"


def _one_line(capsys: pytest.CaptureFixture[str], *words: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    for word in words:
        assert word in err[0], err[0]
    return err[0]


def _refused(
    argv: list[str], capsys: pytest.CaptureFixture[str], *words: str, seconds: float = 20.0
) -> str:
    start = time.monotonic()
    assert main(argv) == 2
    assert time.monotonic() - start < seconds
    return _one_line(capsys, *words)


def _tree(path: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()
    }


def _copy_model(tmp_path: Path) -> Path:
    wm = tmp_path / "wm"
    shutil.copytree(SHIPPED / "world_model", wm)
    return wm


def _edit_json(path: Path, edit: Any) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


# 1. Sizes read from files are checked before anything is allocated.


def _sb3_agent(root: Path, policy_kwargs: dict[str, Any]) -> Path:
    """agent.json of an SB3 CnnPolicy agent with a real (tiny) weights file and its digest."""
    root.mkdir(parents=True)
    save_file({"w": torch.zeros(2)}, str(root / "sb3_policy.safetensors"))
    (root / "agent.json").write_text(
        json.dumps(
            {
                "kind": "sb3",
                "algo": "ppo",
                "format": "diamond_env.sb3_policy",
                "format_version": 1,
                "policy": "CnnPolicy",
                "policy_kwargs": policy_kwargs,
                "game": "Breakout",
                "observation_space": {
                    "type": "Box",
                    "shape": [12, 64, 64],
                    "dtype": "uint8",
                    "low": 0,
                    "high": 255,
                },
                "action_space": {"type": "Discrete", "n": 4, "start": 0},
                "weights": "sb3_policy.safetensors",
                "sha256": file_sha256(root / "sb3_policy.safetensors"),
            }
        )
    )
    return root


@pytest.mark.parametrize("width", [100_000, 16_000])
def test_sb3_net_arch_is_checked_before_allocation(
    width: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    agent = _sb3_agent(tmp_path / "a", {"net_arch": [width, width]})
    _refused(
        ["evaluate", "--agent", str(agent), "--episodes", "1"], capsys, "agent.json", str(width)
    )
    assert not (tmp_path / "out").exists()


def test_sb3_meta_shapes_must_match_the_weights(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    agent = _sb3_agent(tmp_path / "a", {"net_arch": [64]})
    _refused(["evaluate", "--agent", str(agent), "--episodes", "1"], capsys, "weights do not match")


@pytest.mark.parametrize(
    "edit, words",
    [
        (lambda c: c["config"]["denoiser"].update(channels=[100_000] * 4), "channels"),
        (lambda c: c["config"]["denoiser"].update(channels=[4096] * 4), "4096, 15, 3, 3"),
        (lambda c: c["config"]["denoiser"].update(depths=[10**6] * 4), "blocks"),
        (lambda c: c["config"]["rew_end"].update(lstm_dim=10**9), "lstm_dim"),
        (lambda c: c["config"]["denoiser"].update(cond_channels=96, action_emb_dim=24), "shape"),
    ],
)
def test_world_model_config_sizes(
    edit: Any, words: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wm = _copy_model(tmp_path)
    _edit_json(wm / "config.json", edit)
    before = _tree(wm)
    with pytest.raises(InputError, match=words):
        WorldModel.load(wm)
    _refused(
        ["eval-wm", "--checkpoint", str(wm), "--dataset", str(_small_dataset(tmp_path))],
        capsys,
        words,
    )
    _refused(
        [
            "train-wm",
            "--game",
            "Breakout",
            "--preset",
            "cpu",
            "--init-from",
            str(wm),
            "--run-dir",
            str(tmp_path / "run"),
        ],
        capsys,
        words,
    )
    assert _tree(wm) == before and not (tmp_path / "run").exists()


def test_actor_critic_config_sizes(tmp_path: Path) -> None:
    agent = tmp_path / "agent"
    ActorCritic(get_preset("tiny").actor_critic, num_actions=4).save(agent)
    _edit_json(agent / "actor_critic.json", lambda c: c["config"].update(lstm_dim=10**7))
    with pytest.raises(ValueError, match="lstm_dim"):
        ActorCritic.load(agent)
    _edit_json(agent / "actor_critic.json", lambda c: c["config"].update(lstm_dim=4096))
    with pytest.raises(ValueError, match="weights do not match|shape|expected"):
        ActorCritic.load(agent)


def test_diamond_file_declaring_huge_shapes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = load_file(str(DATA / "diamond_agent.safetensors"))
    key = next(k for k in state if k.startswith("denoiser.") and state[k].ndim == 4)
    state[key] = torch.zeros(1).expand(100_000, 100_000, 3, 3)  # 4 bytes on disk
    torch.save(state, tmp_path / "Breakout.pt")
    assert (tmp_path / "Breakout.pt").stat().st_size < 10**7
    _refused(
        [
            "import-diamond",
            "--checkpoint",
            str(tmp_path / "Breakout.pt"),
            "--game",
            "Breakout",
            "--out",
            str(tmp_path / "out"),
        ],
        capsys,
        "not backed by its data",
    )
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("channels, words", [(100_000, "channels"), (4096, "parameters")])
def test_options_json_overrides_on_resume(
    channels: int, words: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import dataclasses

    from diamond_env.training.train_wm import TrainWMOptions

    run = tmp_path / "run"
    run.mkdir()
    overrides = f"denoiser.channels=[{channels},{channels},{channels},{channels}]"
    stored = TrainWMOptions(preset="tiny", overrides=overrides, run_dir=str(run))
    (run / "options.json").write_text(json.dumps(dataclasses.asdict(stored)))
    save_resume_state(run / "resume.pt", {"step": 1})
    before = _tree(run)
    _refused(["train-wm", "--resume", "--run-dir", str(run)], capsys, words)
    assert _tree(run) == before
    _refused(
        [
            "train-wm",
            "--preset",
            "tiny",
            "--overrides",
            overrides,
            "--run-dir",
            str(tmp_path / "fresh"),
        ],
        capsys,
        words,
    )
    assert not (tmp_path / "fresh").exists()


def test_dataset_index_sizes_and_paths(tmp_path: Path) -> None:
    from diamond_env.data.dataset import DatasetCorruptError

    root = tmp_path / "ds"
    shutil.copytree(_small_dataset(tmp_path), root)
    _edit_json(root / "dataset.json", lambda i: i.update(frame_shape=[100_000, 100_000, 3]))
    with pytest.raises(DatasetCorruptError, match="frame_shape"):
        EpisodeDataset.open(root)
    shutil.rmtree(root)
    shutil.copytree(_small_dataset(tmp_path), root)
    _edit_json(
        root / "dataset.json",
        lambda i: i["episodes"][0]["parts"][0].update(file="../../outside.npz"),
    )
    with pytest.raises(DatasetCorruptError, match="not a part file name"):
        EpisodeDataset.open(root)


_SMALL: dict[str, Path] = {}


def _small_dataset(tmp_path: Path) -> Path:
    if "ds" not in _SMALL or not _SMALL["ds"].exists():
        root = tmp_path / "small"
        assert (
            main(["collect", "--game", "Breakout", "--steps", "60", "--out", str(root), "--quiet"])
            == 0
        )
        _SMALL["ds"] = root
    return _SMALL["ds"]


# 2. Whole-file reads: no devices, FIFOs or symlinks out of the folder; sizes capped.


def test_dev_zero_and_fifo_parts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "ds"
    shutil.copytree(_small_dataset(tmp_path), root)
    part = next((root / "parts").glob("*.npz"))
    part.unlink()
    part.symlink_to("/dev/zero")
    start = time.monotonic()
    assert main(["dataset", "verify", str(root)]) == 1
    assert time.monotonic() - start < 10
    assert "outside" in capsys.readouterr().out
    part.unlink()
    os.mkfifo(part)
    start = time.monotonic()
    assert main(["dataset", "verify", str(root)]) == 1
    assert time.monotonic() - start < 10
    assert "FIFO" in capsys.readouterr().out
    with pytest.raises(InputError, match="FIFO"):
        read_regular(part, 100)
    with pytest.raises(InputError, match="more than"):
        read_regular(root / "dataset.json", 10)


# 3. The writer lock is never followed through a symlink.


def test_writer_lock_symlink_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    out = tmp_path / "ds"
    out.mkdir()
    (out / ".writer.lock").symlink_to(notes)
    _refused(
        ["collect", "--game", "Breakout", "--steps", "10", "--out", str(out), "--quiet"],
        capsys,
        ".writer.lock",
        "symlink",
    )
    assert notes.read_text() == "my notes\n"
    assert not (out / "dataset.json").exists()


# 4. import-diamond does not replace a trained model without --force.


def test_import_diamond_keeps_an_existing_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    torch.save(load_file(str(DATA / "diamond_agent.safetensors")), tmp_path / "Breakout.pt")
    out = tmp_path / "run"
    shutil.copytree(SHIPPED / "world_model", out / "world_model")
    before = _tree(out)
    _refused(
        [
            "import-diamond",
            "--checkpoint",
            str(tmp_path / "Breakout.pt"),
            "--game",
            "Breakout",
            "--out",
            str(out),
            "--quiet",
        ],
        capsys,
        "--force",
    )
    assert _tree(out) == before


# 5. --resume writes where the user pointed it, never where the stored options say.


def test_resume_ignores_a_run_dir_in_the_stored_options(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from diamond_env.run.options import with_stored_options
    from diamond_env.training.train_wm import TrainWMOptions

    run, elsewhere = tmp_path / "run", tmp_path / "elsewhere"
    run.mkdir()
    (run / "options.json").write_text(
        json.dumps({"game": "Breakout", "run_dir": str(elsewhere), "steps": 7})
    )
    opts = with_stored_options(TrainWMOptions(run_dir=str(run), resume=True), {"run_dir"})
    assert opts.run_dir == str(run) and opts.steps == 7
    (run / "options.json").write_text(json.dumps({"steps": "many"}))
    with pytest.raises(InputError, match="steps: expected int"):
        with_stored_options(TrainWMOptions(run_dir=str(run), resume=True), {"run_dir"})
    assert not elsewhere.exists()


# 6. A game name is checked before it becomes a path.


def test_game_names_never_become_paths(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    _refused(["train-wm", "--game", "../other", "--steps", "1"], capsys, "../other")
    _refused(["train-wm", "--game", "NoSuchGame", "--steps", "1"], capsys, "NoSuchGame")
    assert list(tmp_path.iterdir()) == []


# 7. A digest is required: null does not switch the check off.


def test_null_digest_is_refused(tmp_path: Path) -> None:
    wm = _copy_model(tmp_path)
    _edit_json(wm / "config.json", lambda c: c["sha256"].update({"model.safetensors": None}))
    with pytest.raises(InputError, match="sha256"):
        WorldModel.load(wm)


# 8. Malformed JSON: one line, no traceback.


@pytest.mark.parametrize("text", ["[" * 100_000, '{"a": 1e999}', '{"a": NaN}', "[1, 2]"])
def test_malformed_json_everywhere(
    text: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    agent = tmp_path / "agent"
    shutil.copytree(SHIPPED / "agent", agent)
    (agent / "agent.json").write_text(text)
    _refused(["evaluate", "--agent", str(agent), "--episodes", "1"], capsys, "agent.json")
    wm = _copy_model(tmp_path)
    (wm / "config.json").write_text(text)
    with pytest.raises(InputError, match="config.json"):
        WorldModel.load(wm)
    run = tmp_path / "run"
    run.mkdir()
    (run / "options.json").write_text(text)
    save_resume_state(run / "resume.pt", {"step": 1})
    _refused(["train-wm", "--resume", "--run-dir", str(run)], capsys, "options.json")
    ds = tmp_path / "ds"
    shutil.copytree(_small_dataset(tmp_path), ds)
    (ds / "dataset.json").write_text(text)
    _refused(["dataset", "verify", str(ds)], capsys, "dataset.json")
    with pytest.raises(InputError):
        read_json(ds / "dataset.json")


def test_run_json_holding_a_list_is_refused(tmp_path: Path) -> None:
    from diamond_env.run.runinfo import start_session

    (tmp_path / "run.json").write_text("[1, 2]")
    with pytest.raises(InputError, match="run.json: expected a JSON object"):
        start_session(tmp_path, "train-wm", {})
    assert (tmp_path / "run.json").read_text() == "[1, 2]"


# 9. Crafted resume state: plain data that does not fit, refused in one line.


def test_crafted_resume_states(tmp_path: Path) -> None:
    state = {
        "python": "(" * 200_000 + ")" * 200_000,
        "numpy_keys": torch.zeros(3),
        "numpy_pos": 0,
        "torch": torch.get_rng_state(),
    }
    with pytest.raises(InputError, match="rng.python"):
        set_rng_state(state)
    state["python"] = "((" * 5000 + "))" * 5000
    with pytest.raises(InputError, match="generator states"):
        set_rng_state(state)
    save_resume_state(tmp_path / "resume.pt", {"rng": [1, 2]})
    assert load_resume_state(tmp_path / "resume.pt") == {"rng": [1, 2]}


def test_sb3_checkpoint_zip_with_unexpected_members(tmp_path: Path) -> None:
    from diamond_env.training.agents import check_sb3_checkpoint

    with zipfile.ZipFile(tmp_path / "checkpoint.zip", "w") as z:
        z.writestr("data", "{}")
        z.writestr("policy.pth", b"x")
        z.writestr("../../evil.py", b"print('hi')")
    with pytest.raises(InputError, match="unexpected members"):
        check_sb3_checkpoint(tmp_path / "checkpoint.zip")
    (tmp_path / "bad.zip").write_bytes(b"not a zip")
    with pytest.raises(InputError, match="not a zip"):
        check_sb3_checkpoint(tmp_path / "bad.zip")


# 10. Weights that are not finite floating point.


@pytest.mark.parametrize("value", [float("nan"), "int8", "complex"])
def test_diamond_weights_must_be_finite_floats(
    value: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = load_file(str(DATA / "diamond_agent.safetensors"))
    key = next(k for k in state if k.startswith("rew_end_model.") and state[k].ndim == 4)
    if value == "int8":
        state[key] = state[key].to(torch.int8)
    elif value == "complex":
        state[key] = state[key].to(torch.complex64)
    else:
        state[key] = state[key].clone()
        state[key].view(-1)[0] = value
    torch.save(state, tmp_path / "Breakout.pt")
    _refused(
        [
            "import-diamond",
            "--checkpoint",
            str(tmp_path / "Breakout.pt"),
            "--game",
            "Breakout",
            "--out",
            str(tmp_path / "out"),
            "--quiet",
        ],
        capsys,
        key,
    )
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("dtype", [torch.int8, torch.bool])
def test_world_model_weights_of_another_dtype(dtype: torch.dtype, tmp_path: Path) -> None:
    wm = _copy_model(tmp_path)
    tensors = load_file(str(wm / "model.safetensors"))
    key = next(k for k, v in tensors.items() if v.is_floating_point())
    tensors[key] = tensors[key].to(dtype)
    save_file(tensors, str(wm / "model.safetensors"))
    _edit_json(
        wm / "config.json",
        lambda c: c["sha256"].update({"model.safetensors": file_sha256(wm / "model.safetensors")}),
    )
    with pytest.raises(InputError, match="expected floating point"):
        WorldModel.load(wm)


# 11. Distributed launch errors.


@pytest.mark.parametrize(
    "env, words",
    [
        ({"WORLD_SIZE": "abc"}, "WORLD_SIZE='abc'"),
        ({"WORLD_SIZE": "2"}, "RANK is not set"),
        ({"WORLD_SIZE": "2", "RANK": "0", "DIAMOND_ENV_DIST_TIMEOUT": "inf"}, "TIMEOUT"),
        ({"WORLD_SIZE": "2", "RANK": "0", "DIAMOND_ENV_DIST_TIMEOUT": "-5"}, "TIMEOUT"),
        ({"WORLD_SIZE": "2", "RANK": "5"}, "RANK=5"),
    ],
)
def test_malformed_launch_variables(
    env: dict[str, str],
    words: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("RANK", "LOCAL_RANK", "DIAMOND_ENV_DIST_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    argv = ["train-wm", "--steps", "1", "--run-dir", str(tmp_path / "run")]
    if env["WORLD_SIZE"] == "abc":
        _refused(argv, capsys, words)
    else:
        from diamond_env.training.distributed import setup

        with pytest.raises(InputError, match=words):
            setup(torch.device("cpu"))
    assert not (tmp_path / "run").exists()


def test_a_peer_that_never_comes(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        **os.environ,
        "WORLD_SIZE": "2",
        "RANK": "0",
        "LOCAL_RANK": "0",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
        "DIAMOND_ENV_DIST_TIMEOUT": "3",
    }
    code = (
        "from diamond_env.training.distributed import setup\nimport torch\n"
        "from diamond_env.cli.main import main\nimport sys\n"
        f"sys.exit(main(['train-wm', '--steps', '1', '--run-dir', {str(tmp_path / 'r')!r}]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "could not join" in lines[0], done.stderr[-2000:]


# Weaker findings.


def test_paths_in_agent_json_stay_in_the_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    agent = _sb3_agent(tmp_path / "a", {})
    _edit_json(agent / "agent.json", lambda m: m.update(weights="../../etc/passwd"))
    _refused(["evaluate", "--agent", str(agent), "--episodes", "1"], capsys, "outside")
    _edit_json(agent / "agent.json", lambda m: m.update(weights="/etc/passwd"))
    _refused(["evaluate", "--agent", str(agent), "--episodes", "1"], capsys, "absolute path")


def test_repair_refuses_to_relabel_another_games_data(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "ds"
    shutil.copytree(_small_dataset(tmp_path), root)
    (root / "dataset.json").unlink()
    _refused(["dataset", "repair", str(root), "--game", "Skiing"], capsys, "Skiing has 3 actions")
    assert not (root / "dataset.json").exists()


def test_a_working_folder_model_is_announced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from diamond_env.run import paths

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DIAMOND_ENV_HOME", raising=False)
    shutil.copytree(SHIPPED / "world_model", tmp_path / "runs" / "Breakout" / "world_model")
    monkeypatch.setattr(paths, "_announced", set())
    with caplog.at_level("WARNING", logger="diamond_env"):
        found = paths.resolve_checkpoint("Breakout", None)
    assert found == Path("runs") / "Breakout" / "world_model"
    assert any("found before the shipped one" in r.getMessage() for r in caplog.records)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads Linux's /proc")
def test_refusals_stay_small_in_memory(tmp_path: Path) -> None:
    """The largest crafted sizes above, refused in a fresh process: its peak memory stays that of
    importing torch and the package, not of the networks the files describe (40 GB here)."""
    agent = _sb3_agent(tmp_path / "a", {"net_arch": [100_000, 100_000]})
    # VmHWM, the peak of this process's own memory map (ru_maxrss would also count the parent's
    # pages that the fork briefly shared, as Linux keeps it across exec)
    code = (
        "import sys\nfrom diamond_env.cli.main import main\n"
        f"code = main(['evaluate', '--agent', {str(agent)!r}, '--episodes', '1'])\n"
        "status = open('/proc/self/status').read().split('VmHWM:')[1].split()[0]\n"
        "print(status)\nsys.exit(code)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    peak_mb = int(done.stdout.strip().splitlines()[-1]) / 1024
    assert peak_mb < 1024, peak_mb


def test_metrics_lines_that_are_not_records_are_skipped(tmp_path: Path) -> None:
    """metrics.jsonl is read through the checked JSON parser: a list, a deeply nested line, a NaN
    or a cut line is passed over, never a crash."""
    from diamond_env.run.metrics import read_metrics

    lines = [
        '{"kind": "train", "step": 1}',
        "[1, 2, 3]",
        "[" * 10_000 + "]" * 10_000,
        '{"kind": "train", "step": NaN}',
        '{"kind": "eval", "step": 2}',
        '{"kind": "tra',
    ]
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines))
    assert read_metrics(tmp_path) == [{"kind": "train", "step": 1}, {"kind": "eval", "step": 2}]
    assert read_metrics(tmp_path, "eval") == [{"kind": "eval", "step": 2}]
