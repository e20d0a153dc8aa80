r"""Command line: train (and resume), evaluate a trained workdir, or print a config.

    python -m i2v_jax.main --config=configs/base.py:preset=mdkt,runlocal \
        --workdir=/tmp/mdkt [--config.data.dir=data/synthetic] [--config.key=value ...]
    python -m i2v_jax.main --workdir=/tmp/mdkt --config.mode=evaluate \
        [--config.eval.checkpoint=best] [--config.eval.rerank=True]
    python -m i2v_jax.main --config=configs/base.py:preset=tkp --config.mode=print

Without ``--config`` the workdir's own ``config.json`` is the config
(``configs/workdir.py``): evaluate mode and resume use what the run was trained
with; a ``--config`` that differs from it beyond ``eval.*`` (and, to resume, the
step counts of ``config_lib.RESUME_MAY_CHANGE``) is refused, naming the keys.
Every config is checked (``config_lib.validate``) before anything loads.
Multi-host: ``--distributed`` (TPU pods, Slurm) or
``--coordinator_address/--num_processes/--process_id``.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys

import jax
from absl import app, flags, logging
from jax.experimental import multihost_utils
from ml_collections import config_flags

from i2v_jax import compile_cache, config_lib, records, trainer
from i2v_jax.errors import UserError
from i2v_jax.run_folder import RunFolder

_CONFIG = config_flags.DEFINE_config_file('config', None, 'experiment config file; default: '
                                          "the workdir's config.json")
_WORKDIR = flags.DEFINE_string('workdir', None, 'output folder (checkpoints, logs)')
_DISTRIBUTED = flags.DEFINE_bool('distributed', False, 'call jax.distributed.initialize()')
_COORDINATOR = flags.DEFINE_string('coordinator_address', None, 'host:port of process 0')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'number of processes')
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'this process index')
SAVED = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                     'configs', 'workdir.py')


def parse_flags(argv):
  """absl flags, with ``--config=configs/workdir.py:<workdir>`` when --config is absent."""
  renamed = config_lib.renamed_flag(argv)
  if renamed:
    print(f'error: {renamed}', file=sys.stderr)
    sys.exit(2)
  if not any(a == '--config' or a.startswith('--config=') for a in argv):
    workdir = [a.split('=', 1)[1] if '=' in a else b
               for a, b in zip(argv, argv[1:] + [''])
               if a.startswith('--workdir=') or a == '--workdir']
    if workdir and os.path.exists(config_lib.saved_path(workdir[-1])):
      argv = [argv[0], f'--config={SAVED}:{workdir[-1]}', *argv[1:]]
    elif any(a.startswith('--config.') for a in argv):
      print('error: --config.<key> overrides need --config=<config file>, or a --workdir '
            'that holds a trained run (its config.json)', file=sys.stderr)
      sys.exit(2)
  try:
    return flags.FLAGS(argv)
  except AttributeError as e:  # a misspelt leaf key; ml_collections names the nearest
    text = _misspelt_key(str(e), argv)
  except (flags.Error, KeyError, ValueError) as e:  # a bad flag, a misspelt key, a bad value
    text = str(e.args[0] if isinstance(e, KeyError) and e.args else e).strip()
    if 'Traceback' in text:  # an error inside the config file: its last line says it
      text = text.splitlines()[-1]
    text = re.sub(r'^(\w+Error: )+', '', text)
    if 'Did you mean' in text:  # a misspelt key above the leaf
      text = _misspelt_key(text, argv)
  print('error: ' + text.replace('\n', ' ') + ' (python -m i2v_jax.main --config=<file> '
        '--config.mode=print lists every key)', file=sys.stderr)
  sys.exit(2)


def _misspelt_key(message: str, argv) -> str:
  """ml_collections' AttributeError for ``--config.a.bad=v`` -> one line naming the flag
  and, when it has one, the nearest existing key."""
  found = re.search(r'Did you mean "([^"]+)" instead of "([^"]+)"', message)
  leaf = found.group(2) if found else re.sub(r'\W', '', message.split('\\n')[0])
  flag = next((a.split('=', 1)[0] for a in argv if a.startswith('--config.')
               and '.' + leaf in a.split('=', 1)[0]), f'--config.<...>.{leaf}')
  if not found:
    return f'{flag}: no such config key'
  head, _, tail = flag.partition('.' + leaf)
  return f'{flag}: no such config key; did you mean {head}.{found.group(1)}{tail}?'


def build_synthetic_on_demand(config, workdir: str) -> None:
  """With no ``data.dir`` the synthetic dataset lives in ``<workdir>/data``: build it
  there once (``python -m data_prep.build``, a separate tool; the library never
  imports it). Process 0 builds; the others wait for it."""
  if config.data.dir or config.data.name != 'synthetic' or config.mode != 'train':
    return
  data_dir = RunFolder(workdir).data
  if jax.process_index() == 0 and not os.path.exists(os.path.join(data_dir, 'metadata.json')):
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


def _config_file_presets():
  """(the --config file, the preset names of its ``PRESETS`` table); ('', ()) for a
  run's saved config."""
  path = config_flags.get_config_filename(flags.FLAGS['config']) if flags.FLAGS.config else ''
  path = (path or '').split(':', 1)[0]  # file.py:arguments
  if not path.endswith('.py') or not os.path.isfile(path):
    return '', ()
  spec = importlib.util.spec_from_file_location('_i2v_config_file', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return os.path.relpath(path), tuple(getattr(module, 'PRESETS', ()))


def main(argv):
  del argv
  config = _CONFIG.value
  try:  # every config or dataset error is one line (exit 2), before any jax work
    if config is None:
      raise config_lib.ConfigError(
          f'no --config, and {config_lib.saved_path(_WORKDIR.value or ".")} does not exist '
          '(--workdir is not a trained run); pass --config=<config file>')
    config_lib.validate(config)
    if config.mode == 'print':
      print(config_lib.describe(config, *_config_file_presets()))
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
    # Exit now: after a read error inside tf.data, TensorFlow's input threads can
    # still wait for the interpreter lock, and a normal exit (which collects their
    # iterator) would wait for them forever. Logs and checkpoints are already on
    # disk: every metric line is flushed as written and every save is complete.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(2)


def run():
  """The ``i2v-train`` script (pyproject.toml): the same as ``python -m i2v_jax.main``."""
  app.run(main, flags_parser=parse_flags)


if __name__ == '__main__':
  run()
