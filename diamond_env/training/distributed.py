"""Data-parallel training over ``torch.distributed`` processes launched by ``torchrun`` (or any
launcher that sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``,
as ``srun`` does with a few exports).

What every rank does and what only rank 0 does:

- Every rank holds the whole model and the whole dataset (read from the run directory, which
  must be on a filesystem all ranks see, as on a Slurm cluster), samples its own segments and
  noise (rank-dependent seeds) and dreams its own share of the imagination batch.
- Gradients are summed over the ranks once per network and step, in one flat buffer, after the
  backward pass and before clipping, so clipping and the optimiser step see the same gradient
  everywhere and the weights stay identical. Losses that average over a mask (padded frames,
  padded reward/end steps) are divided by the **global** count, so a step with ``K`` ranks of
  ``b`` samples is the step one process would take on the ``K b`` samples.
- Rank 0 alone collects real data, evaluates in the real game and writes the dataset,
  checkpoints, ``resume.pt``, ``metrics.jsonl`` and TensorBoard; what differs per rank (sampler
  and RNG states, the dreams in progress) travels to rank 0 as ``torch.save`` bytes and is stored
  inside ``resume.pt``, which each rank reads back with ``weights_only=True``.

Backends: NCCL on CUDA (device ``cuda:LOCAL_RANK``), gloo on CPU. Collectives time out after
``DIAMOND_ENV_DIST_TIMEOUT`` seconds (default 600): a rank that dies or hangs makes the others
fail with :class:`PeerLostError` rather than wait forever. Waits for rank-0-only work (collection,
real-game evaluation) go through a separate gloo group with a 24-hour timeout; a dead rank 0 still
ends them at once (its sockets close).
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from diamond_env.run.safe_io import InputError

DEFAULT_TIMEOUT_S = 600.0
"""Seconds a collective waits for the other ranks before failing (``DIAMOND_ENV_DIST_TIMEOUT``)."""

LONG_WAIT_S = 24 * 3600.0
"""Seconds the other ranks wait for rank-0-only work (collection, real-game evaluation)."""


class PeerLostError(ConnectionError):
    """Another process of a data-parallel run stopped answering (it died, or hung past the
    timeout)."""


def _env_int(name: str, default: str | None, low: int, high: int) -> int:
    """An integer launch variable in ``[low, high]``; ``InputError`` naming it otherwise."""
    text = os.environ.get(name, default)
    if text is None:
        raise InputError(
            f"launch: {name} is not set, but WORLD_SIZE says this is one of several processes; "
            "start the run with torchrun (which sets RANK, WORLD_SIZE and LOCAL_RANK)"
        )
    try:
        value = int(text)
    except ValueError:
        raise InputError(f"launch: {name}={text!r} is not an integer") from None
    if not low <= value <= high:
        raise InputError(f"launch: {name}={value} is outside [{low}, {high}]")
    return value


def launch_timeout() -> float:
    """Seconds of ``DIAMOND_ENV_DIST_TIMEOUT`` (default :data:`DEFAULT_TIMEOUT_S`): a finite
    positive number, at most :data:`LONG_WAIT_S`."""
    text = os.environ.get("DIAMOND_ENV_DIST_TIMEOUT", str(DEFAULT_TIMEOUT_S))
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value <= LONG_WAIT_S:  # NaN and inf fail too
        raise InputError(
            f"launch: DIAMOND_ENV_DIST_TIMEOUT={text!r}: expected seconds in (0, {LONG_WAIT_S:g}]"
        )
    return value


def launched_by_torchrun() -> bool:
    """True when the environment describes a run of more than one process (``InputError`` for a
    malformed ``WORLD_SIZE``)."""
    return _env_int("WORLD_SIZE", "1", 1, 65536) > 1


@dataclass
class Distributed:
    """This process's place in a data-parallel run (``world_size == 1``: a plain run, every
    method a no-op that returns what one process would have)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    _wait_group: Any = None

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def rank_seed(self, seed: int) -> int | tuple[int, int]:
        """A NumPy seed for this rank's own draws: ``seed`` itself on rank 0 (so one process
        draws what it always did), ``(seed, rank)`` elsewhere."""
        return seed if self.rank == 0 else (seed, self.rank)

    def torch_rank_seed(self, seed: int) -> int:
        """A torch seed for this rank's own draws (``seed`` on rank 0)."""
        if self.rank == 0:
            return seed
        return (seed * 1_000_003 + self.rank * 7_919) % 2**63

    def per_rank(self, global_batch: int, what: str) -> int:
        """``global_batch`` split evenly over the ranks (an error if it does not divide)."""
        if global_batch % self.world_size:
            raise ValueError(
                f"{what}: the global batch {global_batch} does not split over {self.world_size} "
                f"processes; choose a process count that divides it, or give --batch-per-rank"
            )
        return global_batch // self.world_size

    # -- collectives ---------------------------------------------------------------------------

    def sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum ``tensor`` over the ranks in place (and return it)."""
        if self.enabled:
            moved = tensor.to(self.device)
            _checked(dist.all_reduce, moved)
            if moved is not tensor:
                tensor.copy_(moved)
        return tensor

    def reduce_scalars(
        self, values: dict[str, torch.Tensor], *, mean: bool = False
    ) -> dict[str, float]:
        """0-d tensors summed (or averaged) over the ranks in one all-reduce, as floats (in a
        plain run, the values themselves)."""
        packed = torch.stack([v.detach().float().reshape(()).cpu() for v in values.values()])
        if self.enabled:
            self.sum_(packed)
            if mean:
                packed /= self.world_size
        return dict(zip(values, packed.tolist(), strict=True))

    def sum_gradients_(self, module: nn.Module, scale: float = 1.0) -> int:
        """Replace the gradients of ``module`` by ``scale`` × their sum over the ranks, in one
        flat all-reduce. Parameters without a gradient count as zero. Returns the bytes reduced
        (0 in a plain run)."""
        if not self.enabled:
            return 0
        params = [p for p in module.parameters() if p.requires_grad]
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        flat = torch.cat([p.grad.reshape(-1) for p in params])  # type: ignore[union-attr]
        _checked(dist.all_reduce, flat)
        if scale != 1.0:
            flat.mul_(scale)
        offset = 0
        for p in params:
            n = p.numel()
            p.grad.copy_(flat[offset : offset + n].view_as(p))  # type: ignore[union-attr]
            offset += n
        return flat.numel() * flat.element_size()

    def average_gradients_(self, module: nn.Module) -> int:
        """Replace the gradients of ``module`` by their mean over the ranks (for losses that
        average over the same number of items on every rank)."""
        return self.sum_gradients_(module, scale=1.0 / self.world_size)

    def broadcast_module_(self, module: nn.Module) -> None:
        """Give every rank rank 0's parameters and buffers."""
        if not self.enabled:
            return
        with torch.no_grad():
            for t in [*module.parameters(), *module.buffers()]:
                _checked(dist.broadcast, t, 0)

    def main_says(self, flag: bool) -> bool:
        """Rank 0's ``flag``, on every rank (for decisions all ranks must take together, such as
        stopping at a deadline each rank's clock would see at a slightly different step)."""
        if not self.enabled:
            return flag
        value = torch.tensor([float(self.is_main and flag)])
        return bool(self.sum_(value).item() > 0)

    def wait_for_main(self) -> None:
        """Block until every rank gets here, however long rank 0's own work takes."""
        if self.enabled:
            _checked(dist.barrier, group=self._wait_group)

    def barrier(self) -> None:
        """Block until every rank gets here (the collective timeout applies)."""
        if self.enabled:
            _checked(dist.barrier)

    def gather_states(self, state: dict[str, Any]) -> list[torch.Tensor] | None:
        """Each rank's ``state`` (tensors and plain values) as ``torch.save`` bytes (uint8
        tensors), gathered on rank 0 (None elsewhere). A plain run gets its own only."""
        payload = _to_bytes(state)
        if not self.enabled:
            return [payload]
        group = self._wait_group
        size = torch.tensor([payload.numel()], dtype=torch.int64)
        sizes = [torch.zeros(1, dtype=torch.int64) for _ in range(self.world_size)]
        _checked(dist.all_gather, sizes, size, group=group)
        longest = int(max(int(s) for s in sizes))
        padded = torch.zeros(longest, dtype=torch.uint8)
        padded[: payload.numel()] = payload
        gathered = [torch.zeros(longest, dtype=torch.uint8) for _ in range(self.world_size)]
        _checked(dist.all_gather, gathered, padded, group=group)
        if not self.is_main:
            return None
        return [g[: int(s)].clone() for g, s in zip(gathered, sizes, strict=True)]

    def close(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()


def own_state(state: dict[str, Any], dist: Distributed) -> dict[str, Any]:
    """This rank's part of a ``resume.pt`` (the state itself for a plain run's file, which holds
    no per-rank parts); a run saved by another number of processes is refused."""
    if dist.enabled or "ranks" in state:
        return rank_state(state.get("ranks", [state]), dist.rank, dist.world_size)
    return state


def rank_state(stored: list[torch.Tensor], rank: int, world_size: int) -> dict[str, Any]:
    """This rank's part of a resume state written by :meth:`Distributed.gather_states`
    (``weights_only`` load: plain data only)."""
    if len(stored) != world_size:
        raise ValueError(
            f"the run was trained by {len(stored)} process(es); resume it with the same number "
            f"(torchrun --nproc_per_node {len(stored)}), not {world_size}"
        )
    state = torch.load(io.BytesIO(stored[rank].numpy().tobytes()), weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"resume state of rank {rank}: expected a dict, got {type(state)}")
    return state


def _to_bytes(state: dict[str, Any]) -> torch.Tensor:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return torch.frombuffer(bytearray(buffer.getvalue()), dtype=torch.uint8)


def _checked(fn: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except (RuntimeError, dist.DistError) as err:
        raise PeerLostError(
            f"rank {dist.get_rank()}: another process of this run stopped answering during "
            f"{fn.__name__} ({type(err).__name__}: {str(err).splitlines()[0][:200]}); "
            "the run can be continued with --resume"
        ) from err


@contextmanager
def joined(device: torch.device) -> Iterator[Distributed]:
    """:func:`setup`, and leave the process group when the block ends (however it ends)."""
    dist = setup(device)
    try:
        yield dist
    finally:
        dist.close()


def setup(device: torch.device) -> Distributed:
    """Join the run described by the environment (``torchrun``), or return a plain run.

    ``device``: the device asked for; with CUDA each rank takes ``cuda:LOCAL_RANK``.
    """
    if not launched_by_torchrun():
        return Distributed(device=device)
    world_size = _env_int("WORLD_SIZE", "1", 1, 65536)
    rank = _env_int("RANK", None, 0, world_size - 1)
    local_rank = _env_int("LOCAL_RANK", "0", 0, 65535)
    timeout = timedelta(seconds=launch_timeout())
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        backend = "gloo"
    try:
        if not dist.is_initialized():
            dist.init_process_group(backend, rank=rank, world_size=world_size, timeout=timeout)
        wait_group = dist.new_group(backend="gloo", timeout=timedelta(seconds=LONG_WAIT_S))
    except (RuntimeError, ValueError, OSError) as err:  # the store or a peer did not answer
        first = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
        raise PeerLostError(
            f"launch: could not join the {world_size} processes as rank {rank} within "
            f"{timeout.total_seconds():g} s ({first}); check MASTER_ADDR/MASTER_PORT and that "
            "every process was started"
        ) from err
    return Distributed(rank, world_size, local_rank, device, wait_group)
