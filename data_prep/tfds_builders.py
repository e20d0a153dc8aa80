r"""TFDS builders of the four datasets: ``synthetic``, ``mars``, ``duke``, ``veri``.

Each builds the one on-disk format (``i2v_jax.records``: one ``tf.train.Example``
per tracklet) as a TensorFlow Datasets dataset, so the usual TFDS tools work:

    tfds build synthetic --imports data_prep.tfds_builders --config small \
        --data_dir ~/tensorflow_datasets
    tfds build mars --imports data_prep.tfds_builders \
        --manual_dir ~/datasets/MARS --data_dir ~/tensorflow_datasets

    import tensorflow_datasets as tfds, data_prep.tfds_builders
    ds = tfds.load('synthetic/small', split='query', data_dir=...)
    ds = tfds.builder_from_directory('data/synthetic').as_dataset(split='train')

A ``tfds build`` output folder (``<data_dir>/<name>/<config>/<version>``) is also
a dataset folder for training: point ``data.data_dir`` at it; the per-record
index is computed from its shards on first use (``records.load_index``).
``python -m data_prep.build`` drives the same builders (conversion, features,
version, citation) but writes the shards with ``data_prep.writer``, which resumes
an interrupted build shard by shard; TFDS's own ``download_and_prepare`` starts
over (docs/datasets.md).

Records are written in the converter's order (``disable_shuffling``), with the
features ``records`` documents; ``metadata.json`` (our metadata: protocol,
id map, counts) is TFDS's ``MetadataDict`` of the build.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, List, Tuple

import numpy as np
import tensorflow_datasets as tfds

from data_prep import duke, mars, objects, synthetic, veri, writer
from i2v_jax import records
from i2v_jax.records import Tracklet

VERSION = tfds.core.Version(f'{records.SCHEMA_VERSION}.0.0')
RELEASE_NOTES = {str(VERSION): 'One tf.train.Example per tracklet (records.py).'}

Converted = Tuple[Dict[str, List[Tracklet]], Dict[str, object], List[str]]


def features() -> tfds.features.FeaturesDict:
  """The example of ``records.serialize`` as TFDS features (same keys, same types)."""
  return tfds.features.FeaturesDict({
      'frames': tfds.features.Sequence(
          tfds.features.Image(shape=(None, None, 3), encoding_format='jpeg')),
      'num_frames': tfds.features.Scalar(np.int64),
      'pid': tfds.features.Scalar(np.int64),
      'label': tfds.features.Scalar(np.int64),
      'camid': tfds.features.Scalar(np.int64),
      'name': tfds.features.Text(),
  })


class _ReidBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Shared by the four builders: converter -> splits -> examples."""

  VERSION = VERSION
  RELEASE_NOTES = RELEASE_NOTES
  HOMEPAGE = ''
  CITATION = ''
  DESCRIPTION = ''

  CONVERTER = None  # data_prep.<dataset>.convert(manual_dir, max_tracklets)

  def convert(self, manual_dir: str, max_tracklets: int = 0) -> Converted:
    """(splits, protocol, source files) of this dataset, by its converter."""
    return type(self).CONVERTER(writer.require_dir(manual_dir, self.name), max_tracklets)

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description=self.DESCRIPTION, features=features(), homepage=self.HOMEPAGE,
        citation=self.CITATION, metadata=tfds.core.MetadataDict(),
        disable_shuffling=True)  # records in converter order, as data_prep writes them

  def _split_generators(self, dl_manager):
    manual_dir = str(dl_manager.manual_dir) if self.MANUAL_DOWNLOAD_INSTRUCTIONS else ''
    splits, protocol, sources = self.convert(manual_dir)
    self.info.metadata.update(
        writer.dataset_metadata(self.name, splits, protocol, sources))
    return {split: self._generate_examples(ts) for split, ts in splits.items()}

  def _generate_examples(self, tracklets):
    for i, t in enumerate(tracklets):
      frames = [writer.read_frame(f, verify=True) for f in t.frames]
      yield i, {'frames': frames, 'num_frames': len(frames), 'pid': t.pid,
                'label': t.label, 'camid': t.camid, 'name': t.name}


@dataclasses.dataclass
class SyntheticConfig(tfds.core.BuilderConfig):
  spec: synthetic.SyntheticSpec = dataclasses.field(default_factory=synthetic.SyntheticSpec)


