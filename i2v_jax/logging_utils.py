"""Metric logging: ``metrics.jsonl`` and TensorBoard events in the workdir (process 0).

The events are plain scalar summaries (``simple_value``): TensorBoard shows them,
and scripts read them with ``EventAccumulator(...).Scalars(tag)`` (docs/training.md).

One value per step, also across a crash: a run resumed from step S first drops
the lines after S from ``metrics.jsonl`` (they belong to steps it will redo) and
marks a (re)start at S + 1 in the TensorBoard log, which makes TensorBoard discard
the orphaned events after S (its ``SessionLog.START`` purge; `mark_start`).
"""

from __future__ import annotations

import json
import os
import time
from typing import Dict, Optional

from i2v_jax import atomic
from i2v_jax.errors import DiskFull, free_space, is_disk_full
from i2v_jax.run_folder import RunFolder


def _event_writer(tb_dir: str, suffix: str = ''):
  from tensorboard.summary.writer.event_file_writer import EventFileWriter
  return EventFileWriter(tb_dir, filename_suffix=suffix)


class MetricWriter:
  """Appends one JSON line per logged step and writes TensorBoard scalars."""

  def __init__(self, workdir: str, enabled: bool = True, resumed_at: Optional[int] = None):
    self.enabled = enabled
    if not enabled:
      return
    run = RunFolder(workdir)
    path, tb_dir = run.metrics, run.tensorboard
    if resumed_at is not None and os.path.exists(path):  # a run before this one
      drop_after(path, resumed_at)
    # TensorBoard ignores a run's first START and, at each later one, drops the
    # events from its step on: so every run (first or resumed) begins with one.
    mark_start(tb_dir, (resumed_at or 0) + 1)
    self._jsonl = open(path, 'a', encoding='utf-8')
    self._tb = _event_writer(tb_dir)

  def write(self, step: int, metrics: Dict[str, float]) -> None:
    if not self.enabled:
      return
    size = self._jsonl.tell()
    try:
      self._jsonl.write(json.dumps({'step': step, **metrics}) + '\n')
      self._jsonl.flush()
    except OSError as e:
      if not is_disk_full(e):
        raise
      path = self._jsonl.name
      try:  # the buffer holds the torn line: close (its flush may fail again), then cut
        self._jsonl.close()
      except OSError:
        pass
      truncate_to(path, size)  # the lines before stay whole
      self._jsonl = open(path, 'a', encoding='utf-8')
      raise DiskFull(f'{path}: no space left on the device '
                     f'({free_space(path)} free) while logging step {step}; '
                     'the lines before it are whole; free space and run the same command '
                     'to resume') from None
    from tensorboard.compat.proto import event_pb2, summary_pb2
    values = [summary_pb2.Summary.Value(tag=name, simple_value=float(value))
              for name, value in metrics.items()]
    self._tb.add_event(event_pb2.Event(wall_time=time.time(), step=step,
                                       summary=summary_pb2.Summary(value=values)))
    self._tb.flush()

  def redo_step(self, step: int) -> None:
    """Forgets the evaluation values logged at ``step`` (a finished run evaluated
    again), keeping its training values: ``metrics.jsonl`` keeps one line per step
    and kind, and TensorBoard drops its events from ``step`` on (`mark_start`) and
    gets the training values of ``step`` again."""
    if not self.enabled:
      return
    self._jsonl.close()
    path = self._jsonl.name
    kept, training = [], None
    with open(path, encoding='utf-8') as f:
      for line in f:
        try:
          row = json.loads(line)
        except ValueError:
          continue
        if row.get('step') != step:
          kept.append(line if line.endswith('\n') else line + '\n')
        elif 'loss/total' in row:
          training = row
    atomic.write_text(''.join(kept), path)
    self._tb.close()
    tb_dir = RunFolder(os.path.dirname(path)).tensorboard
    mark_start(tb_dir, step)
    time.sleep(1.0)  # event files are read in name order, which starts with the second
    self._tb = _event_writer(tb_dir)
    self._jsonl = open(path, 'a', encoding='utf-8')
    if training is not None:
      self.write(step, {k: v for k, v in training.items() if k != 'step'})

  def close(self) -> None:
    if self.enabled:
      self._jsonl.close()
      self._tb.close()


def truncate_to(path: str, size: int) -> None:
  """Cuts ``path`` back to ``size`` bytes (what it held before a failed append)."""
  with open(path, 'r+b') as f:
    f.truncate(size)


def drop_after(path: str, step: int) -> None:
  """Rewrites ``metrics.jsonl`` without its lines for steps after ``step`` (atomically;
  a last line cut by the crash goes too)."""
  if not os.path.exists(path):
    return
  kept = []
  with open(path, encoding='utf-8') as f:
    for line in f:
      try:
        if json.loads(line)['step'] <= step:
          kept.append(line if line.endswith('\n') else line + '\n')
      except (ValueError, KeyError):
        pass  # a line the crash cut short
  atomic.write_text(''.join(kept), path)


def mark_start(tb_dir: str, step: int) -> None:
  """A ``SessionLog.START`` event at ``step``: from the second one in a log on,
  TensorBoard drops older events from ``step`` on (the steps a resumed run redoes)."""
  from tensorboard.compat.proto import event_pb2
  writer = _event_writer(tb_dir, '.start')
  writer.add_event(event_pb2.Event(
      wall_time=time.time(), step=step,
      session_log=event_pb2.SessionLog(status=event_pb2.SessionLog.START)))
  writer.close()
