"""One process of the data-parallel tests (``tests/test_distributed.py``), and the single-process
reference they compare it with.

    RANK=r WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=P python tests/ddp_worker.py \\
        CHECKPOINT DATASET OUT BATCH_PER_RANK STEPS

Two steps train the world model on fixed segments (the same ``WORLD_SIZE × BATCH_PER_RANK`` draw on
every rank, rank ``r`` taking rows ``r b .. (r + 1) b``) with noise that is a function of the
global row, so it equals the step one process takes on all rows. Steps 3..STEPS then use each
rank's own samplers and noise. Weights and gradients after step 2, the weights after the last
step, and step 2's metrics go to ``OUT/rank-r.*``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from diamond_env.data.dataset import EpisodeDataset
from diamond_env.data.segments import Segment
from diamond_env.models import denoiser as denoiser_module
from diamond_env.training import distributed
from diamond_env.training.wm_trainer import WorldModelTrainer, make_samplers
from diamond_env.world_model.model import WorldModel


class RowsSampler:
    """Serves the same rows of a fixed batch every time (a stand-in for a segment sampler)."""

    def __init__(self, segment: Segment, rows: slice) -> None:
        self.segment = Segment(**{k: v[rows] for k, v in vars(segment).items()})

    def sample(self, n: int) -> Segment:
        assert n == len(self.segment.episode), (n, len(self.segment.episode))
        return self.segment


class GlobalRowNoise:
    """A ``draw_normal`` whose draw for local rows ``rank b .. (rank + 1) b`` is that slice of one
    draw over the global batch: the i-th call draws from a generator seeded ``1000 + i``."""

    def __init__(self, rank: int, world_size: int) -> None:
        self.rank, self.world_size, self.calls = rank, world_size, 0

    def __call__(
        self, shape: tuple[int, ...], device: Any, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        b = shape[0]
        g = torch.Generator().manual_seed(1000 + self.calls)
        self.calls += 1
        full = torch.randn((b * self.world_size, *shape[1:]), generator=g)
        return full[self.rank * b : (self.rank + 1) * b].to(device)


def weights(wm: WorldModel) -> dict[str, torch.Tensor]:
    out = {f"denoiser.{k}": v for k, v in wm.denoiser.state_dict().items()}
    out.update({f"rew_end.{k}": v for k, v in wm.rew_end.state_dict().items()})
    return {k: v.detach().clone().contiguous() for k, v in out.items()}


def fixed_step(
    checkpoint: Path,
    dataset: Path,
    rank: int,
    world_size: int,
    batch_per_rank: int,
    dist: distributed.Distributed | None = None,
) -> tuple[WorldModel, WorldModelTrainer, dict[str, float]]:
    """One training step on the fixed global batch (see the module doc)."""
    wm = WorldModel.load(checkpoint)
    data = EpisodeDataset.open(dataset).load_all()
    trainer = WorldModelTrainer(
        wm, wm.config, torch.device("cpu"), dist=dist, batch_per_rank=batch_per_rank
    )
    global_batch = batch_per_rank * world_size
    den, re = make_samplers(wm.config, data, seed=123)  # the same draw on every rank
    rows = slice(rank * batch_per_rank, (rank + 1) * batch_per_rank)
    fixed = (
        RowsSampler(with_padding(den.sample(global_batch), 1), rows),
        RowsSampler(with_padding(re.sample(global_batch), 6), rows),
    )
    original = denoiser_module.draw_normal
    denoiser_module.draw_normal = GlobalRowNoise(rank, world_size)  # type: ignore[assignment]
    try:  # two steps: the first one's learning rate is 0 (warm-up)
        trainer.train_step(*fixed)  # type: ignore[arg-type]
        metrics = trainer.train_step(*fixed)  # type: ignore[arg-type]
    finally:
        denoiser_module.draw_normal = original
    return wm, trainer, metrics


def with_padding(segment: Segment, frames: int) -> Segment:
    """The last row's last ``frames`` frames marked as padding, so the ranks' shares of the
    global batch hold different numbers of real targets (a plain mean of the ranks' means would
    then differ from the global mean)."""
    mask = segment.mask.copy()
    mask[-1, -frames:] = False
    return Segment(**{**vars(segment), "mask": mask})


def gradients(wm: WorldModel) -> dict[str, torch.Tensor]:
    out = {}
    for prefix, module in (("denoiser", wm.denoiser), ("rew_end", wm.rew_end)):
        for name, p in module.named_parameters():
            assert p.grad is not None, name
            out[f"{prefix}.{name}"] = p.grad.detach().clone().contiguous()
    return out


def main(argv: list[str]) -> int:
    checkpoint, dataset, out = Path(argv[0]), Path(argv[1]), Path(argv[2])
    batch_per_rank, steps = int(argv[3]), int(argv[4])
    torch.set_num_threads(1)
    dist = distributed.setup(torch.device("cpu"))
    try:
        wm, trainer, metrics = fixed_step(
            checkpoint, dataset, dist.rank, dist.world_size, batch_per_rank, dist
        )
        save_file(weights(wm), out / f"rank-{dist.rank}.fixed.safetensors")
        save_file(gradients(wm), out / f"rank-{dist.rank}.grads.safetensors")
        metrics["bytes/denoiser"] = trainer.bytes_reduced["denoiser"]
        metrics["bytes/rew_end"] = trainer.bytes_reduced["rew_end"]
        (out / f"rank-{dist.rank}.metrics.json").write_text(json.dumps(metrics))
        data = EpisodeDataset.open(dataset).load_all()
        torch.manual_seed(dist.torch_rank_seed(7))
        samplers = make_samplers(wm.config, data, seed=7, rank=dist.rank)
        for _ in range(steps - 2):
            trainer.train_step(*samplers)
        save_file(weights(wm), out / f"rank-{dist.rank}.last.safetensors")
    finally:
        dist.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
