r"""Runs a config file's ``sweep()`` over paired seeds and keeps every result.

    python -m i2v_jax.experiments.sweep --config=configs/synthetic_cpu.py --workdir=runs/ablation \
        [--seeds=0,1,2,3,4] [--jobs=2] [--devices=2] [--only=mdkt,student_only] \
        [--starts=reid,generic,scratch] [--results=bench/ablation/synthetic_cpu.jsonl]

``sweep()`` yields dicts ``{'name', 'arg', 'overrides', 'steps', 'about'}``: each
variant trains with ``python -m i2v_jax.main --config=<file>:<arg>
--config.<key>=<value> ... --config.seed=<seed>`` into
``<workdir>/<name>/seed<seed>``. An override value ``'@<name>'`` is the same
seed's workdir of variant <name> (VKD's frozen teacher comes from the
vkd_teacher run), and such a variant waits for that run; if that run failed,
it is skipped. A variant with ``'mode': 'evaluate'`` and
``'eval.from_workdir': '@<name>'`` re-evaluates that run's checkpoints with other
evaluation settings, without training.

Data and starts. The config file's ``DATA`` names the synthetic generator
settings of the benchmark (`data_prep.synthetic.SPECS`), built once into
``<workdir>/data``. Its ``starts()`` (optional) names the starts methods can be
compared from: start name -> a pre-training (a pool: ``dataset`` 'synthetic' or
'objects' and its ``spec`` name; a run: ``arg``, ``overrides``, ``network``,
``seed``) or None (random initialisation). ``--starts`` picks them (default:
the first). The first start lives in ``<workdir>``, every other one in
``<workdir>/start-<name>``: its pool is built into ``pretrain/data``, its run
trained into ``pretrain/run`` and its backbone exported to
``pretrain/backbone.npz``, which every variant of that start loads
(``model.pretrained``). Each step is skipped when its output exists; all are
deterministic, so a rebuild gives the same start.

Results. Each finished run appends one JSON line (variant, seed, start, steps,
every protocol's metrics, the TCL diagnostics over training, minutes, commit,
host and processor) to
``--results`` (default
``bench/ablation/<config name>.jsonl``, meant to be committed). A (variant,
seed) already there is not run again, unless a later variant needs its
checkpoints and they are not on this machine (it is then re-run, without a new
line). A (variant, seed, start) is one run. The table (``<results name>.md``: means, paired differences with 95%
t-intervals) and figure (``.png``) beside the results file are regenerated from
it after every run (`i2v_jax.experiments.report`), so an interrupted sweep, or one
finished on another machine, completes the same table; ``--report_only``
regenerates them from the results file alone. Each line records its processor
(``cpu``): XLA:CPU compiles for the vector set, so one config on two sets gives
two noise draws, and a sweep refuses to add runs to a start whose recorded runs
came from another processor (their pairs would mix draws) unless
``--mixed_processors``; give each processor its own results file instead. On CPU, ``--devices``
fakes that many devices per run (so ``mining_scope``/``bn_scope`` variants mean
something).
"""

from __future__ import annotations

import concurrent.futures
import datetime
import fcntl
import importlib.util
import json
import os
import platform
import subprocess
import sys
import threading
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from absl import app, flags

from i2v_jax import command_line, locks
from i2v_jax.errors import DiskFull, UserError, free_space, is_disk_full
from i2v_jax.experiments import report as sweep_report
from i2v_jax.run_folder import RunFolder

_CONFIG = flags.DEFINE_string('config', None, 'config file with get_config() and sweep()')
_WORKDIR = flags.DEFINE_string('workdir', None, 'root folder of the sweep')
_SEEDS = flags.DEFINE_list('seeds', ['0', '1', '2', '3', '4'], 'paired seeds')
_JOBS = flags.DEFINE_integer('jobs', 1, 'runs at once')
_DEVICES = flags.DEFINE_integer('devices', 2, 'fake CPU devices per run (CPU only)')
_ONLY = flags.DEFINE_list('only', [], 'run only these variant names')
_STARTS = flags.DEFINE_list('starts', [], "starts to run from (the config's starts()); "
                            'default: its first')
