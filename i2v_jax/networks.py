"""A run's networks as a table: name -> `Network` (docs/method.md §2, docs/extending.md).

Each entry says which module a network is, which view of the batch it sees,
how it changes during training and whether evaluation may retrieve with it:

  ``arch``       'video' (`TeacherNet`: clips) or 'image' (`StudentNet`: images)
  ``view``       'clip': the batch's clips (B, T, H, W, 3); 'images': the first
                 ``input.student_frames`` frames of each clip as images (B·M, H, W, 3)
  ``role``       'trained' (by the optimizer, at ``lr_scale`` x the schedule),
                 'frozen' (fixed variables, e.g. a trained teacher) or 'ema' (an
                 exponential moving average of network ``ema_of`` with ``ema_decay``,
                 updated after every step; no gradient reaches it)
  ``bn_mode``    BatchNorm in the training forward pass: 'train' (batch moments,
                 running averages updated), 'running' (running averages), 'batch'
                 (batch moments, running averages kept: VKD's frozen teacher)
  ``retrieval``  evaluation may encode queries or gallery entries with it

`NETWORKS` maps each known name to the function of the config that makes its
entry; ``config.networks`` chooses which of them a run has (`table`). A fork adds
a network by one entry here and its name in a preset's ``networks``: the train
step (`i2v_jax.train_step`), the optimizer, initialisation, checkpoints and
evaluation read the table. No JAX work happens here until `build` makes modules.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, Optional, Tuple

import ml_collections

ARCHS = ('video', 'image')
VIEWS = ('clip', 'images')
ROLES = ('trained', 'frozen', 'ema')
BN_MODES = ('train', 'running', 'batch')


@dataclasses.dataclass(frozen=True)
class Network:
  """One entry of the networks table (module docstring). ``init_key`` folds the
  run's seed for its initialisation: by name, not by position in
  ``config.networks``, so one seed gives a network the same start in every
  preset (paired seeds). ``module`` is its flax module once `build` made it."""
  name: str
  arch: str
  view: str
  role: str = 'trained'
  bn_mode: str = 'train'
  ema_of: str = ''
  ema_decay: float = 0.0
  lr_scale: float = 1.0
  init_key: int = 0
  retrieval: bool = True
  module: Any = None


def _teacher(c: ml_collections.ConfigDict) -> Network:
  frozen = c.teacher.mode == 'frozen'
  return Network('teacher', 'video', 'clip', role='frozen' if frozen else 'trained',
                 bn_mode=c.teacher.bn_mode if frozen else 'train',
                 lr_scale=c.optim.teacher_lr_scale, init_key=0)


def _student(c: ml_collections.ConfigDict) -> Network:
  return Network('student', 'image', 'images', lr_scale=c.optim.student_lr_scale, init_key=1)


def _student_ema(c: ml_collections.ConfigDict) -> Network:
  """A mean teacher (Tarvainen & Valpola, 2017): the student's weights averaged
  over steps, read by the ``mean_teacher/*`` loss terms; evaluated in eval mode."""
  return Network('student_ema', 'image', 'images', role='ema', bn_mode='running',
                 ema_of='student', ema_decay=c.ema.decay, init_key=2, retrieval=False)


# The one table of networks: name -> its entry for a config. A new network is one
# entry here (and its name in a preset's ``networks``).
NETWORKS: Dict[str, Callable[[ml_collections.ConfigDict], Network]] = {
    'teacher': _teacher,
    'student': _student,
    'student_ema': _student_ema,
}


def table(config: ml_collections.ConfigDict) -> Dict[str, Network]:
  """The run's networks, in ``config.networks`` order (no modules yet).

  Raises:
    ValueError naming the config key: an unknown or repeated name, an EMA of a
    network the run does not train, a decay outside [0, 1).
  """
  names = tuple(config.networks)
  unknown = [n for n in names if n not in NETWORKS]
  if not names or unknown or len(set(names)) != len(names):
    raise ValueError(f'config networks={names!r}: a non-empty list of distinct names '
                     f'from {tuple(NETWORKS)}')
  out = {n: NETWORKS[n](config) for n in names}
  for net in out.values():
    if (net.role == 'trained') != (net.bn_mode == 'train'):
      raise ValueError(f'network {net.name}: bn_mode={net.bn_mode!r} with role '
                       f'{net.role!r}: a trained network updates its running averages '
                       "('train'), a frozen or EMA one reads them ('running') or uses "
                       "batch moments ('batch')")
    if net.role != 'ema':
      continue
    source = out.get(net.ema_of)
    if source is None or source.role != 'trained':
      raise ValueError(f'config networks={names!r}: {net.name} averages {net.ema_of!r}, '
                       f'which this run does not train; add {net.ema_of!r} to networks')
    if not 0.0 <= net.ema_decay < 1.0:
      raise ValueError(f'config ema.decay={net.ema_decay!r} ({net.name}): must be in '
                       '[0, 1) (0 copies the network every step)')
  return out


def trained(config) -> Tuple[str, ...]:
  """Names of the networks the optimizer updates, in ``config.networks`` order."""
  return tuple(n for n, net in table(config).items() if net.role == 'trained')


def build(config, num_classes: int, bn_axis_name: Optional[str] = None
          ) -> Tuple[Network, ...]:
  """The run's table with each entry's flax module for ``num_classes`` identities
  (BatchNorm moments averaged over ``bn_axis_name`` when given)."""
  from i2v_jax.models import reid
  return tuple(dataclasses.replace(
      net, module=reid.build(config.model, net.arch, num_classes, bn_axis_name))
      for net in table(config).values())


def views(clips, m: int) -> Dict[str, Any]:
  """The batch's views: 'clip' (B, T, H, W, 3) and 'images' (B·M, H, W, 3), the
  first ``m`` frames of each clip, tracklet-major (row b·M + j = frame j of clip b)."""
  b = clips.shape[0]
  return {'clip': clips, 'images': clips[:, :m].reshape((b * m,) + clips.shape[2:])}
