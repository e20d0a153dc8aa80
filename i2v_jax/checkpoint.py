"""Checkpoints in the workdir (orbax): the last K, resumable; and a frozen teacher.

``<workdir>/checkpoints/<step>/`` holds the whole `TrainState` (parameters, batch
statistics, optimizer state and step, so the schedule resumes too);
``<workdir>/checkpoints_best/<step>/`` the state with the best value of
``train.best_metric`` seen at an evaluation (higher is better). Orbax writes
each under a temporary name and renames it when complete: a killed run leaves the
previous checkpoint intact. As soon as a save is complete its files' sha256 go to
``checkpoints_sha256/<step>.json``.

Every reader restores through one verified path: the files must match their
record (`verify`), and the checkpoint's arrays must fit what this config builds
(`check_fits`). Two different failures follow:

  * `DamagedCheckpoint`: files changed since they were written (sha256
    mismatch), missing, or unreadable. Resuming skips such a checkpoint for the
    newest whole one and moves it, untouched, to ``checkpoints_damaged/``; every
    other reader refuses it, moving nothing.
  * `CheckpointMismatch`: the files are whole but do not fit this config or
    dataset (another number of classes, another width). Never damage: nothing
    is moved, the error names the array, the two shapes and the likely cause.

A checkpoint without a valid record (a run killed between a save and its
record) is restored by a resume with a warning, and refused by every other
reader (evaluation, `load_network`, export, a frozen teacher).
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import shutil
import json
import os
import time
from typing import Any, Dict, Iterable, List, Optional, Tuple

import jax
import orbax.checkpoint as ocp
from absl import logging as absl_logging
from jax.experimental import multihost_utils

from i2v_jax import atomic
from i2v_jax.run_folder import RunFolder, manifests
from i2v_jax.errors import DiskFull, UserError, free_space, is_disk_full


class DamagedCheckpoint(UserError, IOError):
  """A checkpoint whose files do not match their checksums or cannot be read."""


class CheckpointMismatch(UserError, ValueError):
  """A whole checkpoint that does not fit this config or dataset."""


class NoCheckpoint(UserError, FileNotFoundError):
  """The checkpoint asked for is not there (no run, not kept, not trained yet)."""


def manifest_path(directory: str, step: int) -> str:
  """``<directory>_sha256/<step>.json``: the checksums of a finished checkpoint."""
  return os.path.join(manifests(directory), f'{step}.json')


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


def verify(directory: str, step: int, require: bool) -> Optional[str]:
  """Checks checkpoint ``step``'s files against their sha256 record.

  Raises:
    DamagedCheckpoint: a file is missing or changed; or, with ``require``, there
      is no valid record to check against.
  Returns:
    None when verified; without ``require``, a warning when there is no valid
    record (the files could not be checked).
  """
  path = manifest_path(directory, step)
  where = os.path.join(directory, str(step))
  try:
    with open(path) as f:
      want = json.load(f)
    if not isinstance(want, dict) or not want:
      raise ValueError('empty')
  except (OSError, ValueError):
    why = 'no' if not os.path.exists(path) else 'an unreadable'
    if require:
      raise DamagedCheckpoint(
          f'{where} has {why} sha256 record ({path}), so its files cannot be checked; '
          'resume the run that wrote it to seal it, or use another kept step') from None
    return f'{where} has {why} sha256 record: restoring it unverified'
  got = _file_hashes(where)
  missing = sorted(set(want) - set(got))
  changed = sorted(k for k in set(want) & set(got) if want[k] != got[k])
  if missing:
    raise DamagedCheckpoint(f'{where}: files {", ".join(missing[:3])} missing')
  if changed:
    raise DamagedCheckpoint(f'{where}: files {", ".join(changed[:3])} changed since they '
                            'were written (sha256 mismatch)')
  return None


def _key(path) -> str:
  return '/'.join(str(getattr(k, 'key', getattr(k, 'name', getattr(k, 'idx', k))))
                  for k in path)


@contextlib.contextmanager
def _quiet_orbax():
  """Orbax warns 'Metadata file does not exist: .../_CHECKPOINT_METADATA' when it
  reads an item folder's metadata directly; that file lives one level up, so the
  warning says nothing about the checkpoint: silence it while reading."""
  level = absl_logging.get_verbosity()
  absl_logging.set_verbosity(absl_logging.ERROR)
  try:
    yield
  finally:
    absl_logging.set_verbosity(level)


def saved_arrays(step_dir: str) -> Dict[str, Any]:
  """The checkpoint's array metadata tree (shapes, dtypes), read without the arrays.

  Raises:
    DamagedCheckpoint when the metadata is missing or unreadable.
  """
  path = os.path.join(step_dir, 'default')
  try:
    with _quiet_orbax():
      checkpointer = ocp.StandardCheckpointer()
      metadata = checkpointer.metadata(path)
      checkpointer.close()
  except Exception as e:  # orbax raises many kinds
    raise DamagedCheckpoint(f'{step_dir}: metadata unreadable ({type(e).__name__}: '
                            f'{str(e)[:160]})') from None
  metadata = getattr(metadata, 'item_metadata', metadata)
  metadata = getattr(metadata, 'tree', metadata)
  if not isinstance(metadata, dict) or 'params' not in metadata:
    raise DamagedCheckpoint(f'{step_dir}: no array metadata (_METADATA missing or empty)')
  return metadata


def trained_classes(directory: str) -> int:
  """The number of classes the run's networks were trained with: its classifier's
  width in the newest kept checkpoint of ``directory`` (read from the metadata,
  no arrays). This, not the dataset being evaluated, sizes the restore target.

  Raises:
    NoCheckpoint when ``directory`` holds no checkpoint; DamagedCheckpoint when
    its metadata is unreadable or holds no classifier.
  """
  step = newest_step(directory, step_folders(directory))
  if step is None:
    raise NoCheckpoint(f'{directory}: no checkpoint; train first')
  step_dir = os.path.join(directory, str(step))
  saved = saved_arrays(step_dir)
  networks = list((saved.get('params') or {}).values())
  networks += [frozen.get('params') or {} for frozen in (saved.get('frozen') or {}).values()]
  for params in networks:
    kernel = ((params or {}).get('head') or {}).get('classifier', {}).get('kernel')
    if kernel is not None:
      return int(kernel.shape[-1])
  raise DamagedCheckpoint(f'{step_dir}: no classifier among its arrays')


def check_fits(step_dir: str, target: Any) -> None:
  """Raises CheckpointMismatch when the networks' arrays saved in ``step_dir``
  (params, batch_stats, frozen) differ in name or shape from ``target``'s."""
  saved = saved_arrays(step_dir)
  for part in ('params', 'batch_stats', 'frozen'):
    want = getattr(target, part, None) if not isinstance(target, dict) else target.get(part)
    if want is None:
      continue
    have = {_key(p): tuple(m.shape) for p, m in
            jax.tree_util.tree_flatten_with_path(saved.get(part) or {})[0]}
    need = {_key(p): tuple(x.shape) for p, x in jax.tree_util.tree_flatten_with_path(want)[0]}
    for key in sorted(set(have) | set(need)):
      if have.get(key) == need.get(key):
        continue
      if key not in have or key not in need:
        where = 'this config builds' if key in need else 'the checkpoint has'
        other = 'the checkpoint lacks it' if key in need else 'this config does not build it'
        raise CheckpointMismatch(
            f'{step_dir}: {where} {part}/{key} but {other}: the config (networks, '
            'model) differs from the one it was trained with; nothing was changed')
      cause = ('the dataset has another number of training classes than the run was '
               'trained on: point data.dir at that dataset'
               if key.endswith('classifier/kernel') and have[key][:-1] == need[key][:-1]
               else 'the model config (width, depth, non-local blocks) differs from '
               "the run's config.json")
      raise CheckpointMismatch(
          f'{step_dir}: {part}/{key} is {have[key]} in the checkpoint but {need[key]} '
          f'here: {cause}; nothing was changed')


