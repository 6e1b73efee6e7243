"""The settings of a dream, declared and checked in one place.

Every face of the dream (``gym.make``, ``gym.make_vec``, :func:`diamond_env.make_sb3_env`,
:func:`~diamond_env.dream.simulator.make_simulator`) turns its keyword arguments into one
:class:`DreamSettings`, which checks them when it is made; the simulator is built from it. The
env kwargs of the registered ids are these fields plus ``checkpoint``, ``world_model`` and
``render_mode`` (docs/env.md).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from diamond_env.run.safe_io import InputError

SAMPLERS = ("euler", "heun")
"""Sampler methods a dream may switch to (``sampler=``)."""
REWARD_MODES = ("sample", "mean")
"""How rewards and ends are read from the reward/end model (``reward_mode=``)."""


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InputError(f"{name}: expected an int >= {minimum}, got {value!r}")
    return value


@dataclass(frozen=True)
class DreamSettings:
    """How a dream runs; invalid values raise :class:`~diamond_env.run.safe_io.InputError`
    (a ``ValueError``) when the object is made.

    Attributes:
        horizon: dreams are truncated after this many steps (DIAMOND trains its agent with 15).
        max_episode_steps: Gymnasium's cap; can only shorten ``horizon``.
        num_denoising_steps: denoising steps per frame; None = the checkpoint's.
        sampler: ``"euler"`` or ``"heun"``; None = the checkpoint's.
        reward_mode: ``"sample"`` (reward and end drawn from the predicted categoricals) or
            ``"mean"`` (expected reward, end when p(end) > 0.5).
        fastpath: ``"auto"`` (the options measured to pay on the model's device, for a model
            loaded by the dream), ``"plain"``/None, or names of
            :mod:`diamond_env.world_model.fastpath` options (a comma-separated string or a
            sequence; stored as a tuple).
        device: torch device of the dream; None = the model's (CPU when loading).
    """

    horizon: int = 15
    max_episode_steps: int | None = None
    num_denoising_steps: int | None = None
    sampler: Literal["euler", "heun"] | None = None
    reward_mode: Literal["sample", "mean"] = "sample"
    fastpath: str | Sequence[str] | None = "auto"
    device: str | torch.device | None = None

    def __post_init__(self) -> None:
        _check_int("horizon", self.horizon, 1)
        if self.max_episode_steps is not None:
            _check_int("max_episode_steps", self.max_episode_steps, 1)
        if self.num_denoising_steps is not None:
            _check_int("num_denoising_steps", self.num_denoising_steps, 1)
        if self.sampler is not None and self.sampler not in SAMPLERS:
            raise InputError(f"sampler: expected one of {list(SAMPLERS)}, got {self.sampler!r}")
        if self.reward_mode not in REWARD_MODES:
            raise InputError(
                f"reward_mode: expected one of {list(REWARD_MODES)}, got {self.reward_mode!r}"
            )
        fastpath = self.fastpath
        if fastpath is not None and not isinstance(fastpath, str):
            if not isinstance(fastpath, Sequence) or not all(isinstance(n, str) for n in fastpath):
                raise InputError(
                    f"fastpath: expected 'auto', 'plain' or names of fast-path options, got "
                    f"{fastpath!r}"
                )
            object.__setattr__(self, "fastpath", tuple(fastpath))
        if self.device is not None and not isinstance(self.device, (str, torch.device)):
            raise InputError(f"device: expected a str or torch.device, got {self.device!r}")

    @property
    def truncate_at(self) -> int:
        """Steps after which a dream is truncated: ``horizon``, shortened by
        ``max_episode_steps``."""
        if self.max_episode_steps is None:
            return self.horizon
        return min(self.horizon, self.max_episode_steps)

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> DreamSettings:
        """The settings named in ``kwargs`` (an unknown name is a ``TypeError``, as a call's)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(kwargs) - names)
        if unknown:
            raise TypeError(f"unknown dream setting(s) {unknown}; expected some of {sorted(names)}")
        return cls(**kwargs)
