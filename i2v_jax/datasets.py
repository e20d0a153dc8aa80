"""The one table of datasets a run can train on: what the config and the library
need to know about each before any file is read.

A dataset's files come from `data_prep` (its converter and its TFDS builder,
one entry each in `data_prep.tfds_builders.BUILDERS`, which a test keeps equal to
this table's names); its protocol is in docs/method.md §1. Adding a dataset is one
entry here plus those two (docs/extending.md).
"""

from __future__ import annotations

import dataclasses
from typing import Dict


@dataclasses.dataclass(frozen=True)
class Dataset:
  """One trainable dataset.

  ``steps_per_epoch`` at the default P = 8 identities a batch (the schedule of
  150 epochs is ``150 * steps_per_epoch``); ``num_train_ids`` = training classes,
  so a step can be compiled without the data (`i2v_jax.aot`).
  """
  name: str
  height: int
  width: int
  num_train_ids: int
  steps_per_epoch: int
  about: str


DATASETS: Dict[str, Dataset] = {d.name: d for d in (
    Dataset('synthetic', 256, 128, 64, 4,
            'generated person-like tracklets (data_prep/synthetic.py), no download'),
    Dataset('mars', 256, 128, 625, 79, 'MARS (Zheng et al., ECCV 2016)'),
    Dataset('duke', 256, 128, 702, 88, 'DukeMTMC-VideoReID (Wu et al., CVPR 2018)'),
    Dataset('veri', 224, 224, 576, 73, 'VeRi-776 vehicles (Liu et al., ICME 2016)'),
)}