def read_verified(step_dir: str, target: Any, *, require: bool = True,
                  partial: bool = False) -> Any:
  """The one read of a checkpoint's files, for every reader (resume, evaluation,
  export, ``i2v_jax.load``, a frozen teacher): the files against their sha256
  record (`verify`; ``require=False``, resuming only, restores an unrecorded one
  with a warning), a whole state's arrays against ``target`` (`check_fits`), then
  orbax into ``target``'s shapes and shardings (``partial``: only the subtree
  ``target`` names). Files that fail to restore after their checksums matched are
  a mismatch, not damage."""
  directory, step = os.path.dirname(step_dir), int(os.path.basename(step_dir))
  warning = verify(directory, step, require)
  if warning:
    print(f'warning: {warning}', flush=True)
  if not partial:
    check_fits(step_dir, target)
  path = os.path.join(step_dir, 'default')
  try:
    with _quiet_orbax():
      if partial:
        checkpointer = ocp.PyTreeCheckpointer()
        restored = checkpointer.restore(path, args=ocp.args.PyTreeRestore(
            item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
            partial_restore=True))
      else:
        checkpointer = ocp.StandardCheckpointer()
        restored = checkpointer.restore(path, target)
      checkpointer.close()
    return restored
  except Exception as e:  # orbax/tensorstore raise many kinds
    text = f'{type(e).__name__}: {" ".join(str(e).split())[:200]}'
    if warning:  # unverified files that do not read: damage
      raise DamagedCheckpoint(f'{step_dir}: unreadable ({text})') from None
    raise CheckpointMismatch(f'{step_dir}: its files are intact (sha256 verified) but do '
                             f'not restore into this config ({text}); nothing was '
                             'changed') from None


