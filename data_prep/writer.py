"""Tracklets -> sharded TFRecords + index + metadata, atomically and resumably.

Each shard is written under a temporary name and renamed when complete, so a
killed build never leaves a shard that reads as whole. ``build-plan.json`` holds a
hash of what each split's shards should contain: re-running the same build keeps
the shards already finished and writes the rest; a different build (other
sources, other options) starts those splits afresh. ``metadata.json`` is written
last and only when every split is complete.
"""

from __future__ import annotations

import concurrent.futures
import glob
import hashlib
import io
import json
import os
import shutil
from typing import Callable, Dict, List, Optional, Sequence

from PIL import Image
from tqdm import tqdm

from i2v_jax import atomic, input_pipeline, locks, records
from i2v_jax.dataset_folder import counts
from i2v_jax.errors import UserError, free_space, is_disk_full
from i2v_jax.records import Tracklet


class DataError(UserError, ValueError):
  """Bad input: the message names the file, the field and the fix."""


def read_lines(path: str, missing: str) -> List[str]:
  """The non-empty lines of a dataset's text list (``missing``: what to say when
  it is not there); a folder in its place or bytes that are not UTF-8 are one
  line naming the file, not a traceback."""
  if not os.path.lexists(path):
    raise DataError(f'{path}: {missing}')
  try:
    with open(path, encoding='utf-8') as f:
      return [line.strip() for line in f if line.strip()]
  except IsADirectoryError:
    raise DataError(f'{path}: a folder where the text file should be; put the dataset\'s '
                    'original file there') from None
  except UnicodeDecodeError as e:
    raise DataError(f'{path}: not UTF-8 text (byte {e.start} is {e.object[e.start]:#04x}); '
                    'the file is damaged: take it from the original archive') from None
  except OSError as e:
    raise DataError(f'{path}: unreadable ({e.strerror}); take it from the original '
                    'archive') from None


def read_frame(frame, verify: bool) -> bytes:
  """JPEG bytes of a frame path or the bytes themselves. A path's first bytes must
  be JPEG's magic (always: cheap); with ``verify`` the whole file must decode, with
  PIL and with the input pipeline's decoder (PIL accepts some damaged files that the
  pipeline refuses: a truncated file padded with zeros)."""
  if isinstance(frame, bytes):
    return frame
  try:
    with open(frame, 'rb') as f:
      data = f.read()
  except FileNotFoundError:
    raise DataError(f'{frame}: frame listed in the dataset metadata is missing; '
                    're-extract the dataset archive into --manual_dir') from None
  except IsADirectoryError:
    raise DataError(f'{frame}: a folder where a JPEG frame should be; re-extract the '
                    'dataset archive into --manual_dir') from None
  except OSError as e:
    raise DataError(f'{frame}: unreadable ({e.strerror}); re-extract the dataset archive '
                    'into --manual_dir') from None
  if not data.startswith(b'\xff\xd8\xff'):  # JPEG's magic bytes: checked even without verify
    kind = 'a PNG' if data.startswith(b'\x89PNG') else 'empty' if not data else 'not a JPEG'
    raise DataError(f'{frame}: {kind} file, not a JPEG (its first bytes say so); replace it '
                    'from the original archive, or delete it and its metadata row')
  if verify:
    try:  # PIL first: it names the fault and prints nothing; TF's libjpeg writes to stderr
      with Image.open(io.BytesIO(data)) as image:
        if image.format != 'JPEG':
          raise OSError(f'format {image.format}')
        image.load()
      input_pipeline.decode_jpeg(data)
    except Exception as e:  # tf.errors.InvalidArgumentError: keep its reason, not TF's prefix
      reason = str(getattr(e, 'message', e)).split('}}')[-1].split(' [Op:')[0].strip(' .')
      if reason.startswith('cannot identify image file'):
        reason = 'no image decoder recognises its data'
      raise DataError(f'{frame}: not a whole JPEG ({reason}: truncated or corrupt); replace '
                      'the file from the original archive, or delete it and its metadata '
                      'row') from None
  return data


def _shard_count(requested: int, num_tracklets: int) -> int:
  """Shards a split is written in: as requested, at least 1, at most one a tracklet."""
  return max(1, min(requested, num_tracklets))


def _plan_hash(split: str, tracklets: Sequence[Tracklet], num_shards: int) -> str:
  h = hashlib.sha256(f'{records.SCHEMA_VERSION}|{split}|{num_shards}'.encode())
  for t in tracklets:
    h.update(f'{t.name}|{t.pid}|{t.camid}|{t.label}|{len(t.frames)}'.encode())
    for frame in t.frames:
      h.update(hashlib.sha1(frame).digest() if isinstance(frame, bytes)
               else str(frame).encode())
  return h.hexdigest()


