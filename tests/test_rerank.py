"""k-reciprocal re-ranking: its limits, its definition on a small case, its effect."""

import numpy as np
import pytest

from i2v_jax.distances import pairwise_distance
from i2v_jax.evaluation import rerank
from i2v_jax.evaluation.metrics import reference_metrics as rank_metrics


def clustered(seed, num_ids=20, per_id=6, noise=0.9, dim=16):
  rng = np.random.default_rng(seed)
  centers = rng.normal(size=(num_ids, dim))
  g_pids = np.repeat(np.arange(num_ids), per_id)
  gallery = centers[g_pids] + noise * rng.normal(size=(len(g_pids), dim))
  q_pids = np.arange(num_ids)
  query = centers[q_pids] + noise * rng.normal(size=(num_ids, dim))
  return query, gallery, q_pids, g_pids


def rerank_features(q, g, distance='cosine', **kw):
  """Re-ranking from features, as the protocols call it: the three distance matrices."""
  q, g = np.asarray(q, np.float64), np.asarray(g, np.float64)
  d = lambda a, b: pairwise_distance(a, b, distance, xp=np)
  return rerank.k_reciprocal(d(q, g), d(q, q), d(g, g), **kw)


def test_lambda_one_is_the_normalised_original_distance():
  q, g, _, _ = clustered(0)
  got = rerank_features(q, g, lambda_value=1.0)
  both = np.concatenate([q, g])
  full = np.maximum(pairwise_distance(both, both, 'cosine', xp=np), 0.0)
  want = (full / full.max(axis=0, keepdims=True)).T[:len(q), len(q):]
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_lambda_zero_is_a_jaccard_distance_in_0_1():
  q, g, _, _ = clustered(1)
  got = rerank_features(q, g, k1=6, k2=1, lambda_value=0.0)
  assert got.shape == (len(q), len(g))
  assert (got >= -1e-6).all() and (got <= 1 + 1e-6).all()
  # Far-away gallery entries share no reciprocal neighbour: distance exactly 1.
  assert (np.isclose(got, 1.0)).mean() > 0.5


def test_two_separated_groups_share_neighbours_only_inside():
  # Query 0 sits in group A, query 1 in group B (6 members each: self + k1 = 5 neighbours is a
  # group); the groups are far apart, so no neighbour is shared across them.
  rng = np.random.default_rng(2)
  a, b = rng.normal(size=(5, 4)) * 0.1 + 5, rng.normal(size=(5, 4)) * 0.1 - 5
  q = np.stack([a[0] + 0.01, b[0] + 0.01])
  got = rerank_features(q, np.concatenate([a, b]), distance='euclidean', k1=5, k2=1,
                        lambda_value=0.0)
  assert (got[0, :5] < 1).all() and np.allclose(got[0, 5:], 1.0)
  assert (got[1, 5:] < 1).all() and np.allclose(got[1, :5], 1.0)


def test_reranking_helps_on_noisy_clusters():
  gains = []
  for seed in range(3):
    q, g, qp, gp = clustered(seed)
    cams = dict(q_camids=np.zeros(len(qp)), g_camids=np.ones(len(gp)))
    before = rank_metrics(pairwise_distance(q, g, 'cosine', xp=np), qp, gp,
                          cams['q_camids'], cams['g_camids'])['mAP']
    after = rank_metrics(rerank_features(q, g, k1=6, k2=3), qp, gp,
                         cams['q_camids'], cams['g_camids'])['mAP']
    gains.append(after - before)
  assert np.mean(gains) > 0.02, gains


def test_bad_arguments_are_named():
  q, g, _, _ = clustered(0, num_ids=3)
  with pytest.raises(ValueError, match='rerank_lambda'):
    rerank_features(q, g, lambda_value=2.0)
