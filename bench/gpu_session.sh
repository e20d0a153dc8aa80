#!/usr/bin/env bash
# The accelerator figures bench/RESULTS.md asks for, in one run that fits about
# eight minutes of a GPU host (run from the repository root):
#
#   bash bench/gpu_session.sh [WHEEL_DIR] [LOG]
#
# WHEEL_DIR: wheels to install first (no dependencies), for a host that has
# jax, flax, optax, orbax, chex and torch but not ml-collections (nothing here
# needs tensorflow): `pip download --no-deps ml-collections==1.1.0 -d WHEEL_DIR`
# on a machine with the registry. A copy of MARS's metadata folder `mars_info`
# inside WHEEL_DIR is put where bench/eval.py looks for it (../shared/data) when
# that is missing. LOG: a file that gets a copy of everything printed, line by
# line. Set PEAK_TFLOPS (dense bf16, per GPU; 989 for an H100/H200 SXM) for the
# MFU column, PYTHON for another interpreter than `python`, TINY=1 for a smoke
# run on any machine.
#
# In order of value, each under its own time limit so a slow part cannot take
# the rest: the train step at P=8 x K=4 (32 clips) in float32 and bfloat16
# beside PyTorch eager; evaluation at MARS size; the step at P=32 x K=4 (128
# clips) in bfloat16 beside PyTorch eager and torch.compile. Each row prints as
# it lands. JAX allocates GPU memory as it needs it (no preallocation), so the
# PyTorch child that runs beside a JAX process finds the rest free.
set -uo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-python}
log=${2:-/dev/null}
exec > >(tee -a "$log") 2>&1
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
if [ -n "${1:-}" ]; then
  $py -m pip install -q --no-index --no-deps "$1"/*.whl || exit 2
  if [ -d "$1/mars_info" ] && [ ! -d ../shared/data/mars_info ]; then
    mkdir -p ../shared/data && cp -r "$1/mars_info" ../shared/data/
  fi
fi
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
$py -c 'import jax, flax, optax, chex; print("jax", jax.__version__, "flax", flax.__version__, "optax", optax.__version__, jax.devices())'
peak=${PEAK_TFLOPS:+--peak_tflops $PEAK_TFLOPS}
small=${TINY:+--tiny --height 32 --width 16 --runs 1 --steps 1}
limit() { if [ -n "${TINY:-}" ]; then echo 0; else echo "$1"; fi; }  # 0: no limit
step() { timeout "$(limit "$1")" $py bench/train_step.py $peak $small "${@:2}"; echo "(exit $?)"; }

echo '## train step, P=8 x K=4'
step 200 --ids 8 --k 4 --dtype float32 bfloat16 --reference torch
echo '## evaluation, MARS size'
timeout "$(limit 80)" $py bench/eval.py ${TINY:+--runs 1 --dim 64}; echo "(exit $?)"
echo '## train step, P=32 x K=4'
step 200 --ids 32 --k 4 --dtype bfloat16 --reference torch --torch_compile
