"""The benchmark scripts still run and print what bench/RESULTS.md quotes (never timings)."""

import os
import re
import subprocess
import sys

import pytest

from tests.cli import ENV, REPO

pytestmark = pytest.mark.slow

TINY_STEP = [sys.executable, os.path.join(REPO, 'bench', 'train_step.py'), '--tiny',
             '--height', '32', '--width', '16', '--runs', '1', '--steps', '1']


def run(cmd, devices=2, check=True):
  env = dict(ENV, XLA_FLAGS=ENV['XLA_FLAGS'].replace('device_count=2', f'device_count={devices}'))
  out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  if check:
    assert out.returncode == 0, out.stderr[-2000:]
  return out


def step_gflop(stdout):
  """The whole step's GFLOP from the line under 'jax float32'."""
  lines = stdout.splitlines()
  at = next(i for i, line in enumerate(lines) if line.strip().startswith('jax float32'))
  return float(re.search(r'([\d,.]+) GFLOP', lines[at + 1]).group(1).replace(',', ''))


@pytest.fixture(scope='session')  # once per test worker, however the tests are spread
def one_device_with_a_failing_torch():
  """One run serves two tests: the breakdown on one device, then the PyTorch
  reference under an interpreter that fails."""
  return run(TINY_STEP + ['--breakdown', '--reference', 'torch', '--torch_python', '/bin/false'],
             devices=1, check=False)


@pytest.mark.xdist_group('one_device_run')  # the same worker: one run
def test_train_step_counts_the_whole_step_on_any_number_of_devices(
    one_device_with_a_failing_torch):
  """XLA reports one device's program; the script prints all devices' FLOPs,
  so the step's count does not halve when the batch is split over 2 devices."""
  one, two = one_device_with_a_failing_torch, run(TINY_STEP, devices=2)
  for part in ('teacher forward', 'teacher forward+backward', 'student forward',
               'student forward+backward', 'loss terms', 'optimizer update'):
    assert part in one.stdout
  assert '1 x cpu' in one.stdout and '2 x cpu' in two.stdout
  ratio = step_gflop(two.stdout) / step_gflop(one.stdout)
  assert 0.95 <= ratio <= 1.3, (ratio, one.stdout, two.stdout)  # replicated parts count twice


@pytest.mark.xdist_group('one_device_run')  # the same worker: one run
def test_train_step_names_the_fix_when_the_torch_interpreter_fails(
    one_device_with_a_failing_torch):
  out = one_device_with_a_failing_torch
  assert out.returncode != 0
  last = out.stderr.strip().splitlines()[-1]
  assert last.startswith('bench/torch_reference.py under /bin/false failed')
  assert '--torch_python=' in last
  assert 'jax float32' in out.stdout  # the JAX figures were printed first


def test_conv_cpu_forms_agree():
  """PointwiseConv against nn.Conv and the im2col kernel gradient against
  XLA's: the script's 'max rel. diff' of the gradients stays at rounding level."""
  out = run([sys.executable, os.path.join(REPO, 'bench', 'conv_cpu.py'), '--batch', '2',
             '--runs', '1'], devices=1)
  diffs = [float(d) for d in re.findall(r'max rel\. diff ([\d.e+-]+)', out.stdout)]
  assert len(diffs) == 16  # 8 shapes x 2 forms
  assert max(diffs) < 1e-4, out.stdout
