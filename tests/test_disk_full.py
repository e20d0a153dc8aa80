"""A full disk during a build, a checkpoint save or a results append: one line
(which folder, the free space, what to do) and what was there before stays whole.

The device filling up is injected where the bytes are written (an OSError ENOSPC,
or TensorFlow's ResourceExhaustedError saying so), since a test cannot rely on
mounting a small filesystem.
"""

import dataclasses
import errno
import hashlib
import json
import os
import threading

import pytest

from data_prep import build, synthetic
from data_prep.writer import DataError
from i2v_jax.run_folder import RunFolder
from i2v_jax import atomic, checkpoint, records
from i2v_jax.errors import DiskFull, UserError, is_disk_full
from i2v_jax.experiments import sweep
from i2v_jax.logging_utils import MetricWriter

TINY = synthetic.SyntheticSpec(num_train_ids=6, num_test_ids=3, min_frames=3, max_frames=5,
                               height=32, width=16)
ENOSPC = OSError(errno.ENOSPC, 'No space left on device')


def tree(folder):
  """{relative path: sha256} of every file under ``folder``."""
  out = {}
  for root, _, files in os.walk(folder):
    for name in files:
      path = os.path.join(root, name)
      out[os.path.relpath(path, folder)] = hashlib.sha256(open(path, 'rb').read()).hexdigest()
  return out


def test_disk_full_is_recognised_through_wrappers():
  import tensorflow as tf
  assert is_disk_full(ENOSPC)
  assert is_disk_full(tf.errors.ResourceExhaustedError(None, None, '; No space left on device'))
  try:
    try:
      raise ENOSPC
    except OSError as e:
      raise ValueError('orbax: save failed') from e
  except ValueError as wrapped:
    assert is_disk_full(wrapped)
  assert not is_disk_full(OSError(errno.EACCES, 'Permission denied'))


def test_a_build_that_fills_the_disk_is_one_line_and_resumes(tmp_path, monkeypatch):
  out = tmp_path / 'syn'
  build.build('synthetic', str(out), spec=TINY, show_progress=False)
  before = tree(out)
  other = dataclasses.replace(TINY, seed=1)
  import tensorflow as tf
  real = tf.io.TFRecordWriter
  written = {'records': 0}

  class FillsUp:  # the device fills after a few records
    def __init__(self, path):
      self._w = real(path)

    def write(self, record):
      written['records'] += 1
      if written['records'] > 5:
        raise tf.errors.ResourceExhaustedError(None, None, 'write failed: No space left on device')
      self._w.write(record)

    def __enter__(self):
      return self

    def __exit__(self, *exc):
      self._w.close()

  monkeypatch.setattr(tf.io, 'TFRecordWriter', FillsUp)
  with pytest.raises(DataError) as e:
    build.build('synthetic', str(out), spec=other, show_progress=False, overwrite=True,
                workers=1)
  line = str(e.value)
  assert '\n' not in line and f'{out}.staging: no space left on the device' in line
  assert 'MB free' in line and 'run the same command again' in line
  assert tree(out) == before  # the finished dataset is untouched
  staging = tmp_path / 'syn.staging'
  assert not [n for n in os.listdir(staging) if '.tmp-' in n]  # no partial shard
  monkeypatch.undo()
  meta = build.build('synthetic', str(out), spec=other, show_progress=False, overwrite=True)
  fresh = tmp_path / 'fresh'
  build.build('synthetic', str(fresh), spec=other, show_progress=False)
  assert meta['protocol']['spec']['seed'] == 1
  shards = lambda t: {k: v for k, v in t.items() if '.tfrecord-' in k}
  assert shards(tree(out)) == shards(tree(fresh))  # resumed = built in one go
  assert not os.path.exists(staging)


def _state(value):
  import jax.numpy as jnp
  return {'params': {'w': jnp.full((4, 3), value, jnp.float32)}}


