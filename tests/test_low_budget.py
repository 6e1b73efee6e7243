"""Low-budget aids that the paper preset leaves off, and the config overrides that select them."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from test_segments import check_against_reference, coded_episode

from diamond_env.config import SamplerConfig, apply_overrides, get_preset
from diamond_env.data.episode import Episode, FlatData
from diamond_env.data.segments import SegmentSampler, life_index
from diamond_env.models.denoiser import Denoiser
from diamond_env.models.sampler import sample


def test_overrides_replace_fields_and_refuse_what_does_not_fit() -> None:
    base = get_preset("cpu")
    cfg = apply_overrides(
        base,
        "denoiser.predict_change=true denoiser_optim.lr=1e-3 loop.denoiser_seq_len=5 "
        "denoiser.channels=[16,16,16,16] loop.rew_end_event_fraction=1",
    )
    assert cfg.denoiser.predict_change is True
    assert cfg.denoiser_optim.lr == 1e-3 and cfg.loop.denoiser_seq_len == 5
    assert cfg.denoiser.channels == (16, 16, 16, 16)
    assert cfg.loop.rew_end_event_fraction == 1.0  # an int given for a float field
    assert cfg.rew_end == base.rew_end and cfg.preset == "cpu"
    assert apply_overrides(base, "") == base
    for bad, words in [
        ("lr=1e-3", "section.field=value"),
        ("optim.lr=1e-3", "unknown section"),
        ("denoiser.width=3", "no field 'width'"),
        ("denoiser.sigma_data=true", "expected a float"),
        ("loop.denoiser_seq_len=5.5", "expected a int"),
    ]:
        with pytest.raises(ValueError, match=words):
            apply_overrides(base, bad)


def _pair() -> tuple[Denoiser, Denoiser]:
    """The same weights, diffusing the frame (DIAMOND) and the change from the last frame."""
    cfg = get_preset("tiny").denoiser
    torch.manual_seed(0)
    plain = Denoiser(cfg, num_actions=4)
    change = Denoiser(dataclasses.replace(cfg, predict_change=True), num_actions=4)
    change.load_state_dict(plain.state_dict())
    for p in plain.conv_out.parameters():  # a network that is not zero
        torch.nn.init.normal_(p, std=0.1)
    change.load_state_dict(plain.state_dict())
    return plain, change


def _context(batch: int = 3) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    obs = torch.rand((batch, 4, 3, 16, 16), generator=g) * 2 - 1
    act = torch.randint(0, 4, (batch, 4), generator=g)
    target = torch.rand((batch, 3, 16, 16), generator=g) * 2 - 1
    return obs, act, target


def test_predict_change_diffuses_the_difference_from_the_last_frame() -> None:
    plain, change = _pair()
    obs, act, target = _context()
    last = obs[:, -1]
    x, sigma = torch.randn_like(target), torch.tensor([0.1, 1.0, 5.0])
    with torch.no_grad():
        got = change.denoise(x, sigma, obs, act)
        want = last + plain.denoise(x - last, sigma, obs, act)
    torch.testing.assert_close(got, want)
    assert plain.origin(obs) is None
    torch.testing.assert_close(change.origin(obs), last)
    # the training loss is the plain loss on the change, with the same noise
    loss = change.compute_loss(obs, act, target, generator=torch.Generator().manual_seed(5))
    ref = plain.compute_loss(obs, act, target - last, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(loss, ref)


def test_a_change_model_that_predicts_no_change_repeats_the_last_frame() -> None:
    _, change = _pair()
    obs, act, _ = _context()
    obs = torch.round((obs + 1) * 127.5) / 127.5 - 1  # on the uint8 levels

    def ideal(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return obs[:, -1]  # the best denoiser when nothing moves

    noise = torch.randn((3, 3, 16, 16), generator=torch.Generator().manual_seed(2))
    cfg = SamplerConfig(num_steps=3)
    out = sample(ideal, noise, cfg, origin=change.origin(obs))
    torch.testing.assert_close(out, obs[:, -1])
    # the sampler starts at origin + noise: one Euler step of a half-shrinking denoiser shows it
    one = SamplerConfig(num_steps=1, sigma_min=1.0, sigma_max=1.0)
    half = sample(lambda x, s: 0.5 * x, noise, one, origin=obs[:, -1])
    no_origin = sample(lambda x, s: 0.5 * x, noise, one)
    assert not torch.allclose(half, no_origin)
    torch.testing.assert_close(
        half,
        ((0.5 * (noise + obs[:, -1])).clamp(-1, 1) + 1).mul(127.5).round().div(127.5).sub(1),
        atol=1e-6,
        rtol=0,
    )


def test_round_quantisation_keeps_a_frame_that_floor_lowers() -> None:
    from diamond_env.frames import quantize as quantize_round
    from diamond_env.models.denoiser import quantize_floor

    levels = torch.tensor([0.0, 17.0, 128.0, 254.0, 255.0])
    frame = levels / 127.5 - 1
    below = frame - 0.1 / 127.5  # a tenth of a level under each level
    # DIAMOND floors: a hair below a level drops the whole level; rounding keeps it
    lowered = torch.cat([frame[:1], frame[1:] - 2 / 255])  # level 0 is clamped, stays
    torch.testing.assert_close(quantize_floor(below), lowered, atol=1e-6, rtol=0)
    torch.testing.assert_close(quantize_round(below), frame, atol=1e-6, rtol=0)
    torch.testing.assert_close(quantize_round(frame + 0.6 / 127.5)[:-1], frame[:-1] + 2 / 255)
    cfg = get_preset("tiny").denoiser
    assert Denoiser(cfg, 4).quantize(below)[1] < frame[1]  # the default is DIAMOND's floor
    rounding = Denoiser(dataclasses.replace(cfg, quantize="round"), 4)
    torch.testing.assert_close(rounding.quantize(below), frame, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="quantize"):
        Denoiser(dataclasses.replace(cfg, quantize="nearest"), 4)  # type: ignore[arg-type]


def test_round_quantisation_reaches_the_dream(monkeypatch: pytest.MonkeyPatch) -> None:
    from diamond_env.world_model.model import WorldModel

    cfg = get_preset("tiny")
    obs = torch.randint(1, 256, (2, 4, 3, 64, 64)).float() / 127.5 - 1  # on the levels, not 0
    act = torch.zeros((2, 4), dtype=torch.int64)
    out = {}
    for mode in ("floor", "round"):
        den = dataclasses.replace(cfg.denoiser, quantize=mode)
        wm = WorldModel(dataclasses.replace(cfg, denoiser=den), "Breakout", ["NOOP", "FIRE"])
        # a denoiser that says "the last frame, a tenth of a level lower" at every noise level
        monkeypatch.setattr(wm.denoiser, "denoise", lambda x, s, o, a: o[:, -1] - 0.1 / 127.5)
        out[mode] = wm.step(obs, act, None, generator=torch.Generator().manual_seed(3)).next_obs
    torch.testing.assert_close(out["round"], obs[:, -1], atol=1e-6, rtol=0)
    torch.testing.assert_close(out["floor"], obs[:, -1] - 2 / 255, atol=1e-6, rtol=0)


def test_min_change_keeps_the_colour_of_pixels_that_barely_moved(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from diamond_env.world_model.model import WorldModel

    cfg = get_preset("tiny")
    obs = torch.full((1, 4, 3, 64, 64), 100 / 127.5 - 1)
    act = torch.zeros((1, 4), dtype=torch.int64)
    moved = obs[:, -1].clone()
    moved[0, 1, 0, :4] += torch.tensor([1.0, 5.0, 6.0, 60.0]) / 127.5  # green up 1, 5, 6, 60 levels
    moved[0, 0, 1, 0] -= 5 / 127.5  # red down 5 at another pixel
    outs = []
    for min_change in (0, 6):
        sampler = dataclasses.replace(cfg.sampler, min_change=min_change)
        den = dataclasses.replace(cfg.denoiser, quantize="round")  # exact levels, no float slips
        wm = WorldModel(
            dataclasses.replace(cfg, sampler=sampler, denoiser=den), "Breakout", ["NOOP", "FIRE"]
        )
        monkeypatch.setattr(wm.denoiser, "denoise", lambda x, s, o, a: moved)
        outs.append(wm.step(obs, act, None, generator=torch.Generator().manual_seed(0)).next_obs)
    torch.testing.assert_close(outs[0], moved, atol=1e-6, rtol=0)  # off: the dream as dreamt
    kept = obs[:, -1].clone()
    kept[0, 1, 0, 2:4] = moved[0, 1, 0, 2:4]  # 6 and 60 levels stay; 1 and 5 are undone
    torch.testing.assert_close(outs[1], kept, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="min_change"):
        wm.step(obs, act, None, sampler=dataclasses.replace(cfg.sampler, min_change=-1))


def test_change_weight_weighs_the_pixels_that_moved() -> None:
    cfg = get_preset("tiny").denoiser
    torch.manual_seed(0)
    plain = Denoiser(cfg, num_actions=4)
    for p in plain.conv_out.parameters():
        torch.nn.init.normal_(p, std=0.1)
    weighted = Denoiser(dataclasses.replace(cfg, change_weight=9.0), num_actions=4)
    weighted.load_state_dict(plain.state_dict())
    obs, act, _ = _context(batch=2)
    obs = torch.round((obs + 1) * 127.5) / 127.5 - 1
    target = obs[:, -1].clone()
    target[:, :, 3, 5] = 1.0  # one pixel moved in each sample (a "ball")
    target[0, 1, 8, 8] = -1.0  # and one more in the first, in one channel only
    # the same draw of noise: the squared errors per pixel are the same in both models
    g = torch.Generator().manual_seed(7)
    sigma = plain.sample_training_sigma(2, torch.device("cpu"), g)
    offset = cfg.sigma_offset_noise * torch.randn((2, 3, 1, 1), generator=g)
    eps = torch.randn(target.shape, generator=g)
    x = target + offset + eps * sigma[:, None, None, None]
    sc = plain.scalings(sigma)
    with torch.no_grad():
        out = plain.network(sc.c_in[:, None, None, None] * x, sc.c_noise, obs, act)
    goal = (target - sc.c_skip[:, None, None, None] * x) / sc.c_out[:, None, None, None]
    sq = (out - goal).pow(2)
    w = torch.ones(2, 1, 16, 16)
    w[:, :, 3, 5] = 10.0
    w[0, :, 8, 8] = 10.0  # a pixel counts as changed when any channel changed
    w = w.expand_as(sq)
    want = ((sq * w).flatten(1).sum(1) / w.flatten(1).sum(1)).mean()
    with torch.no_grad():
        got = weighted.compute_loss(obs, act, target, generator=torch.Generator().manual_seed(7))
        unweighted = plain.compute_loss(
            obs, act, target, generator=torch.Generator().manual_seed(7)
        )
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(unweighted, sq.mean())
    assert not torch.allclose(got, unweighted)
    with pytest.raises(ValueError, match="change_weight"):
        Denoiser(dataclasses.replace(cfg, change_weight=-1.0), num_actions=4)


def _sparse_events(num_episodes: int = 3, steps: int = 40) -> FlatData:
    """Games with one +1 reward, one life loss and the game's end each; nothing else."""
    episodes = []
    for e in range(num_episodes):
        ep = coded_episode(e, steps, life_loss_at=(12,))
        rew = np.zeros(steps, dtype=np.float32)
        rew[25 + e] = 1.0
        episodes.append(dataclasses.replace(ep, rew=rew))
    return FlatData.from_episodes(episodes)


