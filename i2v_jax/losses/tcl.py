"""Triplet contrast loss (TCL): the teacher's local triplet structure, as probabilities."""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import jax
import jax.numpy as jnp

from i2v_jax.distances import pairwise_distance
from i2v_jax.losses.masks import pair_masks, same_sample
from i2v_jax.losses.triplet import masked_mean

# Finite stand-in for −∞ in masked softmaxes: exp underflows to exactly 0 and no
# inf − inf can appear in the forward or backward pass.
_MASKED = -1e9
# A softmax whose largest probability is within this of 1 is one-hot in float32:
# against a one-hot target on the same entry its KL and gradient are exactly 0.
_SATURATED = 1e-6
DISTANCE_SCALES = ('none', 'mean')
MINE_ON = ('teacher', 'student')  # the network whose space mines each anchor's triplet
# The config switches whose choices this module owns (`config_lib.choices` reads them).
CONFIG_CHOICES = {'loss.tcl.mine_on': MINE_ON, 'loss.tcl.distance_scale': DISTANCE_SCALES}


def _selection(d_mine: jnp.ndarray, positive: jnp.ndarray, negative: jnp.ndarray,
               num_negatives: int, neighbours: int = 0) -> jnp.ndarray:
  """(N, M) bool: the candidates that enter each anchor's softmax."""
  m = d_mine.shape[1]
  if neighbours:  # the anchor's k nearest candidates, whatever their identity
    eligible = positive | negative
    _, nearest = jax.lax.top_k(jnp.where(eligible, -d_mine, -jnp.inf), min(neighbours, m))
    return jnp.any(jax.nn.one_hot(nearest, m, dtype=bool), axis=1) & eligible
  if num_negatives == 1:
    p = jnp.argmax(jnp.where(positive, d_mine, -jnp.inf), axis=1)
    n = jnp.argmin(jnp.where(negative, d_mine, jnp.inf), axis=1)
    return (jax.nn.one_hot(p, m, dtype=bool) | jax.nn.one_hot(n, m, dtype=bool))
  k = min(num_negatives, m)
  _, nearest = jax.lax.top_k(jnp.where(negative, -d_mine, -jnp.inf), k)
  chosen = jnp.any(jax.nn.one_hot(nearest, m, dtype=bool), axis=1) & negative
  return positive | chosen


def _scaled(d: jnp.ndarray, pairs: jnp.ndarray, mode: str) -> jnp.ndarray:
  """``mode='mean'``: d / (mean of d over ``pairs``), so the softmax sees unit-scale
  distances whatever the feature norm; 'none': d unchanged."""
  if mode == 'none':
    return d
  return d / jnp.maximum(masked_mean(d, pairs), 1e-12)


