"""Helpers for config files: typed ``get_config`` arguments, big_vision style.

``--config=configs/base.py:preset=tkp,runlocal`` calls ``get_config('preset=tkp,runlocal')``;
`parse_arg` turns that into a ConfigDict typed by the defaults the config file
declares, so ``runlocal`` alone means True and ``seed=3`` is an int.
"""

from __future__ import annotations

from typing import Any

import ml_collections


def _convert(name: str, text: str, default: Any) -> Any:
  if isinstance(default, bool):
    if text.lower() in ('', 'true', '1', 'yes'):
      return True
    if text.lower() in ('false', '0', 'no'):
      return False
    raise ValueError(f'config argument {name}={text!r}: expected true or false')
  if isinstance(default, int):
    return int(text)
  if isinstance(default, float):
    return float(text)
  return text


def parse_arg(arg: str | None, **defaults: Any) -> ml_collections.ConfigDict:
  """Parses ``'a=1,b,c=x'`` against ``defaults``; unknown names are an error."""
  values = dict(defaults)
  for item in filter(None, (arg or '').split(',')):
    name, _, text = item.partition('=')
    name = name.strip()
    if name not in defaults:
      raise ValueError(
          f'unknown config argument {name!r} in {arg!r}; known: '
          f'{", ".join(sorted(defaults))}')
    values[name] = _convert(name, text.strip(), defaults[name])
  return ml_collections.ConfigDict(values)
