"""Evaluation in the real game: score bookkeeping against hand loops, the human-normalised score
against hand numbers, agent directories (ActorCritic and SB3 with frame stacking), video."""

from __future__ import annotations

import base64
import json
import pickle
import zipfile
from pathlib import Path
from typing import Any

import cv2
import gymnasium as gym
import numpy as np
import pytest
from PIL import Image
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import DummyVecEnv, VecFrameStack, VecTransposeImage

from diamond_env.atari import make_atari_env
from diamond_env.cli.main import main
from diamond_env.config import ActorCriticConfig
from diamond_env.evaluation.agent_files import save_sb3_agent
from diamond_env.evaluation.real_game import (
    ActionFrequencyPolicy,
    ActorCriticPolicy,
    FrameStacker,
    RandomPolicy,
    SB3Policy,
    cmd_evaluate,
    evaluate,
    human_normalized_score,
    load_agent,
    reference_scores,
)
from diamond_env.models.actor_critic import ActorCritic

TINY_AC = ActorCriticConfig(channels=(8, 8, 16, 16), lstm_dim=32)


def play_by_hand(seed: int, policy: Any, games: int) -> tuple[list[float], list[int]]:
    """The obvious loop: one env, full games, sum rewards until ``games`` game overs."""
    env = make_atari_env("Breakout", 1, train=False)
    obs, _ = env.reset(seed=seed)
    returns, lengths, ret, length = [], [], 0.0, 0
    while len(returns) < games:
        obs, rew, _, _, info = env.step(policy(obs))
        ret, length = ret + float(rew[0]), length + 1
        if info["game_over"][0]:
            returns.append(ret)
            lengths.append(length)
            ret, length = 0.0, 0
    env.close()
    return returns, lengths


class PerEnvRandom:
    """Env i draws from its own generator, so its games do not depend on the other envs."""

    def __init__(self, seeds: list[int]) -> None:
        self.rngs = [np.random.default_rng(s) for s in seeds]

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        return np.array([rng.integers(0, 4) for rng in self.rngs], dtype=np.int64)

    def reset(self, mask: np.ndarray) -> None:
        return None


def test_hns_against_hand_numbers() -> None:
    assert human_normalized_score("Breakout", 1.7) == pytest.approx(0.0)
    assert human_normalized_score("Breakout", 30.5) == pytest.approx(1.0)
    assert human_normalized_score("breakout", 16.1) == pytest.approx(0.5)
    assert human_normalized_score("Pong", 20.4) == pytest.approx((20.4 + 20.7) / 35.3)
    assert reference_scores("ms_pacman") == {"random": 307.3, "human": 6951.6, "diamond": 1958.2}
    with pytest.raises(ValueError, match="Atari 100k"):
        human_normalized_score("Tetris", 1.0)


def test_random_policy_matches_hand_loop() -> None:
    result = evaluate(RandomPolicy(4, seed=3), "Breakout", 2, seed=5, progress=False)
    returns, lengths = play_by_hand(5, RandomPolicy(4, seed=3), 2)
    assert result.returns == returns and result.lengths == lengths
    assert result.episodes == 2 and result.game == "Breakout" and result.truncated == [False] * 2
    assert result.mean == pytest.approx(np.mean(returns))
    assert result.std == pytest.approx(np.std(returns))
    assert (result.min, result.max) == (min(returns), max(returns))
    assert result.hns == pytest.approx((np.mean(returns) - 1.7) / (30.5 - 1.7))
    assert all(n > 50 for n in lengths)  # five lives of random Breakout
    assert json.loads(json.dumps(result.to_dict()))["lengths"] == lengths


def test_action_counts_cover_the_steps_that_count() -> None:
    result = evaluate(RandomPolicy(4, seed=3), "Breakout", 3, seed=5, num_envs=2, progress=False)
    assert len(result.action_counts) == 4 and sum(result.action_counts) == sum(result.lengths)
    assert min(result.action_counts) > 0 and sum(result.action_shares) == pytest.approx(1.0)
    fire = evaluate(ActionFrequencyPolicy([0, 1, 0, 0], seed=0), "Breakout", 1, progress=False)
    assert fire.action_counts == [0, fire.lengths[0], 0, 0] and fire.action_shares[1] == 1.0
    assert json.loads(json.dumps(result.to_dict()))["action_counts"] == result.action_counts
    assert "action shares" in result.summary() and "standard error" in result.summary()


