"""Counter-based random numbers for many envs at once: one batched draw, no per-env generator.

Env ``i`` owns a 64-bit key (mixed from its seed) and a counter of the draws it has made. Draw
``c`` of env ``i`` is the block of values ``hash(key_i, c, j)`` for ``j = 0, 1, ...``: a pure
function of the key, the counter and the position, computed for all envs in a few elementwise
tensor operations on their device. So env ``i``'s numbers depend only on its seed and on how many
draws it has made, never on the other envs or on ``N``, and a draw for ``N`` envs costs the same
handful of kernels for any ``N`` (the per-env ``torch.Generator`` it replaces cost ``3 N`` calls
per step: ``3 N`` kernel launches on a GPU).

The hash is SplitMix64's output function (Steele, Lea and Flood 2014; the finaliser of Java's
``SplittableRandom``) applied to ``key + golden * (c * 2**32 + j)`` in wrapping 64-bit integer
arithmetic, the key itself being SplitMix64 of the seed. Two envs' streams could only overlap if
their keys differed by ``golden × d`` for some ``|d|`` below the number of values drawn (about
``2**-24`` for ``2**40`` values), which is the SplittableRandom argument. Uniforms take 24 bits
(float32's mantissa), normals come from Box–Muller on two uniforms of one hash.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch

_GOLDEN = 0x9E3779B97F4A7C15
_MIX1 = 0xBF58476D1CE4E5B9
_MIX2 = 0x94D049BB133111EB
_MASK24 = (1 << 24) - 1


def _signed(value: int) -> int:
    """A uint64 constant as the int64 with the same bits."""
    return value - (1 << 64) if value >= 1 << 63 else value


GOLDEN, MIX1, MIX2 = _signed(_GOLDEN), _signed(_MIX1), _signed(_MIX2)


def _shift_right(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical right shift of int64 bit patterns (torch shifts int64 arithmetically)."""
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def _mix_(z: torch.Tensor, tmp: torch.Tensor) -> torch.Tensor:
    """SplitMix64's output function on int64 bit patterns, in place (``tmp``: scratch of the
    same shape); wrapping arithmetic."""
    for shift, factor in ((30, MIX1), (27, MIX2), (31, None)):
        torch.bitwise_right_shift(z, shift, out=tmp)
        tmp &= (1 << (64 - shift)) - 1  # torch shifts int64 arithmetically: make it logical
        z ^= tmp
        if factor is not None:
            z *= factor
    return z


def mix64(z: torch.Tensor) -> torch.Tensor:
    """SplitMix64's output function on int64 bit patterns (a new tensor)."""
    return _mix_(z.clone(), torch.empty_like(z))


def keys_from_seeds(seeds: torch.Tensor) -> torch.Tensor:
    """Per-env keys (int64) from non-negative int64 seeds."""
    return mix64(seeds.to(torch.int64) * GOLDEN + GOLDEN)


CPU_CHUNK = 1 << 17
"""Values hashed at once on a CPU (a block that stays in cache is faster than one pass
over many envs at once); a GPU hashes everything in one pass."""


def _blocks(
    keys: torch.Tensor, counters: torch.Tensor, size: int
) -> Iterator[tuple[slice, torch.Tensor, torch.Tensor]]:
    """For row blocks of the envs: (rows, hashes (rows, size) int64, scratch of that shape)."""
    if size < 1 or size >= 1 << 32:
        raise ValueError(f"size: expected 1 <= size < 2**32, got {size}")
    steps = torch.arange(size, device=keys.device, dtype=torch.int64) * GOLDEN
    base = keys + (counters << 32) * GOLDEN  # value j of draw c: key + golden * (c * 2**32 + j)
    n = keys.shape[0]
    rows = n if keys.device.type != "cpu" else max(1, CPU_CHUNK // size)
    for start in range(0, n, rows):
        block = slice(start, min(n, start + rows))
        z = base[block, None] + steps[None, :]
        tmp = torch.empty_like(z)
        yield block, _mix_(z, tmp), tmp


def hash_block(keys: torch.Tensor, counters: torch.Tensor, size: int) -> torch.Tensor:
    """``(N, size)`` int64 bit patterns: value ``j`` of draw ``counters[i]`` of env ``i``."""
    out = torch.empty((keys.shape[0], size), dtype=torch.int64, device=keys.device)
    for rows, z, _ in _blocks(keys, counters, size):
        out[rows] = z
    return out


def _uniform24_(bits: torch.Tensor, shift: int, tmp: torch.Tensor) -> torch.Tensor:
    """Uniforms in (0, 1) (float32) from the 24 bits of ``bits`` that start at bit ``shift``."""
    torch.bitwise_right_shift(bits, shift, out=tmp)
    tmp &= _MASK24
    return tmp.to(torch.float32).add_(0.5).mul_(1.0 / (1 << 24))


def uniform(keys: torch.Tensor, counters: torch.Tensor, size: int) -> torch.Tensor:
    """``(N, size)`` float32 uniforms in (0, 1) of draw ``counters[i]`` of each env."""
    out = torch.empty((keys.shape[0], size), dtype=torch.float32, device=keys.device)
    for rows, z, tmp in _blocks(keys, counters, size):
        out[rows] = _uniform24_(z, 40, tmp)
    return out


def normal(keys: torch.Tensor, counters: torch.Tensor, size: int) -> torch.Tensor:
    """``(N, size)`` float32 standard normals of draw ``counters[i]`` of each env (Box–Muller:
    hash ``j`` gives values ``j`` and ``j + ceil(size / 2)``)."""
    half = (size + 1) // 2
    out = torch.empty((keys.shape[0], 2 * half), dtype=torch.float32, device=keys.device)
    for rows, z, tmp in _blocks(keys, counters, half):
        radius = _uniform24_(z, 40, tmp).log_().mul_(-2.0).sqrt_()
        angle = _uniform24_(z, 16, tmp).mul_(2.0 * math.pi)
        block = out[rows]
        torch.cos(angle, out=block[:, :half])
        torch.sin(angle, out=block[:, half:])
        block[:, :half] *= radius
        block[:, half:] *= radius
    return out[:, :size]
