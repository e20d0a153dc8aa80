r"""Command line: train (and resume) from a config, or evaluate a trained workdir.

    python -m i2v_jax.main --config=configs/base.py:preset=mdkt,runlocal \
        --workdir=/tmp/mdkt [--config.data.dir=data/synthetic] [--config.key=value ...]
    python -m i2v_jax.main --config=configs/base.py:preset=mdkt,runlocal \
        --workdir=/tmp/mdkt --config.mode=evaluate [--config.eval.checkpoint=best]

Training evaluates every ``train.eval_every`` steps and at the end (results.md,
results.json, metrics.jsonl, checkpoints_best/).

Running the same command again resumes from the workdir's latest checkpoint,
schedule included, and prints what changed in the config. Multi-host: pass
``--distributed`` (TPU pods, Slurm: ``jax.distributed.initialize()`` finds its
peers) or ``--coordinator_address/--num_processes/--process_id``.
"""

from __future__ import annotations

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from i2v_jax import trainer

_CONFIG = config_flags.DEFINE_config_file('config', None, 'experiment config file')
_WORKDIR = flags.DEFINE_string('workdir', None, 'output folder (checkpoints, logs)')
_DISTRIBUTED = flags.DEFINE_bool('distributed', False, 'call jax.distributed.initialize()')
_COORDINATOR = flags.DEFINE_string('coordinator_address', None, 'host:port of process 0')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'number of processes')
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'this process index')


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
  if _COORDINATOR.value:
    jax.distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  elif _DISTRIBUTED.value:
    jax.distributed.initialize()
  if not _WORKDIR.value:
    raise app.UsageError('--workdir is required')
  config = _CONFIG.value
  if config.mode == 'train':
    trainer.train_and_log(config, _WORKDIR.value)
  elif config.mode == 'evaluate':
    trainer.evaluate_checkpoint(config, _WORKDIR.value)
  else:
    raise app.UsageError(f'config mode={config.mode!r}: train or evaluate')


if __name__ == '__main__':
  flags.mark_flag_as_required('config')
  app.run(main)
