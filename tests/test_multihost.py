"""Two processes on localhost (jax.distributed, CPU collectives) == one process.

Covers training (losses, norms) and the final evaluation (features gathered
across processes, the same metrics).
"""

import json
import os
import socket
import subprocess

import numpy as np
import pytest

from tests.cli import ENV, REPO, command

pytestmark = pytest.mark.slow


def free_port():
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def test_two_processes_agree_with_one(tmp_path, cli_data_dir):
  data_dir = cli_data_dir
  one_device = dict(ENV, XLA_FLAGS=ENV['XLA_FLAGS'].replace('device_count=2', 'device_count=1'))
  port = free_port()
  multi = str(tmp_path / 'multi')
  procs = [subprocess.Popen(
      command(multi, data_dir, f'--coordinator_address=localhost:{port}',
              '--num_processes=2', f'--process_id={i}', steps=3),
      env=one_device, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
           for i in range(2)]
  outputs = [p.communicate(timeout=600)[0] for p in procs]
  for p, out in zip(procs, outputs):
    assert p.returncode == 0, out[-3000:]
  single = str(tmp_path / 'single')  # one process, two devices: the same mesh size
  subprocess.run(command(single, data_dir, steps=3), env=ENV, cwd=REPO, check=True,
                 capture_output=True, timeout=600)
  a, b = logged(multi), logged(single)
  assert sorted(a) == [1, 2, 3]
  for step in (1, 2, 3):
    for key in ('loss/total', 'loss/tcl', 'loss/triplet/teacher', 'grad_norm', 'param_norm'):
      np.testing.assert_allclose(a[step][key], b[step][key], rtol=1e-6, err_msg=f'{step} {key}')
  for key in ('i2v/mAP', 'v2v/mAP', 'i2i/rank1', 'v2i/mINP'):
    np.testing.assert_allclose(a[3][key], b[3][key], rtol=1e-5, atol=1e-4, err_msg=key)


def logged(workdir):
  """{step: every key logged at that step} (training and evaluation rows merged)."""
  out = {}
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    for row in map(json.loads, f):
      out.setdefault(row['step'], {}).update(row)
  return out
