"""The training objective: Σ weight × term over the docs/method.md §4 terms named in config.

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

TCL on the BN-neck features (``loss.tcl.feature='bn_features'``) exists at clip
level only: the teacher's BN-neck normalises clip features, not frames.

TCL at ``teacher_level='clip'`` compares each student row with *tracklets*:
candidates are one per tracklet (teacher: clip feature v_j; student: the mean
of its M image features), and the anchor's own tracklet is excluded, so no two
candidates are copies of one clip feature (copies tie in the mining).

Other networks. Every network's outputs arrive by name (the run's networks
table, `i2v_jax.networks`); the fields above read 'teacher' and 'student'. Any
other image network (an EMA "mean teacher" of the student) is aligned like the
student, row for row (``others[name]``: ``features``, ``logits``,
``bn_features``), so a term can read it beside them.

Mining scope. Anchors are always this device's rows; candidates are
``gather(rows)``: the identity for ``mining_scope='local'``, an all-gather over
the mesh axis for ``'global'`` (then ``offset`` is this device's first global
tracklet, so an anchor is never its own positive).
"""

from __future__ import annotations

import dataclasses
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
TCL_FEATURES = ('features', 'bn_features')  # TCL on the embeddings or after the BN-neck
# The config switches whose choices this module owns (`config_lib.choices` reads them).
CONFIG_CHOICES = {'loss.student_level': STUDENT_LEVELS, 'loss.tcl.teacher_level': TEACHER_LEVELS,
                  'loss.tcl.feature': TCL_FEATURES}


def set_outputs(student: Dict[str, jnp.ndarray], b: int) -> Dict[str, jnp.ndarray]:
  """Student outputs for B·M images -> B set outputs (mean over each sample's M)."""
  return {k: v.reshape((b, -1) + v.shape[1:]).mean(axis=1) for k, v in student.items()}


@dataclasses.dataclass(frozen=True)
class Aligned:
  """The batch's quantities, aligned row for row as the module docstring says.

  Teacher fields are None without a teacher, student fields without a student;
  ``others`` holds every other image network's rows, by name.
  """
  labels: jnp.ndarray                 # (B,) tracklet labels
  labels_s: jnp.ndarray               # (B·m,) labels of the student rows
  index_t: jnp.ndarray                # (B,) global tracklet ids
  index_s: jnp.ndarray                # (B·m,) global student-row ids
  gather: Gather
  m: int                              # student rows per tracklet (1 at set level)
  m_images: int                       # student images per tracklet (M)
  t_feat: Optional[jnp.ndarray] = None       # (B, D) clip features
  t_logits: Optional[jnp.ndarray] = None     # (B, C)
  t_frames: Optional[jnp.ndarray] = None     # (B·m, D) teacher counterpart of each row
  t_clip_rep: Optional[jnp.ndarray] = None   # (B·m, D) clip feature per row
  t_logits_rep: Optional[jnp.ndarray] = None  # (B·m, C)
  s_feat: Optional[jnp.ndarray] = None       # (B·m, D) student rows
  s_logits: Optional[jnp.ndarray] = None     # (B·m, C)
  s_images: Optional[jnp.ndarray] = None     # (B·M, D) per-image student features
  t_bn: Optional[jnp.ndarray] = None         # (B, D) teacher clip BN-neck features
  t_bn_rep: Optional[jnp.ndarray] = None     # (B·m, D) the same per row
  s_bn: Optional[jnp.ndarray] = None         # (B·m, D) student rows after the BN-neck
  s_bn_images: Optional[jnp.ndarray] = None  # (B·M, D) per image after the BN-neck
  others: Dict[str, Dict[str, jnp.ndarray]] = dataclasses.field(default_factory=dict)


Compute = Callable[[Aligned, ml_collections.ConfigDict], Tuple[jnp.ndarray, Dict[str, jnp.ndarray]]]


@dataclasses.dataclass(frozen=True)
class Term:
  """One entry of `TERMS`: ``weight`` is its path under ``config.loss``,
  ``needs`` the networks it reads, ``compute`` (aligned batch, config.loss) ->
  (value, diagnostics)."""
  weight: str
  needs: Tuple[str, ...]
  compute: Compute


