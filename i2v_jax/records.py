"""The one on-disk format: one tf.train.Example per tracklet, sharded TFRecords.

Features of an example:

  ``frames``      bytes list, the encoded JPEG frames in temporal order
  ``num_frames``  int64, len(frames)
  ``pid``         int64, the dataset's identity id (0 = MARS distractor, -1 = junk)
  ``label``       int64, contiguous training label (train split), else -1
  ``camid``       int64, camera id as the dataset numbers it (1-based)
  ``name``        bytes, the tracklet's name in the source dataset

A dataset folder is a TFDS dataset folder (``data_prep/tfds_builders.py``):
``<dataset>-<split>.tfrecord-<i>-of-<n>`` shards, TFDS's ``dataset_info.json`` and
``features.json``, an ``index-<split>.json`` per split (byte offset of every
record, with its pid, camid, frame count and name, so the input pipeline can read
any tracklet without scanning), and ``metadata.json`` written last: its presence
marks a complete build.

Serialization is used by ``data_prep``; parsing by ``i2v_jax.input_pipeline``.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import struct
from typing import Dict, List, Sequence

import google_crc32c

from i2v_jax import atomic
from i2v_jax.errors import UserError

SCHEMA_VERSION = 1


class DatasetError(UserError, ValueError):
  """A dataset folder that cannot be used as it is: names the file and the fix."""
SPLITS = ('train', 'query', 'gallery')


@dataclasses.dataclass(frozen=True)
class Tracklet:
  """A tracklet as a converter describes it (before encoding)."""
  name: str
  pid: int
  camid: int
  frames: tuple  # paths of JPEG files, or encoded JPEG bytes (synthetic)
  label: int = -1


def _tf():
  import tensorflow as tf
  return tf


def serialize(frames: Sequence[bytes], *, pid: int, camid: int, name: str,
              label: int = -1) -> bytes:
  """Encoded frames + metadata -> serialized tf.train.Example."""
  tf = _tf()
  ints = lambda v: tf.train.Feature(int64_list=tf.train.Int64List(value=[v]))
  feature = {
      'frames': tf.train.Feature(bytes_list=tf.train.BytesList(value=list(frames))),
      'num_frames': ints(len(frames)),
      'pid': ints(pid),
      'label': ints(label),
      'camid': ints(camid),
      'name': tf.train.Feature(bytes_list=tf.train.BytesList(value=[name.encode()])),
  }
  # deterministic: the feature map in key order, so a build's bytes do not depend
  # on the process (protobuf map order otherwise may).
  return tf.train.Example(
      features=tf.train.Features(feature=feature)).SerializeToString(deterministic=True)


def parse(serialized: bytes) -> Dict[str, object]:
  """Serialized example -> dict of python values (frames as a list of bytes)."""
  tf = _tf()
  example = tf.train.Example.FromString(serialized)
  f = example.features.feature
  return {
      'frames': list(f['frames'].bytes_list.value),
      'num_frames': f['num_frames'].int64_list.value[0],
      'pid': f['pid'].int64_list.value[0],
      'label': f['label'].int64_list.value[0],
      'camid': f['camid'].int64_list.value[0],
      'name': f['name'].bytes_list.value[0].decode(),
  }


def shard_name(dataset: str, split: str, index: int, count: int) -> str:
  """TFDS's file name of a shard (``tfds.core.naming.DEFAULT_FILENAME_TEMPLATE``)."""
  return f'{dataset}-{split}.tfrecord-{index:05d}-of-{count:05d}'


def masked_crc(data: bytes) -> int:
  """TFRecord's checksum: CRC-32C, rotated right by 15 bits, plus a constant."""
  crc = google_crc32c.value(data)
  return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _damaged(path: str, offset: int, what: str) -> DatasetError:
  return DatasetError(f'{path}: the record at byte {offset} {what}; the shard is damaged: '
                      'rebuild the dataset with python -m data_prep.build (same command, '
                      'into a new --out_dir or with --overwrite)')