def test_a_checkpoint_save_that_fills_the_disk_keeps_the_previous_ones(tmp_path, monkeypatch):
  ckpt = checkpoint.Checkpoints(RunFolder(str(tmp_path / 'run')), keep=2)
  ckpt.save(1, _state(1.0), force=True)
  before = tree(tmp_path / 'run')

  def fills_up(step, args, force=False):  # orbax writes a step under a temporary name
    partial = os.path.join(ckpt.directory, f'{step}.orbax-checkpoint-tmp-1234')
    os.makedirs(partial)
    with open(os.path.join(partial, 'half'), 'wb') as f:
      f.write(b'x' * 10)
    raise ValueError('tensorstore write failed') from ENOSPC

  monkeypatch.setattr(ckpt.manager, 'save', fills_up)
  with pytest.raises(DiskFull) as e:
    ckpt.save(2, _state(2.0), force=True)
  line = str(e.value)
  assert '\n' not in line and 'no space left on the device while saving checkpoint 2' in line
  assert 'checkpoints kept before it ([1]) are whole' in line
  assert tree(tmp_path / 'run') == before  # the partial folder is gone, step 1 unchanged
  monkeypatch.undo()
  assert checkpoint.verify(ckpt.directory, 1, require=True) is None
  restored, step = ckpt.restore(_state(0.0))
  assert step == 1 and float(restored['params']['w'][0, 0]) == 1.0
  ckpt.close()


def test_results_and_logs_that_fill_the_disk_stay_whole(tmp_path, monkeypatch):
  # The sweep's results file: the append is undone.
  path = str(tmp_path / 'results.jsonl')
  sweep.append_line(path, {'variant': 'a', 'seed': 0}, threading.Lock())
  before = open(path, 'rb').read()

  def fsync_fails(fd):
    raise ENOSPC

  monkeypatch.setattr(os, 'fsync', fsync_fails)
  with pytest.raises(DiskFull, match=r'results.jsonl: no space left on the device .* while adding b'):
    sweep.append_line(path, {'variant': 'b', 'seed': 0}, threading.Lock())
  monkeypatch.undo()
  assert open(path, 'rb').read() == before
  # A file written whole (results.md, config.json, indexes): the old one stays.
  target = tmp_path / 'results.md'
  atomic.write_text('old', str(target))
  real_open = open

  def open_fails(file, mode='r', *args, **kwargs):
    if 'w' in mode and '.tmp-' in str(file):
      handle = real_open(file, mode, *args, **kwargs)
      handle.close()
      raise ENOSPC
    return real_open(file, mode, *args, **kwargs)

  monkeypatch.setattr('builtins.open', open_fails)
  with pytest.raises(DiskFull, match='results.md: no space left on the device'):
    atomic.write_text('new', str(target))
  monkeypatch.undo()
  assert target.read_text() == 'old' and os.listdir(tmp_path) == ['results.jsonl', 'results.md']
  # metrics.jsonl: the line that did not fit is cut, the earlier ones stay.
  workdir = tmp_path / 'run'
  workdir.mkdir()
  log = MetricWriter(str(workdir))
  log.write(1, {'loss/total': 1.0})

  class Full:
    def __init__(self, f):
      self.f, self.name = f, f.name

    def tell(self):
      return self.f.tell()

    def write(self, text):
      self.f.write(text[:5])
      self.f.flush()
      raise ENOSPC

    def close(self):
      self.f.close()

  log._jsonl = Full(log._jsonl)
  with pytest.raises(DiskFull, match='metrics.jsonl: no space left.*logging step 2'):
    log.write(2, {'loss/total': 0.5})
  log.close()
  rows = [json.loads(line) for line in open(workdir / 'metrics.jsonl')]
  assert rows == [{'step': 1, 'loss/total': 1.0}]
  assert issubclass(DiskFull, UserError)