def _write_shard(path: str, tracklets: Sequence[Tracklet], verify: bool,
                 progress: Callable[[int], None]) -> None:
  tmp = f'{path}.tmp-{os.getpid()}'
  import tensorflow as tf
  try:
    with tf.io.TFRecordWriter(tmp) as writer:
      for t in tracklets:
        frames = [read_frame(f, verify) for f in t.frames]
        writer.write(records.serialize(frames, pid=t.pid, camid=t.camid,
                                       name=t.name, label=t.label))
        progress(1)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def write_split(out_dir: str, dataset: str, split: str, tracklets: Sequence[Tracklet],
                num_shards: int, workers: int = 4, verify: bool = True,
                plan: Optional[Dict[str, str]] = None, show_progress: bool = True,
                digest: Optional[str] = None) -> Dict[str, object]:
  """Writes one split's shards (TFDS file names) and its index; returns the
  split's summary with its shard names and lengths. ``digest``: the split's
  `_plan_hash`, when the caller has it already."""
  if not tracklets:
    raise DataError(f'split {split!r} has no tracklets; check --manual_dir')
  num_shards = _shard_count(num_shards, len(tracklets))
  for stale in glob.glob(os.path.join(out_dir, f'{dataset}-{split}.tfrecord-*.tmp-*')):
    os.remove(stale)  # a shard a killed build was writing
  digest = digest or _plan_hash(split, tracklets, num_shards)
  plan = plan if plan is not None else {}
  if plan.get(split) != digest:  # another build's shards: start afresh
    for old in glob.glob(os.path.join(out_dir, f'{dataset}-{split}.tfrecord*')):
      os.remove(old)
    plan[split] = digest
    atomic.write_json(plan, os.path.join(out_dir, 'build-plan.json'))

  bounds = [len(tracklets) * i // num_shards for i in range(num_shards + 1)]
  shards = [(records.shard_name(dataset, split, i, num_shards),
             tracklets[bounds[i]:bounds[i + 1]])
            for i in range(num_shards)]
  todo = [(n, ts) for n, ts in shards if not os.path.exists(os.path.join(out_dir, n))]
  done = len(tracklets) - sum(len(ts) for _, ts in todo)
  bar = tqdm(total=len(tracklets), initial=done, desc=f'{split:8s}', unit='trk',
             disable=not show_progress)
  with concurrent.futures.ThreadPoolExecutor(max(1, workers)) as pool:
    futures = [pool.submit(_write_shard, os.path.join(out_dir, n), ts, verify, bar.update)
               for n, ts in todo]
    for future in concurrent.futures.as_completed(futures):
      future.result()  # re-raises the first error (with its file name)
  bar.close()

  index: List[Dict[str, object]] = []
  for name, ts in shards:
    offsets = records.record_offsets(os.path.join(out_dir, name))
    if len(offsets) != len(ts):
      raise DataError(f'{os.path.join(out_dir, name)}: {len(offsets)} records, '
                      f'expected {len(ts)}; delete it and re-run the build')
    index += [{'shard': name, 'offset': o, 'name': t.name, 'pid': t.pid,
               'camid': t.camid, 'label': t.label, 'num_frames': len(t.frames)}
              for o, t in zip(offsets, ts)]
  atomic.write_json({'split': split, 'tracklets': index},
                     os.path.join(out_dir, f'index-{split}.json'))
  return counts(index) | {'shards': [n for n, _ in shards],
                             'shard_lengths': [len(ts) for _, ts in shards]}


def sha256(path: str) -> str:
  h = hashlib.sha256()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 20), b''):
      h.update(block)
  return h.hexdigest()


def dataset_metadata(dataset: str, splits: Dict[str, List[Tracklet]],
                     protocol: Dict[str, object], source_files: Sequence[str] = ()
                     ) -> Dict[str, object]:
  """``metadata.json``: counts per split, the training id map, the protocol."""
  train_pids = sorted({t.pid for t in splits.get('train', [])})
  return {
      'schema_version': records.SCHEMA_VERSION,
      'dataset': dataset,
      'splits': {split: counts([{'pid': t.pid, 'camid': t.camid,
                                 'num_frames': len(t.frames)} for t in ts])
                 for split, ts in splits.items()},
      'num_classes': len(train_pids),
      'id_map': {str(pid): i for i, pid in enumerate(train_pids)},
      'protocol': protocol,
      'source_hashes': {os.path.basename(p): sha256(p) for p in source_files},
  }


