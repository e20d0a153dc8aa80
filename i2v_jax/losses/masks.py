"""The positive/negative masks every mining loss shares (distances are
`i2v_jax.distances`, the one function for losses and evaluation)."""

from __future__ import annotations

from typing import Optional, Tuple

import jax.numpy as jnp


def same_sample(anchor_index: Optional[jnp.ndarray],
                cand_index: Optional[jnp.ndarray]) -> Optional[jnp.ndarray]:
  """(N, M) bool ``anchor_index[i] == cand_index[j]``, or None without indices."""
  if anchor_index is None or cand_index is None:
    return None
  return anchor_index[:, None] == cand_index[None, :]


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
