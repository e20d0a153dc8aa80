"""Networks of docs/method.md §2: ResNet trunk, non-local block, teacher, student, head.

Imports are lazy so that ``python -m i2v_jax.models.convert`` runs in an
environment with torch and numpy but without jax/flax.
"""

import importlib

_EXPORTS = {'BNNeckHead': 'reid', 'StudentNet': 'reid', 'TeacherNet': 'reid',
            'build_models': 'reid', 'ResNet': 'resnet'}
__all__ = list(_EXPORTS)


def __getattr__(name):
  if name in _EXPORTS:
    return getattr(importlib.import_module(f'{__name__}.{_EXPORTS[name]}'), name)
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
