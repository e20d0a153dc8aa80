"""Checkpoints in the workdir (orbax): the last K, resumable; and a frozen teacher.

``<workdir>/checkpoints/<step>/`` holds the whole `TrainState` (parameters, batch
statistics, optimizer state and step, so the schedule resumes too). Orbax writes
each under a temporary name and renames it when complete: a killed run leaves the
previous checkpoint intact.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Optional, Tuple

import jax
import orbax.checkpoint as ocp


class Checkpoints:
  """The workdir's checkpoint manager."""

  def __init__(self, workdir: str, keep: int):
    self.directory = os.path.join(os.path.abspath(workdir), 'checkpoints')
    self.manager = ocp.CheckpointManager(
        self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))

  def latest_step(self) -> Optional[int]:
    return self.manager.latest_step()

  def save(self, step: int, state: Any, force: bool = False) -> None:
    self.manager.save(step, args=ocp.args.StandardSave(state), force=force)

  def restore(self, target: Any, step: Optional[int] = None) -> Tuple[Any, int]:
    """Restores into the shapes and shardings of ``target``."""
    step = self.latest_step() if step is None else step
    return self.manager.restore(step, args=ocp.args.StandardRestore(target)), step

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.close()


def load_teacher(workdir: str) -> Dict[str, Any]:
  """{'params', 'batch_stats'} of the teacher in a teacher_only run's latest checkpoint."""
  directory = os.path.join(os.path.abspath(workdir), 'checkpoints')
  if not os.path.isdir(directory):
    raise FileNotFoundError(
        f'{directory}: no checkpoints; config teacher.checkpoint must be the workdir '
        'of a finished teacher_only run (preset=teacher_only)')
  manager = ocp.CheckpointManager(directory)
  step = manager.latest_step()
  if step is None:
    raise FileNotFoundError(f'{directory}: no complete checkpoint yet')
  tree = manager.restore(step, args=ocp.args.StandardRestore())
  manager.close()
  if 'teacher' not in tree.get('params', {}):
    raise ValueError(f'{directory}/{step}: has no trained teacher (its networks: '
                     f'{sorted(tree.get("params", {}))}); use a teacher_only or mdkt run')
  return jax.tree.map(lambda x: x, {'params': tree['params']['teacher'],
                                    'batch_stats': tree['batch_stats']['teacher']})
