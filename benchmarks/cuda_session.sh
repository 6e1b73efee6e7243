#!/usr/bin/env bash
# The CUDA checks and figures a CPU box cannot give, in one call of a lent GPU machine:
#   1. the `cpu` preset (the best recipe of BENCHMARKS.md's CPU study) trained for TRAIN_MINUTES on the device
#      from 20,000 freshly collected random Breakout steps (the same command as the CPU runs,
#      --device added), its world model kept for held-out evaluation on a CPU box;
#   2. the GPU-marked tests (CUDA graphs replay the plain rollout);
#   3. training/imagination throughput and the dream's fast paths on the device
#      (`diamond-env bench`, JSON kept).
# Each part has its own time limit and a failure does not stop the next one.
#
#   benchmarks/cuda_session.sh OUT_DIR [TRAIN_MINUTES]      (repo root; DEVICE=cpu for a dry run)
set -u
out=${1:?usage: benchmarks/cuda_session.sh OUT_DIR [TRAIN_MINUTES]}
minutes=${2:-3.5}
device=${DEVICE:-cuda}
cells=${CELL_SECONDS:-2}
steps=${COLLECT_STEPS:-20000}
num_envs=${NUM_ENVS:-1,32,128}
presets=${PRESETS:-cpu,paper}
mkdir -p "$out"
work=$(mktemp -d)
export PYTHONUNBUFFERED=1
part() { echo; echo "=== $* ($(date -u +%H:%M:%S))"; }

part machine
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv 2>&1 | head -3
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"

part "collect $steps random Breakout steps (seed 0)"
timeout 90 python3 -m diamond_env collect --game Breakout --steps "$steps" --seed 0 \
    --out "$work/dataset" --quiet 2>&1 | tail -3

part "train-wm: cpu preset, $minutes min on $device"
timeout $(python3 -c "print(int(float('$minutes') * 60 + 90))") python3 -m diamond_env train-wm \
    --game Breakout --preset cpu --dataset "$work/dataset" \
    --run-dir "$work/run" --steps 1000000 --max-minutes "$minutes" --eval-every 100000 \
    --save-every 1000 --device "$device" --no-progress 2>&1 | tail -15
mkdir -p "$out/world_model"
cp "$work"/run/world_model/* "$out/world_model/" 2>&1
tail -1 "$work/run/metrics.jsonl" > "$out/last_metrics.jsonl" 2>&1
cp "$work/run/run.json" "$out/" 2>&1
if [ "$device" = cuda ]; then
    part "pytest -m gpu"
    timeout 120 python3 -m pytest -m gpu -q -p no:cacheprovider tests/test_fastpath.py 2>&1 | tail -5
    fast=channels_last,bf16,cuda_graphs
else
    fast=channels_last,bf16
fi

part "bench: train, imagination and the dream's fast paths on $device"
timeout 200 python3 -m diamond_env bench --sections train,imagination --train-presets "$presets" \
    --presets "$presets" --num-envs "$num_envs" --fastpath "$fast" --cell-seconds "$cells" \
    --device "$device" --json "$out/bench.json" 2>&1 | grep -v "^\s*$" | tail -60

part done
