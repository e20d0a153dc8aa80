"""Losses of docs/method.md §4: one pure function per term, its equation in the docstring.

Every function returns ``(scalar, diagnostics dict)``; `objective` weighs them.
"""

from i2v_jax.distances import pairwise_distance
from i2v_jax.losses.masks import pair_masks
from i2v_jax.losses.distill import (distance_matrix_mse, feature_mse, logit_kl,
                                    squared_distance_mse)
from i2v_jax.losses.identity import cross_entropy
from i2v_jax.losses.objective import active_terms, objective, term_weights
from i2v_jax.losses.tcl import triplet_contrast
from i2v_jax.losses.triplet import batch_hard_triplet

__all__ = [
    'active_terms', 'batch_hard_triplet', 'cross_entropy', 'distance_matrix_mse',
    'feature_mse', 'logit_kl', 'objective', 'pair_masks', 'pairwise_distance',
    'squared_distance_mse', 'term_weights', 'triplet_contrast',
]
