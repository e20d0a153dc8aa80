"""Ranking metrics of SPEC §1: CMC, mAP (two AP definitions) and mINP.

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

from typing import Dict

import numpy as np

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
