"""Every bad input a user can give the training command: one line naming the key
or file and the fix, exit status 2, nothing written, nothing compiled.

Each case runs `python -m i2v_jax.main` in a subprocess. With
``JAX_PLATFORMS=nosuch`` no JAX backend can start, so a case that answered only
after touching devices or compiling would end in a backend traceback instead of
its line; cases that need the device count run on 2 CPU devices.
"""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from i2v_jax import defaults
from tests.cli import ENV, REPO

BASE = 'configs/base.py:preset=mdkt,runlocal'


def _data_copy(tmp_path, data_dir, edit):
  """A copy of the tiny dataset with one file edited by ``edit(folder)``."""
  out = str(tmp_path / 'data')
  shutil.copytree(data_dir, out)
  edit(out)
  return out


def _write(path, text):
  with open(path, 'w', encoding='utf-8') as f:
    f.write(text)
  return path


def _metadata_list(d):
  _write(os.path.join(d, 'metadata.json'), '[1, 2]')


def _metadata_no_classes(d):
  path = os.path.join(d, 'metadata.json')
  meta = json.load(open(path, encoding='utf-8'))
  meta.pop('num_classes')
  _write(path, json.dumps(meta))


def _bad_index(d):
  # (A missing index is not an error: it is computed from the shards, as for a
  # `tfds build` output.)
  _write(os.path.join(d, 'index-query.json'), '{"rows": [')


