"""Distances -> CMC and the metrics table (docs/method.md §1): the reference and the blocked ranking.

  reference_metrics  numpy, a loop over queries as the definitions of CMC, mAP
                     and mINP read.
  blocked_metrics    CMC and every metric of `i2v_jax.eval_tables.METRICS`,
                     ``eval.query_block`` queries at a time, sorted on the device
                     (GPU/TPU) or the host (CPU): what evaluation uses; never
                     more than block × gallery at once.

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
from typing import Dict

import jax
import jax.numpy as jnp
import numpy as np

from i2v_jax.distances import pairwise_distance
from i2v_jax.eval_tables import AP_MODES, METRICS


def reference_metrics(distmat: np.ndarray, q_pids, g_pids, q_camids, g_camids, *,
                 ap_mode: str = 'trapezoid', max_rank: int = 20) -> Dict[str, object]:
  """CMC, mAP, mINP of a (num_query, num_gallery) distance matrix: the numpy
  reference, one query at a time as the definition reads (tests and benchmarks
  check `blocked_metrics` against it).

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


def _query_stats(order, q_pids, q_camids, g_pids, g_camids, ap_mode: str, names, xp=jnp):
  """Every metric's per-query score, first-hit rank and hit count of a (b, G) block.

  ``order``: (b, G) gallery indices sorted by distance (stable). The vectorised
  form of the loop in `reference_metrics`: a kept entry's rank is the number of
  kept entries up to it (junk removed); ``hits`` counts the true matches so far.
  ``names``: the `METRICS` entries to score. ``xp`` is jax.numpy (on the device)
  or numpy (on the host).
  """
  hit = g_pids[order] == q_pids[:, None]
  keep = ~(hit & (g_camids[order] == q_camids[:, None]))
  good = hit & keep
  rank = xp.cumsum(keep, axis=1).astype(xp.float32)
  hits = xp.cumsum(good, axis=1).astype(xp.float32)
  ranked = {'good': good, 'rank': rank, 'hits': hits, 'n': hits[:, -1]}
  big = order.shape[1] + 1
  stats = {name: METRICS[name].per_query(ranked, ap_mode, xp) for name in names}
  stats['first_hit'] = xp.min(xp.where(good, rank, big), axis=1).astype(xp.int32)
  stats['num_hits'] = ranked['n'].astype(xp.int32)
  return stats


@functools.partial(jax.jit, static_argnames='metric')
def _block_distances(queries, gallery, *, metric):
  return pairwise_distance(queries, gallery, metric)


@functools.partial(jax.jit, static_argnames=('ap_mode', 'names'))
def _device_block_stats(dist, q_pids, q_camids, g_pids, g_camids, ap_mode, names):
  order = jnp.argsort(dist, axis=1, stable=True)
  return _query_stats(order, q_pids, q_camids, g_pids, g_camids, ap_mode, names)


def _host_block_stats(dist, q_pids, q_camids, g_pids, g_camids, ap_mode, names):
  order = np.argsort(np.asarray(dist), axis=1, kind='stable')
  return _query_stats(order, q_pids, q_camids, np.asarray(g_pids), np.asarray(g_camids),
                      ap_mode, names, xp=np)


def _summarize(stats: Dict[str, np.ndarray], max_rank: int) -> Dict[str, object]:
  valid = stats['num_hits'] > 0
  num_valid = int(valid.sum())
  first = stats['first_hit'][valid]
  cmc = np.array([(first <= k).mean() if num_valid else 0.0 for k in range(1, max_rank + 1)])
  mean = lambda x: float(np.mean(x[valid], dtype=np.float64)) if num_valid else 0.0
  return {'cmc': cmc, **{name: mean(stats[name]) for name in METRICS},
          'num_valid_queries': num_valid, 'num_skipped_queries': int((~valid).sum()),
          'ap': np.where(valid, stats['mAP'], np.nan)}


def blocked_metrics(query_features=None, gallery_features=None, *, q_pids, g_pids,
                   q_camids, g_camids, distmat=None, distance: str = 'cosine',
                   ap_mode: str = 'trapezoid', max_rank: int = 20,
                   query_block: int = 256, sort_on: str = 'auto') -> Dict[str, object]:
  """`reference_metrics` computed ``query_block`` queries at a time (the one used).

  Give features ((Q, D), (G, D); distances are computed on the device) or a
  precomputed ``distmat`` (Q, G) (e.g. after re-ranking), sent a block at a time.
  At most ``query_block`` × G distances and sort indices exist at once, so the
  gallery can be as large as the device holds G features. ``sort_on``: where
  each block is sorted and scored: ``device`` (GPU/TPU), ``host`` (numpy; XLA's
  CPU sort is about 3x slower than numpy's), ``auto`` = host on the CPU backend.
  Returns {'cmc': (max_rank,), one float in [0, 1] per `METRICS` entry ('mAP',
  'mINP', ...), 'num_valid_queries', 'num_skipped_queries', 'ap': (Q,) per-query
  AP, NaN for skipped queries}: on mAP, mINP and CMC, `reference_metrics`'s numbers.
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
    out = block_stats(dist, pad(q_pids[sl]), pad(q_camids[sl]), g_pids, g_camids, ap_mode,
                      tuple(METRICS))
    parts.append({k: np.asarray(v)[:n] for k, v in out.items()})
  stats = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
  return _summarize(stats, max_rank)
