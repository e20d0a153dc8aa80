"""VeRi-776 (Liu et al., ICME 2016) -> tracklets and the protocol.

Expected layout under --manual_dir (the dataset archive):

  image_train/  image_query/  image_test/
  name_train.txt  name_query.txt  test_track.txt

Image names ``0001_c001_00016450_0.jpg``: vehicle id, camera, frame, index.
Protocol (docs/method.md §1, as VKD reads it): train = ``name_train.txt`` images grouped
into one tracklet per (vehicle, camera), frames in name order; query = the 1,678
``name_query.txt`` images, each a one-frame tracklet; gallery = one video per line
of ``test_track.txt`` (first token the track key, the rest its images).
V2V uses, as query video, the gallery track with the query's vehicle and camera.
"""

from __future__ import annotations

import itertools
import os
import re
from typing import Dict, List, Tuple

from data_prep import writer
from data_prep.writer import DataError, train_labels
from i2v_jax.records import Tracklet

IMAGE = re.compile(r'^(?P<pid>\d{4})_c(?P<cam>\d{3})_\d+_\d+\.jpg$')
PROTOCOL = {
    'query': 'name_query.txt images (one-frame tracklets)',
    'gallery': 'one video per line of test_track.txt',
    'v2v_query': 'the gallery track with the query image vehicle and camera',
    'junk': 'same vehicle and same camera as the query',
}


def parse_name(name: str, source: str) -> Tuple[int, int]:
  m = IMAGE.match(name)
  if m is None:
    raise DataError(f'{source}: image name {name!r} is not in the VeRi format '
                    '0001_c001_00016450_0.jpg; use the files of the VeRi-776 archive')
  return int(m['pid']), int(m['cam'])


def read_list(path: str) -> List[str]:
  return writer.read_lines(path, 'missing VeRi list file; --manual_dir must be the extracted '
                           'VeRi-776 folder')


def convert(manual_dir: str, max_tracklets: int = 0
            ) -> Tuple[Dict[str, List[Tracklet]], Dict[str, object], List[str]]:
  files = {k: os.path.join(manual_dir, k)
           for k in ('name_train.txt', 'name_query.txt', 'test_track.txt')}
  for folder in ('image_train', 'image_query', 'image_test'):
    if not os.path.isdir(os.path.join(manual_dir, folder)):
      raise DataError(f'{os.path.join(manual_dir, folder)}: folder missing; '
                      '--manual_dir must be the extracted VeRi-776 folder')
  train = []
  names = sorted(read_list(files['name_train.txt']))
  for key, group in itertools.groupby(names, key=lambda n: n[:9]):
    group = list(group)
    pid, cam = parse_name(group[0], files['name_train.txt'])
    train.append(Tracklet(name=key, pid=pid, camid=cam, frames=tuple(
        os.path.join(manual_dir, 'image_train', n) for n in group)))
  query = []
  for n in read_list(files['name_query.txt']):
    pid, cam = parse_name(n, files['name_query.txt'])
    query.append(Tracklet(name=n[:-4], pid=pid, camid=cam,
                          frames=(os.path.join(manual_dir, 'image_query', n),)))
  gallery = []
  for line_no, line in enumerate(read_list(files['test_track.txt']), 1):
    key, *images = line.split()
    if not images:
      raise DataError(f'{files["test_track.txt"]}: line {line_no} lists no images')
    pid, cam = parse_name(key, f'{files["test_track.txt"]} line {line_no}')
    for n in images:
      if parse_name(n, f'{files["test_track.txt"]} line {line_no}') != (pid, cam):
        raise DataError(f'{files["test_track.txt"]}: line {line_no} mixes vehicles '
                        f'or cameras ({key} and {n}); use the original file')
    gallery.append(Tracklet(name=key[:-4], pid=pid, camid=cam, frames=tuple(
        os.path.join(manual_dir, 'image_test', n) for n in images)))
  splits = {'train': train, 'query': query, 'gallery': gallery}
  if max_tracklets:
    splits = {k: v[:max_tracklets] for k, v in splits.items()}
  splits['train'] = train_labels(splits['train'])
  return splits, dict(PROTOCOL), list(files.values())
