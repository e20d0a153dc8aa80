"""Metrics: hand-worked AP cases, junk rule, plain-loop references, the real MARS protocol.

`rank_metrics` (numpy) and `ranked_metrics` (on the device, in query blocks) are
both checked against loops written here.
"""

import os

import numpy as np
import pytest

from i2v_jax.distances import pairwise_distance
from i2v_jax.evaluation.metrics import blocked_metrics as ranked_metrics
from i2v_jax.evaluation.metrics import reference_metrics as rank_metrics


def one_query(pattern, junk_at=()):
  """Gallery ranked in order; hit where pattern is '1'; junk inserted at positions."""
  g_pids, g_cams = [], []
  for c in pattern:
    g_pids.append(1 if c == '1' else 2)
    g_cams.append(2)
  for pos in junk_at:  # same pid, same camera as the query -> removed
    g_pids.insert(pos, 1)
    g_cams.insert(pos, 1)
  dist = np.arange(len(g_pids), dtype=np.float64)[None]
  return dist, [1], g_pids, [1], g_cams


@pytest.mark.parametrize('rank_on', ['host', 'device'])
def test_match_ranks_equal_a_stable_sort_to_1e9(rank_on):
  """The ranks of the true matches, counted without sorting the gallery, are the
  ranks a stable sort gives (ties by gallery index, -0.0 equal to 0.0, junk
  removed first): every metric equals the sorting reference's in float64 (host)
  and to float32 rounding (device)."""
  rng = np.random.default_rng(7)
  nq, ng = 41, 300
  qp, gp = rng.integers(0, 5, nq), rng.integers(0, 5, ng)
  qc, gc = rng.integers(0, 3, nq), rng.integers(0, 3, ng)
  coarse = rng.integers(-3, 4, (nq, ng)).astype(np.float32) * np.float32(0.5)  # many ties
  coarse[coarse == 0] = np.where(rng.random(int((coarse == 0).sum())) < 0.5, -0.0, 0.0)
  fine = rng.normal(size=(nq, ng)).astype(np.float32)
  tol = 1e-9 if rank_on == 'host' else 1e-6
  for dist in (coarse, fine):
    for mode in ('trapezoid', 'standard'):
      want = rank_metrics(dist.astype(np.float64), qp, gp, qc, gc, ap_mode=mode, max_rank=20)
      for block in (1, 16, 64):
        got = ranked_metrics(distmat=dist, q_pids=qp, g_pids=gp, q_camids=qc, g_camids=gc,
                             ap_mode=mode, max_rank=20, query_block=block, rank_on=rank_on)
        assert abs(got['mAP'] - want['mAP']) < tol and abs(got['mINP'] - want['mINP']) < tol
        np.testing.assert_allclose(got['cmc'], want['cmc'], atol=tol)
        assert got['num_valid_queries'] == want['num_valid_queries']
  # Per query, against the position in a stable argsort (the definition).
  from i2v_jax.evaluation.metrics import host_match_ranks
  ranked = host_match_ranks(coarse, qp, qc, gp, gc)
  for q in range(nq):
    order = np.argsort(coarse[q], kind='stable')
    junk = (gp[order] == qp[q]) & (gc[order] == qc[q])
    kept = order[~junk]
    match = (gp[kept] == qp[q]) & (gc[kept] != qc[q])
    expected = np.flatnonzero(match) + 1.0
    assert list(ranked['rank'][q][ranked['good'][q]]) == list(expected)


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


def hit_loop_metrics(dist, qp, gp, qc, gc, mode, max_rank):
  """Per query: stable sort, drop junk, then a loop over the hits only."""
  aps, inps, cmc = [], [], np.zeros(max_rank)
  for q in range(len(qp)):
    order = np.argsort(dist[q], kind='stable')
    junk = (gp[order] == qp[q]) & (gc[order] == qc[q])
    hit_ranks = np.flatnonzero((gp[order] == qp[q])[~junk]) + 1
    n = len(hit_ranks)
    if not n:
      continue
    ap = 0.0
    for i, r in enumerate(hit_ranks, 1):  # the i-th hit is at rank r
      p = i / r
      prev = (i - 1) / (r - 1) if r > 1 else 1.0
      ap += (p if mode == 'standard' else (prev + p) / 2) / n
    aps.append(ap)
    inps.append(n / hit_ranks[-1])
    if hit_ranks[0] <= max_rank:
      cmc[hit_ranks[0] - 1:] += 1
  return {'mAP': np.mean(aps), 'mINP': np.mean(inps), 'cmc': cmc / len(aps),
          'num_valid_queries': len(aps)}


