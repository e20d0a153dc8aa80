"""The ablation launcher: sweep() entries are valid configs; commands; the table."""

import json
import os
import subprocess
import sys
import threading

import pytest

from configs import synthetic_cpu
from i2v_jax import atomic
from i2v_jax.experiments import sweep

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(REPO, 'configs', 'synthetic_cpu.py')


def test_every_variant_is_a_valid_locked_config():
  runs = sweep.load_sweep(CONFIG)
  names = [r['name'] for r in runs]
  for required in ('student_only', 'teacher_only', 'tkp', 'vkd', 'vkd_teacher', 'mdkt',
                   'mdkt_after_teacher', 'mdkt_no_tcl', 'mdkt_no_ml', 'mdkt_tcl_clip',
                   'mdkt_tcl_k4', 'mdkt_shared_classifier', 'mdkt_cross_tcl',
                   'mdkt_teacher_gallery', 'vkd_teacher_gallery', 'tkp_student_gallery'):
    assert required in names
  assert sum(n.startswith('mdkt_tcl_x') for n in names) == 3
  # Equal budgets: one-stage methods TOTAL steps, two-stage ones STAGE + STAGE.
  steps = {r['name']: r['steps'] for r in runs}
  assert steps['student_only'] == steps['mdkt'] == steps['tkp'] == synthetic_cpu.TOTAL
  assert steps['vkd_teacher'] + steps['vkd'] == synthetic_cpu.TOTAL
  assert steps['teacher_stage'] + steps['mdkt_after_teacher'] == synthetic_cpu.TOTAL
  for run in runs:
    c = synthetic_cpu.get_config(run['arg'])
    for key, value in run['overrides'].items():
      node = c
      *path, leaf = key.split('.')
      for p in path:
        node = node[p]
      assert leaf in node, f'{run["name"]}: unknown key {key}'
      if not (isinstance(value, str) and value.startswith('@')):
        node[leaf] = value  # type-checked by the locked ConfigDict
      else:
        assert value[1:] in names[:names.index(run['name'])], 'dependency must come first'


def test_command_resolves_references_and_tuples():
  run = {'name': 'vkd', 'arg': 'preset=vkd',
         'overrides': {'teacher.checkpoint': '@teacher_only', 'optim.decay_at': (0.5,),
                       'loss.tcl.temperature': 0.5}}
  cmd = sweep.command('configs/x.py', run, 2, '/root', '/data')
  assert '--config=configs/x.py:preset=vkd' in cmd
  assert '--workdir=/root/vkd/seed2' in cmd and '--config.seed=2' in cmd
  assert '--config.teacher.checkpoint=/root/teacher_only/seed2' in cmd
  assert '--config.optim.decay_at=(0.5,)' in cmd
  assert '--config.loss.tcl.temperature=0.5' in cmd


def test_a_finished_run_becomes_one_results_line(tmp_path):
  d = sweep.run_dir(str(tmp_path), 'a', 3)
  os.makedirs(d)
  protocol = {'mAP': 0.3, 'cmc': [0.4] * 20, 'mINP': 0.0}
  atomic.write_json({'step': 5, 'protocols': {'i2v': protocol}},
                     os.path.join(d, 'results.json'))
  line = sweep.result_line({'name': 'a'}, 3, d, 90.0)
  assert (line['variant'], line['seed'], line['steps'], line['minutes']) == ('a', 3, 5, 1.5)
  assert line['protocols']['i2v']['mAP'] == 0.3
  path = str(tmp_path / 'results' / 'r.jsonl')
  lock = threading.Lock()
  sweep.append_line(path, line, lock)
  sweep.append_line(path, dict(line, seed=4), lock)
  with open(path) as f:
    assert [json.loads(l)['seed'] for l in f] == [3, 4]
  assert sweep.finished(d, 5) and not sweep.finished(d, 6)
  # A run trained by an earlier sweep: no made-up time.
  assert sweep.result_line({'name': 'a'}, 3, d, None)['minutes'] is None
  assert line['cpu'] == sweep.cpu_description()


