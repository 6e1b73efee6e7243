"""World model: one imagined step, reward sampling, burn-in, and the checkpoint directory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from fake_world_model import set_constant_head
from safetensors.torch import load_file, save_file

from diamond_env.config import get_preset
from diamond_env.frames import to_model
from diamond_env.run.checkpoint import file_sha256
from diamond_env.world_model.model import (
    CONFIG_FILE,
    CONTEXTS_FILE,
    MODEL_FILE,
    ContextBank,
    WorldModel,
    WorldModelStep,
)

MEANINGS = ["NOOP", "FIRE", "RIGHT", "LEFT"]


def _model(seed: int = 0, game: str = "Breakout") -> WorldModel:
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    bank = ContextBank(
        obs=torch.randint(0, 256, (3, 4, 64, 64, 3), dtype=torch.uint8, generator=g),
        act=torch.randint(0, 4, (3, 4), generator=g),
    )
    model = WorldModel(get_preset("tiny"), game, MEANINGS, bank)
    with torch.no_grad():  # move off the zero-initialised start so outputs depend on weights
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return model


def _inputs(model: WorldModel) -> tuple[torch.Tensor, torch.Tensor]:
    return to_model(model.contexts.obs[:2]), model.contexts.act[:2]


def _step(model: WorldModel, seed: int = 0) -> WorldModelStep:
    obs, act = _inputs(model)
    state = model.burn_in(obs, act)
    return model.step(obs, act, state, generator=torch.Generator().manual_seed(seed))


def test_step_shapes_dtypes_and_quantisation() -> None:
    out = _step(_model())
    assert out.next_obs.shape == (2, 3, 64, 64) and out.next_obs.dtype == torch.float32
    assert out.next_obs.abs().max() <= 1.0
    levels = (out.next_obs + 1) * 127.5
    torch.testing.assert_close(levels, levels.round(), rtol=0, atol=1e-4)
    assert out.reward.shape == (2,) and out.reward.dtype == torch.float32
    assert set(out.reward.tolist()) <= {-1.0, 0.0, 1.0}
    assert out.termination.shape == (2,) and out.termination.dtype == torch.bool
    assert out.state[0].shape == (2, 32) and out.state[1].shape == (2, 32)


def test_generator_draws_noise_then_uniforms() -> None:
    model = _model()
    obs, act = _inputs(model)
    state = model.burn_in(obs, act)
    a = model.step(obs, act, state, generator=torch.Generator().manual_seed(7))
    g = torch.Generator().manual_seed(7)
    noise = torch.randn((2, 3, 64, 64), generator=g)
    uniforms = torch.rand((2, 2), generator=g)
    b = model.step(obs, act, state, noise=noise, uniforms=uniforms)
    torch.testing.assert_close(a.next_obs, b.next_obs)
    torch.testing.assert_close(a.reward, b.reward)
    c = model.step(obs, act, state, generator=torch.Generator().manual_seed(8))
    assert not torch.equal(a.next_obs, c.next_obs)


def test_reward_and_termination_follow_the_uniforms() -> None:
    model = _model()
    # p(reward -1, 0, +1) = (0.2, 0.3, 0.5), p(end) = 0.4
    set_constant_head(model.rew_end, [0.2, 0.3, 0.5, 0.6, 0.4])
    obs, act = _inputs(model)
    obs, act = obs[[0] * 5], act[[0] * 5]
    noise = torch.zeros(5, 3, 64, 64)
    u = torch.tensor([[0.1, 0.39], [0.25, 0.41], [0.49, 0.0], [0.51, 0.9], [0.99, 0.5]])
    out = model.step(obs, act, None, noise=noise, uniforms=u)
    assert out.reward.tolist() == [-1.0, 0.0, 0.0, 1.0, 1.0]
    assert out.termination.tolist() == [True, False, True, False, False]
    mean = model.step(obs, act, None, noise=noise, uniforms=u, reward_mode="mean")
    torch.testing.assert_close(mean.reward, torch.full((5,), 0.3))
    assert not mean.termination.any()
    with pytest.raises(ValueError, match="reward_mode"):
        model.step(obs, act, None, noise=noise, reward_mode="max")  # type: ignore[arg-type]


def test_burn_in_then_step_equals_one_pass_over_the_sequence() -> None:
    model = _model()
    obs, act = _inputs(model)
    out = _step(model)
    frames = torch.cat([obs, out.next_obs[:, None]], dim=1)  # (2, 5, 3, 64, 64)
    _, _, state = model.rew_end(frames[:, :-1], act, frames[:, 1:])
    torch.testing.assert_close(out.state[0], state[0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out.state[1], state[1], rtol=1e-4, atol=1e-5)


def test_denoiser_conditions_on_the_current_action() -> None:
    model = _model()
    obs, act = _inputs(model)
    noise = torch.randn((2, 3, 64, 64), generator=torch.Generator().manual_seed(0))
    a = model.step(obs, act, None, noise=noise, uniforms=torch.zeros(2, 2))
    other = act.clone()
    other[:, -1] = (other[:, -1] + 1) % 4
    b = model.step(obs, other, None, noise=noise, uniforms=torch.zeros(2, 2))
    assert not torch.equal(a.next_obs, b.next_obs)


def test_save_load_round_trip(tmp_path: Path) -> None:
    model = _model()
    path = model.save(tmp_path / "wm")
    assert sorted(p.name for p in path.iterdir()) == [CONFIG_FILE, CONTEXTS_FILE, MODEL_FILE]
    meta = json.loads((path / CONFIG_FILE).read_text())
    assert meta["format_version"] == 2 and meta["game"] == "Breakout"
    assert meta["action_meanings"] == MEANINGS and meta["obs_shape"] == [64, 64, 3]
    assert meta["config"]["preset"] == "tiny"
    loaded = WorldModel.load(path, expected_game="Breakout")
    assert loaded.config == model.config and loaded.action_meanings == MEANINGS
    assert torch.equal(loaded.contexts.obs, model.contexts.obs)
    assert torch.equal(loaded.contexts.act, model.contexts.act)
    a, b = _step(model, seed=3), _step(loaded, seed=3)
    assert torch.equal(a.next_obs, b.next_obs) and torch.equal(a.reward, b.reward)
    assert torch.equal(a.termination, b.termination) and torch.equal(a.state[0], b.state[0])
    # saving again replaces the directory atomically and leaves no temporary files behind
    _model(seed=1).save(path)
    assert [p.name for p in tmp_path.iterdir()] == ["wm"]
    assert not torch.equal(WorldModel.load(path).contexts.obs, model.contexts.obs)


def test_missing_checkpoint_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nowhere.*diamond-env train-wm --game Pong"):
        WorldModel.load(tmp_path / "nowhere", expected_game="Pong")
    path = _model().save(tmp_path / "wm")
    (path / CONTEXTS_FILE).unlink()
    with pytest.raises(FileNotFoundError, match=r"contexts\.safetensors.*train-wm"):
        WorldModel.load(path)


def test_corrupt_or_mismatched_checkpoints_raise(tmp_path: Path) -> None:
    path = _model().save(tmp_path / "wm")
    good = (path / MODEL_FILE).read_bytes()
    (path / MODEL_FILE).write_bytes(good[: len(good) // 2])
    with pytest.raises(ValueError, match=r"model\.safetensors"):
        WorldModel.load(path)

    weights = {k: v.clone() for k, v in _model().state_dict().items()}
    weights["denoiser.conv_in.bias"] += 0.5  # same keys and shapes, altered values
    save_file(weights, str(path / MODEL_FILE), metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"model\.safetensors: sha256 .* altered or damaged"):
        WorldModel.load(path)

    # without recorded digests (a hand-made checkpoint) nothing is loaded
    meta = json.loads((path / CONFIG_FILE).read_text())
    del meta["sha256"]
    (path / CONFIG_FILE).write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="no sha256 digests"):
        WorldModel.load(path)

    def record_digests() -> None:  # digests that match: the structure checks still apply
        meta["sha256"] = {n: file_sha256(path / n) for n in (MODEL_FILE, CONTEXTS_FILE)}
        (path / CONFIG_FILE).write_text(json.dumps(meta))

    weights["denoiser.act_emb.weight"] = torch.zeros(5, 8)  # a game with 5 actions
    save_file(weights, str(path / MODEL_FILE))
    record_digests()
    with pytest.raises(ValueError, match=r"denoiser\.act_emb\.weight.*shape"):
        WorldModel.load(path)
    del weights["denoiser.act_emb.weight"]
    save_file(weights, str(path / MODEL_FILE))
    record_digests()
    with pytest.raises(ValueError, match="missing"):
        WorldModel.load(path)
    (path / MODEL_FILE).write_bytes(good)
    record_digests()
    WorldModel.load(path)  # the original bytes load again

    bank = load_file(str(path / CONTEXTS_FILE))
    save_file({"obs": bank["obs"].float(), "act": bank["act"]}, str(path / CONTEXTS_FILE))
    record_digests()
    with pytest.raises(ValueError, match=r"contexts\.safetensors"):
        WorldModel.load(path)

    meta["sha256"] = {"../elsewhere.safetensors": "00"}  # only the checkpoint's own files
    (path / CONFIG_FILE).write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="sha256 must map"):
        WorldModel.load(path)


def test_config_json_checks(tmp_path: Path) -> None:
    path = _model().save(tmp_path / "wm")
    meta = json.loads((path / CONFIG_FILE).read_text())
    with pytest.raises(ValueError, match=r"'Breakout'.*'Pong'"):
        WorldModel.load(path, expected_game="Pong")
    (path / CONFIG_FILE).write_text(json.dumps({**meta, "format_version": 99}))
    with pytest.raises(ValueError, match="format_version 99"):
        WorldModel.load(path)
    bad_config = {**meta["config"], "denoiser": {**meta["config"]["denoiser"], "bogus": 1}}
    (path / CONFIG_FILE).write_text(json.dumps({**meta, "config": bad_config}))
    with pytest.raises(ValueError, match="bogus"):
        WorldModel.load(path)
    (path / CONFIG_FILE).write_text("{not json")
    with pytest.raises(ValueError, match=r"config\.json"):
        WorldModel.load(path)


def test_context_bank_validation() -> None:
    with pytest.raises(ValueError, match="contexts.act"):
        WorldModel(
            get_preset("tiny"),
            "Breakout",
            MEANINGS,
            ContextBank(torch.zeros(2, 4, 64, 64, 3, dtype=torch.uint8), torch.full((2, 4), 4)),
        )
    assert len(WorldModel(get_preset("tiny"), "Breakout", MEANINGS).contexts) == 0


@pytest.mark.parametrize("killed", [True, False])
def test_a_save_killed_between_its_renames_is_recovered(tmp_path: Path, killed: bool) -> None:
    """kill -9 (or an exception) after the old checkpoint was moved aside and before the new one
    took its place: the next load finds a complete checkpoint, and leftovers are removed."""
    import subprocess
    import sys

    from diamond_env.world_model.model import recover_checkpoint

    path = tmp_path / "world_model"
    _model(seed=1).save(path)
    script = f"""