def require_dir(manual_dir: str, dataset: str) -> str:
  """``manual_dir`` if it is a folder, else a DataError saying what to pass."""
  if not manual_dir:
    raise DataError(f'--manual_dir is required for --dataset {dataset}: the '
                    'folder where you extracted the dataset')
  if not os.path.isdir(manual_dir):
    raise DataError(f'{manual_dir}: --manual_dir does not exist')
  return manual_dir


def write_info(out_dir: str, builder, counts: Dict[str, Dict[str, object]],
               meta: Dict[str, object]) -> None:
  """TFDS's ``dataset_info.json`` and ``features.json`` of ``builder`` for the
  shards in ``out_dir`` (so ``tfds.builder_from_directory(out_dir)`` reads the
  build), then ``meta`` as ``metadata.json``, last: it marks the build complete."""
  from tensorflow_datasets.core import naming, splits as tfds_splits
  # (tensorflow_datasets imports tensorflow: only a build pays for it)
  infos = []
  for split, c in counts.items():
    paths = [os.path.join(out_dir, n) for n in c['shards']]
    infos.append(tfds_splits.SplitInfo(
        name=split, shard_lengths=c['shard_lengths'],
        num_bytes=sum(os.path.getsize(p) for p in paths),
        filename_template=naming.ShardedFileTemplate(
            data_dir=out_dir, dataset_name=builder.name, split=split,
            filetype_suffix='tfrecord')))
  builder.info.set_splits(tfds_splits.SplitDict(infos))
  builder.info.metadata.clear()
  builder.info.metadata.update(meta)  # TFDS writes it as metadata.json
  staging = os.path.join(out_dir, f'.info.tmp-{os.getpid()}')
  os.makedirs(staging, exist_ok=True)
  builder.info.write_to_directory(staging)
  names = sorted(os.listdir(staging), key=lambda n: n == 'metadata.json')
  for name in names:  # each file whole, metadata.json last
    os.replace(os.path.join(staging, name), os.path.join(out_dir, name))
  os.rmdir(staging)


def write_dataset(out_dir: str, builder, splits: Dict[str, List[Tracklet]],
                  protocol: Dict[str, object], source_files: Sequence[str] = (),
                  shards_per_split: Optional[Dict[str, int]] = None,
                  workers: int = 4, verify: bool = True, show_progress: bool = True,
                  overwrite: bool = False) -> Dict[str, object]:
  """Writes every split, the builder's TFDS info, then ``metadata.json``.

  The build happens in ``<out_dir>.staging`` (resumable: finished shards are
  kept there) and replaces ``out_dir`` only when complete, so a failing build
  never damages what ``out_dir`` held. A finished build of the same dataset in
  ``out_dir`` is kept as it is; a different one is replaced only with
  ``overwrite``. ``builder`` is the dataset's ``data_prep.tfds_builders``
  builder: it names the shards and supplies the TFDS features, version and
  citation. Returns the metadata. Call it under `build_lock` (`data_prep.build`
  takes it before converting, so a second build is refused at once).
  """
  out_dir = os.path.abspath(out_dir)
  if os.path.exists(out_dir) and not os.path.isdir(out_dir):
    raise DataError(f'{out_dir}: --out_dir is a file; choose a folder (new or a '
                    'previous build of this dataset)')
  return _write_dataset(out_dir, builder, splits, protocol, source_files,
                        shards_per_split, workers, verify, show_progress, overwrite)


def build_lock(out_dir: str):
  """One build per folder at a time (they share ``<out_dir>.staging``); a second
  gets `locks.Locked`, one line naming the first."""
  out_dir = os.path.abspath(out_dir)
  return locks.hold(f'{out_dir}.lock', f'--out_dir={out_dir}', remove=True)


def finish_interrupted_swap(out_dir: str) -> None:
  """Completes what a build killed between its two renames left: ``out_dir``
  missing, the complete new dataset in ``<out_dir>.staging`` (its metadata.json is
  written last) and the old one in ``<out_dir>.old-<pid>``. The new one takes its
  place; leftover ``.old-*`` folders go once a complete dataset is in place. Call
  under the build lock."""
  staging = out_dir + '.staging'
  olds = sorted(glob.glob(glob.escape(out_dir) + '.old-*'))
  if not os.path.exists(out_dir):
    if os.path.isfile(os.path.join(staging, 'metadata.json')):
      os.rename(staging, out_dir)
      print(f'{out_dir}: put in place the complete build an interrupted run left in {staging}')
    elif olds:  # the new build is gone: the old dataset goes back
      os.rename(olds.pop(), out_dir)
      print(f'{out_dir}: restored the previous dataset an interrupted run had set aside')
  if os.path.isfile(os.path.join(out_dir, 'metadata.json')):
    for old in olds:
      shutil.rmtree(old, ignore_errors=True)