def test_action_frequency_policy_is_blind_and_follows_its_shares() -> None:
    policy = ActionFrequencyPolicy([3, 1, 0, 0], seed=4)
    obs = np.zeros((20_000, 64, 64, 3), np.uint8)
    draws = policy(obs)
    assert draws.dtype == np.int64 and set(np.unique(draws)) == {0, 1}
    assert np.mean(draws == 0) == pytest.approx(0.75, abs=0.01)
    # the screen does not matter: the same seed gives the same actions on other frames
    assert (ActionFrequencyPolicy([3, 1, 0, 0], seed=4)(obs + 200) == draws).all()
    for bad in ([], [0, 0], [1, -1], [1, float("nan")], [[1, 2]]):
        with pytest.raises(ValueError, match="shares"):
            ActionFrequencyPolicy(bad)


def test_several_envs_count_the_first_games_started() -> None:
    """2 envs, 3 games: games 0 and 1 are the first games of envs 0 and 1; game 2 is the second
    game of whichever env finished first. Nothing else counts, however short."""
    result = evaluate(PerEnvRandom([7, 8]), "Breakout", 3, seed=5, num_envs=2, progress=False)
    ret0, len0 = play_by_hand(5, PerEnvRandom([7]), 2)
    ret1, len1 = play_by_hand(6, PerEnvRandom([8]), 2)
    third = (ret0[1], len0[1]) if len0[0] <= len1[0] else (ret1[1], len1[1])
    assert result.returns == [ret0[0], ret1[0], third[0]]
    assert result.lengths == [len0[0], len1[0], third[1]]


def test_actor_critic_agent_directory(tmp_path: Path) -> None:
    ActorCritic(TINY_AC, num_actions=4).save(tmp_path / "run" / "actor_critic")
    policy, meta = load_agent(tmp_path / "run", seed=1)
    assert isinstance(policy, ActorCriticPolicy) and not policy.deterministic
    assert meta["kind"] == "actor_critic" and meta["num_actions"] == 4
    first = evaluate(policy, "Breakout", 1, seed=0, progress=False)
    again = evaluate(load_agent(tmp_path / "run", seed=1)[0], "Breakout", 1, seed=0, progress=False)
    assert first.returns == again.returns and first.lengths == again.lengths
    assert first.lengths[0] > 50
    # the LSTM state is zeroed exactly where a game starts
    policy.reset(np.ones(2, dtype=bool))
    policy(np.full((2, 64, 64, 3), 90, dtype=np.uint8))
    policy.reset(np.array([True, False]))
    assert policy.state is not None
    assert policy.state[0][0].abs().sum() == 0 and policy.state[0][1].abs().sum() > 0
    ActorCritic(TINY_AC, num_actions=6).save(tmp_path / "six")
    with pytest.raises(ValueError, match="Breakout has 4 actions, the policy has 6"):
        evaluate(load_agent(tmp_path / "six")[0], "Breakout", 1, progress=False)


def test_cmd_evaluate_writes_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ActorCritic(TINY_AC, num_actions=4).save(tmp_path / "agent")
    with pytest.raises(ValueError, match="does not name its game"):
        cmd_evaluate(tmp_path / "agent", None, 1, tmp_path / "eval.json", seed=0, progress=False)
    (tmp_path / "agent" / "agent.json").write_text('{"game": "Pong"}')
    with pytest.raises(ValueError, match="trained on 'Pong'"):
        cmd_evaluate(tmp_path / "agent", "Breakout", 1, tmp_path / "eval.json", progress=False)
    (tmp_path / "agent" / "agent.json").write_text('{"game": "Breakout"}')
    result = cmd_evaluate(tmp_path / "agent", None, 1, tmp_path / "out" / "eval.json", seed=2)
    saved = json.loads((tmp_path / "out" / "eval.json").read_text())
    assert saved["returns"] == result.returns and saved["seed"] == 2
    assert saved["reference"]["human"] == 30.5 and saved["agent_meta"]["kind"] == "actor_critic"
    assert "Breakout: 1 games, return" in capsys.readouterr().out


