r"""torchreid's way of feeding video re-ID training, timed: the peer of bench/input_peer.py.

    python bench/input_peer_torch.py --tracklets=LIST.json --workers 1 2 [--runs 5] [--steps 10]

Needs torch, torchvision, PIL and numpy only (run it in its own virtual
environment, as bench/torch_reference.py). ``LIST.json`` is bench/input_peer.py's
list of training tracklets, each ``[pid, camid, [frame paths]]`` (JPEG files).
What torchreid does (``torchreid.data.datasets.dataset.VideoDataset``,
``RandomIdentitySampler``, ``build_transforms``), written out with the same
library calls so only torch and torchvision are needed:

* a sampler of P identities x K tracklets a batch (P=8, K=4);
* per tracklet, T=4 frames drawn at random from the tracklet, each read with
  ``PIL.Image.open(...).convert('RGB')`` and transformed on its own:
  Resize(256x128), RandomHorizontalFlip, Pad(10) + RandomCrop(256x128), ToTensor,
  Normalize(ImageNet), RandomErasing(p=0.5, value 0);
* ``torch.utils.data.DataLoader(num_workers=W, batch_size=P*K)``, each worker on
  one torch thread.

Prints one JSON line: per W the median frames/s of ``--runs`` runs of ``--steps``
batches after a warm-up batch, and the versions.
"""

import argparse
import json
import platform
import random
import statistics
import time

import numpy as np
import PIL
import torch
import torchvision
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler
from torchvision import transforms as T

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


class Tracklets(Dataset):
  """VideoDataset's training item: T random frames of a tracklet, each transformed."""

  def __init__(self, tracklets, clip_len, transform):
    self.tracklets, self.clip_len, self.transform = tracklets, clip_len, transform

  def __len__(self):
    return len(self.tracklets)

  def __getitem__(self, index):
    pid, camid, paths = self.tracklets[index]
    replace = len(paths) < self.clip_len
    chosen = sorted(np.random.choice(len(paths), self.clip_len, replace=replace))
    frames = [self.transform(Image.open(paths[i]).convert('RGB')) for i in chosen]
    return torch.stack(frames), pid, camid


class IdentitySampler(Sampler):
  """RandomIdentitySampler: batches of P identities x K tracklets."""

  def __init__(self, tracklets, num_ids, per_id, batches, seed):
    self.by_pid = {}
    for i, (pid, _, _) in enumerate(tracklets):
      self.by_pid.setdefault(pid, []).append(i)
    self.num_ids, self.per_id, self.batches = num_ids, per_id, batches
    self.rng = random.Random(seed)

  def __iter__(self):
    pids = sorted(self.by_pid)
    for _ in range(self.batches):
      for pid in self.rng.sample(pids, self.num_ids):
        own = self.by_pid[pid]
        yield from (self.rng.sample(own, self.per_id) if len(own) >= self.per_id
                    else self.rng.choices(own, k=self.per_id))

  def __len__(self):
    return self.batches * self.num_ids * self.per_id


def _one_thread(_):
  torch.set_num_threads(1)


def frames_per_s(tracklets, workers, steps, seed, num_ids=8, per_id=4, clip_len=4):
  transform = T.Compose([
      T.Resize((256, 128)), T.RandomHorizontalFlip(), T.Pad(10), T.RandomCrop((256, 128)),
      T.ToTensor(), T.Normalize(MEAN, STD), T.RandomErasing(p=0.5, value=0)])
  loader = DataLoader(Tracklets(tracklets, clip_len, transform), batch_size=num_ids * per_id,
                      sampler=IdentitySampler(tracklets, num_ids, per_id, steps + 1, seed),
                      num_workers=workers, worker_init_fn=_one_thread, drop_last=True,
                      persistent_workers=False)
  it = iter(loader)
  next(it)  # workers started, first batch made
  t0 = time.perf_counter()
  frames = sum(int(clips.shape[0] * clips.shape[1]) for clips, _, _ in it)
  return frames / (time.perf_counter() - t0)


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--tracklets', required=True)
  p.add_argument('--workers', type=int, nargs='+', default=[1, 2])
  p.add_argument('--runs', type=int, default=5)
  p.add_argument('--steps', type=int, default=10)
  args = p.parse_args()
  torch.set_num_threads(1)
  with open(args.tracklets) as f:
    tracklets = [tuple(t) for t in json.load(f)]
  out = {'versions': {'python': platform.python_version(), 'torch': torch.__version__,
                      'torchvision': torchvision.__version__, 'pillow': PIL.__version__},
         'frames_per_s': {}}
  for w in args.workers:
    rates = [frames_per_s(tracklets, w, args.steps, seed=r) for r in range(args.runs)]
    out['frames_per_s'][str(w)] = statistics.median(rates)
  print(json.dumps(out))


if __name__ == '__main__':
  main()