def step_folders(directory: str) -> List[int]:
  """The steps with a folder in ``directory`` (whole or not; [] without the folder)."""
  if not os.path.isdir(directory):
    return []
  return sorted(int(n) for n in os.listdir(directory) if n.isdigit())


def best_step(directory: str) -> Optional[int]:
  """The best checkpoint of a run: the one ``checkpoints_best`` keeps (it keeps
  one, replaced when a later evaluation beats it), found the same way by every
  reader. Raises DamagedCheckpoint when it is recorded but its files are gone."""
  return newest_step(directory, step_folders(directory))


def recorded_steps(directory: str) -> List[int]:
  """Steps whose save completed (they have a sha256 record), listed by orbax or not."""
  folder = manifests(directory)
  if not os.path.isdir(folder):
    return []
  return sorted(int(n[:-5]) for n in os.listdir(folder)
                if n.endswith('.json') and n[:-5].isdigit())


def newest_step(directory: str, listed: Iterable[int]) -> Optional[int]:
  """The newest checkpoint written, whole or not: orbax lists only folders it can
  read, so an emptied newest checkpoint would otherwise silently give the one
  before it.

  Raises:
    DamagedCheckpoint when the newest recorded step is not a readable checkpoint.
  """
  listed = set(listed)
  steps = listed | set(recorded_steps(directory))
  if not steps:
    return None
  step = max(steps)
  if step not in listed:
    raise DamagedCheckpoint(f'{directory}/{step}: recorded (sha256) as saved, but files are '
                            'missing (the folder is empty or incomplete)')
  return step


def prune_manifests(directory: str, kept: Iterable[int]) -> None:
  """Removes the checksums of checkpoints orbax has deleted."""
  folder = manifests(directory)
  if not os.path.isdir(folder):
    return
  kept = {f'{s}.json' for s in kept}
  for name in os.listdir(folder):
    if name.endswith('.json') and name not in kept:
      os.remove(os.path.join(folder, name))


class _DropOrbaxErrors:
  """A logging filter: orbax's own error records (each a traceback of the one
  failure the main thread then raises, and reports)."""

  def filter(self, record) -> bool:
    return not (record.levelno >= 40 and '/orbax/' in (record.pathname or ''))