def test_cmd_evaluate_baselines_play_the_same_games(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ActorCritic(TINY_AC, num_actions=4).save(tmp_path / "agent")
    (tmp_path / "agent" / "agent.json").write_text('{"game": "Breakout"}')
    result = cmd_evaluate(
        tmp_path / "agent",
        None,
        2,
        tmp_path / "eval.json",
        seed=3,
        num_envs=2,
        progress=False,
        baselines=True,
    )
    saved = json.loads((tmp_path / "eval.json").read_text())["baselines"]
    assert set(saved) == {"random", "action_frequency"}
    random = evaluate(RandomPolicy(4, seed=3), "Breakout", 2, seed=3, num_envs=2, progress=False)
    blind = evaluate(
        ActionFrequencyPolicy(result.action_shares, seed=3),
        "Breakout",
        2,
        seed=3,
        num_envs=2,
        progress=False,
    )
    for name, other in (("random", random), ("action_frequency", blind)):
        m = saved[name]
        assert m["result"]["returns"] == other.returns
        assert m["difference"] == pytest.approx(result.mean - other.mean)
        se = np.hypot(result.std, other.std) / np.sqrt(2)
        assert m["standard_error"] == pytest.approx(se)
        assert m["z"] == (None if se == 0 else pytest.approx(m["difference"] / se))
    out = capsys.readouterr().out
    assert "baseline, random policy:" in out and "blind to the screen" in out


def test_agent_directory_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="agent directory not found"):
        load_agent(tmp_path / "nowhere")
    with pytest.raises(ValueError, match=r"expected an agent directory: actor_critic\.json"):
        load_agent(tmp_path)
    (tmp_path / "agent.json").write_text('{"kind": "sb3", "algo": "ppo"}')
    with pytest.raises(ValueError, match=r"model\.zip, which stable-baselines3 unpickles"):
        load_agent(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"model\.zip"):
        load_agent(tmp_path, trust_pickle=True)
    (tmp_path / "model.zip").write_bytes(b"")
    (tmp_path / "agent.json").write_text('{"kind": "sb3", "algo": "muzero"}')
    with pytest.raises(ValueError, match="algo: expected one of"):
        load_agent(tmp_path, trust_pickle=True)
    with pytest.raises(ValueError, match="video_path"):
        evaluate(RandomPolicy(4), "Breakout", 1, video_path=tmp_path / "v.avi")


