"""Checkpoints in the workdir (orbax): the last K, resumable; and a frozen teacher.

``<workdir>/checkpoints/<step>/`` holds the whole `TrainState` (parameters, batch
statistics, optimizer state and step, so the schedule resumes too);
``<workdir>/checkpoints_best/<step>/`` the state with the best value of
``train.best_metric`` seen at an evaluation (higher is better). Orbax writes
each under a temporary name and renames it when complete: a killed run leaves the
previous checkpoint intact. Once a save is complete its files' sha256 go to
``checkpoints_sha256/<step>.json``; a restore checks them, and resuming skips a
damaged or unreadable checkpoint for the newest whole one (`Checkpoints.restore`).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from typing import Any, Dict, Iterable, Optional, Tuple

import jax
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from i2v_jax import atomic


class DamagedCheckpoint(IOError):
  """A checkpoint whose files do not match their checksums or cannot be read."""


def manifest_path(directory: str, step: int) -> str:
  """``<directory>_sha256/<step>.json``: the checksums of a finished checkpoint."""
  return os.path.join(directory + '_sha256', f'{step}.json')


def _file_hashes(step_dir: str) -> Dict[str, str]:
  out = {}
  for root, _, files in os.walk(step_dir):
    for name in files:
      path = os.path.join(root, name)
      h = hashlib.sha256()
      with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
          h.update(block)
      out[os.path.relpath(path, step_dir)] = h.hexdigest()
  return out


def write_manifest(directory: str, step: int) -> None:
  path = manifest_path(directory, step)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  atomic.write_json(_file_hashes(os.path.join(directory, str(step))), path)


def verify_manifest(directory: str, step: int) -> Optional[str]:
  """Why checkpoint ``step`` is damaged, or None if its files match their checksums
  (or it has none: a checkpoint written before checksums, or just before a crash)."""
  path = manifest_path(directory, step)
  if not os.path.exists(path):
    return None
  try:
    with open(path) as f:
      want = json.load(f)
  except ValueError:
    return None  # the manifest itself was cut short: nothing to check against
  got = _file_hashes(os.path.join(directory, str(step)))
  missing = sorted(set(want) - set(got))
  changed = sorted(k for k in set(want) & set(got) if want[k] != got[k])
  if missing or changed:
    return ('files ' + ', '.join(missing[:3]) + ' missing' if missing else
            'files ' + ', '.join(changed[:3]) + ' changed since they were written '
            '(sha256 mismatch)')
  return None


def prune_manifests(directory: str, kept: Iterable[int]) -> None:
  """Removes the checksums of checkpoints orbax has deleted."""
  folder = directory + '_sha256'
  if not os.path.isdir(folder):
    return
  kept = {f'{s}.json' for s in kept}
  for name in os.listdir(folder):
    if name.endswith('.json') and name not in kept:
      os.remove(os.path.join(folder, name))


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
      if os.path.exists(manifest_path(self.best_directory, step)):
        os.remove(manifest_path(self.best_directory, step))
    self.best.save(step, args=ocp.args.StandardSave(state),
                   metrics={self.best_metric: float(metrics[self.best_metric])}, force=True)
    return True

  def latest_step(self) -> Optional[int]:
    return self.manager.latest_step()

  def save(self, step: int, state: Any, force: bool = False) -> None:
    self._seal()  # the previous save is complete: record its checksums
    self.manager.save(step, args=ocp.args.StandardSave(state), force=force)

  def _seal(self) -> None:
    """Waits for pending saves and writes the checksums of every finished step."""
    for manager in (self.manager, self.best):
      manager.wait_until_finished()
      if jax.process_index() == 0:
        directory = str(manager.directory)
        for step in manager.all_steps():
          if not os.path.exists(manifest_path(directory, step)):
            write_manifest(directory, step)
        prune_manifests(directory, manager.all_steps())

  def restore(self, target: Any, step: Optional[int] = None) -> Tuple[Any, int]:
    """Restores into the shapes and shardings of ``target``: ``step``, or the newest
    checkpoint that is whole.

    A checkpoint whose files do not match their checksums, or that orbax cannot
    read, is skipped (it is said which and why) and moved, untouched, to
    ``checkpoints_damaged/``, so training continues from the one before it.
    """
    if step is not None:
      return self._restore_verified(self.manager, target, step), step
    for step in sorted(self.manager.all_steps(), reverse=True):
      try:
        return self._restore_verified(self.manager, target, step), step
      except DamagedCheckpoint as e:
        print(f'warning: skipping checkpoint {step}: {e}', flush=True)
        self._set_aside(step)
    raise DamagedCheckpoint(f'{self.directory}: no checkpoint restores (each skipped one is '
                            'in checkpoints_damaged/); delete the workdir to start afresh')

  def _restore_verified(self, manager, target: Any, step: int) -> Any:
    problem = verify_manifest(str(manager.directory), step)
    if problem:
      raise DamagedCheckpoint(problem)
    try:
      return manager.restore(step, args=ocp.args.StandardRestore(target))
    except Exception as e:  # pylint: disable=broad-except  (orbax/tensorstore raise many kinds)
      raise DamagedCheckpoint(f'unreadable ({type(e).__name__}: {str(e)[:200]})') from None

  def _set_aside(self, step: int) -> None:
    """Moves a damaged step out of the manager's way (never deletes it)."""
    if jax.process_index() == 0:
      damaged = self.directory + '_damaged'
      os.makedirs(damaged, exist_ok=True)
      target = os.path.join(damaged, f'{step}-{int(time.time())}')
      os.rename(os.path.join(self.directory, str(step)), target)
      manifest = manifest_path(self.directory, step)
      if os.path.exists(manifest):
        os.rename(manifest, target + '.sha256.json')
      print(f'moved the damaged checkpoint to {target}', flush=True)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices(f'set aside checkpoint {step}')
    self.manager.reload()

  def restore_for_eval(self, target: Any, which: str) -> Tuple[Any, int]:
    """``which``: 'latest', 'best' or a step number kept in checkpoints/."""
    if which == 'best':
      step = self.best.best_step()
      if step is None:
        raise FileNotFoundError(f'{self.best_directory}: no best checkpoint; train with '
                                'evaluations (train.eval_every) or use eval.checkpoint=latest')
      try:
        return self._restore_verified(self.best, target, step), step
      except DamagedCheckpoint as e:
        raise DamagedCheckpoint(f'{self.best_directory}/{step}: {e}; evaluate '
                                'eval.checkpoint=latest instead') from None
    if which == 'latest':
      if self.latest_step() is None:
        raise FileNotFoundError(f'{self.directory}: no checkpoint; train first')
      return self.restore(target)  # the newest whole one
    step = int(which)
    if step not in self.manager.all_steps():
      raise FileNotFoundError(
          f'{self.directory}: no checkpoint {which!r} (kept: {list(self.manager.all_steps())}); '
          'train first or set eval.checkpoint to latest, best or a kept step')
    try:
      return self._restore_verified(self.manager, target, step), step
    except DamagedCheckpoint as e:
      raise DamagedCheckpoint(f'{self.directory}/{step}: {e}; choose another step') from None

  def wait(self) -> None:
    self._seal()

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
