"""The TFDS builders: TFDS reads our builds, training reads TFDS's builds."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds

from data_prep import synthetic, tfds_builders
from i2v_jax import records, trainer
from tests import test_trainer
from tests.conftest import CLI_DATA, REPO


def _records(folder, dataset, split):
  """Every record of a split, parsed, in shard order."""
  out = []
  for n in sorted(f for f in os.listdir(folder) if f.startswith(f'{dataset}-{split}.tfrecord-')):
    path = os.path.join(folder, n)
    out += [records.parse(records.read_record(path, o)) for o in records.record_offsets(path)]
  return out


def _tfds_prepare(data_dir, spec):
  """The synthetic builder's own download_and_prepare; returns the version folder."""
  config = tfds_builders.SyntheticConfig(name='tiny', spec=spec)
  builder = tfds_builders.Synthetic(config=config, data_dir=data_dir)
  builder.download_and_prepare()
  return str(builder.data_dir)


def test_data_prep_build_is_a_tfds_dataset(cli_data_dir):
  builder = tfds.builder_from_directory(cli_data_dir)
  meta = records.load_metadata(cli_data_dir)
  assert builder.info.version == tfds_builders.VERSION
  for split, counts in meta['splits'].items():
    assert builder.info.splits[split].num_examples == counts['tracklets']
  query = list(tfds.as_numpy(builder.as_dataset(split='query')))
  expected = _records(cli_data_dir, 'synthetic', 'query')
  assert len(query) == len(expected)
  for got, want in zip(query, expected):  # same records, same order, frames decode
    assert got['name'].decode() == want['name']
    assert (got['pid'], got['camid'], got['label'], got['num_frames']) == (
        want['pid'], want['camid'], want['label'], want['num_frames'])
    assert got['frames'].shape == (want['num_frames'], CLI_DATA.height, CLI_DATA.width, 3)
    assert got['frames'].dtype == np.uint8


def test_tfds_builder_writes_what_data_prep_writes(tmp_path, cli_data_dir):
  folder = _tfds_prepare(str(tmp_path / 'tfds'), CLI_DATA)
  ours = records.load_metadata(cli_data_dir)
  theirs = records.load_metadata(folder)  # TFDS wrote it from the builder's MetadataDict
  assert theirs == ours
  for split in records.SPLITS:
    assert not os.path.exists(os.path.join(folder, f'index-{split}.json'))
    assert _records(folder, 'synthetic', split) == _records(cli_data_dir, 'synthetic', split)
    # The index computed from TFDS's shards describes the same tracklets.
    strip = lambda rows: [{k: v for k, v in r.items() if k not in ('shard', 'offset')}
                          for r in rows]
    rows = records.load_index(folder, split)
    assert strip(rows) == strip(records.load_index(cli_data_dir, split))
    assert os.path.exists(os.path.join(folder, f'index-{split}.json'))  # cached
    for r in rows[:3]:
      path = os.path.join(folder, r['shard'])
      assert records.parse(records.read_record(path, r['offset']))['name'] == r['name']


@pytest.mark.slow
def test_training_reads_a_tfds_build(tmp_path):
  folder = _tfds_prepare(str(tmp_path / 'tfds'), CLI_DATA)
  last = trainer.train_and_log(test_trainer.tiny_config(folder, steps=2), str(tmp_path / 'run'))
  assert np.isfinite(last['loss/total']) and 'i2v/mAP' in last


def test_real_builders_ask_for_manual_dir(tmp_path):
  for name in ('mars', 'duke', 'veri'):
    builder = tfds_builders.BUILDERS[name](data_dir=str(tmp_path))
    assert builder.MANUAL_DOWNLOAD_INSTRUCTIONS and builder.info.citation
    with pytest.raises(AssertionError, match='manual'):
      builder.download_and_prepare()


@pytest.mark.slow
def test_tfds_build_command_then_train(tmp_path):
  """`python -m data_prep.tfds_build` (tfds build) from the command line."""
  data_dir = str(tmp_path / 'tensorflow_datasets')
  env = dict(os.environ, PYTHONPATH=REPO)
  subprocess.run([sys.executable, '-m', 'data_prep.tfds_build', 'synthetic',
                  '--config', 'small', '--data_dir', data_dir],
                 cwd=REPO, env=env, check=True, capture_output=True)
  folder = os.path.join(data_dir, 'synthetic', 'small', str(tfds_builders.VERSION))
  with open(os.path.join(folder, 'dataset_info.json')) as f:
    info = json.load(f)
  assert info['configName'] == 'small' and info['disableShuffling']
  ds = tfds.load('synthetic/small', split='train', data_dir=data_dir)
  assert sum(1 for _ in ds) == records.load_metadata(folder)['splits']['train']['tracklets']
  small = synthetic.SPECS['small']
  assert records.load_metadata(folder)['protocol']['spec'] == {
      k: getattr(small, k) for k in small.__dataclass_fields__}
  last = trainer.train_and_log(test_trainer.tiny_config(folder, steps=2), str(tmp_path / 'run'))
  assert np.isfinite(last['loss/total'])
