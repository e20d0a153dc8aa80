r"""Training input on a MARS-shaped dataset: the real tracklet lengths, realistic frames.

    python bench/input_mars.py [--tracklets 400] [--threads 1 2] [--runs 3] [--steps 10]
        [--step_s 0.25]

Takes ``--tracklets`` training tracklets with the lengths of MARS's own (drawn from
``../shared/data/mars_info/tracks_train_info.mat``, 8,298 tracklets, mean ~60
frames, the longest ~900) and fills them with synthetic person frames rendered at
MARS's 256x128 and stored as JPEG (quality 90; a pool of rendered frames reused),
4 tracklets per identity. Then times, for the default batch (P=8 x K=4, T=4, all
augmentations):

* the serial part: the per-step plan (sampler + reading the 32 tracklets' records,
  CRC check and parse) that runs in one Python thread inside tf.data;
* the whole `i2v_jax.input_pipeline.train_dataset` at each ``--threads``.

and prints how many such cores one accelerator needs at ``--step_s`` seconds a
training step. Medians of ``--runs`` runs of ``--steps`` steps after a warm-up.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np
import scipy.io

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import tensorflow as tf

from configs import base
from data_prep import synthetic, tfds_builders, writer
from i2v_jax import input_pipeline
from i2v_jax.dataset_folder import Dataset
from i2v_jax.records import Tracklet

MARS_INFO = os.path.join(REPO, '..', 'shared', 'data', 'mars_info', 'tracks_train_info.mat')


def mars_lengths(n: int, rng) -> np.ndarray:
  info = scipy.io.loadmat(MARS_INFO)['track_train_info'].astype(np.int64)
  lengths = info[:, 1] - info[:, 0] + 1
  return rng.choice(lengths, n, replace=False)


def build(out_dir: str, n: int, seed: int = 0) -> dict:
  rng = np.random.default_rng(seed)
  lengths = mars_lengths(n, rng)
  spec = synthetic.SyntheticSpec(num_train_ids=8, num_test_ids=1, height=256, width=128,
                                 min_frames=40, max_frames=40)
  splits, protocol = synthetic.generate(spec)
  pool = [f for t in splits['train'] for f in t.frames]  # 960 rendered 256x128 JPEGs
  train = []
  for i, length in enumerate(lengths):
    start = int(rng.integers(len(pool)))
    frames = tuple(pool[(start + k) % len(pool)] for k in range(int(length)))
    train.append(Tracklet(name=f'{i // 4:04d}C{i % 4 + 1}', pid=i // 4 + 1,
                          camid=i % 4 + 1, frames=frames))
  splits['train'] = writer.train_labels(train)
  builder = tfds_builders.Synthetic(config='small', data_dir=out_dir)
  with writer.build_lock(out_dir):
    meta = writer.write_dataset(out_dir, builder, splits, protocol,
                                shards_per_split={'train': max(1, n // 64)},
                                verify=False, show_progress=False)
  meta['jpeg_bytes'] = float(np.mean([len(f) for f in pool]))
  meta['lengths'] = lengths
  return meta


def plan_seconds(data_dir: str, config, steps: int) -> float:
  """Seconds per step of the serial plan: sampler + the records' read and parse."""
  inp = config.input
  reader = input_pipeline.TrackletReader(Dataset.open(data_dir), 'train')
  sampler = input_pipeline.TrainSampler(
      reader.rows, num_ids=inp.num_ids, tracklets_per_id=inp.tracklets_per_id,
      clip_len=inp.clip_len, height=inp.height, width=inp.width, pad_crop=inp.pad_crop,
      flip=inp.flip, erasing_prob=inp.erasing_prob, seed=0)
  t0 = time.perf_counter()
  for step in range(steps):
    p = sampler(step)
    for r, f in zip(p['frame_rows'].ravel(), p['frames'].ravel()):
      reader.frames(int(r))[int(f)]
  return (time.perf_counter() - t0) / steps


def pipeline_frames_per_s(data_dir, config, threads, start, steps) -> float:
  ds = input_pipeline.train_dataset(Dataset.open(data_dir), config, seed=0, start_step=start,
                                    num_steps=steps + 1)
  options = tf.data.Options()
  options.threading.private_threadpool_size = threads
  it = iter(ds.with_options(options))
  next(it)
  t0 = time.perf_counter()
  frames = sum(int(b['clips'].shape[0] * b['clips'].shape[1]) for b in it)
  return frames / (time.perf_counter() - t0)


def main():
  p = argparse.ArgumentParser()
  p.add_argument('--tracklets', type=int, default=400)
  p.add_argument('--threads', type=int, nargs='+', default=[1, os.cpu_count() or 1])
  p.add_argument('--runs', type=int, default=3)
  p.add_argument('--steps', type=int, default=10)
  p.add_argument('--step_s', type=float, default=0.25,
                 help='an accelerator training step, to say how many cores feed it')
  args = p.parse_args()
  config = base.get_config()  # 256x128, P=8, K=4, T=4, flip + pad/crop + erasing
  frames_per_step = config.input.num_ids * config.input.tracklets_per_id * config.input.clip_len
  with tempfile.TemporaryDirectory() as tmp:
    data_dir = os.path.join(tmp, 'mars_shaped')
    meta = build(data_dir, args.tracklets)
    lengths = meta['lengths']
    print(f'MARS-shaped: {args.tracklets} tracklets, lengths mean {lengths.mean():.1f} '
          f'median {np.median(lengths):.0f} max {lengths.max()} frames; JPEG '
          f'{meta["jpeg_bytes"] / 1024:.1f} KiB a frame; cores {os.cpu_count()}; batch '
          f'{frames_per_step} frames a step')
    plans = [plan_seconds(data_dir, config, args.steps) for _ in range(args.runs)]
    plan = statistics.median(plans)
    print(f'  serial plan (sampler + read/check/parse 32 records): {plan * 1e3:.1f} ms/step '
          f'= at most {frames_per_step / plan:.0f} frames/s from one thread')
    for threads in args.threads:
      rates = [pipeline_frames_per_s(data_dir, config, threads, 1000 * (r + 1), args.steps)
               for r in range(args.runs)]
      med = statistics.median(rates)
      need = frames_per_step / args.step_s / (med / threads)
      print(f'  pipeline, {threads} thread(s): {med:8.1f} frames/s ({med / threads:.1f} per '
            f'thread): a {args.step_s:.2f} s/step accelerator needs ~{need:.1f} such cores')


if __name__ == '__main__':
  main()