def test_event_fraction_centres_windows_on_rewards_and_ends() -> None:
    data = _sparse_events()
    event_steps = {(int(s)) for s in np.flatnonzero((data.rew != 0) | data.life_loss | data.term)}
    assert len(event_steps) == 3 * 3  # a reward, a life loss and the game's end per game

    def has_event(batch) -> np.ndarray:
        return ((batch.rew != 0) | batch.end).any(axis=1)

    every = SegmentSampler(data, 6, pad_after_end=True, event_fraction=1.0, seed=0)
    batch = every.sample(256)
    assert has_event(batch).all()
    check_against_reference(batch, data, pad_after_end=True)
    half = SegmentSampler(data, 6, pad_after_end=True, event_fraction=0.5, seed=0).sample(2000)
    none = SegmentSampler(data, 6, pad_after_end=True, seed=0).sample(2000)
    assert has_event(half).mean() > has_event(none).mean() + 0.3
    # off: the same batches as a sampler that never heard of it (DIAMOND's stream)
    off = SegmentSampler(data, 6, pad_after_end=True, event_fraction=0.0, seed=3).sample(64)
    ref = SegmentSampler(data, 6, pad_after_end=True, seed=3).sample(64)
    np.testing.assert_array_equal(off.start, ref.start)
    np.testing.assert_array_equal(off.episode, ref.episode)
    with pytest.raises(ValueError, match="event_fraction"):
        SegmentSampler(data, 6, pad_after_end=True, event_fraction=1.5)


