r"""Training input side by side with the PyTorch peer: i2v-jax's pipeline and torchreid's way.

    python bench/input_peer.py --torch_python=PATH [--tracklets 400] [--cores 1 2]
        [--runs 5] [--steps 10]

The same MARS-shaped training data (bench/input_mars.py: tracklet lengths drawn
from MARS's own, synthetic person frames rendered at 256x128 and stored as JPEG,
4 tracklets per identity), the same sampling (P=8 identities x K=4 tracklets x
T=4 frames = 128 frames a step) and the same augmentations (resize to 256x128,
flip, pad 10 + crop, random erasing p=0.5, ImageNet normalisation), run

(a) through `i2v_jax.input_pipeline.train_dataset` (TFRecords, tf.data, its
    private thread pool limited to N threads), and
(b) the way torchreid feeds video training (bench/input_peer_torch.py: the same
    frames as JPEG files, PIL decode, torchvision transforms per frame, a
    DataLoader with N workers), in ``--torch_python``, a virtual environment with
    torch and torchvision (e.g. ``pip install torch==2.14.1 torchvision==0.29.1``),

for N in ``--cores``: median frames/s of ``--runs`` runs of ``--steps`` steps
after a warm-up, frames/s per core, and the ratio (a)/(b) at each N.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

BENCH = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH)

import input_mars  # noqa: E402  (puts the checkout on sys.path)
from configs import base  # noqa: E402


def write_frames(data_dir: str, out_dir: str) -> str:
  """The built training split's frames as JPEG files, one folder a tracklet (what
  torchreid reads); returns the path of the list ``[[pid, camid, [paths]], ...]``."""
  from i2v_jax import input_pipeline
  from i2v_jax.dataset_folder import Dataset
  reader = input_pipeline.TrackletReader(Dataset.open(data_dir), 'train')
  listed = []
  for i, row in enumerate(reader.rows):
    folder = os.path.join(out_dir, f'{i:05d}')
    os.makedirs(folder)
    paths = []
    for k, jpeg in enumerate(reader.frames(i)):
      paths.append(os.path.join(folder, f'{k:04d}.jpg'))
      with open(paths[-1], 'wb') as f:
        f.write(jpeg)
    listed.append([int(row['pid']), int(row['camid']), paths])
  path = os.path.join(out_dir, 'tracklets.json')
  with open(path, 'w') as f:
    json.dump(listed, f)
  return path


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--torch_python', required=True,
                 help='python of a virtual environment with torch and torchvision')
  p.add_argument('--tracklets', type=int, default=400)
  p.add_argument('--cores', type=int, nargs='+', default=[1, 2])
  p.add_argument('--runs', type=int, default=5)
  p.add_argument('--steps', type=int, default=10)
  args = p.parse_args()
  import tensorflow as tf
  config = base.get_config()  # 256x128, P=8, K=4, T=4, flip + pad/crop + erasing
  with tempfile.TemporaryDirectory() as tmp:
    data_dir = os.path.join(tmp, 'mars_shaped')
    meta = input_mars.build(data_dir, args.tracklets)
    listed = write_frames(data_dir, os.path.join(tmp, 'files'))
    lengths = meta['lengths']
    print(f'MARS-shaped: {args.tracklets} tracklets, lengths mean {lengths.mean():.1f} '
          f'median {int(sorted(lengths)[len(lengths) // 2])}; JPEG {meta["jpeg_bytes"] / 1024:.1f} KiB a frame; '
          f'{os.cpu_count()} cores; tensorflow {tf.__version__}', flush=True)
    ours = {n: statistics.median(
        input_mars.pipeline_frames_per_s(data_dir, config, n, 1000 * (r + 1), args.steps)
        for r in range(args.runs)) for n in args.cores}
    ran = subprocess.run(
        [args.torch_python, os.path.join(BENCH, 'input_peer_torch.py'), f'--tracklets={listed}',
         '--workers', *map(str, args.cores), f'--runs={args.runs}', f'--steps={args.steps}'],
        capture_output=True, text=True)
    if ran.returncode:
      sys.exit(f'the torch side failed: {ran.stderr[-2000:]}')
    peer = json.loads(ran.stdout.strip().splitlines()[-1])
  print(f'torchreid way: {", ".join(f"{k} {v}" for k, v in peer["versions"].items())}')
  print('| cores | i2v-jax frames/s | per core | torchreid way frames/s | per core | ratio |')
  print('| --- | --- | --- | --- | --- | --- |')
  for n in args.cores:
    theirs = peer['frames_per_s'][str(n)]
    print(f'| {n} | {ours[n]:.1f} | {ours[n] / n:.1f} | {theirs:.1f} | {theirs / n:.1f} | '
          f'{ours[n] / theirs:.2f}x |')


if __name__ == '__main__':
  main()