def _triplet_kw(loss):
  return dict(margin=loss.triplet.margin, soft_margin=loss.triplet.soft_margin,
              distance=loss.triplet.distance)


def _intra_triplet(feat, labels, index):
  def compute(a: Aligned, loss):
    f, y, i = getattr(a, feat), getattr(a, labels), getattr(a, index)
    return batch_hard_triplet(f, y, a.gather(f), a.gather(y), anchor_index=i,
                              cand_index=a.gather(i), **_triplet_kw(loss))
  return compute


def _tcl(direction: str):
  """TCL (direction teacher_to_student) or reverse TCL, at frame or clip level,
  on the features before the BN-neck or (clip level only) after it."""
  def compute(a: Aligned, loss):
    tcl = loss.tcl
    if tcl.teacher_level == 'frame':
      args = (a.s_feat, a.gather(a.s_feat), a.t_frames, a.gather(a.t_frames),
              a.labels_s, a.gather(a.labels_s))
      indices = dict(anchor_index=a.index_s, cand_index=a.gather(a.index_s))
    else:  # candidates are tracklets: clip features and student set means
      bn = tcl.feature == 'bn_features'
      s_rows, s_images = (a.s_bn, a.s_bn_images) if bn else (a.s_feat, a.s_images)
      t_clip, t_rep = (a.t_bn, a.t_bn_rep) if bn else (a.t_feat, a.t_clip_rep)
      b = a.labels.shape[0]
      s_sets = s_images.reshape(b, a.m_images, -1).mean(axis=1)
      args = (s_rows, a.gather(s_sets), t_rep, a.gather(t_clip),
              a.labels_s, a.gather(a.labels))
      indices = dict(anchor_index=jnp.repeat(a.index_t, a.m),
                     cand_index=a.gather(a.index_t))
    return triplet_contrast(
        *args, direction=direction, temperature=tcl.temperature,
        teacher_temperature=tcl.teacher_temperature, num_negatives=tcl.num_negatives,
        neighbours=tcl.neighbours, mine_on=tcl.mine_on, distance=tcl.distance,
        distance_scale=tcl.distance_scale,
        cross=tcl.cross_network and direction == 'teacher_to_student', **indices)
  return compute


def _tcl_from(network: str):
  """TCL from another image network's rows (its features as the teacher side),
  at the student's rows, with the ``loss.tcl`` settings but teacher level."""
  def compute(a: Aligned, loss):
    tcl, t = loss.tcl, a.others[network]['features']
    return triplet_contrast(
        a.s_feat, a.gather(a.s_feat), t, a.gather(t), a.labels_s, a.gather(a.labels_s),
        direction='teacher_to_student', temperature=tcl.temperature,
        teacher_temperature=tcl.teacher_temperature, num_negatives=tcl.num_negatives,
        neighbours=tcl.neighbours, mine_on=tcl.mine_on, distance=tcl.distance,
        distance_scale=tcl.distance_scale, anchor_index=a.index_s,
        cand_index=a.gather(a.index_s))
  return compute