def test_reward_lead_draws_denoiser_windows_before_a_reward() -> None:
    data = _sparse_events()
    lives = life_index(data)
    reward_steps = np.flatnonzero(data.rew != 0)
    life_of = np.searchsorted(lives.step_starts, reward_steps, side="right") - 1
    pairs = zip(life_of, reward_steps, strict=True)
    rewards = {int(e): int(s - lives.step_starts[e]) for e, s in pairs}
    lead, seq = 4, 6
    sampler = SegmentSampler(
        data, seq, pad_after_end=False, event_fraction=1.0, reward_lead=lead, seed=0
    )
    batch = sampler.sample(600)
    check_against_reference(batch, data, pad_after_end=False)
    # every window ends in one of the `lead` frames up to the first one showing a reward (life
    # frame s + 1); ends are not targets of this draw; every offset is drawn
    assert set(batch.episode.tolist()) == set(rewards)
    last = batch.start + seq - 1
    s = np.array([rewards[int(e)] for e in batch.episode])
    assert set((s + 1 - last).tolist()) == set(range(lead))
    # a share of them only; the rest as before
    half = SegmentSampler(
        data, seq, pad_after_end=False, event_fraction=0.5, reward_lead=lead, seed=1
    ).sample(2000)
    ends_near = np.array([rewards.get(int(e), -99) for e in half.episode]) + 1 - (half.start + 5)
    assert 0.4 < np.isin(ends_near, range(lead)).mean() < 0.7
    for kwargs, words in [
        ({"reward_lead": -1, "pad_after_end": False}, "reward_lead"),
        ({"reward_lead": 4, "pad_after_end": True}, "denoiser windows"),
    ]:
        with pytest.raises(ValueError, match=words):
            SegmentSampler(data, seq, event_fraction=0.5, **kwargs)


