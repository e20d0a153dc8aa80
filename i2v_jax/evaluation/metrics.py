"""Distances -> CMC and the metrics table (docs/method.md §1): the reference and the blocked ranking.

  reference_metrics  numpy, a loop over queries as the definitions of CMC, mAP
                     and mINP read.
  blocked_metrics    CMC and every metric of `i2v_jax.eval_tables.METRICS`,
                     ``eval.query_block`` queries at a time, on the device
                     (GPU/TPU) or the host (CPU): what evaluation uses; never
                     more than block × gallery at once, and no sort of the
                     gallery: only each true match's rank is needed
                     (`host_match_ranks`, `device_match_ranks`).

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


def _scores(ranked, ap_mode: str, names, xp):
  """Every metric's per-query score, first-hit rank and hit count from ``ranked``
  (`eval_tables.Metric`: each true match's rank and hits, in distance order)."""
  stats = {name: METRICS[name].per_query(ranked, ap_mode, xp) for name in names}
  stats['first_hit'] = xp.min(xp.where(ranked['good'], ranked['rank'], 2.0 ** 30),
                              axis=1).astype(xp.int32)
  stats['num_hits'] = ranked['n'].astype(xp.int32)
  return stats


_NEVER = np.uint64(np.iinfo(np.uint64).max)  # the key of a junk entry: after everything


def host_match_ranks(dist, q_pids, q_camids, g_pids, g_camids) -> Dict[str, np.ndarray]:
  """Each query's true matches in distance order and their ranks, with no sort of
  the gallery: a match's rank is 1 + the number of kept (non-junk) entries before
  it, an entry being before another when its distance is smaller or equal with a
  smaller gallery index (the order of a stable sort). Entries become one exact
  integer key each (the float's order-preserving bits, then the index); a
  block's queries are taken in order of their match counts, so the m-th matches
  of the queries that have one are counted in one pass over those rows: the work
  is the sum of the match counts times the gallery, not a sort of every row.

  Returns float64 {'good': (b, M) bool (False on padding), 'rank', 'hits': (b, M),
  'n': (b,)}, M the block's largest match count.
  """
  dist = np.asarray(dist, np.float32)
  b, g = dist.shape
  same_pid = np.asarray(g_pids)[None, :] == np.asarray(q_pids)[:, None]
  same_cam = np.asarray(g_camids)[None, :] == np.asarray(q_camids)[:, None]
  good = same_pid & ~same_cam
  n = good.sum(axis=1)
  order = np.argsort(-n, kind='stable')  # most matches first
  n_sorted = n[order]
  width = max(int(n_sorted[0]) if b else 0, 1)
  bits = (dist[order] + np.float32(0.0)).view(np.uint32)  # + 0.0: -0.0 ties with 0.0
  ordered = np.where(bits >> np.uint32(31), ~bits, bits | np.uint32(0x80000000))
  shift = np.uint64(max(1, (g - 1).bit_length()))
  keys = (ordered.astype(np.uint64) << shift) | np.arange(g, dtype=np.uint64)
  keys[(same_pid & same_cam)[order]] = _NEVER
  rows, cols = np.nonzero(good[order])
  match_keys = keys[rows, cols]
  by_key = np.lexsort((match_keys, rows))  # each row's matches, nearest first
  rows, match_keys = rows[by_key], match_keys[by_key]
  slot = np.arange(len(rows)) - np.concatenate([[0], np.cumsum(n_sorted)])[rows]
  thresholds = np.full((b, width), _NEVER, np.uint64)
  thresholds[rows, slot] = match_keys
  before = np.zeros((b, width), np.int64)
  for m in range(int(n_sorted[0]) if b else 0):
    k = int(np.count_nonzero(n_sorted > m))  # the rows that have an m-th match
    before[:k, m] = np.count_nonzero(keys[:k] < thresholds[:k, m, None], axis=1)
  ranked = {'good': np.arange(width)[None, :] < n_sorted[:, None],
            'rank': before + 1.0, 'hits': np.broadcast_to(np.arange(1.0, width + 1), (b, width)),
            'n': n_sorted.astype(np.float64)}
  back = np.empty_like(order)
  back[order] = np.arange(b)
  return {k: v[back] for k, v in ranked.items()}


@functools.partial(jax.jit, static_argnames=('width',))
def device_match_ranks(dist, q_pids, q_camids, g_pids, g_camids, *, width: int):
  """`host_match_ranks` on the device: each query's ``width`` nearest true matches
  (`lax.top_k`, which keeps gallery order on ties), then for each the count of
  kept entries before it (a fused compare-and-sum over the gallery). ``width``
  must be at least the block's largest match count."""
  same_pid = g_pids[None, :] == q_pids[:, None]
  same_cam = g_camids[None, :] == q_camids[:, None]
  good = same_pid & ~same_cam
  keep = ~(same_pid & same_cam)
  dist = jnp.where(dist == 0, 0.0, dist)  # -0.0 -> 0.0: top_k orders them, a sort ties them
  neg, where = jax.lax.top_k(jnp.where(good, -dist, -jnp.inf), width)
  t, j = -neg, where
  index = jnp.arange(dist.shape[1])
  d = dist[:, None, :]
  before = (d < t[:, :, None]) | ((d == t[:, :, None]) & (index[None, None, :] < j[:, :, None]))
  count = jnp.sum(before & keep[:, None, :], axis=2)
  n = jnp.sum(good, axis=1)
  hits = jnp.arange(1, width + 1, dtype=jnp.float32)
  return {'good': hits[None, :] <= n[:, None], 'rank': count.astype(jnp.float32) + 1.0,
          'hits': jnp.broadcast_to(hits, count.shape), 'n': n.astype(jnp.float32)}


@functools.partial(jax.jit, static_argnames='metric')
def _block_distances(queries, gallery, *, metric):
  return pairwise_distance(queries, gallery, metric)


@functools.partial(jax.jit, static_argnames=('ap_mode', 'names', 'width'))
def _device_block_stats(dist, q_pids, q_camids, g_pids, g_camids, ap_mode, names, width):
  ranked = device_match_ranks(dist, q_pids, q_camids, g_pids, g_camids, width=width)
  return _scores(ranked, ap_mode, names, jnp)


def _host_block_stats(dist, q_pids, q_camids, g_pids, g_camids, ap_mode, names, width):
  del width
  ranked = host_match_ranks(np.asarray(dist), q_pids, q_camids, np.asarray(g_pids),
                            np.asarray(g_camids))
  return _scores(ranked, ap_mode, names, np)


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
                   query_block: int = 256, rank_on: str = 'auto') -> Dict[str, object]:
  """`reference_metrics` computed ``query_block`` queries at a time (the one used).

  Give features ((Q, D), (G, D); each block's distances by XLA on the default
  backend, float32) or a precomputed ``distmat`` (Q, G) (e.g. after re-ranking),
  sent a block at a time.
  At most ``query_block`` × G distances (and their keys) exist at once, so the
  gallery can be as large as the device holds G features. ``rank_on``: where
  each block's match ranks are counted and scored: ``device`` (GPU/TPU),
  ``host`` (numpy, exact integer keys), ``auto`` = host on the CPU backend.
  Returns {'cmc': (max_rank,), one float in [0, 1] per `METRICS` entry ('mAP',
  'mINP', ...), 'num_valid_queries', 'num_skipped_queries', 'ap': (Q,) per-query
  AP, NaN for skipped queries}: on mAP, mINP and CMC, `reference_metrics`'s numbers.
  """
  if ap_mode not in AP_MODES:
    raise ValueError(f'eval.ap_mode={ap_mode!r}: choose one of {AP_MODES}')
  if rank_on == 'auto':
    rank_on = 'host' if jax.default_backend() == 'cpu' else 'device'
  block_stats = {'device': _device_block_stats, 'host': _host_block_stats}[rank_on]
  q_pids, q_camids = np.asarray(q_pids, np.int32), np.asarray(q_camids, np.int32)
  g_pids, g_camids = jnp.asarray(g_pids, jnp.int32), jnp.asarray(g_camids, jnp.int32)
  if distmat is None:
    gallery = jnp.asarray(gallery_features, jnp.float32)
    query_features = np.asarray(query_features, np.float32)
  width = 1  # the device's match slots: a power of two >= every query's match count
  if rank_on == 'device':
    most = max((int(np.sum((np.asarray(g_pids) == p) & (np.asarray(g_camids) != c)))
                for p, c in zip(q_pids, q_camids)), default=1)
    width = 1 << max(0, most - 1).bit_length()
  parts = []
  for s in range(0, len(q_pids), query_block):
    sl = slice(s, s + query_block)
    # Pad the last block to the block size so every block reuses one compilation.
    pad = lambda x: np.concatenate(
        [x, np.repeat(x[-1:], query_block - len(x), axis=0)]) if len(x) < query_block else x
    n = len(q_pids[sl])
    if distmat is None:
      # XLA's product on every backend: numpy's (3x faster on the 2-core EPYC) rounds
      # differently, which moves near-tied ranks (bench/RESULTS.md, Evaluation).
      dist = _block_distances(pad(query_features[sl]), gallery, metric=distance)
    else:
      dist = pad(np.asarray(distmat[sl], np.float32))
      dist = jnp.asarray(dist) if rank_on == 'device' else dist
    out = block_stats(dist, pad(q_pids[sl]), pad(q_camids[sl]), g_pids, g_camids, ap_mode,
                      tuple(METRICS), width)
    parts.append({k: np.asarray(v)[:n] for k, v in out.items()})
  stats = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
  return _summarize(stats, max_rank)