def assert_close(got, want, tol):
  assert got['mAP'] == pytest.approx(want['mAP'], abs=tol)
  assert got['mINP'] == pytest.approx(want['mINP'], abs=tol)
  np.testing.assert_allclose(got['cmc'], want['cmc'], atol=tol)
  assert got['num_valid_queries'] == want['num_valid_queries']


@pytest.mark.parametrize('rank_on', ['device', 'host'])
@pytest.mark.parametrize('mode', ['trapezoid', 'standard'])
def test_device_blocks_match_loop_with_ties_and_junk(mode, rank_on):
  rng = np.random.default_rng(1)
  nq, ng = 23, 57
  qp, gp = rng.integers(0, 6, nq), rng.integers(0, 6, ng)
  qc, gc = rng.integers(0, 3, nq), rng.integers(0, 3, ng)
  dist = rng.integers(0, 10, (nq, ng)).astype(np.float32)  # ties: gallery order decides
  want = hit_loop_metrics(dist, qp, gp, qc, gc, mode, 10)
  for block in (4, 23, 64):  # uneven last block, one block, block > queries
    got = ranked_metrics(distmat=dist, q_pids=qp, g_pids=gp, q_camids=qc, g_camids=gc,
                         ap_mode=mode, max_rank=10, query_block=block, rank_on=rank_on)
    assert_close(got, want, 1e-6)
    assert got['num_skipped_queries'] == nq - want['num_valid_queries']
  # The loop agrees with the other loop reference and with rank_metrics.
  ap, cmc, valid = loop_metrics(dist, qp, gp, qc, gc, mode, 10)
  assert want['mAP'] == pytest.approx(ap, abs=1e-12) and valid == want['num_valid_queries']
  assert_close(rank_metrics(dist, qp, gp, qc, gc, ap_mode=mode, max_rank=10), want, 1e-12)


@pytest.mark.parametrize('pattern,standard,trapezoid', [
    ('1010', 0.8333, 0.7917), ('01001', 0.45, 0.2875), ('0001', 0.25, 0.125)])
def test_device_hand_worked_ap(pattern, standard, trapezoid):
  for junk in ((), (0, 2)):
    dist, qp, gp, qc, gc = one_query(pattern, junk)
    for mode, want in (('standard', standard), ('trapezoid', trapezoid)):
      got = ranked_metrics(distmat=dist, q_pids=qp, g_pids=gp, q_camids=qc, g_camids=gc,
                           ap_mode=mode, max_rank=5, rank_on='device')
      assert got['mAP'] == pytest.approx(want, abs=1e-4)
      assert got['ap'][0] == pytest.approx(want, abs=1e-4)


@pytest.mark.parametrize('metric', ['cosine', 'euclidean'])
def test_features_path_equals_distmat_path(metric):
  rng = np.random.default_rng(2)
  q, g = rng.normal(size=(30, 16)), rng.normal(size=(70, 16))
  qp, gp = rng.integers(0, 5, 30), rng.integers(0, 5, 70)
  qc, gc = rng.integers(0, 2, 30), rng.integers(0, 2, 70)
  if metric == 'cosine':
    norm = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)
    dist = 1 - norm(q) @ norm(g).T
  else:
    dist = np.sqrt(((q[:, None] - g[None]) ** 2).sum(-1))
  np.testing.assert_allclose(pairwise_distance(q, g, metric), dist, atol=1e-5)
  # Rescaling features changes nothing for cosine.
  scale = 7.0 if metric == 'cosine' else 1.0
  got = ranked_metrics(q * scale, g, q_pids=qp, g_pids=gp, q_camids=qc, g_camids=gc,
                       distance=metric, query_block=8)
  assert_close(got, hit_loop_metrics(dist, qp, gp, qc, gc, 'trapezoid', 20), 1e-6)


