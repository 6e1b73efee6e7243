"""Reading DIAMOND's own checkpoints: its state-dict layout mapped onto our modules.

DIAMOND (github eloialonso/diamond) saves one ``Agent`` state dict per run whose keys start with
``denoiser.``, ``rew_end_model.`` and ``actor_critic.``; its published Atari 100k models
(``atari_100k/models/<Game>.pt``) are such files. The networks compute the same functions as
ours (tests/test_diamond_parity.py checks it against outputs of DIAMOND's code); only module
names and two buffer shapes differ. This module infers our configs from the tensor shapes and
renames the keys; it never unpickles code (``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import io
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from diamond_env.config import IMG_SIZE, ActorCriticConfig, DenoiserConfig, RewEndConfig
from diamond_env.run.safe_io import WEIGHTS_MAX_BYTES, InputError, read_regular

PREFIXES = ("denoiser.", "rew_end_model.", "actor_critic.")


@dataclass(frozen=True)
class DiamondCheckpoint:
    """A DIAMOND agent state dict converted to our three modules' state dicts and configs."""

    num_actions: int
    denoiser_config: DenoiserConfig
    rew_end_config: RewEndConfig
    actor_critic_config: ActorCriticConfig
    denoiser: dict[str, torch.Tensor]
    rew_end: dict[str, torch.Tensor]
    actor_critic: dict[str, torch.Tensor]


