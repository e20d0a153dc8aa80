"""Evaluation (SPEC §1): features -> distances -> CMC / mAP / mINP, per protocol.

  features   `extract_features`: jitted, sharded over the mesh, chunks of
             ``eval.clip_len`` frames with masks, chunk features averaged per
             tracklet weighted by valid frames; images by the student, videos by
             ``eval.gallery_encoder`` (`encoders`).
  metrics    `rank_metrics` (numpy, the reference) and `ranked_metrics` (the same
             numbers on the device, ``eval.query_block`` queries at a time).
  protocols  `run`: I2V, V2V, I2I, V2I -> results.md / results.json, optional
             re-ranking (`i2v_jax.rerank`), .npz export, ranked-list PNGs
             (`i2v_jax.visualize`).

Ranking metrics:

For a query, gallery entries are sorted by distance (stable: ties keep gallery
order); entries with the query's pid *and* camera are junk and removed; the rest
is a 0/1 hit pattern m_1..m_G with n hits. With p_r = (hits in 1..r) / r:

  standard AP  = (1/n) Σ_{r: m_r=1} p_r                                (torchreid)
  trapezoid AP = (1/n) Σ_{r: m_r=1} (p_{r−1} + p_r) / 2,  p_0 = 1       (MARS kit, TKP, VKD)
  CMC@k        = [first hit at rank ≤ k]
  INP          = n / (rank of the last hit)                            (Ye et al. 2021)

A query with no hit left after junk removal is skipped and counted.
"""

from __future__ import annotations

import functools
import os
from typing import Dict

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from i2v_jax import records
from i2v_jax.models import build_models

AP_MODES = ('trapezoid', 'standard')


def rank_metrics(distmat: np.ndarray, q_pids, g_pids, q_camids, g_camids, *,
                 ap_mode: str = 'trapezoid', max_rank: int = 20) -> Dict[str, object]:
  """CMC, mAP, mINP of a (num_query, num_gallery) distance matrix.

  Returns:
    {'cmc': (max_rank,) float array, 'mAP', 'mINP': floats in [0, 1],
     'num_valid_queries': int, 'num_skipped_queries': int}.
  """
  if ap_mode not in AP_MODES:
    raise ValueError(f'eval.ap_mode={ap_mode!r}: choose one of {AP_MODES}')
  distmat = np.asarray(distmat)
  q_pids, g_pids = np.asarray(q_pids), np.asarray(g_pids)
  q_camids, g_camids = np.asarray(q_camids), np.asarray(g_camids)
  order = np.argsort(distmat, axis=1, kind='stable')
  g_pid_sorted, g_cam_sorted = g_pids[order], g_camids[order]
  hits = g_pid_sorted == q_pids[:, None]
  junk = hits & (g_cam_sorted == q_camids[:, None])
  cmc_sum = np.zeros(max_rank)
  aps, inps = [], []
  for q in range(len(q_pids)):
    m = hits[q][~junk[q]].astype(np.float64)
    n = m.sum()
    if n == 0:
      continue
    ranks = np.arange(1, len(m) + 1)
    cum = np.cumsum(m)
    precision = cum / ranks
    if ap_mode == 'standard':
      aps.append(np.sum(precision * m) / n)
    else:
      previous = np.concatenate([[1.0], precision[:-1]])
      aps.append(np.sum((previous + precision) / 2 * m) / n)
    first = int(np.argmax(m))
    if first < max_rank:
      cmc_sum[first:] += 1
    inps.append(n / (np.flatnonzero(m)[-1] + 1))
  valid = len(aps)
  return {'cmc': cmc_sum / max(valid, 1), 'mAP': float(np.mean(aps)) if aps else 0.0,
          'mINP': float(np.mean(inps)) if inps else 0.0,
          'num_valid_queries': valid, 'num_skipped_queries': len(q_pids) - valid}


# ---------------------------------------------------------------------------
# On the device, in blocks of queries.


