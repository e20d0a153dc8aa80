"""TFRecords -> training batches and evaluation chunks (tf.data).

Training (docs/method.md §3, §6). Every random choice for step s is drawn by `TrainSampler`
from ``numpy.random.default_rng([seed, s])``: which P identities, which K
tracklets of each, which T frames of each sample (``input.sampling``:
``restricted``, T equal chunks of the tracklet, one frame from each (TKP);
``multiview``, frame k from the k-th tracklet of a random order of the
identity's tracklets (VKD)), the clip's flip and crop offset, each frame's
erasing box, and with ``input.shuffle_frames`` a random order of the T frames. Process p of n keeps identities [p·P/n, (p+1)·P/n) of that
draw, so processes hold disjoint identities and the global batch does not depend
on how many processes there are. No iterator state exists: a pipeline started at
step 37 yields exactly the batch that one started at 0 yields at step 37.

Tracklets are read by byte offset (``index-train.json``), only the T chosen
frames are decoded, and tf.data decodes them in parallel (a frame stored at the
input size is not resized). The augmentations (flip, pad + crop, erasing) run on
the accelerator inside the train step (`augment_clips`), from the sampler's
draws that travel with the batch: the host only decodes.

Training element (per process, B = P/n·K tracklets):
  ``clips``  (B, T, H, W, 3) float32, ImageNet-normalised, not yet augmented
  ``labels`` (B,) int32 training labels; ``pids``, ``camids`` (B,) int32
  ``flip`` (B, T) bool, ``crop`` (B, T, 2), ``erase`` (B, T, 4) int32: the
  augmentation draws `augment_clips` applies
The student's M images are ``clips[:, :M]`` (image k = frame k of the clip).

Evaluation. Each tracklet of a split becomes chunks of ``clip_len`` frames (all
frames, or ``max_frames`` evenly spaced ones; one frame for image queries) with a
mask; processes take tracklets round-robin and every process runs the same
number of batches (padding chunks have ``row = -1`` and an all-False mask).
"""

from __future__ import annotations

import functools
import re
from typing import Dict, List, Optional, Sequence

import numpy as np

from i2v_jax import records

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


SAMPLINGS = ('restricted', 'multiview')
QUERY_FRAMES = ('first', 'middle')  # which frame of a query tracklet is its image
# The config switches whose choices this module owns (`config_lib.choices` reads them).
CONFIG_CHOICES = {'input.sampling': SAMPLINGS, 'eval.query_frame': QUERY_FRAMES}


class TrackletReader:
  """Random access to one split's tracklets through its index (thread-safe).

  `frames` keeps the last 64 tracklets read, per reader: training asks for a
  tracklet's record once per frame of its clip, evaluation once per frame of
  every chunk. Reading each of the small synthetic gallery's 2,249 frames that
  way takes 0.008 s with the cache and 0.075 s without it (8.9x;
  bench/tracklet_reader.py, 2-core AMD EPYC), so it stays.
  """

  def __init__(self, dataset, split: str):
    self.dataset, self.split = dataset, split  # a `dataset_folder.Dataset`
    self.rows = dataset.rows(split)
    self.frames = functools.lru_cache(maxsize=64)(self._read)

  def _read(self, row: int) -> tuple:
    """The frames of tracklet ``row``; its record is checked against its index row."""
    r = self.rows[row]
    record = records.parse(records.read_record(self.dataset.file(r['shard']),
                                               r['offset']))
    records.check_record(self.dataset.dir, self.split, r, record)
    return tuple(record['frames'])


def restricted_random(num_frames: int, t: int, rng: np.random.Generator) -> np.ndarray:
  """T frame indices, one uniformly from each of T equal chunks (TKP/VKD).

  A tracklet shorter than T repeats frames evenly (index floor(k·n/T)).
  """
  if num_frames < t:
    return (np.arange(t) * num_frames) // t
  bounds = (np.arange(t + 1) * num_frames) // t
  return bounds[:-1] + (rng.random(t) * (bounds[1:] - bounds[:-1])).astype(np.int64)