def _pretrained(kind):
  def make(tmp_path):
    path = str(tmp_path / 'pretrained.npz')
    if kind == 'truncated':
      np.savez(path, **{'conv1/kernel': np.zeros((7, 7, 3, 8), np.float32)})
      size = os.path.getsize(path)
      with open(path, 'r+b') as f:
        f.truncate(size // 2)
    elif kind == 'pickled':
      np.savez(path, **{'conv1/kernel': np.array([{'a': 1}], dtype=object)})
    elif kind == 'empty':
      np.savez(path)
    elif kind == 'other prefixes':  # a whole model's file, not a backbone's
      np.savez(path, **{'model/params/conv1/kernel': np.zeros((7, 7, 3, 4), np.float32)})
    elif kind == 'batch statistics only':
      np.savez(path, **{'batch_stats/bn1/mean': np.zeros(4, np.float32),
                        'batch_stats/bn1/var': np.ones(4, np.float32)})
    elif kind == 'negative variances':
      np.savez(path, **{'batch_stats/bn1/var': -np.ones(4, np.float32)})
    return path
  return make


def _config_file(text):
  def make(tmp_path):
    return _write(str(tmp_path / 'my_config.py'), text)
  return make


_EDITED_BASE = ('from configs import base\n\ndef get_config():\n'
                '  c = base.get_config("runlocal")\n  c.unlock()\n  {edit}\n  return c\n')
# A config without its eval group lacks every eval key (all plain values): the
# line counts them and names the first three in order.
_EVAL_KEYS = sorted(f'eval.{k}' for k in defaults.get_config().eval)
_LACKS_EVAL = f'the config lacks {len(_EVAL_KEYS)} keys ({", ".join(_EVAL_KEYS[:3])}...)'


# (id, arguments after the base config, a piece of the expected line,
#  'nosuch' or 'cpu', data edit or None, file maker or None)
CASES = [
    ('misspelt leaf key', ['--config.train.num_stepz=20'],
     'did you mean --config.train.num_steps?', 'nosuch', None, None),
    ('misspelt group', ['--config.trian.num_steps=20'],
     'did you mean --config.train.num_steps?', 'nosuch', None, None),
    ('unknown preset', [], "preset='mdtk'", 'nosuch', None, None),
    ('lr not a number', ['--config.optim.lr=abc'], "could not convert string to float: 'abc'",
     'nosuch', None, None),
    ('num_steps not an integer', ['--config.train.num_steps=2.5'], "'2.5'", 'nosuch', None, None),
    ('negative lr', ['--config.optim.lr=-1'], 'optim.lr=-1.0: must be greater than 0',
     'nosuch', None, None),
    ('zero height', ['--config.input.height=0'], 'input.height=0: must be at least 1',
     'nosuch', None, None),
    ('zero student frames', ['--config.input.student_frames=0'],
     'input.student_frames=0: must be at least 1', 'nosuch', None, None),
    ('frozen teacher without checkpoint', ['--config.teacher.mode=frozen'],
     'teacher.mode=frozen needs --config.teacher.checkpoint', 'nosuch', None, None),
    ('keep no checkpoint', ['--config.train.keep_checkpoints=0'],
     'train.keep_checkpoints=0: must be at least 1', 'nosuch', None, None),
    ('misspelt best metric', ['--config.train.best_metric=i2v/mAp'], "did you mean 'i2v/mAP'",
     'nosuch', None, None),
    ('data.dir never built', ['--config.data.dir={tmp}/nothing'], 'nothing', 'nosuch', None, None),
    ('metadata.json a list', [], 'metadata.json', 'nosuch', _metadata_list, None),
    ('metadata.json without num_classes', [], 'num_classes', 'nosuch', _metadata_no_classes, None),
    ('index file not JSON', [], 'index-query.json', 'nosuch', _bad_index, None),
    ('pretrained missing', ['--config.model.pretrained={tmp}/none.npz'], 'none.npz',
     'nosuch', None, None),
    ('pretrained truncated', ['--config.model.pretrained={file}'], 'pretrained.npz',
     'nosuch', None, _pretrained('truncated')),
    ('pretrained pickled', ['--config.model.pretrained={file}'], 'pretrained.npz',
     'nosuch', None, _pretrained('pickled')),
    # A file that fits nothing trained from random weights while saying it loaded them.
    ('pretrained with no arrays', ['--config.model.pretrained={file}'],
     '(teacher): 85 of the 85 backbone arrays the model needs are not in the file (params/bn1',
     'nosuch', None, _pretrained('empty')),
    ('pretrained with other key prefixes', ['--config.model.pretrained={file}'],
     "keys under ['model'] are not params/ or batch_stats/", 'nosuch', None,
     _pretrained('other prefixes')),
    ('pretrained batch statistics only', ['--config.model.pretrained={file}'],
     'backbone arrays the model needs are not in the file (params/', 'nosuch', None,
     _pretrained('batch statistics only')),
    ('pretrained negative variances', ['--config.model.pretrained={file}'],
     'batch_stats/bn1/var has 4 negative variances', 'nosuch', None,
     _pretrained('negative variances')),
    ('teacher checkpoint nowhere', ['--config.teacher.checkpoint={tmp}/no_run'],
     'no_run: no checkpoints/ folder there',
     'nosuch', None, None),
    ('teacher checkpoint a dataset', ['--config.teacher.checkpoint={data}'],
     'no checkpoints/ folder there',
     'nosuch', None, None),
    ('evaluate a workdir without checkpoints', ['--config.mode=evaluate'],
     'run: no checkpoints/ folder there', 'nosuch', None, None),
    ('evaluate another workdir without checkpoints',
     ['--config.mode=evaluate', '--config.eval.from_workdir={tmp}/other'],
     'other: no checkpoints/ folder there', 'nosuch', None, None),
    ('P not a multiple of the devices', ['--config.input.num_ids=3'],
     'input.num_ids=3', 'cpu', None, None),
    # The config names another dataset than the folder holds (it trained silently).
    ('veri config on a synthetic folder', [],
     "config data.name='veri' but", 'nosuch', None, None),
    # Rules the losses, re-ranking, visualisation and the model checked only when
    # they ran (inside the traced loss, at the first evaluation): now one line first.
    ('TCL with no negatives', ['--config.loss.tcl.num_negatives=0'],
     'loss.tcl.num_negatives=0: must be at least 1', 'nosuch', None, None),
    ('more identities a batch than the dataset has', ['--config.input.num_ids=16'],
     'input.num_ids=16 (P of the P x K batch) but', 'nosuch', None, None),
    ('re-ranking k1 of 0', ['--config.eval.rerank=True', '--config.eval.rerank_k1=0'],
     'eval.rerank_k1=0, rerank_k2=6, rerank_lambda=0.3: k1 and k2 must be at least 1',
     'nosuch', None, None),
    ('re-ranking lambda above 1', ['--config.eval.rerank_lambda=1.5'],
     'lambda in [0, 1]', 'nosuch', None, None),
    ('pictures of queries the dataset lacks', ["--config.eval.visualize_queries=('nope',)"],
     "config eval.visualize_queries: ['nope'] not in", 'nosuch', None, None),
    ('non-local block beyond its stage', ['--config.model.nonlocal_blocks.layer3=(5,)'],
     'model.nonlocal_blocks.layer3=(5,): blocks [5] do not exist in a stage of 1 blocks',
     'nosuch', None, None),
    ('negative visualise count', ['--config.eval.visualize=-1'],
     'eval.visualize=-1: must be 0 (off) or more', 'nosuch', None, None),
    ('zero width', ['--config.model.width=0'], 'model.width=0: the base width', 'nosuch',
     None, None),
    ('empty stages', ['--config.model.stage_sizes=(0, 0, 0, 0)'],
     'model.stage_sizes=(0, 0, 0, 0): blocks in each of the 4 stages', 'nosuch', None, None),
    ('an eval tag that leaves the workdir', ['--config.eval.tag=../../../../x'],
     "eval.tag='../../../../x': it must be one plain name", 'nosuch', None, None),
    # The fault trial's inputs that trained anyway.
    ('infinite lr', ['--config.optim.lr=inf'], 'optim.lr=inf: must be a finite number',
     'nosuch', None, None),
    ('negative decay factor', ['--config.optim.decay_factor=-0.1'],
     'optim.decay_factor=-0.1: the multistep factor must be in (0, 1]', 'nosuch', None, None),
    ('decay point outside the run', ['--config.optim.decay_at=(0.5, 1.5)'],
     'optim.decay_at=(0.5, 1.5): each decay point is a fraction', 'nosuch', None, None),
    ('label smoothing of 2', ['--config.loss.id.label_smoothing=2.0'],
     'loss.id.label_smoothing=2.0: epsilon must be in [0, 1)', 'nosuch', None, None),
    ('last stride of 3', ['--config.model.last_stride=3'], 'model.last_stride=3: 1 (re-ID) or 2',
     'nosuch', None, None),
    ('negative loss weight', ['--config.loss.id.student=-1'],
     "loss.id.student=-1.0: a term's weight must be a finite number, 0 (off) or more",
     'nosuch', None, None),
    ('negative seed', ['--config.seed=-1'], 'config seed=-1: must be 0 or more', 'nosuch',
     None, None),
    ('negative width', ['--config.model.width=-8'], 'model.width=-8: the base width must be',
     'nosuch', None, None),
    ('a tuple key given an int', ['--config.model.stage_sizes=4'],
     'model.stage_sizes=(4,): blocks in each of the 4 stages', 'nosuch', None, None),
    ('a tuple key given a bare string', ['--config.networks=teacher'],
     "loss term 'id/student' (loss.id.student) has weight 1.0 but the run has no student",
     'nosuch', None, None),
    ('three stages', ['--config.model.stage_sizes=(1, 1, 1)'],
     'model.stage_sizes=(1, 1, 1): blocks in each of the 4 stages', 'nosuch', None, None),
    ('a weighted term without its network', ['--config.networks=("student",)'],
     "loss term 'id/teacher' (loss.id.teacher) has weight 1.0 but the run has no teacher",
     'nosuch', None, None),
    ('index file a symlink loop', [], 'index-query.json: damaged index', 'nosuch',
     lambda d: (os.remove(os.path.join(d, 'index-query.json')),
                os.symlink('index-query.json', os.path.join(d, 'index-query.json'))), None),
    ('config file that exits', [], 'the config file exited (sys.exit(0))', 'nosuch', None,
     _config_file('import sys\nsys.exit(0)\n')),
    # Each shape of a flag or config-file error (config_lib.flag_error_line).
    ('misspelt key three deep', ['--config.loss.tcl.weigth=1'],
     'no such config key; did you mean --config.loss.tcl.weight?', 'nosuch', None, None),
    ('misspelt top-level key', ['--config.sed=1'],
     'no such config key; did you mean --config.seed?', 'nosuch', None, None),
    ('misspelt group inside a key', ['--config.loss.tlc.weight=1'],
     'no such config key; did you mean --config.loss.tcl.weight?', 'nosuch', None, None),
    ('a value given to a group', ['--config.loss=3'],
     '--config.loss: loss is a group of keys, not one value', 'nosuch', None, None),
    ('misspelt command flag', ['--work_dir=x'],
     '--work_dir: no such flag; did you mean --workdir?', 'nosuch', None, None),
    ('boolean given yes', ['--config.eval.rerank=yes'],
     'flag --config.eval.rerank=yes: Non-boolean argument to boolean flag: yes', 'nosuch',
     None, None),
    ('config file missing', [], 'none.py: no such file or directory; pass a config file',
     'nosuch', None, None),
    ('config file a directory', [], 'is a directory; pass a config file', 'nosuch', None, None),
    ('config file raises', [], 'my_config.py: boom', 'nosuch', None,
     _config_file('def get_config():\n  raise RuntimeError("boom")\n')),
    ('config file with a syntax error', [], 'my_config.py: invalid syntax', 'nosuch', None,
     _config_file('def get_config(:\n')),
    ('config file lacking keys', [], _LACKS_EVAL, 'nosuch', None,
     _config_file(_EDITED_BASE.format(edit='del c["eval"]'))),
    ('config file with an unknown key', [], 'has keys the code does not read (extra)', 'nosuch',
     None, _config_file(_EDITED_BASE.format(edit='c.extra = 3'))),
]
CONFIGS = {'unknown preset': BASE.replace('mdkt', 'mdtk'),
           'veri config on a synthetic folder': BASE.replace('runlocal', 'dataset=veri,runlocal'),
           'config file missing': '{tmp}/none.py', 'config file a directory': '{tmp}',
           'config file raises': '{file}', 'config file with a syntax error': '{file}',
           'config file lacking keys': '{file}', 'config file with an unknown key': '{file}',
           'config file that exits': '{file}'}


@pytest.mark.slow
@pytest.mark.parametrize('name, extra, expected, platform, edit, maker', CASES,
                         ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_nothing_written(
    tmp_path, cli_data_dir, name, extra, expected, platform, edit, maker):
  data = _data_copy(tmp_path, cli_data_dir, edit) if edit else cli_data_dir
  file = maker(tmp_path) if maker else ''
  extra = [a.format(tmp=tmp_path, data=data, file=file) for a in extra]
  config = CONFIGS.get(name, BASE).format(tmp=tmp_path, file=file)
  workdir = tmp_path / 'run'
  before = sorted(os.listdir(data))
  run = subprocess.run(
      [sys.executable, '-m', 'i2v_jax.main', f'--config={config}', f'--workdir={workdir}',
       f'--config.data.dir={data}', '--config.model.width=4', *extra],
      env=dict(ENV, JAX_PLATFORMS=platform), cwd=REPO, capture_output=True, text=True,
      timeout=60)
  lines = run.stderr.strip().splitlines()
  assert run.returncode == 2 and len(lines) == 1, run.stderr[-2000:]
  assert lines[0].startswith('error: ') and expected in lines[0], lines[0]
  assert not workdir.exists() or not os.listdir(workdir), os.listdir(workdir)
  assert sorted(os.listdir(data)) == before


@pytest.mark.slow
def test_a_workdir_that_is_a_file_and_overrides_without_a_config(tmp_path):
  file = tmp_path / 'run'
  file.write_text('notes')
  env = dict(ENV, JAX_PLATFORMS='nosuch')
  for args, expected in (
      ([f'--config={BASE}', f'--workdir={file}'], f'--workdir={file} is a file'),
      ([f'--workdir={tmp_path / "new"}', '--config.mode=evaluate'],
       f'--workdir={tmp_path / "new"}: no such folder; --config.<key> overrides need'),
      (['--config.mode=evaluate'], '--config.<key> overrides need --config=<config file>'),
      # The synthetic set is built on demand (about 40 s): a missing file is named first.
      ([f'--config={BASE}', f'--workdir={tmp_path / "new"}',
        f'--config.model.pretrained={tmp_path / "none.npz"}'], 'none.npz: no such file'),
      ([f'--config={BASE}', f'--workdir={tmp_path / "new"}',
        f'--config.teacher.checkpoint={tmp_path / "no_run"}'], 'no_run: no checkpoints/')):
    run = subprocess.run([sys.executable, '-m', 'i2v_jax.main', *args], env=env, cwd=REPO,
                         capture_output=True, text=True, timeout=60)
    lines = run.stderr.strip().splitlines()
    assert run.returncode == 2 and len(lines) == 1 and expected in lines[0], run.stderr[-2000:]
  assert file.read_text() == 'notes' and sorted(os.listdir(tmp_path)) == ['run']
