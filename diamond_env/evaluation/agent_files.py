"""Stable-baselines3 agents stored without pickle: the policy's weights as safetensors and what is
needed to rebuild it as JSON.

SB3's own ``model.zip`` is loaded by ``BaseAlgorithm.load``, which unpickles parts of the file:
a crafted zip runs arbitrary code when read. An agent directory written by
:func:`save_sb3_agent` holds ``sb3_policy.safetensors`` (the ``model.policy`` state dict) and
``agent.json`` (``kind``, ``algo``, ``policy``, the JSON-able ``policy_kwargs``, the observation
and action spaces, the weights' sha256), and :func:`load_sb3_policy` rebuilds the policy from
its class and those spaces without reading any pickle. ``model.zip`` is written beside it for
users who load it with SB3 themselves; diamond_env reads a zip only when told to trust it.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file

from diamond_env.run.checkpoint import atomic_write, atomic_write_json, file_sha256, read_tensors
from diamond_env.run.safe_io import (
    MAX_WIDTH,
    InputError,
    check_int,
    check_weights,
    confined,
    on_meta,
)

__all__ = ["SB3_POLICY_FILE", "load_sb3_policy", "save_sb3_agent", "sb3_algorithms"]

SB3_POLICY_FILE = "sb3_policy.safetensors"
AGENT_FILE = "agent.json"
FORMAT_NAME = "diamond_env.sb3_policy"
FORMAT_VERSION = 1
_OPTIMIZER_KEYS = ("optimizer_class", "optimizer_kwargs")


def sb3_algorithms() -> dict[str, Any]:
    """Lower-case name -> SB3 algorithm class, from stable_baselines3 and sb3_contrib if present."""
    import importlib

    known: dict[str, Any] = {}
    for module_name in ("stable_baselines3", "sb3_contrib"):
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        for name in module.__all__:
            obj = getattr(module, name)
            if isinstance(obj, type) and hasattr(obj, "policy_aliases"):
                known[name.lower()] = obj
    return known


def _space_to_json(space: Any) -> dict[str, Any]:
    from gymnasium import spaces

    if isinstance(space, spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n), "start": int(space.start)}
    if isinstance(space, spaces.Box):
        low, high = np.unique(space.low), np.unique(space.high)
        if len(low) != 1 or len(high) != 1:
            raise ValueError(f"observation space: expected uniform bounds, got {space}")
        return {
            "type": "Box",
            "shape": list(space.shape),
            "dtype": str(space.dtype),
            "low": low[0].item(),
            "high": high[0].item(),
        }
    raise ValueError(f"space: expected Box or Discrete, got {space}")


def _space_from_json(data: Any, where: str) -> Any:
    from gymnasium import spaces

    if not isinstance(data, dict):
        raise InputError(f"{where}: expected a space object, got {type(data).__name__}")
    if data.get("type") == "Discrete":
        check_int(data.get("n"), f"{where}: n", 1, MAX_WIDTH)
    shape = data.get("shape")
    if data.get("type") == "Box":
        if not isinstance(shape, list) or not 1 <= len(shape) <= 4:
            raise InputError(f"{where}: shape: expected 1 to 4 sizes, got {shape!r}")
        for size in shape:
            check_int(size, f"{where}: shape", 1, 4096)
        if math.prod(shape) > 1 << 22:
            raise InputError(
                f"{where}: shape {shape}: more than {1 << 22:,} values per observation"
            )
    try:
        if data["type"] == "Discrete":
            return spaces.Discrete(int(data["n"]), start=int(data.get("start", 0)))
        if data["type"] == "Box":
            return spaces.Box(
                low=data["low"],
                high=data["high"],
                shape=tuple(int(s) for s in data["shape"]),
                dtype=np.dtype(data["dtype"]),
            )
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{where}: malformed space {data!r} ({err})") from err
    raise ValueError(f"{where}: expected a Box or Discrete space, got {data!r}")


def _split_shared(
    state: dict[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors stored once each (safetensors refuses two names for one memory, as an actor-critic
    policy whose features extractor is shared has), and ``{other name: stored name}``."""
    tensors: dict[str, torch.Tensor] = {}
    shared: dict[str, str] = {}
    first: dict[tuple[Any, ...], str] = {}
    for name, value in state.items():
        key = (
            value.untyped_storage().data_ptr(),
            value.storage_offset(),
            tuple(value.shape),
            value.stride(),
            value.dtype,
        )
        if key in first:
            shared[name] = first[key]
        else:
            first[key] = name
            tensors[name] = value.detach().cpu().contiguous()
    return tensors, shared


def _save_zip(model: Any, path: Path) -> None:
    with path.open("wb") as f:  # a file object: SB3 would append ".zip" to a path's name
        model.save(f)


