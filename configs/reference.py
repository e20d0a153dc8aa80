r"""Writes docs/config.md: every config key with its default per preset and meaning.

    python -m configs.reference            # rewrite docs/config.md
    python -m configs.reference --check    # exit 1 if docs/config.md is stale

The keys, defaults and preset differences come from `i2v_jax.defaults.get_config`;
the meanings from the comments beside each assignment in `i2v_jax/defaults.py`, so
the page cannot drift from the code (`tests/test_config.py` checks it is current).
"""

import inspect
import os
import re
import sys

from configs import base
from i2v_jax import atomic, config_lib, defaults

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGE = os.path.join(REPO, 'docs', 'config.md')
_ASSIGN = re.compile(r'^\s*c\.([a-z0-9_.]+)\s*=\s*(.*?)\s*(?:#\s?(.*))?$')
_CONTINUED = re.compile(r'^\s{8,}#\s?(.*)$')


def meanings(source: str) -> dict:
  """{key: comment} from the first ``c.<key> = ...  # comment`` line of each key in
  i2v_jax/defaults.py (the default's), a comment continued on the following comment-only
  lines included."""
  found, key = {}, None
  for line in source.splitlines():
    m = _ASSIGN.match(line)
    if m and '=' in line.split('#')[0]:
      key = None if m.group(1) in found else m.group(1)  # the first: the default's
      if key:
        found[key] = (m.group(3) or '').strip()
      continue
    m = _CONTINUED.match(line)
    if m and key is not None and found.get(key):
      found[key] += ' ' + m.group(1).strip()
    else:
      key = None
  return found


def _show(value) -> str:
  if isinstance(value, str):
    return f"`'{value}'`" if value else "`''`"
  if isinstance(value, (tuple, list)):  # flatten gives tuples as lists
    return '`' + repr(tuple(value)).replace('|', '\\|') + '`'
  return f'`{value!r}`'


def render() -> str:
  """The whole page, deterministic."""
  notes = meanings(inspect.getsource(defaults))
  default, *others = base.PRESETS
  leaves = lambda arg: config_lib.flatten(base.get_config(arg).to_dict())
  configs = {p: leaves(f'preset={p}') for p in base.PRESETS}
  datasets = {d: leaves(f'dataset={d}') for d in base.DATASETS}
  lines = [
      '# Config reference',
      '',
      '[Back to the README](../README.md) · [training](training.md) · '
      '[method](method.md)',
      '',
      'Generated from `i2v_jax/defaults.py` by `python -m configs.reference` (a test '
      'keeps it current); do not edit by hand.',
      '',
      'Every key can be set with `--config.<key>=<value>`; the dict is locked, so a '
      'misspelt key is an error naming the nearest one. Choose a preset and a '
      'dataset with `--config=configs/base.py:preset=<preset>,dataset=<dataset>` '
      '(add `runlocal` for a tiny smoke run). The default column is '
      f'`preset={default},dataset={base.DATASETS[0]}`; the next column lists what '
      'the other presets set differently.',
      '',
      '| key | default | other presets | meaning |',
      '| --- | --- | --- | --- |',
  ]
  for key, value in configs[default].items():
    diffs = [f'{p}: {_show(configs[p][key])}' for p in others
             if configs[p][key] != value]
    meaning = notes.get(key, '').replace('|', '\\|')
    lines.append(f'| `{key}` | {_show(value)} | {"; ".join(diffs)} | {meaning} |')
  lines += ['', '`dataset=` changes, for every preset:', '']
  first = datasets[base.DATASETS[0]]
  for d in base.DATASETS[1:]:
    diffs = [f'`{k}` {_show(v)}' for k, v in datasets[d].items()
             if k != 'data.name' and first[k] != v]
    lines.append(f'- `{d}`: ' + ', '.join(diffs))
  return '\n'.join(lines) + '\n'


def main(argv):
  text = render()
  if '--check' in argv:
    current = open(PAGE, encoding='utf-8').read() if os.path.exists(PAGE) else ''
    if current != text:
      print(f'{PAGE} is stale: run python -m configs.reference', file=sys.stderr)
      return 1
    return 0
  atomic.write_text(text, PAGE)
  print(f'wrote {PAGE}')
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))