SHARED = os.path.join(os.path.dirname(__file__), '..', '..', 'shared', 'data')


@pytest.mark.skipif(not os.path.isdir(SHARED), reason='../shared/data not beside the repo')
def test_real_mars_protocol_with_random_features():
  from data_prep import mars
  info = os.path.join(SHARED, 'mars_info')
  train = mars.load_mat(os.path.join(info, 'tracks_train_info.mat'), 'track_train_info')
  test = mars.load_mat(os.path.join(info, 'tracks_test_info.mat'), 'track_test_info')
  query = mars.load_mat(os.path.join(info, 'query_IDX.mat'), 'query_IDX')
  rows = mars.protocol_rows(train, test, query)
  qp, qc = test[rows['query'], 2], test[rows['query'], 3]
  gp, gc = test[rows['gallery'], 2], test[rows['gallery'], 3]
  assert (len(qp), len(gp)) == (1980, 11310)
  rng = np.random.default_rng(3)
  # Random features with some identity signal so that ranks are spread out.
  centers = rng.normal(size=(int(test[:, 2].max()) + 2, 64))
  qf = centers[qp] + 1.0 * rng.normal(size=(len(qp), 64))
  gf = centers[gp] + 1.0 * rng.normal(size=(len(gp), 64))
  norm = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)
  dist = 1.0 - norm(qf) @ norm(gf).T
  for mode, rank_on in (('trapezoid', 'device'), ('standard', 'host')):
    want = hit_loop_metrics(dist, qp, gp, qc, gc, mode, 20)
    got = ranked_metrics(qf.astype(np.float32), gf.astype(np.float32), q_pids=qp, g_pids=gp,
                         q_camids=qc, g_camids=gc, ap_mode=mode, query_block=256,
                         rank_on=rank_on)
    assert_close(got, want, 2e-4)  # float32 distances on the device vs float64 here
    assert 0.05 < want['mAP'] < 0.95
  # Every MARS query has a match in another camera.
  assert want['num_valid_queries'] == 1980


def test_a_metric_added_to_the_table_reaches_every_report(tmp_path, monkeypatch):
  """The docs' worked example (docs/extending.md): R-precision added as one
  METRICS entry is computed per query block on host and device, and appears in
  results.json, results.md, the logged scalars and the names train.best_metric
  accepts, with no other change."""
  import json
  from i2v_jax import config_lib, eval_tables
  from i2v_jax.evaluation import report
  from configs import synthetic_cpu

  def r_precision(ranked, ap_mode, xp):
    del ap_mode
    first_n = ranked['rank'] <= ranked['n'][:, None]
    return xp.sum(ranked['good'] & first_n, axis=1) / xp.maximum(ranked['n'], 1.0)

  monkeypatch.setitem(eval_tables.METRICS, 'RP',
                      eval_tables.Metric('RP', r_precision, 'R-precision'))
  # Hand-worked, junk removed first: '01001' has n = 2 and one hit in the first 2
  # kept entries (RP 1/2); '1010' has 2 in the first 2 -> 1/2; '1100' -> 1.
  for pattern, want in (('01001', 0.5), ('1010', 0.5), ('1100', 1.0)):
    for rank_on in ('host', 'device'):
      dist, qp, gp, qc, gc = one_query(pattern, (0, 2))
      got = ranked_metrics(distmat=dist, q_pids=qp, g_pids=gp, q_camids=qc, g_camids=gc,
                           max_rank=5, rank_on=rank_on)
      assert got['RP'] == pytest.approx(want), (pattern, rank_on)
  results = {'i2v': got}
  report.write_results(results, str(tmp_path), step=3)
  assert json.load(open(tmp_path / 'results.json'))['protocols']['i2v']['RP'] == 1.0
  header = open(tmp_path / 'results.md').read().splitlines()[0]
  assert '| mAP | mINP | RP |' in header
  assert report.scalar_metrics(results)['i2v/RP'] == 100.0
  config = synthetic_cpu.get_config()
  assert 'i2v/RP' in config_lib.metric_names(config)
  config.train.best_metric = 'i2v/RP'
  config_lib.validate(config)