_RESULTS = flags.DEFINE_string('results', None, 'results file (one JSON line per run); '
                               'default bench/ablation/<config name>.jsonl')
_REPORT_ONLY = flags.DEFINE_bool('report_only', False, 'only regenerate the table and '
                                 'figures from the results file (no data, no training; '
                                 '--workdir not needed), e.g. after changing the report')
_MIXED = flags.DEFINE_bool('mixed_processors', False, 'add runs to a start whose recorded '
                           'runs came from another processor (refused by default: '
                           'their paired differences would mix two noise draws)')

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load_module(config_path: str):
  path = config_path.partition(':')[0]
  if not os.path.exists(path):
    raise UserError(f'--config={config_path}: {path} not found')
  spec = importlib.util.spec_from_file_location('sweep_config', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def load_sweep(config_path: str, module=None) -> List[Dict[str, object]]:
  """The runs of the config's ``sweep()`` (``module``: the config, if loaded)."""
  path = config_path.partition(':')[0]
  module = module or load_module(config_path)
  if not hasattr(module, 'sweep'):
    raise UserError(f'{path} has no sweep() function; add one that yields '
                    "{'name', 'arg', 'overrides'} dicts")
  runs = list(module.sweep())
  names = [r['name'] for r in runs]
  if len(set(names)) != len(names):
    raise UserError(f'{path}: sweep() names repeat: {names}')
  return runs


def dependencies(run: Dict[str, object]) -> List[str]:
  """The variants a run needs: its ``'@name'`` override values."""
  return [v[1:] for v in run.get('overrides', {}).values()
          if isinstance(v, str) and v.startswith('@')]


def with_dependencies(wanted: Sequence[str], runs: Sequence[Dict[str, object]]) -> set:
  """``wanted`` and every variant they need, directly or through others."""
  needs = {r['name']: dependencies(r) for r in runs}
  closure, stack = set(), list(wanted)
  while stack:
    name = stack.pop()
    if name not in closure:
      closure.add(name)
      stack += needs.get(name, [])
  return closure


def run_dir(root: str, name: str, seed: int) -> str:
  return os.path.join(root, name, f'seed{seed}')


def start_root(root: str, start: str, default: str) -> str:
  """Where a start's pre-training and runs live: the default start in ``root``
  (as before starts existed), every other one in ``root/start-<name>``."""
  return root if start == default else os.path.join(root, f'start-{start}')


def load_starts(module) -> Dict[str, Optional[dict]]:
  """The config's ``starts()`` (name -> pre-training or None), in order."""
  if hasattr(module, 'starts'):
    return dict(module.starts())
  return {'default': None}


# The per-run series kept in the results file: TCL and what it compares.
DIAGNOSTICS = ('loss/tcl', 'loss/tcl/reverse', 'diag/tcl/teacher_p_pos',
               'diag/tcl/student_p_pos')


def diagnostics(workdir: str) -> Dict[str, list]:
  """``{'step': [...], key: [...]}`` of `DIAGNOSTICS` from the run's metrics.jsonl
  (the keys it logged; empty without TCL)."""
  path = RunFolder(workdir).metrics
  series: Dict[str, list] = {}
  if not os.path.exists(path):
    return series
  with open(path) as f:
    for line in f:
      try:
        row = json.loads(line)
      except ValueError:
        continue
      values = {k: row[k] for k in DIAGNOSTICS if k in row}
      if not values or 'step' not in row:
        continue
      series.setdefault('step', []).append(row['step'])
      for k in DIAGNOSTICS:
        series.setdefault(k, []).append(values.get(k))
  return {k: v for k, v in series.items() if any(x is not None for x in v)}


def results_path(workdir: str) -> str:
  """A run's results: a training run's ``results.json``, or an evaluate-mode run's
  latest evaluation (``eval/index.jsonl``)."""
  run = RunFolder(workdir)
  if not os.path.exists(run.results_json) and os.path.exists(run.eval_index):
    lines = evaluation_lines(run.eval_index)
    if lines:
      return run.evaluation_at(lines[-1]['dir']).results_json
  return run.results_json


def evaluation_lines(index: str) -> List[dict]:
  """The whole entries of an ``eval/index.jsonl``: a line torn by a full disk (no
  closing newline, or not JSON) is left out, and the entries around it are kept."""
  with open(index, 'rb') as f:
    text = f.read().decode('utf-8', errors='replace')
  out = []
  for line in text.split('\n'):
    try:
      entry = json.loads(line)
    except ValueError:
      continue
    if isinstance(entry, dict) and 'dir' in entry:
      out.append(entry)
  return out


def finished(workdir: str, steps: int) -> bool:
  path = results_path(workdir)
  if not os.path.exists(path):
    return False
  with open(path) as f:
    return json.load(f)['step'] >= steps


def command(config_file: str, run: Dict[str, object], seed: int, root: str,
            data_dir: str, workdir: Optional[str] = None) -> List[str]:
  """The training command of ``run`` at ``seed`` (``workdir``: default under root)."""
  workdir = workdir or run_dir(root, run['name'], seed)
  args = [sys.executable, '-m', 'i2v_jax.main', f'--config={config_file}:{run["arg"]}',
          f'--workdir={workdir}', f'--config.seed={seed}',
          f'--config.data.dir={data_dir}']
  for key, value in run.get('overrides', {}).items():
    if isinstance(value, str) and value.startswith('@'):
      value = run_dir(root, value[1:], seed)
    if isinstance(value, (tuple, list)):
      value = '(' + ','.join(map(str, value)) + (',)' if len(value) == 1 else ')')
    args.append(f'--config.{key}={value}')
  return args


Key = Tuple[str, int, str]  # (variant name, seed, start)


def plan(pending: Sequence[Key], deps: Dict[str, Sequence[str]],
         status: Callable[[str, int], Optional[bool]], free_slots: int
         ) -> Tuple[List[Key], List[Key]]:
  """The scheduler's decision, as a pure function.

  Args:
    pending: runs not started yet, (name, seed, start), in sweep order
      (seed-major); a run's dependencies are the same seed's and start's.
    deps: variant name -> the variants it needs (its ``'@name'`` overrides).
    status: (name, seed, start) -> True (finished, now or by an earlier sweep), False
      (failed, skipped, or missing and not scheduled) or None (still to come).
    free_slots: how many runs may start now.

  Returns:
    (start, skip): the first ``free_slots`` pending runs whose dependencies
    all finished, in order; and every pending run with a failed dependency.
  """
  skip = [k for k in pending
          if any(status(d, *k[1:]) is False for d in deps.get(k[0], ()))]
  ready = [k for k in pending if k not in skip
           and all(status(d, *k[1:]) for d in deps.get(k[0], ()))]
  return ready[:max(free_slots, 0)], skip


def cpu_description(cpuinfo: str = '/proc/cpuinfo') -> str:
  """The processor and the widest vector instruction set it offers, e.g. ``AMD
  EPYC (avx2)``. XLA:CPU compiles its kernels for that set, so a run's speed and
  its float summation order (its last digits, hence its noise draw) depend on it:
  two runs of one config on different sets are two draws, not one."""
  try:
    with open(cpuinfo, encoding='utf-8') as f:
      text = f.read()
  except OSError:
    return platform.processor() or platform.machine()
  field = lambda key: next((l.split(':', 1)[1].strip() for l in text.splitlines()
                            if l.split(':', 1)[0].strip() == key), '')
  flags = set(field('flags').split())
  widest = next((s for s in ('avx512f', 'avx2', 'avx', 'sse4_2') if s in flags), '')
  model = field('model name') or platform.processor() or platform.machine()
  return f'{model} ({widest.replace("avx512f", "avx512")})' if widest else model


def foreign_processors(recorded: Sequence[dict], new: Sequence[Key], cpu: str,
                       default_start: str) -> Dict[str, List[str]]:
  """start -> the processors, other than ``cpu``, that made the recorded runs of
  that start, for each start a ``new`` (variant, seed, start) run would join. A
  run paired with a reference from another vector set pairs two noise draws; a
  line without ``cpu`` (written before the field existed) counts as another
  processor, since nothing says it was this one."""
  joining = {start for _, _, start in new}
  others: Dict[str, set] = {}
  for r in recorded:
    start = r.get('start', default_start)
    if start in joining and r.get('cpu') != cpu:
      others.setdefault(start, set()).add(r.get('cpu') or 'an unrecorded processor')
  return {start: sorted(cpus) for start, cpus in others.items()}


def result_line(run: Dict[str, object], seed: int, workdir: str,
                seconds: Optional[float], start: Optional[str] = None) -> dict:
  """The results-file line of a finished run (from its results.json); ``seconds``
  None: the run was trained by an earlier sweep, and its time is not known."""
  with open(results_path(workdir)) as f:
    results = json.load(f)
  try:
    commit = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], cwd=REPO,
                            capture_output=True, text=True).stdout.strip()
  except OSError:
    commit = ''
  line = {'variant': run['name'], 'seed': seed, 'steps': results['step'],
          'protocols': results['protocols'],
          'minutes': None if seconds is None else round(seconds / 60, 2),
          'commit': commit, 'machine': f'{platform.node()} {os.cpu_count()} cpus',
          'cpu': cpu_description(),
          'finished': datetime.datetime.now().isoformat(timespec='seconds')}
  if results.get('evaluators'):  # what the other evaluators measured (agreement, ...)
    line['evaluators'] = results['evaluators']
  if start is not None:
    line['start'] = start
  series = diagnostics(workdir)
  if series:
    line['diagnostics'] = series
  return line


