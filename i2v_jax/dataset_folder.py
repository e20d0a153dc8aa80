"""A dataset folder, opened once: `Dataset.open` reads ``metadata.json`` and every
split's index, checks them against each other and against the shards' record
headers, and the object is handed to everything that reads the data (the input
pipeline, evaluation and its ranked-list pictures, the sweep's held-out check).

What the folder holds is its own fact: `Dataset.check_config` refuses a config
whose ``data.name`` names another dataset (a ``dataset=veri`` config pointed at a
MARS folder) or whose P x K batch asks for more identities than it has, in one
line, before any JAX work. The number of classes a *trained* network has is the
run's, not the dataset's (a run evaluates on another dataset, cross-domain), so
`num_classes` here is only what a fresh training sizes its classifiers with.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Dict, Mapping, Sequence, Tuple

from i2v_jax import records
from i2v_jax.datasets import DATASETS

_REBUILD = 'rebuild with python -m data_prep.build'


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
  """A complete `data_prep.build` output: its metadata and every split's index rows.

  Attributes:
    dir: the folder.
    metadata: ``metadata.json`` (counts per split, ``id_map``, protocol, ...).
    index: split -> the rows of ``index-<split>.json`` (shard, offset, pid, camid,
      label, num_frames, name), in record order. Callers must not modify them.
  """
  dir: str
  metadata: Mapping[str, object]
  index: Mapping[str, Tuple[Dict[str, object], ...]]

  @classmethod
  def open(cls, data_dir: str) -> 'Dataset':
    """Reads and checks the folder (see the module docstring).

    Raises:
      records.DatasetError naming the file and the fix: a missing or partial
      build, a damaged or edited index or metadata, a truncated shard.
    """
    meta = records.load_metadata(data_dir)
    index = {split: tuple(records.load_index(data_dir, split)) for split in records.SPLITS}
    dataset = cls(data_dir, meta, index)
    dataset._check_index()
    for split in records.SPLITS:
      records.check_shards(data_dir, split, index[split])
    return dataset

  @property
  def name(self) -> str:
    return str(self.metadata['dataset'])

  @property
  def num_classes(self) -> int:
    """Training identities (the classifier size of a run trained on this folder)."""
    return int(self.metadata['num_classes'])

  @property
  def protocol(self) -> Mapping[str, object]:
    return self.metadata.get('protocol', {})

  @property
  def image_only_queries(self) -> bool:
    """The query split holds single images (VeRi): V2V queries come from the gallery."""
    return 'v2v_query' in self.protocol

  def rows(self, split: str) -> Tuple[Dict[str, object], ...]:
    return self.index[split]

  def file(self, name: str) -> str:
    """A file of the folder: a shard, ``metadata.json``, ``index-train.json``."""
    return os.path.join(self.dir, name)

  def summary(self) -> str:
    """The dataset summary table (ids, tracklets, frames, cameras per split)."""
    return records.summary_table(self.metadata)

  def check_config(self, config, *, training: bool = True) -> None:
    """The config describes this folder: ``data.name`` is the dataset it holds and,
    to train, the P x K batch fits its training identities.

    Raises:
      records.DatasetError, one line naming the key, the folder and the fix.
    """
    if config.data.name != self.name:
      hint = (f'--config=<file>:dataset={self.name}' if self.name in DATASETS
              else f'a folder built for data.name={config.data.name!r}')
      raise records.DatasetError(
          f'config data.name={config.data.name!r} but {self.file("metadata.json")} holds '
          f'the {self.name!r} dataset; use {hint}, or point --config.data.dir at a '
          f'{config.data.name} build')
    ids = self.num_classes  # = the train index's labels (checked when opened)
    if training and config.input.num_ids > ids:
      raise records.DatasetError(
          f'config input.num_ids={config.input.num_ids} (P of the P x K batch) but '
          f'{self.file("index-train.json")} has {ids} training identities; lower '
          f'--config.input.num_ids to at most {ids} or use more data')
    names = set(str(r['name']) for r in self.rows('query'))
    unknown = [q for q in config.eval.visualize_queries if q not in names]
    if unknown:
      raise records.DatasetError(
          f'config eval.visualize_queries: {unknown[:3]} not in {self.file("index-query.json")}'
          f' (query tracklet names, e.g. {sorted(names)[:2]}); name query tracklets of '
          'this dataset')

  def _check_index(self) -> None:
    """The indexes agree with ``metadata.json`` (counts per split) and, for the
    training split, with its ``id_map`` (every label is its pid's), and no record
    is listed twice: an edited index cannot change results silently."""
    meta, id_map = self.metadata, self.metadata['id_map']
    for split in records.SPLITS:
      rows, path = self.rows(split), self.file(f'index-{split}.json')
      keys = [(r['shard'], int(r['offset'])) for r in rows]
      if len(set(keys)) != len(keys):
        twice = next(k for k in keys if keys.count(k) > 1)
        raise records.DatasetError(f'{path}: the record at byte {twice[1]} of {twice[0]} is '
                                   f'listed twice; the index is edited or damaged: {_REBUILD}')
      for row in rows:
        if not isinstance(row.get('num_frames'), int) or row['num_frames'] < 1:
          raise records.DatasetError(f'{path}: tracklet {row.get("name")!r} has num_frames='
                                     f'{row.get("num_frames")!r}; the index is edited or '
                                     f'damaged: {_REBUILD}')
      want = (meta.get('splits') or {}).get(split)
      have = counts(rows)
      if want is not None and {k: want.get(k) for k in have} != have:
        diff = ', '.join(f'{k} {want.get(k)} vs {v}' for k, v in have.items()
                         if want.get(k) != v)
        raise records.DatasetError(
            f'{path}: disagrees with {self.file("metadata.json")} ({diff}: metadata vs '
            f'index); one of them is edited or from another build: {_REBUILD}')
    labels = {int(r['label']) for r in self.rows('train')}
    if labels != set(range(self.num_classes)):
      raise records.DatasetError(
          f'{self.file("metadata.json")}: num_classes={self.num_classes} but the train index '
          f'has {len(labels)} labels from {min(labels, default=None)} to '
          f'{max(labels, default=None)}; the files come from different builds: {_REBUILD}')
    for row in self.rows('train'):
      if id_map.get(str(row['pid'])) != row.get('label'):
        raise records.DatasetError(
            f'{self.file("index-train.json")}: tracklet {row.get("name")!r} (pid {row["pid"]}) '
            f'has label {row.get("label")!r} but {self.file("metadata.json")} maps that pid to '
            f'{id_map.get(str(row["pid"]))!r}; the files are edited or come from different '
            f'builds: {_REBUILD}')


def counts(rows: Sequence[Mapping[str, object]]) -> Dict[str, int]:
  """A split's counts as ``metadata.json`` records them (the build writes them with it)."""
  return {'tracklets': len(rows),
          'ids': len({r['pid'] for r in rows}),
          'frames': int(sum(int(r['num_frames']) for r in rows)),
          'cameras': len({r['camid'] for r in rows})}

