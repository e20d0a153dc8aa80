"""The one pairwise-distance function, for losses (jnp, under jit and grad) and
evaluation (jnp on the device; numpy on the host, e.g. re-ranking in float64).

Precision. ReID features are non-negative (after ReLU) with a large common
mean, so the textbook expansion ‖a‖² + ‖b‖² − 2a·b cancels catastrophically in
float32: under ``jit`` the self-distance of a 2048-d row came out up to 0.11
instead of 0. `squared_euclidean` therefore (1) uses the exact difference form
Σ_d (a_id − b_jd)² when the (N, M, D) difference fits in `DIFFERENCE_FORM_MAX`
elements (every CPU-sized batch and the tests), (2) otherwise centres both sides
on the candidates' mean before expanding (distances are translation invariant;
the norms that cancel shrink by the size of that mean), and (3) sets pairs the
caller marks as the same sample (``same``) to exactly 0. Measured against
float64 on 2048-d ReLU-like rows (`tests/test_losses.py`): relative error
< 1e-5 on ordinary pairs in both forms; a near-duplicate pair (distance 0.04,
norms 60) is exact in the difference form and within 1e-3 absolute in the
centred expansion (the uncentred expansion is several times worse).
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

DISTANCES = ('cosine', 'euclidean')
# The config switches whose choices this module owns (`config_lib.choices` reads them).
CONFIG_CHOICES = {'loss.triplet.distance': DISTANCES, 'loss.tcl.distance': DISTANCES,
                  'eval.distance': DISTANCES}

# Largest N·M·D for which the (N, M, D) difference tensor is materialised
# (16 Mi float32 = 64 MiB; its backward pass holds one more of the same size).
DIFFERENCE_FORM_MAX = 1 << 24


def l2_normalize(x, eps: float = 1e-12, xp=jnp):
  return x / xp.sqrt(xp.maximum(xp.sum(x * x, axis=-1, keepdims=True), eps))


def squared_euclidean(a, b, same=None, xp=jnp):
  """‖a_i − b_j‖², (N, D) x (M, D) -> (N, M), ≥ 0, exactly 0 where ``same``.

  Args:
    a: (N, D); b: (M, D).
    same: optional (N, M) bool, True where a_i and b_j are the same sample.
    xp: jax.numpy (default) or numpy.
  """
  n, d = a.shape
  m = b.shape[0]
  if n * m * d <= DIFFERENCE_FORM_MAX:
    diff = a[:, None, :] - b[None, :, :]
    sq = xp.sum(diff * diff, axis=-1)
  else:
    centre = xp.mean(b, axis=0, keepdims=True)
    if xp is jnp:
      centre = jax.lax.stop_gradient(centre)
    a, b = a - centre, b - centre
    sq = (xp.sum(a * a, -1)[:, None] + xp.sum(b * b, -1)[None, :] - 2.0 * a @ b.T)
    sq = xp.maximum(sq, 0.0)
  if same is not None:
    sq = xp.where(same, 0.0, sq)
  return sq


def _safe_sqrt(x, xp):
  """sqrt with value 0 and gradient 0 at x = 0 (no inf·0 in the backward pass)."""
  positive = x > 0.0
  return xp.where(positive, xp.sqrt(xp.where(positive, x, 1.0)), 0.0)


def pairwise_distance(a, b, metric: str, same: Optional[jnp.ndarray] = None, xp=jnp):
  """d(a_i, b_j) for (N, D) x (M, D) -> (N, M).

  ``cosine``: 1 − ⟨â_i, b̂_j⟩ on L2-normalised rows (in [0, 2]).
  ``euclidean``: ‖a_i − b_j‖ (see `squared_euclidean` for how it stays exact;
  the gradient at a zero distance is 0, never inf or NaN).
  ``same`` (N, M) bool: pairs that are one sample get distance exactly 0.
  ``xp``: jax.numpy (float32, the default) or numpy (the inputs' dtype).
  """
  if xp is jnp:
    a, b = a.astype(jnp.float32), b.astype(jnp.float32)
  if metric == 'cosine':
    dist = 1.0 - l2_normalize(a, xp=xp) @ l2_normalize(b, xp=xp).T
    return dist if same is None else xp.where(same, 0.0, dist)
  if metric == 'euclidean':
    return _safe_sqrt(squared_euclidean(a, b, same, xp=xp), xp)
  raise ValueError(f'unknown distance {metric!r}; choose one of {DISTANCES}')