def test_the_processor_is_recorded_with_its_widest_vector_set(tmp_path):
  info = tmp_path / 'cpuinfo'
  info.write_text('processor\t: 0\nmodel name\t: AMD EPYC\n'
                  'flags\t\t: fpu sse4_2 avx avx2 fma\n\nprocessor\t: 1\n')
  assert sweep.cpu_description(str(info)) == 'AMD EPYC (avx2)'
  info.write_text('model name\t: Xeon\nflags\t: sse4_2 avx avx2 avx512f avx512_bf16\n')
  assert sweep.cpu_description(str(info)) == 'Xeon (avx512)'
  assert sweep.cpu_description(str(tmp_path / 'absent'))  # another OS: still a name


def test_dependencies_are_followed_through_every_level():
  runs = [{'name': 'gallery', 'overrides': {'x': '@student', 'y': 3}},
          {'name': 'student', 'overrides': {'teacher.checkpoint': '@teacher'}},
          {'name': 'teacher'}, {'name': 'other'}]
  assert sweep.dependencies(runs[0]) == ['student']
  assert sweep.with_dependencies(['gallery'], runs) == {'gallery', 'student', 'teacher'}
  assert sweep.with_dependencies(['other'], runs) == {'other'}


def test_plan_waits_for_dependencies_skips_after_failures_and_fills_free_slots():
  deps = {'vkd': ['vkd_teacher'], 'vkd_gallery': ['vkd', 'vkd_teacher']}
  pending = [('vkd_teacher', 0), ('vkd', 0), ('student_only', 0), ('vkd_gallery', 0),
             ('vkd_teacher', 1), ('vkd', 1)]
  status = {}
  state = lambda name, seed: status.get((name, seed))  # None: still to come
  # Nothing finished: vkd waits for its teacher; two slots take the first two ready.
  start, skip = sweep.plan(pending, deps, state, 2)
  assert start == [('vkd_teacher', 0), ('student_only', 0)] and skip == []
  # One slot: only the first ready run.
  assert sweep.plan(pending, deps, state, 1)[0] == [('vkd_teacher', 0)]
  assert sweep.plan(pending, deps, state, 0)[0] == []
  # The seed-0 teacher finished: vkd seed 0 may start, not vkd seed 1.
  status[('vkd_teacher', 0)] = True
  start, _ = sweep.plan([('vkd', 1), ('vkd', 0)], deps, state, 2)
  assert start == [('vkd', 0)]
  # The seed-1 teacher failed: everything that needs it is skipped, transitively
  # once vkd seed 1 is marked failed in turn.
  status[('vkd_teacher', 1)] = False
  start, skip = sweep.plan([('vkd', 1), ('vkd_gallery', 1)], deps, state, 2)
  assert start == [] and skip == [('vkd', 1), ('vkd_gallery', 1)]
  # Resume: a dependency finished by an earlier sweep counts as finished.
  earlier = lambda name, seed: True if name == 'vkd_teacher' else None
  assert sweep.plan([('vkd', 3)], deps, earlier, 1)[0] == [('vkd', 3)]


def test_appends_cut_a_torn_line_and_one_sweep_holds_a_results_file(tmp_path):
  """Faults 2: a line torn by an interrupted append is cut before the next one
  (never glued to it); a second sweep on the same results file is refused."""

  from i2v_jax import locks
  from i2v_jax.experiments import report as sweep_report
  path = str(tmp_path / 'r.jsonl')
  lock = threading.Lock()
  line = {'variant': 'a', 'seed': 0, 'protocols': {}}
  sweep.append_line(path, line, lock)
  with open(path, 'a') as f:
    f.write('{"variant": "b", "se')  # the kill came mid-append
  assert [r['variant'] for r in sweep_report.read_results(path)] == ['a']
  sweep.append_line(path, dict(line, variant='c'), lock)
  with open(path) as f:
    assert [json.loads(l)['variant'] for l in f] == ['a', 'c']
  with locks.hold(path + '.lock', 'the sweep'):
    import pytest
    with pytest.raises(locks.Locked, match=rf'in use by pid {os.getpid()} on '):
      with locks.hold(path + '.lock', 'the sweep'):
        pass
  with locks.hold(path + '.lock', 'the sweep'):  # released: taken again
    pass


