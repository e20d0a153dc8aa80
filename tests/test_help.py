"""Every command answers --help and -h with its usage, exit status 0, in one
style (i2v_jax.command_line); found by looking for a ``__main__`` block, so a
new command is covered without editing this file."""

import os
import subprocess
import sys

import pytest

from tests.cli import ENV, REPO


def commands():
  found = []
  for package in ('i2v_jax', 'data_prep'):
    for root, _, files in os.walk(os.path.join(REPO, package)):
      for name in sorted(files):
        path = os.path.join(root, name)
        if name.endswith('.py') and "if __name__ == '__main__':" in open(path).read():
          found.append(os.path.relpath(path, REPO)[:-3].replace(os.sep, '.'))
  return sorted(found)


COMMANDS = commands()


def test_the_commands_are_found():
  assert {'i2v_jax.main', 'data_prep.build', 'i2v_jax.search', 'i2v_jax.aot', 'i2v_jax.plots',
          'i2v_jax.models.export', 'i2v_jax.models.convert',
          'i2v_jax.experiments.sweep'} <= set(COMMANDS)


@pytest.mark.parametrize('module', COMMANDS)
def test_help_and_h_print_the_usage_and_exit_0(module):
  for flag in ('--help', '-h'):
    run = subprocess.run([sys.executable, '-m', module, flag], env=dict(ENV, JAX_PLATFORMS='cpu'),
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, (module, flag, run.stderr[-1500:])
    if module == 'data_prep.tfds_build':  # TFDS's own command line (`tfds build`'s flags)
      assert 'usage' in run.stdout.lower()
      continue
    assert f'flags of python -m {module}:' in run.stdout and '-h, --help: this text' in \
        run.stdout, run.stdout[-1500:]
    assert not run.stderr.strip() or 'error' not in run.stderr.lower(), run.stderr[-1500:]
