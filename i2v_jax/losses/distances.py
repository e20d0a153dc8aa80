"""Pairwise distances and the positive/negative masks every mining loss shares."""

from __future__ import annotations

from typing import Optional, Tuple

import jax.numpy as jnp

METRICS = ('cosine', 'euclidean')


def l2_normalize(x: jnp.ndarray, eps: float = 1e-12) -> jnp.ndarray:
  return x / jnp.sqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), eps))


def squared_euclidean(a: jnp.ndarray, b: jnp.ndarray) -> jnp.ndarray:
  """‖a_i − b_j‖², (N, D) x (M, D) -> (N, M), clamped at 0."""
  sq = (jnp.sum(a * a, -1)[:, None] + jnp.sum(b * b, -1)[None, :]
        - 2.0 * a @ b.T)
  return jnp.maximum(sq, 0.0)


def pairwise_distance(a: jnp.ndarray, b: jnp.ndarray, metric: str) -> jnp.ndarray:
  """d(a_i, b_j) for (N, D) x (M, D) -> (N, M), in float32.

  ``cosine``: 1 − ⟨â_i, b̂_j⟩ on L2-normalised rows (in [0, 2]).
  ``euclidean``: sqrt(max(‖a_i − b_j‖², 1e-12)) (the clamp keeps the gradient
  finite for identical points, as in open-reid / TKP).
  """
  a = a.astype(jnp.float32)
  b = b.astype(jnp.float32)
  if metric == 'cosine':
    return 1.0 - l2_normalize(a) @ l2_normalize(b).T
  if metric == 'euclidean':
    return jnp.sqrt(jnp.maximum(squared_euclidean(a, b), 1e-12))
  raise ValueError(f'unknown distance {metric!r}; choose one of {METRICS}')


def pair_masks(anchor_labels: jnp.ndarray, cand_labels: jnp.ndarray,
               anchor_index: Optional[jnp.ndarray] = None,
               cand_index: Optional[jnp.ndarray] = None
               ) -> Tuple[jnp.ndarray, jnp.ndarray]:
  """Positive and negative masks, (N,) x (M,) labels -> two (N, M) bool.

  A pair is positive when labels agree and it is not the anchor itself
  (``anchor_index[i] == cand_index[j]`` marks the same sample; with no indices
  nothing is excluded, as for cross-modal pairs), negative when labels differ.
  """
  same = anchor_labels[:, None] == cand_labels[None, :]
  positive = same
  if anchor_index is not None:
    positive = same & (anchor_index[:, None] != cand_index[None, :])
  return positive, ~same
