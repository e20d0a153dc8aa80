"""Knowledge-transfer terms on logits and features: mutual learning, TKP, VKD.

Every term moves the *prediction* towards a stop-gradient *target*; which network
is which is the caller's choice, so the same function gives the one-way KD term
and its reverse in mutual learning.
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import jax
import jax.numpy as jnp

from i2v_jax.distances import pairwise_distance, squared_euclidean
from i2v_jax.losses.masks import same_sample

Aux = Dict[str, jnp.ndarray]


def logit_kl(target_logits: jnp.ndarray, pred_logits: jnp.ndarray,
             temperature: float) -> Tuple[jnp.ndarray, Aux]:
  """Temperature-scaled KL from a stop-gradient target distribution.

      L = τ² · mean_i KL(stop_grad(σ(z^tgt_i / τ)) ‖ σ(z^pred_i / τ))

  Mutual learning (docs/method.md §4.4) is this term in both directions; VKD's logit
  distillation is the teacher -> student direction with τ = 10.

  Args:
    target_logits, pred_logits: (N, C), row-aligned.
  """
  target = jax.lax.stop_gradient(
      jax.nn.log_softmax(target_logits.astype(jnp.float32) / temperature))
  pred = jax.nn.log_softmax(pred_logits.astype(jnp.float32) / temperature)
  kl = jnp.sum(jnp.exp(target) * (target - pred), axis=-1)
  agree = jnp.mean(jnp.argmax(target, -1) == jnp.argmax(pred, -1))
  return temperature ** 2 * jnp.mean(kl), {'agreement': agree}


def feature_mse(student: jnp.ndarray, teacher: jnp.ndarray) -> Tuple[jnp.ndarray, Aux]:
  """TKP's feature term: L = mean_k ‖s_k − stop_grad(t_k)‖².

  Args: student, teacher: (N, D), row k of both is the same frame.
  """
  teacher = jax.lax.stop_gradient(teacher.astype(jnp.float32))
  diff = student.astype(jnp.float32) - teacher
  return jnp.mean(jnp.sum(diff * diff, axis=-1)), {}


def distance_matrix_mse(student_anchors: jnp.ndarray, student_cands: jnp.ndarray,
                        teacher_anchors: jnp.ndarray, teacher_cands: jnp.ndarray, *,
                        anchor_index: Optional[jnp.ndarray] = None,
                        cand_index: Optional[jnp.ndarray] = None
                        ) -> Tuple[jnp.ndarray, Aux]:
  """TKP's distance term on Euclidean distances between frames.

      L = mean_{k,l} (D^S_kl − stop_grad(D^T_kl))²,  D_kl = ‖x_k − x_l‖

  k runs over anchors, l over candidates (the same rows, or all devices' rows
  under global mining); row k of the student and teacher arrays is one frame.

  Args: student_anchors (N, Ds), student_cands (M, Ds), teacher_anchors (N, Dt),
    teacher_cands (M, Dt); anchor_index (N,) / cand_index (M,): sample ids, a
    pair with equal ids is one sample (distance exactly 0 in both networks).
  """
  same = same_sample(anchor_index, cand_index)
  d_s = pairwise_distance(student_anchors, student_cands, 'euclidean', same)
  d_t = jax.lax.stop_gradient(
      pairwise_distance(teacher_anchors, teacher_cands, 'euclidean', same))
  return jnp.mean((d_s - d_t) ** 2), {}


def squared_distance_mse(student_anchors: jnp.ndarray, student_cands: jnp.ndarray,
                         teacher_anchors: jnp.ndarray, teacher_cands: jnp.ndarray, *,
                         anchor_index: Optional[jnp.ndarray] = None,
                         cand_index: Optional[jnp.ndarray] = None
                         ) -> Tuple[jnp.ndarray, Aux]:
  """VKD's pairwise-distance term on squared Euclidean distances.

      L = ½ · mean_{k,l} (D²^S_kl − stop_grad(D²^T_kl))²,  D²_kl = ‖x_k − x_l‖²

  (VKD ``SimilarityDistillationLoss('l2')``; its weight 1e-4 matches the large
  scale of squared distances of un-normalised 2048-d features.) VKD computes it
  on one row per sample: the student's set embedding against the teacher's
  clip embedding (``loss.student_level='set'``). Arguments as
  `distance_matrix_mse`.
  """
  f32 = lambda x: x.astype(jnp.float32)
  same = same_sample(anchor_index, cand_index)
  d_s = squared_euclidean(f32(student_anchors), f32(student_cands), same)
  d_t = jax.lax.stop_gradient(
      squared_euclidean(f32(teacher_anchors), f32(teacher_cands), same))
  return 0.5 * jnp.mean((d_s - d_t) ** 2), {}
