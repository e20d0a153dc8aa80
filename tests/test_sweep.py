"""The ablation launcher: sweep() entries are valid configs; commands; the table."""

import json
import os

import numpy as np
import pytest

from configs import synthetic_cpu
from i2v_jax import records, sweep

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(REPO, 'configs', 'synthetic_cpu.py')


def test_every_variant_is_a_valid_locked_config():
  runs = sweep.load_sweep(CONFIG)
  names = [r['name'] for r in runs]
  for required in ('student_only', 'teacher_only', 'tkp', 'vkd', 'mdkt', 'mdkt_no_tcl',
                   'mdkt_no_ml', 'mdkt_mining_local', 'mdkt_bn_global'):
    assert required in names
  assert sum(n.startswith('mdkt_tau') for n in names) >= 2
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


def test_table_is_mean_and_sample_std_over_finished_seeds(tmp_path):
  runs = [{'name': 'a', 'about': 'first'}, {'name': 'b'}]
  maps = {0: 0.30, 1: 0.40}
  for seed, m in maps.items():
    d = sweep.run_dir(str(tmp_path), 'a', seed)
    os.makedirs(d)
    protocol = {'mAP': m, 'cmc': [m + 0.1] * 20, 'mINP': 0.0}
    records.write_json({'step': 5, 'protocols': {'i2v': protocol, 'v2v': protocol}},
                       os.path.join(d, 'results.json'))
  table = sweep.summarize(runs, [0, 1, 2], str(tmp_path))
  text = sweep.markdown(table, [0, 1, 2])
  std = np.std([30.0, 40.0], ddof=1)
  assert f'| a | 35.0 ± {std:.1f} | 45.0 ± {std:.1f} |' in text
  assert '| 2/3 |' in text and '| b | — | — | — | — | 0/3 |' in text
  assert '- **a**: first' in text
  assert sweep.finished(sweep.run_dir(str(tmp_path), 'a', 0), 5)
  assert not sweep.finished(sweep.run_dir(str(tmp_path), 'a', 0), 6)