# The one table of loss terms: name (the logged key) -> Term. A new term is one
# entry here and its weight in the library defaults (`i2v_jax.defaults`).
TERMS: Dict[str, Term] = {
    'id/teacher': Term('id.teacher', ('teacher',), lambda a, l: cross_entropy(
        a.t_logits, a.labels, l.id.label_smoothing)),
    'id/student': Term('id.student', ('student',), lambda a, l: cross_entropy(
        a.s_logits, a.labels_s, l.id.label_smoothing)),
    'triplet/teacher': Term('triplet.teacher', ('teacher',),
                            _intra_triplet('t_feat', 'labels', 'index_t')),
    'triplet/student': Term('triplet.student', ('student',),
                            _intra_triplet('s_feat', 'labels_s', 'index_s')),
    'triplet/student_to_teacher': Term(
        'triplet.student_to_teacher', ('teacher', 'student'),
        lambda a, l: batch_hard_triplet(a.s_feat, a.labels_s, a.gather(a.t_feat),
                                        a.gather(a.labels), **_triplet_kw(l))),
    'triplet/teacher_to_student': Term(
        'triplet.teacher_to_student', ('teacher', 'student'),
        lambda a, l: batch_hard_triplet(a.t_feat, a.labels, a.gather(a.s_feat),
                                        a.gather(a.labels_s), **_triplet_kw(l))),
    'tcl': Term('tcl.weight', ('teacher', 'student'), _tcl('teacher_to_student')),
    'tcl/reverse': Term('tcl.reverse', ('teacher', 'student'), _tcl('student_to_teacher')),
    'mutual/student_from_teacher': Term(
        'mutual.student_from_teacher', ('teacher', 'student'),
        lambda a, l: logit_kl(a.t_logits_rep, a.s_logits, l.mutual.temperature)),
    'mutual/teacher_from_student': Term(
        'mutual.teacher_from_student', ('teacher', 'student'),
        lambda a, l: logit_kl(a.s_logits, a.t_logits_rep, l.mutual.temperature)),
    'tkp/feature': Term('tkp.feature', ('teacher', 'student'),
                        lambda a, l: feature_mse(a.s_feat, a.t_frames)),
    'tkp/distance': Term('tkp.distance', ('teacher', 'student'),
                         lambda a, l: distance_matrix_mse(
                             a.s_feat, a.gather(a.s_feat), a.t_frames, a.gather(a.t_frames),
                             anchor_index=a.index_s, cand_index=a.gather(a.index_s))),
    'vkd/logits': Term('vkd.logits', ('teacher', 'student'),
                       lambda a, l: logit_kl(a.t_logits_rep, a.s_logits, l.vkd.temperature)),
    'vkd/distance': Term('vkd.distance', ('teacher', 'student'),
                         lambda a, l: squared_distance_mse(
                             a.s_feat, a.gather(a.s_feat), a.t_clip_rep,
                             a.gather(a.t_clip_rep), anchor_index=a.index_s,
                             cand_index=a.gather(a.index_s))),
    # Mean teacher: the student learns from its own exponential moving average.
    'mean_teacher/logits': Term(
        'mean_teacher.logits', ('student', 'student_ema'),
        lambda a, l: logit_kl(a.others['student_ema']['logits'], a.s_logits,
                              l.mean_teacher.temperature)),
    'mean_teacher/tcl': Term('mean_teacher.tcl', ('student', 'student_ema'),
                             _tcl_from('student_ema')),
}


def _weight(loss: ml_collections.ConfigDict, path: str) -> float:
  node = loss
  for key in path.split('.'):
    node = node[key]
  return node


def term_weights(loss: ml_collections.ConfigDict) -> Dict[str, float]:
  """Name -> weight of every term in `TERMS`; the names are the logged keys."""
  return {name: _weight(loss, term.weight) for name, term in TERMS.items()}


def active_terms(loss: ml_collections.ConfigDict, networks) -> Dict[str, float]:
  """Terms with a non-zero weight whose networks exist in this run.

  Raises:
    ValueError naming the config key when a weighted term needs a missing network.
  """
  weights = {k: w for k, w in term_weights(loss).items() if w}
  for name in weights:
    missing = set(TERMS[name].needs) - set(networks)
    if missing:
      raise ValueError(
          f'config loss term {name!r} (loss.{TERMS[name].weight}) has weight '
          f'{weights[name]} but the run has no {sorted(missing)[0]} network '
          f'(config.networks={tuple(networks)}); set its weight to 0 or add the network.')
  return weights