def _header(f, path: str, offset: int, size: int) -> int:
  """The payload length of the record at ``offset`` (its header checksum verified)."""
  f.seek(offset)
  header = f.read(12)
  if len(header) < 12:
    raise _damaged(path, offset, 'is cut short (truncated file)')
  (length,) = struct.unpack('<Q', header[:8])
  (crc,) = struct.unpack('<I', header[8:])
  if crc != masked_crc(header[:8]):
    raise _damaged(path, offset, 'has a corrupt length (CRC mismatch)')
  if offset + 16 + length > size:
    raise _damaged(path, offset, 'is cut short (truncated file)')
  return length


def read_record(path: str, offset: int) -> bytes:
  """One TFRecord record's payload at byte ``offset`` of ``path``, its checksums verified.

  TFRecord framing: uint64 length, uint32 masked crc(length), data, uint32 masked crc(data).
  """
  with open(path, 'rb') as f:
    length = _header(f, path, offset, os.fstat(f.fileno()).st_size)
    data = f.read(length)
    (crc,) = struct.unpack('<I', f.read(4))
  if crc != masked_crc(data):
    raise _damaged(path, offset, 'has corrupt data (CRC mismatch)')
  return data


def record_offsets(path: str) -> List[int]:
  """Byte offsets of every record in a TFRecord file (reads and checks headers only)."""
  offsets, position = [], 0
  size = os.path.getsize(path)
  with open(path, 'rb') as f:
    while position < size:
      length = _header(f, path, position, size)
      offsets.append(position)
      position += 8 + 4 + length + 4
  return offsets


def check_shards(data_dir: str, split: str, rows: Sequence[Dict[str, object]]) -> None:
  """Every record the index ``rows`` name has a whole, uncorrupted header (fast: 12
  bytes a record), so a truncated shard is named before anything else runs."""
  by_shard: Dict[str, List[int]] = {}
  for r in rows:
    by_shard.setdefault(r['shard'], []).append(int(r['offset']))
  for shard, offsets in by_shard.items():
    path = os.path.join(data_dir, shard)
    if not os.path.exists(path):
      raise DatasetError(f'{path}: shard named by index-{split}.json is missing; rebuild '
                         'with python -m data_prep.build')
    size = os.path.getsize(path)
    with open(path, 'rb') as f:
      for offset in offsets:
        _header(f, path, offset, size)


def load_metadata(data_dir: str) -> Dict[str, object]:
  """Reads and checks ``metadata.json``; a clear error when the build is
  missing/partial. (`i2v_jax.dataset_folder.Dataset` reads it once a run.)"""
  path = os.path.join(data_dir, 'metadata.json')
  staged = os.path.join(data_dir.rstrip(os.sep) + '.staging', 'metadata.json')
  if not os.path.isfile(path) and os.path.isfile(staged):
    raise DatasetError(
        f'{path} not found: a build was interrupted while putting its complete dataset in '
        f'place; it is in {os.path.dirname(staged)}: run the same python -m data_prep.build '
        'command again to finish (it writes nothing new)')
  if not os.path.isfile(path):
    raise DatasetError(
        f'{path} not found: {data_dir!r} is not a complete dataset build. Run '
        f'`python -m data_prep.build --dataset ... --out_dir {data_dir}` (a build '
        'writes metadata.json last, so an interrupted one has none).')
  try:
    with open(path) as f:
      meta = json.load(f)
  except ValueError as e:
    raise DatasetError(f'{path}: not valid JSON ({e}); the file is damaged: rebuild with '
                       'python -m data_prep.build') from None
  if not isinstance(meta, dict):
    raise DatasetError(f'{path}: a JSON object was expected, not {type(meta).__name__}; '
                       'the file is damaged: rebuild with python -m data_prep.build')
  if meta.get('schema_version') != SCHEMA_VERSION:
    raise DatasetError(
        f'{path}: schema_version {meta.get("schema_version")} but this code reads '
        f'{SCHEMA_VERSION}; rebuild with python -m data_prep.build.')
  classes, id_map = meta.get('num_classes'), meta.get('id_map')
  if (not isinstance(classes, int) or isinstance(classes, bool) or classes < 1
      or not isinstance(id_map, dict) or len(id_map) != classes):
    raise DatasetError(
        f'{path}: num_classes={classes!r} must be a positive integer equal to the number of '
        f'training ids in id_map ({len(id_map) if isinstance(id_map, dict) else "missing"}); '
        'the file is damaged or edited: rebuild with python -m data_prep.build')
  return meta


