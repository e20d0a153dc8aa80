"""MARS (Zheng et al., ECCV 2016) -> tracklets and the I2V/V2V protocol.

Expected layout under --manual_dir (as distributed by the authors):

  bbox_train/<pid>/<PPPPCcTttttFfff>.jpg     bbox_test/<pid>/...
  info/tracks_train_info.mat  info/tracks_test_info.mat  info/query_IDX.mat
  info/train_name.txt         info/test_name.txt

``tracks_*_info`` rows are (start, end, pid, camid), 1-based inclusive indices
into ``*_name.txt``. Protocol (docs/method.md §1): train = every train tracklet; query =
the 1,980 ``query_IDX`` rows of the test list; gallery = test tracklets minus pid
-1 (junk), query tracklets included (11,310). pid 0 (distractors) stays.
"""

from __future__ import annotations

import os
from typing import Dict, List, Sequence, Tuple

import numpy as np
import scipy.io

from data_prep.writer import DataError, read_lines, train_labels
from i2v_jax.records import Tracklet

INFO_FILES = ('tracks_train_info.mat', 'tracks_test_info.mat', 'query_IDX.mat',
              'train_name.txt', 'test_name.txt')
PROTOCOL = {
    'query': 'query_IDX rows of the test tracklets; I2V uses their first frame',
    'gallery': 'test tracklets with pid != -1, query tracklets included',
    'junk': 'same pid and same camera as the query',
    'distractors': 'pid 0 kept as negatives',
}


def load_mat(path: str, key: str) -> np.ndarray:
  if not os.path.exists(path):
    raise DataError(f'{path}: missing MARS metadata file; copy the info/ folder '
                    'of the MARS-evaluation kit into --manual_dir')
  try:
    mat = scipy.io.loadmat(path)
  except Exception as e:  # scipy raises many kinds
    raise DataError(f'{path}: not a readable MATLAB file ({type(e).__name__}: {e}); copy '
                    'it again from the MARS-evaluation kit') from None
  if key not in mat:
    raise DataError(f'{path}: no variable {key!r}; is this the MARS kit file?')
  try:
    value = np.asarray(mat[key]).astype(np.int64)
  except (TypeError, ValueError):
    raise DataError(f'{path}: variable {key!r} is not a numeric array; copy the file '
                    'again from the MARS-evaluation kit') from None
  if key != 'query_IDX' and (value.ndim != 2 or value.shape[1] != 4):
    raise DataError(f'{path}: {key!r} has shape {value.shape}, expected (tracklets, 4) '
                    'rows of start, end, pid, camera; copy it again from the kit')
  if value.size == 0:
    raise DataError(f'{path}: {key!r} is empty; copy it again from the MARS-evaluation kit')
  return value


def protocol_rows(train_info: np.ndarray, test_info: np.ndarray,
                  query_idx: np.ndarray) -> Dict[str, np.ndarray]:
  """Row indices (0-based) of each split: {'train', 'query' (into test), 'gallery'}."""
  query = np.asarray(query_idx).reshape(-1).astype(np.int64) - 1
  if query.min() < 0 or query.max() >= len(test_info):
    raise DataError('query_IDX.mat: indices outside tracks_test_info rows')
  gallery = np.flatnonzero(test_info[:, 2] != -1)
  return {'train': np.arange(len(train_info)), 'query': query, 'gallery': gallery}


def pid_dir(pid: int) -> str:
  return '00-1' if pid == -1 else f'{pid:04d}'


def _tracklets(rows: np.ndarray, info: np.ndarray, names: Sequence[str],
               image_dir: str, name_file: str) -> List[Tracklet]:
  out = []
  for r in rows:
    start, end, pid, cam = (int(v) for v in info[r])
    if not 1 <= start <= end <= len(names):
      raise DataError(f'{name_file}: tracklet row {r + 1} spans frames {start}..{end} '
                      f'but the file lists {len(names)}; use the matching info files')
    frames = names[start - 1:end]
    for frame in frames:
      if frame[:4] != pid_dir(pid) or frame[4:6] != f'C{cam}':
        raise DataError(
            f'{name_file}: frame {frame} (tracklet row {r + 1}) disagrees with '
            f'tracks_*_info.mat (pid {pid}, camera {cam}); the name list and the '
            '.mat files come from different releases')
    out.append(Tracklet(name=frames[0][:11], pid=pid, camid=cam,
                        frames=tuple(os.path.join(image_dir, f[:4], f) for f in frames)))
  return out


def read_names(path: str) -> List[str]:
  return read_lines(path, 'missing MARS frame list; copy info/ of the MARS-evaluation kit '
                    'into --manual_dir')


def convert(manual_dir: str, max_tracklets: int = 0
            ) -> Tuple[Dict[str, List[Tracklet]], Dict[str, object], List[str]]:
  """Returns (splits, protocol, source files) for `data_prep.writer.write_dataset`."""
  info = os.path.join(manual_dir, 'info')
  for folder in ('bbox_train', 'bbox_test', 'info'):
    if not os.path.isdir(os.path.join(manual_dir, folder)):
      raise DataError(f'{os.path.join(manual_dir, folder)}: folder missing; '
                      '--manual_dir must hold bbox_train/, bbox_test/ and info/')
  train_info = load_mat(os.path.join(info, 'tracks_train_info.mat'), 'track_train_info')
  test_info = load_mat(os.path.join(info, 'tracks_test_info.mat'), 'track_test_info')
  query_idx = load_mat(os.path.join(info, 'query_IDX.mat'), 'query_IDX')
  train_names = read_names(os.path.join(info, 'train_name.txt'))
  test_names = read_names(os.path.join(info, 'test_name.txt'))
  rows = protocol_rows(train_info, test_info, query_idx)
  if max_tracklets:
    rows = {k: v[:max_tracklets] for k, v in rows.items()}
  train_dir = os.path.join(manual_dir, 'bbox_train')
  test_dir = os.path.join(manual_dir, 'bbox_test')
  splits = {
      'train': train_labels(_tracklets(rows['train'], train_info, train_names,
                                       train_dir, os.path.join(info, 'train_name.txt'))),
      'query': _tracklets(rows['query'], test_info, test_names, test_dir,
                          os.path.join(info, 'test_name.txt')),
      'gallery': _tracklets(rows['gallery'], test_info, test_names, test_dir,
                            os.path.join(info, 'test_name.txt')),
  }
  return splits, dict(PROTOCOL), [os.path.join(info, f) for f in INFO_FILES]
