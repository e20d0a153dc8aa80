"""Every loss against a plain-Python loop reference written here, plus invariances."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import base
from i2v_jax import losses

# ---------------------------------------------------------------- references


def ref_dist(a, b, metric):
  if metric == 'euclidean':
    return math.sqrt(max(sum((x - y) ** 2 for x, y in zip(a, b)), 1e-12))
  na = math.sqrt(sum(x * x for x in a))
  nb = math.sqrt(sum(y * y for y in b))
  return 1.0 - sum(x * y for x, y in zip(a, b)) / (na * nb)


def ref_softmax(xs):
  m = max(xs)
  e = [math.exp(x - m) for x in xs]
  return [v / sum(e) for v in e]


def ref_kl(p, q):
  return sum(pi * (math.log(pi) - math.log(qi)) for pi, qi in zip(p, q) if pi > 0)


def ref_triplet(anchors, alabels, cands, clabels, margin, soft, metric,
                same_set):
  total, count = 0.0, 0
  for i, a in enumerate(anchors):
    pos = [ref_dist(a, c, metric) for j, c in enumerate(cands)
           if clabels[j] == alabels[i] and not (same_set and i == j)]
    neg = [ref_dist(a, c, metric) for j, c in enumerate(cands)
           if clabels[j] != alabels[i]]
    if not pos or not neg:
      continue
    z = max(pos) - min(neg)
    total += math.log(1 + math.exp(z)) if soft else max(0.0, z + margin)
    count += 1
  return total / count if count else 0.0


def ref_tcl(s, t, labels, tau, num_negatives, mine_on, metric, direction):
  total, count = 0.0, 0
  n = len(labels)
  for k in range(n):
    ds = [ref_dist(s[k], s[j], metric) for j in range(n)]
    dt = [ref_dist(t[k], t[j], metric) for j in range(n)]
    dm = dt if mine_on == 'teacher' else ds
    pos = [j for j in range(n) if j != k and labels[j] == labels[k]]
    neg = [j for j in range(n) if labels[j] != labels[k]]
    if not pos or not neg:
      continue
    if num_negatives == 1:
      chosen = [max(pos, key=lambda j: dm[j]), min(neg, key=lambda j: dm[j])]
    else:
      chosen = pos + sorted(neg, key=lambda j: dm[j])[:num_negatives]
    pi_t = ref_softmax([-dt[j] / tau for j in chosen])
    pi_s = ref_softmax([-ds[j] / tau for j in chosen])
    total += ref_kl(pi_t, pi_s) if direction == 'teacher_to_student' else ref_kl(pi_s, pi_t)
    count += 1
  return total / count if count else 0.0


# ------------------------------------------------------------------- data

LABELS = [0, 0, 1, 1, 2, 2, 2]


def features(seed, n=7, d=5):
  return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)


# ------------------------------------------------------------ identity loss


@pytest.mark.parametrize('eps', [0.0, 0.1])
def test_cross_entropy_matches_loop(eps):
  logits = features(0, 4, 3)
  labels = [2, 0, 1, 1]
  want = 0.0
  for row, y in zip(logits.tolist(), labels):
    p = ref_softmax(row)
    want += -sum(((1 - eps) * (c == y) + eps / 3) * math.log(p[c]) for c in range(3))
  want /= 4
  got, aux = losses.cross_entropy(jnp.asarray(logits), jnp.asarray(labels), eps)
  np.testing.assert_allclose(got, want, rtol=1e-5)
  assert 0 <= aux['accuracy'] <= 1


# ------------------------------------------------------------------ triplet


@pytest.mark.parametrize('metric', ['euclidean', 'cosine'])
@pytest.mark.parametrize('soft', [False, True])
def test_batch_hard_triplet_matches_loop(metric, soft):
  x = features(1)
  idx = jnp.arange(7)
  got, aux = losses.batch_hard_triplet(
      jnp.asarray(x), jnp.asarray(LABELS), jnp.asarray(x), jnp.asarray(LABELS),
      anchor_index=idx, cand_index=idx, margin=0.3, soft_margin=soft, distance=metric)
  want = ref_triplet(x.tolist(), LABELS, x.tolist(), LABELS, 0.3, soft, metric, True)
  np.testing.assert_allclose(got, want, rtol=1e-5)
  assert aux['valid'] == 1.0


def test_cross_modal_triplet_counts_own_tracklet_as_positive():
  s, t = features(2, 7, 4), features(3, 3, 4)
  tl = [0, 1, 2]
  got, _ = losses.batch_hard_triplet(jnp.asarray(s), jnp.asarray(LABELS),
                                     jnp.asarray(t), jnp.asarray(tl), margin=0.3)
  want = ref_triplet(s.tolist(), LABELS, t.tolist(), tl, 0.3, False, 'euclidean', False)
  np.testing.assert_allclose(got, want, rtol=1e-5)


def test_triplet_single_sample_identity_is_left_out_not_nan():
  x = features(4, 5, 3)
  labels = jnp.asarray([0, 0, 1, 2, 2])  # identity 1 has one sample
  idx = jnp.arange(5)
  loss_fn = lambda x: losses.batch_hard_triplet(
      x, labels, x, labels, anchor_index=idx, cand_index=idx)
  (got, aux), grad = jax.value_and_grad(loss_fn, has_aux=True)(jnp.asarray(x))
  want = ref_triplet(x.tolist(), [0, 0, 1, 2, 2], x.tolist(), [0, 0, 1, 2, 2],
                     0.3, False, 'euclidean', True)
  np.testing.assert_allclose(got, want, rtol=1e-5)
  np.testing.assert_allclose(aux['valid'], 0.8)
  assert np.all(np.isfinite(grad))
  # All singletons: no triplet at all -> exactly 0 with zero, finite gradient.
  lone = jnp.arange(5)
  loss_fn = lambda x: losses.batch_hard_triplet(
      x, lone, x, lone, anchor_index=idx, cand_index=idx)[0]
  value, grad = jax.value_and_grad(loss_fn)(jnp.asarray(x))
  assert value == 0.0 and np.all(grad == 0.0)


# --------------------------------------------------------------------- TCL


def tcl(s, t, labels=LABELS, **kw):
  idx = jnp.arange(len(labels))
  s, t, y = jnp.asarray(s), jnp.asarray(t), jnp.asarray(labels)
  return losses.triplet_contrast(s, s, t, t, y, y, anchor_index=idx,
                                 cand_index=idx, **kw)


@pytest.mark.parametrize('num_negatives', [1, 2, 10])
@pytest.mark.parametrize('mine_on', ['teacher', 'student'])
@pytest.mark.parametrize('direction', ['teacher_to_student', 'student_to_teacher'])
def test_tcl_matches_loop(num_negatives, mine_on, direction):
  s, t = features(5, 7, 6), features(6, 7, 4)  # different widths on purpose
  for metric in ('cosine', 'euclidean'):
    got, _ = tcl(s, t, temperature=0.2, num_negatives=num_negatives,
                 mine_on=mine_on, distance=metric, direction=direction)
    want = ref_tcl(s.tolist(), t.tolist(), LABELS, 0.2, num_negatives, mine_on,
                   metric, direction)
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=1e-7)


def test_tcl_hand_worked_case():
  # 1-D "features" under Euclidean distance; labels a a b.
  # Anchor 0: teacher d(0,1)=1, d(0,2)=2; student d(0,1)=2, d(0,2)=2.
  # tau=1: pi_T = softmax(-1, -2) = (0.7311, 0.2689); pi_S = (0.5, 0.5)
  # KL = 0.7311 ln(1.4621) + 0.2689 ln(0.5379) = 0.1109.
  # Anchor 1: teacher d(1,0)=1, d(1,2)=1 -> pi_T = (0.5, 0.5); student d(1,0)=2,
  # d(1,2)=0 -> pi_S = softmax(-2, 0).
  # Anchor 2 (label b) has no positive: left out.
  t = np.array([[0.0], [1.0], [2.0]], np.float32)
  s = np.array([[0.0], [2.0], [2.0]], np.float32)
  got, aux = tcl(s, t, labels=[0, 0, 1], temperature=1.0, distance='euclidean')
  kl = lambda p, q: sum(a * math.log(a / b) for a, b in zip(p, q))
  sm = lambda a, b: (1 / (1 + math.exp(b - a)), 1 / (1 + math.exp(a - b)))
  anchor0 = kl(sm(-1, -2), sm(-2, -2))
  anchor1 = kl(sm(-1, -1), sm(-2, 0.0))  # student d(1,2)=0 exactly
  np.testing.assert_allclose(anchor0, 0.1109, atol=1e-4)
  np.testing.assert_allclose(got, (anchor0 + anchor1) / 2, rtol=1e-4)
  np.testing.assert_allclose(aux['valid'], 2 / 3)


def test_tcl_cosine_is_scale_invariant():
  s, t = features(7), features(8)
  ref, _ = tcl(s, t, temperature=0.1)
  for cs, ct in ((7.3, 1.0), (1.0, 0.01), (250.0, 40.0)):
    got, _ = tcl(s * cs, t * ct, temperature=0.1)
    np.testing.assert_allclose(got, ref, rtol=1e-5)
  # Euclidean distances are not: the invariance is the metric's, not an accident.
  e1, _ = tcl(s, t, temperature=0.1, distance='euclidean')
  e2, _ = tcl(s * 7.3, t, temperature=0.1, distance='euclidean')
  assert abs(float(e1) - float(e2)) > 1e-3


def test_tcl_gradient_flows_only_to_the_learner():
  s, t = jnp.asarray(features(9)), jnp.asarray(features(10))
  for mine_on in ('teacher', 'student'):
    fwd = lambda s, t, mine_on=mine_on: tcl(s, t, temperature=0.1, mine_on=mine_on)[0]
    gs, gt = jax.grad(fwd, argnums=(0, 1))(s, t)
    assert np.abs(gs).max() > 0 and np.all(gt == 0)
    rev = lambda s, t, mine_on=mine_on: tcl(s, t, temperature=0.1, mine_on=mine_on,
                                            direction='student_to_teacher')[0]
    gs, gt = jax.grad(rev, argnums=(0, 1))(s, t)
    assert np.all(gs == 0) and np.abs(gt).max() > 0


def test_tcl_single_sample_identity_defined():
  s, t = features(11, 5, 3), features(12, 5, 3)
  labels = [0, 0, 1, 2, 2]
  fn = lambda s: tcl(s, t, labels=labels, temperature=0.1)
  (value, aux), grad = jax.value_and_grad(fn, has_aux=True)(jnp.asarray(s))
  want = ref_tcl(s.tolist(), t.tolist(), labels, 0.1, 1, 'teacher', 'cosine',
                 'teacher_to_student')
  np.testing.assert_allclose(value, want, rtol=1e-4)
  np.testing.assert_allclose(aux['valid'], 0.8)
  assert np.all(np.isfinite(grad))
  value, grad = jax.value_and_grad(
      lambda s: tcl(s, t, labels=[0, 1, 2, 3, 4], temperature=0.1)[0])(jnp.asarray(s))
  assert value == 0.0 and np.all(grad == 0)


def test_tcl_rejects_bad_switches():
  s = features(0)
  with pytest.raises(ValueError, match='mine_on'):
    tcl(s, s, mine_on='both')
  with pytest.raises(ValueError, match='num_negatives'):
    tcl(s, s, num_negatives=0)
  with pytest.raises(ValueError, match='distance'):
    tcl(s, s, distance='manhattan')


# -------------------------------------------------- logit and feature terms


def test_logit_kl_matches_loop_and_stops_target_gradient():
  zt, zs = features(13, 4, 6), features(14, 4, 6)
  tau = 3.0
  want = tau ** 2 * sum(ref_kl(ref_softmax([v / tau for v in a]),
                               ref_softmax([v / tau for v in b]))
                        for a, b in zip(zt.tolist(), zs.tolist())) / 4
  got, _ = losses.logit_kl(jnp.asarray(zt), jnp.asarray(zs), tau)
  np.testing.assert_allclose(got, want, rtol=1e-5)
  gt, gs = jax.grad(lambda a, b: losses.logit_kl(a, b, tau)[0], argnums=(0, 1))(
      jnp.asarray(zt), jnp.asarray(zs))
  assert np.all(gt == 0) and np.abs(gs).max() > 0


def test_tkp_feature_term():
  s, t = features(15, 4, 3), features(16, 4, 3)
  want = sum(sum((a - b) ** 2 for a, b in zip(x, y))
             for x, y in zip(s.tolist(), t.tolist())) / 4
  got, _ = losses.feature_mse(jnp.asarray(s), jnp.asarray(t))
  np.testing.assert_allclose(got, want, rtol=1e-5)
  gt = jax.grad(lambda t: losses.feature_mse(jnp.asarray(s), t)[0])(jnp.asarray(t))
  assert np.all(gt == 0)


def test_distance_matrix_terms():
  s, t = features(17, 5, 3), features(18, 5, 4)
  sl, tl = s.tolist(), t.tolist()
  tkp = sum((ref_dist(sl[k], sl[l], 'euclidean') - ref_dist(tl[k], tl[l], 'euclidean')) ** 2
            for k in range(5) for l in range(5)) / 25
  sq = lambda a, b: sum((x - y) ** 2 for x, y in zip(a, b))
  vkd = 0.5 * sum((sq(sl[k], sl[l]) - sq(tl[k], tl[l])) ** 2
                  for k in range(5) for l in range(5)) / 25
  js, jt = jnp.asarray(s), jnp.asarray(t)
  got_tkp, _ = losses.distance_matrix_mse(js, js, jt, jt)
  got_vkd, _ = losses.squared_distance_mse(js, js, jt, jt)
  np.testing.assert_allclose(got_tkp, tkp, rtol=1e-4)
  np.testing.assert_allclose(got_vkd, vkd, rtol=1e-4)
  for fn in (losses.distance_matrix_mse, losses.squared_distance_mse):
    gs, gt = jax.grad(lambda a, b, fn=fn: fn(a, a, b, b)[0], argnums=(0, 1))(js, jt)
    assert np.all(gt == 0) and np.abs(gs).max() > 0


# ---------------------------------------------------------------- objective


def fake_outputs(seed, b=6, t=4, m=4, d=8, c=5):
  rng = np.random.default_rng(seed)
  teacher = {'features': rng.standard_normal((b, d)),
             'frame_features': rng.standard_normal((b, t, d)),
             'logits': rng.standard_normal((b, c))}
  student = {'features': rng.standard_normal((b * m, d)),
             'logits': rng.standard_normal((b * m, c))}
  as_f32 = lambda tree: jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), tree)
  return as_f32(teacher), as_f32(student)


def all_terms_config():
  cfg = base.get_config('preset=mdkt').loss
  cfg.unlock()
  cfg.triplet.student_to_teacher = cfg.triplet.teacher_to_student = 0.5
  cfg.tkp.feature = cfg.tkp.distance = 0.2
  cfg.vkd.logits = 0.1
  cfg.vkd.distance = 1e-3
  return cfg


def test_objective_is_weighted_sum_of_its_terms():
  teacher, student = fake_outputs(0, m=2)
  labels = jnp.asarray([0, 0, 1, 1, 2, 2])
  cfg = all_terms_config()
  total, metrics = losses.objective({'teacher': teacher, 'student': student}, labels, cfg)
  weights = {k: w for k, w in losses.term_weights(cfg).items() if w}
  # Every term of the two networks (the mean teacher's have their own test).
  assert set(weights) == {k for k in losses.term_weights(cfg) if not k.startswith('mean_teacher')}
  assert {k[5:] for k in metrics if k.startswith('loss/')} == set(weights)
  np.testing.assert_allclose(
      total, sum(w * metrics[f'loss/{k}'] for k, w in weights.items()), rtol=1e-6)
  # Alignment: student row b*M+m is frame m of clip b -> TCL with frame-level
  # teacher equals the loop reference on those rows.
  s = np.asarray(student['features'])
  tf = np.asarray(teacher['frame_features'])[:, :2].reshape(12, -1)
  want = ref_tcl(s.tolist(), tf.tolist(), np.repeat(labels, 2).tolist(),
                 cfg.tcl.temperature, 1, 'teacher', 'cosine', 'teacher_to_student')
  np.testing.assert_allclose(metrics['loss/tcl'], want, rtol=1e-4)
  np.testing.assert_allclose(metrics['loss/tkp/feature'],
                             np.mean(np.sum((s - tf) ** 2, -1)), rtol=1e-5)


def test_objective_with_single_sample_identity_is_finite():
  teacher, student = fake_outputs(2, b=5, m=1)
  labels = jnp.asarray([0, 0, 1, 2, 2])
  cfg = all_terms_config()
  fn = lambda t, s: losses.objective({'teacher': t, 'student': s}, labels, cfg)[0]
  value, (gt, gs) = jax.value_and_grad(fn, argnums=(0, 1))(teacher, student)
  assert np.isfinite(value)
  for g in jax.tree.leaves((gt, gs)):
    assert np.all(np.isfinite(g))


def test_objective_names_missing_network():
  cfg = base.get_config('preset=student_only').loss
  _, student = fake_outputs(3)
  labels = jnp.asarray([0, 0, 1, 1, 2, 2])
  total, metrics = losses.objective({'student': student}, labels, cfg, ('student',))
  assert set(metrics) >= {'loss/id/student', 'loss/triplet/student'}
  assert not any('teacher' in k for k in metrics)
  cfg = base.get_config('preset=mdkt').loss
  with pytest.raises(ValueError, match="'id/teacher'.*no teacher network"):
    losses.objective({'student': student}, labels, cfg, ('student',))


# ----------------------------------------- issue 10: VKD set level, TCL traps


def ref_tcl_general(s_anc, s_cand, t_anc, t_cand, alab, clab, aidx, cidx, tau,
                    num_negatives=1, metric='cosine', scale='none', cross=False):
  """TCL (teacher -> student, mined on the teacher) from its definition, with
  anchors and candidates as separate sets; ``scale='mean'`` divides each
  network's distances by their mean over all positive and negative pairs;
  ``cross`` measures the student's distances to the teacher's candidates."""
  n, m = len(alab), len(clab)
  dt = [[0.0 if aidx[i] == cidx[j] else ref_dist(t_anc[i], t_cand[j], metric)
         for j in range(m)] for i in range(n)]
  if cross:
    ds = [[ref_dist(s_anc[i], t_cand[j], metric) for j in range(m)] for i in range(n)]
  else:
    ds = [[0.0 if aidx[i] == cidx[j] else ref_dist(s_anc[i], s_cand[j], metric)
           for j in range(m)] for i in range(n)]
  pairs = [(i, j) for i in range(n) for j in range(m) if aidx[i] != cidx[j]
           or alab[i] != clab[j]]
  ct = cs = 1.0
  if scale == 'mean':
    ct = sum(dt[i][j] for i, j in pairs) / len(pairs)
    cs = sum(ds[i][j] for i, j in pairs) / len(pairs)
  total, count, chosen_sets = 0.0, 0, []
  for k in range(n):
    pos = [j for j in range(m) if clab[j] == alab[k] and cidx[j] != aidx[k]]
    neg = [j for j in range(m) if clab[j] != alab[k]]
    if not pos or not neg:
      continue
    if num_negatives == 1:
      chosen = [max(pos, key=lambda j: dt[k][j]), min(neg, key=lambda j: dt[k][j])]
    else:
      chosen = pos + sorted(neg, key=lambda j: dt[k][j])[:num_negatives]
    chosen_sets.append(chosen)
    pi_t = ref_softmax([-dt[k][j] / (tau * ct) for j in chosen])
    pi_s = ref_softmax([-ds[k][j] / (tau * cs) for j in chosen])
    total += ref_kl(pi_t, pi_s)
    count += 1
  return (total / count if count else 0.0), chosen_sets


def clip_level_config(num_negatives):
  cfg = base.get_config('preset=mdkt').loss
  cfg.unlock()
  cfg.tcl.teacher_level = 'clip'
  cfg.tcl.num_negatives = num_negatives
  return cfg


@pytest.mark.parametrize('num_negatives', [1, 2])
def test_clip_level_tcl_mines_distinct_tracklets(num_negatives):
  """Item 5: at clip level the candidates are tracklets (teacher clip feature,
  student mean of its M images), never M copies of one clip feature."""
  b, m = 6, 3
  teacher, student = fake_outputs(1, b=b, m=m)
  labels = np.array([0, 0, 1, 1, 2, 2])
  cfg = clip_level_config(num_negatives)
  _, metrics = losses.objective({'teacher': teacher, 'student': student}, jnp.asarray(labels), cfg)
  s = np.asarray(student['features'], np.float64)
  v = np.asarray(teacher['features'], np.float64)
  s_sets = s.reshape(b, m, -1).mean(1)
  anchor_track = np.repeat(np.arange(b), m)
  want, chosen = ref_tcl_general(
      s.tolist(), s_sets.tolist(), v[anchor_track].tolist(), v.tolist(),
      labels[anchor_track].tolist(), labels.tolist(), anchor_track.tolist(),
      list(range(b)), cfg.tcl.temperature, num_negatives)
  np.testing.assert_allclose(metrics['loss/tcl'], want, rtol=1e-4)
  for c in chosen:  # every softmax entry is a different tracklet
    assert len(set(c)) == len(c)
  if num_negatives == 2:  # the one other tracklet of the id + 2 distinct negatives
    assert all(len(c) == 3 for c in chosen)
  # The result does not depend on the order of tracklets or of the frames in them.
  perm = np.array([3, 0, 5, 1, 4, 2])
  frames = np.array([2, 0, 1])
  t2 = jax.tree.map(lambda x: x[perm], teacher)
  s2 = jax.tree.map(lambda x: x.reshape((b, m) + x.shape[1:])[perm][:, frames]
                    .reshape((b * m,) + x.shape[1:]), student)
  _, metrics2 = losses.objective({'teacher': t2, 'student': s2}, jnp.asarray(labels[perm]), cfg)
  np.testing.assert_allclose(metrics2['loss/tcl'], metrics['loss/tcl'], rtol=1e-5)


def test_frame_level_tcl_depends_on_nothing_but_rows():
  """The frame-level objective equals the loop on the student rows (alignment)."""
  teacher, student = fake_outputs(4, m=2)
  labels = jnp.asarray([0, 0, 1, 1, 2, 2])
  _, metrics = losses.objective({'teacher': teacher, 'student': student}, labels, base.get_config('preset=mdkt').loss)
  s = np.asarray(student['features'])
  tf = np.asarray(teacher['frame_features'])[:, :2].reshape(12, -1)
  idx = list(range(12))
  want, _ = ref_tcl_general(s.tolist(), s.tolist(), tf.tolist(), tf.tolist(),
                            np.repeat(labels, 2).tolist(), np.repeat(labels, 2).tolist(),
                            idx, idx, 0.1)
  np.testing.assert_allclose(metrics['loss/tcl'], want, rtol=1e-4)


def relu_features(seed, n, d=2048, per_id=3, spread=0.15):
  """Trained-ResNet-like features: non-negative, mean ~1, norms ~50 (2048-d),
  clustered by identity (rows i*per_id ... are one id): same-id distances ~10,
  other-id distances ~40."""
  rng = np.random.default_rng(seed)
  base_ = np.abs(rng.standard_normal(d)) * 1.2
  ids = 0.6 * rng.standard_normal((-(-n // per_id), d))
  x = base_ + np.repeat(ids, per_id, axis=0)[:n] + spread * rng.standard_normal((n, d))
  return np.maximum(x, 0).astype(np.float32)


def test_euclidean_tcl_on_resnet_scale_features_keeps_a_gradient():
  """Item 6: raw Euclidean distances (~10) / tau=0.1 saturate both softmaxes,
  loss and gradient exactly 0; distance_scale='mean' keeps both, and the
  'saturated' diagnostic says which case a run is in."""
  labels = [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
  s, t = relu_features(0, 12), relu_features(1, 12)
  s_j = jnp.asarray(s)

  def loss(s_, scale):
    return tcl(s_, t, labels=labels, temperature=0.1, distance='euclidean',
               distance_scale=scale)
  (raw, aux_raw), g_raw = jax.value_and_grad(lambda x: loss(x, 'none'), has_aux=True)(s_j)
  assert float(raw) == 0.0 and np.all(np.asarray(g_raw) == 0.0)
  assert float(aux_raw['saturated']) == 1.0
  (val, aux), grad = jax.value_and_grad(lambda x: loss(x, 'mean'), has_aux=True)(s_j)
  idx = list(range(12))
  want, _ = ref_tcl_general(s.tolist(), s.tolist(), t.tolist(), t.tolist(), labels,
                            labels, idx, idx, 0.1, metric='euclidean', scale='mean')
  np.testing.assert_allclose(val, want, rtol=1e-3)
  assert float(val) > 0 and np.abs(np.asarray(grad)).max() > 0
  assert float(aux['saturated']) < 1.0
  # With the mean scale Euclidean TCL is invariant to either network's feature scale.
  np.testing.assert_allclose(loss(s_j * 9.0, 'mean')[0], val, rtol=1e-4)


def test_cross_network_tcl_matches_definition_and_reaches_only_the_student():
  s, t = features(21), features(22)
  got, _ = tcl(s, t, temperature=0.2, cross=True)
  idx = list(range(7))
  want, _ = ref_tcl_general(s.tolist(), s.tolist(), t.tolist(), t.tolist(), LABELS,
                            LABELS, idx, idx, 0.2, cross=True)
  np.testing.assert_allclose(got, want, rtol=1e-4)
  gs, gt = jax.grad(lambda a, b: tcl(a, b, temperature=0.2, cross=True)[0],
                    argnums=(0, 1))(jnp.asarray(s), jnp.asarray(t))
  assert np.abs(gs).max() > 0 and np.all(gt == 0)


def test_distances_are_exact_against_float64():
  """Item 7: self-distances exactly 0 and small distances accurate under jit, in
  both the difference form (small batches) and the centred expansion (large)."""
  from i2v_jax import distances as dist_mod  # the module's size switch
  for n in (32, 160):  # 32*32*2048 < 2**24 <= 160*160*2048
    assert (n * n * 2048 <= dist_mod.DIFFERENCE_FORM_MAX) == (n == 32)
    x = relu_features(3, n)
    x[1] = x[0] + 1e-3 * np.abs(np.random.default_rng(4).standard_normal(2048))
    idx = jnp.arange(n)
    # Compiled as users run it (XLA's full optimisation; the suite's default is off,
    # conftest.FAST_COMPILE): the precision claimed is that of the real build.
    fn = jax.jit(lambda a, idx=idx: losses.pairwise_distance(a, a, 'euclidean',
                                                             idx[:, None] == idx[None, :]))
    x_ = jnp.asarray(x)
    d = fn.lower(x_).compile(compiler_options={'xla_backend_optimization_level': 3})(x_)
    d = np.asarray(d, np.float64)
    x64 = x.astype(np.float64)
    ref = np.sqrt(((x64[:, None] - x64[None]) ** 2).sum(-1))
    assert np.all(np.diag(d) == 0.0)
    off = ~np.eye(n, dtype=bool)
    usual = off & (ref > 1.0)  # every pair but the near-duplicate
    rel = np.abs(d - ref)[usual] / ref[usual]
    # Difference form: one rounding per squared difference. Centred expansion:
    # |c_i|² + |c_j|² - 2 c_i·c_j over 2048 float32 terms cancels about half of
    # |c|² ~ 900 to give d² ~ 1600: a few float32 ulps of 900 relative to d², whose
    # summation order (and so the last digit) depends on the CPU's vector width.
    assert rel.max() < (1e-5 if n == 32 else 3e-5), (n, rel.max())
    # The near-duplicate pair: distance 0.036 between rows of norm ~60. Exact in
    # the difference form; in the centred expansion its error is bounded by the
    # float32 rounding of the centred norms (~30²·6e-8), not of the raw ones.
    if n == 32:
      np.testing.assert_allclose(d[0, 1], ref[0, 1], rtol=1e-4)
    else:
      assert abs(d[0, 1] - ref[0, 1]) < 1e-3, (d[0, 1], ref[0, 1])
      raw = (np.sum(x * x, -1)[:, None] + np.sum(x * x, -1)[None] - 2 * x @ x.T)
      assert abs(d[0, 1] - ref[0, 1]) < abs(np.sqrt(max(raw[0, 1], 0)) - ref[0, 1])
    sq = jax.jit(lambda a: dist_mod.squared_euclidean(a, a))(jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(sq)[usual], (ref ** 2)[usual],
                               rtol=2e-5 if n == 32 else 5e-5)  # the expansion, as above
  # The gradient of a zero distance is finite (0), not NaN.
  g = jax.grad(lambda a: losses.pairwise_distance(a, a, 'euclidean').sum())(
      jnp.ones((3, 4)))
  assert np.all(np.isfinite(g))


def ref_vkd_stage2(s_img, t_clip, zs_img, zt, labels, m, tau=10.0):
  """VKD's train_distill.py losses from their definition: the student's M images
  are one set (mean embedding, mean of per-image logits)."""
  b = len(labels)
  s_set = [[sum(s_img[i * m + k][d] for k in range(m)) / m for d in range(len(s_img[0]))]
           for i in range(b)]
  z_set = [[sum(zs_img[i * m + k][c] for k in range(m)) / m for c in range(len(zs_img[0]))]
           for i in range(b)]
  ce = 0.0
  for i in range(b):
    ls = math.log(sum(math.exp(v) for v in z_set[i]))
    ce += (ls - z_set[i][labels[i]]) / b
  trip = ref_triplet(s_set, labels, s_set, labels, 0.0, True, 'euclidean', True)
  kl = 0.0
  for i in range(b):
    p = ref_softmax([v / tau for v in zt[i]])
    q = ref_softmax([v / tau for v in z_set[i]])
    kl += tau ** 2 * ref_kl(p, q) / b
  sq = lambda a, c: sum((x - y) ** 2 for x, y in zip(a, c))
  sim = 0.5 * sum((sq(s_set[i], s_set[j]) - sq(t_clip[i], t_clip[j])) ** 2
                  for i in range(b) for j in range(b)) / b ** 2
  return {'id/student': ce, 'triplet/student': trip, 'vkd/logits': kl, 'vkd/distance': sim}


def test_vkd_preset_at_m2_is_vkds_set_level_loss():
  """Item 1 (+2): with the vkd preset every student term works on the set of M=2
  images, one row per sample, soft-margin triplet."""
  cfg = base.get_config('preset=vkd').loss
  assert cfg.student_level == 'set' and cfg.triplet.soft_margin
  teacher, student = fake_outputs(7, b=6, m=2)
  labels = [0, 0, 1, 1, 2, 2]
  total, metrics = losses.objective({'teacher': teacher, 'student': student}, jnp.asarray(labels), cfg,
                                    ('teacher', 'student'))
  want = ref_vkd_stage2(np.asarray(student['features']).tolist(),
                        np.asarray(teacher['features']).tolist(),
                        np.asarray(student['logits']).tolist(),
                        np.asarray(teacher['logits']).tolist(), labels, 2)
  for name, value in want.items():
    np.testing.assert_allclose(metrics[f'loss/{name}'], value, rtol=1e-4, err_msg=name)
  np.testing.assert_allclose(
      total, want['id/student'] + want['triplet/student'] + 0.1 * want['vkd/logits']
      + 1e-4 * want['vkd/distance'], rtol=1e-4)


def test_vkd_distance_term_hand_worked_at_m2():
  """Two samples of M=2 one-dimensional images: student images {0, 2} and {4, 6}
  form sets 1 and 5 (squared distance 16); teacher clips 0 and 3 (9). The
  matrices differ by 7 in the 2 off-diagonal entries of 4:
  ½ · (2 · 49) / 4 = 12.25. At frame level the rows are the 4 images and the
  teacher clip repeated: frames 0 and 2 of sample 1 are pulled together (target 0)."""
  cfg = base.get_config('preset=vkd').loss
  teacher = {'features': jnp.asarray([[0.0], [3.0]]),
             'frame_features': jnp.zeros((2, 2, 1)), 'logits': jnp.zeros((2, 3))}
  student = {'features': jnp.asarray([[0.0], [2.0], [4.0], [6.0]]),
             'logits': jnp.zeros((4, 3))}
  _, metrics = losses.objective({'teacher': teacher, 'student': student}, jnp.asarray([0, 1]), cfg)
  np.testing.assert_allclose(metrics['loss/vkd/distance'], 12.25, rtol=1e-6)
  cfg.unlock()
  cfg.student_level = 'frame'
  _, frame = losses.objective({'teacher': teacher, 'student': student}, jnp.asarray([0, 1]), cfg)
  # rows 0,2,4,6 vs teacher 0,0,3,3: squared distances (student − teacher):
  # pairs (0,1): 4−0, (0,2): 16−9, (0,3): 36−9, (1,2): 4−9, (1,3): 16−9, (2,3): 4−0
  want = 0.5 * 2 * (16 + 49 + 729 + 25 + 49 + 16) / 16
  np.testing.assert_allclose(frame['loss/vkd/distance'], want, rtol=1e-6)


def test_set_and_frame_level_agree_at_m1():
  teacher, student = fake_outputs(8, m=1)
  labels = jnp.asarray([0, 0, 1, 1, 2, 2])
  cfg = all_terms_config()
  _, frame = losses.objective({'teacher': teacher, 'student': student}, labels, cfg)
  cfg.student_level = 'set'
  _, set_ = losses.objective({'teacher': teacher, 'student': student}, labels, cfg)
  for k in frame:
    np.testing.assert_allclose(set_[k], frame[k], rtol=1e-6, err_msg=k)


# ------------------------------------- readings of TCL (loss.tcl switches)


def ref_tcl_readings(s, t, labels, tau_s, tau_t, neighbours, metric='cosine'):
  """TCL teacher -> student from the definitions of the readings: with
  ``neighbours`` k > 0 the softmax runs over the anchor's k nearest other samples
  by the teacher's distance, whatever their label; else over the hardest pair.
  The teacher's softmax uses tau_t, the student's tau_s."""
  n = len(labels)
  total, count = 0.0, 0
  for k in range(n):
    dt = [ref_dist(t[k], t[j], metric) for j in range(n)]
    ds = [ref_dist(s[k], s[j], metric) for j in range(n)]
    others = [j for j in range(n) if j != k]
    if neighbours:
      chosen = sorted(others, key=lambda j: dt[j])[:neighbours]
    else:
      pos = [j for j in others if labels[j] == labels[k]]
      neg = [j for j in others if labels[j] != labels[k]]
      if not pos or not neg:
        continue
      chosen = [max(pos, key=lambda j: dt[j]), min(neg, key=lambda j: dt[j])]
    if not chosen:
      continue
    total += ref_kl(ref_softmax([-dt[j] / tau_t for j in chosen]),
                    ref_softmax([-ds[j] / tau_s for j in chosen]))
    count += 1
  return total / count if count else 0.0


@pytest.mark.parametrize('neighbours', [1, 3, 6, 20])
@pytest.mark.parametrize('tau_t', [0.0, 0.05])
def test_neighbourhood_and_sharper_target_tcl_match_loop(neighbours, tau_t):
  s, t = features(21, 7, 6), features(22, 7, 4)
  for metric in ('cosine', 'euclidean'):
    got, aux = tcl(s, t, temperature=0.2, teacher_temperature=tau_t,
                   neighbours=neighbours, distance=metric)
    want = ref_tcl_readings(s.tolist(), t.tolist(), LABELS, 0.2, tau_t or 0.2,
                            neighbours, metric)
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=1e-7)
    assert aux['valid'] == 1.0  # every anchor has neighbours, labels or not
  # Teacher temperature alone, hardest pair:
  got, _ = tcl(s, t, temperature=0.2, teacher_temperature=0.05)
  want = ref_tcl_readings(s.tolist(), t.tolist(), LABELS, 0.2, 0.05, 0)
  np.testing.assert_allclose(got, want, rtol=2e-4)


def test_neighbourhood_tcl_hand_worked_case():
  # 1-D features, Euclidean, tau = 1, every sample of ONE identity: the hardest-
  # pair TCL has no negative and so no anchor; the neighbourhood reading does.
  # teacher 0, 1, 3; student 0, 2, 1; k = 2 (every other sample).
  # Anchor 0: teacher d = (1, 3) -> pi_T = sm(-1, -3); student d = (2, 1).
  # Anchor 1: teacher d(1,0)=1, d(1,2)=2; student d(1,0)=2, d(1,2)=1.
  # Anchor 2: teacher d(2,1)=2 < d(2,0)=3; student d(2,1)=1, d(2,0)=1.
  t = np.array([[0.0], [1.0], [3.0]], np.float32)
  s = np.array([[0.0], [2.0], [1.0]], np.float32)
  sm = lambda a, b: (1 / (1 + math.exp(b - a)), 1 / (1 + math.exp(a - b)))
  kl = lambda p, q: sum(x * math.log(x / y) for x, y in zip(p, q))
  anchors = [kl(sm(-1, -3), sm(-2, -1)), kl(sm(-1, -2), sm(-2, -1)),
             kl(sm(-2, -3), sm(-1, -1))]
  # By hand: .8808 ln(.8808/.2689) + .1192 ln(.1192/.7311) = 1.0451 - .2162 = .8289.
  np.testing.assert_allclose(anchors[0], 0.8287, atol=3e-4)
  got, aux = tcl(s, t, labels=[0, 0, 0], temperature=1.0, neighbours=2,
                 distance='euclidean')
  np.testing.assert_allclose(got, sum(anchors) / 3, rtol=1e-4)
  assert aux['valid'] == 1.0
  got, aux = tcl(s, t, labels=[0, 0, 0], temperature=1.0, distance='euclidean')
  assert got == 0.0 and aux['valid'] == 0.0  # the hardest-pair reading: no negative
  # k = 1: one candidate, a one-entry softmax: nothing to transfer.
  got, _ = tcl(s, t, labels=[0, 0, 0], temperature=1.0, neighbours=1, distance='euclidean')
  assert got == 0.0


def test_sharper_teacher_target_hand_worked_case():
  # The hand-worked case above (labels a a b), anchor 0 only differs: with
  # tau_T = 0.5, tau_S = 1: pi_T = sm(-2, -4) = (0.8808, 0.1192), pi_S = (0.5, 0.5),
  # KL = 0.8808 ln 1.7616 + 0.1192 ln 0.2384 = 0.3278.
  t = np.array([[0.0], [1.0], [2.0]], np.float32)
  s = np.array([[0.0], [2.0], [2.0]], np.float32)
  sm = lambda a, b: (1 / (1 + math.exp(b - a)), 1 / (1 + math.exp(a - b)))
  kl = lambda p, q: sum(x * math.log(x / y) for x, y in zip(p, q))
  anchor0 = kl(sm(-2, -4), sm(-2, -2))
  np.testing.assert_allclose(anchor0, 0.3278, atol=1e-4)
  anchor1 = kl(sm(-2, -2), sm(-2, 0.0))  # teacher (0.5, 0.5) at any temperature
  got, _ = tcl(s, t, labels=[0, 0, 1], temperature=1.0, teacher_temperature=0.5,
               distance='euclidean')
  np.testing.assert_allclose(got, (anchor0 + anchor1) / 2, rtol=1e-4)


def test_bn_neck_tcl_reads_the_bn_features_at_clip_level():
  b, m = 6, 3
  teacher, student = fake_outputs(7, b=b, m=m)
  rng = np.random.default_rng(8)
  teacher['bn_features'] = jnp.asarray(rng.standard_normal((b, 8)), jnp.float32)
  student['bn_features'] = jnp.asarray(rng.standard_normal((b * m, 8)), jnp.float32)
  labels = np.array([0, 0, 1, 1, 2, 2])
  cfg = clip_level_config(1)
  cfg.tcl.feature = 'bn_features'
  _, metrics = losses.objective({'teacher': teacher, 'student': student}, jnp.asarray(labels), cfg)
  s = np.asarray(student['bn_features'], np.float64)
  v = np.asarray(teacher['bn_features'], np.float64)
  track = np.repeat(np.arange(b), m)
  want, _ = ref_tcl_general(s.tolist(), s.reshape(b, m, -1).mean(1).tolist(),
                            v[track].tolist(), v.tolist(), labels[track].tolist(),
                            labels.tolist(), track.tolist(), list(range(b)),
                            cfg.tcl.temperature)
  np.testing.assert_allclose(metrics['loss/tcl'], want, rtol=1e-4)
  cfg.tcl.teacher_level = 'frame'
  with pytest.raises(ValueError, match='teacher_level'):
    losses.objective({'teacher': teacher, 'student': student}, jnp.asarray(labels), cfg)


def test_one_way_tcl_drops_only_the_reverse_term():
  cfg = base.get_config('preset=mdkt')
  assert cfg.loss.tcl.reverse == 0.5
  cfg.loss.tcl.reverse = 0.0
  terms = set(losses.active_terms(cfg.loss, cfg.networks))
  assert 'tcl' in terms and 'tcl/reverse' not in terms
  assert {'mutual/student_from_teacher', 'mutual/teacher_from_student'} <= terms
