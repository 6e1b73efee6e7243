"""Each fast path against the plain path: same shapes and dtypes, same numbers up to rounding."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

from diamond_env.atari import action_meanings
from diamond_env.config import IMG_SIZE, get_preset
from diamond_env.dream.simulator import DreamSimulator
from diamond_env.frames import to_model
from diamond_env.world_model.fastpath import (
    DEVICE_DEFAULTS,
    FastPathOptions,
    prepare_world_model,
    resolve_fastpath,
)
from diamond_env.world_model.model import ContextBank, WorldModel, WorldModelStep

LEVEL = 2.0 / 255.0
"""One uint8 level in model units ([-1, 1])."""


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _model(preset: str, device: str = "cpu") -> WorldModel:
    """A seeded random world model in which no layer is zero (the zero-initialised output convs
    would make the denoiser return ``c_skip * x`` whatever the path)."""
    config = get_preset(preset)
    meanings = action_meanings("Breakout")
    gen = torch.Generator().manual_seed(0)
    shape = (4, config.denoiser.num_context, IMG_SIZE, IMG_SIZE, 3)
    bank = ContextBank(
        obs=torch.randint(0, 256, shape, generator=gen, dtype=torch.uint8),
        act=torch.randint(0, len(meanings), shape[:2], generator=gen, dtype=torch.int64),
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = WorldModel(config, "Breakout", meanings, bank)
        for p in model.parameters():
            if p.ndim > 1 and not bool(p.any()):
                nn.init.normal_(p, std=0.05)
    return model.to(device).eval()


def _inputs(model: WorldModel, n: int = 2) -> tuple[torch.Tensor, ...]:
    """Context frames (n, L, 3, 64, 64), actions (n, L), a noisy frame and sigma (n,)."""
    dev = model.device
    obs = to_model(model.contexts.obs[:n]).to(dev)
    act = model.contexts.act[:n].to(dev)
    x = torch.randn(n, 3, IMG_SIZE, IMG_SIZE, generator=torch.Generator().manual_seed(1)).to(dev)
    return obs, act, x, torch.full((n,), 1.5, device=dev)


def _step(model: WorldModel, obs: torch.Tensor, act: torch.Tensor) -> WorldModelStep:
    return model.step(obs, act, None, generator=torch.Generator().manual_seed(2))


def _check_same_kind(fast: WorldModelStep, plain: WorldModelStep) -> None:
    for a, b in zip(
        (fast.next_obs, fast.reward, fast.termination, *fast.state),
        (plain.next_obs, plain.reward, plain.termination, *plain.state),
        strict=True,
    ):
        assert a.shape == b.shape and a.dtype == b.dtype and a.device == b.device


@pytest.mark.parametrize("preset", ["tiny", "cpu"])
def test_channels_last_matches_plain(preset: str) -> None:
    plain = _model(preset)
    fast = prepare_world_model(plain, FastPathOptions(channels_last=True))
    assert fast.denoiser.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert not fast.denoiser.conv_in.weight.is_contiguous()  # the layout really changed
    assert plain.denoiser.conv_in.weight.is_contiguous()  # and the original kept its own
    obs, act, x, sigma = _inputs(plain)
    with torch.no_grad():
        ref = plain.denoiser.denoise(x, sigma, obs, act)
        out = fast.denoiser.denoise(x, sigma, obs, act)
        skip = plain.denoiser.scalings(sigma).c_skip[:, None, None, None] * x
        assert (ref - skip).abs().max() > 0.1  # the network contributes: the check can fail
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
        logits_ref = plain.rew_end(obs[:, :-1], act[:, :-1], obs[:, 1:])
        logits = fast.rew_end(obs[:, :-1], act[:, :-1], obs[:, 1:])
        torch.testing.assert_close(logits, logits_ref, rtol=1e-4, atol=1e-5)
    a, b = _step(plain, obs, act), _step(fast, obs, act)
    _check_same_kind(b, a)
    diff = (a.next_obs - b.next_obs).abs()
    assert diff.max() <= LEVEL + 1e-6 and (diff > 0).float().mean() < 0.01  # rare rounding flips
    assert torch.equal(a.reward, b.reward) and torch.equal(a.termination, b.termination)


def test_bf16_autocast_close_to_plain_with_plain_dtypes() -> None:
    plain = _model("tiny")
    fast = prepare_world_model(plain, FastPathOptions(autocast_dtype=torch.bfloat16))
    obs, act, x, sigma = _inputs(plain)
    with torch.no_grad():
        ref = plain.denoiser.denoise(x, sigma, obs, act)
        out = fast.denoiser.denoise(x, sigma, obs, act)
        assert out.dtype == torch.float32 and out.shape == ref.shape
        assert not torch.equal(out, ref)  # bf16 really ran
        diff = (out - ref).abs()
        assert diff.max() < 0.05 and diff.mean() < 0.005
        rew, end, (h, c) = fast.rew_end(obs[:, :-1], act[:, :-1], obs[:, 1:])
        rew_ref, end_ref, (h_ref, _) = plain.rew_end(obs[:, :-1], act[:, :-1], obs[:, 1:])
        assert {t.dtype for t in (rew, end, h, c)} == {torch.float32}
        torch.testing.assert_close(rew, rew_ref, rtol=0.0, atol=0.05)
        torch.testing.assert_close(h, h_ref, rtol=0.0, atol=0.05)
    a, b = _step(plain, obs, act), _step(fast, obs, act)
    _check_same_kind(b, a)
    diff = (a.next_obs - b.next_obs).abs()
    assert diff.max() <= 8 * LEVEL and diff.mean() < LEVEL


@pytest.mark.parametrize(("preset", "n"), [("tiny", 1), ("tiny", 3), ("cpu", 1)])
def test_fuse_matches_plain(preset: str, n: int) -> None:
    """The fused norms (batch 1: the norm's own affine; more: one addcmul), the one-product
    conditioning and the one-cell LSTM step compute what the plain modules do."""
    plain = _model(preset)
    fast = prepare_world_model(plain, FastPathOptions(fuse=True))
    obs, act, x, sigma = _inputs(plain, n)
    state = (torch.randn(n, 128 if preset == "cpu" else plain.config.rew_end.lstm_dim),) * 2
    with torch.no_grad():
        ref = plain.denoiser.denoise(x, sigma, obs, act)
        skip = plain.denoiser.scalings(sigma).c_skip[:, None, None, None] * x
        assert (ref - skip).abs().max() > 0.1  # the network contributes: the check can fail
        torch.testing.assert_close(
            fast.denoiser.denoise(x, sigma, obs, act), ref, rtol=1e-4, atol=1e-5
        )
        for hx in (None, state):  # one step: the fused cell, from zeros and from a state
            args = (obs[:, -1:], act[:, -1:], obs[:, -1:], hx)
            torch.testing.assert_close(
                fast.rew_end(*args), plain.rew_end(*args), rtol=1e-4, atol=1e-5
            )
        seq = (obs[:, :-1], act[:, :-1], obs[:, 1:])  # a sequence: torch's LSTM, as it is
        torch.testing.assert_close(fast.rew_end(*seq), plain.rew_end(*seq), rtol=1e-4, atol=1e-5)
    a, b = _step(plain, obs, act), _step(fast, obs, act)
    _check_same_kind(b, a)
    diff = (a.next_obs - b.next_obs).abs()
    assert diff.max() <= LEVEL + 1e-6 and (diff > 0).float().mean() < 0.01
    assert torch.equal(a.reward, b.reward) and torch.equal(a.termination, b.termination)
    torch.testing.assert_close(b.state, a.state, rtol=1e-4, atol=1e-5)


def test_fuse_follows_weight_changes_and_leaves_gradients_to_the_plain_modules() -> None:
    plain = _model("tiny")
    fast = prepare_world_model(plain, FastPathOptions(fuse=True))
    obs, act, x, sigma = _inputs(plain, 1)
    norm = fast.denoiser.unet.mid[0].norm1
    with torch.no_grad():
        before = fast.denoiser.denoise(x, sigma, obs, act)
        norm.linear.bias.add_(2.0)  # the stacked conditioning weights must be rebuilt
        plain.denoiser.unet.mid[0].norm1.linear.bias.add_(2.0)
        after = fast.denoiser.denoise(x, sigma, obs, act)
        assert (after - before).abs().max() > 1e-4  # beyond the tolerance below
        ref = plain.denoiser.denoise(x, sigma, obs, act)
        torch.testing.assert_close(after, ref, rtol=1e-4, atol=1e-5)
    # with gradients on, every module runs its own forward: the same numbers bit for bit
    out = fast.denoiser.denoise(x, sigma, obs, act)
    out.sum().backward()
    assert norm.linear.weight.grad is not None
    assert torch.equal(out.detach(), plain.denoiser.denoise(x, sigma, obs, act).detach())
    logits, _, _ = fast.rew_end(obs[:, -1:], act[:, -1:], obs[:, -1:])
    assert logits.requires_grad
    assert torch.equal(logits, plain.rew_end(obs[:, -1:], act[:, -1:], obs[:, -1:])[0])
    assert plain.denoiser.unet.mid[0].norm1.forward.__func__ is type(norm).forward  # type: ignore[attr-defined]


def test_inference_mode_step_is_identical_and_returns_normal_tensors() -> None:
    plain = _model("tiny")
    fast = prepare_world_model(plain, FastPathOptions(inference_mode=True))
    obs, act, _, _ = _inputs(plain)
    a, b = _step(plain, obs, act), _step(fast, obs, act)
    _check_same_kind(b, a)
    for x, y in zip(
        (a.next_obs, a.reward, a.termination, *a.state),
        (b.next_obs, b.reward, b.termination, *b.state),
        strict=True,
    ):
        assert torch.equal(x, y) and not y.is_inference()


def test_simulator_over_a_prepared_model_repeats_the_plain_rollout() -> None:
    """Steps with horizon 2: envs that end are restarted by writing into the buffers in place,
    which fails if a step leaked inference tensors into them."""
    plain = _model("tiny")
    fast = prepare_world_model(plain, FastPathOptions(inference_mode=True))
    sims = [DreamSimulator(m, 3, horizon=2, seed=5) for m in (plain, fast)]
    for sim in sims:
        sim.reset()
    ended = []
    for t in range(4):
        actions = torch.tensor([t % 4, 1, 2])
        a, b = (sim.step(actions) for sim in sims)
        assert torch.equal(a.obs, b.obs) and torch.equal(a.final_obs, b.final_obs)
        assert torch.equal(a.reward, b.reward) and torch.equal(a.terminated, b.terminated)
        assert torch.equal(a.truncated, b.truncated)
        ended.append(int((a.terminated | a.truncated).sum()))
    assert any(0 < k < 3 for k in ended)  # a partial restart (the in-place path) happened


_IMPORTS_OF_PREPARE = """
import sys
import torch
from diamond_env.config import get_preset
from diamond_env.world_model.fastpath import FastPathOptions, prepare_world_model
from diamond_env.world_model.model import WorldModel
wm = WorldModel(get_preset("tiny"), "Breakout", ["NOOP", "FIRE", "RIGHT", "LEFT"])
before = set(sys.modules)
prepare_world_model(wm, FastPathOptions(channels_last=True))
print(sorted(m for m in set(sys.modules) - before if m.startswith("torch.")))
"""


def test_prepare_loads_no_meta_device_machinery() -> None:
    """Building the fast copy on the meta device imported torch's decompositions in every new
    process (1.3-5 s per subprocess worker on this box); it is built directly now."""
    proc = subprocess.run(
        [sys.executable, "-c", _IMPORTS_OF_PREPARE],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "[]"


def test_prepare_copies_and_keeps_the_checkpoint_format(tmp_path: Path) -> None:
    plain = _model("tiny")
    before = {k: v.clone() for k, v in plain.state_dict().items()}
    rng = torch.get_rng_state()
    fast = prepare_world_model(plain, FastPathOptions(channels_last=True, inference_mode=True))
    assert torch.equal(torch.get_rng_state(), rng)  # the global RNG is left as it was
    assert isinstance(fast, WorldModel) and fast is not plain and not fast.training
    assert list(fast.state_dict()) == list(before)
    for key, value in fast.state_dict().items():
        assert torch.equal(value, before[key]) and torch.equal(plain.state_dict()[key], value)
        assert value.data_ptr() != plain.state_dict()[key].data_ptr()  # a copy, not shared
    loaded = WorldModel.load(fast.save(tmp_path / "wm"))
    assert type(loaded) is WorldModel
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, before[key])


def test_options_from_names() -> None:
    opts = FastPathOptions.from_names({"bf16": True, "channels_last": True, "compile": False})
    assert opts == FastPathOptions(channels_last=True, autocast_dtype=torch.bfloat16)
    assert sorted(opts.names()) == ["bf16", "channels_last"]
    assert FastPathOptions.from_names(opts.names()) == opts
    assert FastPathOptions.from_names("inference_mode").inference_mode
    with pytest.raises(ValueError, match="warp_drive"):
        FastPathOptions.from_names(["warp_drive"])
    with pytest.raises(ValueError, match="bf16/fp16"):
        FastPathOptions.from_names(["bf16", "fp16"])


def test_prepare_rejects_cuda_only_options_on_cpu() -> None:
    plain = _model("tiny")
    with pytest.raises(ValueError, match="cuda_graphs"):
        prepare_world_model(plain, FastPathOptions(cuda_graphs=True))
    with pytest.raises(ValueError, match="float16"):
        prepare_world_model(plain, FastPathOptions(autocast_dtype=torch.float16))
    with pytest.raises(ValueError, match="autocast_dtype"):
        prepare_world_model(plain, FastPathOptions(autocast_dtype=torch.float64))


@pytest.mark.slow
def test_compiled_denoiser_matches_plain() -> None:
    plain = _model("tiny")
    fast = prepare_world_model(plain, FastPathOptions(compile=True))
    obs, act, x, sigma = _inputs(plain)
    with torch.no_grad():
        ref = plain.denoiser.denoise(x, sigma, obs, act)
        torch.testing.assert_close(
            fast.denoiser.denoise(x, sigma, obs, act), ref, atol=1e-4, rtol=1e-4
        )
    a, b = _step(plain, obs, act), _step(fast, obs, act)
    _check_same_kind(b, a)
    assert (a.next_obs - b.next_obs).abs().max() <= LEVEL + 1e-6


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_graphs_repeat_the_plain_rollout() -> None:
    plain = _model("tiny", "cuda")
    fast = prepare_world_model(plain, FastPathOptions(cuda_graphs=True))
    sims = [DreamSimulator(m, 4, horizon=3, seed=5) for m in (plain, fast)]
    for sim in sims:
        sim.reset()
    for t in range(4):
        actions = torch.tensor([t % 4, 1, 2, 3])
        a, b = (sim.step(actions) for sim in sims)
        assert (a.obs - b.obs).abs().max() <= LEVEL + 1e-6
        assert torch.equal(a.reward, b.reward) and torch.equal(a.truncated, b.truncated)
    assert len(fast.denoiser.denoise.graphs) == 1  # type: ignore[attr-defined]  # one shape, one capture


def test_resolve_fastpath_auto_plain_and_names() -> None:
    import diamond_env.world_model.fastpath as fastpath

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(fastpath, "cpu_has_amx_bf16", lambda: False)
        cpu = ["channels_last", "fuse"]
        assert resolve_fastpath("auto", "cpu") == list(DEVICE_DEFAULTS["cpu"]) == cpu
        mp.setattr(fastpath, "cpu_has_amx_bf16", lambda: True)  # bf16 on AMX tiles
        assert resolve_fastpath("auto", "cpu") == ["channels_last", "bf16", "fuse"]
        assert resolve_fastpath("auto", "cpu", num_envs=2) == ["channels_last", "bf16", "fuse"]
        assert resolve_fastpath("auto", "cpu", num_envs=1) == cpu  # bf16 slower there
    assert resolve_fastpath("auto", torch.device("meta")) == []  # not measured: the plain path
    assert resolve_fastpath("auto", "cuda:0") == ["cuda_graphs"]  # resolving needs no GPU
    for plain in (None, "", "plain", []):
        assert resolve_fastpath(plain, "cpu") == []
    assert resolve_fastpath("channels_last, bf16", "cpu") == ["channels_last", "bf16"]
    assert resolve_fastpath(["inference_mode"], "cpu") == ["inference_mode"]
    with pytest.raises(ValueError, match="stand alone"):
        resolve_fastpath(["auto", "bf16"], "cpu")
    with pytest.raises(ValueError, match="unknown"):
        resolve_fastpath("warp", "cpu")
    with pytest.raises(ValueError, match="at most one"):
        resolve_fastpath("bf16,fp16", "cpu")


def test_auto_prepares_a_loaded_model_and_leaves_a_given_one(tmp_path: Path) -> None:
    from diamond_env.dream.simulator import make_simulator

    model = _model("tiny")
    model.save(tmp_path / "wm")
    auto = make_simulator("Breakout", 2, checkpoint=tmp_path / "wm")
    assert auto.world_model.fastpath == FastPathOptions.from_names(
        resolve_fastpath("auto", "cpu", num_envs=2)
    )
    assert auto.world_model.fastpath.channels_last  # on every CPU; bf16 too where AMX has it
    plain = make_simulator("Breakout", 2, checkpoint=tmp_path / "wm", fastpath="plain")
    assert plain.world_model.fastpath is None
    given = make_simulator("Breakout", 2, world_model=model)
    assert given.world_model is model  # the caller's model: its later training reaches the dream
    chosen = make_simulator("Breakout", 2, world_model=model, fastpath=["inference_mode"])
    assert chosen.world_model.fastpath == FastPathOptions(inference_mode=True)


def test_a_prepared_copy_keeps_the_callers_sampler_settings() -> None:
    """``eval-wm --num-denoising-steps N --fastpath ...`` sets the sampler, then prepares: the
    copy must dream with N steps, not fall back to the checkpoint's."""
    import dataclasses

    plain = _model("tiny")
    plain.sampler_config = dataclasses.replace(plain.sampler_config, num_steps=1)
    fast = prepare_world_model(plain, FastPathOptions(channels_last=True))
    assert fast.sampler_config.num_steps == 1 != plain.config.sampler.num_steps
    assert fast.fastpath == FastPathOptions(channels_last=True) and plain.fastpath is None
    assert type(fast) is WorldModel and list(fast.state_dict()) == list(plain.state_dict())
