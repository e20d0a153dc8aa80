"""Bottleneck ResNet backbone (torchvision layout) with optional non-local blocks.

The module tree mirrors torchvision's ``resnet50`` names (``conv1``, ``bn1``,
``layer{1..4}_{i}`` with ``conv{1,2,3}``, ``bn{1,2,3}``, ``downsample_conv``,
``downsample_bn``) so that `i2v_jax.models.convert` is a rename plus a transpose.

Layout is NHWC. ResNet-50 is ``stage_sizes=(3, 4, 6, 3), width=64``; the ReID
convention sets the last stage's stride to 1 (``last_stride=1``), which doubles the
final feature map (16x8 at 256x128 input) at no parameter cost.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import chex
import flax.linen as nn
import jax.numpy as jnp

from i2v_jax.models.layers import PointwiseConv, batch_norm, conv_init
from i2v_jax.models.nonlocal_block import NonLocalBlock

class Bottleneck(nn.Module):
  """torchvision ``Bottleneck`` (v1.5: the stride sits on the 3x3 conv)."""
  features: int
  strides: int = 1
  expansion: int = 4
  bn_axis_name: Optional[str] = None
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    conv1x1 = lambda f, s, name: PointwiseConv(f, strides=s, dtype=self.dtype, name=name)
    bn = lambda name: batch_norm(train, self.bn_axis_name, self.dtype, name)
    out_features = self.features * self.expansion

    y = nn.relu(bn('bn1')(conv1x1(self.features, 1, 'conv1')(x)))
    y = nn.relu(bn('bn2')(nn.Conv(
        self.features, (3, 3), strides=(self.strides, self.strides),
        padding=((1, 1), (1, 1)), use_bias=False, kernel_init=conv_init,
        dtype=self.dtype, param_dtype=jnp.float32, name='conv2')(y)))
    y = bn('bn3')(conv1x1(out_features, 1, 'conv3')(y))
    if self.strides != 1 or x.shape[-1] != out_features:
      x = bn('downsample_bn')(conv1x1(out_features, self.strides, 'downsample_conv')(x))
    return nn.relu(x + y)


class ResNet(nn.Module):
  """Bottleneck ResNet trunk + global average pooling.

  Attributes:
    stage_sizes: blocks per stage; ResNet-50 is (3, 4, 6, 3).
    width: channels of the stem and first stage's bottleneck (64 for ResNet-50).
      Stage s has ``width * 2**s`` bottleneck channels and 4x that at its output.
    last_stride: stride of the last stage (1 for ReID, 2 as in torchvision).
    nonlocal_after: per stage, the 0-based indices of the blocks followed by a
      non-local block. TKP: ``((), (1, 3), (1, 3, 5), ())``. Any non-empty entry
      makes the network temporal: inputs are frames of clips of ``num_frames``.
    bn_axis_name: mesh axis over which BatchNorm averages moments, or None.
    dtype: compute dtype (parameters stay float32).
  """
  stage_sizes: Sequence[int] = (3, 4, 6, 3)
  width: int = 64
  last_stride: int = 1
  nonlocal_after: Sequence[Sequence[int]] = ((), (), (), ())
  bn_axis_name: Optional[str] = None
  dtype: Any = jnp.float32

  @property
  def num_features(self) -> int:
    return self.width * 2 ** (len(self.stage_sizes) - 1) * 4

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool, num_frames: int = 1,
               frame_mask: Optional[jnp.ndarray] = None) -> jnp.ndarray:
    """Runs the trunk.

    Args:
      x: (N, H, W, 3) images; with non-local blocks N = clips * num_frames,
        frames of one clip consecutive.
      train: batch statistics (True) or running averages (False).
      num_frames: T, frames per clip (used by non-local blocks only).
      frame_mask: optional (N // T, T) bool, False for padded frames; padded
        frames are never attended to.

    Returns:
      (N, num_features) globally average-pooled features, float32.
    """
    chex.assert_rank(x, 4)
    if len(self.nonlocal_after) != len(self.stage_sizes):
      raise ValueError(
          f'model.nonlocal: {len(self.nonlocal_after)} stages given for a '
          f'ResNet with {len(self.stage_sizes)} stages')
    x = x.astype(self.dtype)
    x = nn.Conv(self.width, (7, 7), strides=(2, 2), padding=((3, 3), (3, 3)),
                use_bias=False, kernel_init=conv_init, dtype=self.dtype,
                param_dtype=jnp.float32, name='conv1')(x)
    x = nn.relu(batch_norm(train, self.bn_axis_name, self.dtype, 'bn1')(x))
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    for stage, num_blocks in enumerate(self.stage_sizes):
      for block in range(num_blocks):
        strides = 1
        if block == 0 and stage > 0:
          strides = self.last_stride if stage == len(self.stage_sizes) - 1 else 2
        x = Bottleneck(self.width * 2 ** stage, strides=strides,
                       bn_axis_name=self.bn_axis_name, dtype=self.dtype,
                       name=f'layer{stage + 1}_{block}')(x, train)
        if block in self.nonlocal_after[stage]:
          n, h, w, c = x.shape
          if n % num_frames:
            raise ValueError(f'{n} frames are not whole clips of {num_frames}')
          y = NonLocalBlock(bn_axis_name=self.bn_axis_name, dtype=self.dtype,
                            name=f'layer{stage + 1}_{block}_nonlocal')(
                                x.reshape(n // num_frames, num_frames, h, w, c),
                                train, frame_mask)
          x = y.reshape(n, h, w, c)
    return jnp.mean(x.astype(jnp.float32), axis=(1, 2))