def triplet_contrast(student_anchors: jnp.ndarray, student_cands: jnp.ndarray,
                     teacher_anchors: jnp.ndarray, teacher_cands: jnp.ndarray,
                     anchor_labels: jnp.ndarray, cand_labels: jnp.ndarray, *,
                     anchor_index: Optional[jnp.ndarray] = None,
                     cand_index: Optional[jnp.ndarray] = None,
                     temperature: float = 0.1, teacher_temperature: float = 0.0,
                     num_negatives: int = 1, neighbours: int = 0,
                     mine_on: str = 'teacher', distance: str = 'cosine',
                     distance_scale: str = 'none', cross: bool = False,
                     direction: str = 'teacher_to_student'
                     ) -> Tuple[jnp.ndarray, Dict[str, jnp.ndarray]]:
  """Triplet contrast loss (docs/method.md §4.3).

  For anchor k mine the hardest positive p_k and hardest negative n_k by the
  distances of the mining network (``mine_on``; selection carries no gradient).
  In each network X ∈ {T, S}, with d_X computed inside X's own feature space,

      π^X_k = softmax(−[d_X(k, p_k), d_X(k, n_k)] / (τ_X · c_X))
      L_TCL = mean_k KL(stop_grad(π^T_k) ‖ π^S_k)        direction='teacher_to_student'
      L_rev = mean_k KL(stop_grad(π^S_k) ‖ π^T_k)        direction='student_to_teacher'

  τ_S = ``temperature``; τ_T = ``teacher_temperature`` (0: τ_S). τ_T < τ_S makes
  the teacher's distribution sharper than the student's: the "contrast" reading
  of the paper's "triplet contrast loss", where the target stresses which of the
  two candidates the teacher ranks nearer rather than by how much.

  ``neighbours = k > 0`` (neighbourhood TCL, the reading of "the local structure
  consisting of nearest neighbors for each example"): the softmax runs over the
  anchor's k nearest candidates by the mining network's distance, whatever
  their identity (labels choose nothing; the anchor itself never enters), so
  the student learns the teacher's distribution over its neighbourhood. Every
  anchor with at least one other candidate is valid; ``num_negatives`` is unused.

  c_X = 1 (``distance_scale='none'``) or the mean of d_X over all of the batch's
  positive and negative pairs (``'mean'``): then the loss is invariant to the
  scale of either network's features for any distance, and Euclidean distances
  of ResNet-scale features (tens) no longer make both softmaxes one-hot, which
  would make the loss and its gradient exactly 0 (diagnostic ``saturated``).

  ``cross=True`` (cross-network TCL): the student's distances are measured from
  the student anchor to the *teacher's* candidates, d_S(k, j) = d(s_k, sg(t_j)),
  so matching π^T ties the student's features to the teacher's space (both must
  have the same width). Mining is unchanged.

  ``num_negatives = k > 1`` puts all positives and the k nearest negatives of
  the anchor in one softmax instead of the hardest pair. With cosine distance
  the loss is invariant to rescaling either network's features.

  Row i of ``*_anchors`` and column j of ``*_cands`` describe the same sample
  in both networks. Candidates must be distinct samples: for a clip-level
  teacher the caller passes one candidate per tracklet (`objective`), never
  the clip feature repeated per frame (repeated rows tie, and the tie-break
  would pick which copy enters the softmax). An anchor with no positive or no
  negative contributes nothing; if no anchor qualifies the loss is 0.

  Args:
    student_anchors (N, Ds), student_cands (M, Ds), teacher_anchors (N, Dt),
    teacher_cands (M, Dt), anchor_labels (N,), cand_labels (M,);
    anchor_index (N,) / cand_index (M,): sample ids, equal ids = same sample
    (excluded from the positives, distance 0).

  Returns:
    (loss, {'teacher_p_pos', 'student_p_pos': mean softmax mass on positives,
    'valid': fraction of anchors used, 'saturated': fraction of valid anchors
    whose learner softmax is one-hot to float32 precision}).
  """
  if mine_on not in MINE_ON:
    raise ValueError(f'loss.tcl.mine_on={mine_on!r}: choose one of {MINE_ON}')
  if direction not in ('teacher_to_student', 'student_to_teacher'):
    raise ValueError(f'unknown TCL direction {direction!r}')
  if num_negatives < 1:
    raise ValueError(f'loss.tcl.num_negatives={num_negatives}: must be >= 1')
  if neighbours < 0 or teacher_temperature < 0:
    raise ValueError(f'loss.tcl.neighbours={neighbours}, loss.tcl.teacher_temperature='
                     f'{teacher_temperature}: must be >= 0 (0 = off)')
  if distance_scale not in DISTANCE_SCALES:
    raise ValueError(f'loss.tcl.distance_scale={distance_scale!r}: choose one of '
                     f'{DISTANCE_SCALES}')
  same = same_sample(anchor_index, cand_index)
  d_t = pairwise_distance(teacher_anchors, teacher_cands, distance, same)
  if cross:
    if student_anchors.shape[-1] != teacher_cands.shape[-1]:
      raise ValueError(f'loss.tcl.cross_network: student width {student_anchors.shape[-1]} '
                       f'!= teacher width {teacher_cands.shape[-1]}')
    d_s = pairwise_distance(student_anchors, jax.lax.stop_gradient(teacher_cands), distance)
  else:
    d_s = pairwise_distance(student_anchors, student_cands, distance, same)
  positive, negative = pair_masks(anchor_labels, cand_labels, anchor_index, cand_index)
  d_mine = jax.lax.stop_gradient(d_t if mine_on == 'teacher' else d_s)
  pairs = positive | negative
  valid = pairs.any(1) if neighbours else positive.any(1) & negative.any(1)
  select = _selection(d_mine, positive, negative, num_negatives, neighbours) & valid[:, None]

  def log_probs(d, tau):
    d = _scaled(d, pairs, distance_scale)
    return jax.nn.log_softmax(jnp.where(select, -d / tau, _MASKED), axis=1)

  log_pi_t = log_probs(d_t, teacher_temperature or temperature)
  log_pi_s = log_probs(d_s, temperature)
  if direction == 'teacher_to_student':
    target, prediction = jax.lax.stop_gradient(log_pi_t), log_pi_s
  else:
    target, prediction = jax.lax.stop_gradient(log_pi_s), log_pi_t
  kl = jnp.sum(jnp.where(select, jnp.exp(target) * (target - prediction), 0.0), axis=1)
  mass_on_positives = lambda lp: masked_mean(
      jnp.sum(jnp.where(select & positive, jnp.exp(lp), 0.0), axis=1), valid)
  saturated = jnp.max(jnp.exp(prediction), axis=1) >= 1.0 - _SATURATED
  return masked_mean(kl, valid), {
      'teacher_p_pos': mass_on_positives(log_pi_t),
      'student_p_pos': mass_on_positives(log_pi_s),
      'valid': jnp.mean(valid.astype(jnp.float32)),
      'saturated': masked_mean(saturated.astype(jnp.float32), valid),
  }
