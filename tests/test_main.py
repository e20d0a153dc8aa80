"""The command line end to end: train, kill -9, resume exactly; NaN stops the run."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import orbax.checkpoint as ocp
import pytest

from tests.cli import ENV, REPO, command

pytestmark = pytest.mark.slow


@pytest.fixture
def data_dir(cli_data_dir):
  return cli_data_dir


def losses(workdir):
  """Last logged total loss per step (a resumed run logs steps again)."""
  out = {}
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    for line in f:
      row = json.loads(line)
      if 'loss/total' in row:  # evaluation rows carry i2v/mAP etc. instead
        out[row['step']] = row['loss/total']
  return out


def final_params(workdir, step=6):
  manager = ocp.CheckpointManager(os.path.join(workdir, 'checkpoints'))
  tree = manager.restore(step, args=ocp.args.StandardRestore())
  manager.close()
  return tree


@pytest.fixture(scope='module')
def straight_run(tmp_path_factory, cli_data_dir):
  straight = str(tmp_path_factory.mktemp('straight') / 'run')
  subprocess.run(command(straight, cli_data_dir), env=ENV, cwd=REPO, check=True,
                 capture_output=True, timeout=600)
  return straight


@pytest.mark.parametrize('signum', [signal.SIGKILL, signal.SIGINT, signal.SIGTERM],
                         ids=['kill-9', 'ctrl-c', 'sigterm'])
def test_interrupt_and_resume_reproduces_the_straight_run(tmp_path, data_dir, straight_run,
                                                          signum):
  """kill -9 after the step-3 checkpoint loses what followed it; Ctrl-C and
  SIGTERM, sent while the first step compiles, save step 1 and exit 128 + signal.
  Each resumes to the straight run's losses and weights, bit for bit.
  (bench/fault_trial.py sends them at random moments, many times.)"""
  killed = str(tmp_path / 'killed')
  proc = subprocess.Popen(command(killed, data_dir), env=ENV, cwd=REPO, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
  if signum == signal.SIGKILL:
    deadline = time.time() + 600
    while not os.path.isdir(os.path.join(killed, 'checkpoints', '3')):
      assert proc.poll() is None and time.time() < deadline, 'no checkpoint at step 3'
      time.sleep(0.2)
    proc.send_signal(signum)
    proc.wait()
  else:
    for line in proc.stdout:  # the handler is in place before the compilation starts
      if line.startswith('compiling the train step'):
        proc.send_signal(signum)
        break
    out = proc.stdout.read()
    assert proc.wait(timeout=600) == 128 + signum, out
    assert f'signal {signum}: saved step 1, exiting' in out
    assert os.listdir(os.path.join(killed, 'checkpoints')) == ['1']
  resumed = subprocess.run(command(killed, data_dir), env=ENV, cwd=REPO, check=True,
                           capture_output=True, text=True, timeout=600)
  assert 'resumed from' in resumed.stdout
  a, b = losses(straight_run), losses(killed)
  assert [a[s] for s in (4, 5, 6)] == [b[s] for s in (4, 5, 6)]
  pa, pb = final_params(straight_run), final_params(killed)
  import jax
  for x, y in zip(jax.tree.leaves(pa), jax.tree.leaves(pb)):
    np.testing.assert_array_equal(x, y)
  assert int(pb['step']) == 6


def test_non_finite_loss_names_the_term(tmp_path, data_dir):
  run = subprocess.run(command(str(tmp_path / 'nan'), data_dir,
                               '--config.loss.triplet.margin=nan'),
                       env=ENV, cwd=REPO, capture_output=True, text=True, timeout=600)
  assert run.returncode != 0
  assert 'loss/triplet/teacher' in run.stderr and 'not finite' in run.stderr


def test_vkd_second_stage_loads_the_teacher_only_run(tmp_path, data_dir):
  teacher = str(tmp_path / 'teacher')
  subprocess.run(command(teacher, data_dir, preset='vkd_teacher', steps=2),  # VKD stage 1
                 env=ENV, cwd=REPO, check=True, capture_output=True, timeout=600)
  student = str(tmp_path / 'vkd')
  # Stage 2 on one device: the teacher written by a 2-device run loads anyway.
  one_device = dict(ENV, XLA_FLAGS=ENV['XLA_FLAGS'].replace('device_count=2', 'device_count=1'))
  run = subprocess.run(command(student, data_dir, f'--config.teacher.checkpoint={teacher}',
                               preset='vkd', steps=2),
                       env=one_device, cwd=REPO, capture_output=True, text=True, timeout=600)
  assert run.returncode == 0, run.stderr[-2000:]
  with open(os.path.join(student, 'metrics.jsonl')) as f:
    rows = [json.loads(line) for line in f]
  last = [r for r in rows if 'loss/total' in r][-1]
  assert 'i2v/mAP' in rows[-1]  # evaluated at the end, with the frozen teacher's gallery
  assert np.isfinite(last['loss/vkd/logits']) and np.isfinite(last['loss/vkd/distance'])


def test_evaluations_keep_the_best_checkpoint_and_evaluate_mode_reloads_it(tmp_path, data_dir):
  workdir = str(tmp_path / 'run')
  # A missing workdir in evaluate mode is named, with what to do.
  run = subprocess.run(command(workdir, data_dir, '--config.mode=evaluate'), env=ENV, cwd=REPO,
                       capture_output=True, text=True, timeout=600)
  assert run.returncode != 0 and 'no checkpoints/ folder there; train into' in run.stderr
  run = subprocess.run(command(workdir, data_dir, '--config.train.eval_every=3',
                               '--config.optim.lr=3e-3', preset='student_only'),
                       env=ENV, cwd=REPO, capture_output=True, text=True, timeout=600)
  assert run.returncode == 0, run.stderr[-2000:]
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    evals = {r['step']: r['i2v/mAP'] for r in map(json.loads, f) if 'i2v/mAP' in r}
  assert sorted(evals) == [3, 6]
  best_step = max(evals, key=lambda s: (evals[s], -s))  # ties keep the earlier one
  assert os.listdir(os.path.join(workdir, 'checkpoints_best')) == [str(best_step)]
  assert '| i2v |' in run.stdout and os.path.exists(os.path.join(workdir, 'results.md'))
  assert '\r' not in run.stdout + run.stderr  # piped: plain lines, no bar redraws
  with open(os.path.join(workdir, 'results.md')) as f:
    training_results = f.read()
  # Evaluate mode without --config: the run's own config.json, eval.* on top.
  evaluate = [sys.executable, '-m', 'i2v_jax.main', f'--workdir={workdir}',
              '--config.mode=evaluate']
  run = subprocess.run(evaluate + ['--config.eval.checkpoint=best', '--config.eval.export=True'],
                       env=ENV, cwd=REPO, capture_output=True, text=True, timeout=600)
  assert run.returncode == 0, run.stderr[-2000:]
  best_dir = os.path.join(workdir, 'eval', f'{best_step}-best')
  with open(os.path.join(best_dir, 'results.json')) as f:
    results = json.load(f)
  assert results['step'] == best_step
  assert 100 * results['protocols']['i2v']['mAP'] == pytest.approx(evals[best_step], abs=1e-3)
  assert os.path.exists(os.path.join(best_dir, 'features-query-image.npz'))
  with open(os.path.join(best_dir, 'results.md')) as f:
    assert f'step {best_step} (best)' in f.readline()
  # A second evaluation keeps its own results; training's are untouched.
  run = subprocess.run(evaluate + ['--config.eval.tag=euclid', '--config.eval.distance=euclidean'],
                       env=ENV, cwd=REPO, capture_output=True, text=True, timeout=600)
  assert run.returncode == 0, run.stderr[-2000:]
  assert os.path.exists(os.path.join(workdir, 'eval', '6-latest-euclid', 'results.json'))
  with open(os.path.join(workdir, 'eval', 'index.jsonl')) as f:
    index = [json.loads(line) for line in f]
  assert [e['dir'] for e in index] == [f'eval/{best_step}-best', 'eval/6-latest-euclid']
  with open(os.path.join(workdir, 'results.md')) as f:
    assert f.read() == training_results
  # Another preset's config on this run is refused, naming what differs.
  run = subprocess.run(command(workdir, data_dir, '--config.mode=evaluate', preset='tkp'),
                       env=ENV, cwd=REPO, capture_output=True, text=True, timeout=600)
  assert run.returncode != 0 and "preset: 'student_only' -> 'tkp'" in run.stderr
  assert run.stderr.strip().splitlines()[-1].startswith('error: evaluating the run in')
  # The training command again on the finished run: nothing to train, it re-evaluates
  # (here with re-ranking added) and may replace the best checkpoint of the same step.
  os.remove(os.path.join(workdir, 'results.json'))
  run = subprocess.run(command(workdir, data_dir, '--config.train.eval_every=3',
                               '--config.optim.lr=3e-3', '--config.eval.rerank=True',
                               preset='student_only'),
                       env=ENV, cwd=REPO, capture_output=True, text=True, timeout=600)
  assert run.returncode == 0, run.stderr[-2000:]
  with open(os.path.join(workdir, 'results.json')) as f:
    results = json.load(f)
  assert results['step'] == 6 and 'i2v+rerank' in results['protocols']


def test_tkp_preset_trains_with_bfloat16_compute(tmp_path, data_dir):
  # With mdkt (above), teacher_only and vkd, and student_only, every preset trains here.
  workdir = str(tmp_path / 'tkp')
  run = subprocess.run(command(workdir, data_dir, '--config.model.dtype=bfloat16',
                               preset='tkp', steps=2),
                       env=ENV, cwd=REPO, capture_output=True, text=True, timeout=600)
  assert run.returncode == 0, run.stderr[-2000:]
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    rows = [json.loads(line) for line in f]
  train_rows = [r for r in rows if 'loss/total' in r]
  for key in ('loss/tkp/feature', 'loss/tkp/distance', 'loss/triplet/student_to_teacher'):
    assert all(np.isfinite(r[key]) for r in train_rows), key
  assert 0.0 <= rows[-1]['i2v/mAP'] <= 100.0


def test_a_damaged_query_shard_exits_2_promptly(tmp_path, synthetic_data):
  """Faults C: a CRC error in a record read inside tf.data is one line and exit 2,
  not a process that hangs at exit (48 query tracklets keep many reads in flight)."""
  import dataclasses
  import glob
  import shutil
  from tests.conftest import CLI_DATA
  data = synthetic_data(dataclasses.replace(CLI_DATA, num_test_ids=48, min_frames=8,
                                            max_frames=16))
  workdir = str(tmp_path / 'run')
  subprocess.run(command(workdir, data, steps=2), env=ENV, cwd=REPO, check=True,
                 capture_output=True, timeout=600)
  bad = str(tmp_path / 'bad')
  shutil.copytree(data, bad)
  shard = glob.glob(os.path.join(bad, '*-query.tfrecord-*'))[0]
  with open(shard, 'r+b') as f:
    f.seek(os.path.getsize(shard) * 3 // 4)
    byte = f.read(1)
    f.seek(-1, os.SEEK_CUR)
    f.write(bytes([byte[0] ^ 1]))
  run = subprocess.run([sys.executable, '-m', 'i2v_jax.main', f'--workdir={workdir}',
                        '--config.mode=evaluate', f'--config.data.dir={bad}'],
                       env=ENV, cwd=REPO, capture_output=True, text=True, timeout=300)
  assert run.returncode == 2
  errors = [l for l in run.stderr.splitlines() if l.startswith('error:')]
  assert len(errors) == 1 and 'CRC mismatch' in errors[0] and shard in errors[0]
