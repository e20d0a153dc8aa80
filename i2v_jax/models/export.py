r"""A trained run's backbone as an initialisation (the format of `convert`).

    python -m i2v_jax.models.export --workdir=runs/pretrain --network=student \
        --out=backbone.npz [--checkpoint=latest|best|<step>]

writes the ResNet trunk of ``--network`` (its ``params/backbone`` and
``batch_stats/backbone``, non-local blocks included if the network has them)
as an ``.npz`` that ``--config.model.pretrained=backbone.npz`` loads exactly as
a converted torchvision ResNet-50: every other run starts from this run's trunk
(MARS from a Duke model, the synthetic benchmark from its pre-training pool).
Heads are not exported: their classes belong to the exporting run's dataset.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Dict

from i2v_jax import checkpoint
from i2v_jax.errors import UserError
from i2v_jax.models import convert


def backbone_of(variables: Dict[str, Any]) -> Dict[str, Any]:
  """{'params', 'batch_stats'} of a network -> the same of its backbone only."""
  return {c: variables[c]['backbone'] for c in ('params', 'batch_stats')}


def export(workdir: str, network: str, out: str, which: str = 'latest') -> int:
  """Writes the backbone; returns its number of parameters."""
  variables = backbone_of(checkpoint.load_network(workdir, network, which))
  convert.save_npz(variables, out)
  return sum(v.size for v in convert.flatten(variables['params']).values())


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--workdir', required=True, help='a training run')
  p.add_argument('--network', default='student', choices=['student', 'teacher'])
  p.add_argument('--checkpoint', default='latest', help='latest, best or a step')
  p.add_argument('--out', required=True, help='output .npz')
  args = p.parse_args(argv)
  try:
    n = export(args.workdir, args.network, args.out, args.checkpoint)
  except UserError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  print(f'wrote {args.out}: the {args.network} backbone of {args.workdir} '
        f'({n:,} parameters)')
  return 0


if __name__ == '__main__':
  sys.exit(main())
