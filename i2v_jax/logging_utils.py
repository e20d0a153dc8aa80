"""Metric logging: ``metrics.jsonl`` and TensorBoard events in the workdir (process 0)."""

from __future__ import annotations

import json
import os
from typing import Dict


class MetricWriter:
  """Appends one JSON line per logged step and writes TensorBoard scalars."""

  def __init__(self, workdir: str, enabled: bool = True):
    self.enabled = enabled
    if not enabled:
      return
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    self._tf = tf
    self._jsonl = open(os.path.join(workdir, 'metrics.jsonl'), 'a', encoding='utf-8')
    self._tb = tf.summary.create_file_writer(os.path.join(workdir, 'tensorboard'))

  def write(self, step: int, metrics: Dict[str, float]) -> None:
    if not self.enabled:
      return
    self._jsonl.write(json.dumps({'step': step, **metrics}) + '\n')
    self._jsonl.flush()
    with self._tb.as_default():
      for name, value in metrics.items():
        self._tf.summary.scalar(name, value, step=step)
    self._tb.flush()

  def close(self) -> None:
    if self.enabled:
      self._jsonl.close()
      self._tb.close()
