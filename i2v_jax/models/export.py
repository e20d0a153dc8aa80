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

import sys
from typing import Any, Dict

from i2v_jax import checkpoint, command_line
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
  """``argv``: the command line, the program name first (``sys.argv`` when None)."""
  from absl import flags
  fl = flags.FlagValues()
  workdir = flags.DEFINE_string('workdir', None, 'a training run', flag_values=fl)
  network = flags.DEFINE_enum('network', 'student', ['student', 'teacher'],
                              'the network whose backbone is written', flag_values=fl)
  which = flags.DEFINE_string('checkpoint', 'latest', 'latest, best or a step', flag_values=fl)
  out = flags.DEFINE_string('out', None, 'output .npz', flag_values=fl)
  for name in ('workdir', 'out'):
    flags.mark_flag_as_required(name, flag_values=fl)
  command_line.parse(fl, argv, __doc__)
  try:
    n = export(workdir.value, network.value, out.value, which.value)
  except UserError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  print(f'wrote {out.value}: the {network.value} backbone of {workdir.value} '
        f'({n:,} parameters)')
  return 0


if __name__ == '__main__':
  sys.exit(main())
