"""Running the command line from tests: the environment and the training command."""

import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The command-line tests' processes: 2 CPU devices, compiled as the in-process
# tests are (conftest.FAST_COMPILE).
ENV = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=2 '
           '--xla_backend_optimization_level=0',
           JAX_PLATFORMS='cpu', PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL='2')


def command(workdir, data_dir, *extra, preset='mdkt', steps=6):
  return [sys.executable, '-m', 'i2v_jax.main',
          f'--config=configs/base.py:preset={preset},runlocal', f'--workdir={workdir}',
          f'--config.data.dir={data_dir}', f'--config.train.num_steps={steps}',
          '--config.train.log_every=1', '--config.train.checkpoint_every=3',
          '--config.model.width=4', *extra]