def align(outputs: Dict[str, Dict[str, jnp.ndarray]], labels: jnp.ndarray,
          loss: ml_collections.ConfigDict, *, gather: Gather = lambda x: x,
          offset: Any = 0) -> Aligned:
  """The networks' outputs (by name) as the rows every term reads (module docstring)."""
  level = loss.student_level
  if level not in STUDENT_LEVELS:
    raise ValueError(f'config loss.student_level={level!r}: choose one of {STUDENT_LEVELS}')
  if loss.tcl.teacher_level not in TEACHER_LEVELS:
    raise ValueError(f'config loss.tcl.teacher_level={loss.tcl.teacher_level!r}: '
                     f'choose one of {TEACHER_LEVELS}')
  if loss.tcl.feature == 'bn_features' and loss.tcl.teacher_level != 'clip':
    raise ValueError("config loss.tcl.feature='bn_features' needs loss.tcl.teacher_level="
                     "'clip' (the teacher's BN-neck normalises clip features only)")
  teacher, student = outputs.get('teacher'), outputs.get('student')
  b = labels.shape[0]
  m_images = student['features'].shape[0] // b if student is not None else 1
  m = 1 if level == 'set' else m_images   # student rows per tracklet
  fields = dict(labels=labels, labels_s=jnp.repeat(labels, m),
                index_t=offset + jnp.arange(b), index_s=offset * m + jnp.arange(b * m),
                gather=gather, m=m, m_images=m_images)
  if student is not None:
    fields.update(s_images=student['features'], s_bn_images=student.get('bn_features'))
    if level == 'set':
      student = set_outputs(student, b)
    fields.update(s_feat=student['features'], s_logits=student['logits'],
                  s_bn=student.get('bn_features'))
  if teacher is not None:
    t_seen = teacher['frame_features'][:, :m_images]  # the frames the student saw
    fields.update(
        t_feat=teacher['features'], t_logits=teacher['logits'],
        t_bn=teacher.get('bn_features'),
        t_bn_rep=(None if teacher.get('bn_features') is None
                  else jnp.repeat(teacher['bn_features'], m, axis=0)),
        t_frames=t_seen.mean(axis=1) if level == 'set' else t_seen.reshape(b * m, -1),
        t_clip_rep=jnp.repeat(teacher['features'], m, axis=0),
        t_logits_rep=jnp.repeat(teacher['logits'], m, axis=0))
  others = {}
  for name, out in outputs.items():
    if name in ('teacher', 'student'):
      continue
    if 'frame_features' in out:
      raise ValueError(f'network {name}: a video network other than the teacher has no '
                       'row alignment yet (losses/objective.py align)')
    rows = set_outputs(out, b) if level == 'set' else out
    others[name] = {k: rows.get(k) for k in ('features', 'logits', 'bn_features')}
  return Aligned(**fields, others=others)


def objective(outputs: Dict[str, Dict[str, jnp.ndarray]], labels: jnp.ndarray,
              loss: ml_collections.ConfigDict, networks=None, *,
              gather: Gather = lambda x: x, offset: Any = 0
              ) -> Tuple[jnp.ndarray, Dict[str, jnp.ndarray]]:
  """Weighted training loss and every term, unweighted, for logging.

  Args:
    outputs: each network's outputs by name: 'teacher' (TeacherNet for B clips:
      ``features`` (B, D), ``frame_features`` (B, T, D), ``logits`` (B, C)),
      'student' (StudentNet for B·M images, row b·M + m = frame m of clip b) and
      any other image network (as the student). A run without one omits it.
    labels: (B,) int identity labels of the tracklets.
    loss: ``config.loss``.
    networks: which networks the run has (default: the names in ``outputs``).
    gather: local rows -> candidate rows (identity or all-gather over devices).
    offset: global index of this device's first tracklet (0 for local mining).

  Returns:
    (total, metrics) with ``loss/<term>`` for every active term and
    ``diag/<term>/<name>`` diagnostics.
  """
  weights = active_terms(loss, tuple(outputs) if networks is None else networks)
  aligned = align(outputs, labels, loss, gather=gather, offset=offset)
  terms = {name: TERMS[name].compute(aligned, loss) for name in weights}
  total = sum(weights[name] * value for name, (value, _) in terms.items())
  metrics = {f'loss/{name}': value for name, (value, _) in terms.items()}
  for name, (_, aux) in terms.items():
    metrics.update({f'diag/{name}/{k}': v for k, v in aux.items()})
  return jnp.asarray(total, jnp.float32), metrics