class TrainSampler:
  """The pure function (seed, step, process) -> which frames and augmentations."""

  def __init__(self, rows: Sequence[Dict[str, object]], *, num_ids: int,
               tracklets_per_id: int, clip_len: int, height: int, width: int,
               pad_crop: int, flip: bool, erasing_prob: float, seed: int,
               sampling: str = 'restricted', shuffle_frames: bool = False,
               process_index: int = 0, process_count: int = 1,
               source: str = 'train split'):
    if sampling not in SAMPLINGS:
      raise ValueError(f'config input.sampling={sampling!r}: choose one of {SAMPLINGS}')
    self.sampling, self.shuffle_frames = sampling, shuffle_frames
    self.by_id: Dict[int, List[int]] = {}
    for i, r in enumerate(rows):
      self.by_id.setdefault(int(r['label']), []).append(i)
    self.ids = np.array(sorted(self.by_id))
    self.num_frames = np.array([r['num_frames'] for r in rows])
    if num_ids % process_count:
      raise ValueError(f'config input.num_ids={num_ids} must be a multiple of the '
                       f'{process_count} processes (each holds whole identities)')
    if len(self.ids) < num_ids:
      raise ValueError(
          f'{source}: {len(self.ids)} identities, fewer than input.num_ids={num_ids} '
          '(P of the P x K batch); lower --config.input.num_ids or use more data')
    self.p, self.k, self.t = num_ids, tracklets_per_id, clip_len
    self.h, self.w, self.pad = height, width, pad_crop
    self.flip, self.erasing_prob, self.seed = flip, erasing_prob, seed
    self.process_index, self.process_count = process_index, process_count

  def __call__(self, step: int) -> Dict[str, np.ndarray]:
    """Sample rows (B,), and for every frame its tracklet row and frame index (B, T)."""
    rng = np.random.default_rng([self.seed, step])
    ids = rng.choice(self.ids, self.p, replace=False)
    rows = np.concatenate([
        rng.choice(self.by_id[i], self.k, replace=len(self.by_id[i]) < self.k)
        for i in ids])
    b = len(rows)
    if self.sampling == 'restricted':
      frame_rows = np.repeat(rows[:, None], self.t, axis=1)
      frames = np.stack([restricted_random(self.num_frames[r], self.t, rng) for r in rows])
    else:
      frame_rows, frames = self._multiview(rows, ids, rng)
    flip = (rng.random(b) < 0.5) & self.flip
    crop = rng.integers(0, 2 * self.pad + 1, (b, 2))
    erase = self._erasing(rng, b)
    if self.shuffle_frames:
      order = np.argsort(rng.random((b, self.t)), axis=1)
      frame_rows = np.take_along_axis(frame_rows, order, axis=1)
      frames = np.take_along_axis(frames, order, axis=1)
    share = slice(self.process_index * b // self.process_count,
                  (self.process_index + 1) * b // self.process_count)
    return {'rows': rows[share], 'frame_rows': frame_rows[share], 'frames': frames[share],
            'flip': flip[share], 'crop': crop[share], 'erase': erase[share]}

  def _multiview(self, rows, ids, rng):
    """VKD's MultiViewTemporalTransform: per sample, a random order of its
    identity's tracklets; frame k comes from tracklet k mod n of that order, at a
    uniformly random position."""
    frame_rows = np.empty((len(rows), self.t), np.int64)
    for i, pid in enumerate(np.repeat(ids, self.k)):
      order = rng.permutation(self.by_id[pid])
      frame_rows[i] = order[np.arange(self.t) % len(order)]
    frames = (rng.random(frame_rows.shape) * self.num_frames[frame_rows]).astype(np.int64)
    return frame_rows, frames

  def _erasing(self, rng, b):
    """(B, T, 4) int32 boxes y0, x0, h, w (h = 0: no erasing), Zhong et al. 2020."""
    n = b * self.t
    area = rng.uniform(0.02, 0.4, n) * self.h * self.w
    ratio = np.exp(rng.uniform(np.log(0.3), np.log(1 / 0.3), n))
    h = np.minimum(np.round(np.sqrt(area * ratio)), self.h - 1).astype(np.int64)
    w = np.minimum(np.round(np.sqrt(area / ratio)), self.w - 1).astype(np.int64)
    y0 = (rng.random(n) * (self.h - h)).astype(np.int64)
    x0 = (rng.random(n) * (self.w - w)).astype(np.int64)
    on = rng.random(n) < self.erasing_prob
    return np.stack([y0, x0, h * on, w * on], -1).reshape(b, self.t, 4)


def _tf():
  import tensorflow as tf
  return tf


def numpy_batches(ds):
  """``ds.as_numpy_iterator()``, where a damaged record read inside tf.data comes out
  as the `records.DatasetError` that names it, not as a TensorFlow op error."""
  tf = _tf()
  it = ds.as_numpy_iterator()
  while True:
    try:
      batch = next(it)
    except StopIteration:
      return
    except tf.errors.OpError as e:
      match = re.search(r'DatasetError: (.*)', e.message)
      if match:
        raise records.DatasetError(match.group(1).strip()) from None
      raise
    yield batch


def decode_jpeg(jpeg):
  """The pipeline's one JPEG decoder: bytes -> (h, w, 3) uint8. Dataset builds
  check every frame with it, so a frame that builds is a frame training reads."""
  return _tf().io.decode_jpeg(jpeg, channels=3, dct_method='INTEGER_ACCURATE')


def decode_frame(jpeg, height: int, width: int, normalize: bool = True):
  """JPEG -> (H, W, 3) float32 resized (bilinear, antialiased) and normalised."""
  return prepare_image(decode_jpeg(jpeg), height, width, normalize)


def prepare_image(image, height: int, width: int, normalize: bool = True):
  """(..., h, w, 3) uint8 -> (..., H, W, 3) float32 resized (bilinear,
  antialiased), normalised; one frame or a batch of them.

  Frames stored at (H, W) are only cast: the antialiased resize to their own
  size is the identity (each output pixel weighs its own input pixel by exactly
  1), and computing it costs three times the JPEG decode."""
  tf = _tf()
  image = tf.convert_to_tensor(image)
  shape = tf.shape(image)
  image = tf.cond(tf.logical_and(shape[-3] == height, shape[-2] == width),
                  lambda: tf.cast(image, tf.float32),
                  lambda: tf.image.resize(image, (height, width), antialias=True))
  leading = [None] * (image.shape.rank - 3)
  image = tf.ensure_shape(image, leading + [height, width, 3]) / 255.0
  if normalize:
    image = (image - IMAGENET_MEAN) / IMAGENET_STD
  return image


def augment_clips(clips, flip, crop, erase, pad: int):
  """The training augmentations, on the accelerator inside the jitted step, from
  the sampler's per-frame draws that travel with the batch:

    clips (B, T, H, W, 3) float32 normalised frames; flip (B, T) bool;
    crop (B, T, 2) int32 offsets into the frame padded by ``pad`` (zero pixels);
    erase (B, T, 4) int32 boxes (y0, x0, h, w; h = w = 0: none) set to 0, the
    mean pixel after normalisation.

  Flip, then pad + crop, then erase, each an exact float operation (a mirror, a
  copy, a select; the padding adds and removes black as the host path did), so
  the step sees the frames the host-side augmentation made, bit for bit. Only
  decoding (and resizing, normalising) is left to the host.
  """
  import jax
  import jax.numpy as jnp
  h, w = clips.shape[2], clips.shape[3]
  x = jnp.where(flip[:, :, None, None, None], clips[:, :, :, ::-1], clips)
  if pad:
    black = -IMAGENET_MEAN / IMAGENET_STD  # a zero pixel after normalisation
    padded = jnp.pad(x - black, ((0, 0), (0, 0), (pad, pad), (pad, pad), (0, 0))) + black
    one = lambda image, at: jax.lax.dynamic_slice(image, (at[0], at[1], 0), (h, w, 3))
    x = jax.vmap(jax.vmap(one))(padded, crop)
  e = erase[:, :, None, None, :]
  yy = jnp.arange(h)[:, None]
  xx = jnp.arange(w)[None, :]
  box = ((yy >= e[..., 0]) & (yy < e[..., 0] + e[..., 2]) &
         (xx >= e[..., 1]) & (xx < e[..., 1] + e[..., 3]))
  return jnp.where(box[..., None], jnp.zeros_like(x), x)


AUGMENTATION_KEYS = ('flip', 'crop', 'erase')


def train_dataset(dataset, config, *, seed: int, start_step: int = 0,
                  num_steps: Optional[int] = None, process_index: int = 0,
                  process_count: int = 1, verbose: bool = False):
  """tf.data.Dataset of training batches for steps start_step, start_step+1, ...

  With ``verbose`` process 0 prints the dataset summary table.

  Args:
    dataset: the opened `dataset_folder.Dataset` to train on.
    config: the full experiment config (uses ``config.input``).
  """
  tf = _tf()
  inp = config.input
  if process_index == 0 and verbose:
    print(dataset.summary(), flush=True)
  reader = TrackletReader(dataset, 'train')
  sampler = TrainSampler(
      reader.rows, num_ids=inp.num_ids, tracklets_per_id=inp.tracklets_per_id,
      clip_len=inp.clip_len, height=inp.height, width=inp.width,
      pad_crop=inp.pad_crop, flip=inp.flip, erasing_prob=inp.erasing_prob,
      seed=seed, sampling=inp.sampling, shuffle_frames=inp.shuffle_frames,
      process_index=process_index, process_count=process_count,
      source=dataset.file('index-train.json'))
  t = inp.clip_len
  b = inp.num_ids * inp.tracklets_per_id // process_count

  def plan(step):
    p = sampler(int(step))
    jpegs = np.array([reader.frames(int(r))[int(f)]
                      for r, f in zip(p['frame_rows'].ravel(), p['frames'].ravel())],
                     object)
    meta = np.array([[reader.rows[r]['label'], reader.rows[r]['pid'],
                      reader.rows[r]['camid']] for r in p['rows']], np.int32)
    per_frame = lambda x: np.repeat(x, t, axis=0)
    return (jpegs, np.repeat(meta, t, axis=0), per_frame(p['flip']),
            per_frame(p['crop']).astype(np.int32),
            p['erase'].reshape(-1, 4).astype(np.int32))

  def frames_of_step(step):
    out = tf.numpy_function(plan, [step], [tf.string, tf.int32, tf.bool, tf.int32, tf.int32])
    return tf.data.Dataset.from_tensor_slices(tuple(out))

  def decode(jpeg, meta, flip, crop, erase):
    return decode_frame(jpeg, inp.height, inp.width, inp.normalize), meta, flip, crop, erase

  def assemble(images, meta, flip, crop, erase):
    meta = tf.reshape(meta, (b, t, 3))[:, 0]
    return {'clips': tf.reshape(images, (b, t, inp.height, inp.width, 3)),
            'labels': meta[:, 0], 'pids': meta[:, 1], 'camids': meta[:, 2],
            'flip': tf.reshape(flip, (b, t)), 'crop': tf.reshape(crop, (b, t, 2)),
            'erase': tf.reshape(erase, (b, t, 4))}

  end = start_step + num_steps if num_steps is not None else np.iinfo(np.int64).max
  ds = tf.data.Dataset.range(start_step, end)
  ds = ds.flat_map(frames_of_step)
  ds = ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  ds = ds.batch(b * t, drop_remainder=True).map(assemble)
  return ds.prefetch(2)


def eval_chunks(rows: Sequence[Dict[str, object]], *, mode: str, clip_len: int,
                max_frames: int = 0, query_frame: str = 'first') -> List[tuple]:
  """[(row, frame indices padded with -1)] for one split.

  ``mode='image'``: one chunk of one frame per tracklet (its first or middle
  frame). ``mode='video'``: every frame (or ``max_frames`` evenly spaced ones)
  in chunks of ``clip_len``; the last chunk is padded with -1.
  """
  chunks = []
  for i, r in enumerate(rows):
    n = int(r['num_frames'])
    if mode == 'image':
      chunks.append((i, np.array([0 if query_frame == 'first' else n // 2])))
      continue
    frames = np.arange(n)
    if max_frames and n > max_frames:
      frames = (np.arange(max_frames) * n) // max_frames
    for s in range(0, len(frames), clip_len):
      part = frames[s:s + clip_len]
      chunks.append((i, np.pad(part, (0, clip_len - len(part)), constant_values=-1)))
  return chunks


def eval_dataset(dataset, split: str, config, *, mode: str,
                 batch_size: Optional[int] = None,
                 process_index: int = 0, process_count: int = 1):
  """Batches {'frames' (N, C, H, W, 3), 'mask' (N, C), 'row' (N,)} for a split.

  N = ``batch_size`` (default ``eval.batch_size``) chunks per process; every
  process yields the same number of batches; padding has row -1.
  """
  tf = _tf()
  ev, inp = config.eval, config.input
  batch_size = batch_size or ev.batch_size
  reader = TrackletReader(dataset, split)
  clip_len = 1 if mode == 'image' else ev.clip_len
  chunks = eval_chunks(reader.rows, mode=mode, clip_len=clip_len,
                       max_frames=ev.max_frames, query_frame=ev.query_frame)
  per_process = [chunks[p::process_count] for p in range(process_count)]
  # The same number of batches everywhere: pad to the longest share.
  steps = -(-max(len(c) for c in per_process) // batch_size)
  mine = per_process[process_index]
  mine += [(-1, np.full(clip_len, -1))] * (steps * batch_size - len(mine))
  rows = np.array([r for r, _ in mine], np.int32)
  frames = np.stack([f for _, f in mine]).astype(np.int32)

  def read(row, frame):
    if row < 0 or frame < 0:
      return b''
    return reader.frames(int(row))[int(frame)]

  def load(row, frame):
    jpeg = tf.numpy_function(read, [row, frame], tf.string)
    image = tf.cond(frame >= 0,
                    lambda: decode_frame(jpeg, inp.height, inp.width, inp.normalize),
                    lambda: tf.zeros((inp.height, inp.width, 3)))
    return tf.ensure_shape(image, (inp.height, inp.width, 3))

  ds = tf.data.Dataset.from_tensor_slices(
      (np.repeat(rows, clip_len), frames.reshape(-1)))
  ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  ds = ds.batch(clip_len).batch(batch_size)
  meta = tf.data.Dataset.from_tensor_slices(
      {'row': rows, 'mask': frames >= 0}).batch(batch_size)
  return tf.data.Dataset.zip(ds, meta).map(
      lambda f, m: {'frames': f, 'mask': m['mask'], 'row': m['row']}).prefetch(2)

