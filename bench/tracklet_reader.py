"""Is `input_pipeline.TrackletReader`'s per-reader record cache worth keeping?

    python bench/tracklet_reader.py [--runs 5]

Reads every frame of the small synthetic dataset's gallery the way evaluation
does (one `frames(row)` call per frame, rows in order) through one reader with
its cache and through one whose cache is bypassed; prints the median of the
runs and the ratio.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from data_prep import build
from i2v_jax import input_pipeline
from i2v_jax.dataset_folder import Dataset


def read_all(reader, frames_of):
  t = time.perf_counter()
  for row, r in enumerate(reader.rows):
    for f in range(int(r['num_frames'])):
      assert frames_of(row)[f]
  return time.perf_counter() - t


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--runs', type=int, default=5)
  args = p.parse_args()
  with tempfile.TemporaryDirectory() as tmp:
    build.build('synthetic', tmp + '/data', show_progress=False)
    dataset = Dataset.open(tmp + '/data')
    cached, uncached = [], []
    for _ in range(args.runs):
      reader = input_pipeline.TrackletReader(dataset, 'gallery')
      cached.append(read_all(reader, reader.frames))
      reader = input_pipeline.TrackletReader(dataset, 'gallery')
      uncached.append(read_all(reader, reader._read))  # the read behind the cache
    frames = sum(int(r['num_frames']) for r in dataset.rows('gallery'))
    a, b = statistics.median(cached), statistics.median(uncached)
    print(f'{frames} gallery frames, median of {args.runs}: cached {a:.3f} s, '
          f'uncached {b:.3f} s, ratio {b / a:.1f}x')


if __name__ == '__main__':
  main()
