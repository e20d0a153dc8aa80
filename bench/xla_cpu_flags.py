r"""XLA:CPU options against the default, on the MDKT train step (`bench/train_step.py`).

    python bench/xla_cpu_flags.py [--ids 2 --k 2 --height 128 --width 64] [--runs 3]

Runs `bench/train_step.py` in a child process once per setting of ``XLA_FLAGS``
(the default first: the reference) and prints each setting's compile time and
median step time, and their ratios to the default's. The settings are options
that exist in the pinned jaxlib (``XLA_FLAGS=--help``): oneDNN thunks for matmul
and convolution, the fast-compile preset, 512-bit vectors (AVX-512 hosts).
"""

import argparse
import os
import re
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SETTINGS = [
    ('default', ''),
    ('oneDNN matmul/conv', '--xla_cpu_use_onednn=true'),
    ('fast-compile preset', '--xla_cpu_opt_preset=CPU_OPT_PRESET_FAST_COMPILE'),
    ('512-bit vectors', '--xla_cpu_prefer_vector_width=512'),
]


def run(flags: str, args) -> dict:
  env = dict(os.environ, XLA_FLAGS=flags, TF_CPP_MIN_LOG_LEVEL='2', JAX_PLATFORMS='cpu',
             I2V_JAX_CACHE_DIR='off')
  cmd = [sys.executable, os.path.join(REPO, 'bench', 'train_step.py'), '--ids', str(args.ids),
         '--k', str(args.k), '--height', str(args.height), '--width', str(args.width),
         '--runs', str(args.runs), '--steps', '1']
  out = subprocess.run(cmd, env=env, capture_output=True, text=True)
  if out.returncode:
    return {'error': out.stderr.strip().splitlines()[-1][:200]}
  m = re.search(r'([\d.]+) ms/step.*\(compile ([\d.]+) s', out.stdout)
  return {'step_s': float(m.group(1)) / 1e3, 'compile_s': float(m.group(2))}


def main():
  p = argparse.ArgumentParser()
  p.add_argument('--ids', type=int, default=2)
  p.add_argument('--k', type=int, default=2)
  p.add_argument('--height', type=int, default=128)
  p.add_argument('--width', type=int, default=64)
  p.add_argument('--runs', type=int, default=3)
  args = p.parse_args()
  print(f'MDKT step, ResNet-50 teacher + student, {args.ids}x{args.k} clips at '
        f'{args.height}x{args.width}, fp32, {os.cpu_count()} cores; median of {args.runs}')
  ref = None
  for name, flags in SETTINGS:
    r = run(flags, args)
    if 'error' in r:
      print(f'  {name:22s} failed: {r["error"]}')
      continue
    ref = ref or r
    print(f'  {name:22s} compile {r["compile_s"]:6.1f} s ({r["compile_s"] / ref["compile_s"]:.2f}x)'
          f'   step {r["step_s"]:7.2f} s ({r["step_s"] / ref["step_s"]:.2f}x)   [{flags or "-"}]')


if __name__ == '__main__':
  main()