def _write_dataset(out_dir, builder, splits, protocol, source_files, shards_per_split,
                   workers, verify, show_progress, overwrite) -> Dict[str, object]:
  finish_interrupted_swap(out_dir)
  counts_of = lambda split, ts: (shards_per_split or {}).get(split, max(1, len(ts) // 256))
  wanted_plan = {split: _plan_hash(split, ts, _shard_count(counts_of(split, ts), len(ts)))
                 for split, ts in splits.items()}
  if os.path.exists(os.path.join(out_dir, 'metadata.json')):
    if _read_json(os.path.join(out_dir, 'build-plan.json')) == wanted_plan:
      return records.load_metadata(out_dir)  # this very build is already there
    if not overwrite:
      old = _read_json(os.path.join(out_dir, 'metadata.json')) or {}
      raise DataError(f'{out_dir}: holds another finished dataset build ({old.get("dataset")}, '
                      'other sources or settings); pass --overwrite to replace it (the new '
                      'build replaces it only once complete) or choose another --out_dir')
  elif os.path.isdir(out_dir) and os.listdir(out_dir) and not os.path.exists(
      os.path.join(out_dir, 'build-plan.json')):
    raise DataError(f'{out_dir}: --out_dir holds files that are not a dataset build; '
                    'choose an empty or new folder')
  staging = out_dir + '.staging'
  try:
    os.makedirs(staging, exist_ok=True)
    probe = os.path.join(staging, f'.write-test-{os.getpid()}')
    open(probe, 'w').close()
    os.remove(probe)
  except OSError as e:
    raise DataError(f'{staging}: cannot write the build there ({e.strerror}); choose a '
                    '--out_dir in a writable folder') from None
  plan = _read_json(os.path.join(staging, 'build-plan.json')) or {}
  counts = {}
  try:
    for split, tracklets in splits.items():
      counts[split] = write_split(staging, builder.name, split, tracklets,
                                  counts_of(split, tracklets), workers, verify, plan,
                                  show_progress, digest=wanted_plan[split])
    meta = dataset_metadata(builder.name, splits, protocol, source_files)
    write_info(staging, builder, counts, meta)
  except DataError as e:
    raise DataError(f'{e}{_staging_fate(staging)}') from None
  except Exception as e:  # TensorFlow wraps the OSError
    if not is_disk_full(e):
      raise
    raise DataError(_disk_full(staging, splits)) from None
  # The complete build takes out_dir's place; the old one is deleted only after.
  old = f'{out_dir}.old-{os.getpid()}'
  if os.path.exists(out_dir):
    os.rename(out_dir, old)
  os.rename(staging, out_dir)
  shutil.rmtree(old, ignore_errors=True)
  return meta


def _finished_shards(staging: str) -> List[str]:
  return [n for n in os.listdir(staging) if '.tfrecord-' in n and '.tmp-' not in n]


def _staging_fate(staging: str) -> str:
  """What a failed build leaves, said at the end of its error line: finished
  shards stay for the rerun to reuse; a staging folder with none is removed."""
  shards = _finished_shards(staging)
  if shards:
    return (f' ({len(shards)} finished shards are kept in {staging}; the next build of '
            'these sources reuses them, another build replaces them)')
  shutil.rmtree(staging, ignore_errors=True)
  return ' (nothing was kept)'


def _disk_full(staging: str, splits: Dict[str, List[Tracklet]]) -> str:
  """The one line for a build that filled its disk: the folder, the free space, an
  estimate of what the rest needs (the frames' encoded size) and what to do."""
  frames = sum(len(f) if isinstance(f, bytes) else os.path.getsize(f)
               for ts in splits.values() for t in ts for f in t.frames)
  shards = _finished_shards(staging)
  written = sum(os.path.getsize(os.path.join(staging, n)) for n in shards)
  return (f'{staging}: no space left on the device while building ({free_space(staging)} '
          f'free; the rest of the build needs about {max(0, frames - written) / 1e6:.0f} MB '
          f'more); free space and run the same command again: the {len(shards)} finished '
          'shards there are kept and reused')


def _read_json(path: str):
  """The JSON in ``path``, or None when it is missing or not whole."""
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def train_labels(tracklets: Sequence[Tracklet]) -> List[Tracklet]:
  """Sets contiguous labels (sorted pid order) on training tracklets."""
  pids = sorted({t.pid for t in tracklets})
  label = {pid: i for i, pid in enumerate(pids)}
  return [Tracklet(t.name, t.pid, t.camid, t.frames, label[t.pid]) for t in tracklets]
