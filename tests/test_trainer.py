"""Train and evaluate end to end in process (as flax's examples/imagenet train_test)."""

import json
import os

import numpy as np

from configs import base
from i2v_jax import trainer


def tiny_config(data_dir, steps=4):
  c = base.get_config('preset=mdkt,runlocal')
  c.data.dir = data_dir
  c.model.width = 4
  c.input.num_ids, c.input.tracklets_per_id = 8, 2  # P: a multiple of the 8 test devices
  c.train.num_steps = steps
  c.train.log_every = 2
  c.train.eval_every = steps
  c.train.checkpoint_every = steps
  return c


def test_train_then_evaluate_in_process(tmp_path, cli_data_dir):
  workdir = str(tmp_path / 'run')
  c = tiny_config(cli_data_dir)
  last = trainer.train_and_log(c, workdir)
  assert np.isfinite(last['loss/total']) and 'i2v/mAP' in last
  with open(os.path.join(workdir, 'results.json')) as f:
    results = json.load(f)
  assert results['step'] == 4
  assert set(results['protocols']) == {'i2v', 'v2v', 'i2i', 'v2i'}
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    steps = [json.loads(line)['step'] for line in f if 'loss/total' in line]
  assert steps == [2, 4]
  assert os.listdir(os.path.join(workdir, 'checkpoints_best')) == ['4']
  # Evaluate mode on the same checkpoint gives the same numbers.
  c.mode, c.eval.checkpoint, c.eval.from_workdir = 'evaluate', 'best', workdir
  again = trainer.evaluate_checkpoint(c, str(tmp_path / 'eval'))
  for protocol in ('i2v', 'v2v'):
    assert again[protocol]['mAP'] == results['protocols'][protocol]['mAP']
