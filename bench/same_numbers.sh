#!/usr/bin/env bash
# The numbers a refactor must not move, written to OUT so two commits can be compared
# on one machine (XLA:CPU picks kernels per processor: compare on the same one):
#
#   bench/same_numbers.sh OUT [quickstart,one_step,sweep]
#   diff -r OUT_BEFORE/numbers OUT_AFTER/numbers        # nothing printed = bit-identical
#
#   quickstart  the README's command 1 (results.json of configs/synthetic_cpu.py)
#   one_step    one training step of every preset (metrics.jsonl's first line: every
#               loss term, grad and param norms), CPU-sized, on one small synthetic set
#   sweep       the benchmark's seed-0 student_only and mdkt runs under the reid start
#
# Only the command line is used, so the script runs unchanged on older commits. It
# takes about 25 minutes on a 2-core CPU (two runs at a time).
set -euo pipefail
out=$(realpath -m "${1:?usage: bench/same_numbers.sh OUT [quickstart,one_step,sweep]}")
parts=${2:-quickstart,one_step,sweep}
cd "$(dirname "$0")/.."
py=${PYTHON:-.venv/bin/python}
mkdir -p "$out/numbers"
# Only the numbers: times, dates, paths and the commit are dropped from each record.
strip='import json,sys
drop={"images_per_s","data_wait_s","data_wait_fraction","minutes","finished","commit","host","cpu","dir","workdir","source"}
def clean(v):
  if isinstance(v, dict): return {k: clean(x) for k, x in sorted(v.items()) if k not in drop}
  return [clean(x) for x in v] if isinstance(v, list) else v
for line in sys.stdin:
  if line.strip(): print(json.dumps(clean(json.loads(line)), sort_keys=True))'

run_quickstart() {
  rm -rf "$out/quickstart"
  $py -m i2v_jax.main --config=configs/synthetic_cpu.py --workdir="$out/quickstart" \
      > "$out/quickstart.log" 2>&1
  $py -c "import json; print(json.dumps(json.load(open('$out/quickstart/results.json'))))" \
      | $py -c "$strip" > "$out/numbers/quickstart.json"
}

run_one_step() {
  local data="$out/one_step_data" common
  rm -rf "$out/one_step" && mkdir -p "$out/one_step"
  [ -f "$data/metadata.json" ] || $py -m data_prep.build --dataset synthetic --out_dir "$data" \
      > /dev/null
  common=(--config.data.dir="$data" --config.train.num_steps=1 --config.train.log_every=1
          --config.train.eval_every=0 --config.train.checkpoint_every=1)
  : > "$out/numbers/one_step.jsonl"
  for preset in mdkt tkp teacher_only student_only vkd_teacher vkd; do
    local extra=()
    [ "$preset" = vkd ] && extra=(--config.teacher.checkpoint="$out/one_step/vkd_teacher")
    XLA_FLAGS=--xla_force_host_platform_device_count=2 $py -m i2v_jax.main \
        --config=configs/synthetic_cpu.py:preset=$preset --workdir="$out/one_step/$preset" \
        "${common[@]}" "${extra[@]}" > "$out/one_step/$preset.log" 2>&1
    head -1 "$out/one_step/$preset/metrics.jsonl" \
        | $py -c "import json,sys; d=json.load(sys.stdin); d['preset']='$preset'; print(json.dumps(d))" \
        | $py -c "$strip" >> "$out/numbers/one_step.jsonl"
  done
}

run_sweep() {
  rm -rf "$out/sweep" && mkdir -p "$out/sweep/pretrain"
  cp bench/ablation/pretrained_backbone.npz "$out/sweep/pretrain/backbone.npz"
  $py -m i2v_jax.experiments.sweep --config=configs/synthetic_cpu.py --workdir="$out/sweep" \
      --seeds=0 --jobs=2 --devices=2 --only=student_only,mdkt \
      --results="$out/sweep/results.jsonl" > "$out/sweep.log" 2>&1
  $py -c "$strip" < "$out/sweep/results.jsonl" | sort > "$out/numbers/sweep.jsonl"
}

pids=()
for part in ${parts//,/ }; do
  case $part in
    quickstart|one_step) "run_$part" & pids+=($!) ;;
    sweep) sweep_later=1 ;;
    *) echo "error: unknown part $part: choose quickstart, one_step, sweep" >&2; exit 2 ;;
  esac
done
for p in "${pids[@]}"; do wait "$p"; done
[ -n "${sweep_later:-}" ] && run_sweep
echo "wrote $out/numbers: $(ls "$out/numbers" | tr '\n' ' ')"
