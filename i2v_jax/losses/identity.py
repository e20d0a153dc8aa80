"""Identity (classification) loss."""

from __future__ import annotations

from typing import Dict, Tuple

import jax
import jax.numpy as jnp


def cross_entropy(logits: jnp.ndarray, labels: jnp.ndarray,
                  label_smoothing: float = 0.0
                  ) -> Tuple[jnp.ndarray, Dict[str, jnp.ndarray]]:
  """Label-smoothed cross-entropy, mean over the batch.

      L = mean_i −Σ_c q_ic log softmax(z_i)_c,
      q_ic = (1 − ε)·[c = y_i] + ε / C

  Args:
    logits: (N, C). labels: (N,) int in [0, C). label_smoothing: ε.

  Returns:
    (loss, {'accuracy'}).
  """
  logits = logits.astype(jnp.float32)
  num_classes = logits.shape[-1]
  targets = jax.nn.one_hot(labels, num_classes)
  targets = (1.0 - label_smoothing) * targets + label_smoothing / num_classes
  loss = -jnp.mean(jnp.sum(targets * jax.nn.log_softmax(logits), axis=-1))
  accuracy = jnp.mean(jnp.argmax(logits, -1) == labels)
  return loss, {'accuracy': accuracy}
