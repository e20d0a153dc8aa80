"""ImageNet initialisation: torchvision ResNet state dict -> Flax variables.

    python -m i2v_jax.models.convert --torchvision resnet50.pth --out resnet50.npz

reads a torchvision ResNet-50 checkpoint the user provides (``torch`` is needed for
this command only) and writes an ``.npz`` whose keys are ``params/...`` and
``batch_stats/...`` paths of `i2v_jax.models.ResNet`. Training loads that file
with `load_npz` and `merge_backbone`; nothing is ever downloaded.

Renames (torchvision -> Flax): ``layer2.3.conv1.weight`` -> ``layer2_3/conv1/kernel``
(OIHW -> HWIO), ``*.downsample.0`` -> ``downsample_conv``, ``*.downsample.1`` ->
``downsample_bn``, BatchNorm ``weight/bias/running_mean/running_var`` ->
``scale/bias`` (params) and ``mean/var`` (batch_stats). ``fc.*`` and
``num_batches_tracked`` are dropped.
"""

from __future__ import annotations

import os
import re
import sys
from typing import Any, Dict, Mapping, Tuple

import numpy as np

from i2v_jax import atomic, command_line
from i2v_jax.errors import UserError

_BN_FIELDS = {'weight': ('params', 'scale'), 'bias': ('params', 'bias'),
              'running_mean': ('batch_stats', 'mean'),
              'running_var': ('batch_stats', 'var')}
_KEY = re.compile(
    r'^(?:(?P<stem>conv1|bn1)|layer(?P<stage>[1-4])\.(?P<block>\d+)\.'
    r'(?P<layer>conv\d|bn\d|downsample\.[01]))\.(?P<field>\w+)$')


def _flax_path(key: str) -> Tuple[str, ...] | None:
  """Flax (collection, module..., leaf) for a torchvision key; None if dropped."""
  if key.startswith('fc.') or key.endswith('num_batches_tracked'):
    return None
  m = _KEY.match(key)
  if m is None:
    raise KeyError(f'unexpected torchvision key {key!r}: not part of a ResNet '
                   'backbone (expected conv1, bn1, layerN.i.*, fc.*)')
  layer = m['stem'] or m['layer']
  layer = {'downsample.0': 'downsample_conv',
           'downsample.1': 'downsample_bn'}.get(layer, layer)
  modules = ((layer,) if m['stem'] else
             (f'layer{m["stage"]}_{m["block"]}', layer))
  field = m['field']
  if 'conv' in layer:
    if field != 'weight':
      raise KeyError(f'unexpected torchvision key {key!r}: convolutions of '
                     'torchvision ResNets have no bias')
    return ('params',) + modules + ('kernel',)
  if field not in _BN_FIELDS:
    raise KeyError(f'unexpected torchvision key {key!r}')
  collection, leaf = _BN_FIELDS[field]
  return (collection,) + modules + (leaf,)


def from_torchvision(state_dict: Mapping[str, Any]) -> Dict[str, Any]:
  """Converts a torchvision ResNet state dict to ``{'params', 'batch_stats'}``.

  Args:
    state_dict: torchvision key -> array-like (numpy array or CPU tensor).
      A ``module.`` prefix (DataParallel checkpoints) is stripped.

  Returns:
    Nested dicts of float32 numpy arrays for `i2v_jax.models.ResNet`
    (no non-local blocks: those keep their own initialisation).
  """
  out: Dict[str, Any] = {'params': {}, 'batch_stats': {}}
  for key, value in state_dict.items():
    path = _flax_path(key.removeprefix('module.'))
    if path is None:
      continue
    array = np.asarray(value, dtype=np.float32)
    if path[-1] == 'kernel':
      array = array.transpose(2, 3, 1, 0)  # OIHW -> HWIO
    node = out[path[0]]
    for name in path[1:-1]:
      node = node.setdefault(name, {})
    node[path[-1]] = array
  if not out['params']:
    raise ValueError('the state dict holds no ResNet weights')
  return out


