r"""Command line: train (and resume), evaluate a trained workdir, or print a config.

    python -m i2v_jax.main --config=configs/base.py:preset=mdkt,runlocal \
        --workdir=/tmp/mdkt [--config.data.dir=data/synthetic] [--config.key=value ...]
    python -m i2v_jax.main --workdir=/tmp/mdkt --config.mode=evaluate \
        [--config.eval.checkpoint=best] [--config.eval.rerank=True]
    python -m i2v_jax.main --config=configs/base.py:preset=tkp --config.mode=print

Without ``--config`` the workdir's ``config.json`` is the config (evaluate mode,
resume); a ``--config`` that differs from it beyond ``config_lib.EVALUATE_MAY_CHANGE``
/ ``RESUME_MAY_CHANGE`` is refused, naming the keys. Every config is checked
(``config_lib.validate``) before anything loads. Multi-host: ``--distributed``.
"""

import os
import subprocess
import sys

import jax
from absl import app, flags, logging
from jax.experimental import multihost_utils

from i2v_jax import command_line, compile_cache, config_lib, records, trainer
from i2v_jax.errors import UserError
from i2v_jax.run_folder import RunFolder

_WORKDIR = flags.DEFINE_string('workdir', None, 'output folder (checkpoints, logs)')
_DISTRIBUTED = flags.DEFINE_bool('distributed', False, 'call jax.distributed.initialize()')
_COORDINATOR = flags.DEFINE_string('coordinator_address', None, 'host:port of process 0')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'number of processes')
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'this process index')


FLAG_NAMES = [f.name for f in flags.FLAGS.get_flags_for_module(__name__)]  # the ones above


def parse_flags(argv):  # --help, the --config flag and every flag error as one line
  if command_line.help_requested(argv):
    print(command_line.usage(flags.FLAGS, __doc__, 'python -m i2v_jax.main', FLAG_NAMES, more=(
        "  --config: an experiment config file[:arguments] (configs/base.py:preset=mdkt,"
        "dataset=mars); default: the workdir's config.json",
        '  --config.<key>=<value>: one key of the config (lists as a,b; '
        '--config.mode=print lists every key and its meaning)')))
    sys.exit(0)
  try:
    return config_lib.parse_command_line(argv)
  except UserError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)


def build_synthetic_on_demand(config, workdir: str) -> None:
  """With no ``data.dir`` the synthetic dataset lives in ``<workdir>/data``: build it
  there once (``python -m data_prep.build``, a separate tool; the library never
  imports it). Process 0 builds; the others wait for it."""
  if config.data.dir or config.data.name != 'synthetic' or config.mode != 'train':
    return
  data_dir = RunFolder(workdir).data
  built = os.path.exists(os.path.join(data_dir, 'metadata.json'))
  if not built:  # a missing pretrained or teacher file: named before the build (and JAX)
    trainer.check_files(config, workdir)
  if jax.process_index() == 0 and not built:
    trainer.check_workdir(workdir)
    print(f'building the synthetic dataset in {data_dir}', flush=True)
    rc = subprocess.run([sys.executable, '-m', 'data_prep.build', '--dataset', 'synthetic',
                         '--out_dir', data_dir], stdout=subprocess.DEVNULL).returncode
    if rc:
      raise records.DatasetError(f'building the synthetic dataset into {data_dir} failed '
                                 f'(exit {rc}, said above); or build it yourself: python -m '
                                 f'data_prep.build --dataset synthetic --out_dir {data_dir}')
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices('synthetic dataset built')


def main(argv):
  del argv
  config = flags.FLAGS.config
  try:  # every config or dataset error is one line (exit 2), before any jax work
    if config is None:
      raise config_lib.ConfigError(f'no --config, and {config_lib.saved_path(_WORKDIR.value or ".")}'
                                   ' does not exist (--workdir is not a trained run); pass '
                                   '--config=<config file>')
    config_lib.validate(config)
    if config.mode == 'print':
      print(config_lib.describe(config))
      return
    if not _WORKDIR.value:
      raise config_lib.ConfigError('--workdir is required')
    trainer.check_workdir(_WORKDIR.value)
    logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
    compile_cache.enable()
    if _COORDINATOR.value:
      jax.distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    elif _DISTRIBUTED.value:
      jax.distributed.initialize()
    build_synthetic_on_demand(config, _WORKDIR.value)
    run = trainer.train_and_log if config.mode == 'train' else trainer.evaluate_checkpoint
    run(config, _WORKDIR.value)
  except UserError as e:
    print(f'error: {e}', file=sys.stderr)
    # Exit now: after a read error inside tf.data its threads can wait for the
    # interpreter lock forever at a normal exit. Logs and checkpoints are on disk.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(2)


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)