def test_focus_draws_denoiser_windows_around_marked_steps() -> None:
    data = _sparse_events()
    lives = life_index(data)
    marked = np.zeros(len(data.act), dtype=bool)
    marked[lives.step_starts[1] + 7] = marked[lives.step_starts[3] + 2] = True
    where = {1: 7, 3: 2}  # life -> its marked step
    seq = 6
    sampler = SegmentSampler(
        data, seq, pad_after_end=False, focus=lambda d: marked, focus_fraction=1.0, seed=0
    )
    batch = sampler.sample(600)
    check_against_reference(batch, data, pad_after_end=False)
    assert set(batch.episode.tolist()) == set(where)
    # the last frame is s, s + 1 or s + 2 (cut at the life's last frame an action was taken at)
    last = batch.start + seq - 1
    s = np.array([where[int(e)] for e in batch.episode])
    assert set((last - s).tolist()) == {0, 1, 2}
    half = SegmentSampler(
        data, seq, pad_after_end=False, focus=lambda d: marked, focus_fraction=0.5, seed=1
    ).sample(2000)
    near = np.array([where.get(int(e), -99) for e in half.episode])
    assert 0.4 < np.isin(half.start + seq - 1 - near, (0, 1, 2)).mean() < 0.7
    # nothing marked: the plain draw; off: the same stream as a sampler without it
    nothing = SegmentSampler(
        data, seq, pad_after_end=False, focus=lambda d: ~marked & False, focus_fraction=1.0, seed=2
    ).sample(64)
    plain = SegmentSampler(data, seq, pad_after_end=False, seed=2).sample(64)
    np.testing.assert_array_equal(nothing.start, plain.start)
    for kwargs, words in [
        ({"focus_fraction": 1.5, "focus": lambda d: marked}, "focus_fraction"),
        ({"focus_fraction": 0.5}, "needs focus"),
        ({"focus_fraction": 0.5, "focus": lambda d: marked[:3]}, "a bool per step"),
    ]:
        with pytest.raises(ValueError, match=words):
            SegmentSampler(data, seq, pad_after_end=False, **kwargs)
    with pytest.raises(ValueError, match="needs focus"):
        SegmentSampler(data, seq, pad_after_end=True, focus=lambda d: marked, focus_fraction=0.5)


