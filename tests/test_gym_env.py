"""Gymnasium faces: registration, make / make_vec, spaces, SAME_STEP autoreset arrays, seeding,
partial reset, validation, check_env, rendering. Uses the deterministic fake world model."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from fake_world_model import CONTEXT_STRIDE, MEANINGS, REWARDS, FakeWorldModel
from gymnasium.utils.env_checker import check_env
from gymnasium.vector import AutoresetMode, SyncVectorEnv, VectorEnv

from diamond_env.dream.gym_env import DreamEnv, DreamVectorEnv
from diamond_env.dream.registration import ENTRY_POINT, VECTOR_ENTRY_POINT, env_id, register_envs
from diamond_env.world_model.fastpath import FastPathOptions, resolve_fastpath
from diamond_env.world_model.model import WorldModel

ID = "DiamondDream-Breakout-v0"


@pytest.fixture(autouse=True)
def _registered() -> None:
    register_envs(["Breakout"])


@pytest.fixture
def counted_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A checkpoint directory whose loading returns a fake model and is counted."""
    (tmp_path / "config.json").write_text("{}")
    calls: dict[str, Any] = {"n": 0, "dir": tmp_path}

    def fake_load(path: Any, device: Any = "cpu", expected_game: str | None = None) -> Any:
        calls["n"] += 1
        assert Path(path) == tmp_path and expected_game == "Breakout"
        return FakeWorldModel(terminate_after=3)

    monkeypatch.setattr(WorldModel, "load", fake_load)
    return calls


def _level(frames: np.ndarray) -> np.ndarray:
    """Constant level of uint8 frames (..., 64, 64, 3), read at pixel (1, 1)."""
    return frames[..., 1, 1, 0].astype(np.int64)


def test_registration_is_json_able_idempotent_and_not_atari() -> None:
    spec = gym.spec(ID)
    assert spec.entry_point == ENTRY_POINT and spec.vector_entry_point == VECTOR_ENTRY_POINT
    assert spec.kwargs == {"game": "Breakout"} and spec.max_episode_steps is None
    assert "AtariEnv" not in ENTRY_POINT + VECTOR_ENTRY_POINT
    json.loads(spec.to_json())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert register_envs(["Breakout", "MsPacman"]) == [ID, "DiamondDream-MsPacman-v0"]
    with pytest.raises(ValueError, match="CamelCase"):
        env_id("Ms Pacman")


