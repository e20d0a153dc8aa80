"""Space-time non-local block (Wang et al., CVPR 2018), as TKP inserts it.

Embedded Gaussian over every (t, h, w) position of a clip:

    z_i = x_i + BN(W · Σ_j softmax_j(θ(x_i)ᵀ φ(x_j)) g(x_j))

θ, φ, g are 1x1 convolutions to C/2 channels (with bias); φ and g are max-pooled
2x2 over (h, w) (TKP's ``sub_sample=True``), so keys are 4x fewer than queries.
W is a 1x1 convolution back to C channels followed by BatchNorm whose scale and
bias start at zero: at initialisation the block is the identity, so an ImageNet
backbone is unchanged by inserting it.
"""

from __future__ import annotations

from typing import Any, Optional

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from i2v_jax.models.layers import PointwiseConv, batch_norm


class NonLocalBlock(nn.Module):
  """Embedded-Gaussian non-local block over a clip.

  Attributes:
    inter_channels: width of θ/φ/g; default C // 2.
    bn_axis_name: mesh axis for BatchNorm moments, or None.
    dtype: compute dtype; the softmax runs in float32.
  """
  inter_channels: Optional[int] = None
  bn_axis_name: Optional[str] = None
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool,
               frame_mask: Optional[jnp.ndarray] = None) -> jnp.ndarray:
    """Args: x (B, T, H, W, C); frame_mask (B, T) bool or None. Returns x's shape."""
    chex.assert_rank(x, 5)
    b, t, h, w, c = x.shape
    ci = self.inter_channels or max(c // 2, 1)
    conv = lambda f, name: PointwiseConv(f, use_bias=True, dtype=self.dtype, name=name)
    frames = x.reshape(b * t, h, w, c)
    pool = lambda y: nn.max_pool(y, (2, 2), strides=(2, 2), padding='VALID')
    theta = conv(ci, 'theta')(frames).reshape(b, t * h * w, ci)
    phi = pool(conv(ci, 'phi')(frames))
    hk, wk = phi.shape[1:3]
    phi = phi.reshape(b, t * hk * wk, ci)
    g = pool(conv(ci, 'g')(frames)).reshape(b, t * hk * wk, ci)

    logits = jnp.einsum('bqc,bkc->bqk', theta, phi,
                        preferred_element_type=jnp.float32)
    if frame_mask is not None:
      chex.assert_shape(frame_mask, (b, t))
      key_mask = jnp.repeat(frame_mask.astype(bool), hk * wk, axis=1)  # (B, K)
      logits = jnp.where(key_mask[:, None, :], logits, -jnp.inf)
    attention = jax.nn.softmax(logits, axis=-1).astype(self.dtype)
    y = jnp.einsum('bqk,bkc->bqc', attention, g).reshape(b * t, h, w, ci)
    y = conv(c, 'W')(y)
    y = batch_norm(train, self.bn_axis_name, self.dtype, 'W_bn', zero_init=True)(y)
    return x + y.reshape(b, t, h, w, c).astype(x.dtype)
