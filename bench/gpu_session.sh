#!/usr/bin/env bash
# The accelerator figures bench/RESULTS.md asks for, in one run that fits about
# ten minutes of a GPU host (run from the repository root):
#
#   bash bench/gpu_session.sh [WHEEL_DIR]
#
# WHEEL_DIR: wheels to install first (no dependencies), for a host that has
# jax, flax, optax, orbax, chex and torch but not ml-collections (nothing here
# needs tensorflow): `pip download --no-deps ml-collections==1.1.0 -d WHEEL_DIR`
# on a machine with the registry. Set PEAK_TFLOPS (dense bf16, per GPU; 989 for
# an H100/H200 SXM) for the MFU column, PYTHON for another interpreter than
# `python`, TINY=1 for a smoke run on any machine.
#
# In order of value, each under its own time limit so a slow part cannot take
# the rest: the train step at P=8 x K=4 (32 clips) in float32 and bfloat16
# beside PyTorch eager and torch.compile on the same GPU; at P=32 x K=4 (128
# clips) in bfloat16 beside PyTorch eager; evaluation at MARS size.
set -uo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-python}
if [ -n "${1:-}" ]; then
  $py -m pip install -q --no-deps "$1"/*.whl || exit 2
fi
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
$py -c 'import jax; print("jax", jax.__version__, jax.devices())'
peak=${PEAK_TFLOPS:+--peak_tflops $PEAK_TFLOPS}
small=${TINY:+--tiny --height 32 --width 16 --runs 1 --steps 1}
limit() { if [ -n "${TINY:-}" ]; then echo 0; else echo "$1"; fi; }  # 0: no limit
step() { timeout "$(limit "$1")" $py bench/train_step.py $peak $small "${@:2}"; echo "(exit $?)"; }

echo '## train step, P=8 x K=4'
step 300 --ids 8 --k 4 --dtype float32 bfloat16 --reference torch --torch_compile
echo '## train step, P=32 x K=4'
step 180 --ids 32 --k 4 --dtype bfloat16 --reference torch
echo '## evaluation, MARS size'
timeout "$(limit 120)" $py bench/eval.py ${TINY:+--runs 1 --dim 64}; echo "(exit $?)"