def append_line(path: str, line: dict, lock: threading.Lock) -> None:
  """Appends one JSON line and flushes it to disk (a crash loses no finished run),
  under an exclusive lock on the file (other sweeps appending to it wait), after
  cutting off a last line an earlier append left torn (it never finished). A full
  disk (`DiskFull`) leaves the file as it was before the append."""
  with lock:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, 'a+b', buffering=0) as f:
      fcntl.flock(f.fileno(), fcntl.LOCK_EX)
      f.seek(0, os.SEEK_END)
      size = f.tell()
      if size:
        f.seek(max(0, size - (1 << 20)))
        tail = f.read()
        if not tail.endswith(b'\n'):
          keep = size - len(tail) + tail.rfind(b'\n') + 1 if b'\n' in tail else 0
          f.truncate(keep)
          size = keep
      data = (json.dumps(line, sort_keys=True) + '\n').encode()
      try:  # unbuffered: nothing is left to be written when the file closes
        while data:
          data = data[f.write(data):]
        os.fsync(f.fileno())
      except OSError as e:
        if not is_disk_full(e):
          raise
        os.ftruncate(f.fileno(), size)  # the results before stay whole
        raise DiskFull(f'{path}: no space left on the device ({free_space(path)} free) '
                       f'while adding {line.get("variant")} seed {line.get("seed")}; the '
                       'results before it are whole; free space and run the sweep again '
                       '(it redoes only that run)') from None


