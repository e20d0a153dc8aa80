r"""Builds a dataset's sharded TFRecords, index and metadata.

    python -m data_prep.build --dataset synthetic --out_dir data/synthetic
    python -m data_prep.build --dataset synthetic --synthetic_preset benchmark \
        --out_dir data/benchmark
    python -m data_prep.build --dataset mars --manual_dir ~/datasets/MARS \
        --out_dir data/mars [--max_tracklets 50] [--workers 8]

``--manual_dir`` is the folder you downloaded and extracted (see docs/datasets.md for the
layout each dataset needs). Interrupt it at any time: re-running the same command
keeps the finished shards and writes the rest; ``metadata.json`` appears only
when the build is complete. The folder is also a TFDS dataset
(``tfds.builder_from_directory(out_dir)``); ``data_prep/tfds_builders.py`` has the
builders, for ``tfds build`` as well.
"""

from __future__ import annotations

import dataclasses
import os
import sys

from data_prep import objects, synthetic, tfds_builders
from data_prep.writer import DataError, build_lock, write_dataset
from i2v_jax import command_line, records
from i2v_jax.errors import UserError


def build(dataset: str, out_dir: str, manual_dir: str = '', max_tracklets: int = 0,
          workers: int = 4, verify: bool = True, show_progress: bool = True,
          spec: synthetic.SyntheticSpec | objects.ObjectSpec | None = None,
          overwrite: bool = False):
  """Converts with the dataset's TFDS builder and writes; returns the metadata.
  The folder's build lock is taken first, so a second build of one --out_dir is
  refused at once, not after its conversion."""
  if max_tracklets < 0:
    raise DataError(f'--max_tracklets {max_tracklets}: must be 0 (every tracklet) or a '
                    'positive count per split')
  with build_lock(out_dir):
    return _build(dataset, out_dir, manual_dir, max_tracklets, workers, verify,
                  show_progress, spec, overwrite)


def _build(dataset, out_dir, manual_dir, max_tracklets, workers, verify, show_progress,
           spec, overwrite):
  if dataset == 'synthetic':
    spec = spec or synthetic.SyntheticSpec()
    names = [n for n, s in synthetic.SPECS.items() if s == spec]
    config = names[0] if names else tfds_builders.SyntheticConfig(
        name='custom', spec=spec, description='data_prep.build --synthetic_* settings')
    builder = tfds_builders.Synthetic(config=config, data_dir=out_dir)
  elif dataset == 'objects':
    spec = spec or objects.GENERIC
    names = [n for n, s in objects.SPECS.items() if s == spec]
    if not names:
      raise DataError(f'objects spec {spec} is not one of objects.SPECS')
    builder = tfds_builders.Objects(config=names[0], data_dir=out_dir)
  else:
    builder = tfds_builders.BUILDERS[dataset](data_dir=out_dir)
  splits, protocol, sources = builder.convert(manual_dir, max_tracklets)
  shards = {'train': max(1, len(splits['train']) // 128),
            'query': max(1, len(splits['query']) // 256),
            'gallery': max(1, len(splits['gallery']) // 128)}
  return write_dataset(out_dir, builder, splits, protocol, sources, shards,
                       workers=workers, verify=verify, show_progress=show_progress,
                       overwrite=overwrite)


def main(argv=None) -> int:
  """``argv``: the command line, the program name first (``sys.argv`` when None)."""
  from absl import flags
  fl = flags.FlagValues()
  define = dict(flag_values=fl)
  dataset = flags.DEFINE_enum('dataset', None, sorted(tfds_builders.BUILDERS),
                              'the dataset to build', **define)
  manual_dir = flags.DEFINE_string('manual_dir', '', 'the extracted dataset folder', **define)
  out_dir = flags.DEFINE_string('out_dir', None, 'the dataset folder to write', **define)
  max_tracklets = flags.DEFINE_integer(
      'max_tracklets', 0, 'keep the first N tracklets of each split (quick trials)', **define)
  workers = flags.DEFINE_integer('workers', os.cpu_count() or 4, 'shards written at once',
                                 **define)
  overwrite = flags.DEFINE_bool('overwrite', False, 'replace a different finished dataset in '
                                '--out_dir (once the new build is complete)', **define)
  no_verify = flags.DEFINE_bool(
      'no_verify', False, 'skip decoding every JPEG once (faster): a file whose first bytes '
      'are not JPEG is still refused, but a truncated or corrupt JPEG is found only when '
      'training or evaluation decodes it', **define)
  objects_preset = flags.DEFINE_enum('objects_preset', 'generic', sorted(objects.SPECS),
                                     '--dataset=objects: named settings (data_prep/objects.py '
                                     'SPECS)', **define)
  synthetic_preset = flags.DEFINE_enum('synthetic_preset', 'small', sorted(synthetic.SPECS),
                                       'named generator settings (data_prep/synthetic.py '
                                       'SPECS)', **define)
  fields = synthetic.SyntheticSpec.__dataclass_fields__.values()
  overrides = {}
  for field in fields:
    kind = {int: flags.DEFINE_integer, float: flags.DEFINE_float,
            bool: flags.DEFINE_bool}[type(field.default)]
    overrides[field.name] = kind(f'synthetic_{field.name}', None, 'override one setting of '
                                 f'the preset (small: {field.default})', **define)
  for name in ('dataset', 'out_dir'):
    flags.mark_flag_as_required(name, flag_values=fl)
  command_line.parse(fl, argv, __doc__, program='python -m data_prep.build')
  spec = dataclasses.replace(synthetic.SPECS[synthetic_preset.value], **{
      name: flag.value for name, flag in overrides.items() if flag.value is not None})
  if dataset.value == 'objects':
    spec = objects.SPECS[objects_preset.value]
  try:
    meta = build(dataset.value, out_dir.value, manual_dir.value, max_tracklets.value,
                 workers.value, not no_verify.value, spec=spec, overwrite=overwrite.value,
                 show_progress=sys.stderr.isatty())
  except UserError as e:  # DataError, or Locked: another build of this --out_dir
    print(f'error: {e}', file=sys.stderr)
    return 2
  print(records.summary_table(meta))
  print(f'wrote {out_dir.value}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
