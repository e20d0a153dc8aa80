"""Test setup: 8 fake CPU devices, set before jax is imported anywhere."""

import os
import sys

os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                           ' --xla_force_host_platform_device_count=8').strip()
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
  sys.path.insert(0, REPO)

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position

jax.config.update('jax_default_matmul_precision', 'highest')
# XLA:CPU compiles threefry slowly (~8 s for a tiny ResNet's init); the 'rbg'
# generator compiles in a fraction of that. Tests only need determinism.
jax.config.update('jax_default_prng_impl', 'rbg')