class CountingFrames(gym.Env):
    """Frames that tell every step apart: env ``k`` at step ``t`` shows ``40*k + 4*t + channel``;
    episodes last ``length`` steps."""

    def __init__(self, k: int, length: int, channels_first: bool) -> None:
        shape = (3, 64, 64) if channels_first else (64, 64, 3)
        self.observation_space = gym.spaces.Box(0, 255, shape, np.uint8)
        self.action_space = gym.spaces.Discrete(4)
        self.k, self.length, self.channels_first, self.t = k, length, channels_first, 0

    def frame(self) -> np.ndarray:
        hwc = np.broadcast_to(40 * self.k + 4 * self.t + np.arange(3, dtype=np.uint8), (64, 64, 3))
        self.last_hwc = hwc.copy()
        return hwc.transpose(2, 0, 1).copy() if self.channels_first else hwc.copy()

    def reset(self, *, seed: int | None = None, options: Any = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.t = 0
        return self.frame(), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        self.t += 1
        return self.frame(), 1.0, self.t >= self.length, False, {}


@pytest.mark.parametrize("channels_first", [True, False])
def test_frame_stacker_matches_vec_frame_stack(channels_first: bool) -> None:
    raw = DummyVecEnv([lambda k=k: CountingFrames(k, 3 + 2 * k, channels_first) for k in (0, 1)])
    venv = VecTransposeImage(VecFrameStack(raw, 4)) if not channels_first else VecFrameStack(raw, 4)
    ours = FrameStacker(4, channels_first=True)
    ref = venv.reset()
    ours.reset(np.ones(2, dtype=bool))
    for _ in range(12):
        hwc = np.stack([env.last_hwc for env in raw.envs])  # type: ignore[attr-defined]
        np.testing.assert_array_equal(ours.push(hwc), ref)
        ref, _, dones, _ = venv.step(np.zeros(2, dtype=np.int64))
        ours.reset(dones)
    assert ref.shape == (2, 12, 64, 64)


@pytest.mark.parametrize("channels_first", [True, False])
def test_sb3_ppo_agent_in_the_real_game(tmp_path: Path, channels_first: bool) -> None:
    """PPO trained briefly under VecFrameStack(4) (channel-first, as DreamSB3VecEnv serves, or
    channel-last, which SB3 transposes itself), saved with agent.json, played in real Breakout."""
    venv = VecFrameStack(DummyVecEnv([lambda: CountingFrames(0, 10, channels_first)]), 4)
    model = PPO("CnnPolicy", venv, n_steps=32, batch_size=32, n_epochs=1, seed=0, device="cpu")
    model.learn(64)
    save_sb3_agent(model, tmp_path, {"n_stack": 4, "game": "Breakout", "deterministic": False})
    policy, info = load_agent(tmp_path, seed=0)
    assert isinstance(policy, SB3Policy) and info["observation_shape"] == [12, 64, 64]
    obs = np.random.default_rng(0).integers(0, 256, (8, 12, 64, 64), dtype=np.uint8)
    rebuilt, _ = policy.model.predict(obs, deterministic=True)
    np.testing.assert_array_equal(rebuilt, model.predict(obs, deterministic=True)[0])
    seen: list[np.ndarray] = []
    predict = policy.model.predict
    policy.model.predict = lambda obs, **kw: (seen.append(obs), predict(obs, **kw))[1]
    result = evaluate(policy, "Breakout", 1, seed=0, progress=False)
    assert len(seen) == result.lengths[0] > 50
    assert {o.shape for o in seen} == {(1, 12, 64, 64)} and seen[0].dtype == np.uint8
    env = make_atari_env("Breakout", 1, train=False)
    first, _ = env.reset(seed=0)
    env.close()
    assert not seen[0][0, :9].any()  # VecFrameStack's zero padding at a game start
    np.testing.assert_array_equal(seen[0][0, 9:], first[0].transpose(2, 0, 1))
    np.testing.assert_array_equal(seen[1][0, 6:9], seen[0][0, 9:])  # the frame moved one slot
    with pytest.raises(ValueError, match="n_stack"):
        SB3Policy(policy.model, n_stack=3)


class _TouchOnUnpickle:
    """Unpickling it creates ``path``: what a crafted model.zip could do with any command."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[Path]]:
        return Path.touch, (self.path,)


def test_crafted_sb3_zip_runs_nothing_without_trust_pickle(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """SB3's loader unpickles the ``:serialized:`` entries of a zip's ``data``; a bare zip is
    refused unless --trust-pickle, and the flag is what lets the code run."""
    marker = tmp_path / "pwned"
    payload = base64.b64encode(pickle.dumps(_TouchOnUnpickle(marker))).decode()
    agent = tmp_path / "agent"
    agent.mkdir()
    with zipfile.ZipFile(agent / "model.zip", "w") as archive:
        archive.writestr("data", json.dumps({"policy_class": {":serialized:": payload}}))
    (agent / "agent.json").write_text('{"kind": "sb3", "algo": "ppo", "game": "Breakout"}')
    for command in (
        ["evaluate", "--agent", str(agent), "--episodes", "1", "--quiet"],
        [
            "video",
            "--checkpoint",
            str(tmp_path / "none"),
            "--agent",
            str(agent),
            "--out",
            str(tmp_path / "v.gif"),
        ],
    ):
        assert main(command) == 2
        assert not marker.exists() and "--trust-pickle" in capsys.readouterr().err
    with pytest.raises(Exception):  # noqa: B017  (whatever SB3 makes of the rest of the zip)
        load_agent(agent, trust_pickle=True)
    assert marker.exists()  # the risk the flag names is real


def test_video_of_the_first_game(tmp_path: Path) -> None:
    gif = evaluate(RandomPolicy(4, seed=0), "Breakout", 1, video_path=tmp_path / "a.gif")
    mp4 = evaluate(RandomPolicy(4, seed=0), "Breakout", 1, video_path=tmp_path / "a.mp4")
    assert gif.lengths == mp4.lengths
    with Image.open(tmp_path / "a.gif") as im:
        # Pillow merges identical consecutive frames, so a GIF can hold fewer than were added.
        assert gif.lengths[0] // 2 < im.n_frames <= gif.lengths[0] and im.size == (160, 210)
    cap = cv2.VideoCapture(str(tmp_path / "a.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == mp4.lengths[0]
    assert int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)) == 160
    cap.release()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.gif", "a.mp4"]  # no temp files left