def flatten(tree: Mapping[str, Any], prefix: str = '') -> Dict[str, np.ndarray]:
  """Nested dicts -> {'a/b/c': array}."""
  flat = {}
  for name, value in tree.items():
    path = f'{prefix}{name}'
    if isinstance(value, Mapping):
      flat.update(flatten(value, path + '/'))
    else:
      flat[path] = np.asarray(value)
  return flat


def unflatten(flat: Mapping[str, np.ndarray]) -> Dict[str, Any]:
  """{'a/b/c': array} -> nested dicts."""
  tree: Dict[str, Any] = {}
  for path, value in flat.items():
    *parents, leaf = path.split('/')
    node = tree
    for name in parents:
      node = node.setdefault(name, {})
    node[leaf] = value
  return tree


def save_npz(variables: Mapping[str, Any], path: str) -> None:
  """Writes variables to ``path`` atomically (`i2v_jax.atomic`: temporary name, then
  rename; a full disk leaves the previous file and no temporary behind)."""
  atomic.write_npz(path, **flatten(variables))


class PretrainedError(UserError, ValueError):
  """A ``model.pretrained`` file that is missing, unreadable or does not fit."""


def load_npz(path: str) -> Dict[str, Any]:
  """Reads a file written by `save_npz` (or this module's command): plain numeric
  arrays only (no pickled objects), every value finite.

  Raises:
    PretrainedError naming the file, the problem and the fix.
  """
  fix = ('make it with `python -m i2v_jax.models.convert --torchvision resnet50.pth --out '
         f'{path}` or `python -m i2v_jax.models.export`, or set --config.model.pretrained="" '
         'for random init')
  if not os.path.isfile(path):
    raise PretrainedError(f'config model.pretrained={path}: no such file; {fix}')
  try:
    with np.load(path, allow_pickle=False) as data:
      flat = {k: data[k] for k in data.files}
  except Exception as e:  # zip, npy and pickle errors
    raise PretrainedError(f'config model.pretrained={path}: not a readable .npz of plain '
                          f'arrays ({type(e).__name__}: {" ".join(str(e).split())[:120]}); '
                          f'{fix}') from None
  for key, value in flat.items():
    if not np.issubdtype(value.dtype, np.number):
      raise PretrainedError(f'config model.pretrained={path}: {key} has dtype {value.dtype}, '
                            f'not numbers; {fix}')
    if not np.all(np.isfinite(value)):
      raise PretrainedError(f'config model.pretrained={path}: {key} has '
                            f'{int(np.sum(~np.isfinite(value)))} non-finite values; {fix}')
    if key.startswith('batch_stats/') and key.endswith('/var') and np.any(value < 0):
      raise PretrainedError(f'config model.pretrained={path}: {key} has '
                            f'{int(np.sum(value < 0))} negative variances (BatchNorm would '
                            f'give NaN or zero features); {fix}')
  return unflatten(flat)