@contextlib.contextmanager
def _quiet_while_saving():
  """During a save: orbax's error log records are dropped (the failure reaches
  the caller as an exception, named in one line or raised whole), and so are the
  'Event loop is closed' tracebacks tensorstore's callback threads print once a
  failed save has shut its event loop."""
  import sys
  import threading
  handler_filter = _DropOrbaxErrors()
  logger = absl_logging.get_absl_logger()
  logger.addFilter(handler_filter)
  previous = sys.excepthook

  def excepthook(kind, value, tb):
    if (threading.current_thread() is not threading.main_thread()
        and kind is RuntimeError and str(value) == 'Event loop is closed'):
      return
    previous(kind, value, tb)
  previous_unraisable = sys.unraisablehook

  def unraisablehook(unraisable):  # how tensorstore's threads report them
    if (unraisable.exc_type is RuntimeError
        and str(unraisable.exc_value) == 'Event loop is closed'):
      return
    previous_unraisable(unraisable)
  sys.excepthook, sys.unraisablehook = excepthook, unraisablehook
  yield  # a failed save keeps them in place: its threads go on printing while it unwinds
  logger.removeFilter(handler_filter)
  if sys.excepthook is excepthook:
    sys.excepthook = previous
  if sys.unraisablehook is unraisablehook:
    sys.unraisablehook = previous_unraisable


