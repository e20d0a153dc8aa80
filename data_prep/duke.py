"""DukeMTMC-VideoReID (Wu et al., CVPR 2018) -> tracklets and the protocol.

Expected layout under --manual_dir (the dataset zip):

  train/<pid>/<tracklet>/<frame>.jpg   query/...   gallery/...

Frame names ``0001_C6_F0099_X30823.jpg`` (or the old ``0001C6F0099X30823.jpg``):
pid, camera, frame index within the tracklet, frame number in the camera video.
Frames are ordered by the F index; missing indices are skipped. Protocol (docs/method.md §1):
702 query tracklets, 2,636 gallery tracklets; each query tracklet is also in the
gallery and is removed from its own ranking by the same-pid-same-camera rule.
"""

from __future__ import annotations

import os
import re
import sys
from typing import Dict, List, Tuple

from data_prep.writer import DataError, train_labels
from i2v_jax.records import Tracklet

FRAME = re.compile(r'^(?P<pid>\d{4})_?C(?P<cam>\d+)_?F(?P<index>\d+)_?[XD]\d+\.jpg$')
PROTOCOL = {
    'query': 'query/ tracklets; I2V uses their first frame',
    'gallery': 'gallery/ tracklets (each query tracklet is also there)',
    'junk': 'same pid and same camera as the query',
}


def read_tracklet(folder: str, split: str, pid_name: str, tracklet_name: str) -> Tracklet:
  """One tracklet folder -> Tracklet with frames sorted by their F index."""
  frames = []
  cams = set()
  for file in os.listdir(folder):
    if not file.lower().endswith('.jpg'):
      continue
    m = FRAME.match(file)
    if m is None:
      raise DataError(f'{os.path.join(folder, file)}: frame name not in the '
                      'DukeMTMC-VideoReID format 0001_C6_F0099_X30823.jpg; remove '
                      'files that are not part of the dataset')
    if m['pid'] != pid_name:
      raise DataError(f'{os.path.join(folder, file)}: pid {m["pid"]} in the file '
                      f'name disagrees with its folder {pid_name}; re-extract the '
                      'dataset archive')
    cams.add(int(m['cam']))
    frames.append((int(m['index']), os.path.join(folder, file)))
  if not frames:
    raise DataError(f'{folder}: tracklet folder holds no .jpg frames; re-extract '
                    'the dataset archive')
  if len(cams) != 1:
    raise DataError(f'{folder}: frames from cameras {sorted(cams)} in one tracklet; '
                    're-extract the dataset archive')
  frames.sort()
  return Tracklet(name=f'{split}/{pid_name}/{tracklet_name}', pid=int(pid_name),
                  camid=cams.pop(), frames=tuple(path for _, path in frames))


def read_split(manual_dir: str, split: str, max_tracklets: int = 0) -> List[Tracklet]:
  root = os.path.join(manual_dir, split)
  if not os.path.isdir(root):
    raise DataError(f'{root}: folder missing; --manual_dir must hold the '
                    'train/, query/ and gallery/ folders of DukeMTMC-VideoReID')
  out = []
  for pid_name in sorted(os.listdir(root)):
    pid_dir = os.path.join(root, pid_name)
    if not os.path.isdir(pid_dir):
      continue
    if not re.fullmatch(r'\d{4}', pid_name):
      raise DataError(f'{pid_dir}: identity folders are 4-digit pids; remove it')
    for tracklet_name in sorted(os.listdir(pid_dir)):
      if not os.path.isdir(os.path.join(pid_dir, tracklet_name)):  # e.g. .DS_Store
        print(f'note: skipped {os.path.join(pid_dir, tracklet_name)}: not a tracklet '
              'folder', file=sys.stderr)
        continue
      out.append(read_tracklet(os.path.join(pid_dir, tracklet_name), split,
                               pid_name, tracklet_name))
      if max_tracklets and len(out) >= max_tracklets:
        return out
  return out


def convert(manual_dir: str, max_tracklets: int = 0
            ) -> Tuple[Dict[str, List[Tracklet]], Dict[str, object], List[str]]:
  splits = {'train': train_labels(read_split(manual_dir, 'train', max_tracklets)),
            'query': read_split(manual_dir, 'query', max_tracklets),
            'gallery': read_split(manual_dir, 'gallery', max_tracklets)}
  return splits, dict(PROTOCOL), []