def check_backbone(variables: Mapping[str, Any], pretrained: Mapping[str, Any],
                   source: str = 'pretrained weights') -> None:
  """Raises unless ``pretrained`` fits the model ``variables`` (arrays or
  ``jax.ShapeDtypeStruct``s, ``{'params', 'batch_stats'}`` with a ``backbone``)
  exactly: only params/ and batch_stats/, every leaf a model leaf of its shape,
  and every backbone leaf of the model present except the non-local blocks'
  (ImageNet ResNets have none: those keep their initialisation). A file that
  matched nothing would otherwise train from random weights while saying it
  loaded them.

  Raises:
    PretrainedError naming the key (or the count and the first keys missing).
  """
  fix = ('make the file with `python -m i2v_jax.models.convert` (torchvision ResNet-50) or '
         '`python -m i2v_jax.models.export` (a run\'s backbone)')
  outside = sorted(set(pretrained) - {'params', 'batch_stats'})
  if outside:
    raise PretrainedError(f'{source}: keys under {outside} are not params/ or batch_stats/ '
                          f'of a backbone; {fix}')
  missing, needed = [], 0
  for collection in ('params', 'batch_stats'):
    shapes = {p: tuple(v.shape) for p, v in _leaves(variables[collection]['backbone'])}
    given = dict(_leaves(pretrained.get(collection, {})))
    for path, value in given.items():
      if path not in shapes:
        raise PretrainedError(
            f'{source}: {collection}/{path} has no counterpart in the model; '
            'check config.model.stage_sizes and width against the checkpoint '
            '(torchvision ResNet-50 is stage_sizes=(3, 4, 6, 3), width=64).')
      if shapes[path] != tuple(value.shape):
        raise PretrainedError(
            f'{source}: {collection}/{path} has shape {tuple(value.shape)}, the model '
            f'expects {shapes[path]}; check config.model.width.')
    wanted = [p for p in shapes if not p.split('/')[0].endswith('_nonlocal')]
    needed += len(wanted)
    missing += [f'{collection}/{p}' for p in wanted if p not in given]
  if missing:
    raise PretrainedError(
        f'{source}: {len(missing)} of the {needed} backbone arrays the model needs are not '
        f'in the file ({", ".join(missing[:3])}{", ..." if len(missing) > 3 else ""}); every '
        f'array must be there and is used; {fix}')


def _leaves(tree: Mapping[str, Any], prefix: str = ''):
  """(path, leaf) pairs of nested dicts, leaves as they are (arrays or shapes)."""
  for name, value in tree.items():
    if isinstance(value, Mapping):
      yield from _leaves(value, f'{prefix}{name}/')
    else:
      yield f'{prefix}{name}', value


def merge_backbone(variables: Mapping[str, Any], pretrained: Mapping[str, Any],
                   source: str = 'pretrained weights') -> Dict[str, Any]:
  """Replaces every ``variables[c]['backbone']`` leaf by ``pretrained``'s, which
  must fit exactly (`check_backbone`); non-local blocks keep their values."""
  check_backbone(variables, pretrained, source)
  merged = {c: dict(v) for c, v in variables.items()}
  for collection in ('params', 'batch_stats'):
    model_flat = flatten(variables[collection]['backbone'])
    model_flat.update(flatten(pretrained.get(collection, {})))
    merged[collection] = dict(merged[collection])
    merged[collection]['backbone'] = unflatten(model_flat)
  return merged


def main(argv=None) -> int:
  """``argv``: the command line, the program name first (``sys.argv`` when None)."""
  from absl import flags
  fl = flags.FlagValues()
  source = flags.DEFINE_string('torchvision', None, 'torchvision ResNet-50 state dict (.pth)',
                               flag_values=fl)
  out = flags.DEFINE_string('out', None, 'output .npz', flag_values=fl)
  for name in ('torchvision', 'out'):
    flags.mark_flag_as_required(name, flag_values=fl)
  command_line.parse(fl, argv, __doc__)
  try:
    import torch
  except ImportError:
    print('error: --torchvision needs torch, for this command only: pip install torch',
          file=sys.stderr)
    return 2
  if not os.path.isfile(source.value):
    print(f'error: --torchvision={source.value}: no such file', file=sys.stderr)
    return 2
  state = torch.load(source.value, map_location='cpu', weights_only=True)
  if isinstance(state, Mapping) and 'state_dict' in state:
    state = state['state_dict']
  try:
    variables = from_torchvision({k: v.numpy() for k, v in state.items()})
  except (KeyError, ValueError) as e:
    print(f'error: --torchvision={source.value}: {e}', file=sys.stderr)
    return 2
  save_npz(variables, out.value)
  n = sum(v.size for v in flatten(variables['params']).values())
  print(f'wrote {out.value}: {n:,} backbone parameters')
  return 0


if __name__ == '__main__':
  sys.exit(main())
