"""Train a DIAMOND world model of an Atari game from real play.

    python train_wm.py --game Breakout --preset tiny --real-steps 2000 --steps 100 --run-dir D

Without ``--dataset`` it first collects ``--real-steps`` steps with a random policy into
``D/dataset``. It leaves ``D/world_model/`` (the checkpoint that ``gym.make("DiamondDream-...",
checkpoint=D/world_model)`` loads), ``D/metrics.jsonl``, TensorBoard logs, ``D/eval_wm.json``
(held-out fidelity) and ``D/real_vs_imagined.png``. ``--resume`` continues an interrupted run.
The installed command ``diamond-env train-wm`` takes the same options.
"""

from __future__ import annotations

import sys

from diamond_env.devices import tune_allocator
from diamond_env.run.options import parse_options
from diamond_env.training.train_wm import TrainWMOptions, summary_lines, train_world_model


def main(argv: list[str] | None = None) -> int:
    opts = parse_options(TrainWMOptions, argv, description=__doc__ or "")
    tune_allocator()  # this process is ours: keep large freed blocks (diamond_env/devices.py)
    try:
        results = train_world_model(opts)
    except (ValueError, FileNotFoundError, ConnectionError) as err:
        print(f"train_wm.py: error: {err}", file=sys.stderr)
        return 2
    lines = summary_lines(opts, results)
    if lines:
        print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
