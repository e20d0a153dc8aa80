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


def test_train_step_counts_the_whole_step_on_any_number_of_devices():
  """XLA counts one device's program; the script prints all devices' FLOPs,
  so the step's count does not halve when the batch is split over 2 devices."""
  one, two = run(TINY_STEP + ['--breakdown'], devices=1), run(TINY_STEP, devices=2)
  for part in ('teacher forward', 'teacher forward+backward', 'student forward',
               'student forward+backward', 'loss terms', 'optimizer update'):
    assert part in one.stdout
  assert '1 x cpu' in one.stdout and '2 x cpu' in two.stdout
  ratio = step_gflop(two.stdout) / step_gflop(one.stdout)
  assert 0.95 <= ratio <= 1.3, (ratio, one.stdout, two.stdout)  # replicated parts count twice


def test_train_step_names_the_fix_when_the_torch_interpreter_fails():
  """The PyTorch rows run first (a JAX process keeps its GPU memory); when none
  can run, the script says so in one line before compiling anything."""
  out = run(TINY_STEP + ['--reference', 'torch', '--torch_python', '/bin/false'], devices=1,
            check=False)
  assert out.returncode != 0
  last = out.stderr.strip().splitlines()[-1]
  assert last.startswith('bench/torch_reference.py under /bin/false failed')
  assert '--torch_python=' in last
  assert 'jax float32' not in out.stdout  # nothing was compiled for a run that cannot compare


def test_conv_cpu_forms_agree():
  """PointwiseConv against nn.Conv and the im2col kernel gradient against
  XLA's: the script's 'max rel. diff' of the gradients stays at rounding level."""
  out = run([sys.executable, os.path.join(REPO, 'bench', 'conv_cpu.py'), '--batch', '2',
             '--runs', '1'], devices=1)
  diffs = [float(d) for d in re.findall(r'max rel\. diff ([\d.e+-]+)', out.stdout)]
  assert len(diffs) == 16  # 8 shapes x 2 forms
  assert max(diffs) < 1e-4, out.stdout


HLO = '''HloModule step

%fused_computation.1 (param_0: bf16[8,4,4,3]) -> bf16[8,4,4,3] {
  %param_0 = bf16[8,4,4,3]{3,2,1,0} parameter(0)
  ROOT %copy.9 = bf16[8,4,4,3]{0,3,2,1} copy(%param_0)
}

ENTRY %main (p0: bf16[8,4,4,3], p1: bf16[3,3,3,16], p2: f32[8,16]) -> f32[8,8] {
  %p0 = bf16[8,4,4,3]{0,3,2,1} parameter(0)
  %p1 = bf16[3,3,3,16]{3,2,1,0} parameter(1)
  %p2 = f32[8,16]{1,0} parameter(2)
  %fusion.1 = bf16[8,4,4,3]{0,3,2,1} fusion(%p0), kind=kLoop, calls=%fused_computation.1
  %conv.1 = bf16[8,4,4,16]{3,2,1,0} convolution(%fusion.1, %p1), window={size=3x3 pad=1_1x1_1}, dim_labels=b01f_01io->b01f, metadata={op_name="jit(step)/jvp(Net)/backbone/conv1/conv_general_dilated"}
  %conv.2 = f32[3,3,3,16]{3,2,1,0} convolution(%fusion.1, %conv.1), window={size=4x4 pad=1_1x1_1}, dim_labels=f01b_i01o->01bf, metadata={op_name="jit(step)/transpose(jvp(Net))/backbone/conv1/conv_general_dilated"}
  %copy.2 = f32[8,16]{0,1} copy(%p2)
  %infeed.1 = ((f32[8]), token[]) infeed(%p2)
  ROOT %dot.1 = f32[8,8]{1,0} convolution(%copy.2, %copy.2), dim_labels=bf_oi->bf, metadata={op_name="jit(step)/jvp()/dot_general"}
}
'''


def test_tpu_program_reader_on_a_hand_written_program(tmp_path):
  """bench/tpu_program.py: convolutions by type and direction, only the copies
  outside fusions as layout changes (8 x 16 f32 = 512 bytes), the stem's channels
  found non-minor, the host op found; a missing file is one line, exit 2."""
  path = tmp_path / 'step.hlo'
  path.write_text(HLO)
  out = run([sys.executable, os.path.join(REPO, 'bench', 'tpu_program.py'), str(path)])
  lines = out.stdout.splitlines()
  assert lines[0] == 'convolutions: 3 (1 bf16 forward, 1 f32 backward, 1 f32 forward)'
  assert 'layout changes outside fusions: 1 copy/transpose, 0.0 MiB written' in out.stdout
  assert 'f32[8,16]{1,0} -> f32[8,16]{0,1}' in out.stdout
  assert 'the 3 channels are not the minor dimension' in out.stdout
  assert out.stdout.rstrip().endswith('host traffic inside the step: 1 op(s): infeed')
  bad = run([sys.executable, os.path.join(REPO, 'bench', 'tpu_program.py'),
             str(tmp_path / 'none.hlo')], check=False)
  assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
