"""Fault trial: interrupt short trainings at random moments, resume, compare.

    python bench/fault_trial.py [--trials 12] [--steps 12] [--seed 0] [--out DIR]

Trains one tiny MDKT run (synthetic data, width 4, 2 CPU devices) straight through,
then, per trial, starts the same run, sends it SIGKILL, SIGINT (Ctrl-C) or SIGTERM
(in turn) after a random delay between the start and the straight run's duration
(so at import, dataset check, compilation, a step, a checkpoint save or an
evaluation), runs the command again until it exits 0, and compares with the
straight run: every array of the final checkpoint, every logged value per step
(metrics.jsonl, the last line of a step, timings left out), results.json, and
that the final evaluation is logged once. Prints one line per trial and the
count that matched bit for bit. Slow (about a minute a trial on 2 cores): a
measurement, not a test; tests/test_main.py holds one case of each signal.
"""

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
# This process reads the runs' checkpoints: the same 2 CPU devices they were saved on.
os.environ['XLA_FLAGS'] = '--xla_force_host_platform_device_count=2'
os.environ['JAX_PLATFORMS'] = 'cpu'

import jax  # noqa: E402
import numpy as np  # noqa: E402
import orbax.checkpoint as ocp  # noqa: E402

ENV = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=2',
           JAX_PLATFORMS='cpu', PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL='2')
SIGNALS = (signal.SIGKILL, signal.SIGINT, signal.SIGTERM)
TIMING = ('images_per_s', 'data_wait', 'seconds', 'time')


def command(workdir, data_dir, steps):
  return [sys.executable, '-m', 'i2v_jax.main',
          '--config=configs/base.py:preset=mdkt,runlocal', f'--workdir={workdir}',
          f'--config.data.dir={data_dir}', f'--config.train.num_steps={steps}',
          '--config.train.log_every=1', '--config.train.checkpoint_every=3',
          f'--config.train.eval_every={steps // 2}', '--config.model.width=4']


def untimed(value):
  """``value`` without the keys that measure time (they differ run to run)."""
  if isinstance(value, dict):
    return {k: untimed(v) for k, v in value.items() if not any(t in k for t in TIMING)}
  if isinstance(value, list):
    return [untimed(v) for v in value]
  return value


def outcome(workdir, steps):
  """What a finished run leaves: final arrays, last value per (step, key), results."""
  manager = ocp.CheckpointManager(os.path.join(workdir, 'checkpoints'))
  arrays = [np.asarray(a) for a in jax.tree.leaves(
      manager.restore(steps, args=ocp.args.StandardRestore()))]
  manager.close()
  logged, final_evals = {}, 0
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    for line in f:
      row = untimed(json.loads(line))
      logged.update({(row['step'], k): v for k, v in row.items() if k != 'step'})
      final_evals += row['step'] == steps and 'i2v/mAP' in row
  with open(os.path.join(workdir, 'results.json')) as f:
    results = untimed(json.load(f))
  return arrays, logged, results, final_evals


def same(a, b) -> str:
  """'' when the two outcomes match bit for bit, else what differs."""
  if len(a[0]) != len(b[0]) or not all(
      x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y, equal_nan=True)
      for x, y in zip(a[0], b[0])):
    return 'checkpoint arrays differ'
  if a[1] != b[1]:
    keys = sorted(k for k in set(a[1]) | set(b[1]) if a[1].get(k) != b[1].get(k))
    return f'logged values differ at {keys[:3]}'
  if a[2] != b[2]:
    return 'results.json differs'
  if b[3] != 1:
    return f'final evaluation logged {b[3]} times'
  return ''


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--trials', type=int, default=12)
  p.add_argument('--steps', type=int, default=12)
  p.add_argument('--seed', type=int, default=0)
  p.add_argument('--out', default='', help='keep the runs here (default: a temporary folder)')
  args = p.parse_args()
  rng = random.Random(args.seed)
  tmp = args.out or tempfile.mkdtemp(prefix='fault_trial-')
  data = os.path.join(tmp, 'data')
  subprocess.run([sys.executable, '-m', 'data_prep.build', '--dataset', 'synthetic',
                  '--out_dir', data, '--synthetic_num_train_ids=12',
                  '--synthetic_num_test_ids=4', '--synthetic_min_frames=3',
                  '--synthetic_max_frames=8', '--synthetic_height=64',
                  '--synthetic_width=32'], env=ENV, cwd=REPO, check=True,
                 capture_output=True)
  straight = os.path.join(tmp, 'straight')
  t = time.perf_counter()
  subprocess.run(command(straight, data, args.steps), env=ENV, cwd=REPO, check=True,
                 capture_output=True)
  duration = time.perf_counter() - t
  reference = outcome(straight, args.steps)
  print(f'straight run: {args.steps} steps in {duration:.0f} s; {len(reference[0])} arrays, '
        f'{len(reference[1])} logged values', flush=True)
  matched = 0
  for trial in range(args.trials):
    signum = SIGNALS[trial % len(SIGNALS)]
    delay = rng.uniform(1.0, duration)
    workdir = os.path.join(tmp, f'trial{trial}')
    proc = subprocess.Popen(command(workdir, data, args.steps), env=ENV, cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(delay)
    finished_first = proc.poll() is not None
    if not finished_first:
      proc.send_signal(signum)
    first_rc = proc.wait()
    stderr = proc.stderr.read().decode(errors='replace').strip().splitlines()
    runs = 1
    while True:  # resume until the run finishes (a safety cap: a loop would be a fault)
      rc = subprocess.run(command(workdir, data, args.steps), env=ENV, cwd=REPO,
                          capture_output=True).returncode
      runs += 1
      if rc == 0 or runs > 4:
        break
    problem = ('resumed run failed' if rc else same(reference, outcome(workdir, args.steps)))
    matched += not problem
    saved = [ln for ln in stderr if 'saving after this step' in ln]
    print(f'trial {trial:2d}: {signal.Signals(signum).name:7s} at {delay:5.1f} s '
          f'(exit {first_rc}{", finished first" if finished_first else ""}'
          f'{", saving" if saved else ""}), {runs} runs: '
          f'{problem or "bit-identical"}', flush=True)
  print(f'{matched}/{args.trials} interrupted runs resumed bit-identical to the straight run'
        f' (runs in {tmp})')


if __name__ == '__main__':
  main()
