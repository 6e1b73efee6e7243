#!/usr/bin/env bash
# From a Gymnasium env that is not an Atari game (or from recorded episodes) to an agent trained
# only in its dream and scored in the real env. Budgets are environment variables; the defaults
# are a CPU-hour sized run, the test suite runs it with tiny ones.
#
#   examples/own_env.sh                                  # CartPole-v1 seen through its frames
#   ENV_ID=CarRacing-v3 ENV_KWARGS='{"continuous": false}' RENDER_OBS= examples/own_env.sh
#   MINARI_ID=atari/breakout/expert-v0 GAME=Breakout examples/own_env.sh   # a Minari dataset
set -euo pipefail

ENV_ID=${ENV_ID:-CartPole-v1}
ENV_KWARGS=${ENV_KWARGS:-}
RENDER_OBS=${RENDER_OBS---render-obs}    # empty for envs whose observations are images
MINARI_ID=${MINARI_ID:-}                 # import this Minari dataset instead of collecting
GAME=${GAME:-$ENV_ID}                    # with MINARI_ID: the ALE game it records
OUT=${OUT:-runs/own_env}
REAL_STEPS=${REAL_STEPS:-20000}
PRESET=${PRESET:-cpu}
WM_STEPS=${WM_STEPS:-2000}
AGENT_STEPS=${AGENT_STEPS:-100000}
EPISODES=${EPISODES:-100}

if [ -n "$MINARI_ID" ]; then
    diamond-env import-data --game "$GAME" --minari "$MINARI_ID" --out "$OUT/dataset"
else
    GAME=$ENV_ID
    diamond-env collect --env-id "$ENV_ID" ${ENV_KWARGS:+--env-kwargs "$ENV_KWARGS"} $RENDER_OBS \
        --steps "$REAL_STEPS" --out "$OUT/dataset" --quiet
fi
diamond-env train-wm --game "$GAME" --preset "$PRESET" --dataset "$OUT/dataset" \
    --steps "$WM_STEPS" --run-dir "$OUT/wm" --no-progress
diamond-env train-agent --checkpoint "$OUT/wm/world_model" --algo ppo --steps "$AGENT_STEPS" \
    --out "$OUT/ppo" --no-progress
diamond-env evaluate --agent "$OUT/ppo" --episodes "$EPISODES" --num-envs 4 --baselines \
    --out "$OUT/ppo/eval.json"
