"""Trained networks -> features of query and gallery entries (docs/method.md §1).

Images go through the student, videos through ``eval.gallery_encoder``
(`encoders`); `extract_features` streams a split in fixed-size chunks of
``eval.clip_len`` frames with masks, sharded over the mesh, and averages chunk
features per tracklet weighted by valid frames.
"""

from __future__ import annotations

from typing import Dict

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec

from i2v_jax import input_pipeline, networks

FEATURES = ('features', 'bn_features')  # retrieve with the embedding or after the BN-neck
GALLERY_ENCODERS = ('teacher', 'student')  # which network encodes gallery videos
# The config switches whose choices this module owns (`config_lib.choices` reads them).
CONFIG_CHOICES = {'eval.feature': FEATURES, 'eval.gallery_encoder': GALLERY_ENCODERS}


def network_variables(state, name: str) -> Dict[str, object]:
  """{'params', 'batch_stats'} of ``name`` in a `TrainState` (trained or frozen)."""
  if name in state.params:
    return {'params': state.params[name], 'batch_stats': state.batch_stats[name]}
  if name in state.frozen:
    return state.frozen[name]
  raise KeyError(f'the train state has no {name} network')


def encode_fns(config, num_classes: int) -> Dict[str, object]:
  """network -> `make_encode_fn` for every network `encoders` names: built once a
  run (training evaluates with them at every ``train.eval_every``)."""
  return {net: make_encode_fn(config, num_classes, net)
          for net in sorted(set(encoders(config).values()))}


def encoders(config) -> Dict[str, str]:
  """Which network encodes images and which encodes videos, from config.

  Images are the student's job and videos the ``eval.gallery_encoder``'s; a run
  with one network (teacher_only, student_only) uses it for both (the teacher
  sees an image as a one-frame clip).
  """
  have = tuple(config.networks)
  video = config.eval.gallery_encoder
  if video not in GALLERY_ENCODERS:
    raise ValueError(f'config eval.gallery_encoder={video!r}: choose one of {GALLERY_ENCODERS}')
  if video not in have:
    video = have[0]
  return {'image': 'student' if 'student' in have else 'teacher', 'video': video}


def make_encode_fn(config, num_classes: int, network: str):
  """jit of (variables, frames (N, C, H, W, 3), mask (N, C)) -> (features (N, D), weight (N,)).

  Features of each chunk: a video network's (the teacher's) masked clip feature
  (non-local blocks see only valid frames), or an image network's features
  averaged over valid frames.
  ``weight`` is the number of valid frames, for averaging chunks per tracklet.
  Each call builds and jits anew: a run makes its encoders once (`encode_fns`)
  and hands them to every evaluation, so they compile once.
  """
  key = config.eval.feature
  if key not in FEATURES:
    raise ValueError(f'config eval.feature={key!r}: choose one of {FEATURES}')
  net = {n.name: n for n in networks.build(config, num_classes)}[network]
  model = net.module

  def encode(variables, frames, mask):
    weight = mask.sum(axis=1).astype(jnp.float32)
    if net.view == 'clip':
      features = model.apply(variables, frames, train=False, frame_mask=mask)[key]
    else:
      n, c = frames.shape[:2]
      out = model.apply(variables, frames.reshape((n * c,) + frames.shape[2:]), train=False)
      per_frame = out[key].reshape(n, c, -1) * mask[..., None]
      features = per_frame.sum(axis=1) / jnp.maximum(weight, 1.0)[:, None]
    return features.astype(jnp.float32), weight

  return jax.jit(encode)


def extract_features(config, dataset, split: str, *, mode: str, encode_fn,
                     variables, mesh) -> np.ndarray:
  """(num_tracklets, D) features of a split, in index order, on every process.

  ``mode='image'``: one frame per tracklet (``eval.query_frame``); ``'video'``:
  all frames (or ``eval.max_frames``) in chunks, chunk features averaged with
  weights = valid frames. Each process encodes its share of chunks; results are
  gathered so every process holds the whole matrix.
  """
  sharding = NamedSharding(mesh, PartitionSpec(mesh.axis_names[0]))
  batch = config.eval.batch_size * len(mesh.local_devices)
  ds = input_pipeline.eval_dataset(
      dataset, split, config, mode=mode, batch_size=batch,
      process_index=jax.process_index(), process_count=jax.process_count())
  num_rows = len(dataset.rows(split))
  sums, weights = None, np.zeros(num_rows)
  for local in input_pipeline.numpy_batches(ds):
    frames = jax.make_array_from_process_local_data(sharding, local['frames'])
    mask = jax.make_array_from_process_local_data(sharding, local['mask'])
    features, weight = (_local_rows(x) for x in encode_fn(variables, frames, mask))
    rows = local['row']
    if jax.process_count() > 1:
      features, weight, rows = multihost_utils.process_allgather(
          (features, weight, rows), tiled=True)
    if sums is None:
      sums = np.zeros((num_rows, features.shape[1]))
    real = rows >= 0
    np.add.at(sums, rows[real], features[real] * weight[real, None])
    np.add.at(weights, rows[real], weight[real])
  return (sums / np.maximum(weights, 1.0)[:, None]).astype(np.float32)


def _local_rows(x: jax.Array) -> np.ndarray:
  """This process's rows of a batch-sharded array, in its local-data order."""
  shards = sorted(x.addressable_shards, key=lambda s: s.index[0].start or 0)
  return np.concatenate([np.asarray(s.data) for s in shards])