def save_sb3_agent(model: Any, directory: str | os.PathLike[str], meta: dict[str, Any]) -> Path:
    """Write ``model``'s policy to ``directory`` as ``sb3_policy.safetensors`` + ``agent.json``
    (``meta`` merged in: ``game``, ``n_stack``, ``deterministic``, ...), plus SB3's own
    ``model.zip``. Each file is replaced atomically. ``model`` is an SB3 algorithm trained with a
    registered policy name (``"CnnPolicy"``, ...) and JSON-able ``policy_kwargs``.
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    algo = type(model).__name__
    aliases = {cls: name for name, cls in type(model).policy_aliases.items()}
    policy_name = aliases.get(type(model.policy))
    if policy_name is None:
        raise ValueError(f"{algo} policy {type(model.policy).__name__}: not a registered alias")
    # the optimiser (A2C's RMSprop, ...) plays no part in acting and is not stored
    kwargs = {k: v for k, v in (model.policy_kwargs or {}).items() if k not in _OPTIMIZER_KEYS}
    try:
        json.dumps(kwargs)
    except TypeError as err:
        raise ValueError(f"policy_kwargs: expected JSON values only, got {kwargs!r}") from err
    tensors, shared = _split_shared(model.policy.state_dict())
    atomic_write(out / SB3_POLICY_FILE, lambda p: save_file(tensors, str(p)))
    atomic_write(out / "model.zip", lambda p: _save_zip(model, p))
    info = {
        **meta,
        "kind": "sb3",
        "algo": algo.lower(),
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "policy": policy_name,
        "policy_kwargs": kwargs,
        "observation_space": _space_to_json(model.observation_space),
        "action_space": _space_to_json(model.action_space),
        "num_timesteps": int(model.num_timesteps),
        "weights": SB3_POLICY_FILE,
        "shared": shared,
        "sha256": file_sha256(out / SB3_POLICY_FILE),
    }
    atomic_write_json(out / AGENT_FILE, info)
    return out


MAX_KWARG_INT = 8192
"""The largest integer accepted in stored ``policy_kwargs`` (layer widths, feature sizes): SB3's
defaults are 64 to 512."""


def _check_kwarg_sizes(value: Any, where: str, depth: int = 0) -> None:
    """Every integer in ``policy_kwargs`` at most :data:`MAX_KWARG_INT`, lists at most 64 long:
    a crafted ``net_arch`` would otherwise size layers of gigabytes before any other check."""
    if isinstance(value, bool) or value is None or isinstance(value, (str, float)):
        return
    if isinstance(value, int):
        if not -MAX_KWARG_INT <= value <= MAX_KWARG_INT:
            raise InputError(f"{where}: {value} is larger than the {MAX_KWARG_INT} allowed")
        return
    items = list(value.values()) if isinstance(value, dict) else value
    if not isinstance(items, list) or len(items) > 64 or depth > 8:
        raise InputError(f"{where}: expected a small JSON object of sizes, got {str(value)[:80]}")
    for item in items:
        _check_kwarg_sizes(item, where, depth + 1)


def _check_policy_weights(
    expected: dict[str, torch.Tensor], tensors: dict[str, torch.Tensor], weights: Path
) -> None:
    bad = sorted(set(expected) ^ set(tensors)) or sorted(
        k for k in expected if expected[k].shape != tensors[k].shape
    )
    if bad:
        raise ValueError(f"{weights}: weights do not match agent.json's policy: {bad[:5]}")
    check_weights(expected, tensors, str(weights))


def load_sb3_policy(root: Path, meta: dict[str, Any], device: str | torch.device) -> Any:
    """The SB3 policy (``model.policy`` at save time) of an agent directory written by
    :func:`save_sb3_agent`, rebuilt from its class, spaces and keyword arguments, its weights
    checked against the recorded sha256. Reads no pickle.

    Raises:
        FileNotFoundError: the weights file is missing.
        ValueError: agent.json is malformed or the weights do not match it.
    """
    where = root / AGENT_FILE
    if meta.get("format") != FORMAT_NAME or meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{where}: expected format {FORMAT_NAME!r} version {FORMAT_VERSION}, got "
            f"{meta.get('format')!r} version {meta.get('format_version')!r}"
        )
    algos = sb3_algorithms()
    algo = str(meta.get("algo", "")).lower()
    if algo not in algos:
        raise ValueError(f"{where}: algo: expected one of {sorted(algos)}, got {algo!r}")
    aliases = algos[algo].policy_aliases
    policy_cls = aliases.get(meta.get("policy"))
    if policy_cls is None:
        raise ValueError(
            f"{where}: policy: expected one of {sorted(aliases)}, got {meta.get('policy')!r}"
        )
    kwargs = meta.get("policy_kwargs", {})
    digest = meta.get("sha256")
    if not isinstance(kwargs, dict) or not isinstance(digest, str) or len(digest) != 64:
        raise ValueError(f"{where}: expected policy_kwargs (an object) and a sha256 of the weights")
    obs_space = _space_from_json(meta.get("observation_space"), f"{where}: observation_space")
    act_space = _space_from_json(meta.get("action_space"), f"{where}: action_space")
    weights = confined(root, meta.get("weights", SB3_POLICY_FILE), f"{where}: weights")
    if not weights.is_file():
        raise FileNotFoundError(f"SB3 policy weights not found: {weights} (named by {where})")
    tensors = read_tensors(weights, digest)
    shared = meta.get("shared", {})
    if not isinstance(shared, dict) or not set(shared.values()) <= set(tensors):
        raise ValueError(f"{where}: shared: expected {{name: stored name}}, got {shared!r}")
    tensors.update({alias: tensors[name] for alias, name in shared.items()})

    def build() -> Any:
        return policy_cls(obs_space, act_space, lambda _: 0.0, **kwargs)

    _check_kwarg_sizes(kwargs, f"{where}: policy_kwargs")
    errors = (TypeError, ValueError, KeyError, AttributeError, AssertionError, RuntimeError)
    try:  # first on the meta device: sizes in agent.json are checked against the weights'
        skeleton = on_meta(build)  # shapes before any memory is allocated for them
    except NotImplementedError:  # a policy that copies its weights when built (DQN's target)
        skeleton = None
    except errors as err:
        raise ValueError(f"{where}: cannot build {meta.get('policy')} ({err!r})") from err
    if skeleton is not None:
        _check_policy_weights(skeleton.state_dict(), tensors, weights)
    try:
        policy = build()
    except errors as err:
        raise ValueError(f"{where}: cannot build {meta.get('policy')} ({err!r})") from err
    _check_policy_weights(policy.state_dict(), tensors, weights)
    policy.load_state_dict(tensors)
    policy.set_training_mode(False)
    return policy.to(device)