def pairwise_distance(queries, gallery, metric: str, xp=jnp):
  """(Q, D), (G, D) -> (Q, G): cosine (1 − cos) or Euclidean distance.

  ``xp``: jax.numpy (on the device, the default) or numpy (on the host, e.g.
  re-ranking in float64).
  """
  if metric == 'cosine':
    normalize = lambda x: x / xp.maximum(xp.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return 1.0 - normalize(queries) @ normalize(gallery).T
  if metric == 'euclidean':
    sq = (xp.sum(queries ** 2, 1)[:, None] + xp.sum(gallery ** 2, 1)[None]
          - 2.0 * queries @ gallery.T)
    return xp.sqrt(xp.maximum(sq, 0.0))
  raise ValueError(f'eval.distance={metric!r}: choose cosine or euclidean')


def _query_stats(order, q_pids, q_camids, g_pids, g_camids, xp=jnp):
  """Per-query AP (both modes), INP, first-hit rank and hit count of a (b, G) block.

  ``order``: (b, G) gallery indices sorted by distance (stable). The vectorised
  form of the loop in `rank_metrics`: a kept entry's rank is the number of kept
  entries up to it (junk removed), and with ``cum`` hits so far, precision is
  cum / rank. ``xp`` is jax.numpy (on the device) or numpy (on the host).
  """
  hit = g_pids[order] == q_pids[:, None]
  keep = ~(hit & (g_camids[order] == q_camids[:, None]))
  good = hit & keep
  rank = xp.cumsum(keep, axis=1).astype(xp.float32)
  cum = xp.cumsum(good, axis=1).astype(xp.float32)
  n = cum[:, -1]
  precision = cum / xp.maximum(rank, 1.0)
  previous = xp.where(rank > 1, (cum - 1.0) / xp.maximum(rank - 1.0, 1.0), 1.0)
  safe_n = xp.maximum(n, 1.0)
  big = order.shape[1] + 1
  return {
      'ap_standard': xp.sum(xp.where(good, precision, 0.0), axis=1) / safe_n,
      'ap_trapezoid': xp.sum(xp.where(good, (previous + precision) / 2, 0.0), axis=1) / safe_n,
      'inp': n / xp.maximum(xp.max(xp.where(good, rank, 0.0), axis=1), 1.0),
      'first_hit': xp.min(xp.where(good, rank, big), axis=1).astype(xp.int32),
      'num_hits': n.astype(xp.int32),
  }


@functools.partial(jax.jit, static_argnames='metric')
def _block_distances(queries, gallery, *, metric):
  return pairwise_distance(queries, gallery, metric)


@jax.jit
def _device_block_stats(dist, q_pids, q_camids, g_pids, g_camids):
  order = jnp.argsort(dist, axis=1, stable=True)
  return _query_stats(order, q_pids, q_camids, g_pids, g_camids)


def _host_block_stats(dist, q_pids, q_camids, g_pids, g_camids):
  order = np.argsort(np.asarray(dist), axis=1, kind='stable')
  return _query_stats(order, q_pids, q_camids, np.asarray(g_pids), np.asarray(g_camids), xp=np)


def _summarize(stats: Dict[str, np.ndarray], ap_mode: str, max_rank: int) -> Dict[str, object]:
  valid = stats['num_hits'] > 0
  num_valid = int(valid.sum())
  first = stats['first_hit'][valid]
  cmc = np.array([(first <= k).mean() if num_valid else 0.0 for k in range(1, max_rank + 1)])
  mean = lambda x: float(np.mean(x[valid], dtype=np.float64)) if num_valid else 0.0
  return {'cmc': cmc, 'mAP': mean(stats[f'ap_{ap_mode}']), 'mINP': mean(stats['inp']),
          'num_valid_queries': num_valid, 'num_skipped_queries': int((~valid).sum()),
          'ap': np.where(valid, stats[f'ap_{ap_mode}'], np.nan)}


def ranked_metrics(query_features=None, gallery_features=None, *, q_pids, g_pids,
                   q_camids, g_camids, distmat=None, distance: str = 'cosine',
                   ap_mode: str = 'trapezoid', max_rank: int = 20,
                   query_block: int = 256, sort_on: str = 'auto') -> Dict[str, object]:
  """`rank_metrics` computed ``query_block`` queries at a time.

  Give features ((Q, D), (G, D); distances are computed on the device) or a
  precomputed ``distmat`` (Q, G) (e.g. after re-ranking), sent a block at a time.
  At most ``query_block`` × G distances and sort indices exist at once, so the
  gallery can be as large as the device holds G features. ``sort_on``: where
  each block is sorted and scored: ``device`` (GPU/TPU), ``host`` (numpy; XLA's
  CPU sort is about 3x slower than numpy's), ``auto`` = host on the CPU backend.
  Returns the dict of `rank_metrics` plus ``ap``: (Q,) per-query AP, NaN for
  skipped queries.
  """
  if ap_mode not in AP_MODES:
    raise ValueError(f'eval.ap_mode={ap_mode!r}: choose one of {AP_MODES}')
  if sort_on == 'auto':
    sort_on = 'host' if jax.default_backend() == 'cpu' else 'device'
  block_stats = {'device': _device_block_stats, 'host': _host_block_stats}[sort_on]
  q_pids, q_camids = np.asarray(q_pids, np.int32), np.asarray(q_camids, np.int32)
  g_pids, g_camids = jnp.asarray(g_pids, jnp.int32), jnp.asarray(g_camids, jnp.int32)
  if distmat is None:
    gallery = jnp.asarray(gallery_features, jnp.float32)
    query_features = np.asarray(query_features, np.float32)
  parts = []
  for s in range(0, len(q_pids), query_block):
    sl = slice(s, s + query_block)
    # Pad the last block to the block size so every block reuses one compilation.
    pad = lambda x: np.concatenate(
        [x, np.repeat(x[-1:], query_block - len(x), axis=0)]) if len(x) < query_block else x
    n = len(q_pids[sl])
    if distmat is None:
      dist = _block_distances(pad(query_features[sl]), gallery, metric=distance)
    else:
      dist = pad(np.asarray(distmat[sl], np.float32))
      dist = jnp.asarray(dist) if sort_on == 'device' else dist
    out = block_stats(dist, pad(q_pids[sl]), pad(q_camids[sl]), g_pids, g_camids)
    parts.append({k: np.asarray(v)[:n] for k, v in out.items()})
  stats = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
  return _summarize(stats, ap_mode, max_rank)


# ---------------------------------------------------------------------------
# Features.


def network_variables(state, name: str) -> Dict[str, object]:
  """{'params', 'batch_stats'} of ``name`` in a `TrainState` (trained or frozen)."""
  if name in state.params:
    return {'params': state.params[name], 'batch_stats': state.batch_stats[name]}
  if name in state.frozen:
    return state.frozen[name]
  raise KeyError(f'the train state has no {name} network')


def encoders(config) -> Dict[str, str]:
  """Which network encodes images and which encodes videos, from config.

  Images are the student's job and videos the ``eval.gallery_encoder``'s; a run
  with one network (teacher_only, student_only) uses it for both (the teacher
  sees an image as a one-frame clip).
  """
  have = tuple(config.networks)
  video = config.eval.gallery_encoder
  if video not in ('teacher', 'student'):
    raise ValueError(f'config eval.gallery_encoder={video!r}: teacher or student')
  if video not in have:
    video = have[0]
  return {'image': 'student' if 'student' in have else 'teacher', 'video': video}


def make_encode_fn(config, num_classes: int, network: str):
  """jit of (variables, frames (N, C, H, W, 3), mask (N, C)) -> (features (N, D), weight (N,)).

  Features of each chunk: the teacher's masked clip feature (non-local blocks
  see only valid frames), or the student's features averaged over valid frames.
  ``weight`` is the number of valid frames, for averaging chunks per tracklet.
  """
  teacher, student = build_models(config.model, num_classes)
  key = config.eval.feature
  if key not in ('features', 'bn_features'):
    raise ValueError(f'config eval.feature={key!r}: features or bn_features')

  def encode(variables, frames, mask):
    weight = mask.sum(axis=1).astype(jnp.float32)
    if network == 'teacher':
      features = teacher.apply(variables, frames, train=False, frame_mask=mask)[key]
    else:
      n, c = frames.shape[:2]
      out = student.apply(variables, frames.reshape((n * c,) + frames.shape[2:]), train=False)
      per_frame = out[key].reshape(n, c, -1) * mask[..., None]
      features = per_frame.sum(axis=1) / jnp.maximum(weight, 1.0)[:, None]
    return features.astype(jnp.float32), weight

  return jax.jit(encode)


def extract_features(config, data_dir: str, split: str, *, mode: str, encode_fn,
                     variables, mesh) -> np.ndarray:
  """(num_tracklets, D) features of a split, in index order, on every process.

  ``mode='image'``: one frame per tracklet (``eval.query_frame``); ``'video'``:
  all frames (or ``eval.max_frames``) in chunks, chunk features averaged with
  weights = valid frames. Each process encodes its share of chunks; results are
  gathered so every process holds the whole matrix.
  """
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  from i2v_jax import input_pipeline  # pylint: disable=g-import-not-at-top
  sharding = NamedSharding(mesh, PartitionSpec(mesh.axis_names[0]))
  batch = config.eval.batch_size * len(mesh.local_devices)
  ds = input_pipeline.eval_dataset(
      data_dir, split, config, mode=mode, batch_size=batch,
      process_index=jax.process_index(), process_count=jax.process_count())
  num_rows = len(records.load_index(data_dir, split))
  sums, weights = None, np.zeros(num_rows)
  for local in ds.as_numpy_iterator():
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


# ---------------------------------------------------------------------------
# Protocols.

PROTOCOLS = {'i2v': ('image', 'video'), 'v2v': ('video', 'video'),
             'i2i': ('image', 'image'), 'v2i': ('video', 'image')}


def split_info(data_dir: str, split: str) -> Dict[str, np.ndarray]:
  rows = records.load_index(data_dir, split)
  return {'pids': np.array([r['pid'] for r in rows], np.int32),
          'camids': np.array([r['camid'] for r in rows], np.int32),
          'names': np.array([r['name'] for r in rows])}


def video_query_rows(query: Dict[str, np.ndarray], gallery: Dict[str, np.ndarray]) -> np.ndarray:
  """For image-only query splits (VeRi): the gallery track with the query's pid and camera.

  Returns (Q,) gallery row indices, −1 where no such track exists (that query
  is then skipped in V2V and V2I and counted).
  """
  first = {}
  for i, key in enumerate(zip(gallery['pids'], gallery['camids'])):
    first.setdefault(key, i)
  return np.array([first.get(key, -1) for key in zip(query['pids'], query['camids'])])


def compute_features(config, data_dir: str, state, num_classes: int, mesh
                     ) -> Dict[str, Dict[str, np.ndarray]]:
  """Features of every (split, kind) the configured protocols need.

  Returns {'query/image': {'features', 'pids', 'camids', 'names'}, ...}. Image
  entries use the first (or middle, ``eval.query_frame``) frame of a tracklet.
  When the query split holds single images (VeRi), 'query/video' is the gallery
  track with the query's vehicle and camera (``video_query_rows``).
  """
  protocols = tuple(config.eval.protocols)
  unknown = [p for p in protocols if p not in PROTOCOLS]
  if unknown:
    raise ValueError(f'config eval.protocols has {unknown}: choose from {tuple(PROTOCOLS)}')
  meta = records.load_metadata(data_dir)
  image_only_queries = 'v2v_query' in meta.get('protocol', {})
  needed = set()
  for p in protocols:
    q_kind, g_kind = PROTOCOLS[p]
    needed.add(('gallery', g_kind))
    needed.add(('gallery', 'video') if (q_kind == 'video' and image_only_queries)
               else ('query', q_kind))
  nets = encoders(config)
  fns = {}
  info = {s: split_info(data_dir, s) for s in ('query', 'gallery')}
  out = {}
  for split, kind in sorted(needed):
    net = nets[kind]
    if net not in fns:
      fns[net] = make_encode_fn(config, num_classes, net)
    features = extract_features(config, data_dir, split, mode=kind, encode_fn=fns[net],
                                variables=network_variables(state, net), mesh=mesh)
    out[f'{split}/{kind}'] = dict(info[split], features=features)
  if image_only_queries and any(PROTOCOLS[p][0] == 'video' for p in protocols):
    rows = video_query_rows(info['query'], info['gallery'])
    g = out['gallery/video']['features']
    features = np.where((rows >= 0)[:, None], g[np.maximum(rows, 0)], 0.0).astype(np.float32)
    # A query without a track gets pid −2 (matches nothing) so it is skipped and counted.
    pids = np.where(rows >= 0, info['query']['pids'], -2).astype(np.int32)
    out['query/video'] = dict(info['query'], features=features, pids=pids)
  return out


def protocol_metrics(config, features: Dict[str, Dict[str, np.ndarray]]
                     ) -> Dict[str, Dict[str, object]]:
  """{protocol: ranked_metrics(...)}; with ``eval.rerank`` also '<protocol>+rerank'."""
  ev = config.eval
  results = {}
  for p in ev.protocols:
    q_kind, g_kind = PROTOCOLS[p]
    q, g = features[f'query/{q_kind}'], features[f'gallery/{g_kind}']
    labels = dict(q_pids=q['pids'], g_pids=g['pids'], q_camids=q['camids'],
                  g_camids=g['camids'], ap_mode=ev.ap_mode, max_rank=ev.max_rank,
                  query_block=ev.query_block)
    results[p] = ranked_metrics(q['features'], g['features'], distance=ev.distance, **labels)
    if ev.rerank:
      from i2v_jax import rerank  # pylint: disable=g-import-not-at-top
      distmat = rerank.k_reciprocal(q['features'], g['features'], distance=ev.distance,
                                    k1=ev.rerank_k1, k2=ev.rerank_k2,
                                    lambda_value=ev.rerank_lambda)
      results[f'{p}+rerank'] = ranked_metrics(distmat=distmat, **labels)
  return results


def scalar_metrics(results: Dict[str, Dict[str, object]]) -> Dict[str, float]:
  """Flat {'i2v/mAP': %, 'i2v/rank1': %, ...} for logs and best-checkpoint choice."""
  out = {}
  for p, r in results.items():
    for k in (1, 5, 10, 20):
      if k <= len(r['cmc']):
        out[f'{p}/rank{k}'] = 100.0 * float(r['cmc'][k - 1])
    out[f'{p}/mAP'] = 100.0 * r['mAP']
    out[f'{p}/mINP'] = 100.0 * r['mINP']
  return out


def results_table(results: Dict[str, Dict[str, object]], title: str = '') -> str:
  """Markdown table: Rank-1/5/10/20, mAP, mINP in %, and query counts."""
  ranks = [k for k in (1, 5, 10, 20) if all(k <= len(r['cmc']) for r in results.values())]
  head = (['protocol'] + [f'R{k}' for k in ranks] + ['mAP', 'mINP', 'queries', 'skipped'])
  lines = ([f'### {title}', ''] if title else []) + [
      '| ' + ' | '.join(head) + ' |', '|' + ' --- |' * len(head)]
  for p, r in results.items():
    cells = ([p] + [f'{100 * r["cmc"][k - 1]:.2f}' for k in ranks]
             + [f'{100 * r["mAP"]:.2f}', f'{100 * r["mINP"]:.2f}',
                str(r['num_valid_queries']), str(r['num_skipped_queries'])])
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines) + '\n'


