"""rank_metrics: hand-worked AP cases, junk rule, and a plain-loop reference."""

import numpy as np
import pytest

from i2v_jax.evaluate import rank_metrics


def one_query(pattern, junk_at=()):
  """Gallery ranked in order; hit where pattern is '1'; junk inserted at positions."""
  g_pids, g_cams = [], []
  for i, c in enumerate(pattern):
    g_pids.append(1 if c == '1' else 2)
    g_cams.append(2)
  for pos in junk_at:  # same pid, same camera as the query -> removed
    g_pids.insert(pos, 1)
    g_cams.insert(pos, 1)
  dist = np.arange(len(g_pids), dtype=np.float64)[None]
  return dist, [1], g_pids, [1], g_cams


@pytest.mark.parametrize('pattern,standard,trapezoid', [
    ('1010', 0.8333, 0.7917), ('01001', 0.45, 0.2875), ('0001', 0.25, 0.125)])
def test_hand_worked_ap(pattern, standard, trapezoid):
  for junk in ((), (0, 2)):
    args = one_query(pattern, junk)
    got_s = rank_metrics(*args, ap_mode='standard', max_rank=5)
    got_t = rank_metrics(*args, ap_mode='trapezoid', max_rank=5)
    assert got_s['mAP'] == pytest.approx(standard, abs=1e-4)
    assert got_t['mAP'] == pytest.approx(trapezoid, abs=1e-4)
    first = pattern.index('1')
    assert list(got_s['cmc']) == [0.0] * first + [1.0] * (5 - first)
    assert got_s['mINP'] == pytest.approx(pattern.count('1') / (pattern.rindex('1') + 1))


def test_query_without_match_is_skipped_and_counted():
  dist = np.array([[0.1, 0.2], [0.3, 0.1]])
  got = rank_metrics(dist, [1, 5], [1, 1], [1, 1], [2, 1])
  assert got['num_valid_queries'] == 1 and got['num_skipped_queries'] == 1
  assert got['mAP'] == 1.0


def loop_metrics(dist, qp, gp, qc, gc, mode, max_rank):
  aps, cmc, valid = [], np.zeros(max_rank), 0
  for q in range(len(qp)):
    order = sorted(range(len(gp)), key=lambda j: (dist[q][j], j))
    hits = [gp[j] == qp[q] for j in order if not (gp[j] == qp[q] and gc[j] == qc[q])]
    n = sum(hits)
    if not n:
      continue
    valid += 1
    found, prev, ap = 0, 1.0, 0.0
    for r, h in enumerate(hits, 1):
      found += h
      p = found / r
      if h:
        ap += (p if mode == 'standard' else (prev + p) / 2) / n
      prev = p
    aps.append(ap)
    first = hits.index(True)
    if first < max_rank:
      cmc[first:] += 1
  return np.mean(aps), cmc / valid, valid


@pytest.mark.parametrize('mode', ['trapezoid', 'standard'])
def test_random_problems_match_loop(mode):
  rng = np.random.default_rng(0)
  for _ in range(5):
    nq, ng = 12, 40
    qp, gp = rng.integers(0, 6, nq), rng.integers(0, 6, ng)
    qc, gc = rng.integers(0, 3, nq), rng.integers(0, 3, ng)
    dist = rng.integers(0, 10, (nq, ng)).astype(float)  # ties on purpose
    got = rank_metrics(dist, qp, gp, qc, gc, ap_mode=mode, max_rank=10)
    ap, cmc, valid = loop_metrics(dist, qp, gp, qc, gc, mode, 10)
    assert got['mAP'] == pytest.approx(ap, abs=1e-12)
    np.testing.assert_allclose(got['cmc'], cmc)
    assert got['num_valid_queries'] == valid