def test_bounce_steps_mark_the_paddle_sending_the_ball_back_once() -> None:
    from test_ball_table import _frame

    from diamond_env.evaluation.ball import bounce_steps

    def episode(rows: list[float | None]) -> Episode:
        frames = np.stack([_frame(None if r is None else (int(r), 30)) for r in rows])
        n = len(rows) - 1
        zeros = np.zeros(n, dtype=bool)
        return Episode(
            obs=frames,
            act=np.zeros(n, np.int64),
            rew=np.zeros(n, np.float32),
            term=zeros,
            trunc=zeros,
            life_loss=zeros,
        )

    # falls to the paddle, hidden there a frame, comes back up; a high turn (bricks) is no bounce
    first = episode([40, 44, 48, 52, 55, None, 54, 51, 48, 45, 40, 35, 31, 35])
    second = episode([50, 53, 56, 53, 50, 47])  # sent back without being hidden
    third = episode([None, None, 52, 49])  # first seen rising: marked (nothing rose into it)
    data = FlatData.from_episodes([first, second, third])
    marked = bounce_steps(data)
    assert marked.shape == data.act.shape
    steps = np.flatnonzero(marked)
    expect = [6, len(first.act) + 2, len(first.act) + len(second.act) + 2]
    assert steps.tolist() == expect
    # in training: the denoiser's sampler draws around them; other games are refused
    from diamond_env.training.wm_trainer import make_samplers

    config = apply_overrides(get_preset("tiny"), "loop.denoiser_bounce_fraction=1.0")
    den, _ = make_samplers(config, data, seed=0, game="Breakout")
    assert den.focus_steps.tolist() == [6, 2, 2]
    with pytest.raises(ValueError, match="Breakout frames only, got data of Pong"):
        make_samplers(config, data, seed=0, game="Pong")