class Checkpoints:
  """The workdir's checkpoint managers: the last ``keep`` and the best by ``best_metric``."""

  def __init__(self, run: RunFolder, keep: int, best_metric: str = ''):
    self.run = run
    self.directory = run.checkpoints
    # Each manager gets its own multi-process barrier names: orbax names its
    # async-save barriers by step, so the latest and best managers saving the
    # same step at once (the final evaluation) collided across processes
    # ("Barrier _async_write_complete.<step> is already ongoing") and aborted.
    barriers = lambda prefix: ocp.options.MultiprocessingOptions(barrier_sync_key_prefix=prefix)
    self.manager = ocp.CheckpointManager(
        self.directory, options=ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True, multiprocessing_options=barriers('latest')))
    self.best_metric = best_metric
    self.best_directory = run.best
    # Steps this process saved and has not yet recorded: only they are sealed, so a
    # checkpoint found without a record (a run killed before sealing it) is never
    # given one later, and stays unverified for every reader.
    self._saving: Dict[str, set] = {'latest': set(), 'best': set()}
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
    with self._disk_full_is_one_line(self.best, step):
      if self.best.save(step, args=ocp.args.StandardSave(state),
                        metrics={self.best_metric: float(metrics[self.best_metric])}, force=True):
        self._saving['best'].add(step)
      self._seal()
    return True

  def latest_step(self) -> Optional[int]:
    return self.manager.latest_step()

  def save(self, step: int, state: Any, force: bool = False) -> None:
    """Saves and, once the save is complete, records its checksums (blocking, so a
    kept checkpoint is without a record only if the process died in between)."""
    with self._disk_full_is_one_line(self.manager, step):
      if self.manager.save(step, args=ocp.args.StandardSave(state), force=force):
        self._saving['latest'].add(step)
      self._seal()

  @contextlib.contextmanager
  def _disk_full_is_one_line(self, manager, step: int):
    """A save that fills the disk: its partial folder is removed (orbax writes a
    step under a temporary name and renames it when complete, so the kept
    checkpoints are whole) and the error is one line (`DiskFull`), without the
    ~2,500 lines orbax's and tensorstore's threads print on the way
    (`_quiet_while_saving`)."""
    try:
      with _quiet_while_saving():
        yield
    except Exception as e:  # orbax wraps the OSError
      if not is_disk_full(e):
        raise
      directory = str(manager.directory)
      for partial in glob.glob(os.path.join(directory, f'{step}.orbax-checkpoint-tmp*')):
        shutil.rmtree(partial, ignore_errors=True)
      kept = sorted(s for s in manager.all_steps() if s != step)
      raise DiskFull(f'{directory}: no space left on the device while saving checkpoint '
                     f'{step} ({free_space(directory)} free); the checkpoints kept before it '
                     f'({kept or "none"}) are whole; free space and run the same command to '
                     'resume') from None

  def _seal(self) -> None:
    """Waits for pending saves and writes the checksums of the steps this process
    saved (never of a step it found unrecorded)."""
    for name, manager in (('latest', self.manager), ('best', self.best)):
      manager.wait_until_finished()
      directory = str(manager.directory)
      saved, kept = self._saving[name], set(manager.all_steps())
      if jax.process_index() == 0:
        for step in sorted(saved & kept):
          write_manifest(directory, step)
        prune_manifests(directory, kept)
      saved.clear()

  def restore(self, target: Any, step: Optional[int] = None) -> Tuple[Any, int]:
    """Resuming: restores into the shapes and shardings of ``target``: ``step``,
    or the newest checkpoint that is whole.

    A damaged checkpoint (`DamagedCheckpoint`) is skipped, said which and why,
    and moved, untouched, to ``checkpoints_damaged/``, so training continues from
    the one before it. A whole checkpoint that does not fit (`CheckpointMismatch`)
    stops the resume with nothing moved.
    """
    if step is not None:
      return self._restore_verified(self.manager, target, step, require=False), step
    for step in sorted(self.manager.all_steps(), reverse=True):
      try:
        return self._restore_verified(self.manager, target, step, require=False), step
      except DamagedCheckpoint as e:
        print(f'warning: skipping checkpoint {step}: {e}', flush=True)
        self._set_aside(step)
    raise DamagedCheckpoint(f'{self.directory}: no checkpoint restores (each skipped one is '
                            'in checkpoints_damaged/); delete the workdir to start afresh')

  def _restore_verified(self, manager, target: Any, step: int, require: bool = True) -> Any:
    """`read_verified` of ``step`` in ``manager``'s folder."""
    return read_verified(os.path.join(str(manager.directory), str(step)), target,
                         require=require)

  def _set_aside(self, step: int) -> None:
    """Moves a damaged step out of the manager's way (never deletes it)."""
    if jax.process_index() == 0:
      damaged = self.run.damaged
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
    """``which``: 'latest', 'best' or a step number kept in checkpoints/. Verified
    like every reader; nothing is ever moved (`DamagedCheckpoint` names the
    other kept steps)."""
    kept = sorted(self.manager.all_steps())
    if which == 'best':
      try:
        step = best_step(self.best_directory)
      except DamagedCheckpoint as e:
        raise DamagedCheckpoint(f'{e}; evaluate eval.checkpoint=latest instead') from None
      if step is None:
        raise NoCheckpoint(f'{self.best_directory}: no best checkpoint; train with '
                                'evaluations (train.eval_every) or use eval.checkpoint=latest')
      try:
        return self._restore_verified(self.best, target, step), step
      except DamagedCheckpoint as e:
        raise DamagedCheckpoint(f'{e}; evaluate eval.checkpoint=latest instead') from None
    if which == 'latest':
      try:
        step = newest_step(self.directory, kept)
      except DamagedCheckpoint as e:
        others = f'eval.checkpoint={kept[-1]}' if kept else 'eval.checkpoint=best'
        raise DamagedCheckpoint(f'{e}; evaluate another kept step ({others})') from None
      if step is None:
        raise NoCheckpoint(f'{self.directory}: no checkpoint; train first')
    else:
      step = int(which)
      if step not in kept:
        raise NoCheckpoint(
            f'{self.directory}: no checkpoint {which!r} (kept: {kept}); train first or set '
            'eval.checkpoint to latest, best or a kept step')
    try:
      return self._restore_verified(self.manager, target, step), step
    except DamagedCheckpoint as e:
      others = [k for k in kept if k != step]
      raise DamagedCheckpoint(f'{e}; evaluate another kept step (eval.checkpoint='
                              f'{others[-1] if others else "best"})') from None

  def wait(self) -> None:
    self._seal()

  def close(self) -> None:
    self.manager.close()
    self.best.close()


