r"""Runs a config file's ``sweep()`` over seeds and writes the ablation table.

    python -m i2v_jax.sweep --config=configs/ablation.py --workdir=runs/ablation \
        [--seeds=0,1,2] [--jobs=2] [--devices=2] [--only=mdkt,student_only]

``sweep()`` yields dicts ``{'name', 'arg', 'overrides'}``: each variant trains
with ``python -m i2v_jax.main --config=<file>:<arg> --config.<key>=<value> ...
--config.seed=<seed>`` into ``<workdir>/<name>/seed<seed>``. An override value
``'@<name>'`` is the same seed's workdir of variant <name> (VKD's frozen teacher
comes from the teacher_only run), and such a variant waits for that run (or
finds it finished by an earlier sweep). A variant with ``'mode': 'evaluate'``
and ``'eval.from_workdir': '@<name>'`` re-evaluates that run's checkpoints with
other evaluation settings, without training. The
synthetic dataset is built once into ``<workdir>/data``. A run whose
``results.json`` reached its last step is not run again, so an interrupted sweep
continues where it stopped; delete a finished run's ``results.json`` and the
sweep re-evaluates it from its last checkpoint (with the config's current
evaluation settings) without training again. On CPU, ``--devices`` fakes that many devices per run
(so ``mining_scope``/``bn_scope`` variants mean something).

Writes ``<workdir>/ablation.md`` (and .json): I2V and V2V mAP and Rank-1,
mean ± std (sample std) over the seeds that finished, and each run's wall time.
"""

from __future__ import annotations

import concurrent.futures
import importlib.util
import json
import os
import subprocess
import sys
import time
from typing import Dict, List

import numpy as np
from absl import app, flags

_CONFIG = flags.DEFINE_string('config', None, 'config file with get_config() and sweep()')
_WORKDIR = flags.DEFINE_string('workdir', None, 'root folder of the sweep')
_SEEDS = flags.DEFINE_list('seeds', ['0', '1', '2'], 'seeds')
_JOBS = flags.DEFINE_integer('jobs', 1, 'runs at once')
_DEVICES = flags.DEFINE_integer('devices', 2, 'fake CPU devices per run (CPU only)')
_ONLY = flags.DEFINE_list('only', [], 'run only these variant names')

COLUMNS = (('i2v', 'mAP'), ('i2v', 'rank1'), ('v2v', 'mAP'), ('v2v', 'rank1'))
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_sweep(config_path: str) -> List[Dict[str, object]]:
  path = config_path.partition(':')[0]
  if not os.path.exists(path):
    raise app.UsageError(f'--config={config_path}: {path} not found')
  spec = importlib.util.spec_from_file_location('sweep_config', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, 'sweep'):
    raise app.UsageError(f'{path} has no sweep() function; add one that yields '
                         "{'name', 'arg', 'overrides'} dicts")
  runs = list(module.sweep())
  names = [r['name'] for r in runs]
  if len(set(names)) != len(names):
    raise app.UsageError(f'{path}: sweep() names repeat: {names}')
  return runs


def run_dir(root: str, name: str, seed: int) -> str:
  return os.path.join(root, name, f'seed{seed}')


def finished(workdir: str, steps: int) -> bool:
  path = os.path.join(workdir, 'results.json')
  if not os.path.exists(path):
    return False
  with open(path) as f:
    return json.load(f)['step'] >= steps


def command(config_file: str, run: Dict[str, object], seed: int, root: str,
            data_dir: str) -> List[str]:
  args = [sys.executable, '-m', 'i2v_jax.main', f'--config={config_file}:{run["arg"]}',
          f'--workdir={run_dir(root, run["name"], seed)}', f'--config.seed={seed}',
          f'--config.data.dir={data_dir}']
  for key, value in run.get('overrides', {}).items():
    if isinstance(value, str) and value.startswith('@'):
      value = run_dir(root, value[1:], seed)
    if isinstance(value, (tuple, list)):
      value = '(' + ','.join(map(str, value)) + (',)' if len(value) == 1 else ')')
    args.append(f'--config.{key}={value}')
  return args


def summarize(runs, seeds, root) -> Dict[str, Dict[str, object]]:
  table = {}
  for run in runs:
    values = {f'{p}/{m}': [] for p, m in COLUMNS}
    minutes = []
    for seed in seeds:
      path = os.path.join(run_dir(root, run['name'], seed), 'results.json')
      if not os.path.exists(path):
        continue
      with open(path) as f:
        protocols = json.load(f)['protocols']
      for p, m in COLUMNS:
        r = protocols[p]
        values[f'{p}/{m}'].append(100 * (r['mAP'] if m == 'mAP' else r['cmc'][0]))
      timing = os.path.join(run_dir(root, run['name'], seed), 'sweep_time.json')
      if os.path.exists(timing):
        with open(timing) as f:
          minutes.append(json.load(f)['seconds'] / 60)
    table[run['name']] = {'values': values, 'minutes': minutes,
                          'about': run.get('about', '')}
  return table