def test_report_only_regenerates_the_table_from_the_results_file_alone(tmp_path):
  """`--report_only`: no data, no workdir, no training; the table and figures are
  rewritten from the results file (e.g. after a change to the report)."""
  proto = lambda m: {'mAP': m, 'cmc': [m] * 20, 'mINP': 0.0}
  path = tmp_path / 'bench.jsonl'
  path.write_text(''.join(
      json.dumps({'variant': v, 'seed': s, 'steps': 300, 'minutes': 1.0,
                  'protocols': {'i2v': proto(m + s / 100), 'v2v': proto(0.5)}}) + '\n'
      for s in range(3) for v, m in (('student_only', 0.30), ('mdkt', 0.32))))
  command = [sys.executable, '-m', 'i2v_jax.experiments.sweep', f'--config={CONFIG}',
             f'--results={path}', '--report_only']
  out = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr
  table = (tmp_path / 'bench.md').read_text()
  assert '| mdkt | 33.0 ± ' in table and '| +2.0 ± 0.0 * |' in table
  assert (tmp_path / 'bench.png').exists() and 'table: ' in out.stdout
  assert not (tmp_path / 'data').exists()  # nothing built
  missing = subprocess.run(command[:-2] + [f'--results={tmp_path}/none.jsonl', '--report_only'],
                           cwd=REPO, capture_output=True, text=True, timeout=300)
  assert missing.returncode == 2
  assert missing.stderr.strip().splitlines()[-1].startswith('error: --results=')


def test_runs_joining_another_processors_start_are_refused(tmp_path):
  """Pairs must come from one processor: a start whose recorded runs were made on
  another vector set (or say nothing of theirs) takes no new runs, before any data
  is built; starts the new runs do not join, and this processor's own, are fine."""
  here = 'Xeon (avx512)'
  recorded = [{'variant': 'student_only', 'seed': 0, 'start': 'generic', 'cpu': 'EPYC (avx2)'},
              {'variant': 'student_only', 'seed': 0, 'start': 'scratch', 'cpu': here},
              {'variant': 'student_only', 'seed': 0}]  # default start, no cpu field
  new = [('mdkt', 0, 'generic'), ('mdkt', 0, 'scratch'), ('mdkt', 0, 'reid')]
  assert sweep.foreign_processors(recorded, new, here, 'reid') == {
      'generic': ['EPYC (avx2)'], 'reid': ['an unrecorded processor']}
  assert sweep.foreign_processors(recorded, new[1:2], here, 'reid') == {}
  assert sweep.foreign_processors(recorded, [], 'EPYC (avx2)', 'reid') == {}

  path = tmp_path / 'bench.jsonl'
  path.write_text(json.dumps({'variant': 'student_only', 'seed': 0, 'start': 'scratch',
                              'cpu': 'Another CPU (sse4_2)', 'protocols': {}}) + '\n')
  command = [sys.executable, '-m', 'i2v_jax.experiments.sweep', f'--config={CONFIG}',
             f'--workdir={tmp_path}/runs', f'--results={path}', '--starts=scratch',
             '--seeds=0', '--only=mdkt']
  out = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
  assert out.returncode == 2
  last = out.stderr.strip().splitlines()[-1]
  assert last.startswith(f'error: --results={path}: ') and "'scratch' runs" in last
  assert 'Another CPU (sse4_2)' in last and '--mixed_processors' in last
  assert not (tmp_path / 'runs' / 'data').exists()  # refused before building anything


@pytest.mark.parametrize('args, expected', [
    (['--jobs=0'], '--jobs=0: runs at once must be at least 1'),
    (['--seeds=a'], '--seeds=a: a comma-separated list of seeds'),
    (['--only=nope'], "--only names ['nope'] are not in sweep(): student_only"),
    (['--starts=nope'], "--starts names ['nope'] are not in starts(): reid"),
])
def test_bad_sweep_arguments_are_one_line_exit_2_and_nothing_written(tmp_path, args, expected):
  """Faults trial: these were a 70-line usage dump or a ValueError traceback."""
  from tests.cli import ENV
  workdir = tmp_path / 'sweep'
  run = subprocess.run([sys.executable, '-m', 'i2v_jax.experiments.sweep',
                        '--config=configs/synthetic_cpu.py', f'--workdir={workdir}', *args],
                       env=dict(ENV, JAX_PLATFORMS='nosuch'), cwd=REPO, capture_output=True,
                       text=True, timeout=120)
  lines = run.stderr.strip().splitlines()
  assert run.returncode == 2 and len(lines) == 1, run.stderr[-2000:]
  assert lines[0].startswith('error: ') and expected in lines[0], lines[0]
  assert not workdir.exists()