import os, sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
from test_world_model import _model
import diamond_env.world_model.model as w
calls = []
real = os.replace
def replace(a, b):
    calls.append(a)
    if len(calls) == 2:  # tmp -> target, after target -> old
        if {killed!r}:
            os._exit(9)
        raise KeyboardInterrupt
    real(a, b)
w.os.replace = replace
try:
    _model(seed=2).save({str(path)!r})
except KeyboardInterrupt:
    sys.exit(3)
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == (9 if killed else 3), proc.stderr
    assert not path.exists()  # the crash window
    hidden = sorted(p.name.split("-")[0] for p in tmp_path.iterdir())
    assert hidden == ([".world_model.old", ".world_model.tmp"] if killed else [".world_model.old"])
    loaded = WorldModel.load(path)  # recovers
    want = _model(seed=2 if killed else 1)  # killed: the new one was complete
    for (k, a), b in zip(loaded.state_dict().items(), want.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, msg=k)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["world_model"]
    # an incomplete temp dir of a killed save is removed once stale, never the checkpoint
    partial = tmp_path / ".world_model.tmp-dead"
    partial.mkdir()
    (partial / "model.safetensors").write_bytes(b"half")
    assert recover_checkpoint(path) is None and partial.exists()  # may still be in use
    recover_checkpoint(path, now=partial.stat().st_mtime + 3600)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["world_model"]