def read_diamond_checkpoint(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The tensors of a DIAMOND ``.pt`` file, read with ``weights_only=True`` (no code runs).

    Raises ``FileNotFoundError`` or ``ValueError`` naming what was expected.
    """
    file = Path(path)
    if not file.exists():
        raise FileNotFoundError(f"DIAMOND checkpoint not found: {file}")
    data = read_regular(file, WEIGHTS_MAX_BYTES)
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a file that is not a state dict
        raise ValueError(
            f"{file}: not a DIAMOND agent state dict readable with torch.load(weights_only=True) "
            f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
        ) from err
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise ValueError(
            f"{file}: expected a DIAMOND agent state dict (tensor values under keys starting with "
            f"{', '.join(PREFIXES)}), got {type(state).__name__}"
        )
    for key, value in state.items():
        _check_tensor(value, f"{file}: {key}")
    return state


FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _check_tensor(value: torch.Tensor, where: str) -> None:
    """A weight of a DIAMOND file: a dense floating-point tensor whose storage holds every
    element it declares (a crafted file can declare a huge shape over a tiny storage with zero
    strides, which would size networks before anything else looks), all finite."""
    if value.dtype not in FLOAT_DTYPES or value.layout != torch.strided:
        raise InputError(f"{where}: a {value.dtype} tensor, expected floating-point weights")
    needed = value.numel() * value.element_size()
    if not value.is_contiguous() or value.untyped_storage().nbytes() < needed:
        raise InputError(
            f"{where}: shape {tuple(value.shape)} is not backed by its data (strided or "
            "truncated); not a saved state dict"
        )
    if not bool(torch.isfinite(value).all()):
        raise InputError(f"{where}: holds NaN or infinite values")


def convert(state: dict[str, torch.Tensor], where: str = "checkpoint") -> DiamondCheckpoint:
    """Convert a DIAMOND agent state dict; ``ValueError`` names any missing or unexpected key and
    any shape that fits no config."""
    parts: dict[str, dict[str, torch.Tensor]] = {p: {} for p in PREFIXES}
    strays = []
    for key, value in state.items():
        prefix = next((p for p in PREFIXES if key.startswith(p)), None)
        if prefix is None:
            strays.append(key)
        else:
            parts[prefix][key[len(prefix) :]] = value.detach().float()
    missing = [p.rstrip(".") for p in PREFIXES if not parts[p]]
    if strays or missing:
        raise ValueError(
            f"{where}: not a DIAMOND agent state dict: expected keys under "
            f"{', '.join(PREFIXES)}; missing modules {missing}, unexpected keys {strays[:5]}"
        )
    den_cfg, num_actions, den = _denoiser(parts["denoiser."], where)
    re_cfg, re_actions, rew_end = _rew_end(parts["rew_end_model."], where)
    ac_cfg, ac_actions, ac = _actor_critic(parts["actor_critic."], where)
    if not num_actions == re_actions == ac_actions:
        raise ValueError(
            f"{where}: action counts disagree: denoiser {num_actions}, reward/end model "
            f"{re_actions}, actor-critic {ac_actions}"
        )
    return DiamondCheckpoint(num_actions, den_cfg, re_cfg, ac_cfg, den, rew_end, ac)


def _get(sd: dict[str, torch.Tensor], key: str, where: str) -> torch.Tensor:
    if key not in sd:
        raise ValueError(f"{where}: missing key {key!r}")
    return sd[key]


def _count(sd: dict[str, torch.Tensor], pattern: str) -> int:
    """Number of distinct integers ``i`` with some key matching ``pattern.format(i=...)``."""
    regex = re.compile(pattern.replace(".", r"\.").replace("{i}", r"(\d+)"))
    found = {int(m.group(1)) for k in sd if (m := regex.match(k))}
    return max(found) + 1 if found else 0


def _resblock_keys(src: str, dst: str) -> list[tuple[str, str]]:
    """Key renames inside one residual block (DIAMOND name -> ours)."""
    pairs = [
        ("proj", "proj"),
        ("norm1.linear", "norm1.linear"),
        ("conv1", "conv1"),
        ("norm2.linear", "norm2.linear"),
        ("conv2", "conv2"),
        ("attn.norm.norm", "attn.norm"),
        ("attn.qkv_proj", "attn.qkv"),
        ("attn.out_proj", "attn.out"),
    ]
    return [(f"{src}.{a}.{p}", f"{dst}.{b}.{p}") for a, b in pairs for p in ("weight", "bias")]


def _rename(
    sd: dict[str, torch.Tensor], pairs: list[tuple[str, str]], where: str
) -> dict[str, torch.Tensor]:
    """Apply renames; every key of ``sd`` must be consumed (else ``ValueError``)."""
    out, used = {}, set()
    for src, dst in pairs:
        if src in sd:
            out[dst] = sd[src]
            used.add(src)
    extra = sorted(set(sd) - used)
    if extra:
        raise ValueError(f"{where}: unexpected keys {extra[:5]} ({len(extra)})")
    return out


def _levels(
    sd: dict[str, torch.Tensor], block: str, where: str
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[bool, ...]]:
    """Channels, depths and attention flags of the levels ``block.format(i=level)``."""
    num_levels = _count(sd, block + ".resblocks.0.conv1.weight")
    if num_levels < 1:
        raise ValueError(f"{where}: no residual blocks found under {block.format(i='*')}")
    channels, depths, attn = [], [], []
    for i in range(num_levels):
        prefix = block.format(i=i)
        depth = _count(sd, prefix + ".resblocks.{i}.conv1.weight")
        channels.append(int(_get(sd, f"{prefix}.resblocks.0.conv1.weight", where).shape[0]))
        depths.append(depth)
        attn.append(f"{prefix}.resblocks.0.attn.qkv_proj.weight" in sd)
    return tuple(channels), tuple(depths), tuple(attn)


def _denoiser(
    sd: dict[str, torch.Tensor], where: str
) -> tuple[DenoiserConfig, int, dict[str, torch.Tensor]]:
    where = f"{where}: denoiser"
    inner = {k.removeprefix("inner_model."): v for k, v in sd.items()}
    if len(inner) != len(sd) or any(not k.startswith("inner_model.") for k in sd):
        raise ValueError(f"{where}: expected every key under 'denoiser.inner_model.'")
    channels, depths, attn = _levels(inner, "unet.d_blocks.{i}", where)
    act_emb = _get(inner, "act_emb.0.weight", where)
    cond = int(_get(inner, "cond_proj.0.weight", where).shape[0])
    num_actions, emb_dim = (int(n) for n in act_emb.shape)
    img_channels = int(_get(inner, "conv_out.weight", where).shape[0])
    conv_in = _get(inner, "conv_in.weight", where)
    if emb_dim < 1 or cond % emb_dim != 0:
        raise ValueError(f"{where}: action embedding width {emb_dim} does not divide cond {cond}")
    config = DenoiserConfig(
        channels=channels,
        depths=depths,
        attn_depths=attn,
        cond_channels=cond,
        action_emb_dim=emb_dim,
        num_context=cond // emb_dim,
        img_channels=img_channels,
    )
    if conv_in.shape[1] != (config.num_context + 1) * img_channels:
        raise ValueError(
            f"{where}: conv_in takes {conv_in.shape[1]} channels, expected "
            f"({config.num_context} + 1) x {img_channels}"
        )
    n = len(channels)
    pairs = [("act_emb.0.weight", "act_emb.weight")]
    pairs += [
        (f"{m}.{p}", f"{m}.{p}")
        for m in ("cond_proj.0", "cond_proj.2", "conv_in", "conv_out")
        for p in ("weight", "bias")
    ]
    pairs += [(f"norm_out.norm.{p}", f"norm_out.{p}") for p in ("weight", "bias")]
    for i in range(n):
        for j in range(depths[i]):
            pairs += _resblock_keys(f"unet.d_blocks.{i}.resblocks.{j}", f"unet.down.{i}.{j}")
        for j in range(depths[n - 1 - i] + 1):
            pairs += _resblock_keys(f"unet.u_blocks.{i}.resblocks.{j}", f"unet.up.{i}.{j}")
        if i > 0:
            for p in ("weight", "bias"):
                pairs.append(
                    (f"unet.downsamples.{i}.conv.{p}", f"unet.downsamples.{i - 1}.conv.{p}")
                )
                pairs.append((f"unet.upsamples.{i}.conv.{p}", f"unet.upsamples.{i - 1}.conv.{p}"))
    for j in range(2):
        pairs += _resblock_keys(f"unet.mid_blocks.resblocks.{j}", f"unet.mid.{j}")
    freqs = _get(inner, "noise_emb.weight", where)
    rest = {k: v for k, v in inner.items() if k != "noise_emb.weight"}
    out = _rename(rest, pairs, where)
    out["noise_emb.freqs"] = freqs.reshape(-1)
    return config, num_actions, out


def _rew_end(
    sd: dict[str, torch.Tensor], where: str
) -> tuple[RewEndConfig, int, dict[str, torch.Tensor]]:
    where = f"{where}: rew_end_model"
    num_blocks = _count(sd, "encoder.blocks.{i}.resblocks.0.conv1.weight")
    if num_blocks < 2:
        raise ValueError(f"{where}: expected encoder levels and a middle block, found {num_blocks}")
    channels, depths, attn = _levels(sd, "encoder.blocks.{i}", where)
    n = num_blocks - 1  # the last block list is the middle pair
    channels, depths, attn = channels[:n], depths[:n], attn[:n]
    num_actions, cond = (int(s) for s in _get(sd, "act_emb.weight", where).shape)
    lstm_dim = int(_get(sd, "lstm.weight_hh_l0", where).shape[1])
    img_channels = int(_get(sd, "encoder.conv_in.weight", where).shape[1]) // 2
    config = RewEndConfig(
        channels=channels,
        depths=depths,
        attn_depths=attn,
        cond_channels=cond,
        lstm_dim=lstm_dim,
        img_channels=img_channels,
    )
    side = IMG_SIZE // 2 ** (n - 1)
    lstm_in = int(_get(sd, "lstm.weight_ih_l0", where).shape[1])
    if lstm_in != channels[-1] * side * side:
        raise ValueError(
            f"{where}: the LSTM takes {lstm_in} inputs, expected {channels[-1]} x {side} x {side} "
            f"for {IMG_SIZE}x{IMG_SIZE} frames"
        )
    pairs = [("act_emb.weight", "act_emb.weight")]
    pairs += [
        (f"{m}.{p}", f"{m}.{p}") for m in ("encoder.conv_in", "head.0") for p in ("weight", "bias")
    ]
    pairs.append(("head.2.weight", "head.2.weight"))
    pairs += [
        (f"lstm.{w}_{k}_l0", f"lstm.{w}_{k}_l0") for w in ("weight", "bias") for k in ("ih", "hh")
    ]
    for i in range(n):
        for j in range(depths[i]):
            pairs += _resblock_keys(f"encoder.blocks.{i}.resblocks.{j}", f"encoder.levels.{i}.{j}")
        if i > 0:
            for p in ("weight", "bias"):
                pairs.append(
                    (f"encoder.downsamples.{i}.conv.{p}", f"encoder.downsamples.{i - 1}.conv.{p}")
                )
    for j in range(2):
        pairs += _resblock_keys(f"encoder.blocks.{n}.resblocks.{j}", f"encoder.mid.{j}")
    return config, num_actions, _rename(sd, pairs, where)


def _actor_critic(
    sd: dict[str, torch.Tensor], where: str
) -> tuple[ActorCriticConfig, int, dict[str, torch.Tensor]]:
    where = f"{where}: actor_critic"
    layers = _count(sd, "encoder.encoder.{i}.")
    blocks = [k for k in range(1, layers) if f"encoder.encoder.{k}.f.2.weight" in sd]
    if not blocks or blocks != list(range(1, 2 * len(blocks), 2)):
        raise ValueError(
            f"{where}: expected a conv then (residual block, 2x2 max-pool) per stage, found "
            f"blocks at layers {blocks}"
        )
    channels = tuple(int(sd[f"encoder.encoder.{k}.f.2.weight"].shape[0]) for k in blocks)
    lstm_dim = int(_get(sd, "lstm.weight_hh", where).shape[1])
    num_actions = int(_get(sd, "actor_linear.weight", where).shape[0])
    img_channels = int(_get(sd, "encoder.encoder.0.weight", where).shape[1])
    config = ActorCriticConfig(channels=channels, lstm_dim=lstm_dim, img_channels=img_channels)
    side = IMG_SIZE // 2 ** len(channels)
    lstm_in = int(_get(sd, "lstm.weight_ih", where).shape[1])
    if lstm_in != channels[-1] * side * side:
        raise ValueError(
            f"{where}: the LSTM takes {lstm_in} inputs, expected {channels[-1]} x {side} x {side} "
            "(every stage must halve the frame)"
        )
    pairs = [(f"encoder.encoder.0.{p}", f"encoder.0.{p}") for p in ("weight", "bias")]
    for k in blocks:
        for p in ("weight", "bias"):
            pairs += [
                (f"encoder.encoder.{k}.f.0.norm.{p}", f"encoder.{k}.norm.{p}"),
                (f"encoder.encoder.{k}.f.2.{p}", f"encoder.{k}.conv.{p}"),
                (f"encoder.encoder.{k}.skip_projection.{p}", f"encoder.{k}.skip.{p}"),
            ]
    for p in ("weight", "bias"):
        pairs += [
            (f"actor_linear.{p}", f"policy_head.{p}"),
            (f"critic_linear.{p}", f"value_head.{p}"),
        ]
    pairs += [(f"lstm.{w}_{k}", f"lstm.{w}_{k}") for w in ("weight", "bias") for k in ("ih", "hh")]
    return config, num_actions, _rename(sd, pairs, where)


def load_into(module: torch.nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    """``module.load_state_dict(state, strict=True)`` with a ``ValueError`` naming ``where`` and
    the first mismatching keys or shapes instead of PyTorch's ``RuntimeError``."""
    expected = module.state_dict()
    missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    wrong = [
        f"{k}: {tuple(state[k].shape)} instead of {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or extra or wrong:
        raise ValueError(
            f"{where}: the tensors fit no {type(module).__name__} config: missing {missing[:3]}, "
            f"unexpected {extra[:3]}, shapes {wrong[:3]}"
        )
    module.load_state_dict(state, strict=True)