def test_frame_difference_adds_next_minus_current_to_the_encoder_input() -> None:
    from diamond_env.models.rew_end import RewEndModel

    cfg = get_preset("tiny").rew_end
    torch.manual_seed(0)
    plain = RewEndModel(cfg, num_actions=4)
    diff = RewEndModel(dataclasses.replace(cfg, frame_difference=True), num_actions=4)
    assert diff.encoder.conv_in.in_channels == 9 and plain.encoder.conv_in.in_channels == 6
    state = plain.state_dict()
    weight = state["encoder.conv_in.weight"]
    state["encoder.conv_in.weight"] = torch.cat([weight, torch.zeros_like(weight[:, :3])], dim=1)
    diff.load_state_dict(state)
    g = torch.Generator().manual_seed(3)
    obs = torch.rand((2, 3, 3, 64, 64), generator=g) * 2 - 1
    nxt = torch.rand((2, 3, 3, 64, 64), generator=g) * 2 - 1
    act = torch.randint(0, 4, (2, 3), generator=g)
    with torch.no_grad():
        want = plain(obs, act, nxt)[:2]
        got = diff(obs, act, nxt)[:2]  # zero weights on the difference: the plain model
        torch.testing.assert_close(got, want)
        diff.encoder.conv_in.weight[:, 6:] = 0.5
        moved = diff(obs, act, nxt)[0]
        same = diff(obs, act, obs)[0]
    assert not torch.allclose(moved, want[0])  # the difference channels are read
    assert not torch.allclose(same, moved)


def test_change_grid_gives_the_lstm_where_the_frame_changed() -> None:
    """The map is the colour-mean |next - current| max-pooled per cell; with zero LSTM weights on
    it the model is the plain one, and with weights it is read."""
    from diamond_env.models.rew_end import RewEndModel

    cfg = get_preset("tiny").rew_end
    torch.manual_seed(0)
    plain = RewEndModel(cfg, num_actions=4)
    grid = RewEndModel(dataclasses.replace(cfg, change_grid=16), num_actions=4)
    assert grid.lstm.input_size == plain.lstm.input_size + 256
    obs = torch.zeros(1, 2, 3, 64, 64)
    nxt = obs.clone()
    nxt[0, 1, 0, 5, 9] = 0.6  # one pixel of one colour: cell (1, 2) of the 16 x 16 map
    nxt[0, 1, 1, 6, 10] = -0.3  # same cell, smaller: the max keeps 0.2
    nxt[0, 1, :, 63, 0] = 1.0  # the last row's first cell: 1.0
    cells = grid.change_map(obs, nxt).reshape(1, 2, 16, 16)
    want = torch.zeros(1, 2, 16, 16)
    want[0, 1, 1, 2] = 0.2
    want[0, 1, 15, 0] = 1.0
    torch.testing.assert_close(cells, want)

    state = plain.state_dict()
    w = state["lstm.weight_ih_l0"]
    state["lstm.weight_ih_l0"] = torch.cat([w, torch.zeros(w.shape[0], 256)], dim=1)
    grid.load_state_dict(state)
    act = torch.zeros(1, 2, dtype=torch.int64)
    with torch.no_grad():
        torch.testing.assert_close(grid(obs, act, nxt)[:2], plain(obs, act, nxt)[:2])
        grid.lstm.weight_ih_l0[:, -256:] = 1.0
        assert not torch.allclose(grid(obs, act, nxt)[0], plain(obs, act, nxt)[0])
    for bad in (-1, 5):
        with pytest.raises(ValueError, match="change_grid"):
            RewEndModel(dataclasses.replace(cfg, change_grid=bad), num_actions=4)


def test_predictions_undo_the_event_weight() -> None:
    """A loss that weighs events w learns w times their odds; predict() divides them back."""
    from diamond_env.models.rew_end import RewEndModel

    cfg = get_preset("tiny").rew_end
    obs = torch.rand((2, 3, 3, 64, 64)) * 2 - 1
    act = torch.zeros((2, 3), dtype=torch.int64)
    nxt = torch.rand((2, 3, 3, 64, 64)) * 2 - 1
    torch.manual_seed(0)
    plain = RewEndModel(cfg, num_actions=4)
    weighted = RewEndModel(dataclasses.replace(cfg, event_weight=10.0), num_actions=4)
    weighted.load_state_dict(plain.state_dict())
    with torch.no_grad():
        raw_r, raw_e, _ = weighted(obs, act, nxt)
        got_r, got_e, _ = weighted.predict(obs, act, nxt)
        same_r, same_e, _ = plain.predict(obs, act, nxt)
    torch.testing.assert_close(same_r, raw_r)  # weight 1 (DIAMOND): the logits as they are
    torch.testing.assert_close(same_e, raw_e)
    odds = (got_e[..., 1] - got_e[..., 0]).exp()
    torch.testing.assert_close(odds * 10, (raw_e[..., 1] - raw_e[..., 0]).exp())
    for rare in (0, 2):  # rewards -1 and +1 against 0
        ratio = (got_r[..., rare] - got_r[..., 1]).exp() * 10
        torch.testing.assert_close(ratio, (raw_r[..., rare] - raw_r[..., 1]).exp())