def write_results(results: Dict[str, Dict[str, object]], workdir: str, *, step: int,
                  title: str = '') -> None:
  """``results.json`` and ``results.md`` in the workdir (each written whole, then renamed)."""
  summary = {'step': step, 'protocols': {
      p: {'cmc': [float(x) for x in r['cmc']], 'mAP': r['mAP'], 'mINP': r['mINP'],
          'num_valid_queries': r['num_valid_queries'],
          'num_skipped_queries': r['num_skipped_queries']} for p, r in results.items()}}
  records.write_json(summary, os.path.join(workdir, 'results.json'))
  records.write_text(results_table(results, title), os.path.join(workdir, 'results.md'))


def export_features(features: Dict[str, Dict[str, np.ndarray]], workdir: str) -> list:
  """One ``features-<split>-<kind>.npz`` (features, pids, camids, names) per entry."""
  paths = []
  for key, entry in features.items():
    path = os.path.join(workdir, f'features-{key.replace("/", "-")}.npz')
    tmp = path + '.tmp.npz'
    np.savez(tmp, **entry)
    os.replace(tmp, path)
    paths.append(path)
  return paths


def run(config, data_dir: str, state, num_classes: int, mesh, *, workdir: str,
        step: int, verbose: bool = True) -> Dict[str, Dict[str, object]]:
  """Features -> every protocol -> table printed and written; export and PNGs if asked.

  Every process computes the same results; only process 0 prints and writes.
  """
  features = compute_features(config, data_dir, state, num_classes, mesh)
  results = protocol_metrics(config, features)
  if jax.process_index() != 0:
    return results
  title = f'{records.load_metadata(data_dir)["dataset"]}, step {step}'
  write_results(results, workdir, step=step, title=title)
  if verbose:
    print(results_table(results, title), flush=True)
  if config.eval.export:
    paths = export_features(features, workdir)
    if verbose:
      print('wrote ' + ', '.join(paths), flush=True)
  if config.eval.visualize:
    from i2v_jax import input_pipeline, visualize  # pylint: disable=g-import-not-at-top
    query_reader = input_pipeline.TrackletReader(data_dir, 'query')
    frame = [0 if config.eval.query_frame == 'first' else int(r['num_frames']) // 2
             for r in query_reader.rows]
    gallery_reader = input_pipeline.TrackletReader(data_dir, 'gallery')
    for p in config.eval.protocols:
      q_kind, g_kind = PROTOCOLS[p]
      lists = visualize.ranked_lists(
          features[f'query/{q_kind}'], features[f'gallery/{g_kind}'], results[p]['ap'],
          num_queries=config.eval.visualize, top=config.eval.visualize_top,
          distance=config.eval.distance)
      path = os.path.join(workdir, f'ranked_{p}.png')
      visualize.render(lists, query_reader, frame, gallery_reader, path)
      if verbose:
        print(f'wrote {path}', flush=True)
  return results
