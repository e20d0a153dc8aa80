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

import argparse
import dataclasses
import os
import sys

from data_prep import objects, synthetic, tfds_builders
from data_prep.writer import DataError, build_lock, write_dataset
from i2v_jax import records
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
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--dataset', required=True, choices=sorted(tfds_builders.BUILDERS))
  p.add_argument('--manual_dir', default='', help='the extracted dataset folder')
  p.add_argument('--out_dir', required=True)
  p.add_argument('--max_tracklets', type=int, default=0,
                 help='keep the first N tracklets of each split (quick trials)')
  p.add_argument('--workers', type=int, default=os.cpu_count() or 4)
  p.add_argument('--overwrite', action='store_true',
                 help='replace a different finished dataset in --out_dir (once the new '
                 'build is complete)')
  p.add_argument('--no_verify', action='store_true',
                 help='skip decoding every JPEG once (faster): a file whose first bytes '
                 'are not JPEG is still refused, but a truncated or corrupt JPEG is found '
                 'only when training or evaluation decodes it')
  p.add_argument('--objects_preset', default='generic', choices=sorted(objects.SPECS),
                 help='--dataset objects: named settings (data_prep/objects.py SPECS)')
  p.add_argument('--synthetic_preset', default='small', choices=sorted(synthetic.SPECS),
                 help='named generator settings (data_prep/synthetic.py SPECS)')
  for field in synthetic.SyntheticSpec.__dataclass_fields__.values():
    p.add_argument(f'--synthetic_{field.name}', type=type(field.default), default=None,
                   help=f'override one setting of the preset (small: {field.default})')
  args = p.parse_args(argv)
  spec = dataclasses.replace(synthetic.SPECS[args.synthetic_preset], **{
      name: getattr(args, f'synthetic_{name}')
      for name in synthetic.SyntheticSpec.__dataclass_fields__
      if getattr(args, f'synthetic_{name}') is not None})
  if args.dataset == 'objects':
    spec = objects.SPECS[args.objects_preset]
  try:
    meta = build(args.dataset, args.out_dir, args.manual_dir, args.max_tracklets,
                 args.workers, not args.no_verify, spec=spec, overwrite=args.overwrite)
  except UserError as e:  # DataError, or Locked: another build of this --out_dir
    print(f'error: {e}', file=sys.stderr)
    return 2
  print(records.summary_table(meta))
  print(f'wrote {args.out_dir}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