def build(dataset: str, preset: str, out_dir: str, env: Dict[str, str]) -> None:
  """``python -m data_prep.build`` (a separate tool: the library never imports it)."""
  flag = {'synthetic': '--synthetic_preset', 'objects': '--objects_preset'}[dataset]
  rc = subprocess.run([sys.executable, '-m', 'data_prep.build', '--dataset', dataset, flag,
                       preset, '--out_dir', out_dir], env=env, cwd=REPO,
                      stdout=subprocess.DEVNULL).returncode
  if rc:
    raise SystemExit(f'building {dataset} {preset!r} into {out_dir} failed (exit {rc})')


def prepare_data(module, root: str, env: Dict[str, str]) -> str:
  """Builds the benchmark data once; returns its folder."""
  data_dir = os.path.join(root, 'data')
  if not os.path.exists(os.path.join(data_dir, 'metadata.json')):
    name = getattr(module, 'DATA', 'small')
    print(f'building the {name!r} synthetic dataset in {data_dir}', flush=True)
    build('synthetic', name, data_dir, env)
  return data_dir


def prepare_start(module, pre: Optional[dict], root: str, env: Dict[str, str]
                  ) -> Optional[str]:
  """Builds a start's pre-training pool, trains and exports its backbone (each
  once, into ``root/pretrain``); returns the backbone's path, or None for a
  random start (``pre`` None)."""
  if pre is None:
    return None
  backbone = os.path.join(root, 'pretrain', 'backbone.npz')
  if os.path.exists(backbone):
    return backbone
  pool = os.path.join(root, 'pretrain', 'data')
  dataset = pre.get('dataset', 'synthetic')
  if not os.path.exists(os.path.join(pool, 'metadata.json')):
    print(f'building the {dataset} {pre["data"]!r} pre-training pool in {pool}', flush=True)
    build(dataset, pre['data'], pool, env)
  overrides = dict(pre.get('overrides', {}))
  if dataset == 'objects':  # held-out images of the training classes: did it learn?
    overrides['eval.heldout'] = True  # its one evaluation is the final one
  run = {'name': 'run', 'arg': pre['arg'], 'overrides': overrides}
  workdir = os.path.join(root, 'pretrain', 'run')
  print(f'pre-training ({pre["arg"]}, {pre.get("steps")} steps) in {workdir}', flush=True)
  cmd = command(module.__file__, run, pre.get('seed', 0), root, pool, workdir=workdir)
  with open(os.path.join(root, 'pretrain', 'pretrain.log'), 'w') as log:
    rc = subprocess.run(cmd, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT).returncode
  if rc:
    raise SystemExit(f'pre-training failed (exit {rc}); see {root}/pretrain/pretrain.log')
  rc = subprocess.run([sys.executable, '-m', 'i2v_jax.models.export', f'--workdir={workdir}',
                       f'--network={pre.get("network", "student")}', f'--out={backbone}'],
                      env=env, cwd=REPO).returncode
  if rc:
    raise SystemExit(f'exporting the pre-trained backbone failed (exit {rc})')
  if dataset == 'objects':  # the heldout evaluator's values (i2v_jax.evaluation.evaluators)
    with open(RunFolder(workdir).results_json) as f:
      check = json.load(f)['evaluators']['heldout']
    with open(os.path.join(root, 'pretrain', 'heldout.json'), 'w') as f:
      json.dump(check, f)
    print(f'pre-training held-out accuracy {100 * check["accuracy"]:.1f}% '
          f'(chance {100 * check["chance"]:.2f}%, {check["images"]} images)', flush=True)
  return backbone


