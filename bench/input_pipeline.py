r"""Training-input throughput: JPEG decode + augment at 256x128, T=4 clips.

    python bench/input_pipeline.py [--threads 1 2] [--runs 5] [--steps 20]

Builds a synthetic dataset stored at MARS's native 256x128 (in a temp folder),
then times `i2v_jax.input_pipeline.train_dataset` with the default P=8 x K=4
batch (128 frames a step), all augmentations on, tf.data limited to N threads.
Prints frames/s (median of --runs runs after one warm-up) and frames/s per thread.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import tensorflow as tf

from configs import base
from data_prep import build, synthetic
from i2v_jax import input_pipeline
from i2v_jax.dataset_folder import Dataset


def time_run(data_dir, config, threads, start, steps):
  ds = input_pipeline.train_dataset(Dataset.open(data_dir), config, seed=0, start_step=start,
                                    num_steps=steps + 1)
  options = tf.data.Options()
  options.threading.private_threadpool_size = threads
  it = iter(ds.with_options(options))
  next(it)  # first batch includes pipeline start-up
  t0 = time.perf_counter()
  frames = 0
  for batch in it:
    frames += int(batch['clips'].shape[0] * batch['clips'].shape[1])
  return frames / (time.perf_counter() - t0)


def main():
  p = argparse.ArgumentParser()
  p.add_argument('--threads', type=int, nargs='+', default=[1, os.cpu_count() or 1])
  p.add_argument('--runs', type=int, default=5)
  p.add_argument('--steps', type=int, default=20)
  args = p.parse_args()
  config = base.get_config()  # 256x128, P=8, K=4, T=4, flip+pad+erasing
  with tempfile.TemporaryDirectory() as tmp:
    spec = synthetic.SyntheticSpec(num_train_ids=16, num_test_ids=1, height=256,
                                   width=128, min_frames=16, max_frames=40)
    build.build('synthetic', tmp, spec=spec, show_progress=False)
    print(f'cores: {os.cpu_count()}; batch {config.input.num_ids}x'
          f'{config.input.tracklets_per_id} clips of T={config.input.clip_len} at '
          f'{config.input.height}x{config.input.width}')
    for threads in args.threads:
      rates = [time_run(tmp, config, threads, 1000 * r, args.steps)
               for r in range(args.runs)]
      med = statistics.median(rates)
      print(f'threads={threads}: {med:8.1f} frames/s (median of {args.runs}; '
            f'min {min(rates):.1f}, max {max(rates):.1f}) = {med / threads:.1f} '
            'frames/s per thread')


if __name__ == '__main__':
  main()