def test_make_vec_builds_one_simulator_over_one_model(counted_load: dict[str, Any]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        envs = gym.make_vec(ID, num_envs=3, checkpoint=str(counted_load["dir"]))
    assert counted_load["n"] == 1
    assert isinstance(envs.unwrapped, DreamVectorEnv)
    assert envs.unwrapped.spec is not None and envs.unwrapped.spec.id == ID
    assert envs.unwrapped.simulator.num_envs == 3
    model = FakeWorldModel()
    envs = gym.make_vec(ID, num_envs=4, world_model=model)
    assert envs.unwrapped.world_model is model and counted_load["n"] == 1


def test_spaces_metadata_and_dtypes() -> None:
    envs = DreamVectorEnv(3, "Breakout", world_model=FakeWorldModel())
    assert envs.single_observation_space == gym.spaces.Box(0, 255, (64, 64, 3), np.uint8)
    assert envs.single_action_space == gym.spaces.Discrete(4)
    assert envs.observation_space.shape == (3, 64, 64, 3)
    assert envs.action_space == gym.spaces.MultiDiscrete([4, 4, 4])
    assert envs.get_action_meanings() == MEANINGS
    assert envs.metadata["autoreset_mode"] is AutoresetMode.SAME_STEP
    assert (
        envs.metadata["render_modes"] == ["rgb_array", "human"]
        and envs.metadata["render_fps"] == 15
    )
    obs, info = envs.reset(seed=0)
    assert obs.dtype == np.uint8 and obs.shape == (3, 64, 64, 3) and info == {}
    assert obs in envs.observation_space
    obs, rew, term, trunc, infos = envs.step(np.array([0, 1, 2]))
    assert obs.dtype == np.uint8 and rew.dtype == np.float32
    assert term.dtype == np.bool_ and trunc.dtype == np.bool_ and infos == {}
    assert rew.tolist() == [REWARDS[0], REWARDS[1], REWARDS[2]]


def test_metadata_is_per_instance_despite_a_polluted_base_class() -> None:
    """P1: AtariVectorEnv writes into the class-level VectorEnv.metadata."""
    saved = dict(VectorEnv.metadata)
    VectorEnv.metadata["autoreset_mode"] = AutoresetMode.NEXT_STEP
    try:
        envs = DreamVectorEnv(2, "Breakout", world_model=FakeWorldModel())
        assert envs.metadata["autoreset_mode"] is AutoresetMode.SAME_STEP
        assert envs.metadata is not VectorEnv.metadata
    finally:
        VectorEnv.metadata.clear()
        VectorEnv.metadata.update(saved)


def test_same_step_arrays_around_termination_and_truncation() -> None:
    """Env 0 terminates after 2 steps (action 3), env 1 is truncated at horizon 3."""
    model = FakeWorldModel(terminate_after=100, terminate_action=3)
    envs = DreamVectorEnv(2, "Breakout", horizon=3, world_model=model)
    obs, _ = envs.reset(seed=0, options={"context_index": [1, 2]})
    assert _level(obs).tolist() == [13, 23]
    obs, rew, term, trunc, infos = envs.step(np.array([1, 1]))
    assert _level(obs).tolist() == [15, 25] and infos == {}
    obs, rew, term, trunc, infos = envs.step(np.array([3, 0]))
    assert rew.tolist() == [REWARDS[3], REWARDS[0]]
    assert term.tolist() == [True, False] and trunc.tolist() == [False, False]
    assert infos["_final_obs"].tolist() == [True, False]
    assert infos["final_obs"].dtype == object and infos["final_obs"][1] is None
    assert _level(infos["final_obs"][0]) == 15 + 4 and infos["final_obs"][0].dtype == np.uint8
    assert infos["final_info"] == {} and infos["_final_info"].tolist() == [True, False]
    assert _level(obs[0]) % CONTEXT_STRIDE == 3  # the last frame of a fresh context
    assert _level(obs[1]) == 26
    obs, rew, term, trunc, infos = envs.step(np.array([2, 2]))
    assert term.tolist() == [False, False] and trunc.tolist() == [False, True]
    assert infos["_final_obs"].tolist() == [False, True] and infos["final_obs"][0] is None
    assert _level(infos["final_obs"][1]) == 26 + 3
    assert _level(obs[1]) % CONTEXT_STRIDE == 3


def test_matches_gymnasium_sync_vector_env_in_same_step_mode() -> None:
    """The batched env equals Gymnasium's reference SAME_STEP loop over N single DreamEnvs."""
    n, steps = 3, 14
    batched = DreamVectorEnv(
        n, "Breakout", horizon=4, world_model=FakeWorldModel(terminate_after=3)
    )
    reference = SyncVectorEnv(
        [
            lambda: DreamEnv("Breakout", horizon=4, world_model=FakeWorldModel(terminate_after=3))
            for _ in range(n)
        ],
        autoreset_mode=AutoresetMode.SAME_STEP,
    )
    a, b = batched.reset(seed=11), reference.reset(seed=11)
    np.testing.assert_array_equal(a[0], b[0])
    rng = np.random.default_rng(0)
    ends = 0
    for _ in range(steps):
        actions = rng.integers(0, 4, n)
        out_a, out_b = batched.step(actions), reference.step(actions)
        for x, y in zip(out_a[:4], out_b[:4], strict=True):
            np.testing.assert_array_equal(x, y)
        info_a, info_b = out_a[4], out_b[4]
        assert sorted(info_a) == sorted(info_b)
        if info_a:
            ends += int(info_a["_final_obs"].sum())
            np.testing.assert_array_equal(info_a["_final_obs"], info_b["_final_obs"])
            np.testing.assert_array_equal(info_a["_final_info"], info_b["_final_info"])
            assert info_a["final_info"] == info_b["final_info"] == {}
            for x, y in zip(info_a["final_obs"], info_b["final_obs"], strict=True):
                assert (x is None and y is None) or np.array_equal(x, y)
    assert ends >= n * 3


def _rollout(envs: DreamVectorEnv, seed: int) -> list[np.ndarray]:
    out = [envs.reset(seed=seed)[0]]
    rng = np.random.default_rng(5)
    for _ in range(8):
        obs, rew, term, trunc, infos = envs.step(rng.integers(0, 4, envs.num_envs))
        out += [obs, rew, term, trunc, infos.get("_final_obs", np.zeros(envs.num_envs, bool))]
    return out


def test_seeded_reset_repeats_rollouts() -> None:
    envs = DreamVectorEnv(2, "Breakout", horizon=3, world_model=FakeWorldModel())
    first, again = _rollout(envs, 4), _rollout(envs, 4)
    for x, y in zip(first, again, strict=True):
        np.testing.assert_array_equal(x, y)
    other = _rollout(envs, 5)
    assert not all(np.array_equal(x, y) for x, y in zip(first, other, strict=True))
    assert envs.np_random_seed == 5


def test_partial_reset_with_reset_mask() -> None:
    envs = DreamVectorEnv(3, "Breakout", horizon=50, world_model=FakeWorldModel(terminate_after=50))
    envs.reset(seed=0, options={"context_index": [0, 1, 2]})
    before, *_ = envs.step(np.array([1, 1, 1]))
    obs, info = envs.reset(
        options={"reset_mask": np.array([False, True, False]), "context_index": [None, 4, None]}
    )
    np.testing.assert_array_equal(obs[[0, 2]], before[[0, 2]])
    assert _level(obs[1]) == 43 and info == {}
    assert envs.simulator.elapsed_steps.tolist() == [1, 0, 1]
    with pytest.raises(TypeError, match="bool"):
        envs.reset(options={"reset_mask": np.array([0, 1, 0])})
    with pytest.raises(ValueError, match="unknown keys"):
        envs.reset(options={"mask": np.array([True, True, True])})


@pytest.mark.parametrize(
    ("actions", "error", "message"),
    [
        (np.array([0.0, 1.0]), TypeError, "float64"),
        (np.array([0, 1, 2]), ValueError, r"shape \(3,\)"),
        (np.array([0, 7]), ValueError, r"\[7\] at envs \[1\]"),
        ("01", TypeError, "<U2"),
    ],
)
def test_bad_actions_raise_and_env_stays_usable(actions: Any, error: type, message: str) -> None:
    envs = DreamVectorEnv(2, "Breakout", world_model=FakeWorldModel())
    envs.reset(seed=0)
    with pytest.raises(error, match=message):
        envs.step(actions)
    obs, *_ = envs.step(np.array([1, 2], dtype=np.int32))
    assert obs.shape == (2, 64, 64, 3)


def test_nan_from_model_raises() -> None:
    model = FakeWorldModel()
    envs = DreamVectorEnv(2, "Breakout", world_model=model)
    envs.reset(seed=0)
    model.emit_nan = True
    with pytest.raises(RuntimeError, match="NaN"):
        envs.step(np.array([0, 0]))


def test_returned_arrays_are_fresh_and_render() -> None:
    envs = DreamVectorEnv(2, "Breakout", render_mode="rgb_array", world_model=FakeWorldModel())
    obs0, _ = envs.reset(seed=0)
    obs1, *_ = envs.step(np.array([0, 0]))
    obs2, *_ = envs.step(np.array([0, 0]))
    assert not np.shares_memory(obs1, obs2) and not np.shares_memory(obs0, obs1)
    frames = envs.render()
    assert isinstance(frames, tuple) and len(frames) == 2
    np.testing.assert_array_equal(np.stack(frames), obs2)
    with pytest.warns(UserWarning, match="render_mode"):
        assert DreamVectorEnv(1, "Breakout", world_model=FakeWorldModel()).render() is None
    with pytest.raises(ValueError, match="render_mode"):
        DreamVectorEnv(1, "Breakout", render_mode="ansi", world_model=FakeWorldModel())


def test_human_render_mode_shows_the_frames_in_a_window_single_and_vector(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The single env and the vector env both support "human" themselves (no Gymnasium
    HumanRendering wrapper around one of them only): the current frames, tiled, scaled 4x."""
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    single = gym.make(ID, world_model=FakeWorldModel(), render_mode="human")
    assert type(single.unwrapped) is DreamEnv and single.unwrapped._window is not None
    obs, _ = single.reset(seed=0)
    obs = single.step(1)[0]
    shown = single.unwrapped._window.screen_pixels()
    assert shown.shape == (256, 256, 3)
    np.testing.assert_array_equal(shown[::4, ::4], obs)
    assert single.render() is None
    single.close()
    envs = gym.make_vec(ID, num_envs=3, world_model=FakeWorldModel(), render_mode="human")
    obs, _ = envs.reset(seed=0)
    obs = envs.step(np.array([0, 1, 2]))[0]
    shown = envs.unwrapped._window.screen_pixels()  # 2 x 2 grid, the fourth cell black
    assert shown.shape == (512, 512, 3)
    for i, (r, c) in enumerate([(0, 0), (0, 1), (1, 0)]):
        np.testing.assert_array_equal(
            shown[r * 256 : (r + 1) * 256 : 4, c * 256 :: 4][:, :64], obs[i]
        )
    assert not shown[256:, 256:].any()
    envs.close()


def test_record_episode_statistics_on_top() -> None:
    envs = gym.wrappers.vector.RecordEpisodeStatistics(
        DreamVectorEnv(2, "Breakout", horizon=3, world_model=FakeWorldModel(terminate_after=9))
    )
    envs.reset(seed=0)
    for _ in range(2):
        envs.step(np.array([1, 2]))
    *_, infos = envs.step(np.array([1, 2]))
    assert infos["_episode"].tolist() == [True, True]
    assert infos["episode"]["r"].tolist() == [3 * REWARDS[1], 3 * REWARDS[2]]
    assert infos["episode"]["l"].tolist() == [3, 3]


def test_max_episode_steps_from_spec_reaches_the_vector_entry_point() -> None:
    """P2: make_vec passes a registered max_episode_steps to the vector constructor."""
    gym.register(
        "DiamondDreamCapped-Breakout-v0",
        entry_point=ENTRY_POINT,
        vector_entry_point=VECTOR_ENTRY_POINT,
        kwargs={"game": "Breakout"},
        max_episode_steps=2,
    )
    envs = gym.make_vec("DiamondDreamCapped-Breakout-v0", num_envs=2, world_model=FakeWorldModel())
    envs.reset(seed=0)
    envs.step(np.array([0, 0]))
    assert envs.step(np.array([0, 0]))[3].tolist() == [True, True]


# ------------------------------------------------------------------ the single env


def test_single_env_passes_check_env_direct_and_through_make(
    counted_load: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")  # check_env opens the human window too
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(DreamEnv("Breakout", world_model=FakeWorldModel(), render_mode="rgb_array"))
    assert [str(w.message) for w in caught if "not having a spec" not in str(w.message)] == []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        env = gym.make(ID, checkpoint=str(counted_load["dir"]))
        check_env(env.unwrapped)  # also builds spec.make(render_mode=...) for each mode
    assert counted_load["n"] == 4  # make, spec.make(render_mode=...) x 2, spec.make() (close)


def test_single_env_step_types_termination_and_render() -> None:
    env = gym.make(ID, world_model=FakeWorldModel(terminate_after=2), render_mode="rgb_array")
    obs, info = env.reset(seed=3, options={"context_index": 1})
    assert obs.shape == (64, 64, 3) and obs.dtype == np.uint8 and _level(obs) == 13
    assert env.unwrapped.get_action_meanings() == MEANINGS
    obs, rew, term, trunc, info = env.step(1)
    assert (rew, term, trunc, info) == (1.0, False, False, {})
    assert type(rew) is float and term is False and trunc is False
    obs, rew, term, trunc, _ = env.step(np.int64(2))
    assert term is True and trunc is False and rew == -1.0
    assert _level(obs) == 13 + 2 + 3  # the frame it ended on (no autoreset)
    np.testing.assert_array_equal(env.render(), obs)
    with pytest.raises(TypeError, match="int"):
        env.step(1.0)
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        env.step(4)
    obs, _ = env.reset()
    assert env.step(0)[2] is False


def test_single_env_time_limit_and_missing_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = gym.make(ID, world_model=FakeWorldModel(terminate_after=50), max_episode_steps=2)
    env.reset(seed=0)
    env.step(0)
    assert env.step(0)[3] is True
    monkeypatch.setenv("DIAMOND_ENV_HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="diamond-env train-wm --game Pong --run-dir"):
        gym.make("DiamondDream-Pong-v0")  # no model of Pong ships with the package
    with pytest.raises(ValueError, match="'Breakout'"):
        DreamEnv("Breakout", world_model=FakeWorldModel(game="Pong"))


def test_fastpath_kwarg_serves_a_prepared_copy(tiny_checkpoint: Path) -> None:
    plain = gym.make_vec(
        ID, num_envs=2, checkpoint=tiny_checkpoint, num_denoising_steps=1, fastpath="plain"
    )
    fast = gym.make_vec(
        ID,
        num_envs=2,
        checkpoint=tiny_checkpoint,
        num_denoising_steps=1,
        fastpath=["channels_last"],
    )
    auto = gym.make_vec(ID, num_envs=2, checkpoint=tiny_checkpoint)  # the CPU default
    assert plain.unwrapped.simulator.world_model.fastpath is None
    assert fast.unwrapped.simulator.world_model.fastpath == FastPathOptions(channels_last=True)
    expected = FastPathOptions.from_names(resolve_fastpath("auto", "cpu", num_envs=2))
    assert auto.unwrapped.simulator.world_model.fastpath == expected
    a, _ = plain.reset(seed=3)
    b, _ = fast.reset(seed=3)
    np.testing.assert_array_equal(a, b)  # same starting contexts
    with pytest.raises(ValueError, match="fastpath"):
        gym.make_vec(ID, num_envs=2, checkpoint=tiny_checkpoint, fastpath=["warp"])


def _rollout_on_threads(env: Any, steps: int, threads: int) -> tuple[np.ndarray, np.ndarray]:
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        frames, rewards = [env.reset(seed=3)[0]], []
        for t in range(steps):
            obs, rew, *_ = env.step(np.array([t % 4, (t + 1) % 4]))
            frames.append(obs)
            rewards.append(rew)
    finally:
        torch.set_num_threads(before)
    return np.stack(frames).astype(int), np.stack(rewards)


def test_fast_paths_and_thread_counts_agree_within_the_stated_tolerance(
    tiny_checkpoint: Path,
) -> None:
    """The README's promise: with the same seed and actions, channels-last (the CPU default) and
    plain, on 1 or 2 torch threads, give frames within 2 levels of 255 (float rounding in
    different kernel orders, carried on by the autoregressive dream), the same rewards and ends."""
    kw = {"num_envs": 2, "checkpoint": tiny_checkpoint, "num_denoising_steps": 1}
    plain = gym.make_vec(ID, fastpath="plain", **kw)
    fast = gym.make_vec(ID, fastpath=["channels_last"], **kw)
    ref, ref_rew = _rollout_on_threads(plain, 20, threads=1)
    for env, threads in ((plain, 2), (fast, 1), (fast, 2)):
        frames, rewards = _rollout_on_threads(env, 20, threads)
        diff = np.abs(frames - ref)
        assert diff.max() <= 2 and (diff > 0).mean() < 1e-2, (threads, diff.max())
        np.testing.assert_array_equal(rewards, ref_rew)


def test_vector_env_autoreset_mode_and_keyboard_mapping(monkeypatch: pytest.MonkeyPatch) -> None:
    venv = gym.make_vec(ID, num_envs=2, world_model=FakeWorldModel())
    assert venv.unwrapped.autoreset_mode is AutoresetMode.SAME_STEP  # TorchRL's GymWrapper reads it
    assert venv.metadata["autoreset_mode"] is AutoresetMode.SAME_STEP
    import ale_py

    gym.register_envs(ale_py)
    real = gym.make("ALE/Breakout-v5").unwrapped
    env = gym.make(ID, world_model=FakeWorldModel(), render_mode="rgb_array")
    assert env.unwrapped.get_keys_to_action() == real.get_keys_to_action()
    assert venv.unwrapped.get_keys_to_action() == real.get_keys_to_action()
    real.close()
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    from gymnasium.utils.play import PlayableGame

    env.reset(seed=0)
    game = PlayableGame(env)  # failed before: no get_keys_to_action
    assert game.relevant_keys == {k for keys in real.get_keys_to_action() for k in keys}
    env.close()
