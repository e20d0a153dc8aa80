"""The synthetic benchmark's protocol (issue 12): disjoint pre-training pool, export
round trip, joint start from a teacher stage, paired seeds, interval statistics."""

import dataclasses
import json
import math
import os

import jax
import numpy as np
import pytest

from configs import synthetic_cpu
from data_prep import synthetic
from i2v_jax.run_folder import RunFolder
from i2v_jax import checkpoint, train_step
from i2v_jax.experiments import report as sweep_report
from i2v_jax.input_pipeline import TrainSampler
from i2v_jax.models import build_models, export

NUM_CLASSES = 12


def test_benchmark_spec_is_frozen():
  """The protocol was fixed before any method was compared: changing it is a
  deliberate act that must update this test and docs/benchmark.md."""
  assert dataclasses.asdict(synthetic.BENCHMARK) == dict(
      num_train_ids=128, num_test_ids=300, num_cameras=6, cams_per_id=3, min_frames=8,
      max_frames=24, height=128, width=64, occlusion_prob=0.7, occlusion_max=0.75,
      frame_jitter=1.5, num_distractors=300, id_offset=0, seed=0)
  assert synthetic_cpu.DATA == 'benchmark' and synthetic_cpu.TOTAL == 300
  assert synthetic_cpu.starts()['reid']['data'] == 'pretrain'


def test_pretraining_pool_is_disjoint_from_the_benchmark():
  pool = synthetic.appearances(synthetic.PRETRAIN)
  bench = synthetic.appearances(synthetic.BENCHMARK)
  assert len(pool['identities']) == 544 and len(bench['identities']) == 728

  def key(ident):  # every continuous draw: equal only for the same random stream
    return (tuple(np.round(ident['colours'].ravel(), 6)), round(ident['width'], 9),
            round(ident['legs'], 9), round(ident['stripe_freq'], 9))
  assert not {key(i) for i in pool['identities']} & {key(i) for i in bench['identities']}
  cam = lambda c: (tuple(np.round(c['gain'], 9)), round(c['brightness'], 9))
  assert not {cam(c) for c in pool['cameras']} & {cam(c) for c in bench['cameras']}
  # Same family: the same generator with the same ranges.
  assert synthetic.PRETRAIN.occlusion_prob == synthetic.BENCHMARK.occlusion_prob


def tiny(preset='student_only'):
  c = synthetic_cpu.get_config(f'preset={preset}')
  c.model.width = 4
  c.input.height, c.input.width = 32, 16
  return c


def save_state(workdir, state):
  ckpt = checkpoint.Checkpoints(RunFolder(workdir), keep=1)
  ckpt.save(1, state, force=True)
  ckpt.wait()
  ckpt.close()


def test_export_round_trips_into_model_pretrained(tmp_path):
  """A model initialised from an exported backbone gives the exporting run's features."""
  c = tiny('student_only')
  state = train_step.create_train_state(c, NUM_CLASSES, jax.random.key(1))
  # Make the trunk differ from any fresh init (as training would).
  state = state.replace(params=jax.tree.map(lambda x: x * 1.5 + 0.01, state.params))
  save_state(str(tmp_path / 'run'), state)
  out = str(tmp_path / 'backbone.npz')
  assert export.main(['export', f'--workdir={tmp_path / "run"}', '--network=student', f'--out={out}']) == 0
  c2 = tiny('mdkt')
  c2.model.pretrained = out
  fresh = train_step.init_variables(c2, NUM_CLASSES, jax.random.key(99))
  _, student = build_models(c.model, NUM_CLASSES)
  images = jax.random.normal(jax.random.key(2), (3, 32, 16, 3))
  want = student.apply({'params': state.params['student'],
                        'batch_stats': state.batch_stats['student']}, images, train=False)
  got = student.apply(fresh['student'], images, train=False)
  np.testing.assert_array_equal(got['features'], want['features'])
  # The teacher's trunk is the same one (non-local blocks keep their own init).
  for name, sub in fresh['teacher']['params']['backbone'].items():
    if 'nonlocal' not in name:
      jax.tree.map(np.testing.assert_array_equal, sub,
                   state.params['student']['backbone'][name])
  assert export.main(['export', f'--workdir={tmp_path / "run"}', '--network=teacher',
                      f'--out={out}']) == 2  # a student_only run has no teacher