@dataclasses.dataclass
class ObjectsConfig(tfds.core.BuilderConfig):
  spec: objects.ObjectSpec = dataclasses.field(default_factory=objects.ObjectSpec)


class _GeneratedBuilder(_ReidBuilder, skip_registration=True):
  """A dataset rendered by a generator module (its ``generate(spec)``), no download."""

  GENERATOR = None  # the module: SPECS and generate

  def convert(self, manual_dir: str = '', max_tracklets: int = 0) -> Converted:
    splits, protocol = type(self).GENERATOR.generate(self.builder_config.spec)
    if max_tracklets:
      splits = {k: v[:max_tracklets] for k, v in splits.items()}
    return splits, protocol, []


class Synthetic(_GeneratedBuilder):
  """The embedded synthetic benchmark (data_prep/synthetic.py); no download."""

  DESCRIPTION = synthetic.__doc__
  GENERATOR = synthetic
  BUILDER_CONFIGS = [SyntheticConfig(name=n, description=f'synthetic.SPECS[{n!r}]', spec=s)
                     for n, s in synthetic.SPECS.items()]
  DEFAULT_CONFIG_NAME = 'small'


class Objects(_GeneratedBuilder):
  """Generated object categories (data_prep/objects.py): the ``generic`` start's
  classification pre-training pool; no person in it, no download."""

  DESCRIPTION = objects.__doc__
  GENERATOR = objects
  BUILDER_CONFIGS = [ObjectsConfig(name=n, description=f'objects.SPECS[{n!r}]', spec=s)
                     for n, s in objects.SPECS.items()]
  DEFAULT_CONFIG_NAME = 'generic'


class Mars(_ReidBuilder):
  """MARS video person re-identification (Zheng et al., ECCV 2016)."""

  DESCRIPTION = mars.__doc__
  CONVERTER = mars.convert
  HOMEPAGE = 'http://zheng-lab.cecs.anu.edu.au/Project/project_mars.html'
  CITATION = """@inproceedings{zheng2016mars,
  title={{MARS}: A Video Benchmark for Large-Scale Person Re-identification},
  author={Zheng, Liang and Bie, Zhi and Sun, Yifan and Wang, Jingdong and Su, Chi
          and Wang, Shengjin and Tian, Qi},
  booktitle={ECCV}, year={2016}}"""
  MANUAL_DOWNLOAD_INSTRUCTIONS = """Download bbox_train.zip and bbox_test.zip from the
  MARS project page and the info/ folder of the MARS-evaluation kit
  (github.com/liangzheng06/MARS-evaluation); extract them so that manual_dir holds
  bbox_train/, bbox_test/ and info/."""


class Duke(_ReidBuilder):
  """DukeMTMC-VideoReID (Wu et al., CVPR 2018)."""

  DESCRIPTION = duke.__doc__
  CONVERTER = duke.convert
  HOMEPAGE = 'https://github.com/Yu-Wu/DukeMTMC-VideoReID'
  CITATION = """@inproceedings{wu2018exploit,
  title={Exploit the Unknown Gradually: One-Shot Video-Based Person
         Re-Identification by Stepwise Learning},
  author={Wu, Yu and Lin, Yutian and Dong, Xuanyi and Yan, Yan and Ouyang, Wanli
          and Yang, Yi},
  booktitle={CVPR}, year={2018}}"""
  MANUAL_DOWNLOAD_INSTRUCTIONS = """Download DukeMTMC-VideoReID.zip (see the homepage;
  the dataset's terms of use apply) and extract it so that manual_dir holds
  train/, query/ and gallery/."""


class Veri(_ReidBuilder):
  """VeRi-776 vehicle re-identification (Liu et al., ICME 2016)."""

  DESCRIPTION = veri.__doc__
  CONVERTER = veri.convert
  HOMEPAGE = 'https://vehiclereid.github.io/VeRi/'
  CITATION = """@inproceedings{liu2016large,
  title={Large-scale vehicle re-identification in urban surveillance videos},
  author={Liu, Xinchen and Liu, Wu and Ma, Huadong and Fu, Huiyuan},
  booktitle={ICME}, year={2016}}"""
  MANUAL_DOWNLOAD_INSTRUCTIONS = """Request VeRi-776 from its authors (homepage) and
  extract the archive so that manual_dir holds image_train/, image_query/,
  image_test/, name_train.txt, name_query.txt and test_track.txt."""


BUILDERS = {'synthetic': Synthetic, 'objects': Objects, 'mars': Mars, 'duke': Duke,
            'veri': Veri}
