"""Test setup: 8 fake CPU devices, set before jax is imported anywhere."""

import os
import sys

# XLA's backend optimisation off: the tests' tiny networks spend far longer being
# compiled than running, and level 0 compiles about a third faster (a 1-step test
# 67 -> 46 s, train + evaluate 212 -> 161 s on 2 cores). Same flags, same numbers:
# the tests compare runs of one build with each other and with tolerances.
FAST_COMPILE = '--xla_backend_optimization_level=0'
os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                           ' --xla_force_host_platform_device_count=8 ' + FAST_COMPILE).strip()
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
  sys.path.insert(0, REPO)

import jax

jax.config.update('jax_default_matmul_precision', 'highest')
# A second run of the suite loads what the first compiled (i2v_jax/compile_cache.py);
# the command-line tests' subprocesses share the folder through the environment.
os.environ.setdefault('I2V_JAX_CACHE_DIR', os.path.join(REPO, '.cache', 'jax'))
from i2v_jax import compile_cache

compile_cache.enable()
# XLA:CPU compiles threefry slowly (~8 s for a tiny ResNet's init); the 'rbg'
# generator compiles in a fraction of that. Tests only need determinism.
jax.config.update('jax_default_prng_impl', 'rbg')

import pytest

from data_prep import build, synthetic

# The tiny dataset of the command-line and in-process training tests.
CLI_DATA = synthetic.SyntheticSpec(num_train_ids=12, num_test_ids=4, min_frames=3,
                                   max_frames=8, height=64, width=32)


def pytest_configure(config):
  config.addinivalue_line(
      'markers', 'slow: runs the command line in subprocesses (deselect with -m "not slow")')


@pytest.fixture(scope='session')
def synthetic_data(tmp_path_factory):
  """Factory: a SyntheticSpec -> the folder of that dataset, built once per session."""
  built = {}

  def make(spec):
    if spec not in built:
      out = str(tmp_path_factory.mktemp('syn'))
      build.build('synthetic', out, spec=spec, show_progress=False)
      built[spec] = out
    return built[spec]
  return make


@pytest.fixture(scope='session')
def cli_data_dir(synthetic_data):
  return synthetic_data(CLI_DATA)
