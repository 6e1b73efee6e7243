"""One object holds a dream's settings and checks them once, for every face of the dream."""

from __future__ import annotations

import gymnasium as gym
import pytest

from diamond_env.dream.settings import DreamSettings
from diamond_env.dream.simulator import make_simulator
from diamond_env.run.safe_io import InputError


def test_defaults_and_truncation() -> None:
    s = DreamSettings()
    assert (s.horizon, s.truncate_at, s.fastpath, s.reward_mode) == (15, 15, "auto", "sample")
    assert DreamSettings(horizon=15, max_episode_steps=7).truncate_at == 7
    assert DreamSettings(horizon=5, max_episode_steps=70).truncate_at == 5
    assert DreamSettings(fastpath=["channels_last", "bf16"]).fastpath == ("channels_last", "bf16")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"horizon": 0}, "horizon: expected an int >= 1"),
        ({"horizon": True}, "horizon: expected an int >= 1"),
        ({"max_episode_steps": -1}, "max_episode_steps"),
        ({"num_denoising_steps": 0}, "num_denoising_steps"),
        ({"sampler": "ddim"}, "sampler: expected one of"),
        ({"reward_mode": "max"}, "reward_mode: expected one of"),
        ({"fastpath": 3}, "fastpath: expected"),
        ({"device": 0}, "device: expected"),
    ],
)
def test_bad_settings_are_refused_when_made(kwargs: dict, message: str) -> None:
    with pytest.raises(InputError, match=message):
        DreamSettings(**kwargs)


def test_unknown_setting_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="unknown dream setting"):
        DreamSettings.from_kwargs(horizon=3, horizn=4)


def test_every_face_checks_through_it(tiny_checkpoint) -> None:
    with pytest.raises(InputError, match="reward_mode"):
        gym.make("diamond_env:Dream-v0", checkpoint=str(tiny_checkpoint), reward_mode="max")
    with pytest.raises(InputError, match="horizon"):
        gym.make_vec("diamond_env:Dream-v0", num_envs=2, checkpoint=str(tiny_checkpoint), horizon=0)
    sim = make_simulator(
        None, 2, checkpoint=tiny_checkpoint, settings=DreamSettings(horizon=9), horizon=4
    )
    assert sim.horizon == 4  # keyword arguments override the settings object
