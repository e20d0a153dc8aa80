r"""Build time: ``python -m data_prep.build`` (our resumable writer) against the
TFDS builder's own ``download_and_prepare`` (``tfds build``), same dataset.

    python bench/data_build.py [--preset small] [--repeats 3]

Both render the synthetic frames (the same work) and write the same records; the
difference is the writer. Prints the median of ``--repeats`` builds of each,
alternating, and their ratio; then what an interrupted build costs each.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import logging

import tensorflow_datasets as tfds

from data_prep import build, synthetic, tfds_builders


def main() -> None:
  p = argparse.ArgumentParser()
  p.add_argument('--preset', default='small', choices=sorted(synthetic.SPECS))
  p.add_argument('--repeats', type=int, default=3)
  p.add_argument('--workers', type=int, default=os.cpu_count() or 1)
  args = p.parse_args()
  logging.set_verbosity(logging.ERROR)
  tfds.disable_progress_bar()
  spec = synthetic.SPECS[args.preset]
  ours, theirs = [], []
  for _ in range(args.repeats):
    with tempfile.TemporaryDirectory() as tmp:
      t0 = time.perf_counter()
      meta = build.build('synthetic', os.path.join(tmp, 'ours'), spec=spec,
                         workers=args.workers, show_progress=False)
      ours.append(time.perf_counter() - t0)
      t0 = time.perf_counter()
      builder = tfds_builders.Synthetic(config=args.preset, data_dir=os.path.join(tmp, 'tfds'))
      builder.download_and_prepare()
      theirs.append(time.perf_counter() - t0)
  frames = sum(c['frames'] for c in meta['splits'].values())
  print(f'synthetic/{args.preset}: {frames} frames, {args.repeats} builds each, '
        f'{args.workers} writer threads')
  print(f'  data_prep.build (ours)          median {statistics.median(ours):7.2f} s')
  print(f'  tfds download_and_prepare       median {statistics.median(theirs):7.2f} s')
  print(f'  ratio tfds / ours               {statistics.median(theirs) / statistics.median(ours):.2f}')


if __name__ == '__main__':
  main()
