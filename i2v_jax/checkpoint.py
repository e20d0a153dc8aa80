"""Checkpoints in the workdir (orbax): the last K, resumable; and a frozen teacher.

``<workdir>/checkpoints/<step>/`` holds the whole `TrainState` (parameters, batch
statistics, optimizer state and step, so the schedule resumes too);
``<workdir>/checkpoints_best/<step>/`` the state with the best value of
``train.best_metric`` seen at an evaluation (higher is better). Orbax writes
each under a temporary name and renames it when complete: a killed run leaves the
previous checkpoint intact.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Optional, Tuple

import jax
import orbax.checkpoint as ocp


class Checkpoints:
  """The workdir's checkpoint managers: the last ``keep`` and the best by ``best_metric``."""

  def __init__(self, workdir: str, keep: int, best_metric: str = ''):
    self.directory = os.path.join(os.path.abspath(workdir), 'checkpoints')
    # Each manager gets its own multi-process barrier names: orbax names its
    # async-save barriers by step, so the latest and best managers saving the
    # same step at once (the final evaluation) collided across processes
    # ("Barrier _async_write_complete.<step> is already ongoing") and aborted.
    barriers = lambda prefix: ocp.options.MultiprocessingOptions(barrier_sync_key_prefix=prefix)
    self.manager = ocp.CheckpointManager(
        self.directory, options=ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True, multiprocessing_options=barriers('latest')))
    self.best_metric = best_metric
    self.best_directory = self.directory + '_best'
    self.best = ocp.CheckpointManager(
        self.best_directory, options=ocp.CheckpointManagerOptions(
            max_to_keep=1, create=True, best_fn=lambda m: m[best_metric], best_mode='max',
            multiprocessing_options=barriers('best')))

  def best_value(self) -> Optional[float]:
    step = self.best.best_step()
    if step is None:
      return None
    return float((self.best.metrics(step) or {}).get(self.best_metric, float('-inf')))

  def save_best(self, step: int, state: Any, metrics: Dict[str, float]) -> bool:
    """Saves ``state`` if ``metrics[best_metric]`` beats the best so far; returns whether."""
    if self.best_metric not in metrics:
      raise KeyError(f'config train.best_metric={self.best_metric!r} is not among the '
                     f'evaluation metrics {sorted(metrics)}; pick one of those')
    best = self.best_value()
    if best is not None and metrics[self.best_metric] <= best:
      return False
    if step in self.best.all_steps():  # the same step, evaluated again with new settings
      self.best.delete(step)
    self.best.save(step, args=ocp.args.StandardSave(state),
                   metrics={self.best_metric: float(metrics[self.best_metric])}, force=True)
    return True

  def latest_step(self) -> Optional[int]:
    return self.manager.latest_step()

  def save(self, step: int, state: Any, force: bool = False) -> None:
    self.manager.save(step, args=ocp.args.StandardSave(state), force=force)

  def restore(self, target: Any, step: Optional[int] = None) -> Tuple[Any, int]:
    """Restores into the shapes and shardings of ``target``."""
    step = self.latest_step() if step is None else step
    return self.manager.restore(step, args=ocp.args.StandardRestore(target)), step

  def restore_for_eval(self, target: Any, which: str) -> Tuple[Any, int]:
    """``which``: 'latest', 'best' or a step number kept in checkpoints/."""
    if which == 'best':
      step = self.best.best_step()
      if step is None:
        raise FileNotFoundError(f'{self.best_directory}: no best checkpoint; train with '
                                'evaluations (train.eval_every) or use eval.checkpoint=latest')
      return self.best.restore(step, args=ocp.args.StandardRestore(target)), step
    step = self.latest_step() if which == 'latest' else int(which)
    if step is None or step not in self.manager.all_steps():
      raise FileNotFoundError(
          f'{self.directory}: no checkpoint {which!r} (kept: {list(self.manager.all_steps())}); '
          'train first or set eval.checkpoint to latest, best or a kept step')
    return self.restore(target, step)

  def wait(self) -> None:
    self.manager.wait_until_finished()
    self.best.wait_until_finished()

  def close(self) -> None:
    self.manager.close()
    self.best.close()


def load_network(workdir: str, network: str, which: str = 'latest') -> Dict[str, Any]:
  """{'params', 'batch_stats'} of ``network`` in a run's checkpoint, whatever
  topology wrote it (the restore target is built from the checkpoint's own
  metadata, onto this process's first device).

  Args:
    workdir: a training run's workdir.
    network: 'teacher' or 'student' (trained or frozen in that run).
    which: 'latest', 'best' or a step number.
  """
  directory = os.path.join(os.path.abspath(workdir),
                           'checkpoints_best' if which == 'best' else 'checkpoints')
  if not os.path.isdir(directory):
    raise FileNotFoundError(
        f'{directory}: no checkpoints; point at the workdir of a finished training run')
  manager = ocp.CheckpointManager(directory)
  steps = list(manager.all_steps())
  manager.close()
  if not steps:
    raise FileNotFoundError(f'{directory}: no complete checkpoint yet')
  step = max(steps) if which in ('latest', 'best') else int(which)
  if step not in steps:
    raise FileNotFoundError(f'{directory}: no checkpoint {which!r} (kept: {sorted(steps)})')
  path = os.path.join(directory, str(step), 'default')
  checkpointer = ocp.StandardCheckpointer()
  metadata = checkpointer.metadata(path)
  checkpointer.close()
  metadata = getattr(metadata, 'item_metadata', metadata)
  metadata = getattr(metadata, 'tree', metadata)
  trained = sorted(metadata.get('params', {}))
  frozen = sorted(metadata.get('frozen', {}) or {})
  if network not in trained + frozen:
    raise ValueError(f'{directory}/{step}: has no {network} network (trained: {trained}, '
                     f'frozen: {frozen})')
  # Only this network's variables are read: no optimizer state, no other network.
  if network in trained:
    wanted = {'params': {network: metadata['params'][network]},
              'batch_stats': {network: metadata.get('batch_stats', {}).get(network, {})}}
  else:
    wanted = {'frozen': {network: metadata['frozen'][network]}}
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  target = jax.tree.map(
      lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), wanted)
  checkpointer = ocp.PyTreeCheckpointer()
  tree = checkpointer.restore(path, args=ocp.args.PyTreeRestore(
      item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
      partial_restore=True))
  checkpointer.close()
  if network in trained:
    return {'params': tree['params'][network], 'batch_stats': tree['batch_stats'][network]}
  return dict(tree['frozen'][network])


def load_teacher(workdir: str) -> Dict[str, Any]:
  """{'params', 'batch_stats'} of the trained teacher in a run's latest checkpoint
  (a teacher_only / vkd_teacher run: ``config.teacher.checkpoint``)."""
  try:
    return load_network(workdir, 'teacher')
  except (FileNotFoundError, ValueError) as e:
    raise type(e)(f'{e}; config teacher.checkpoint must be the workdir of a finished '
                  'teacher_only (or mdkt, vkd_teacher) run') from None