def check_row(path: str, row: Dict[str, object]) -> None:
  """An index row names a shard inside the dataset folder (a bare file name)."""
  shard = row.get('shard') if isinstance(row, dict) else None
  if (not isinstance(shard, str) or not shard or os.path.basename(shard) != shard
      or shard in ('.', '..') or '\\' in shard):
    raise DatasetError(f'{path}: shard {shard!r} is not a file name inside the dataset '
                       'folder; the index is damaged or edited: rebuild with '
                       'python -m data_prep.build')


def load_index(data_dir: str, split: str) -> List[Dict[str, object]]:
  """Per-tracklet rows of ``index-<split>.json`` (shard, offset, pid, ...), read and
  checked (`i2v_jax.dataset_folder.Dataset` reads each once a run).

  A ``tfds build`` output has no index: it is computed from the split's shards
  on first use (`index_shards`) and kept as ``index-<split>.json`` when the
  folder is writable.
  """
  path = os.path.join(data_dir, f'index-{split}.json')
  if not os.path.lexists(path):  # (a broken or looping link is a damaged index, below)
    if not os.path.exists(os.path.join(data_dir, 'dataset_info.json')):
      raise DatasetError(f'{path} not found; rebuild with python -m data_prep.build')
    rows = index_shards(data_dir, split)
    try:
      atomic.write_json({'split': split, 'tracklets': rows}, path)
    except OSError:  # a read-only dataset folder: use the rows without caching
      pass
    return rows
  try:
    with open(path) as f:
      rows = json.load(f)['tracklets']
  except (OSError, ValueError, KeyError, TypeError) as e:  # OSError: a symlink loop, ...
    raise DatasetError(f'{path}: damaged index ({type(e).__name__}); delete it (a TFDS '
                       'build recomputes it) or rebuild with python -m data_prep.build') from None
  for row in rows:
    check_row(path, row)
  return rows


def check_record(data_dir: str, split: str, row: Dict[str, object],
                 record: Dict[str, object]) -> None:
  """A record read through the index is the one the index describes (pid, camera,
  name, frame count), so an edited index cannot change results silently."""
  got = dict(record, num_frames=len(record['frames']))
  for key in ('pid', 'camid', 'name', 'num_frames'):
    if got[key] != row.get(key):
      raise DatasetError(
          f'{os.path.join(data_dir, f"index-{split}.json")}: the entry for the record at '
          f'byte {row.get("offset")} of {row.get("shard")} says {key}={row.get(key)!r} but '
          f'the record holds {got[key]!r}; the index is damaged or edited: delete it (a '
          'TFDS build recomputes it) or rebuild with python -m data_prep.build')


def index_shards(data_dir: str, split: str) -> List[Dict[str, object]]:
  """The index rows of a split, read from its shards (every record is parsed)."""
  dataset = load_metadata(data_dir)['dataset']
  shards = sorted(glob.glob(os.path.join(data_dir, f'{dataset}-{split}.tfrecord-*-of-*')))
  if not shards:
    raise DatasetError(f'{data_dir}: no {dataset}-{split}.tfrecord-* shards and no '
                            f'index-{split}.json; rebuild with python -m data_prep.build')
  rows = []
  for shard in shards:
    for offset in record_offsets(shard):
      r = parse(read_record(shard, offset))
      rows.append({'shard': os.path.basename(shard), 'offset': offset, 'name': r['name'],
                   'pid': r['pid'], 'camid': r['camid'], 'label': r['label'],
                   'num_frames': r['num_frames']})
  return rows


def summary_table(meta: Dict[str, object]) -> str:
  """The dataset summary printed at build and at load (ids, tracklets, ...)."""
  rows = [f'{meta["dataset"]} ({meta["num_classes"]} training classes)',
          '  split    |   ids | tracklets |    frames | cameras',
          '  ---------+-------+-----------+-----------+--------']
  for split, c in meta['splits'].items():
    rows.append(f'  {split:8s} | {c["ids"]:5d} | {c["tracklets"]:9d} | '
                f'{c["frames"]:9d} | {c["cameras"]:7d}')
  return '\n'.join(rows)
