"""Layer helpers shared by the backbone and the non-local block."""

from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

# torchvision initialises convolutions with kaiming_normal_(mode='fan_out', relu).
conv_init = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')


def batch_norm(train: bool, axis_name: Optional[str], dtype: Any, name: str,
               zero_init: bool = False, use_bias: bool = True) -> nn.BatchNorm:
  """BatchNorm with PyTorch's defaults (momentum 0.1, eps 1e-5).

  ``axis_name`` set to the mesh axis averages the batch moments over devices
  (docs/method.md §5 ``bn_scope='global'``); ``None`` keeps per-device statistics.
  ``zero_init`` starts scale at 0 (bias is always 0), making a residual branch
  the identity at initialisation. ``use_bias=False`` is BatchNorm1d with its
  bias frozen at 0 (the BN-neck).
  """
  return nn.BatchNorm(
      use_running_average=not train,
      momentum=0.9,
      epsilon=1e-5,
      use_bias=use_bias,
      axis_name=axis_name,
      dtype=dtype,
      param_dtype=jnp.float32,
      scale_init=nn.initializers.zeros if zero_init else nn.initializers.ones,
      name=name)


class PointwiseConv(nn.Module):
  """A 1x1 convolution written as a matrix product over the channel axis.

  Same parameters as ``nn.Conv(features, (1, 1), strides)`` with VALID padding
  (``kernel`` (1, 1, C_in, features), optional ``bias``, same names, shapes and
  initial values), so checkpoints, ``convert.py`` and ``export.py`` are unchanged,
  and the same result up to float summation order; a stride s keeps every s-th
  pixel, as the strided 1x1 convolution does. Why: XLA:CPU runs this dot with its
  gradients 1.5-3x faster than the convolution at ResNet-50 shapes, which makes
  the MDKT step 1.8x faster (``bench/conv_cpu.py``, ``bench/RESULTS.md``); on
  GPU/TPU both are one matrix-unit product.

  Attributes:
    features: output channels.
    strides: spatial stride (H and W of NHWC input).
    use_bias: add a learned bias, zeros at init (the non-local block's 1x1
      convolutions have one, the ResNet's do not).
    kernel_init: initialiser of the (1, 1, C_in, features) kernel.
    dtype: compute dtype (parameters stay float32).
  """
  features: int
  strides: int = 1
  use_bias: bool = False
  kernel_init: Any = conv_init
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    """Args: x (N, H, W, C_in). Returns (N, ceil(H / s), ceil(W / s), features)."""
    kernel = self.param('kernel', self.kernel_init, (1, 1, x.shape[-1], self.features),
                        jnp.float32)
    bias = (self.param('bias', nn.initializers.zeros, (self.features,), jnp.float32)
            if self.use_bias else None)
    if self.strides != 1:
      x = x[:, ::self.strides, ::self.strides, :]
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    y = jax.lax.dot_general(x, kernel[0, 0], (((x.ndim - 1,), (0,)), ((), ())))
    return y if bias is None else y + bias