def named_step(workdir: str, which: str) -> Optional[int]:
  """The step ``which`` ('best', 'latest' or a step) names in a run's checkpoints."""
  directory = RunFolder(workdir).checkpoint_dir(which)
  if which == 'best':
    return best_step(directory)
  if which == 'latest':
    return newest_step(directory, step_folders(directory))
  return int(which)


def record_sha256(workdir: str, which: str, step: int) -> Optional[str]:
  """sha256 of a checkpoint's checksum record (which holds every file's sha256):
  the identity of the weights; None for an unrecorded checkpoint."""
  path = manifest_path(RunFolder(workdir).checkpoint_dir(which), step)
  if not os.path.isfile(path):
    return None
  with open(path, 'rb') as f:
    return hashlib.sha256(f.read()).hexdigest()


def model_id(workdir: str, which: str) -> str:
  """What names the weights ``which`` of a run: its checksum record's sha256 (an
  exported model's ``checkpoint_sha256_record`` too), else the run and step."""
  step = named_step(workdir, str(which))
  return record_sha256(workdir, str(which), step) or f'{os.path.abspath(workdir)}@{step}'


def load_network(workdir: str, network: str, which: str = 'latest') -> Dict[str, Any]:
  """{'params', 'batch_stats'} of ``network`` in a run's checkpoint, whatever
  topology wrote it (the restore target is built from the checkpoint's own
  metadata, onto this process's first device).

  Args:
    workdir: a training run's workdir.
    network: 'teacher' or 'student' (trained or frozen in that run).
    which: 'latest', 'best' or a step number.
  """
  which = str(which)
  if which not in ('latest', 'best') and not which.isdigit():
    raise NoCheckpoint(f'checkpoint {which!r}: choose latest, best or a step number')
  directory = RunFolder(workdir).checkpoint_dir(which)
  if not os.path.isdir(directory):
    raise NoCheckpoint(
        f'{directory}: no checkpoints; point at the workdir of a finished training run')
  steps = step_folders(directory)
  step = (best_step(directory) if which == 'best' else newest_step(directory, steps)
          if which == 'latest' else int(which))
  if step is None:
    raise NoCheckpoint(f'{directory}: no complete checkpoint yet')
  if step not in steps:
    raise NoCheckpoint(f'{directory}: no checkpoint {which!r} (kept: {sorted(steps)})')
  metadata = saved_arrays(os.path.join(directory, str(step)))
  trained = sorted(metadata.get('params', {}))
  frozen = sorted(metadata.get('frozen', {}) or {})
  if network not in trained + frozen:
    raise CheckpointMismatch(f'{directory}/{step}: has no {network} network (trained: {trained}, '
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
  tree = read_verified(os.path.join(directory, str(step)), target, partial=True)
  if network in trained:
    return {'params': tree['params'][network], 'batch_stats': tree['batch_stats'][network]}
  return dict(tree['frozen'][network])


def check_run(workdir: str, what: str,
              fix: str = 'point it at the workdir of a finished training run') -> None:
  """Without touching JAX: ``workdir`` is a training run holding a checkpoint.

  Raises:
    NoCheckpoint naming ``what`` (the config key), the folder and the fix.
  """
  directory = RunFolder(workdir).checkpoints
  if not os.path.isdir(directory):
    raise NoCheckpoint(f'{what}={workdir}: no checkpoints/ folder there; {fix}')
  if newest_step(directory, step_folders(directory)) is None:
    raise NoCheckpoint(f'{what}={workdir}: no complete checkpoint in {directory}; {fix}')


def load_teacher(workdir: str) -> Dict[str, Any]:
  """{'params', 'batch_stats'} of the trained teacher in a run's latest checkpoint
  (a teacher_only / vkd_teacher run: ``config.teacher.checkpoint``)."""
  try:
    return load_network(workdir, 'teacher')
  except (NoCheckpoint, CheckpointMismatch) as e:
    raise type(e)(f'{e}; config teacher.checkpoint must be the workdir of a finished '
                  'teacher_only (or mdkt, vkd_teacher) run') from None
