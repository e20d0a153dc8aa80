#!/usr/bin/env bash
# The accelerator figures bench/RESULTS.md asks for, in one run that fits about
# nine minutes of a GPU host (run from the repository root):
#
#   bash bench/gpu_session.sh [WHEEL_DIR] [LOG]
#
# WHEEL_DIR: wheels to install first (no dependencies), for a host that has
# jax, flax, optax, orbax, chex and torch but not ml-collections or google-crc32c
# (nothing here needs tensorflow): `pip download --no-deps ml-collections==1.1.0
# google-crc32c -d WHEEL_DIR` on a machine with the registry (add --python-version
# and --platform for the GPU host's Python when it is not this one's). A copy of MARS's metadata folder `mars_info`
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
# it lands. bench/train_step.py runs its PyTorch rows before JAX starts, since a
# JAX process keeps the GPU memory it has used; JAX allocates as it needs
# (no preallocation), as when bench/RESULTS.md's figures were taken.
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
step 260 --ids 8 --k 4 --dtype float32 bfloat16 --reference torch
echo '## evaluation, MARS size'
timeout "$(limit 70)" $py bench/eval.py ${TINY:+--runs 1 --dim 64}; echo "(exit $?)"
echo '## train step, P=32 x K=4'
step 170 --ids 32 --k 4 --dtype bfloat16 --reference torch --torch_compile
