"""The training objective: Σ weight × term over the SPEC §4 terms named in config.

Alignment. A batch has B tracklets with labels y (B,). The teacher sees one clip
of T frames per tracklet; the student sees M ≤ T of those frames as images,
ordered tracklet-major: student row b·M + m is frame m of clip b.

``loss.student_level`` says what one student row is in every student term:

  * ``'frame'``: each image is a row (B·M rows, labels ``repeat(y, M)``); the
    teacher's counterpart of row b·M + m is frame feature t_{b,m}; teacher
    logits and clip features are repeated M times.
  * ``'set'`` (VKD): the M images of a sample form ONE set embedding, the mean
    of their features, with set logits the mean of their per-image logits
    (VKD's ``TriNet``: mean after the classifier); B rows, labels y. The
    teacher's counterpart of a set is the mean of the same M frames' features
    (the clip feature when M = T). With M = 1 both levels are the same.

TCL at ``teacher_level='clip'`` compares each student row with *tracklets*:
candidates are one per tracklet (teacher: clip feature v_j; student: the mean
of its M image features), and the anchor's own tracklet is excluded, so no two
candidates are copies of one clip feature (copies tie in the mining).

Mining scope. Anchors are always this device's rows; candidates are
``gather(rows)``: the identity for ``mining_scope='local'``, an all-gather over
the mesh axis for ``'global'`` (then ``offset`` is this device's first global
tracklet, so an anchor is never its own positive).
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Tuple

import jax.numpy as jnp
import ml_collections

from i2v_jax.losses.distill import (distance_matrix_mse, feature_mse, logit_kl,
                                    squared_distance_mse)
from i2v_jax.losses.identity import cross_entropy
from i2v_jax.losses.tcl import triplet_contrast
from i2v_jax.losses.triplet import batch_hard_triplet

Gather = Callable[[jnp.ndarray], jnp.ndarray]
Outputs = Optional[Dict[str, jnp.ndarray]]
STUDENT_LEVELS = ('frame', 'set')
TEACHER_LEVELS = ('frame', 'clip')


def set_outputs(student: Dict[str, jnp.ndarray], b: int) -> Dict[str, jnp.ndarray]:
  """Student outputs for B·M images -> B set outputs (mean over each sample's M)."""
  return {k: v.reshape((b, -1) + v.shape[1:]).mean(axis=1) for k, v in student.items()}


def term_weights(loss: ml_collections.ConfigDict) -> Dict[str, float]:
  """Name -> weight of every term; the names are the logged keys."""
  return {
      'id/teacher': loss.id.teacher,
      'id/student': loss.id.student,
      'triplet/teacher': loss.triplet.teacher,
      'triplet/student': loss.triplet.student,
      'triplet/student_to_teacher': loss.triplet.student_to_teacher,
      'triplet/teacher_to_student': loss.triplet.teacher_to_student,
      'tcl': loss.tcl.weight,
      'mutual/student_from_teacher': loss.mutual.student_from_teacher,
      'mutual/teacher_from_student': loss.mutual.teacher_from_student,
      'mutual/reverse_tcl': loss.mutual.reverse_tcl,
      'tkp/feature': loss.tkp.feature,
      'tkp/distance': loss.tkp.distance,
      'vkd/logits': loss.vkd.logits,
      'vkd/distance': loss.vkd.distance,
  }


def active_terms(loss: ml_collections.ConfigDict, networks) -> Dict[str, float]:
  """Terms with a non-zero weight whose networks exist in this run.

  Raises:
    ValueError naming the config key when a weighted term needs a missing network.
  """
  weights = {k: w for k, w in term_weights(loss).items() if w}
  for name in weights:
    needs = {'teacher', 'student'}
    if name.endswith('/teacher'):
      needs = {'teacher'}
    elif name.endswith('/student'):
      needs = {'student'}
    missing = needs - set(networks)
    if missing:
      raise ValueError(
          f'config loss term {name!r} has weight {weights[name]} but the run has '
          f'no {missing.pop()} network (config.networks={tuple(networks)}); set '
          f'its weight to 0 or add the network.')
  return weights


def objective(teacher: Outputs, student: Outputs, labels: jnp.ndarray,
              loss: ml_collections.ConfigDict, networks=('teacher', 'student'), *,
              gather: Gather = lambda x: x, offset: Any = 0
              ) -> Tuple[jnp.ndarray, Dict[str, jnp.ndarray]]:
  """Weighted training loss and every term, unweighted, for logging.

  Args:
    teacher: TeacherNet outputs for B clips (``features`` (B, D),
      ``frame_features`` (B, T, D), ``logits`` (B, C)), or None.
    student: StudentNet outputs for B·M images (row b·M + m = frame m of clip
      b), or None.
    labels: (B,) int identity labels of the tracklets.
    loss: ``config.loss``.
    networks: which networks the run has (``config.networks``).
    gather: local rows -> candidate rows (identity or all-gather over devices).
    offset: global index of this device's first tracklet (0 for local mining).

  Returns:
    (total, metrics) with ``loss/<term>`` for every active term and
    ``diag/<term>/<name>`` diagnostics.
  """
  weights = active_terms(loss, networks)
  level = loss.student_level
  if level not in STUDENT_LEVELS:
    raise ValueError(f'config loss.student_level={level!r}: choose one of {STUDENT_LEVELS}')
  if loss.tcl.teacher_level not in TEACHER_LEVELS:
    raise ValueError(f'config loss.tcl.teacher_level={loss.tcl.teacher_level!r}: '
                     f'choose one of {TEACHER_LEVELS}')
  b = labels.shape[0]
  m_images = student['features'].shape[0] // b if student is not None else 1
  m = 1 if level == 'set' else m_images   # student rows per tracklet
  labels_s = jnp.repeat(labels, m)
  index_t = offset + jnp.arange(b)
  index_s = offset * m + jnp.arange(b * m)
  terms: Dict[str, Tuple[jnp.ndarray, Dict[str, jnp.ndarray]]] = {}

  def want(name):
    return name in weights

  if student is not None:
    s_images = student['features']
    if level == 'set':
      student = set_outputs(student, b)
    s_feat, s_logits = student['features'], student['logits']
  if teacher is not None:
    t_feat, t_logits = teacher['features'], teacher['logits']
    t_seen = teacher['frame_features'][:, :m_images]  # the frames the student saw
    t_frames = (t_seen.mean(axis=1) if level == 'set'
                else t_seen.reshape(b * m, -1))
    t_clip_rep = jnp.repeat(t_feat, m, axis=0)
    t_logits_rep = jnp.repeat(t_logits, m, axis=0)

  triplet_kw = dict(margin=loss.triplet.margin, soft_margin=loss.triplet.soft_margin,
                    distance=loss.triplet.distance)
  if want('id/teacher'):
    terms['id/teacher'] = cross_entropy(t_logits, labels, loss.id.label_smoothing)
  if want('id/student'):
    terms['id/student'] = cross_entropy(s_logits, labels_s, loss.id.label_smoothing)
  if want('triplet/teacher'):
    terms['triplet/teacher'] = batch_hard_triplet(
        t_feat, labels, gather(t_feat), gather(labels),
        anchor_index=index_t, cand_index=gather(index_t), **triplet_kw)
  if want('triplet/student'):
    terms['triplet/student'] = batch_hard_triplet(
        s_feat, labels_s, gather(s_feat), gather(labels_s),
        anchor_index=index_s, cand_index=gather(index_s), **triplet_kw)
  if want('triplet/student_to_teacher'):
    terms['triplet/student_to_teacher'] = batch_hard_triplet(
        s_feat, labels_s, gather(t_feat), gather(labels), **triplet_kw)
  if want('triplet/teacher_to_student'):
    terms['triplet/teacher_to_student'] = batch_hard_triplet(
        t_feat, labels, gather(s_feat), gather(labels_s), **triplet_kw)

  if want('tcl') or want('mutual/reverse_tcl'):
    if loss.tcl.teacher_level == 'frame':
      tcl_args = (s_feat, gather(s_feat), t_frames, gather(t_frames), labels_s,
                  gather(labels_s))
      indices = dict(anchor_index=index_s, cand_index=gather(index_s))
    else:  # candidates are tracklets: clip features and student set means
      s_sets = s_images.reshape(b, m_images, -1).mean(axis=1)
      tcl_args = (s_feat, gather(s_sets), t_clip_rep, gather(t_feat), labels_s,
                  gather(labels))
      indices = dict(anchor_index=jnp.repeat(index_t, m), cand_index=gather(index_t))
    tcl_kw = dict(temperature=loss.tcl.temperature,
                  num_negatives=loss.tcl.num_negatives, mine_on=loss.tcl.mine_on,
                  distance=loss.tcl.distance, distance_scale=loss.tcl.distance_scale,
                  **indices)
    if want('tcl'):
      terms['tcl'] = triplet_contrast(*tcl_args, direction='teacher_to_student',
                                      cross=loss.tcl.cross_network, **tcl_kw)
    if want('mutual/reverse_tcl'):
      terms['mutual/reverse_tcl'] = triplet_contrast(
          *tcl_args, direction='student_to_teacher', **tcl_kw)

  tau_m = loss.mutual.temperature
  if want('mutual/student_from_teacher'):
    terms['mutual/student_from_teacher'] = logit_kl(t_logits_rep, s_logits, tau_m)
  if want('mutual/teacher_from_student'):
    terms['mutual/teacher_from_student'] = logit_kl(s_logits, t_logits_rep, tau_m)
  if want('tkp/feature'):
    terms['tkp/feature'] = feature_mse(s_feat, t_frames)
  if want('tkp/distance'):
    terms['tkp/distance'] = distance_matrix_mse(
        s_feat, gather(s_feat), t_frames, gather(t_frames),
        anchor_index=index_s, cand_index=gather(index_s))
  if want('vkd/logits'):
    terms['vkd/logits'] = logit_kl(t_logits_rep, s_logits, loss.vkd.temperature)
  if want('vkd/distance'):
    terms['vkd/distance'] = squared_distance_mse(
        s_feat, gather(s_feat), t_clip_rep, gather(t_clip_rep),
        anchor_index=index_s, cand_index=gather(index_s))

  total = sum(weights[name] * value for name, (value, _) in terms.items())
  metrics = {f'loss/{name}': value for name, (value, _) in terms.items()}
  for name, (_, aux) in terms.items():
    metrics.update({f'diag/{name}/{k}': v for k, v in aux.items()})
  return jnp.asarray(total, jnp.float32), metrics