def test_joint_mode_starts_from_exactly_the_teacher_stage(tmp_path):
  stage = tiny('teacher_only')
  stage_state = train_step.create_train_state(stage, NUM_CLASSES, jax.random.key(3))
  stage_state = stage_state.replace(params=jax.tree.map(lambda x: x + 0.5, stage_state.params))
  save_state(str(tmp_path / 'stage'), stage_state)
  c = tiny('mdkt')
  c.teacher.checkpoint = str(tmp_path / 'stage')
  state = train_step.initial_state(c, NUM_CLASSES, train_step.make_mesh(jax.devices()[:1]))
  assert c.teacher.mode == 'joint' and set(state.params) == {'teacher', 'student'}
  jax.tree.map(np.testing.assert_array_equal, state.params['teacher'],
               stage_state.params['teacher'])
  jax.tree.map(np.testing.assert_array_equal, state.batch_stats['teacher'],
               stage_state.batch_stats['teacher'])
  # A student-only run has no teacher; a folder with no run has no checkpoints.
  student = tiny('student_only')
  save_state(str(tmp_path / 'student'), train_step.create_train_state(
      student, NUM_CLASSES, jax.random.key(3)))
  with pytest.raises(ValueError, match='teacher.checkpoint must be the workdir'):
    checkpoint.load_teacher(str(tmp_path / 'student'))
  with pytest.raises(FileNotFoundError, match='no checkpoints.*teacher.checkpoint'):
    checkpoint.load_teacher(str(tmp_path / 'nothing'))


def config_of(entry, seed):
  c = synthetic_cpu.get_config(entry['arg'])
  for k, v in entry['overrides'].items():
    if isinstance(v, str) and v.startswith('@'):
      continue
    node = c
    *path, leaf = k.split('.')
    for p in path:
      node = node[p]
    node[leaf] = v
  c.seed = seed
  return c


