"""Batch-hard triplet loss (Hermans et al. 2017), intra- and cross-modal."""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import jax
import jax.numpy as jnp

from i2v_jax.distances import pairwise_distance
from i2v_jax.losses.masks import pair_masks, same_sample


def masked_mean(values: jnp.ndarray, valid: jnp.ndarray) -> jnp.ndarray:
  """Mean of ``values`` where ``valid``; 0 when nothing is valid."""
  valid = valid.astype(jnp.float32)
  return jnp.sum(values * valid) / jnp.maximum(jnp.sum(valid), 1.0)


def batch_hard_triplet(anchors: jnp.ndarray, anchor_labels: jnp.ndarray,
                       candidates: jnp.ndarray, cand_labels: jnp.ndarray, *,
                       anchor_index: Optional[jnp.ndarray] = None,
                       cand_index: Optional[jnp.ndarray] = None,
                       margin: float = 0.3, soft_margin: bool = False,
                       distance: str = 'euclidean'
                       ) -> Tuple[jnp.ndarray, Dict[str, jnp.ndarray]]:
  """Batch-hard triplet loss.

  For each anchor a: d_ap = max_{p ∈ P(a)} d(a, p), d_an = min_{n ∈ N(a)} d(a, n),

      ℓ_a = max(0, d_ap − d_an + m)        (margin)
      ℓ_a = log(1 + exp(d_ap − d_an))      (soft margin)
      L = mean over anchors that have a positive and a negative.

  Intra-network: anchors = candidates = one network's features, with
  ``anchor_index``/``cand_index`` so an anchor is not its own positive.
  Cross-modal (TKP): anchors from one network, candidates from the other, no
  indices, so the same tracklet in the other modality is a valid positive.

  An anchor whose identity has no other sample (or a batch of one identity)
  has no triplet: it is left out of the mean; if no anchor has one, L = 0.

  Args:
    anchors: (N, D); anchor_labels: (N,); candidates: (M, D); cand_labels: (M,).

  Returns:
    (loss, {'d_ap', 'd_an': mean hardest distances, 'active': fraction of
    anchors with non-zero loss, 'valid': fraction with a triplet}).
  """
  dist = pairwise_distance(anchors, candidates, distance,
                           same_sample(anchor_index, cand_index))
  positive, negative = pair_masks(anchor_labels, cand_labels, anchor_index, cand_index)
  d_ap = jnp.max(jnp.where(positive, dist, -jnp.inf), axis=1)
  d_an = jnp.min(jnp.where(negative, dist, jnp.inf), axis=1)
  valid = positive.any(1) & negative.any(1)
  z = jnp.where(valid, d_ap - d_an, 0.0)
  per_anchor = jax.nn.softplus(z) if soft_margin else jax.nn.relu(z + margin)
  loss = masked_mean(per_anchor, valid)
  return loss, {
      'd_ap': masked_mean(jnp.where(valid, d_ap, 0.0), valid),
      'd_an': masked_mean(jnp.where(valid, d_an, 0.0), valid),
      'active': masked_mean((per_anchor > 1e-6).astype(jnp.float32), valid),
      'valid': jnp.mean(valid.astype(jnp.float32)),
  }