def markdown(table, seeds) -> str:
  head = ['variant'] + [f'{p.upper()} {m}' for p, m in COLUMNS] + ['seeds', 'min/run']
  lines = ['| ' + ' | '.join(head) + ' |', '|' + ' --- |' * len(head)]
  for name, row in table.items():
    cells = [name]
    for p, m in COLUMNS:
      v = row['values'][f'{p}/{m}']
      if not v:
        cells.append('—')
      elif len(v) == 1:
        cells.append(f'{v[0]:.1f}')
      else:
        cells.append(f'{np.mean(v):.1f} ± {np.std(v, ddof=1):.1f}')
    n = len(row['values']['i2v/mAP'])
    cells.append(f'{n}/{len(seeds)}')
    cells.append(f'{np.mean(row["minutes"]):.1f}' if row['minutes'] else '—')
    lines.append('| ' + ' | '.join(cells) + ' |')
  notes = [f'- **{name}**: {row["about"]}' for name, row in table.items() if row['about']]
  return '\n'.join(lines + [''] + notes) + '\n'


def main(argv):
  del argv
  if not _CONFIG.value or not _WORKDIR.value:
    raise app.UsageError('--config and --workdir are required')
  sys.path.insert(0, REPO)
  from i2v_jax import records  # pylint: disable=g-import-not-at-top
  root = os.path.abspath(_WORKDIR.value)
  os.makedirs(root, exist_ok=True)
  runs = load_sweep(_CONFIG.value)
  if _ONLY.value:
    unknown = set(_ONLY.value) - {r['name'] for r in runs}
    if unknown:
      raise app.UsageError(f'--only names {sorted(unknown)} are not in sweep()')
  seeds = [int(s) for s in _SEEDS.value]
  config_file = _CONFIG.value.partition(':')[0]
  data_dir = os.path.join(root, 'data')
  if not os.path.exists(os.path.join(data_dir, 'metadata.json')):
    from data_prep import build  # pylint: disable=g-import-not-at-top
    build.build('synthetic', data_dir, show_progress=False)
  env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL='2',
             XLA_FLAGS=(os.environ.get('XLA_FLAGS', '') +
                        f' --xla_force_host_platform_device_count={_DEVICES.value}').strip())
  todo = [(r, s) for s in seeds for r in runs if not _ONLY.value or r['name'] in _ONLY.value]
  done: Dict[tuple, bool] = {}

  def launch(run, seed):
    workdir = run_dir(root, run['name'], seed)
    if finished(workdir, run.get('steps', 0)):
      return run, seed, 0, 'kept'
    os.makedirs(workdir, exist_ok=True)
    t0 = time.time()
    with open(os.path.join(workdir, 'sweep.log'), 'w') as log:
      rc = subprocess.run(command(config_file, run, seed, root, data_dir), env=env, cwd=REPO,
                          stdout=log, stderr=subprocess.STDOUT).returncode
    timing = os.path.join(workdir, 'sweep_time.json')
    if rc == 0 and not os.path.exists(timing):  # a re-evaluation keeps the training time
      records.write_json({'seconds': time.time() - t0}, timing)
    return run, seed, rc, f'{time.time() - t0:.0f} s'

  def deps(run):
    return [v[1:] for v in run.get('overrides', {}).values()
            if isinstance(v, str) and v.startswith('@')]

  steps = {r['name']: r.get('steps', 0) for r in runs}
  scheduled = {(r['name'], s) for r, s in todo}

  def state_of(name, seed):
    """True (finished), False (failed or cannot run) or None (still to come)."""
    if (name, seed) in done:
      return done[(name, seed)]
    if (name, seed) in scheduled:
      return None
    return finished(run_dir(root, name, seed), steps.get(name, 0))  # from an earlier sweep

  pending = list(todo)
  with concurrent.futures.ThreadPoolExecutor(_JOBS.value) as pool:
    running = set()
    while pending or running:
      ready = [(r, s) for r, s in pending if all(state_of(d, s) for d in deps(r))]
      blocked = [(r, s) for r, s in pending if any(state_of(d, s) is False for d in deps(r))]
      for r, s in blocked:
        print(f'{r["name"]} seed {s}: skipped, a run it needs ({deps(r)}) failed or is '
              'missing', flush=True)
        done[(r['name'], s)] = False
        pending.remove((r, s))
      while ready and len(running) < _JOBS.value:
        r, s = ready.pop(0)
        pending.remove((r, s))
        running.add(pool.submit(launch, r, s))
      if not running:
        break
      finished_now, running = concurrent.futures.wait(
          running, return_when=concurrent.futures.FIRST_COMPLETED)
      for future in finished_now:
        r, s, rc, took = future.result()
        done[(r['name'], s)] = rc == 0
        status = 'ok' if rc == 0 else f'FAILED (exit {rc}, see {run_dir(root, r["name"], s)}/sweep.log)'
        print(f'{r["name"]} seed {s}: {status} {took}', flush=True)
  table = summarize(runs, seeds, root)
  text = markdown(table, seeds)
  records.write_text(text, os.path.join(root, 'ablation.md'))
  records.write_json(table, os.path.join(root, 'ablation.json'))
  print(text)
  if not all(done.values()):
    sys.exit(1)


if __name__ == '__main__':
  app.run(main)