def test_an_overwrite_swap_killed_between_its_renames_is_finished_by_the_rerun(tmp_path, capsys):
  out = tmp_path / 'syn'
  build.build('synthetic', str(out), spec=TINY, show_progress=False)
  other = dataclasses.replace(TINY, seed=1)
  fresh = tmp_path / 'fresh'
  build.build('synthetic', str(fresh), spec=other, show_progress=False)
  # What a kill between the two renames of an --overwrite leaves: the old dataset
  # set aside, the complete new one still in staging, out_dir missing.
  os.rename(out, f'{out}.old-4242')
  os.rename(fresh, f'{out}.staging')
  with pytest.raises(records.DatasetError, match=r'interrupted.*syn\.staging: run the same'):
    records.load_metadata(str(out))  # a reader says where the dataset is and what to do
  meta = build.build('synthetic', str(out), spec=other, show_progress=False, overwrite=True)
  assert 'put in place the complete build' in capsys.readouterr().out
  assert meta['protocol']['spec']['seed'] == 1
  assert sorted(os.listdir(tmp_path)) == ['syn']  # no .old-*, no .staging, no lock left
  assert records.load_metadata(str(out))['protocol']['spec']['seed'] == 1


def test_a_lock_or_a_sweep_figure_that_fills_the_disk_is_one_line(tmp_path, monkeypatch):
  from i2v_jax import locks
  from i2v_jax.experiments import report

  def write_fails(fd, data):
    raise ENOSPC

  monkeypatch.setattr(os, 'write', write_fails)
  lock = str(tmp_path / 'eval' / 'lock')
  with pytest.raises(DiskFull) as e:
    with locks.hold(lock, 'the evaluation into eval/x', remove=True):
      pass
  assert '\n' not in str(e.value) and str(e.value).startswith(
      f'{lock}: no space left on the device (')
  assert 'for the lock of the evaluation into eval/x; nothing was changed' in str(e.value)
  monkeypatch.undo()
  assert os.listdir(tmp_path / 'eval') == []
  # The sweep's figure: savefig fills the disk half-way; nothing is left.
  import matplotlib.figure

  def savefig_fails(self, fname, **kwargs):
    with open(fname, 'wb') as f:
      f.write(b'\x89PNG half')
    raise ENOSPC

  monkeypatch.setattr(matplotlib.figure.Figure, 'savefig', savefig_fails)
  runs = [{'variant': v, 'seed': s, 'protocols': {'i2v': {'mAP': 0.4 + s / 100 + (v == 'mdkt') / 50}}}
          for v in ('student_only', 'mdkt') for s in (0, 1)]
  figure = str(tmp_path / 'sweep.png')
  with pytest.raises(DiskFull, match='sweep.png: no space left on the device'):
    report.figure(runs, [{'name': 'student_only'}, {'name': 'mdkt'}], figure)
  assert sorted(os.listdir(tmp_path)) == ['eval']


@pytest.mark.slow
def test_a_real_full_disk_during_a_checkpoint_save_is_one_line(tmp_path, cli_data_dir):
  """On a 3 MB filesystem the first checkpoint save fills it: one line, exit 2 (it
  was ~2,500 lines of orbax and tensorstore thread tracebacks first). Needs root
  to mount a tmpfs; skipped elsewhere."""
  import subprocess
  from tests.cli import ENV, REPO, command
  disk = tmp_path / 'disk'
  disk.mkdir()
  mounted = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=3m', 'tmpfs', str(disk)],
                           capture_output=True)
  if mounted.returncode:
    pytest.skip('cannot mount a small tmpfs here (needs root)')
  try:
    run = subprocess.run(command(str(disk / 'run'), cli_data_dir, '--config.model.width=8',
                                 steps=4), env=ENV, cwd=REPO, capture_output=True, text=True,
                         timeout=600)
    tf_startup = ('WARNING: All log messages before absl::InitializeLog()', 'I0000 ')
    lines = [ln for ln in run.stderr.strip().splitlines() if not ln.startswith(tf_startup)]
    assert run.returncode == 2 and len(lines) == 1, run.stderr[-3000:]
    assert 'no space left on the device while saving checkpoint 3' in lines[0], lines
    assert not [n for n in os.listdir(disk / 'run' / 'checkpoints') if 'tmp' in n]
  finally:
    subprocess.run(['umount', str(disk)], capture_output=True)
