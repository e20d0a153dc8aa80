"""The one table of datasets a run can train on: what the config and the library
need to know about each before any file is read.

A dataset's files come from `data_prep` (its converter and its TFDS builder,
one entry each in `data_prep.tfds_builders.BUILDERS`, which a test keeps equal to
this table's names); its protocol is in docs/method.md §1. Adding a dataset is one
entry here plus those two (docs/extending.md).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Dict


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """One trainable dataset, as the config needs it before any file is read.

  ``num_train_ids`` = training classes of the full dataset, so a step can be
  compiled without the data (`i2v_jax.aot`) and an epoch counted (`steps_per_epoch`).
  What a built folder holds is `i2v_jax.dataset_folder.Dataset`'s to say.
  """
  name: str
  height: int
  width: int
  num_train_ids: int
  about: str

  def steps_per_epoch(self, ids_per_batch: int) -> int:
    """Batches of P identities in one pass over the training identities: ceil(ids / P)."""
    return math.ceil(self.num_train_ids / ids_per_batch)


DATASETS: Dict[str, DatasetInfo] = {d.name: d for d in (
    DatasetInfo('synthetic', 256, 128, 64,
                'generated person-like tracklets (data_prep/synthetic.py), no download'),
    DatasetInfo('objects', 128, 64, 300,
                'generated object categories (data_prep/objects.py): a pre-training pool'),
    DatasetInfo('mars', 256, 128, 625, 'MARS (Zheng et al., ECCV 2016)'),
    DatasetInfo('duke', 256, 128, 702, 'DukeMTMC-VideoReID (Wu et al., CVPR 2018)'),
    DatasetInfo('veri', 224, 224, 576, 'VeRi-776 vehicles (Liu et al., ICME 2016)'),
)}

# The config switches whose choices this module owns (`config_lib.choices` reads them).
CONFIG_CHOICES = {'data.name': tuple(DATASETS)}
