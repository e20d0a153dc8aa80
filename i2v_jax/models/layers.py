"""Layer helpers shared by the backbone and the non-local block."""

from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax.numpy as jnp

# torchvision initialises convolutions with kaiming_normal_(mode='fan_out', relu).
conv_init = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')


def batch_norm(train: bool, axis_name: Optional[str], dtype: Any, name: str,
               zero_init: bool = False, use_bias: bool = True) -> nn.BatchNorm:
  """BatchNorm with PyTorch's defaults (momentum 0.1, eps 1e-5).

  ``axis_name`` set to the mesh axis averages the batch moments over devices
  (SPEC §5 ``bn_scope='global'``); ``None`` keeps per-device statistics.
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
