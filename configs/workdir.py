"""The config a run was trained with: ``<workdir>/config.json``, locked.

``i2v_jax.main`` uses it when ``--config`` is not given, so evaluate mode and
resume start from what the run was trained with, and ``--config.<key>=...``
overrides apply on top of it:

    python -m i2v_jax.main --workdir=/tmp/quick --config.mode=evaluate \
        --config.eval.checkpoint=best
"""

from configs import base
from i2v_jax import config_lib


def get_config(workdir):
  # Keys added to configs/base.py after the run was saved take their defaults.
  return config_lib.load_saved(workdir, defaults=base.get_config())
