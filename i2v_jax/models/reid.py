"""The teacher (video) and student (image) re-identification networks.

Both are a `ResNet` trunk followed by a BN-neck head (BatchNorm1d without bias,
then a bias-free linear classifier; Luo et al. "Bag of Tricks", used by VKD).
Each returns a dict:

  ``features``     (B, D) pooled features before the BN-neck (retrieval default)
  ``bn_features``  (B, D) after the BN-neck
  ``logits``       (B, num_classes)
  ``frame_features`` (B, T, D) teacher only: per-frame features before pooling
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Sequence

import chex
import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from i2v_jax.models.layers import batch_norm
from i2v_jax.models.resnet import ResNet


class BNNeckHead(nn.Module):
  """BN-neck + classifier. Classifier weights ~ N(0, 0.001²) as in BoT/VKD."""
  num_classes: int
  bn_axis_name: Optional[str] = None

  @nn.compact
  def __call__(self, features: jnp.ndarray, train: bool) -> Dict[str, jnp.ndarray]:
    bn_features = batch_norm(train, self.bn_axis_name, jnp.float32, 'bnneck',
                             use_bias=False)(features)
    logits = nn.Dense(self.num_classes, use_bias=False,
                      kernel_init=nn.initializers.normal(0.001),
                      name='classifier')(bn_features)
    return {'features': features, 'bn_features': bn_features, 'logits': logits}


class _ReIDNet(nn.Module):
  stage_sizes: Sequence[int] = (3, 4, 6, 3)
  width: int = 64
  last_stride: int = 1
  num_classes: int = 625
  bn_axis_name: Optional[str] = None
  dtype: Any = jnp.float32

  def backbone(self, nonlocal_after: Sequence[Sequence[int]]) -> ResNet:
    return ResNet(stage_sizes=self.stage_sizes, width=self.width,
                  last_stride=self.last_stride, nonlocal_after=nonlocal_after,
                  bn_axis_name=self.bn_axis_name, dtype=self.dtype,
                  name='backbone')

  def head(self) -> BNNeckHead:
    return BNNeckHead(self.num_classes, bn_axis_name=self.bn_axis_name,
                      name='head')


class StudentNet(_ReIDNet):
  """Image network: (B, H, W, 3) images -> features, bn_features, logits."""

  @nn.compact
  def __call__(self, images: jnp.ndarray, train: bool) -> Dict[str, jnp.ndarray]:
    chex.assert_rank(images, 4)
    features = self.backbone(((),) * len(self.stage_sizes))(images, train)
    return self.head()(features, train)


class TeacherNet(_ReIDNet):
  """Video network: (B, T, H, W, 3) clips -> frame features, clip features, logits.

  Frames go through the trunk as a batch of B*T images; non-local blocks (if
  any) let frames of one clip attend to each other. The clip feature is the
  temporal mean of the frame features over valid frames (``frame_mask``).
  """
  nonlocal_after: Sequence[Sequence[int]] = ((), (1, 3), (1, 3, 5), ())

  @nn.compact
  def __call__(self, clips: jnp.ndarray, train: bool,
               frame_mask: Optional[jnp.ndarray] = None) -> Dict[str, jnp.ndarray]:
    """Args: clips (B, T, H, W, 3); frame_mask (B, T) bool, None = all valid."""
    chex.assert_rank(clips, 5)
    b, t = clips.shape[:2]
    frames = clips.reshape((b * t,) + clips.shape[2:])
    frame_features = self.backbone(self.nonlocal_after)(
        frames, train, num_frames=t, frame_mask=frame_mask).reshape(b, t, -1)
    if frame_mask is None:
      clip_features = frame_features.mean(axis=1)
    else:
      weights = frame_mask.astype(jnp.float32)[..., None]
      clip_features = ((frame_features * weights).sum(axis=1)
                       / jnp.maximum(weights.sum(axis=1), 1.0))
    outputs = self.head()(clip_features, train)
    outputs['frame_features'] = frame_features
    return outputs


# Compute dtypes (parameters stay float32).
DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}
# The config switches whose choices this module owns (`config_lib.choices` reads them).
CONFIG_CHOICES = {'model.dtype': tuple(DTYPES)}


def nonlocal_placement(model_config: ml_collections.ConfigDict) -> tuple:
  """Per-stage non-local positions from ``model.nonlocal`` (empty when off)."""
  stages = len(model_config.stage_sizes)
  nl = model_config.nonlocal_blocks
  if not nl.enabled:
    return ((),) * stages
  placement = tuple(tuple(nl[f'layer{s + 1}']) for s in range(stages))
  for s, indices in enumerate(placement):
    bad = [i for i in indices if not 0 <= i < model_config.stage_sizes[s]]
    if bad:
      raise ValueError(
          f'config model.nonlocal_blocks.layer{s + 1}={indices}: block indices '
          f'{bad} do not exist in a stage of {model_config.stage_sizes[s]} '
          f'blocks; use 0-based indices below that.')
  return placement


def build(model_config: ml_collections.ConfigDict, arch: str, num_classes: int,
          bn_axis_name: Optional[str] = None) -> _ReIDNet:
  """The ``arch`` module ('video': `TeacherNet`, 'image': `StudentNet`) from
  ``config.model`` (`i2v_jax.networks` names each network's arch)."""
  common = dict(stage_sizes=tuple(model_config.stage_sizes),
                width=model_config.width, last_stride=model_config.last_stride,
                num_classes=num_classes, bn_axis_name=bn_axis_name,
                dtype=DTYPES[model_config.dtype])
  if arch == 'video':
    return TeacherNet(nonlocal_after=nonlocal_placement(model_config), **common)
  if arch == 'image':
    return StudentNet(**common)
  raise ValueError(f'network arch {arch!r}: video or image')


def build_models(model_config: ml_collections.ConfigDict, num_classes: int,
                 bn_axis_name: Optional[str] = None):
  """Teacher and student modules from ``config.model``."""
  return (build(model_config, 'video', num_classes, bn_axis_name),
          build(model_config, 'image', num_classes, bn_axis_name))
