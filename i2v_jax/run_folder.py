"""The layout of a run's folder: every path a run writes or reads is named here, and
only here (`tests/test_layout.py` refuses a run path spelled in another module).

A training run (``--workdir``)::

  config.json            the resolved config it was trained with
  dataset.json           the dataset it trained on (name, folder, classes, checksum)
  lock                   held by the one process that writes the run
  data/                  the synthetic dataset, built on demand when data.dir is empty
  checkpoints/<step>/    the last train.keep_checkpoints states (orbax)
  checkpoints_best/<step>/   the state with the best train.best_metric
  checkpoints_sha256/, checkpoints_best_sha256/   each saved step's file checksums
  checkpoints_damaged/   checkpoints a resume set aside (never deleted)
  metrics.jsonl, tensorboard/   every logged step
  results.json, results.md, cmc.png, training.png   the last evaluation, the plots
  features-<split>-<kind>.npz, ranked_<protocol>.png   eval.export / eval.visualize
  eval/index.jsonl, eval/lock, eval/<step>-<checkpoint>[-<tag>]/   evaluate mode

An evaluation folder (``eval/<...>/``) holds the same result files as a run's root,
so it is a `RunFolder` too. Which checkpoint steps exist is the checkpoint module's
business (`i2v_jax.checkpoint`): this module only names where they live.
"""

from __future__ import annotations

import dataclasses
import os
import re

_TAG = re.compile(r'[A-Za-z0-9][A-Za-z0-9._+-]*')


@dataclasses.dataclass(frozen=True)
class RunFolder:
  """The paths of one run (or evaluation) folder; nothing is read or created."""

  root: str

  def path(self, name: str) -> str:
    return os.path.join(self.root, name)

  @property
  def config(self) -> str:
    return self.path('config.json')

  @property
  def dataset_record(self) -> str:
    """``dataset.json``: the dataset a training run started on (name, folder, classes,
    metadata checksum), so a resume on another build is refused."""
    return self.path('dataset.json')

  @property
  def lock(self) -> str:
    return self.path('lock')

  @property
  def data(self) -> str:
    """Where the synthetic dataset is built when ``data.dir`` is empty."""
    return self.path('data')

  @property
  def checkpoints(self) -> str:
    return os.path.join(os.path.abspath(self.root), 'checkpoints')

  @property
  def best(self) -> str:
    return self.checkpoints + '_best'

  @property
  def damaged(self) -> str:
    return self.checkpoints + '_damaged'

  def checkpoint_dir(self, which: str) -> str:
    """``checkpoints_best`` for 'best', else ``checkpoints`` ('latest' or a step)."""
    return self.best if which == 'best' else self.checkpoints

  @property
  def metrics(self) -> str:
    return self.path('metrics.jsonl')

  @property
  def tensorboard(self) -> str:
    return self.path('tensorboard')

  @property
  def results_json(self) -> str:
    return self.path('results.json')

  @property
  def results_md(self) -> str:
    return self.path('results.md')

  @property
  def training_plot(self) -> str:
    return self.path('training.png')

  @property
  def cmc_plot(self) -> str:
    return self.path('cmc.png')

  def features(self, key: str) -> str:
    """``features-<split>-<kind>.npz`` for the features entry ``<split>/<kind>``."""
    return self.path(f'features-{key.replace("/", "-")}.npz')

  def ranked(self, protocol: str) -> str:
    """The ranked-list picture of a protocol (``i2v``, ``i2v+rerank``, ...)."""
    return self.path(f'ranked_{protocol}.png')

  @property
  def eval_root(self) -> str:
    return self.path('eval')

  @property
  def eval_index(self) -> str:
    return os.path.join(self.eval_root, 'index.jsonl')

  @property
  def eval_lock(self) -> str:
    return os.path.join(self.eval_root, 'lock')

  def evaluation(self, step: int, which: str, tag: str = '') -> 'RunFolder':
    """``eval/<step>-<latest|best|step>[-<tag>]``: the folder of one evaluation."""
    name = f'{step}-{which}' + (f'-{tag}' if tag else '')
    return RunFolder(os.path.join(self.eval_root, name))

  def evaluation_at(self, relative: str) -> 'RunFolder':
    """An evaluation folder as ``eval/index.jsonl`` records it (relative to the root)."""
    return RunFolder(os.path.join(self.root, relative))

  def relative(self, path: str) -> str:
    return os.path.relpath(path, self.root)


def tag_problem(tag: str) -> str:
  """Why ``tag`` cannot name an evaluation folder (a single plain name), or ''."""
  if not tag or (_TAG.fullmatch(tag) and tag not in ('.', '..')):
    return ''
  return ('it must be one plain name (letters, digits, and . _ + - after the first), '
          'so the results stay inside <workdir>/eval/')


def manifests(checkpoint_dir: str) -> str:
  """The folder of a checkpoint folder's sha256 records (``<dir>_sha256``)."""
  return checkpoint_dir + '_sha256'