def main(argv):
  del argv
  if not _CONFIG.value or not (_WORKDIR.value or _REPORT_ONLY.value):
    raise UserError('--config is required, and --workdir unless --report_only (python -m '
                    'i2v_jax.experiments.sweep --config=configs/synthetic_cpu.py '
                    '--workdir=runs/ablation)')
  if _JOBS.value < 1:
    raise UserError(f'--jobs={_JOBS.value}: runs at once must be at least 1')
  bad = [s for s in _SEEDS.value if not s.strip().isdigit()]
  if bad or not _SEEDS.value:
    raise UserError(f'--seeds={",".join(_SEEDS.value)}: a comma-separated list of seeds '
                    '0 or more, e.g. --seeds=0,1,2,3,4')
  sys.path.insert(0, REPO)  # the config file imports `configs`
  module = load_module(_CONFIG.value)
  runs = load_sweep(_CONFIG.value, module)
  if _ONLY.value:
    unknown = set(_ONLY.value) - {r['name'] for r in runs}
    if unknown:
      raise UserError(f'--only names {sorted(unknown)} are not in sweep(): '
                      f'{", ".join(r["name"] for r in runs)}')
  all_starts = load_starts(module)
  default_start = next(iter(all_starts))
  starts = _STARTS.value or [default_start]
  unknown = set(starts) - set(all_starts)
  if unknown:
    raise UserError(f'--starts names {sorted(unknown)} are not in starts(): '
                    f'{", ".join(all_starts)}')
  seeds = [int(s) for s in _SEEDS.value]
  config_file = _CONFIG.value.partition(':')[0]
  stem = os.path.splitext(os.path.basename(config_file))[0]
  results_path = os.path.abspath(_RESULTS.value or os.path.join(REPO, 'bench', 'ablation',
                                                                 f'{stem}.jsonl'))
  report_stem = os.path.splitext(os.path.basename(results_path))[0]
  if _REPORT_ONLY.value:
    if not os.path.exists(results_path):
      raise UserError(f'--results={results_path}: no such results file; name the .jsonl '
                      'a sweep wrote')
    print_report(sweep_report.write_report(results_path, runs, os.path.dirname(results_path),
                                           report_stem, default_start), results_path)
    return
  root = os.path.abspath(_WORKDIR.value)
  os.makedirs(root, exist_ok=True)
  os.makedirs(os.path.dirname(results_path), exist_ok=True)
  with locks.hold(f'{results_path}.lock', f'--results={results_path}', remove=True):
    run_sweep(module, runs, root, results_path, report_stem, config_file, starts,
              all_starts, default_start, seeds, sweep_report)


