"""``import-diamond``: a DIAMOND agent file (made by DIAMOND's code, tests/data) becomes a dream
env and an agent that plays the real game."""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import diamond_env
from diamond_env.cli.main import main
from diamond_env.evaluation.real_game import evaluate, load_agent
from diamond_env.training.import_diamond import import_diamond

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def diamond_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """DIAMOND's reduced agent state dict as DIAMOND saves it (torch.save of a dict)."""
    path = tmp_path_factory.mktemp("diamond") / "Breakout.pt"
    torch.save(load_file(str(DATA / "diamond_agent.safetensors")), path)
    return path


@pytest.fixture(scope="module")
def imported(diamond_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("imported")
    code = main(
        [
            "import-diamond",
            "--checkpoint",
            str(diamond_file),
            "--game",
            "Breakout",
            "--out",
            str(out),
            "--context-steps",
            "120",
            "--num-contexts",
            "8",
            "--quiet",
        ]
    )
    assert code == 0
    return out


def test_import_writes_a_dream_env_and_an_agent(imported: Path) -> None:
    meta = json.loads((imported / "import.json").read_text())
    assert meta["game"] == "Breakout" and meta["num_contexts"] == 8
    assert meta["preset"] == "diamond"  # reduced sizes, not the paper's
    env = gym.make("DiamondDream-Breakout-v0", checkpoint=str(imported / "world_model"))
    obs, _ = env.reset(seed=0)
    assert obs.shape == (64, 64, 3) and obs.dtype == np.uint8
    for _ in range(3):
        obs, rew, term, trunc, _ = env.step(env.action_space.sample())
        assert rew in (-1.0, 0.0, 1.0)
    env.close()
    venv = diamond_env.make_sb3_env(
        "DiamondDream-Breakout-v0", num_envs=2, checkpoint=str(imported / "world_model")
    )
    assert venv.reset().shape == (2, 3, 64, 64)
    venv.close()


def test_imported_agent_plays_the_real_game(imported: Path) -> None:
    policy, meta = load_agent(imported / "agent", seed=0)
    assert meta["game"] == "Breakout" and meta["source"] == "DIAMOND"
    result = evaluate(policy, "Breakout", 1, seed=0, progress=False)
    assert len(result.returns) == 1 and result.mean >= 0


def test_imported_world_model_computes_what_diamond_computes(imported: Path) -> None:
    """The converted denoiser gives DIAMOND's D(x, σ) (fixture from DIAMOND's code)."""
    from test_diamond_parity import outside_floor_bin, to_float

    wm = diamond_env.WorldModel.load(imported / "world_model")
    io = load_file(str(DATA / "diamond_io.safetensors"))
    sigma = torch.full((1,), float(io["den_sigmas"][1]))
    with torch.no_grad():
        d = wm.denoiser.denoise(io["den_x"], sigma, to_float(io["den_obs"]), io["den_act"])
    assert outside_floor_bin(d, io["den_D_1"]) <= 1e-5


def _save(state: dict[str, torch.Tensor], path: Path) -> Path:
    torch.save(state, path)
    return path


def test_bad_files_are_refused_naming_what_was_expected(
    diamond_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = torch.load(diamond_file, weights_only=True)
    out = tmp_path / "out"
    cases = {
        "weights_only": _pickled_object(tmp_path / "code.pt"),
        "missing key": _save(
            {k: v for k, v in state.items() if "conv_in" not in k}, tmp_path / "missing.pt"
        ),
        "unexpected keys": _save(
            {**state, "denoiser.inner_model.extra.weight": torch.zeros(1)}, tmp_path / "extra.pt"
        ),
        "fit no": _save(
            {**state, "actor_critic.lstm.weight_hh": torch.zeros(64, 3)}, tmp_path / "shape.pt"
        ),
        "not a DIAMOND agent": _save({"model": torch.zeros(3)}, tmp_path / "other.pt"),
    }
    for expected, path in cases.items():
        code = main(
            [
                "import-diamond",
                "--checkpoint",
                str(path),
                "--game",
                "Breakout",
                "--out",
                str(out),
                "--quiet",
            ]
        )
        err = capsys.readouterr().err
        assert code == 2 and expected in err, (expected, err)
    with pytest.raises(ValueError, match="6"):
        import_diamond(diamond_file, "Pong", out, progress=False)  # Pong has 6 actions
    assert not out.exists()  # nothing was written for a refused file


class _Payload:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (print, ("this must never run",))


def _pickled_object(path: Path) -> Path:
    torch.save({"denoiser.x": _Payload()}, path)
    return path