def test_paired_seeds_give_every_variant_the_same_start():
  rows = [{'label': i // 3, 'pid': i // 3 + 1, 'camid': i % 3 + 1, 'num_frames': 5 + i % 7}
          for i in range(60)]
  entries = [e for e in synthetic_cpu.sweep() if e['overrides'].get('mode') != 'evaluate']
  for seed in (0, 3):
    plans = {}
    for e in entries:
      c = config_of(e, seed)
      i = c.input
      plans[e['name']] = TrainSampler(
          rows, num_ids=i.num_ids, tracklets_per_id=i.tracklets_per_id, clip_len=i.clip_len,
          height=i.height, width=i.width, pad_crop=i.pad_crop, flip=i.flip,
          erasing_prob=i.erasing_prob, seed=c.seed, sampling=i.sampling,
          shuffle_frames=i.shuffle_frames)(0)
    ref = plans['student_only']
    for name, plan in plans.items():
      # Identities and tracklets of the first batch: the same for every variant.
      np.testing.assert_array_equal(plan['rows'], ref['rows'], err_msg=name)
      if name not in ('vkd',):  # vkd samples its frames multi-view (VKD's method)
        for k in ref:
          np.testing.assert_array_equal(plan[k], ref[k], err_msg=f'{name} {k}')
  # Initial weights: the student of student_only and of mdkt are the same at a seed.
  a = train_step.init_variables(tiny('student_only'), NUM_CLASSES, jax.random.key(4))
  b = train_step.init_variables(tiny('mdkt'), NUM_CLASSES, jax.random.key(4))
  jax.tree.map(np.testing.assert_array_equal, a['student'], b['student'])


def test_t_interval_hand_worked():
  # d = (1, 2, 3): mean 2, sd 1, n 3, t_{0.975, 2} = 4.302653 -> 4.302653 / sqrt(3).
  mean, half = sweep_report.t_interval([1.0, 2.0, 3.0])
  assert mean == pytest.approx(2.0)
  assert half == pytest.approx(4.302653 / math.sqrt(3), rel=1e-6)
  assert sweep_report.t_interval([5.0]) == (5.0, None)


def run_line(variant, seed, i2v_map, v2v_map=0.5):
  proto = lambda m: {'mAP': m, 'cmc': [m + 0.1] * 20, 'mINP': 0.0}
  return {'variant': variant, 'seed': seed, 'steps': 10, 'minutes': 1.0,
          'protocols': {'i2v': proto(i2v_map), 'v2v': proto(v2v_map)}}


def test_table_pairs_seeds_and_marks_intervals_that_exclude_zero(tmp_path):
  path = str(tmp_path / 'r.jsonl')
  lines = []
  for seed, (ref, a, b) in enumerate([(0.30, 0.31, 0.30), (0.40, 0.412, 0.43),
                                      (0.35, 0.358, 0.33)]):
    lines += [run_line('student_only', seed, ref), run_line('a', seed, a),
              run_line('b', seed, b)]
  lines.append(run_line('a', 7, 0.99))  # no student_only at seed 7: not paired
  with open(path, 'w') as f:
    f.write('\n'.join(json.dumps(l) for l in lines) + '\n')
  runs = sweep_report.read_results(path)
  seeds, diffs = sweep_report.paired(runs, 'a', 'student_only')
  assert seeds == [0, 1, 2] and diffs == pytest.approx([1.0, 1.2, 0.8])
  text = sweep_report.table(runs, [{'name': 'student_only'}, {'name': 'a', 'about': 'x'},
                                   {'name': 'b'}], references=('student_only',))
  # a: d = (1.0, 1.2, 0.8): mean 1.0, sd 0.2 -> ± 4.3027 * 0.2 / sqrt(3) = 0.50: excludes 0.
  assert '| +1.0 ± 0.5 * |' in text
  # b: d = (0, 3, -2): mean 0.33, interval includes 0: no mark.
  b_row = next(l for l in text.splitlines() if l.startswith('| b |'))
  assert '*' not in b_row and '+0.3 ±' in b_row
  assert '- **a**: x' in text
  # The runs' provenance (run_line records no commit and no processor).
  assert 'Runs (10) by commit: unknown (10); by processor: not recorded (10).' in text
  cpus = [dict(r, commit='abc', cpu='X (avx2)' if r['seed'] else 'Y (avx512)') for r in runs]
  assert sweep_report.provenance(cpus) == (
      'Runs (10) by commit: abc (10); by processor: X (avx2) (7), Y (avx512) (3).')
  # The figure colours what the table stars, and nothing with one seed.
  grey, green, red = '#999999', '#2e8b57', '#c0392b'
  assert [sweep_report.interval_colour(*sweep_report.t_interval(d)) for d in
          ([1.0, 1.2, 0.8], [0.0, 3.0, -2.0], [-1.0, -1.2, -0.8], [-6.8], [])] == [
              green, grey, red, grey, grey]
  png = str(tmp_path / 'fig.png')
  sweep_report.figure(runs, [{'name': 'student_only'}, {'name': 'a'}], png)
  assert open(png, 'rb').read(8) == b'\x89PNG\r\n\x1a\n'
  # A torn last line (an append cut short) is dropped with a note; a damaged line
  # elsewhere is named, with its number.
  with open(path, 'a') as f:
    f.write('{"variant": ')
  assert len(sweep_report.read_results(path)) == len(runs)
  with open(path, 'a') as f:
    f.write('\n' + json.dumps(run_line('c', 0, 0.3)) + '\n')
  with pytest.raises(ValueError, match=r'r.jsonl line 11: not JSON'):
    sweep_report.read_results(path)


def test_a_start_is_recorded_per_run_and_respected_by_the_table(tmp_path):
  """Lines without a start are the default start's; each start gets its own table,
  and paired differences never mix starts."""
  path = str(tmp_path / 'runs.jsonl')
  lines = []
  for seed in range(3):
    lines += [run_line('student_only', seed, 0.30), run_line('mdkt', seed, 0.31 + 0.01 * seed)]
    lines += [dict(run_line('student_only', seed, 0.10), start='scratch'),
              dict(run_line('mdkt', seed, 0.20), start='scratch')]
  lines.append(dict(run_line('mdkt', 0, 0.99), start='generic'))  # no reference there
  with open(path, 'w') as f:
    f.write('\n'.join(json.dumps(l) for l in lines) + '\n')
  runs = sweep_report.read_results(path)
  assert len(runs) == 13  # (variant, seed, start) is one run: nothing overwritten
  groups = sweep_report.by_start(runs, 'reid')
  assert list(groups) == ['reid', 'scratch', 'generic']
  assert sweep_report.paired(groups['scratch'], 'mdkt', 'student_only')[1] == pytest.approx(
      [10.0, 10.0, 10.0])
  variants = [{'name': 'student_only'}, {'name': 'mdkt'}, {'name': 'absent'}]
  paths = sweep_report.write_report(path, variants, str(tmp_path), 'runs', 'reid')
  text = open(paths['table']).read()
  sections = text.split('## Start: ')
  assert [s.split('\n')[0] for s in sections[1:]] == ['reid', 'scratch', 'generic']
  reid, scratch, generic = sections[1:]
  assert '| +2.0 ± ' in reid and '+10.0 ± 0.0 *' in scratch  # d = 1, 2, 3 and 10, 10, 10
  assert '| Δ I2V mAP vs mdkt |' in reid and '-10.0 ± 0.0 *' in scratch  # the preset's column
  assert '| mdkt | 99.0 |' in generic and '| student_only |' not in generic
  assert '| absent |' not in text
  assert [os.path.basename(p) for p in paths['figures']] == [
      'runs.png', 'runs-start-scratch.png', 'runs-start-generic.png']
  # A file holding only another start's runs still names that start.
  only = str(tmp_path / 'only.jsonl')
  with open(only, 'w') as f:
    f.write(json.dumps(dict(run_line('mdkt', 0, 0.5), start='scratch')) + '\n')
  paths = sweep_report.write_report(only, variants, str(tmp_path), 'only', 'reid')
  assert open(paths['table']).read().startswith('## Start: scratch\n')
  assert [os.path.basename(p) for p in paths['figures']] == ['only-start-scratch.png']


def test_tcl_diagnostics_are_kept_per_run_and_drawn_per_start(tmp_path):
  from i2v_jax.experiments import sweep
  d = str(tmp_path / 'run')
  os.makedirs(d)
  with open(os.path.join(d, 'metrics.jsonl'), 'w') as f:
    for step, tcl in ((20, 0.5), (40, 0.1)):
      f.write(json.dumps({'step': step, 'loss/tcl': tcl, 'loss/total': 3.0,
                          'diag/tcl/teacher_p_pos': 0.4, 'diag/tcl/student_p_pos': 0.3}) + '\n')
    f.write(json.dumps({'step': 40, 'i2v/mAP': 0.3}) + '\n')  # an evaluation line
  series = sweep.diagnostics(d)
  assert series == {'step': [20, 40], 'loss/tcl': [0.5, 0.1],
                    'diag/tcl/teacher_p_pos': [0.4, 0.4], 'diag/tcl/student_p_pos': [0.3, 0.3]}
  runs = [dict(run_line('mdkt', s, 0.3), start=st, diagnostics=series)
          for s in range(2) for st in ('reid', 'generic')]
  png = str(tmp_path / 'tcl.png')
  assert sweep_report.tcl_figure(sweep_report.by_start(runs, 'reid'), png)
  assert open(png, 'rb').read(8) == b'\x89PNG\r\n\x1a\n'
  assert not sweep_report.tcl_figure({'reid': [run_line('student_only', 0, 0.3)]}, png + '2')