def run_sweep(module, runs, root, results_path, report_stem, config_file, starts,
              all_starts, default_start, seeds, sweep_report):
  """The sweep proper, with the results file's lock held (one sweep per file)."""
  recorded_runs = sweep_report.read_results(results_path)
  recorded = {(r['variant'], r['seed'], r.get('start', default_start)) for r in recorded_runs}
  # Dependencies of wanted runs are run too (their checkpoints are needed here).
  needed = with_dependencies(_ONLY.value or [r['name'] for r in runs], runs)
  todo = [(r, s, st) for s in seeds for st in starts for r in runs if r['name'] in needed]
  if not _MIXED.value:
    cpu = cpu_description()
    new = [(r['name'], s, st) for r, s, st in todo if (r['name'], s, st) not in recorded]
    foreign = foreign_processors(recorded_runs, new, cpu, default_start)
    if foreign:
      made_on = '; '.join(f'its {start!r} runs were made on {", ".join(cpus)}'
                          for start, cpus in foreign.items())
      raise UserError(
          f'--results={results_path}: {made_on}, this machine is {cpu}: XLA:CPU compiles '
          'for the vector set, so runs added here would pair two noise draws; name a '
          'results file for this processor (--results=...) and make the references '
          'there, or pass --mixed_processors')
  env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL='2',
             XLA_FLAGS=(os.environ.get('XLA_FLAGS', '') +
                        f' --xla_force_host_platform_device_count={_DEVICES.value}').strip())
  data_dir = prepare_data(module, root, env)
  roots = {st: start_root(root, st, default_start) for st in starts}
  backbones = {st: prepare_start(module, all_starts[st], roots[st], env) for st in starts}

  def with_start(run, start):
    if not backbones[start]:
      return run
    return dict(run, overrides=dict({'model.pretrained': backbones[start]},
                                    **run.get('overrides', {})))

  done: Dict[tuple, bool] = {}
  lock = threading.Lock()
  # A run whose checkpoints a run still to be trained needs (not one recorded).
  dependants = {(d, s, st) for r, s, st in todo if (r['name'], s, st) not in recorded
                for d in dependencies(r)}

  def launch(run, seed, start):
    sroot = roots[start]
    workdir = run_dir(sroot, run['name'], seed)
    needed_here = ((run['name'], seed, start) in dependants
                   and not finished(workdir, run.get('steps', 0)))
    if (run['name'], seed, start) in recorded and not needed_here:
      return 0, 'in the results file', None
    os.makedirs(workdir, exist_ok=True)
    t0, trained = time.time(), False
    if not finished(workdir, run.get('steps', 0)):
      trained = True
      print(f'{run["name"]} seed {seed} start {start}: training', flush=True)
      with open(os.path.join(workdir, 'sweep.log'), 'w') as log:
        rc = subprocess.run(command(config_file, with_start(run, start), seed, sroot,
                                    data_dir), env=env,
                            cwd=REPO, stdout=log, stderr=subprocess.STDOUT).returncode
      if rc:
        return rc, f'{time.time() - t0:.0f} s', None
    i2v = None
    if (run['name'], seed, start) not in recorded:
      seconds = time.time() - t0 if trained else None
      line = result_line(run, seed, workdir, seconds, start)
      i2v = line.get('protocols', {}).get('i2v', {}).get('mAP')
      append_line(results_path, line, lock)
      with lock:
        recorded.add((run['name'], seed, start))
        sweep_report.write_report(results_path, runs, os.path.dirname(results_path),
                                  report_stem, default_start)
    return 0, f'{time.time() - t0:.0f} s', i2v

  steps = {r['name']: r.get('steps', 0) for r in runs}
  scheduled = {(r['name'], s, st) for r, s, st in todo}

  def state_of(name, seed, start):
    """True (finished), False (failed or cannot run) or None (still to come)."""
    key = (name, seed, start)
    if key in done:
      return done[key]
    if key in scheduled:
      return None
    return finished(run_dir(roots[start], name, seed), steps.get(name, 0))  # earlier sweep

  by_name = {r['name']: r for r in runs}
  needs = {r['name']: dependencies(r) for r in runs}
  pending = [(r['name'], s, st) for r, s, st in todo]
  with concurrent.futures.ThreadPoolExecutor(_JOBS.value) as pool:
    running = {}
    while pending or running:
      start, skip = plan(pending, needs, state_of, _JOBS.value - len(running))
      for key in skip:
        print(f'{key[0]} seed {key[1]} start {key[2]}: skipped, a run it needs '
              f'({needs[key[0]]}) failed or is missing', flush=True)
        done[key] = False
        pending.remove(key)
      for key in start:
        pending.remove(key)
        running[pool.submit(launch, by_name[key[0]], key[1], key[2])] = key
      if not running:
        if pending:  # nothing can start and nothing runs: report what waits
          print(f'not run (waiting on runs that never finished): {pending}', flush=True)
        break
      finished_now, _ = concurrent.futures.wait(
          running, return_when=concurrent.futures.FIRST_COMPLETED)
      for future in finished_now:
        key = running.pop(future)
        rc, took, i2v = future.result()
        done[key] = rc == 0
        where = run_dir(roots[key[2]], key[0], key[1])
        status = 'ok' if rc == 0 else f'FAILED (exit {rc}, see {where}/sweep.log)'
        score = f', I2V mAP {100 * i2v:.1f}' if i2v is not None else ''
        print(f'[{len(done)}/{len(todo)}] {key[0]} seed {key[1]} start {key[2]}: {status} '
              f'{took}{score}', flush=True)
  print_report(sweep_report.write_report(results_path, runs, os.path.dirname(results_path),
                                         report_stem, default_start), results_path)
  if not all(done.values()):
    sys.exit(1)


def print_report(paths: Dict[str, object], results_path: str) -> None:
  with open(paths['table']) as f:
    print(f.read())
  print(f'results: {results_path}\ntable: {paths["table"]}\nfigures: '
        f'{", ".join(paths["figures"])}')


def run(argv):
  """`main`, with a user error (a locked results file, a full disk) as one line, exit 2."""
  try:
    main(argv)
  except UserError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)


FLAG_NAMES = [f.name for f in flags.FLAGS.get_flags_for_module(__name__)]  # this module's


def parse_flags(argv):  # --help and every flag error as one line (i2v_jax.command_line)
  return command_line.parse(flags.FLAGS, argv, __doc__, 'python -m i2v_jax.experiments.sweep',
                            names=FLAG_NAMES)


if __name__ == '__main__':
  app.run(run, flags_parser=parse_flags)