def test_event_weight_weighs_rewards_and_ends_in_the_loss() -> None:
    """With weight w the cross-entropy of a reward or end step counts w times (DIAMOND: 1), so a
    batch whose only mistakes are on events has w times the loss; the mean is still over steps."""
    from diamond_env.models.rew_end import RewEndModel

    cfg = dataclasses.replace(get_preset("tiny").rew_end)
    gen = torch.Generator().manual_seed(0)
    obs = torch.rand(2, 3, 3, 64, 64, generator=gen) * 2 - 1
    act = torch.zeros(2, 3, dtype=torch.int64)
    rew = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, -1.0]])
    end = torch.tensor([[False, False, True], [False, False, False]])
    mask = torch.ones(2, 3, dtype=torch.bool)
    losses = {}
    for w in (1.0, 4.0):
        torch.manual_seed(0)
        model = RewEndModel(dataclasses.replace(cfg, event_weight=w), num_actions=4)
        model.set_constant_logits([0.0, 2.0, 0.0, 2.0, 0.0])  # sure of "no reward, continue"
        losses[w] = model.compute_loss(obs, act, obs, rew, end, mask)[1]
    ce = torch.nn.functional.cross_entropy
    common = float(ce(torch.tensor([[0.0, 2.0, 0.0]]), torch.tensor([1])))
    rare = float(ce(torch.tensor([[0.0, 2.0, 0.0]]), torch.tensor([0])))
    for w, got in losses.items():
        assert got["loss_rew"] == pytest.approx((4 * common + 2 * w * rare) / 6, rel=1e-5)
    with pytest.raises(ValueError, match="event_weight"):
        RewEndModel(dataclasses.replace(cfg, event_weight=0.0), num_actions=4)


def test_the_paper_preset_leaves_every_low_budget_aid_off() -> None:
    paper = get_preset("paper")
    assert not paper.denoiser.predict_change and paper.denoiser.sigma_offset_noise == 0.3
    assert not paper.rew_end.frame_difference and paper.loop.rew_end_event_fraction == 0.0
    assert paper.rew_end.event_weight == 1.0 and paper.rew_end.change_grid == 0
    assert paper.loop.denoiser_seq_len == 6 and paper.sampler.start == "unit"
    assert paper.denoiser.quantize == "floor" and paper.denoiser.change_weight == 0.0
    assert paper.sampler.min_change == 0
    cpu = get_preset("cpu")  # the measured CPU recipe (BENCHMARKS.md)
    assert cpu.denoiser.predict_change and cpu.loop.rew_end_event_fraction == 0.5
    assert cpu.denoiser_optim.lr == 1e-3 and cpu.loop.denoiser_seq_len == 6
    assert cpu.rew_end.change_grid == 16 and cpu.rew_end.frame_difference
    assert cpu.rew_end.event_weight == 10.0
    assert cpu.denoiser.quantize == "round" and cpu.sampler.min_change == 6
    assert cpu.denoiser.change_weight == get_preset("small").denoiser.change_weight == 5.0
    assert paper.loop.denoiser_reward_fraction == 0.0
    assert cpu.loop.denoiser_reward_fraction == get_preset("small").loop.denoiser_reward_fraction
    assert cpu.loop.denoiser_reward_fraction == 0.3 and cpu.loop.denoiser_reward_lead == 16
    assert {p.loop.denoiser_bounce_fraction for p in (paper, cpu, get_preset("small"))} == {0.0}
